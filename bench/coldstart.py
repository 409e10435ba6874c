"""Cold starts on the local platform: `make coldstart` (or python3 bench/coldstart.py [N]).

Runs `coldbrew run` with N coffee services, all scaled to zero, and sends
each one request in turn over a fresh connection: every request is a cold
start through the whole data plane (activator holds it, pokes the in-process
autoscaler, the platform forks a pod, the activator probes it, forwards).

For each it records the time to the complete answer and splits it:
  user     the user process's own exec -> listening (coffee prints a
           wall-clock stamp when it listens; the platform logs the fork's)
  data     everything else: total - user (the issue's "data plane share")
and the stages from the logs (request sent -> pod forked, forked -> ready
as the platform's readiness probe saw it).

Writes the "coldstart" section of bench/RESULTS.md."""
import http.client, os, re, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results import Platform, replace_section  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 40


def manifest(n):
    docs = []
    for i in range(n):
        docs.append("""apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: cs%02d
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/initial-scale: "0"
    spec:
      containerConcurrency: 10
      containers:
        - image: example/coffee
          command: ["coffee"]
          readinessProbe:
            httpGet:
              path: /healthz
""" % i)
    return "---\n".join(docs)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p / 100.0 * len(xs) + 0.5)) - 1))]


def main():
    pl = Platform(manifest(N))
    rows = []
    try:
        for i in range(N):
            name = "cs%02d" % i
            c = http.client.HTTPConnection("127.0.0.1", pl.port, timeout=30)
            c.connect()
            sent_ms = time.time() * 1e3
            t0 = time.perf_counter()
            c.request("GET", "/", headers={"Host": "%s.default.localhost" % name})
            r = c.getresponse()
            body = r.read()
            total = (time.perf_counter() - t0) * 1e3
            c.close()
            if r.status != 200:
                raise SystemExit("%s: %d %r" % (name, r.status, body))
            rows.append((name, sent_ms, total))
        time.sleep(0.3)
        log = open(os.path.join(pl.home, "coldbrew.log")).read()
        out = []
        for name, sent_ms, total in rows:
            rev = name + "-00001"
            spawn = float(re.search(r"pod %s-deployment-\w+ started .*? at ([\d.]+) ms" % rev, log).group(1))
            ready = float(re.search(r"pod %s-deployment-\w+ ready after ([\d.]+) ms" % rev, log).group(1))
            d = os.path.join(pl.home, "logs", "default", rev)
            f = [x for x in os.listdir(d) if x.endswith(".log") and not x.endswith("queue-proxy.log")][0]
            listen = float(re.search(r"at ([\d.]+) ms", open(os.path.join(d, f)).read()).group(1))
            user = listen - spawn
            out.append({"total": total, "user": user, "data": total - user,
                        "to_fork": spawn - sent_ms, "fork_to_ready": ready})
    finally:
        pl.stop()

    def col(k):
        xs = [o[k] for o in out]
        return "%.1f | %.1f | %.1f | %.1f" % (pct(xs, 50), pct(xs, 95), max(xs), min(xs))

    cmd = "python3 bench/coldstart.py %d" % N
    text = """## Local platform: cold starts

Produced by `%s` on %s (`make coldstart`): %d coffee services, all at zero, one request each over
a fresh connection, in turn; every one is a cold start through the whole data plane (activator
holds the request and pokes the in-process KPA, the platform forks the pod, the activator probes
it and forwards). "User" is the user process's own exec → listening (coffee's wall-clock stamp
against the platform's fork stamp); "data plane" is the rest (total − user), the issue's share.
Targets (issue #4): total ≤ 100 ms at p95, data plane ≤ 10 ms.

| ms | p50 | p95 | max | min |
|---|---:|---:|---:|---:|
| total, request sent → answer read | %s |
| user process exec → listening | %s |
| **data plane (total − user)** | %s |
| request sent → pod forked (hold, poke, decision) | %s |
| fork → ready in the Endpoints (the platform's kubelet-style probe; the activator probes for itself and does not wait for it) | %s |
""" % (cmd, time.strftime("%Y-%m-%d"), N, col("total"), col("user"), col("data"), col("to_fork"),
       col("fork_to_ready"))
    print(text)
    if os.environ.get("BENCH_NO_WRITE") != "1":
        replace_section("coldstart", text)


if __name__ == "__main__":
    main()

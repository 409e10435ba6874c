"""Cold starts on the local platform: `make coldstart` (or python3 bench/coldstart.py [N]).

Runs `coldbrew run` with N coffee services, all scaled to zero, and sends
each one request in turn over a fresh connection, with the cold-start
ledger's Server-Timing header asked for: every request is a cold start
through the whole data plane (activator holds it, pokes the in-process
autoscaler, the platform forks a pod, the activator probes it, forwards).

For each it records the time to the complete answer (the client's clock)
and splits it with what coldbrew itself exposes, no log parsing:
  user     the user process's exec -> listening: the platform's pod start
           phases in `coldbrew status --json` (fork -> user port accepting,
           polled every 0.5 ms while a pod starts)
  data     everything else: total - user (the issue's "data plane share")
and the activator's ledger phases, read from its Prometheus histogram
(coldbrew_coldstart_phase_seconds: one cold start per revision, so each
revision's _sum is that cold start's phase exactly).

Writes the "coldstart" section of bench/RESULTS.md."""
import http.client, json, os, re, sys, time

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


PHASES = ["poke", "endpoints", "probe", "forward", "response", "total"]


def ledger(port):
    """{revision: {phase: ms}} from the activator's histogram; every count must be 1."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    out = {}
    for rev, ph, v in re.findall(r'coldbrew_coldstart_phase_seconds_sum\{[^}]*kn_revision_name="([^"]+)",'
                                 r'phase="(\w+)"\} (\S+)', text):
        out.setdefault(rev, {})[ph] = float(v) * 1e3
    for rev, ph, n in re.findall(r'coldbrew_coldstart_phase_seconds_count\{[^}]*kn_revision_name="([^"]+)",'
                                 r'phase="(\w+)"\} (\d+)', text):
        if n != "1":
            raise SystemExit("%s: %s cold starts counted, want 1" % (rev, n))
    return out


def main():
    pl = Platform(manifest(N))
    rows = []
    try:
        for i in range(N):
            name = "cs%02d" % i
            c = http.client.HTTPConnection("127.0.0.1", pl.port, timeout=30)
            c.connect()
            t0 = time.perf_counter()
            c.request("GET", "/", headers={"Host": "%s.default.localhost" % name, "Coldbrew-Server-Timing": "1"})
            r = c.getresponse()
            body = r.read()
            total = (time.perf_counter() - t0) * 1e3
            c.close()
            if r.status != 200:
                raise SystemExit("%s: %d %r" % (name, r.status, body))
            if not r.getheader("Server-Timing"):
                raise SystemExit("%s: no Server-Timing header" % name)
            rows.append((name, total))
        time.sleep(0.3)
        st = json.loads(pl.cli("status", "--json"))
        led = ledger(st["activator_metrics_port"])
        starts = {r["name"]: r["pod_starts"][0] for s in st["services"] for r in s["revisions"]}
        out = []
        for name, total in rows:
            rev = name + "-00001"
            ps = starts[rev]
            user = ps["fork_to_listening_ms"]
            # Cross-check (the one thing still read from a log): coffee's own
            # wall-clock stamp when it listens, against the fork's.
            d = os.path.join(pl.home, "logs", "default", rev)
            f = [x for x in os.listdir(d) if x.endswith(".log") and not x.endswith("queue-proxy.log")][0]
            stamp = float(re.search(r"at ([\d.]+) ms", open(os.path.join(d, f)).read()).group(1))
            coffee = stamp - ps["at"] * 1e3
            o = {"total": total, "user": user, "data": total - user, "coffee": coffee,
                 "data_coffee": total - coffee,
                 "to_ready": ps["listening_to_ready_ms"]}
            o.update({"l_" + p: led[rev][p] for p in PHASES})
            out.append(o)
    finally:
        pl.stop()

    def col(k):
        xs = [o[k] for o in out]
        return "%.1f | %.1f | %.1f | %.1f" % (pct(xs, 50), pct(xs, 95), max(xs), min(xs))

    cmd = "python3 bench/coldstart.py %d" % N
    text = """## Local platform: cold starts

Produced by `%s` on %s (`make coldstart`): %d coffee services, all at zero, one request each over
a fresh connection, in turn, each with `Coldbrew-Server-Timing: 1` (the ledger on); every one is a
cold start through the whole data plane (activator holds the request and pokes the in-process KPA,
the platform forks the pod, the activator probes it and forwards). Read from what coldbrew exposes,
not from logs: "user" is the platform's fork → user port accepting (`coldbrew status --json`,
polled every 0.5 ms while a pod starts: it may read up to 0.5 ms late, which makes the data plane
row up to 0.5 ms optimistic); "data plane" is the rest (total − user), the issue's share; the ledger rows are the activator's `coldbrew_coldstart_phase_seconds`
histogram (one cold start per revision, so each _sum is exact). Targets: total ≤ 100 ms at p95,
data plane ≤ 10 ms (issue #4), and with the ledger on within the earlier p95 of 6 ms (issue #12).

| ms | p50 | p95 | max | min |
|---|---:|---:|---:|---:|
| total, request sent → answer read (client) | %s |
| user process fork → listening (platform) | %s |
| **data plane (total − user)** | %s |
| cross-check: fork → coffee's own "listening" stamp | %s |
| cross-check: data plane by that stamp (total − it; the measure before the ledger) | %s |
| user listening → queue-proxy ready (platform's own probe; the activator does not wait for it) | %s |
| ledger: held → poke sent | %s |
| ledger: poke → Endpoints naming the pod | %s |
| ledger: Endpoints → probe success | %s |
| ledger: probe → forwarded | %s |
| ledger: forwarded → first response byte | %s |
| ledger: total, held → first response byte | %s |
""" % (cmd, time.strftime("%Y-%m-%d"), N, col("total"), col("user"), col("data"), col("coffee"), col("data_coffee"), col("to_ready"),
       col("l_poke"), col("l_endpoints"), col("l_probe"), col("l_forward"), col("l_response"), col("l_total"))
    print(text)
    if os.environ.get("BENCH_NO_WRITE") != "1":
        replace_section("coldstart", text)


if __name__ == "__main__":
    main()

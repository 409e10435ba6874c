#!/usr/bin/python3
"""coldbrew HTTP/2 benchmark: h2load through each proxy to the same h2c origin.

Origin: nginx (1 worker) serving a small body over h2c (prior knowledge).
Rows, all measured in the same run with the rounds interleaved:
  direct          h2load -> origin
  coldbrew        h2load -> coldbrew queue-proxy (h2c in, h2c out: Knative's protocol mirroring) -> origin
  haproxy         h2load -> HAProxy (1 thread, `proto h2` on the bind and the server) -> origin
  nginx           h2load -> nginx (1 worker, `http2` listener, grpc_pass: nginx's only HTTP/2 upstream) -> origin
  (before)        with BENCH_BEFORE_BIN set: that build's queue-proxy, a row of its own
For each: streams per second (the median round), p50 and p99 of the
per-request times h2load logs, CPU microseconds per request of the proxy
process, and private memory (RssAnon) per open stream and per connection
(held_memory below).
Writes the "## HTTP/2" section of bench/RESULTS.md; everything else there
is kept. Every process is stopped by pid; loads go to 127.0.0.1 only.

  bench/h2bench.py memory   only the queue-proxy's memory (this build, and
                            BENCH_BEFORE_BIN's when set); prints, writes nothing"""
import os, re, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (process helpers, placement, nginx configs)
import results as sections  # noqa: E402  (writing our part of RESULTS.md)
from bench import start, wait_port, free_port, cpu_ticks, mem, children, nginx_conf  # noqa: E402

CONNS = int(os.environ.get("BENCH_H2_CONNS", "100"))
STREAMS = int(os.environ.get("BENCH_H2_STREAMS", "10"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "3"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
HELD_CONNS, HELD_STREAMS = 100, 10  # the memory measure: 100 connections, 1 then 10 open streams each
ROOT = bench.ROOT
BIN = bench.BIN
TMP = bench.TMP


def h2load(port, seconds=SECONDS, path="/", conns=CONNS, streams=STREAMS, log=None):
    args = ["taskset", "-c", bench.LOAD_CPU, "h2load", "-c", str(conns), "-m", str(streams), "-t", "1",
            "-D", str(seconds), "--warm-up-time=200ms"]
    if log:
        args += ["--log-file", log]
    run = subprocess.run(args + ["http://127.0.0.1:%d%s" % (port, path)], capture_output=True, text=True)
    out = run.stdout + run.stderr
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    if not m or not done:
        raise SystemExit("h2load failed: " + out[-800:])
    r = {"rps": float(m.group(1)), "done": int(done.group(1)), "ok": int(done.group(2)), "failed": int(done.group(3))}
    if log:
        # Each line: start time (µs since the run began), status, duration (µs).
        d = sorted(int(l.split()[2]) for l in open(log) if l.strip())
        if d:
            r["p50"] = d[len(d) // 2] / 1000
            r["p99"] = d[min(len(d) - 1, len(d) * 99 // 100)] / 1000
    return r


def qp_env(q_port, user_port):
    e = bench.qp_env(q_port, user_port, 0)
    e["METRICS_PROMETHEUS_PORT"] = str(free_port())
    return e


def slow_origin():
    """The origin for the memory measure: every stream waits as long as ?ms= says.
    It takes every held stream at once (SETTINGS_MAX_CONCURRENT_STREAMS), so
    each is open on both sides of the proxy, none queued inside it."""
    port = free_port()
    start(["/usr/bin/python3", os.path.join(ROOT, "tests", "scenario", "h2_origin.py"), str(port),
           str(2 * HELD_CONNS * HELD_STREAMS)],
          name="h2slow", cpu=bench.LOAD_CPU)
    wait_port(port)
    return port


def memory_only():
    s_port = slow_origin()
    builds = [("this build", BIN)]
    if os.environ.get("BENCH_BEFORE_BIN"):
        builds.append(("before", os.environ["BENCH_BEFORE_BIN"]))
    for label, bindir in builds:
        port = free_port()
        p = start([os.path.join(bindir, "queue-proxy")], qp_env(port, s_port), name="qp-h2-mem")
        wait_port(port)
        r = held_memory(port, p.pid)
        print("%-10s idle %d kB, %d×1 open %d kB, %d×%d open %d kB: %.0f B per open stream, %.0f B per connection"
              % (label, r["idle"], HELD_CONNS, r["one"], HELD_CONNS, HELD_STREAMS, r["held"], r["per_stream"],
                 r["per_conn"]), flush=True)


def main():
    if sys.argv[1:] == ["memory"]:
        return memory_only()
    for tool in ("h2load", "haproxy"):
        if subprocess.run(["sh", "-c", "command -v %s || test -x /usr/sbin/%s" % (tool, tool)],
                          capture_output=True).returncode:
            raise SystemExit("the HTTP/2 bench needs %s: make deps" % tool)
    o_port = free_port()
    origin = start(["/usr/sbin/nginx", "-c", nginx_conf("h2origin",
        "server { listen 127.0.0.1:%d http2 backlog=4096; http2_max_concurrent_streams 1000; "
        'location / { default_type text/plain; return 200 "hello from the origin\\n"; } }' % o_port)],
        name="h2origin", cpu=bench.LOAD_CPU)
    wait_port(o_port)
    time.sleep(0.3)
    s_port = slow_origin()

    rows = [("direct", o_port, children(origin.pid)[0], None)]

    q_port = free_port()
    qp = start([os.path.join(BIN, "queue-proxy")], qp_env(q_port, o_port), name="qp-h2")
    q_slow = free_port()
    qps = start([os.path.join(BIN, "queue-proxy")], qp_env(q_slow, s_port), name="qp-h2-slow")
    wait_port(q_port)
    rows.append(("coldbrew queue-proxy", q_port, qp.pid, (q_slow, qps.pid)))
    # Before/after in the same run, as bench.py does: BENCH_BEFORE_BIN names
    # the binaries of an earlier commit, measured as a row of their own.
    before = os.environ.get("BENCH_BEFORE_BIN")
    if before:
        b_port, b_slow = free_port(), free_port()
        bq = start([os.path.join(before, "queue-proxy")], qp_env(b_port, o_port), name="qp-h2-before")
        bqs = start([os.path.join(before, "queue-proxy")], qp_env(b_slow, s_port), name="qp-h2-before-slow")
        wait_port(b_port)
        rows.append(("coldbrew queue-proxy (before)", b_port, bq.pid, (b_slow, bqs.pid)))

    def haproxy(name, upstream):
        port = free_port()
        cfg = os.path.join(TMP, name + ".cfg")
        open(cfg, "w").write("""global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:%d proto h2
  default_backend be
backend be
  server o 127.0.0.1:%d proto h2
""" % (port, upstream))
        p = start(["/usr/sbin/haproxy", "-db", "-f", cfg], name=name)
        wait_port(port)
        return port, p.pid
    h_port, h_pid = haproxy("haproxy-h2", o_port)
    hs_port, hs_pid = haproxy("haproxy-h2-slow", s_port)
    rows.append(("haproxy", h_port, h_pid, (hs_port, hs_pid)))

    def nginx(name, upstream):
        port = free_port()
        p = start(["/usr/sbin/nginx", "-c", nginx_conf(name,
            "upstream up { server 127.0.0.1:%d; keepalive 256; } "
            "server { listen 127.0.0.1:%d http2 backlog=4096; http2_max_concurrent_streams 1000; "
            "location / { grpc_pass grpc://up; } }" % (upstream, port))], name=name)
        wait_port(port)
        time.sleep(0.2)
        return port, children(p.pid)[0]
    n_port, n_pid = nginx("nginx-h2", o_port)
    ns_port, ns_pid = nginx("nginx-h2-slow", s_port)
    rows.append(("nginx", n_port, n_pid, (ns_port, ns_pid)))

    results = {name: {"rounds": [], "ticks": 0, "done": 0, "lat": []} for name, _, _, _ in rows}
    for name, port, pid, _ in rows:
        h2load(port, 1)  # warm up: connections, pools, caches
    for i in range(ROUNDS):
        for name, port, pid, _ in rows:
            c0 = cpu_ticks(pid)
            log = os.path.join(TMP, "h2load-%s-%d.log" % (name.replace(" ", "_"), i))
            r = h2load(port, log=log)
            res = results[name]
            res["ticks"] += cpu_ticks(pid) - c0
            res["done"] += r["done"]
            res["rounds"].append(r)
            print("  round %d %-22s %8.0f req/s  p50 %.2f ms  p99 %.2f ms  failed %d" % (
                i + 1, name, r["rps"], r.get("p50", 0), r.get("p99", 0), r["failed"]), flush=True)
    time.sleep(2)
    for name, port, pid, slow in rows:
        if slow:
            results[name].update(held_memory(*slow))
    write(results)


def held_memory(port, pid):
    """RssAnon of a proxy in front of the slow origin: idle after a warm-up
    of the same shape, then with HELD_CONNS connections holding 1 stream
    each, then holding HELD_STREAMS each. A stream's cost is the slope
    between the two holds, so the connections' own cost (the HTTP/2
    session on each side, its HPACK tables and buffers) is not spread over
    the streams; a connection's cost is what the first hold adds beyond its
    one stream. Each hold is a separate h2load, waited out before the next."""
    # A light warm-up (10 connections) makes what is made once (lazy
    # globals, the upstream's first connections); then 2.5 s quiet, after
    # which coldbrew has trimmed its pools and purged jemalloc (it does so
    # after a second without traffic), so idle is what a quiet pod holds and
    # the first hold pays for what it uses. No trim falls between the two
    # holds: the second starts as the first ends.
    subprocess.run(["taskset", "-c", bench.LOAD_CPU, "h2load", "-c", "10", "-m", "10", "-n", "200", "-t", "1",
                    "http://127.0.0.1:%d/sleep?ms=10" % port],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    time.sleep(2.5)
    out = {"idle": mem(pid).get("RssAnon", 0)}
    for key, m in (("one", 1), ("held", HELD_STREAMS)):
        p = subprocess.Popen(["taskset", "-c", bench.LOAD_CPU, "h2load", "-c", str(HELD_CONNS), "-m", str(m),
                              "-n", str(HELD_CONNS * m), "-t", "1", "http://127.0.0.1:%d/sleep?ms=4000" % port],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2.5)  # every stream is open and waiting on the origin
        out[key] = mem(pid).get("RssAnon", 0)
        p.wait(30)
    n = HELD_CONNS * (HELD_STREAMS - 1)
    out["per_stream"] = (out["held"] - out["one"]) * 1024 / n
    out["per_conn"] = (out["one"] - out["idle"]) * 1024 / HELD_CONNS - out["per_stream"]
    return out


def write(results):
    def med(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2] if xs else 0
    base = results["haproxy"]["rounds"]
    lines = ["## HTTP/2 (h2load)", "",
             "Produced by `make bench` (`bench/h2bench.py`) on %s: h2load -c%d -m%d -t1 -D%d "
             "through each proxy to the same nginx h2c origin (1 worker), %d rounds interleaved across the "
             "rows (the median round shown); h2load and the origin on CPU 0, the proxy on CPU 1. p50/p99 "
             "are over every request h2load logged in the median round. CPU is the proxy process's "
             "utime+stime over all rounds divided by the requests done. Memory is RssAnon of a second "
             "instance of each proxy in front of a slow origin (every stream waits 4 s): idle 2.5 s after a light "
             "warm-up (10 connections); then %d connections holding 1 open stream each; then the same holding %d each. "
             "A stream's cost is the slope between the two holds (the difference over %d streams), so what a "
             "connection costs (its HTTP/2 sessions, HPACK tables, buffers) is counted apart: the first hold "
             "over the idle process, per connection, less one stream. coldbrew gives its pools and freed pages "
             "back after a quiet second; HAProxy and nginx keep what the warm-up took and the first hold reuses "
             "it, so their per-connection cost does not show this way (—). nginx proxies HTTP/2 upstream only with "
             "`grpc_pass`; HAProxy uses `proto h2` on both sides." % (
                 time.strftime("%Y-%m-%d"), CONNS, STREAMS, SECONDS, ROUNDS, HELD_CONNS, HELD_STREAMS,
                 HELD_CONNS * (HELD_STREAMS - 1)), "",
             "| path | streams/s (median round) | × HAProxy (paired median) | failed | p50 ms | p99 ms | CPU µs/req "
             "| RssAnon idle kB | RssAnon %d×%d open kB | per open stream B | per connection B |" % (
                 HELD_CONNS, HELD_STREAMS),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, res in results.items():
        rounds = res["rounds"]
        mid = sorted(rounds, key=lambda r: r["rps"])[len(rounds) // 2]
        ratios = [a["rps"] / b["rps"] for a, b in zip(rounds, base)]
        cpu = res["ticks"] * 1e6 / bench.CLK / max(res["done"], 1)
        has = "idle" in res
        dash = lambda k, f="%d": f % res[k] if has and res[k] >= 0 else "—"  # noqa: E731
        lines.append("| %s | %.0f | %.2f | %d | %.2f | %.2f | %.1f | %s | %s | %s | %s |" % (
            name, mid["rps"], med(ratios), sum(r["failed"] for r in rounds), mid.get("p50", 0), mid.get("p99", 0),
            cpu, dash("idle"), dash("held"), dash("per_stream", "%.0f"), dash("per_conn", "%.0f")))
    lines += ["", "Rounds (streams/s): " + "; ".join(
        "%s %s" % (n, "/".join("%.0f" % r["rps"] for r in res["rounds"])) for n, res in results.items()), ""]
    sections.replace_heading("## HTTP/2 (h2load)", "\n".join(lines) + "\n")


if __name__ == "__main__":
    bench.run(main)

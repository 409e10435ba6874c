#!/usr/bin/python3
"""Tracing overhead (issue 12): queue-proxy throughput with OTel tracing at
sampling rate 1.0 against rate 0, in the same run, plus tracing off.

  tracing none   OBSERVABILITY_CONFIG without tracing (Knative's default)
  sampling 0     tracing on (http/protobuf), rate 0: traceparent parsed and
                 a new one injected, spans made but not recorded
  sampling 1.0   every request: the "queue" and "kn.queueproxy.proxy" spans
                 recorded, batched, encoded and exported

The collector is an nginx of its own that reads each export and answers
200 (a sink that keeps up, so the numbers are the queue-proxy's cost, not a
collector's; on this 2-core machine it shares CPU 0 with wrk and the
origin, so at rate 1.0 it also takes CPU from the load generator). The origin is bench.py's nginx. Each row is a separate
queue-proxy; rounds are interleaved (wrk, BENCH_SECONDS each, the median of
BENCH_ROUNDS shown), all pinned as in bench.py (wrk, origin and collector on
CPU 0, the queue-proxy on CPU 1). Target: sampling 1.0 costs at most 10% of
the throughput at sampling 0. Writes the "tracing" section of
bench/RESULTS.md (BENCH_NO_WRITE=1: print only)."""
import json, os, statistics, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
from bench import BIN, LOAD_CPU, cpu_ticks, free_port, nginx_conf, qp_env, start, wait_port, wrk  # noqa: E402
from results import replace_section  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "3"))
TP = "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def main():
    o_port, c_port = free_port(), free_port()
    start(["/usr/sbin/nginx", "-c", nginx_conf("origin",
        'server { listen 127.0.0.1:%d backlog=4096; location / { default_type text/plain; '
        'return 200 "hello from the origin\\n"; } }' % o_port)], name="origin", cpu=LOAD_CPU)
    # The collector: its own nginx, so reading the exports never delays the origin's loop.
    start(["/usr/sbin/nginx", "-c", nginx_conf("collector",
        'server { listen 127.0.0.1:%d; client_max_body_size 16m; location / { return 200; } }' % c_port)],
        name="collector", cpu=LOAD_CPU)
    wait_port(o_port)
    wait_port(c_port)
    rows = []
    for name, rate in (("tracing none", None), ("sampling 0", 0.0), ("sampling 1.0", 1.0)):
        port = free_port()
        env = qp_env(port, o_port, 0)
        cfg = {"requestMetrics": {"protocol": "none"}}
        if rate is not None:
            cfg["tracing"] = {"protocol": "http/protobuf", "endpoint": "http://127.0.0.1:%d/v1/traces" % c_port,
                              "samplingRate": rate}
        env["OBSERVABILITY_CONFIG"] = json.dumps(cfg)
        env["COLDBREW_OTLP_BATCH_MS"] = "200"
        p = start([os.path.join(BIN, "queue-proxy")], env, name="qp-" + name.replace(" ", "-"))
        wait_port(port)
        rows.append({"name": name, "port": port, "pid": p.pid, "rps": [], "p50": [], "p99": [], "cpu": 0, "n": 0,
                     "log": os.path.join(bench.TMP, "qp-" + name.replace(" ", "-") + ".log")})
    for r in rows:
        wrk(r["port"], 1, headers=("-H", TP))  # warm
    for _ in range(ROUNDS):
        for r in rows:
            t0 = cpu_ticks(r["pid"])
            w = wrk(r["port"], SECONDS, headers=("-H", TP))
            r["cpu"] += cpu_ticks(r["pid"]) - t0
            r["n"] += w["total"]
            r["rps"].append(w["rps"])
            r["p50"].append(w["p50"])
            r["p99"].append(w["p99"])
            if w["non2xx"] or w["sockerr"]:
                raise SystemExit("%s: errors %r" % (r["name"], w))
    time.sleep(0.5)
    clk = os.sysconf("SC_CLK_TCK")
    base = statistics.median(rows[1]["rps"])
    lines = ["## Tracing overhead (queue-proxy)", "",
             "Produced by `python3 bench/trace_overhead.py` on %s (part of `make bench`): wrk -t1 -c%d, %d s × %d "
             "interleaved rounds per row (median shown), through one queue-proxy per row to bench.py's nginx "
             "origin; tracing exports http/protobuf to an nginx sink of its own that answers 200 (a collector that keeps up; it "
             "shares CPU 0 with wrk and the origin, so at rate 1.0 it also slows the load generator). "
             "Every request carries a sampled `traceparent`; at rate 1.0 each one makes two spans (`queue`, "
             "`kn.queueproxy.proxy`), exported in batches; at rate 0 the spans are made but not recorded. "
             "Target: sampling 1.0 within 10%% of sampling 0." % (time.strftime("%Y-%m-%d"), bench.CONNS, SECONDS,
                                                                 ROUNDS),
             "", "| row | req/s | vs sampling 0 | p50 ms | p99 ms | CPU µs/req | spans dropped |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        rps = statistics.median(r["rps"])
        cpu_us = r["cpu"] / clk / max(r["n"], 1) * 1e6
        log = open(r["log"]).read()
        dropped = sum(int(x) for l in log.splitlines() if "otlp: dropped" in l
                      for x in __import__("re").findall(r"(\d+) spans", l))
        lines.append("| %s | %.0f | %+.1f%% | %.3f | %.3f | %.1f | %d |" % (
            r["name"], rps, (rps / base - 1) * 100, statistics.median(r["p50"]), statistics.median(r["p99"]),
            cpu_us, dropped))
    lines += ["", "Rounds (req/s): " + "; ".join("%s %s" % (r["name"], ", ".join("%.0f" % x for x in r["rps"]))
                                               for r in rows)]
    text = "\n".join(lines) + "\n"
    print(text)
    if os.environ.get("BENCH_NO_WRITE") != "1":
        replace_section("tracing", text)


if __name__ == "__main__":
    bench.run(main)

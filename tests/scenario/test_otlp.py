"""Scenario tests for OTLP export (common/telemetry/otlp.c, common/telemetry/trace.c) against a
real receiver (tests/scenario/otlp_receiver.py: http/protobuf and gRPC,
decoded by an independent wire decoder), driven by build/tests/otlp_driver:
the exporter alone, exact trees and metrics. The binaries' own spans (queue-proxy
and activator on the request path) are tested in test_trace.py."""
import json, os, subprocess, time
from harness import *

DRIVER = os.path.join(ROOT, BUILD, "tests", "otlp_driver")
PARENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"

RESOURCE = {
    "service.name": "hello", "service.version": "abc123", "service.instance.id": "hello-00001-deployment-xyz",
    "k8s.container.name": "queue-proxy", "k8s.namespace.name": "default",
    "k8s.pod.name": "hello-00001-deployment-xyz", "kn.service.name": "hello",
    "kn.configuration.name": "hello", "kn.revision.name": "hello-00001",
}


class Receiver(Proc):
    def __init__(self, mode="ok"):
        self.http_port, self.grpc_port = free_port(), free_port()
        super().__init__("otlp-receiver", [PY, os.path.join(HERE, "otlp_receiver.py"),
                                            str(self.http_port), str(self.grpc_port)])
        wait_port(self.http_port, proc=self.p)
        wait_port(self.grpc_port, proc=self.p)
        if mode != "ok":
            self.mode(mode)

    def mode(self, m):
        eq(get(self.http_port, "/_mode?m=" + m)[0], 200, "mode " + m)

    def spans(self):
        return json.loads(get(self.http_port, "/_spans")[2])

    def metrics(self):
        return json.loads(get(self.http_port, "/_metrics")[2])

    def counts(self):
        return json.loads(get(self.http_port, "/_counts")[2])

    def config(self, proto, rate=1.0, metrics=True):
        if proto == "grpc":
            ep = "127.0.0.1:%d" % self.grpc_port
            mep = ep
        else:
            ep = "http://127.0.0.1:%d/v1/traces" % self.http_port
            mep = "http://127.0.0.1:%d" % self.http_port  # no path: /v1/metrics
        cfg = {"tracing": {"protocol": proto, "endpoint": ep, "samplingRate": rate},
               "metrics": {}, "runtime": {},
               "requestMetrics": {"protocol": proto if metrics else "none", "endpoint": mep,
                                  "exportInterval": 200 * 1000 * 1000}}
        return json.dumps(cfg)


def drive(args, cfg, timeout=30, **env):
    full = dict(os.environ, OBSERVABILITY_CONFIG=cfg)
    full.update({k: str(v) for k, v in env.items()})
    r = subprocess.run([DRIVER] + args, env=full, capture_output=True, timeout=timeout)
    out, err = r.stdout.decode(), r.stderr.decode()
    ok(r.returncode == 0, "driver exit %d: %s %s" % (r.returncode, out, err[-2000:]))
    stats = next(json.loads(l[6:]) for l in out.splitlines() if l.startswith("STATS "))
    tp = next((l.split()[1] for l in out.splitlines() if l.startswith("TRACEPARENT ")), None)
    return stats, tp, err


def check_tree(rcv, proto):
    spans = rcv.spans()
    eq(len(spans), 3, "three spans decoded")
    by = {s["name"]: s for s in spans}
    root, wait, proxy = by["queue"], by["kn.queueproxy.wait"], by["kn.queueproxy.proxy"]
    for s in spans:
        eq(s["via"], proto, "protocol")
        eq(s["trace_id"], PARENT_TRACE, "one trace, the caller's")
        eq(s["resource"], RESOURCE, "Knative's resource attributes")
        eq(s["scope"], {"name": "knative.dev/serving"}, "scope")
        ok(s["start"] <= s["end"], "start <= end")
        ok(abs(s["start"] / 1e9 - time.time()) < 60, "unix-nano timestamps")
        eq(len(s["span_id"]), 16, "8-byte span id")
    # The tree: queue is the child of the remote parent; the others of queue.
    eq(root["parent_span_id"], PARENT_SPAN, "root's parent is the traceparent's")
    eq(wait["parent_span_id"], root["span_id"], "wait is queue's child")
    eq(proxy["parent_span_id"], root["span_id"], "proxy is queue's child")
    eq(len({s["span_id"] for s in spans}), 3, "distinct span ids")
    eq((root["kind"], wait["kind"], proxy["kind"]), (2, 1, 1), "server, internal, internal")
    eq(root["flags"], 0x301, "sampled, parent known remote")
    eq(proxy["flags"], 0x101, "sampled, parent local")
    eq(root["attributes"], {"http.request.method": "GET", "url.path": "/coffee",
                            "kn.route.tag": "kn:disabled", "http.response.status_code": 200},
       "server span attributes")
    eq(proxy["attributes"], {"http.response.status_code": 200,
                             "coldbrew.cold_start_seconds": 1.5, "coldbrew.cold": True},
       "typed attributes")
    eq([e["name"] for e in wait["events"]], ["breaker.acquired"], "event")
    ok(wait["start"] <= wait["events"][0]["time"] <= wait["end"], "event inside its span")
    eq(root["status"], {"code": 2, "message": "just testing"}, "error status")
    eq(proxy["status"], None, "unset status is omitted")
    return proxy


def check_metrics(rcv, proto):
    ms = {m["name"]: m for m in rcv.metrics()}
    h = ms["kn.serving.invocation.duration"]
    eq((h["type"], h["unit"], h["temporality"], h["via"]), ("histogram", "s", 2, proto), "histogram")
    p = h["points"][0]
    eq(p["attributes"], {"http.response.status_code": "200"}, "histogram attributes")
    eq(p["count"], 1, "one request")
    eq(p["explicit_bounds"], [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10],
       "Knative's buckets")
    eq(p["bucket_counts"], [0, 0, 0, 1] + [0] * 11, "0.042 s lands in (0.025, 0.05]")
    eq((p["sum"], p["min"], p["max"]), (0.042, 0.042, 0.042), "sum/min/max")
    c = ms["coldbrew.requests"]
    eq((c["type"], c["monotonic"], c["temporality"]), ("sum", True, 2), "counter")
    eq(c["points"][0]["value"], 1, "counter value")
    eq(c["resource"], RESOURCE, "metrics resource")


@test
def otlp_http_protobuf_exports_the_exact_span_tree_and_metrics():
    rcv = Receiver()
    tp = "00-%s-%s-01" % (PARENT_TRACE, PARENT_SPAN)
    st, next_hop, _ = drive(["tree", tp], rcv.config("http/protobuf", rate=0.5))
    eq((st["spans_exported"], st["spans_dropped_full"], st["spans_dropped_export"]), (3, 0, 0), "stats")
    proxy = check_tree(rcv, "http")
    eq(next_hop, "00-%s-%s-01" % (PARENT_TRACE, proxy["span_id"]), "the next hop's traceparent")
    check_metrics(rcv, "http")
    eq(rcv.counts()["errors"], [], "nothing undecodable")


@test
def otlp_grpc_exports_the_exact_span_tree_and_metrics():
    rcv = Receiver()
    tp = "00-%s-%s-01" % (PARENT_TRACE, PARENT_SPAN)
    st, next_hop, _ = drive(["tree", tp], rcv.config("grpc", rate=0.5))
    eq((st["spans_exported"], st["exports_ok"]), (3, 1), "stats")
    proxy = check_tree(rcv, "grpc")
    eq(next_hop, "00-%s-%s-01" % (PARENT_TRACE, proxy["span_id"]), "the next hop's traceparent")
    check_metrics(rcv, "grpc")
    eq(rcv.counts()["errors"], [], "nothing undecodable")


@test
def otlp_sampling_follows_the_parent_and_knatives_edges():
    rcv = Receiver()
    unsampled = "00-%s-%s-00" % (PARENT_TRACE, PARENT_SPAN)
    # Ratio in between: parent-based. An unsampled parent exports nothing,
    # and the next hop still gets a new span id with the flag off.
    st, next_hop, _ = drive(["tree", unsampled], rcv.config("http/protobuf", rate=0.99, metrics=False))
    eq(st["spans_queued"], 0, "nothing recorded")
    ok(next_hop.startswith("00-%s-" % PARENT_TRACE) and next_hop.endswith("-00"), next_hop)
    ok(PARENT_SPAN not in next_hop, "a new span id")
    # rate >= 1 is AlwaysSample: even under an unsampled parent.
    st, next_hop, _ = drive(["tree", unsampled], rcv.config("http/protobuf", rate=1, metrics=False))
    eq(st["spans_exported"], 3, "AlwaysSample")
    ok(next_hop.endswith("-01"), next_hop)
    # rate 0 is NeverSample: even under a sampled parent.
    st, _, _ = drive(["tree", "00-%s-%s-01" % (PARENT_TRACE, PARENT_SPAN)],
                     rcv.config("http/protobuf", rate=0, metrics=False))
    eq(st["spans_queued"], 0, "NeverSample")
    # A malformed traceparent is no parent: a new trace.
    st, next_hop, _ = drive(["tree", "00-%s-%s-01" % (PARENT_TRACE.upper(), PARENT_SPAN)],
                            rcv.config("http/protobuf", rate=1, metrics=False))
    ok(PARENT_TRACE not in next_hop, "new trace id")
    eq(len(rcv.spans()), 6, "two sampled trees")


PACE_ENV = dict(COLDBREW_OTLP_QUEUE_SPANS=2048, COLDBREW_OTLP_BATCH_SPANS=512,
                COLDBREW_OTLP_BATCH_MS=200, COLDBREW_OTLP_TIMEOUT_MS=500)
SECONDS, RATE = 3, 2000  # trees a second; 3 spans each


def pace(rcv, proto, rate=RATE):
    st, _, err = drive(["pace", str(SECONDS), str(rate)], rcv.config(proto), timeout=60, **PACE_ENV)
    print("  %s: %s" % (proto, json.dumps(st)))
    # The request path keeps its pace whatever the collector does.
    ok(st["trees"] >= 0.97 * st["due"], "kept pace: %d of %d trees" % (st["trees"], st["due"]))
    # A blocking export would stall the loop for the whole timeout (500 ms);
    # the bound leaves room for a loaded test machine's scheduling.
    # (ASan makes everything several times slower: only the pace is checked.)
    if not SANITIZE:
        ok(st["max_lag_ms"] < 250, "the loop never stalled: %.1f ms" % st["max_lag_ms"])
    ok(SANITIZE or st["median_add_us"] < 20, "adding spans is quick: %.2f us (3 spans)" % st["median_add_us"])
    eq(st["spans_queued"] + st["spans_dropped_full"], 3 * st["trees"], "every span accounted for")
    return st, err


@test
def otlp_keeps_up_with_a_healthy_collector():
    for proto in ("http/protobuf", "grpc"):
        rcv = Receiver()
        # The Python receiver decodes by hand: at 1,500 spans/s it keeps up
        # even on a loaded machine, so every span must arrive.
        st, err = pace(rcv, proto, rate=500)
        eq(st["spans_dropped_full"] + st["spans_dropped_export"], 0, "no drops at 1,500 spans/s")
        eq(st["spans_exported"], 3 * st["trees"], "all exported")
        eq(len(rcv.spans()), 3 * st["trees"], "all decoded")
        ok(st["metric_exports_ok"] >= 1, "metrics exported")
        ok("otlp: dropped" not in err, "no drop log")
        rcv.stop()


@test
def otlp_refusing_hanging_resetting_collectors_cost_drops_not_pace():
    for proto in ("http/protobuf", "grpc"):
        # bodiless: a gRPC call that fails after its headers, with no
        # message before the trailers (the exporter's body buffer is never made).
        for mode in ("refuse", "hang", "reset") + (("bodiless",) if proto == "grpc" else ()):
            rcv = Receiver(mode)
            st, err = pace(rcv, proto)
            eq(st["spans_exported"], 0, "%s %s: nothing accepted" % (proto, mode))
            ok(st["exports_failed"] >= 1, "%s %s: failed exports counted" % (proto, mode))
            ok(st["spans_dropped_export"] >= 1, "%s %s: their spans counted" % (proto, mode))
            # Backing off, the ring fills: the overflow is dropped and counted.
            ok(st["spans_dropped_full"] > 0, "%s %s: ring overflow counted" % (proto, mode))
            ok(st["queue_len"] <= st["queue_cap"] == 2048, "bounded ring")
            ok(st["in_flight"] <= 2, "one export per signal at most")
            # Memory: the ring (2048 spans of 2.5 KiB) plus a batch in flight,
            # not the flood (18,000 spans would be 45 MiB).
            ok(st["max_rss_kb"] < 32 * 1024, "%s %s: bounded memory: %d KiB" % (proto, mode, st["max_rss_kb"]))
            # Drops are logged once a minute at most: once in a 3 s run.
            eq(err.count("otlp: dropped"), 1, "%s %s: one drop log line" % (proto, mode))
            c = rcv.counts()
            seen = sum(v for k, v in c.items() if k != "errors" and k.startswith("grpc" if proto == "grpc" else "http"))
            ok(seen >= 1, "%s %s: the collector saw the attempts: %s" % (proto, mode, c))
            # Not one attempt per batch: the exporter backs off.
            ok(seen <= 12, "%s %s: backed off: %s" % (proto, mode, c))
            rcv.stop()


if __name__ == "__main__":
    import sys
    p, f = run_all(sys.argv[1] if len(sys.argv) > 1 else None)
    sys.exit(1 if f else 0)

"""Scenario tests for issue 12, cold starts you can see: W3C trace context
through the queue-proxy and the activator, OTLP export to a real receiver
(tests/scenario/otlp_receiver.py, an independent protobuf decoder), the
collector failing in every way while serving goes on, and the activator's
cold-start ledger (Server-Timing, the Prometheus histogram)."""
import json, os, re, subprocess, threading, time
from harness import *
import harness
_n = len(harness._tests)
from test_otlp import Receiver  # noqa: E402
from test_h2 import H2Origin, curl_h2  # noqa: E402
from test_local import service_doc  # noqa: E402
del harness._tests[_n:]  # their tests run from their own files

NS = "default"
TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
TP_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def seen_headers(body):
    j = json.loads(body)
    return {k.lower(): v for k, v in j["headers"]}


def spans_named(rcv, names, timeout=10):
    """Waits until the receiver has decoded every span in names; returns them by name
    (the last of each name)."""
    def have():
        by = {}
        for s in rcv.spans():
            by[s["name"]] = s
        return by if all(n in by for n in names) else None
    return wait_for(have, timeout, "spans %s" % (names,))


def trace_cfg(rcv, proto="http/protobuf", rate=1.0, metrics="none"):
    return rcv.config(proto, rate, metrics=False) if metrics == "none" else rcv.config(proto, rate)


def rss_kb(pid):
    for l in open("/proc/%d/status" % pid):
        if l.startswith("VmRSS:"):
            return int(l.split()[1])
    return 0


# ---------------------------------------------------------------- queue-proxy

@test
def trace_qp_continues_the_callers_trace_and_passes_it_on():
    for proto in ("http/protobuf", "grpc"):
        rcv = Receiver()
        o = Origin()
        q = QueueProxy(o.port, OBSERVABILITY_CONFIG=rcv.config(proto, 1.0),
                       COLDBREW_OTLP_BATCH_MS=50)
        tp = "00-%s-%s-01" % (TRACE, PARENT)
        st, _, body = get(q.port, "/coffee?x=1", {"traceparent": tp, "tracestate": "vendor=v1",
                                                 "Knative-Serving-Tag": "candidate"})
        eq(st, 200, "answered")
        h = seen_headers(body)
        m = TP_RE.match(h.get("traceparent", ""))
        ok(m, "the user container got a traceparent: %r" % h.get("traceparent"))
        eq(m.group(1), TRACE, "the caller's trace goes on")
        ok(m.group(2) != PARENT, "with the queue-proxy's span as parent")
        eq(m.group(3), "01", "sampled")
        eq(h.get("tracestate"), "vendor=v1", "tracestate passed on")
        by = spans_named(rcv, ["queue", "kn.queueproxy.proxy"])
        root, proxy = by["queue"], by["kn.queueproxy.proxy"]
        eq(root["via"], "grpc" if proto == "grpc" else "http", "exported over " + proto)
        eq(root["trace_id"], TRACE, "one trace")
        eq(root["parent_span_id"], PARENT, "queue's parent is the caller's span")
        eq(proxy["parent_span_id"], root["span_id"], "kn.queueproxy.proxy is queue's child")
        eq(m.group(2), proxy["span_id"], "the user container's parent is kn.queueproxy.proxy")
        eq(root["kind"], 2, "server span")
        a = root["attributes"]
        eq((a["http.request.method"], a["url.path"], a["http.response.status_code"], a["kn.route.tag"]),
           ("GET", "/coffee", 200, "candidate"), "server span attributes")
        eq(root["resource"]["kn.revision.name"], "hello-00001", "Knative's resource")
        # request metrics over the same protocol
        ms = wait_for(lambda: {m["name"]: m for m in rcv.metrics()
                               if m["name"] == "kn.serving.invocation.duration"}, 10, "metrics")
        p = ms["kn.serving.invocation.duration"]["points"][-1]
        eq(p["attributes"], {"http.response.status_code": "200"}, "invocation by status")
        ok(p["count"] >= 1, "one request recorded")
        q.stop()
        o.stop()
        rcv.stop()


@test
def trace_qp_breaker_wait_span_under_cc1():
    rcv = Receiver()
    o = Origin()
    q = QueueProxy(o.port, CONTAINER_CONCURRENCY=1, OBSERVABILITY_CONFIG=rcv.config("http/protobuf", 1.0),
                   COLDBREW_OTLP_BATCH_MS=50)
    st, _, _ = get(q.port, "/")
    eq(st, 200, "answered")
    by = spans_named(rcv, ["queue", "kn.queueproxy.proxy", "kn.queueproxy.wait"])
    eq(by["kn.queueproxy.wait"]["parent_span_id"], by["kn.queueproxy.proxy"]["span_id"],
       "wait is proxy's child, as in Knative's handler")
    eq(by["queue"]["parent_span_id"], "", "no caller: a root")


@test
def trace_malformed_traceparent_is_ignored():
    bad = [
        "00-%s-%s-0" % (TRACE, PARENT),                     # wrong length
        "00-%s-%s-01" % (TRACE[:-1] + "g", PARENT),          # non-hex
        "00-%s-%s-01" % (TRACE.upper(), PARENT),             # upper case
        "ff-%s-%s-01" % (TRACE, PARENT),                     # version ff
        "00-%s-%s-01" % ("0" * 32, PARENT),                  # all-zero trace id
        "00-%s-%s-01" % (TRACE, "0" * 16),                   # all-zero parent id
        "garbage",
        "",
    ]
    rcv = Receiver()
    o = Origin()
    q = QueueProxy(o.port, OBSERVABILITY_CONFIG=rcv.config("http/protobuf", 1.0), COLDBREW_OTLP_BATCH_MS=50)
    q0 = QueueProxy(o.port, OBSERVABILITY_CONFIG=rcv.config("http/protobuf", 0.0))
    for b in bad:
        st, _, body = get(q.port, "/", {"traceparent": b, "tracestate": "k=v"})
        eq(st, 200, "answered with %r" % b)
        h = seen_headers(body)
        m = TP_RE.match(h.get("traceparent", ""))
        ok(m, "a fresh traceparent for %r: %r" % (b, h.get("traceparent")))
        ok(m.group(1) not in (TRACE, "0" * 32, TRACE.upper()), "a new trace for %r" % b)
        eq(m.group(3), "01", "sampled at rate 1 (%r)" % b)
        ok("tracestate" not in h, "a new trace has no tracestate (%r)" % b)
        # rate 0: a new trace too, not sampled
        st, _, body = get(q0.port, "/", {"traceparent": b})
        m0 = TP_RE.match(seen_headers(body).get("traceparent", ""))
        ok(m0 and m0.group(3) == "00", "not sampled at rate 0 (%r)" % b)
    roots = wait_for(lambda: [s for s in rcv.spans() if s["name"] == "queue"] if
                     len([s for s in rcv.spans() if s["name"] == "queue"]) >= len(bad) else None, 10, "root spans")
    ok(all(s["parent_span_id"] == "" for s in roots), "malformed parents are no parents")
    eq(len(roots), len(bad), "rate 0 exports nothing")


@test
def trace_off_passes_traceparent_through_untouched():
    o = Origin()
    q = QueueProxy(o.port)
    tp = "00-%s-%s-01" % (TRACE, PARENT)
    st, _, body = get(q.port, "/", {"traceparent": tp})
    eq(seen_headers(body).get("traceparent"), tp, "tracing none: the caller's header as is")


@test
def trace_h2_request_carries_traceparent():
    rcv = Receiver()
    o = H2Origin()
    q = QueueProxy(o.port, OBSERVABILITY_CONFIG=rcv.config("grpc", 1.0), COLDBREW_OTLP_BATCH_MS=50)
    rc, body, tail = curl_h2(q.port, "/h2", "-H", "traceparent: 00-%s-%s-01" % (TRACE, PARENT))
    eq(rc, 0, "curl")
    ok(tail.endswith(" 2"), "HTTP/2: " + tail)
    h = {k.lower(): v for k, v in json.loads(body)["headers"]}
    m = TP_RE.match(h.get("traceparent", ""))
    ok(m and m.group(1) == TRACE, "h2c upstream got the trace: %r" % h.get("traceparent"))
    by = spans_named(rcv, ["queue", "kn.queueproxy.proxy"])
    eq(by["queue"]["attributes"]["network.protocol.version"], "2", "HTTP/2 server span")
    eq(m.group(2), by["kn.queueproxy.proxy"]["span_id"], "parent is the proxy span")


@test
def trace_collector_refuses_hangs_resets_serving_goes_on():
    n = 1500
    for mode in ("refuse", "hang", "reset"):
        for proto in ("http/protobuf", "grpc"):
            rcv = Receiver(mode)
            o = Origin()
            q = QueueProxy(o.port, OBSERVABILITY_CONFIG=rcv.config(proto, 1.0),
                           COLDBREW_OTLP_BATCH_MS=20, COLDBREW_OTLP_QUEUE_SPANS=64,
                           COLDBREW_OTLP_BATCH_SPANS=16, COLDBREW_OTLP_TIMEOUT_MS=300)
            c = conn(q.port)
            t0 = time.time()
            rss0 = None
            for i in range(n):
                c.request("GET", "/")
                r = c.getresponse()
                r.read()
                eq(r.status, 200, "request %d with the collector %s (%s)" % (i, mode, proto))
                if i == 300:
                    rss0 = rss_kb(q.p.pid)
            took = time.time() - t0
            rss1 = rss_kb(q.p.pid)
            c.close()
            print("    %s %s: %d requests in %.2fs, RSS %d -> %d KiB" % (mode, proto, n, took, rss0, rss1))
            ok(took < 30, "serving went on (%.1fs)" % took)
            if not SANITIZE:  # ASan's quarantine holds freed memory on purpose
                ok(rss1 - rss0 < 2048, "memory bounded (%d -> %d KiB)" % (rss0, rss1))
            wait_for(lambda: "otlp: dropped" in q.output(), 10, "the drop log line")
            line = [l for l in q.output().splitlines() if "otlp: dropped" in l][0]
            nums = [int(x) for x in re.findall(r"(\d+) spans", line)]
            ok(sum(nums) > 0, "drops counted: " + line)
            q.stop()
            o.stop()
            rcv.stop()


@test
def trace_activator_collector_down_drops_counted():
    rcv = Receiver("refuse")
    k = KubeAPI()
    k.revision(NS, "hello-00001", cc=0)
    pod = Pod()
    k.private_endpoints(NS, "hello-00001", ready=[pod.addr])
    a = Activator(k, OBSERVABILITY_CONFIG=rcv.config("grpc", 1.0, metrics=False), COLDBREW_OTLP_BATCH_MS=20,
                  COLDBREW_OTLP_QUEUE_SPANS=32, COLDBREW_OTLP_BATCH_SPANS=8, COLDBREW_OTLP_TIMEOUT_MS=300)
    c = conn(a.port)
    for i in range(600):
        c.request("GET", "/", headers={"Knative-Serving-Revision": "hello-00001", "Knative-Serving-Namespace": NS})
        r = c.getresponse()
        r.read()
        eq(r.status, 200, "request %d served with the collector refusing" % i)
    c.close()

    def dropped():
        text = get(a.metrics, "/metrics")[2].decode()
        return sum(int(n) for n in re.findall(r'coldbrew_otlp_spans_dropped_total\{reason="\w+"\} (\d+)', text))
    ok(wait_for(lambda: dropped() > 0, 5, "drops on the metrics port"), "drops counted")
    wait_for(lambda: "otlp: dropped" in a.output(), 5, "the drop log line")
    # Once the collector is back, spans flow again.
    # Once the collector is back, spans flow again (after the backoff: at
    # most a few seconds after this short failure).
    rcv.mode("ok")
    get(a.port, "/", {"Knative-Serving-Revision": "hello-00001", "Knative-Serving-Namespace": NS})
    wait_for(lambda: [s for s in rcv.spans() if s["name"] == "handle"], 20, "spans after recovery")


# ---------------------------------------------------------------- activator: the ledger

def cold_setup(rcv=None, annotation=False, **act_env):
    k = KubeAPI()
    spec = {}
    k.revision(NS, "hello-00001", cc=0)
    if annotation:
        obj = {"apiVersion": "serving.knative.dev/v1", "kind": "Revision",
               "metadata": {"namespace": NS, "name": "hello-00001",
                            "labels": {"serving.knative.dev/service": "hello"},
                            "annotations": {"coldbrew.dev/server-timing": "enabled"}},
               "spec": {"containerConcurrency": 0, "timeoutSeconds": 300,
                        "containers": [{"image": "coffee", "ports": [{"containerPort": 8080}]}]}}
        k.apply("Revision", obj)
    env = dict(act_env)
    qenv = {}
    if rcv:
        env.update(OBSERVABILITY_CONFIG=rcv.config("http/protobuf", 1.0, metrics=False), COLDBREW_OTLP_BATCH_MS=50)
        qenv.update(OBSERVABILITY_CONFIG=rcv.config("grpc", 1.0, metrics=False), COLDBREW_OTLP_BATCH_MS=50)
    a = Activator(k, PROBE_FREQUENCY="5ms", **env)
    pod = Pod(**qenv)
    return k, a, pod


def cold_request(k, a, pod, headers=None, delay=0.3, publish=True):
    res = [None]
    hdr = dict({"Knative-Serving-Revision": "hello-00001", "Knative-Serving-Namespace": NS}, **(headers or {}))

    def fire():
        c = conn(a.port)
        t0 = time.perf_counter()
        c.request("GET", "/cold", headers=hdr)
        r = c.getresponse()
        first = time.perf_counter()
        body = r.read()
        res[0] = (r.status, dict((kk.lower(), v) for kk, v in r.getheaders()), body, (first - t0) * 1e3)
        c.close()
    th = threading.Thread(target=fire)
    th.start()
    time.sleep(delay)
    ok(res[0] is None, "held while the revision has no pod")
    if publish:
        k.private_endpoints(NS, "hello-00001", ready=[pod.addr])
    th.join(15)
    ok(res[0] is not None, "answered")
    return res[0]


def server_timing(v):
    out = {}
    for part in v.split(","):
        f = [x.strip() for x in part.split(";")]
        d = dict(x.split("=", 1) for x in f[1:])
        out[f[0]] = (float(d["dur"]), d.get("desc", "").strip('"'))
    return out


PHASES = ["poke", "endpoints", "probe", "forward", "response"]


@test
def coldstart_server_timing_phases_add_up():
    k, a, pod = cold_setup()
    st, h, body, client_ms = cold_request(k, a, pod, {"Coldbrew-Server-Timing": "1"})
    eq(st, 200, "answered")
    ok("server-timing" in h, "Server-Timing asked for: %r" % h)
    ok("coldbrew-server-timing" not in seen_headers(body), "the ask is not passed to the user container")
    t = server_timing(h["server-timing"])
    eq(list(t), PHASES + ["total"], "one entry per phase, then the total")
    total = t["total"][0]
    s = sum(t[p][0] for p in PHASES)
    print("    Server-Timing: %s" % h["server-timing"])
    ok(abs(s - total) <= 1.0, "phases add up to the total within 1 ms (%.3f vs %.3f)" % (s, total))
    ok(250 <= total <= client_ms + 1, "total %.1f ms: the hold (>= 250 ms) and no more than the client saw (%.1f)"
       % (total, client_ms))
    ok(t["endpoints"][0] >= 250, "the wait for a pod is the endpoints phase (%.1f)" % t["endpoints"][0])
    # A warm request gets no header, asked or not.
    st, h2, _ = get(a.port, "/", {"Knative-Serving-Revision": "hello-00001", "Knative-Serving-Namespace": NS,
                                  "Coldbrew-Server-Timing": "1"})
    eq(st, 200, "warm")
    ok("server-timing" not in h2, "not a cold start: no ledger")
    # The log line.
    wait_for(lambda: '"coldstart":{' in a.output(), 5, "the cold-start log line")
    line = json.loads([l for l in a.output().splitlines() if '"coldstart":{' in l][0])
    eq(line["revision"], "default/hello-00001", "log line names the revision")
    ok(abs(line["coldstart"]["total_ms"] - total) < 0.01, "log and header agree")


@test
def coldstart_server_timing_off_by_default_and_by_annotation():
    k, a, pod = cold_setup()
    st, h, _, _ = cold_request(k, a, pod)
    eq(st, 200, "answered")
    ok("server-timing" not in h, "off by default")
    k2, a2, pod2 = cold_setup(annotation=True)
    st, h, _, _ = cold_request(k2, a2, pod2)
    ok("server-timing" in h, "on for every request of an annotated revision")


@test
def coldstart_histogram_counts_each_cold_start_once():
    k, a, pod = cold_setup()

    def scrape():
        st, _, body = get(a.metrics, "/metrics")
        eq(st, 200, "metrics")
        text = body.decode()
        cnt = re.search(r'coldbrew_coldstart_requests_total\{[^}]*kn_revision_name="hello-00001"\} (\d+)', text)
        per = {p: int(m) for p, m in re.findall(
            r'coldbrew_coldstart_phase_seconds_count\{[^}]*kn_revision_name="hello-00001",phase="(\w+)"\} (\d+)', text)}
        return (int(cnt.group(1)) if cnt else 0), per, text
    eq(scrape()[0], 0, "no cold start yet")
    # two requests held together: two cold-started requests, one episode
    res = []
    ths = [threading.Thread(target=lambda: res.append(get(a.port, "/", {"Knative-Serving-Revision": "hello-00001",
                                                                         "Knative-Serving-Namespace": NS})))
           for _ in range(2)]
    for t in ths:
        t.start()
    time.sleep(0.3)
    k.private_endpoints(NS, "hello-00001", ready=[pod.addr])
    for t in ths:
        t.join(10)
    eq(sorted(r[0] for r in res), [200, 200], "both answered")
    n, per, text = scrape()
    eq(n, 2, "two cold-started requests")
    eq(per, {p: 2 for p in PHASES + ["total"]}, "each phase counted once per request")
    for _ in range(5):
        eq(get(a.port, "/", {"Knative-Serving-Revision": "hello-00001", "Knative-Serving-Namespace": NS})[0], 200, "warm")
    eq(scrape()[0], 2, "warm requests are not cold starts")
    # back to zero, then a cold start again
    k.private_endpoints(NS, "hello-00001")
    wait_for(lambda: get(a.metrics, "/metrics")[2].decode().find(
        'kn_revision_request_queued') >= 0, 2, "metrics")
    time.sleep(0.1)
    st, h, _, _ = cold_request(k, a, pod, {"Coldbrew-Server-Timing": "1"})
    eq(st, 200, "the second cold start")
    n, per, text = scrape()
    eq(n, 3, "counted once more")
    ok(server_timing(h["server-timing"])["endpoints"][0] >= 250, "a new episode: it waited for a pod again")
    st, _, body = get(a.metrics, "/coldstarts")
    j = json.loads(body)
    r = j["revisions"][0]
    eq((r["name"], r["count"], len(r["recent"])), ("hello-00001", 3, 3), "the recent list")


@test
def coldstart_span_tree_through_activator_and_queue_proxy():
    rcv = Receiver()
    k, a, pod = cold_setup(rcv)
    tp = "00-%s-%s-01" % (TRACE, PARENT)
    st, h, body, _ = cold_request(k, a, pod, {"traceparent": tp, "Coldbrew-Server-Timing": "1"})
    eq(st, 200, "answered")
    seen = seen_headers(body)
    m = TP_RE.match(seen.get("traceparent", ""))
    ok(m and m.group(1) == TRACE, "the user container saw the trace: %r" % seen.get("traceparent"))
    names = ["handle", "throttler_try", "activator_proxy", "queue", "kn.queueproxy.proxy"]
    by = spans_named(rcv, names)
    for n in names:
        eq(by[n]["trace_id"], TRACE, n + " in the caller's trace")
    eq(by["handle"]["parent_span_id"], PARENT, "activator span: child of the caller")
    eq(by["throttler_try"]["parent_span_id"], by["handle"]["span_id"], "throttler_try under handle")
    eq(by["activator_proxy"]["parent_span_id"], by["handle"]["span_id"], "activator_proxy under handle")
    eq(by["queue"]["parent_span_id"], by["activator_proxy"]["span_id"], "queue-proxy span under the activator's")
    eq(by["kn.queueproxy.proxy"]["parent_span_id"], by["queue"]["span_id"], "proxy under queue")
    eq(m.group(2), by["kn.queueproxy.proxy"]["span_id"], "user container's parent: kn.queueproxy.proxy")
    eq(by["handle"]["resource"]["k8s.container.name"], "activator", "activator resource")
    eq(by["queue"]["resource"]["k8s.container.name"], "queue-proxy", "queue-proxy resource")
    eq(by["handle"]["via"], "http", "activator over http/protobuf")
    eq(by["queue"]["via"], "grpc", "queue-proxy over grpc")
    ev = [e["name"] for e in by["handle"]["events"]]
    ok(set(["coldstart.endpoints", "coldstart.probe_ok", "coldstart.forwarded", "coldstart.first_byte"]) <= set(ev),
       "the phases are span events: %r" % ev)
    hs = by["handle"]
    ok(all(hs["start"] <= e["time"] <= hs["end"] for e in hs["events"]), "events inside the span")
    eq(hs["attributes"]["kn.revision.name"], "hello-00001", "revision attribute")
    eq(hs["attributes"]["coldbrew.cold_start"], True, "marked cold")
    ok(by["throttler_try"]["end"] - by["throttler_try"]["start"] >= 250e6, "throttler_try covers the hold")


# ---------------------------------------------------------------- the local platform

@test
def coldstart_local_platform_traced_ledger_in_status():
    rcv = Receiver()
    cfg = rcv.config("http/protobuf", 1.0, metrics=False)
    pl = Platform(service_doc(annotations={"coldbrew.dev/server-timing": "enabled"}),
                  OBSERVABILITY_CONFIG=cfg, COLDBREW_OTLP_BATCH_MS=50)
    c = conn(pl.port)
    c.request("GET", "/", headers={"Host": "coffee.default.localhost",
                                   "traceparent": "00-%s-%s-01" % (TRACE, PARENT)})
    r = c.getresponse()
    r.read()
    eq(r.status, 200, "cold start answered")
    t = server_timing(r.getheader("Server-Timing") or "")
    eq(list(t), PHASES + ["total"], "the annotation turns the ledger header on")
    ok(abs(sum(t[p][0] for p in PHASES) - t["total"][0]) <= 1.0, "phases add up")
    print("    local cold start: %s" % r.getheader("Server-Timing"))
    c.close()
    by = spans_named(rcv, ["handle", "activator_proxy", "queue", "kn.queueproxy.proxy"])
    eq(by["queue"]["parent_span_id"], by["activator_proxy"]["span_id"], "one tree across both binaries")
    eq(by["queue"]["trace_id"], TRACE, "the caller's trace")
    st = wait_for(lambda: (lambda r: r if r.get("coldstarts") and r.get("pod_starts") else None)(
        pl.revision("coffee-00001")), 10, "status with the ledger")
    eq(st["coldstart_count"], 1, "one cold start")
    cs = st["coldstarts"][0]
    ok(abs(cs["total_ms"] - t["total"][0]) < 0.01, "status shows the same ledger")
    ps = st["pod_starts"][0]
    ok(ps["fork_to_listening_ms"] > 0 and ps["listening_to_ready_ms"] >= 0, "pod start phases: %r" % ps)
    rc, out, err = pl.cli("status", "--once")
    eq(rc, 0, "status")
    print("\n".join("    | " + l for l in out.splitlines()))
    ok("cold starts (1; newest first, ms)" in out, "status text shows the ledger")
    ok("fork -> user listening -> queue-proxy ready" in out, "and the pod start")
    pl.stop()
    rcv.stop()


if __name__ == "__main__":
    import sys
    p, f = run_all(sys.argv[1] if len(sys.argv) > 1 else None)
    sys.exit(1 if f else 0)

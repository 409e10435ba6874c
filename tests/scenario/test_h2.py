"""Scenario tests for HTTP/2 (h2c) and gRPC through the real queue-proxy and
activator, between real clients (curl, nghttp, h2load, python3-h2 on a raw
socket, python3-grpcio) and real origins (tests/scenario/h2_origin.py on
python3-h2, grpc_origin.py on python3-grpcio, origin.py for HTTP/1.1) on
loopback. The contract: knative-queue-proxy.md §2 and §6, knative-activator.md
§1.1 and §6.2 (protocol mirroring: HTTP/2 in, h2c out; HTTP/1.1 in, HTTP/1.1
out)."""
import json, os, signal, socket, subprocess, threading, time

import h2.config, h2.connection, h2.events, h2.errors, h2.settings

from harness import *

NS = "default"


class H2Origin(Proc):
    def __init__(self):
        self.port = free_port()
        super().__init__("h2-origin", [PY, os.path.join(HERE, "h2_origin.py"), str(self.port)])
        wait_port(self.port, proc=self.p)

    def stats(self):
        return json.loads(H2Client(self.port).request("/stats")[0].body)


class GrpcOrigin(Proc):
    def __init__(self, *flags):
        self.port = free_port()
        super().__init__("grpc-origin", [PY, os.path.join(HERE, "grpc_origin.py"), str(self.port)] + list(flags))
        wait_port(self.port, proc=self.p)


class Resp:
    def __init__(self):
        self.status, self.headers, self.body, self.trailers = None, [], b"", []
        self.reset, self.ended = None, False

    def header(self, name):
        for k, v in self.headers:
            if k == name:
                return v
        return None


class H2Client:
    """An HTTP/2 client on a raw socket (python3-h2): many streams on one
    connection, every frame visible (RST_STREAM codes, GOAWAY)."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout)
        self.sock.settimeout(timeout)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.h2.initiate_connection()
        self.sock.sendall(self.h2.data_to_send())
        self.resp = {}
        self.goaway = None
        self.closed = False

    def start(self, path, headers=None, method="GET", body=None, authority="svc.example"):
        sid = self.h2.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", "http"), (":authority", authority), (":path", path)]
        hdrs += [(k.lower(), v) for k, v in (headers or {}).items()]
        self.h2.send_headers(sid, hdrs, end_stream=body is None)
        self.sock.sendall(self.h2.data_to_send())
        self.resp[sid] = Resp()
        if body is not None:
            self.send_body(sid, body)
        return sid

    def send_body(self, sid, body):
        """Sends as the peer's windows allow, reading (and answering) meanwhile."""
        while body:
            n = min(len(body), self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
            if n <= 0:
                self.pump(lambda: self.h2.local_flow_control_window(sid) > 0, 5)
                if self.closed or self.done(sid):
                    return
                continue
            self.h2.send_data(sid, body[:n])
            body = body[n:]
            self.sock.sendall(self.h2.data_to_send())
        self.h2.end_stream(sid)
        self.sock.sendall(self.h2.data_to_send())

    def pump(self, until, deadline=10.0):
        end = time.time() + deadline
        while not until() and time.time() < end and not self.closed:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                break
            except OSError:
                self.closed = True
                break
            if not data:
                self.closed = True
                break
            for ev in self.h2.receive_data(data):
                r = self.resp.get(getattr(ev, "stream_id", 0))
                if isinstance(ev, h2.events.ResponseReceived):
                    r.headers = ev.headers
                    r.status = int(dict(ev.headers)[":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    r.body += ev.data
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.TrailersReceived):
                    r.trailers = ev.headers
                elif isinstance(ev, h2.events.StreamEnded):
                    r.ended = True
                elif isinstance(ev, h2.events.StreamReset):
                    if r is not None:
                        r.reset = ev.error_code
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    self.goaway = (ev.error_code, ev.last_stream_id)
            out = self.h2.data_to_send()
            if out:
                try:
                    self.sock.sendall(out)
                except OSError:
                    self.closed = True

    def done(self, sid):
        r = self.resp[sid]
        return r.ended or r.reset is not None

    def request(self, path, **kw):
        sid = self.start(path, **kw)
        self.pump(lambda: self.done(sid))
        return self.resp[sid], sid

    def close(self):
        self.sock.close()


def curl_h2(port, path, *extra, upgrade=False):
    args = ["curl", "-sS", "--http2" if upgrade else "--http2-prior-knowledge", "-o", "-", "-w", "\n%{http_code} %{http_version}"]
    r = subprocess.run(args + list(extra) + ["http://127.0.0.1:%d%s" % (port, path)], capture_output=True, timeout=30)
    out = r.stdout.decode(errors="replace")
    body, _, tail = out.rpartition("\n")
    return r.returncode, body, tail


# ---------------------------------------------------------------- queue-proxy

@test
def h2_prior_knowledge_and_upgrade_mirror_h2c_upstream():
    o = H2Origin()
    q = QueueProxy(o.port)
    rc, body, tail = curl_h2(q.port, "/x?y=1", "-H", "X-A: b")
    eq((rc, tail), (0, "200 2"), "curl --http2-prior-knowledge")
    j = json.loads(body)
    eq(j["protocol"], "HTTP/2.0", "the user container sees HTTP/2")
    eq((j["path"], j["authority"]), ("/x?y=1", "127.0.0.1:%d" % q.port), ":path and :authority kept")
    h = dict(j["headers"])
    eq(h.get("x-a"), "b", "headers passed")
    eq(h.get("x-forwarded-for"), "127.0.0.1", "X-Forwarded-For appended")
    rc, body, tail = curl_h2(q.port, "/up", upgrade=True)
    eq((rc, tail), (0, "200 2"), "curl --http2 (Upgrade: h2c)")
    eq(json.loads(body)["protocol"], "HTTP/2.0", "upgraded request goes upstream as h2c")
    r = subprocess.run(["nghttp", "-n", "--stat", "http://127.0.0.1:%d/n" % q.port], capture_output=True, timeout=30)
    eq(r.returncode, 0, "nghttp: %s" % r.stderr[-300:])
    # HTTP/1.1 in: HTTP/1.1 out (a separate HTTP/1 origin sees it).
    o1 = Origin()
    q1 = QueueProxy(o1.port)
    st, _, body = get(q1.port, "/h1")
    eq(st, 200, "HTTP/1.1 still works on the same listener")
    rc, body, tail = curl_h2(q1.port, "/status?code=204")
    ok(rc == 0 or "502" in tail, "h2 to an HTTP/1-only container gives an answer, not a hang: %s" % tail)


@test
def h2_probes_answered_per_stream():
    o = H2Origin()
    q = QueueProxy(o.port)
    c = H2Client(q.port)
    r, _ = c.request("/", headers={"K-Network-Probe": "queue", "User-Agent": "kube-probe/1.30"})
    eq((r.status, r.body), (200, b"queue"), "kubelet probe over h2")
    r, _ = c.request("/", headers={"K-Network-Probe": "activator", "User-Agent": "Knative-Autoscaling-Probe"})
    eq(r.status, 400, "wrong probe value")
    r, _ = c.request("/", headers={"K-Network-Probe": "queue", "User-Agent": "Knative-Activator-Probe"})
    eq((r.status, r.body), (200, b"queue"), "activator probe over h2")
    eq(o.stats()["requests"], 1, "no probe reached the user container (only /stats did)")


def kubelet_probe(port):
    st, _, body = get(port, "/", {"User-Agent": "kube-probe/1.30", "K-Network-Probe": "queue"}, timeout=15)
    return st, body


def http_get_probe(port, path, **extra):
    spec = {"httpGet": {"path": path, "port": port, "host": "127.0.0.1", "scheme": "HTTP",
                        "httpHeaders": [{"name": "X-Ready", "value": "yes"}]}, "successThreshold": 1}
    spec.update(extra)
    return json.dumps(spec)


@test
def h2_readiness_auto_detection_probes_h2c_then_http1():
    # An h2c-only user container: without ENABLE_HTTP2_AUTO_DETECTION the
    # httpGet probe speaks HTTP/1.1 and never sees it ready.
    o = H2Origin()
    once = {"periodSeconds": 1, "timeoutSeconds": 1}
    q = QueueProxy(o.port, SERVING_READINESS_PROBE=http_get_probe(o.port, "/probe", **once))
    eq(kubelet_probe(q.port)[0], 503, "HTTP/1.1 probe of an h2c-only container: not ready")
    q.stop()
    # With it: an h2c GET without the probe's headers, then one with them.
    q = QueueProxy(o.port, ENABLE_HTTP2_AUTO_DETECTION="true",
                   SERVING_READINESS_PROBE=http_get_probe(o.port, "/probe"))
    eq(kubelet_probe(q.port), (200, b"queue"), "h2c probe of an h2c container: ready")
    probes = o.stats()["probes"]
    ok(len(probes) >= 2, "two h2c probe requests: %r" % probes)
    first, second = dict(probes[-2]), dict(probes[-1])
    eq((first.get("user-agent"), first.get("x-ready")), ("kube-probe//", None),
       "detection: no probe headers")
    eq((second.get("user-agent"), second.get("x-ready")), ("kube-probe//", "yes"),
       "the deciding probe carries the probe's headers")
    q.stop()
    # Not ready over h2c (503) and no HTTP/1.1 either: not ready.
    q = QueueProxy(o.port, ENABLE_HTTP2_AUTO_DETECTION="true",
                   SERVING_READINESS_PROBE=http_get_probe(o.port, "/probe?code=503", **once))
    eq(kubelet_probe(q.port)[0], 503, "h2c 503 and no HTTP/1.1: not ready")
    q.stop()
    # An HTTP/1.1-only container: the h2c GET fails, HTTP/1.1 without the
    # headers decides.
    o1 = Origin()
    q = QueueProxy(o1.port, ENABLE_HTTP2_AUTO_DETECTION="true",
                   SERVING_READINESS_PROBE=http_get_probe(o1.port, "/status?code=204"))
    eq(kubelet_probe(q.port), (200, b"queue"), "falls back to HTTP/1.1: ready")
    q2 = QueueProxy(o1.port, ENABLE_HTTP2_AUTO_DETECTION="true",
                    SERVING_READINESS_PROBE=http_get_probe(o1.port, "/status?code=500", **once))
    eq(kubelet_probe(q2.port)[0], 503, "HTTP/1.1 500 after the h2c attempt: not ready")
    eq(get(q.port, "/x")[0], 200, "serves after all that")


@test
def h2_breaker_counts_streams_and_refuses_with_503_on_the_stream():
    o = H2Origin()
    q = QueueProxy(o.port, CONTAINER_CONCURRENCY=1)
    c = H2Client(q.port)
    sids = [c.start("/sleep?ms=600") for _ in range(13)]
    c.pump(lambda: all(c.done(s) for s in sids), 20)
    codes = sorted(c.resp[s].status for s in sids)
    eq(codes.count(503), 2, "CC=1 admits 1 and queues 10; the 12th and 13th get 503: %s" % codes)
    eq(codes.count(200), 11, "the rest are served: %s" % codes)
    b503 = [c.resp[s].body for s in sids if c.resp[s].status == 503]
    eq(b503[0], b"pending request queue full\n", "Knative's body")
    eq(o.stats()["max_in_flight"], 1, "one stream at a time at the user container")
    r, _ = c.request("/after")
    eq(r.status, 200, "the connection lives on")


@test
def h2_timeouts_answer_504_on_the_stream():
    o = H2Origin()
    q = QueueProxy(o.port, REVISION_TIMEOUT_SECONDS=1)
    c = H2Client(q.port)
    slow = c.start("/sleep?ms=3000")
    fast = c.start("/")
    c.pump(lambda: c.done(slow) and c.done(fast), 10)
    eq((c.resp[slow].status, c.resp[slow].body), (504, b"request timeout"), "total timeout")
    eq(c.resp[fast].status, 200, "the other stream is untouched")
    q2 = QueueProxy(o.port, REVISION_IDLE_TIMEOUT_SECONDS=1)
    c2 = H2Client(q2.port)
    r, _ = c2.request("/drip?n=3&ms=1600")
    eq(r.status, 200, "the head went out")
    ok(r.reset is not None and not r.ended, "idle timeout after the head resets the stream (reset %s)" % r.reset)


@test
def h2_stats_and_request_metrics_count_streams():
    o = H2Origin()
    q = QueueProxy(o.port)
    c = H2Client(q.port)
    # The Stat is refreshed once a second from the second before: keep
    # streams going across two ticks, then read it.
    end = time.time() + 2.2
    n = 0
    while time.time() < end:
        c.request("/")
        n += 1
    s = decode_stat(get(q.stat, "/metrics")[2])
    ok(s.get("request_count", 0) >= 5, "the autoscaler's Stat counts the streams: %s" % s)
    st, _, body = get(q.prom, "/metrics")
    text = body.decode()
    line = [l for l in text.splitlines() if l.startswith("http_server_request_duration_seconds_count")
            and 'http_response_status_code="200"' in l]
    ok(line and float(line[0].split()[-1]) >= 5, "HTTP/2 requests in the request metrics: %s" % line)


@test
def h2_trailers_streaming_and_big_bodies():
    o = H2Origin()
    q = QueueProxy(o.port)
    c = H2Client(q.port)
    r, _ = c.request("/trailers")
    eq((r.status, r.body), (200, b"payload"), "body")
    eq(dict(r.trailers).get("grpc-status"), "0", "trailers arrive")
    eq(dict(r.trailers).get("x-checksum"), "7", "every trailer")
    # Each DATA frame is passed on as it comes (nothing held until the end).
    sid = c.start("/drip?n=4&ms=300")
    t0 = time.time()
    c.pump(lambda: c.resp[sid].body.count(b"\n") >= 1, 5)
    first = time.time() - t0
    c.pump(lambda: c.done(sid), 5)
    ok(first < 0.25, "first chunk after %.3fs, not at the end" % first)
    eq(c.resp[sid].body.count(b"drip"), 4, "all chunks")
    r, _ = c.request("/big?bytes=5000000")
    eq(len(r.body), 5000000, "5 MB through the windows")
    up = b"z" * 3000000
    r, _ = c.request("/", method="POST", body=up)
    eq(json.loads(r.body)["body_bytes"], 3000000, "3 MB request body")


@test
def h2_upstream_dying_or_resetting_mid_stream_is_a_stream_error():
    o = H2Origin()
    q = QueueProxy(o.port)
    c = H2Client(q.port)
    r, _ = c.request("/reset")
    ok(r.reset is not None and not r.ended, "upstream RST_STREAM reaches the client as a reset")
    r, _ = c.request("/crash")
    eq(r.body, b"partial", "what came before the crash")
    ok(r.reset is not None and not r.ended, "a user container that dies mid-stream: stream error, not a clean end")
    r, _ = c.request("/")
    eq(r.status, 200, "the client's connection serves on")
    o.stop()
    r, _ = c.request("/")
    eq(r.status, 502, "no user container: 502 on the stream")


@test
def h2_drain_sends_goaway_and_finishes_streams_in_flight():
    o = H2Origin()
    q = QueueProxy(o.port)
    # nghttp prints every frame (python-h2 stops at a GOAWAY and drops the
    # frames of streams that are still allowed to finish).
    p = subprocess.Popen(["nghttp", "-v", "http://127.0.0.1:%d/sleep?ms=1500" % q.port],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # The origin counts its own /stats request too: 2 means the sleep is in flight.
    wait_for(lambda: o.stats()["in_flight"] >= 2, 10, "the request to reach the user container")
    q.signal(signal.SIGTERM)
    out = p.communicate(timeout=15)[0].decode(errors="replace")
    eq(p.returncode, 0, "nghttp finished cleanly: " + out[-500:])
    import re
    sid = re.search(r"send HEADERS frame <length=\d+, flags=0x\w+, stream_id=(\d+)>", out).group(1)
    ok(re.search(r"recv GOAWAY frame .*\n.*last_stream_id=%s, error_code=NO_ERROR" % sid, out),
       "GOAWAY names the last stream served (%s): %s" % (sid, out[-800:]))
    ok(re.search(r"recv \(stream_id=%s\) :status: 200" % sid, out),
       "the stream in flight finished with 200: " + out[-1500:])
    eq(q.wait(10), 0, "exit 0 after the drain")


@test
def h2_bad_input_gets_protocol_errors_and_others_keep_serving():
    o = H2Origin()
    q = QueueProxy(o.port)
    # A bad preface.
    s = socket.create_connection(("127.0.0.1", q.port), 5)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + b"\0" * 64)
    data = b""
    try:
        while True:
            d = s.recv(4096)
            if not d:
                break
            data += d
    except OSError:
        pass
    s.close()
    ok(len(data) < 4096, "the connection was closed after the bad preface (%d bytes)" % len(data))
    # Rapid reset: open and reset streams in a loop until GOAWAY.
    c = H2Client(q.port)
    n = 0
    for n in range(2000):
        sid = c.h2.get_next_available_stream_id()
        c.h2.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/sleep?ms=100")])
        c.h2.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        try:
            c.sock.sendall(c.h2.data_to_send())
        except OSError:
            break
        if n % 50 == 0:
            c.sock.settimeout(0.01)
            c.pump(lambda: c.goaway is not None, 0.05)
            if c.goaway or c.closed:
                break
    c.sock.settimeout(2)
    c.pump(lambda: c.goaway is not None, 3)
    ok(c.goaway is not None, "rapid reset gets GOAWAY (after %d resets)" % n)
    ok(n < 1000, "cut off after a bounded number of resets: %d" % n)
    # Streams beyond SETTINGS_MAX_CONCURRENT_STREAMS are refused.
    q2 = QueueProxy(o.port, COLDBREW_H2_MAX_CONCURRENT_STREAMS=3)
    c2 = H2Client(q2.port)
    c2.h2.remote_settings.acknowledge()  # send all at once, ignoring the limit
    c2.h2.remote_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = 100
    c2.h2.remote_settings.acknowledge()
    sids = [c2.start("/sleep?ms=300") for _ in range(5)]
    c2.pump(lambda: all(c2.done(x) for x in sids), 10)
    refused = [x for x in sids if c2.resp[x].reset == h2.errors.ErrorCodes.REFUSED_STREAM]
    served = [x for x in sids if c2.resp[x].status == 200]
    eq((len(served), len(refused)), (3, 2), "3 served, 2 refused with REFUSED_STREAM")
    # Meanwhile, everyone else is served.
    r, _ = H2Client(q.port).request("/")
    eq(r.status, 200, "a well-behaved client on the same queue-proxy")
    st, _, body = get(q.port, "/", {"K-Network-Probe": "queue", "User-Agent": "kube-probe/1.30"})
    eq((st, body), (200, b"queue"), "HTTP/1.1 clients too")
    ok(q.p.poll() is None, "the queue-proxy lives")


@test
def h2_h2load_many_streams():
    o = H2Origin()
    q = QueueProxy(o.port)
    r = subprocess.run(["h2load", "-n", "3000", "-c", "10", "-m", "20", "http://127.0.0.1:%d/" % q.port],
                       capture_output=True, timeout=60)
    out = r.stdout.decode()
    ok("3000 succeeded" in out and "0 failed" in out, out[-600:])


# ---------------------------------------------------------------- gRPC

def grpc_channel(port, authority=None):
    import grpc
    opts = [("grpc.default_authority", authority)] if authority else []
    return grpc.insecure_channel("127.0.0.1:%d" % port, options=opts)


def grpc_four_shapes(port, authority=None, what=""):
    import grpc
    ch = grpc_channel(port, authority)
    eq(ch.unary_unary("/coldbrew.test.Echo/Unary")(b"hello", timeout=20), b"hello", what + "unary")
    eq(list(ch.unary_stream("/coldbrew.test.Echo/ServerStream")(b"4", timeout=10)), [b"0", b"1", b"2", b"3"],
       what + "server streaming")
    eq(ch.stream_unary("/coldbrew.test.Echo/ClientStream")(iter([b"a", b"b", b"c"]), timeout=10), b"a,b,c",
       what + "client streaming")
    # Bidirectional, lock-step: the next message is written only after the
    # echo of the previous one arrived, so any buffering would deadlock.
    import queue
    q = queue.Queue()
    q.put(b"m0")

    def gen():
        for i in range(3):
            m = q.get(timeout=5)
            yield m
    got = []
    for m in ch.stream_stream("/coldbrew.test.Echo/Bidi")(gen(), timeout=10):
        got.append(m)
        q.put(b"m%d" % len(got))
    eq(got, [b"m0", b"m1", b"m2"], what + "bidirectional, message by message")
    try:
        ch.unary_unary("/coldbrew.test.Echo/Missing")(b"x", timeout=5)
        ok(False, "expected an error status")
    except grpc.RpcError as e:
        eq(e.code(), grpc.StatusCode.UNIMPLEMENTED, what + "grpc-status trailer arrives")
    ch.close()


@test
def grpc_through_the_queue_proxy():
    g = GrpcOrigin()
    q = QueueProxy(g.port, SERVING_READINESS_PROBE=json.dumps({"grpc": {"port": g.port, "service": ""}}))
    grpc_four_shapes(q.port, what="queue-proxy: ")
    import grpc
    ch = grpc_channel(q.port)
    t0 = time.time()
    try:
        ch.unary_unary("/coldbrew.test.Echo/Sleep")(b"3000", timeout=0.5)
        ok(False, "deadline expected")
    except grpc.RpcError as e:
        eq(e.code(), grpc.StatusCode.DEADLINE_EXCEEDED, "grpc-timeout passes through and is honoured")
    ok(time.time() - t0 < 2.5, "the deadline ended the call")


@test
def grpc_user_container_dying_mid_stream_is_an_error():
    import grpc
    g = GrpcOrigin()
    q = QueueProxy(g.port)
    ch = grpc_channel(q.port)
    got = []
    try:
        for m in ch.unary_stream("/coldbrew.test.Echo/DieMidStream")(b"", timeout=10):
            got.append(m)
        ok(False, "a clean end after the container died")
    except grpc.RpcError as e:
        ok(e.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN),
           "stream error: %s" % e.code())
    eq(got, [b"before"], "what was sent before the death")


# ---------------------------------------------------------------- activator

def h2_pod(**qp_env):
    class P:
        pass
    p = P()
    p.origin = H2Origin()
    p.qp = QueueProxy(p.origin.port, **qp_env)
    p.addr = ("127.0.0.1", p.qp.port)
    return p


@test
def activator_h2_holds_1000_streams_on_one_connection_then_forwards():
    k = KubeAPI()
    k.revision(NS, "h2-00001", cc=0, containers=[{"image": "x", "ports": [{"name": "h2c", "containerPort": 8080}]}])
    a = Activator(k)
    c = H2Client(a.h2c, timeout=20)
    c.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    hdrs = {"Knative-Serving-Namespace": NS, "Knative-Serving-Revision": "h2-00001"}
    sids = []
    for i in range(1000):
        sids.append(c.start("/n/%d" % i, headers=hdrs))
    c.sock.settimeout(0.5)
    c.pump(lambda: False, 0.5)
    ok(not any(c.done(s) for s in sids), "held while the revision has no pod")
    pod = h2_pod()
    k.private_endpoints(NS, "h2-00001", ready=[pod.addr], port_name="http2")
    c.sock.settimeout(20)
    t0 = time.time()
    c.pump(lambda: all(c.done(s) for s in sids), 30)
    took = time.time() - t0
    codes = [c.resp[s].status for s in sids]
    eq(codes.count(200), 1000, "all 1000 answered: %s" % {x: codes.count(x) for x in set(codes)})
    print("    1000 held streams answered in %.2fs after the pod appeared" % took)
    j = json.loads(c.resp[sids[7]].body)
    eq(j["protocol"], "HTTP/2.0", "activator -> queue-proxy -> container all HTTP/2")
    eq(j["path"], "/n/7", "path")
    h = dict(j["headers"])
    eq(h.get("k-proxy-request"), "activator", "K-Proxy-Request")
    ok("knative-serving-revision" not in h, "revision headers stripped")


@test
def activator_grpc_scale_from_zero():
    k = KubeAPI()
    k.revision(NS, "g-00001", cc=0, containers=[{"image": "x", "ports": [{"name": "h2c", "containerPort": 8080}]}])
    a = Activator(k)
    res = {}

    def call():
        try:
            ch = grpc_channel(a.port, "g-00001.default.svc.cluster.local")
            res["r"] = ch.unary_unary("/coldbrew.test.Echo/Unary")(b"cold", timeout=20)
        except Exception as e:
            res["e"] = e
    th = threading.Thread(target=call)
    th.start()
    time.sleep(0.5)
    ok(not res, "held")
    g = GrpcOrigin()
    qp = QueueProxy(g.port)
    k.private_endpoints(NS, "g-00001", ready=[("127.0.0.1", qp.port)], port_name="http2")
    th.join(20)
    eq(res.get("r"), b"cold", "the held call was answered: %s" % res.get("e"))
    grpc_four_shapes(a.port, "g-00001.default.svc.cluster.local", "activator -> queue-proxy: ")


@test
def activator_h2_cold_start_carries_server_timing():
    # The cold-start ledger's Server-Timing rides the HTTP/2 response head
    # too (the proxy asks the app for its lines as the head goes out).
    k = KubeAPI()
    k.revision(NS, "st-00001", cc=0, containers=[{"image": "x", "ports": [{"name": "h2c", "containerPort": 8080}]}])
    a = Activator(k)
    res = {}

    def call():
        r = subprocess.run(["curl", "-sS", "-i", "--http2-prior-knowledge", "-H", "Coldbrew-Server-Timing: 1",
                            "-H", "Knative-Serving-Namespace: " + NS, "-H", "Knative-Serving-Revision: st-00001",
                            "http://127.0.0.1:%d/cold" % a.port], capture_output=True, timeout=30)
        res["out"] = r.stdout.decode(errors="replace")
    th = threading.Thread(target=call)
    th.start()
    time.sleep(0.4)
    ok(not res, "held")
    p = h2_pod()
    k.private_endpoints(NS, "st-00001", ready=[p.addr], port_name="http2")
    th.join(30)
    out = res.get("out", "")
    ok(out.startswith("HTTP/2 200"), "answered over HTTP/2: %r" % out[:200])
    line = [l for l in out.splitlines() if l.lower().startswith("server-timing:")]
    ok(line, "a Server-Timing field on the HTTP/2 head: %r" % out[:600])
    ok("endpoints;dur=" in line[0] and "total;dur=" in line[0], "the ledger's phases: %r" % line[0])
    body = json.loads(out.split("\r\n\r\n", 1)[1])
    ok("coldbrew-server-timing" not in dict(body["headers"]), "the ask is not passed on")


# ---------------------------------------------------------------- local platform

@test
def local_grpc_example_cold_start_split_and_tags():
    # examples/grpc/barista.yaml, as the README runs it: two revisions of a
    # gRPC service (port named h2c, gRPC readiness), 50/50, scaled to zero.
    import grpc
    pl = Platform(files=[os.path.join(ROOT, "examples", "grpc", "barista.yaml")])
    client = [PY, os.path.join(ROOT, "examples", "grpc", "barista.py")]
    t0 = time.time()
    r = subprocess.run(client + ["order", "127.0.0.1:%d" % pl.port, "latte", "2", "--authority",
                                 "barista.default.localhost"], capture_output=True, timeout=60)
    out = r.stdout.decode()
    eq(r.returncode, 0, "the example's own client, through coldbrew run: %s" % r.stderr.decode()[-400:])
    ok(out.startswith("2 x latte (served by barista-0000"), out)
    print("    cold gRPC call answered in %.2fs" % (time.time() - t0))
    r = subprocess.run(client + ["pour", "127.0.0.1:%d" % pl.port, "mocha", "3", "--authority",
                                 "candidate-barista.default.localhost"], capture_output=True, timeout=60)
    eq(r.stdout.decode().splitlines(), ["cup %d of mocha (served by barista-00002)" % i for i in (1, 2, 3)],
       "server streaming through the candidate tag")
    # The split: both revisions answer over one client's calls.
    seen = set()
    ch = grpc.insecure_channel("127.0.0.1:%d" % pl.port, options=[("grpc.default_authority", "barista.default.localhost")])
    call = ch.unary_unary("/coldbrew.example.Barista/Order")
    for i in range(60):
        reply = call(b"\x0a\x03tea", timeout=30)
        seen.add(reply.split(b"\x12")[-1][1:].decode())
    eq(sorted(seen), ["barista-00001", "barista-00002"], "50/50 split over HTTP/2 streams")
    rev = pl.revision("barista-00002")
    eq(rev["protocol"], "h2c", "status shows h2c")
    pl.stop()


if __name__ == "__main__":
    import sys
    p, f = run_all(sys.argv[1] if len(sys.argv) > 1 else None)
    sys.exit(1 if f else 0)

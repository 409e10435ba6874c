"""Scenario tests for gRPC: the queue-proxy's gRPC readiness probe
(grpc.health.v1.Health/Check over h2c, contract §4) against a real gRPC
server (Debian's python3-grpcio, tests/scenario/grpc_origin.py)."""
import json, os, socket, time
from harness import *


class GrpcOrigin(Proc):
    """tests/scenario/grpc_origin.py: Health and an Echo service over h2c."""

    def __init__(self, *flags, port=None):
        self.port = port or free_port()
        super().__init__("grpc-origin", [PY, os.path.join(HERE, "grpc_origin.py"), str(self.port)] + list(flags))
        wait_port(self.port, proc=self.p)


def health(q):
    st, r, body = get(q.port, "/", {"User-Agent": "kube-probe/1.30", "K-Network-Probe": "queue"})
    return st, body


def grpc_probe(port, service="", **extra):
    spec = {"grpc": {"port": port, "service": service}, "successThreshold": 1}
    spec.update(extra)
    return json.dumps(spec)


@test
def grpc_probe_serving_is_ready():
    g = GrpcOrigin()
    q = QueueProxy(g.port, SERVING_READINESS_PROBE=grpc_probe(g.port))
    eq(health(q), (200, b"queue"), "SERVING is ready (aggressive mode)")
    q2 = QueueProxy(g.port, SERVING_READINESS_PROBE=grpc_probe(g.port, periodSeconds=1, timeoutSeconds=1))
    for i in range(20):  # every health request runs a fresh probe: each must pass
        eq(health(q2), (200, b"queue"), "SERVING is ready (periodic mode), check %d" % i)


@test
def grpc_probe_not_serving_unknown_unimplemented_are_not_ready():
    g = GrpcOrigin()
    periodic = {"periodSeconds": 1, "timeoutSeconds": 1}
    q = QueueProxy(g.port, SERVING_READINESS_PROBE=grpc_probe(g.port, "sick", **periodic))
    eq(health(q)[0], 503, "NOT_SERVING is not ready")
    q = QueueProxy(g.port, SERVING_READINESS_PROBE=grpc_probe(g.port, "nope", **periodic))
    eq(health(q)[0], 503, "NOT_FOUND (unknown service) is not ready")
    g2 = GrpcOrigin("--no-health")
    q = QueueProxy(g2.port, SERVING_READINESS_PROBE=grpc_probe(g2.port, **periodic))
    eq(health(q)[0], 503, "UNIMPLEMENTED is not ready")
    # The prober keeps working for the healthy service after all that.
    q = QueueProxy(g.port, SERVING_READINESS_PROBE=grpc_probe(g.port, **periodic))
    eq(health(q), (200, b"queue"), "SERVING still ready")


@test
def grpc_probe_against_http1_or_silent_peer_fails_cleanly():
    periodic = {"periodSeconds": 1, "timeoutSeconds": 1}
    o = Origin()  # HTTP/1.1 only: answers the h2 preface with 400 and closes
    q = QueueProxy(o.port, SERVING_READINESS_PROBE=grpc_probe(o.port, **periodic))
    eq(health(q)[0], 503, "an HTTP/1.1 server is not a gRPC server")
    # A peer that accepts and never answers: cut at timeoutSeconds.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    q = QueueProxy(port, SERVING_READINESS_PROBE=grpc_probe(port, **periodic))
    t0 = time.time()
    eq(health(q)[0], 503, "silent peer")
    ok(0.8 < time.time() - t0 < 3, "cut at timeoutSeconds: %.2fs" % (time.time() - t0))
    silent.close()
    # Nothing listening at all.
    q = QueueProxy(free_port(), SERVING_READINESS_PROBE=grpc_probe(free_port(), **periodic))
    eq(health(q)[0], 503, "connection refused")
    ok(q.p.poll() is None, "the queue-proxy keeps running")


@test
def grpc_probe_waits_for_a_starting_server():
    port = free_port()
    q = QueueProxy(port, SERVING_READINESS_PROBE=grpc_probe(port))
    import threading
    result = {}

    def go():
        t0 = time.time()
        result["r"] = health(q)
        result["t"] = time.time() - t0
    th = threading.Thread(target=go)
    th.start()
    time.sleep(0.5)
    GrpcOrigin(port=port)
    th.join(12)
    eq(result["r"], (200, b"queue"), "ready once the gRPC server serves")
    ok(result["t"] < 5, "answered soon after the server started: %.2fs" % result["t"])


if __name__ == "__main__":
    import sys
    p, f = run_all(sys.argv[1] if len(sys.argv) > 1 else None)
    sys.exit(1 if f else 0)

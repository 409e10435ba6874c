"""Scenario tests for a burst onto a new pod (issue 9): 1,000 requests
released at once onto a user container whose listen backlog is 5 are all
answered at once, through the queue-proxy alone and through the activator
after a scale from zero; a request waiting for an upstream connection keeps
its timeout and its place is freed when its client leaves."""
import os, re, socket, threading, time
from harness import *
from burst_lib import burst, raise_nofile

NS = "default"
N = 1000
# All answered within 1 s; the sanitizers slow every hop several times.
LIMIT = 5.0 if SANITIZE else 1.0


class SmallOrigin(Proc):
    """Python's http.server with listen backlog 5 (burst_lib.py)."""

    def __init__(self, backlog=5):
        self.port = free_port()
        super().__init__("small-origin", [PY, os.path.join(HERE, "burst_lib.py"), str(self.port), str(backlog)])
        # No probe connection: the proxy's pool must start empty, as on a new pod.
        end = time.time() + 5
        while "small origin on" not in self.output() and time.time() < end:
            time.sleep(0.02)


def report(what, status, last):
    answered = sum(1 for s in status if s == 200)
    print("    %s: %d/%d answered 200, the last after %.3f s" % (what, answered, len(status), last))
    eq(answered, len(status), "%s: every request answered 200 (others: %r)" % (
        what, sorted(set(s for s in status if s != 200), key=str)))
    ok(last <= LIMIT, "%s: all answered within %.1f s (%.3f s)" % (what, LIMIT, last))


@test
def burst_queue_proxy_onto_backlog_5():
    raise_nofile(4 * N + 256)
    o = SmallOrigin()
    qp = QueueProxy(o.port, CONTAINER_CONCURRENCY=0)
    status, last, _ = burst(qp.port, N)
    report("queue-proxy CC=0", status, last)
    out = qp.output()
    # 502 as a number of its own: a random port such as 28502 in the start-up line is not one.
    ok(not re.search(r"(?<![0-9])502(?![0-9])", out), "no 502: " + out[-1000:])


@test
def burst_activator_scale_from_zero_onto_backlog_5():
    raise_nofile(4 * N + 256)
    k = KubeAPI()
    k.revision(NS, "burst-00001", cc=0)
    a = Activator(k)
    o = SmallOrigin()
    qp = QueueProxy(o.port, CONTAINER_CONCURRENCY=0)

    def publish():
        time.sleep(1.0)  # every request held by the activator: no pod yet
        k.private_endpoints(NS, "burst-00001", ready=[("127.0.0.1", qp.port)])

    status, last, _ = burst(a.port, N, headers=("Knative-Serving-Namespace: " + NS,
                                                "Knative-Serving-Revision: burst-00001"),
                            after_write=publish)
    report("activator -> queue-proxy after scale from zero", status, last)


def send(port, path):
    s = socket.create_connection(("127.0.0.1", port), 5)
    s.sendall(("GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path).encode())
    return s


def read_answer(s, timeout=10):
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        b = s.recv(65536)
        if not b:
            break
        data += b
    return data


@test
def burst_waiter_that_leaves_frees_its_place_and_timeout_is_504():
    """One upstream connection in all (COLDBREW_UPSTREAM_MAX_CONNS=1): a
    streaming response holds it; the requests behind it wait. One waiter's
    client leaves (its place is freed: the origin never sees it), one runs
    into its response-start timeout (504), one is served when the
    connection comes back."""
    o = Origin()
    qp = QueueProxy(o.port, COLDBREW_UPSTREAM_MAX_CONNS=1, REVISION_RESPONSE_START_TIMEOUT_SECONDS=1)
    busy = send(qp.port, "/drip?n=15&ms=100")  # 1.5 s of response on the only connection
    ok(read_answer(busy).startswith(b"HTTP/1.1 200"), "the stream started")
    leaver = send(qp.port, "/?who=leaver")
    time.sleep(0.2)
    leaver.close()  # gone while waiting
    t0 = time.time()
    timed = send(qp.port, "/?who=timed")
    head = read_answer(timed)
    took = time.time() - t0
    ok(head.startswith(b"HTTP/1.1 504"), "the waiter's start timeout answers 504: %r" % head[:80])
    ok(0.8 < took < 1.3, "at the 1 s response-start timeout (%.2f s)" % took)
    late = send(qp.port, "/sleep?ms=0")  # waits the stream's last ~0.3 s, then is served
    head = read_answer(late)
    ok(head.startswith(b"HTTP/1.1 200"), "the one behind is served when the connection frees: %r" % head[:80])
    busy.close()
    for s in (timed, late):
        s.close()
    # The origin saw the stream and the last request only (/stats is the third).
    eq(o.stats()["requests"], 3, "left and timed-out waiters never reached the origin")
    out = qp.output()
    ok("COLDBREW_UPSTREAM_MAX_CONNS caps new connects" in out, "the cap is logged: " + out[-800:])


if __name__ == "__main__":
    import sys
    p, f = run_all(sys.argv[1] if len(sys.argv) > 1 else None)
    sys.exit(1 if f else 0)

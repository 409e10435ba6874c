"""Scenario tests for the lingering close (issue 9, part 4: every error answer
reaches its client). A client that writes its whole request before reading
(curl uploading a file, Python's http.client, most clients) must be able to
finish writing and then read the answer, even when the server answers early
(503 queue full, 400, 431, the activator's 404/503/504) and closes. The real
binaries, real clients (raw sockets, curl, http.client), on loopback."""
import http.client, json, os, socket, threading, time
from harness import *

NS = "default"
BIG = 20 * 1024 * 1024
BODY = b"x" * BIG
SLOW = 3 if SANITIZE else 1  # time scale under the sanitizers


def big_file():
    path = os.path.join(LOGDIR, "upload-20MB.bin")
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(BODY)
    return path


def send_all_then_read(port, head, body=BODY, timeout=30):
    """The shape of most clients: sendall() the head and the whole body, only
    then recv() the answer. Returns (what was read, the error while writing or None)."""
    s = socket.create_connection(("127.0.0.1", port), timeout)
    werr = None
    try:
        s.sendall(head + body)
    except OSError as e:
        werr = e
    data = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    except OSError as e:
        if werr is None:
            werr = e
    s.close()
    return data, werr


def post_head(path="/", extra=b"", length=BIG):
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n%s"
            b"Content-Length: %d\r\n\r\n" % (path.encode(), extra, length))


def status_of(data):
    line = data.split(b"\r\n", 1)[0]
    return int(line.split()[1]) if line.startswith(b"HTTP/1.1 ") else None


def check_raw(port, head, want, what, body=BODY):
    data, werr = send_all_then_read(port, head, body)
    ok(werr is None, "%s: the client finished writing and reading (%r)" % (what, werr))
    eq(status_of(data), want, "%s: status (%r)" % (what, data[:120]))
    return data


def check_http_client(port, headers, want, what, path="/"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("POST", path, body=BODY, headers=headers)
        r = c.getresponse()
        body = r.read()
    except OSError as e:
        raise AssertionError("%s: http.client failed: %r" % (what, e))
    finally:
        c.close()
    eq(r.status, want, "%s: http.client status (%r)" % (what, body[:120]))
    return body


def check_curl(port, headers, want, what, path="/"):
    """curl --data-binary @20MB: once with the body sent at once (Expect
    disabled), once with curl's default Expect: 100-continue."""
    for expect in ("Expect:", None):
        args = ["-o", "/dev/null", "-w", "%{http_code}", "--data-binary", "@" + big_file()]
        for k, v in headers.items():
            args += ["-H", "%s: %s" % (k, v)]
        if expect:
            args += ["-H", expect]
        rc, out, err = curl(*args, "http://127.0.0.1:%d%s" % (port, path))
        eq((rc, out), (0, str(want).encode()), "%s: curl %s (%s)" % (what, expect or "default", err))


def check_all_clients(port, headers, want, what, path="/"):
    hl = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in headers.items())
    data = check_raw(port, post_head(path, hl), want, what + " (raw)")
    check_http_client(port, headers, want, what, path)
    check_curl(port, headers, want, what, path)
    return data


def fill_breaker(q_port, n, ms):
    """n requests that each hold a breaker slot or a queue place for ms."""
    res = [None] * n

    def one(i):
        try:
            res[i] = get(q_port, "/sleep?ms=%d" % ms, timeout=ms / 1000 + 30)[0]
        except Exception as e:
            res[i] = repr(e)
    ths = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ths:
        t.start()
    time.sleep(0.3 * SLOW)
    return ths, res


# ---------------------------------------------------------------- queue-proxy

@test
def qp_503_queue_full_reaches_a_client_writing_20mb():
    o = Origin()
    # CC=1: 1 running + 10 queued, the 12th is refused. The slow one runs 7 s
    # (the breaker stays full that long); the queued ones time out at 8 s.
    q = QueueProxy(o.port, CONTAINER_CONCURRENCY=1, REVISION_TIMEOUT_SECONDS=8 * SLOW)
    ths, res = fill_breaker(q.port, 11, 7000 * SLOW)
    data = check_all_clients(q.port, {}, 503, "queue full")
    ok(data.endswith(b"pending request queue full\n"), data[-80:])
    ok(b"Connection: close" in data, "says it closes")
    eq(get(q.port, "/", {"User-Agent": "kube-probe/1.30", "K-Network-Probe": "queue"})[0], 200,
       "still serving")
    for t in ths:
        t.join(60)
    # The threads race to connect, so which one got the running slot is not
    # fixed: one ran, ten timed out in the queue.
    eq(sorted(res, key=str), [200] + [504] * 10, "the admitted requests were answered")


@test
def qp_400_cl_te_followed_by_20mb():
    o = Origin()
    q = QueueProxy(o.port)
    before = o.stats()["requests"]
    head = post_head(extra=b"Transfer-Encoding: chunked\r\n")
    data = check_raw(q.port, head, 400, "CL+TE")
    ok(data.endswith(b"400 Bad Request"), data[-60:])
    eq(o.stats()["requests"] - before, 1, "nothing reached the user container (only /stats)")


@test
def qp_431_oversized_head_followed_by_20mb():
    o = Origin()
    q = QueueProxy(o.port, COLDBREW_MAX_HEADER_BYTES=4096)
    head = post_head(extra=b"X-Big: " + b"a" * 8000 + b"\r\n")
    check_raw(q.port, head, 431, "oversized head")
    # and a head that never ends: the rest of the "head" is 20 MB of header bytes
    check_raw(q.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ", 431, "endless head")


@test
def qp_502_before_the_body_was_sent():
    dead = free_port()
    q = QueueProxy(dead)
    data = check_all_clients(q.port, {}, 502, "upstream down")
    ok(b"connection refused" in data, data[-120:])


@test
def qp_504_timeout_while_queued_with_body_unread():
    o = Origin()
    q = QueueProxy(o.port, CONTAINER_CONCURRENCY=1, REVISION_RESPONSE_START_TIMEOUT_SECONDS=1)
    # /drip holds the slot for 3 s with its response started; the POST waits
    # in the queue, its body unread, until the 1 s response-start timeout.
    ths, res = [threading.Thread(target=lambda: get(q.port, "/drip?n=6&ms=500", timeout=30))], None
    ths[0].start()
    time.sleep(0.3 * SLOW)
    t0 = time.time()
    data = check_raw(q.port, post_head(), 504, "timeout while queued")
    ok(data.endswith(b"request timeout"), data[-60:])
    ok(time.time() - t0 < 2.5 * SLOW, "at the timeout")
    for t in ths:
        t.join(30)


# ---------------------------------------------------------------- activator

def rev_headers(name, ns=NS):
    return {"Knative-Serving-Namespace": ns, "Knative-Serving-Revision": name}


def wait_for(cond, timeout=5.0, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def revision_obj(name, cc=0, timeout=300, failed=None):
    o = {"apiVersion": "serving.knative.dev/v1", "kind": "Revision",
         "metadata": {"namespace": NS, "name": name, "labels": {"serving.knative.dev/service": name.rsplit("-", 1)[0]}},
         "spec": {"containerConcurrency": cc, "timeoutSeconds": timeout,
                  "containers": [{"image": "coffee", "ports": [{"containerPort": 8080}]}]}}
    if failed:
        o["status"] = {"conditions": [{"type": "Ready", "status": "False", "message": failed}]}
    return o


@test
def activator_404_unknown_revision_to_20mb_post():
    k = KubeAPI()
    a = Activator(k)
    data = check_all_clients(a.port, rev_headers("nope"), 404, "unknown revision")
    ok(data.endswith(b'revision.serving.knative.dev "nope" not found\n'), data[-80:])


@test
def activator_503_queue_full_to_20mb_post():
    k = KubeAPI()
    k.apply("Revision", revision_obj("cold-00001", timeout=5 * SLOW))
    a = Activator(k, COLDBREW_MAX_WAITING_PER_REVISION=1)
    res = [None]

    def held():
        try:
            res[0] = get(a.port, "/", rev_headers("cold-00001"), timeout=60)[0]
        except Exception as e:
            res[0] = repr(e)
    th = threading.Thread(target=held)
    th.start()
    time.sleep(0.5 * SLOW)
    data = check_all_clients(a.port, rev_headers("cold-00001"), 503, "queue full")
    ok(data.endswith(b"pending request queue full\n"), data[-80:])
    ok(res[0] is None, "the first request is still held")
    th.join(30)
    eq(res[0], 504, "the held request timed out")


@test
def activator_503_failed_revision_to_20mb_post():
    k = KubeAPI()
    k.apply("Revision", revision_obj("broken-00001", failed="out of beans"))
    a = Activator(k, COLDBREW_INGRESS=1)
    data = check_all_clients(a.port, rev_headers("broken-00001"), 503, "failed revision")
    ok(data.endswith(b"failed: out of beans\n"), data[-80:])


@test
def activator_503_held_request_failed_while_its_body_waits():
    """Held with its 20 MB body left in the kernel (the client blocked in
    sendall), then the revision fails: the 503 must still reach the client."""
    k = KubeAPI()
    k.apply("Revision", revision_obj("later-00001"))
    a = Activator(k, COLDBREW_INGRESS=1)
    res = [None]

    def client():
        res[0] = send_all_then_read(a.port, post_head(extra=b"Knative-Serving-Namespace: default\r\n"
                                                      b"Knative-Serving-Revision: later-00001\r\n"))
    th = threading.Thread(target=client)
    th.start()
    time.sleep(1.0 * SLOW)
    ok(res[0] is None, "held while the revision has no pod")
    k.apply("Revision", revision_obj("later-00001", failed="image pull failed"))
    th.join(30)
    data, werr = res[0]
    ok(werr is None, "the client finished writing and reading (%r)" % werr)
    eq(status_of(data), 503, "status (%r)" % data[:120])
    ok(data.endswith(b"failed: image pull failed\n"), data[-80:])


@test
def activator_504_held_request_times_out_with_body_unread():
    k = KubeAPI()
    k.apply("Revision", revision_obj("slow-00001", cc=1, timeout=1))
    a = Activator(k)
    t0 = time.time()
    data = check_raw(a.port, post_head(extra=b"Knative-Serving-Namespace: default\r\n"
                                           b"Knative-Serving-Revision: slow-00001\r\n"), 504, "held timeout")
    ok(data.endswith(b"activator request timeout"), data[-60:])
    ok(time.time() - t0 < 10 * SLOW, "promptly")


# ---------------------------------------------------------------- the bounds

def linger_client(port, pace, stop_after=None, read_first=False):
    """Sends a CL+TE head (answered 400 at once) and then body bytes, 64 KiB
    every `pace` seconds, until the server cuts the connection or
    stop_after seconds pass. Returns (seconds until the cut or None, answer)."""
    s = socket.create_connection(("127.0.0.1", port), 10)
    s.sendall(post_head(extra=b"Transfer-Encoding: chunked\r\n", length=1 << 40))
    t0 = time.time()
    chunk = b"y" * 65536
    answer = b""
    s.settimeout(0.05)
    try:
        while stop_after is None or time.time() - t0 < stop_after:
            if time.time() - t0 > 120:
                raise AssertionError("never cut")
            s.sendall(chunk)
            try:
                b = s.recv(65536)
                answer += b
            except socket.timeout:
                pass
            time.sleep(pace)
    except OSError:
        s.close()
        return time.time() - t0, answer
    s.close()
    return None, answer


@test
def linger_endless_sender_is_cut_at_lingering_time():
    o = Origin()
    # The silence bound is well above the client's pace: under a sanitizer
    # its sending thread once stalled for a second, and the 1 s silence
    # bound this test used to set cut first.
    q = QueueProxy(o.port, COLDBREW_LINGERING_TIME_SECONDS=2, COLDBREW_LINGERING_TIMEOUT_SECONDS=5)
    res = [None]
    th = threading.Thread(target=lambda: res.__setitem__(0, linger_client(q.port, 0.01)))
    th.start()
    # The process keeps serving others meanwhile.
    for i in range(10):
        eq(get(q.port, "/")[0], 200, "served while a connection lingers (%d)" % i)
        time.sleep(0.1)
    th.join(30)
    cut, answer = res[0]
    ok(answer.startswith(b"HTTP/1.1 400"), "read the answer while sending: %r" % answer[:60])
    ok(cut is not None and 1.9 < cut < 2 + 1.5 * SLOW, "cut at the lingering time (%r s)" % cut)
    ok("COLDBREW_LINGERING_TIME_SECONDS" in q.output(), "log line names the bound: " + q.output()[-800:])


@test
def linger_silent_client_is_cut_at_lingering_timeout():
    o = Origin()
    # 2 s of silence against the client's 0.5 s pauses: a margin a slow
    # (sanitized) run keeps.
    q = QueueProxy(o.port, COLDBREW_LINGERING_TIMEOUT_SECONDS=2)
    s = socket.create_connection(("127.0.0.1", q.port), 10)
    s.sendall(post_head(extra=b"Transfer-Encoding: chunked\r\n") + b"z" * 100000)
    s.settimeout(5)
    answer = b""
    while b"400 Bad Request" not in answer:
        b = s.recv(4096)
        ok(b, "answer before EOF")
        answer += b
    eq(status_of(answer), 400, "answer")
    eq(s.recv(10), b"", "the server shut its side down after the answer")
    # Still lingering: more bytes are read and dropped, each resetting the timeout.
    for i in range(3):
        time.sleep(0.5)
        s.sendall(b"z" * 1000)
    t0 = time.time()
    time.sleep(2 + 0.6 * SLOW)  # silent past the timeout: the server closes
    err = None
    for i in range(20):
        try:
            s.sendall(b"z" * 1000)  # the first draws a reset, a later one fails
        except OSError as e:
            err = e
            break
        time.sleep(0.05)
    s.close()
    ok(isinstance(err, (BrokenPipeError, ConnectionResetError)), "closed after the silence: %r" % err)
    ok("COLDBREW_LINGERING_TIMEOUT_SECONDS" in q.output(), "log line: " + q.output()[-800:])
    eq(get(q.port, "/")[0], 200, "still serving")


@test
def linger_byte_cap_cuts_a_large_sender():
    o = Origin()
    q = QueueProxy(o.port, COLDBREW_LINGERING_BYTES=1 << 20)
    data, werr = send_all_then_read(q.port, post_head(extra=b"Transfer-Encoding: chunked\r\n"))
    ok(isinstance(werr, (BrokenPipeError, ConnectionResetError)), "cut after 1 MiB: %r" % werr)
    out = q.output()
    ok("COLDBREW_LINGERING_BYTES" in out, "log line: " + out[-800:])
    eq(get(q.port, "/")[0], 200, "still serving")


@test
def linger_off_closes_at_once():
    o = Origin()
    q = QueueProxy(o.port, COLDBREW_LINGERING_TIME_SECONDS=0)
    out = raw(q.port, post_head(extra=b"Transfer-Encoding: chunked\r\n", length=10) + b"0123456789")
    ok(out.startswith(b"HTTP/1.1 400"), out[:60])


@test
def linger_connection_gives_way_at_the_connection_limit():
    """A lingering connection is not worth a new client: at
    COLDBREW_MAX_CONNECTIONS the oldest lingerer is closed to make room."""
    o = Origin()
    q = QueueProxy(o.port, COLDBREW_MAX_CONNECTIONS=1, COLDBREW_LINGERING_TIMEOUT_SECONDS=30)
    s = socket.create_connection(("127.0.0.1", q.port), 10)
    s.sendall(post_head(extra=b"Transfer-Encoding: chunked\r\n") + b"z" * 1000)
    s.settimeout(5)
    ok(s.recv(4096).startswith(b"HTTP/1.1 400"), "answered")
    t0 = time.time()
    eq(get(q.port, "/", timeout=5)[0], 200, "a new client is served")
    ok(time.time() - t0 < 2, "at once")
    ok("lingering" in q.output(), "log line: " + q.output()[-800:])
    s.close()


@test
def linger_drain_waits_for_the_lingering_client_then_exits():
    """SIGTERM while a client is still sending the body of a request that was
    already answered: the process exits once that client is done (bounded by
    the lingering bounds), and the client reads its answer."""
    o = Origin()
    q = QueueProxy(o.port)
    s = socket.create_connection(("127.0.0.1", q.port), 10)
    s.sendall(post_head(extra=b"Transfer-Encoding: chunked\r\n", length=4 << 20))
    q.signal(__import__("signal").SIGTERM)
    t0 = time.time()
    for i in range(40):  # 4 MiB over ~2 s, not reading
        s.sendall(b"w" * 100 * 1024)
        time.sleep(0.05)
    ok(q.p.poll() is None, "still running while the client sends (%.2fs)" % (time.time() - t0))
    # The client is done: its FIN ends the lingering at once (not the 5 s
    # silence bound, which a 5 s read timeout here would race).
    s.shutdown(socket.SHUT_WR)
    s.settimeout(10)
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    eq(status_of(data), 400, "the answer arrived: %r" % data[:80])
    s.close()
    eq(q.wait(5), 0, "exited cleanly once the client was done")


@test
def linger_drain_exit_is_bounded_by_lingering_time():
    o = Origin()
    q = QueueProxy(o.port, COLDBREW_LINGERING_TIME_SECONDS=2)
    res = [None]
    th = threading.Thread(target=lambda: res.__setitem__(0, linger_client(q.port, 0.02)))
    th.start()
    time.sleep(0.3)
    t0 = time.time()
    q.signal(__import__("signal").SIGTERM)
    rc = q.wait(10)
    took = time.time() - t0
    th.join(30)
    eq(rc, 0, "exit code")
    ok(took < 2.5 + SLOW, "exit waited at most the lingering time (%.2fs)" % took)


if __name__ == "__main__":
    import sys
    p, f = run_all(sys.argv[1] if len(sys.argv) > 1 else None)
    sys.exit(1 if f else 0)

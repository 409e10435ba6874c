#!/usr/bin/python3
"""The burst: 1,000 requests released at once onto a small app.

Run as a script it is the small app: `burst_lib.py PORT [BACKLOG]`, Python's
http.server (ThreadingHTTPServer, HTTP/1.1 keep-alive) with a listen backlog
of BACKLOG (default 5, http.server's own `request_queue_size`), the shape of
many small user containers. Routes: anything answers "hello\\n"
(Content-Length); /sleep?ms=N answers after N ms.

Imported, burst() is the client: it connects every socket first, then
writes every request, then reads every answer, so the requests reach the
proxy at once (what an activator releasing its held requests does to a new
pod). Used by tests/scenario/test_burst.py and bench/burst.py."""
import http.server, os, selectors, socket, sys, time, urllib.parse


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        q = urllib.parse.urlparse(self.path)
        if q.path == "/sleep":
            ms = int(urllib.parse.parse_qs(q.query).get("ms", ["100"])[0])
            time.sleep(ms / 1000)
        # One write per response: http.server's own send_response() +
        # end_headers() + body is two writes, which Nagle and delayed ACKs
        # turn into 40 ms per request on a kept-alive connection.
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n")

    def log_message(self, *a):
        pass


def serve(port, backlog=5):
    class Server(http.server.ThreadingHTTPServer):
        request_queue_size = backlog
        daemon_threads = True

        def handle_error(self, request, client_address):
            pass  # a client that resets its connection is part of the test
    srv = Server(("127.0.0.1", port), Handler)
    print("small origin on %d, backlog %d" % (port, backlog), flush=True)
    srv.serve_forever()


def raise_nofile(n=8192):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


def burst(port, n=1000, path="/", headers=(), limit=15.0, after_write=None):
    """n requests at once; returns (statuses, seconds until the last answer,
    seconds per answer). Statuses are ints, or None for no answer within
    `limit` seconds. `headers` are extra "Name: value" lines. after_write(),
    when given, runs once every request is written (the clock starts after
    it: the activator test publishes the pod there)."""
    raise_nofile(4 * n + 256)
    req = ("GET %s HTTP/1.1\r\nHost: burst\r\n%s\r\n" % (path, "".join(h + "\r\n" for h in headers))).encode()
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), 5)
        s.setblocking(False)
        socks.append(s)
    sel = selectors.DefaultSelector()
    t0 = time.time()
    for i, s in enumerate(socks):
        s.send(req)  # a few dozen bytes: fits the empty send buffer
        sel.register(s, selectors.EVENT_READ, i)
    if after_write:
        after_write()
        t0 = time.time()
    status = [None] * n
    took = [None] * n
    bufs = [b""] * n
    left = n
    last = t0
    while left and time.time() - t0 < limit:
        for key, _ in sel.select(0.1):
            i = key.data
            try:
                b = key.fileobj.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                b = b""
            bufs[i] += b
            done = not b
            if b"\r\n\r\n" in bufs[i]:
                head, _, rest = bufs[i].partition(b"\r\n\r\n")
                cl = 0
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        cl = int(v)
                done = done or len(rest) >= cl
                if done:
                    status[i] = int(head[9:12])
            if done:
                took[i] = time.time() - t0
                last = time.time()
                sel.unregister(key.fileobj)
                left -= 1
    for s in socks:
        s.close()
    return status, last - t0, took


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 5)

#!/usr/bin/python3
"""The burst benchmark: 1,000 requests released at once onto a new pod.

The user container is Python's http.server (ThreadingHTTPServer, HTTP/1.1
keep-alive) with a listen backlog of 5, http.server's default
(tests/scenario/burst_lib.py). Each row starts a fresh origin and a fresh
proxy (an empty pool: the pod just became ready), then burst() connects
1,000 client sockets to the proxy, writes every request, and reads every
answer. Reported per row: requests answered 200 within 15 s and the time
until the last answer, the median of BURST_ROUNDS rounds (every round is
listed).

Rows:
  coldbrew qp      queue-proxy, CONTAINER_CONCURRENCY=0 (BURST_BIN, default build/bin)
  nginx            1 worker, proxy_pass to an upstream with keepalive 256
  haproxy          1 thread, server maxconn 32 (its queue holds the rest), http-reuse always
Usage: /usr/bin/python3 bench/burst.py   (BURST_BIN=/other/bin for a second build;
BURST_ROUNDS=N; BURST_ROWS=qp,nginx,haproxy; BURST_QP_ENV="K=V K=V" for settings)."""
import os, sys, time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "scenario"))
from burst_lib import burst, raise_nofile  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (process helpers)
from bench import TMP, free_port, stop, wait_port  # noqa: E402

BIN = os.environ.get("BURST_BIN", os.path.join(ROOT, "build", "bin"))
ROUNDS = int(os.environ.get("BURST_ROUNDS", "3"))
N = int(os.environ.get("BURST_N", "1000"))
ROWS = os.environ.get("BURST_ROWS", "qp,nginx,haproxy").split(",")
BACKLOG = int(os.environ.get("BURST_BACKLOG", "5"))
PATH = os.environ.get("BURST_PATH", "/")


def start(argv, env=None, name="p"):
    # Not pinned to a CPU, unlike bench.py's rows: the burst rows in
    # RESULTS.md were all measured that way, and stay comparable.
    return bench.start(argv, env, name, cpu=None)


def origin():
    port = free_port()
    p = start(["/usr/bin/python3", os.path.join(ROOT, "tests", "scenario", "burst_lib.py"), str(port), str(BACKLOG)],
              name="origin")
    time.sleep(0.3)  # no probe connection: the pool of the proxy under test stays empty
    return p, port


def qp(o_port):
    port = free_port()
    env = {"SERVING_NAMESPACE": "bench", "SERVING_SERVICE": "bench", "SERVING_CONFIGURATION": "bench",
           "SERVING_REVISION": "bench-00001", "SERVING_POD": "bench-pod", "SERVING_POD_IP": "127.0.0.1",
           "QUEUE_SERVING_PORT": str(port), "QUEUE_SERVING_TLS_PORT": "8112", "USER_PORT": str(o_port),
           "CONTAINER_CONCURRENCY": "0", "REVISION_TIMEOUT_SECONDS": "300", "SERVING_LOGGING_CONFIG": "",
           "SERVING_LOGGING_LEVEL": "info", "QUEUE_ADMIN_PORT": str(free_port()),
           "QUEUE_METRICS_PORT": str(free_port()), "COLDBREW_LISTEN_HOST": "127.0.0.1",
           "METRICS_PROMETHEUS_PORT": str(free_port())}
    for kv in os.environ.get("BURST_QP_ENV", "").split():
        k, _, v = kv.partition("=")
        env[k] = v
    return start([os.path.join(BIN, "queue-proxy")], env, name="qp"), port


def nginx(o_port):
    port = free_port()
    d = os.path.join(TMP, "nginx-%d" % port); os.makedirs(d)
    conf = """worker_processes 1; daemon off; master_process on; pid %(d)s/nginx.pid;
error_log %(d)s/error.log warn; worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http { access_log off; client_body_temp_path %(d)s/b; proxy_temp_path %(d)s/p;
fastcgi_temp_path %(d)s/f; uwsgi_temp_path %(d)s/u; scgi_temp_path %(d)s/s;
upstream up { server 127.0.0.1:%(o)d; keepalive 256; }
server { listen 127.0.0.1:%(p)d backlog=4096;
  location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
""" % {"d": d, "o": o_port, "p": port}
    open(os.path.join(d, "nginx.conf"), "w").write(conf)
    return start(["/usr/sbin/nginx", "-c", os.path.join(d, "nginx.conf")], name="nginx"), port


def haproxy(o_port):
    port = free_port()
    cfg = os.path.join(TMP, "haproxy-%d.cfg" % port)
    open(cfg, "w").write("""global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout queue 60s
  http-reuse always
  option http-keep-alive
frontend fe
  bind 127.0.0.1:%d
  default_backend be
backend be
  server o 127.0.0.1:%d maxconn 32
""" % (port, o_port))
    return start(["/usr/sbin/haproxy", "-db", "-f", cfg], name="haproxy"), port


PEERS = {"qp": ("coldbrew queue-proxy (CC=0)", qp), "nginx": ("nginx (keepalive 256)", nginx),
         "haproxy": ("HAProxy (maxconn 32 + queue)", haproxy)}


def one(make):
    o, o_port = origin()
    p, port = make(o_port)
    wait_port(port)
    time.sleep(0.3)
    status, last, took = burst(port, N, PATH)
    stop(p)
    stop(o)
    ok = sum(1 for s in status if s == 200)
    return ok, last


def main():
    raise_nofile(65536)
    results = {}
    for r in range(ROUNDS):
        for key in ROWS:
            name, make = PEERS[key]
            ok, last = one(make)
            results.setdefault(key, []).append((ok, last))
            print("  round %d %-32s %4d/%d answered 200, last answer at %.2f s" % (r + 1, name, ok, N, last),
                  flush=True)
    print()
    print("| proxy | answered 200 within 15 s (median round) | time to last answer, s (median) | rounds |")
    print("|---|---:|---:|---|")
    for key in ROWS:
        rs = results[key]
        oks = sorted(x[0] for x in rs)
        lasts = sorted(x[1] for x in rs)
        print("| %s | %d/%d | %.2f | %s |" % (PEERS[key][0], oks[len(oks) // 2], N, lasts[len(lasts) // 2],
                                          "; ".join("%d in %.2f s" % x for x in rs)))


if __name__ == "__main__":
    bench.run(main)

#!/usr/bin/python3
"""Instructions per request through the queue-proxy, counted by valgrind's
callgrind: a deterministic number for before/after comparisons of a hot
path, where wall-clock rounds on a shared 2-core VM drift by ±30%.

For each build (this one, and BENCH_BEFORE_BIN's when set) the queue-proxy
runs under callgrind twice, serving 500 and then 2,500 requests from
h2load (4 connections; --h1 for HTTP/1.1, 4 streams each for h2c) in front
of an nginx origin; the difference of the two totals over 2,000 is the
cost of one request, start-up and shutdown cancelled out.

Usage: bench/instructions.py [h1|h2]   (prints one line per build)
Every process started here is stopped by pid; traffic stays on 127.0.0.1."""
import os, re, shutil, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B

PROTO = sys.argv[1] if len(sys.argv) > 1 else "h1"
LOW, HIGH = 500, 2500


def origin(h2):
    port = B.free_port()
    listen = "127.0.0.1:%d%s backlog=4096" % (port, " http2" if h2 else "")
    B.start(["/usr/sbin/nginx", "-c", B.nginx_conf("origin-h2" if h2 else "origin",
            'server { listen %s; http2_max_concurrent_streams 1000; location / { default_type text/plain; '
            'return 200 "hello from the origin\\n"; } }' % listen)], name="origin", cpu=B.LOAD_CPU)
    B.wait_port(port)
    time.sleep(0.3)
    return port


def total_instructions(bin_dir, o_port, n):
    port = B.free_port()
    out = os.path.join(B.TMP, "callgrind.%d" % port)
    env = dict(os.environ)
    env.update(B.qp_env(port, o_port, 0))
    p = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                          os.path.join(bin_dir, "queue-proxy")], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        B.wait_port(port, timeout=60)
        time.sleep(0.5)
        args = ["h2load", "-n", str(n), "-c", "4", "-m", "1" if PROTO == "h1" else "4"]
        if PROTO == "h1":
            args.append("--h1")
        subprocess.run(args + ["http://127.0.0.1:%d/" % port], stdout=subprocess.DEVNULL, timeout=600)
    finally:
        p.terminate()
        p.wait(timeout=60)
    m = re.search(r"^(?:summary|totals):\s+(\d+)", open(out).read(), re.M)
    return int(m.group(1))


def main():
    for tool in ("valgrind", "h2load", "nginx"):
        if not shutil.which(tool) and not os.path.exists("/usr/sbin/" + tool):
            raise SystemExit("instructions.py needs %s (apt-get install -y valgrind nghttp2-client nginx-light)" % tool)
    o_port = origin(PROTO == "h2")
    builds = [("this build", os.path.join(B.ROOT, "build", "bin"))]
    if os.environ.get("BENCH_BEFORE_BIN"):
        builds.append(("before", os.environ["BENCH_BEFORE_BIN"]))
    try:
        for name, d in builds:
            low = total_instructions(d, o_port, LOW)
            high = total_instructions(d, o_port, HIGH)
            print("%s %-10s %.0f instructions per request" % (PROTO, name, (high - low) / (HIGH - LOW)),
                  flush=True)
    finally:
        for p in B.procs:
            B.stop(p)


if __name__ == "__main__":
    main()

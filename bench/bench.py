#!/usr/bin/python3
"""coldbrew benchmark: one origin, every proxy measured in the same run.

Origin: nginx (1 worker) answering a small body. Measured with wrk, one at
a time, under the same load:
  direct            wrk -> origin
  nginx             wrk -> nginx reverse proxy (1 worker, upstream keepalive) -> origin
  haproxy           wrk -> HAProxy (1 thread, http-reuse always) -> origin
  coldbrew cc=0     wrk -> coldbrew queue-proxy (CONTAINER_CONCURRENCY=0) -> origin
  coldbrew cc=100   the same with the breaker on (CONTAINER_CONCURRENCY=100)
For each: req/s, p50/p99 latency, CPU microseconds per request of the proxy
process (utime+stime from /proc), and memory: RssAnon (private) and VmRSS,
idle and with 1,000 open keep-alive connections. Writes bench/RESULTS.md.
Every process started here is stopped by pid; loads go to 127.0.0.1 only."""
import os, re, shutil, signal, socket, subprocess, tempfile, time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BIN = os.environ.get("BENCH_BIN", os.path.join(ROOT, "build", "bin"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "3"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))  # the median round is reported: this VM is noisy
LAT_ROUNDS = int(os.environ.get("BENCH_LATENCY_ROUNDS", "3"))
CONNS = int(os.environ.get("BENCH_CONNS", "64"))
TMP = tempfile.mkdtemp(prefix="coldbrew-bench-")
CLK = os.sysconf("SC_CLK_TCK")
procs = []
LATENCY = {}


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def wait_port(port, timeout=5):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close(); return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("port %d did not open" % port)


# CPU placement: the load generator and the origin share CPU 0; the proxy
# under test has CPU 1 to itself. Every peer gets the same placement, so the
# rows compare proxies, not the scheduler's mood on a 2-core machine.
LOAD_CPU, PROXY_CPU = "0", "1" if (os.cpu_count() or 1) > 1 else "0"


def start(argv, env=None, name="p", cpu=PROXY_CPU):
    """Starts argv (pinned to cpu; None: not pinned), its output appended to TMP/name.log."""
    log = open(os.path.join(TMP, name + ".log"), "ab")
    e = dict(os.environ); e.update(env or {})
    pin = ["taskset", "-c", cpu] if cpu is not None else []
    p = subprocess.Popen(pin + argv, env=e, stdout=log, stderr=subprocess.STDOUT)
    procs.append(p)
    return p


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill(); p.wait(5)


def nginx_conf(name, body):
    d = os.path.join(TMP, name); os.makedirs(d, exist_ok=True)
    conf = """worker_processes 1; daemon off; master_process on; pid %(d)s/nginx.pid;
error_log %(d)s/error.log warn; worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http { access_log off; client_body_temp_path %(d)s/b; proxy_temp_path %(d)s/p;
fastcgi_temp_path %(d)s/f; uwsgi_temp_path %(d)s/u; scgi_temp_path %(d)s/s;
keepalive_requests 1000000; %(body)s }""" % {"d": d, "body": body}
    path = os.path.join(d, "nginx.conf"); open(path, "w").write(conf)
    return path


def children(pid):
    try:
        return [int(x) for x in open("/proc/%d/task/%d/children" % (pid, pid)).read().split()]
    except OSError:
        return []


def cpu_ticks(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def mem(pid):
    out = {}
    for l in open("/proc/%d/status" % pid):
        k = l.split(":")[0]
        if k in ("VmRSS", "RssAnon"):
            out[k] = int(l.split()[1])
    return out


def wrk(port, seconds=SECONDS, conns=CONNS, headers=()):
    out = subprocess.run(["taskset", "-c", LOAD_CPU, "wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, "--latency",
                          *headers, "http://127.0.0.1:%d/" % port], capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    lat = {}
    for pct in ("50", "99"):
        m = re.search(r"\s%s%%\s+([\d.]+)(us|ms|s)" % pct, out)
        v = float(m.group(1)); u = m.group(2)
        lat[pct] = v / 1000 if u == "us" else v * 1000 if u == "s" else v
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "total": total, "p50": lat["50"], "p99": lat["99"],
            "non2xx": int(errors.group(1)) if errors else 0, "sockerr": sock.group(1) if sock else ""}


def hold_connections(port, n=1000, headers=()):
    extra = "".join(h + "\r\n" for h in headers[1::2]).encode()
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n" + extra + b"\r\n")
        socks.append(s)
    for s in socks:
        s.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(4096)
    return socks


class Row:
    """One path under test: where to send load, which process to account."""

    def __init__(self, name, port, pid, headers=()):
        self.name, self.port, self.pid, self.headers = name, port, pid, headers
        self.rounds, self.ticks, self.total = [], 0, 0


def measure_all(rows):
    """Warm every row, then ROUNDS rounds with the rows interleaved (each
    slow or fast phase of the machine hits every row alike); the median
    round is reported, and CPU per request over all rounds. Then idle memory
    and memory with 1,000 open keep-alive connections, row by row."""
    for r in rows:
        wrk(r.port, 2, headers=r.headers)
    for i in range(ROUNDS):
        for r in rows:
            c0 = cpu_ticks(r.pid)
            one = wrk(r.port, headers=r.headers)
            r.ticks += cpu_ticks(r.pid) - c0
            r.total += one["total"]
            r.rounds.append(one)
            print("  round %d %-26s %8.0f req/s" % (i + 1, r.name, one["rps"]), flush=True)
    time.sleep(2.5)  # idle: traffic stopped a while ago
    results = {}
    for r in rows:
        idle = mem(r.pid)
        socks = hold_connections(r.port, headers=r.headers)
        time.sleep(0.3)
        loaded = mem(r.pid)
        for sk in socks:
            sk.close()
        rounds = sorted(r.rounds, key=lambda x: x["rps"])
        m = dict(rounds[len(rounds) // 2])
        m["all_rps"] = [x["rps"] for x in r.rounds]
        m["cpu_us"] = r.ticks * 1e6 / CLK / max(r.total, 1)
        m.update(idle_anon=idle.get("RssAnon", 0), idle_rss=idle.get("VmRSS", 0),
                 k_anon=loaded.get("RssAnon", 0), k_rss=loaded.get("VmRSS", 0))
        results[r.name] = m
        print("%-26s %9.0f req/s  p50 %6.3f ms  p99 %6.3f ms  cpu %5.1f us/req  idle %5d/%5d kB  1k conns %6d/%6d kB" % (
            r.name, m["rps"], m["p50"], m["p99"], m["cpu_us"], m["idle_anon"], m["idle_rss"], m["k_anon"], m["k_rss"]),
            flush=True)
        time.sleep(1.0)
    return results


def qp_env(q_port, user_port, cc):
    return {"SERVING_NAMESPACE": "bench", "SERVING_SERVICE": "bench", "SERVING_CONFIGURATION": "bench",
            "SERVING_REVISION": "bench-00001", "SERVING_POD": "bench-pod", "SERVING_POD_IP": "127.0.0.1",
            "QUEUE_SERVING_PORT": str(q_port), "QUEUE_SERVING_TLS_PORT": "8112", "USER_PORT": str(user_port),
            "CONTAINER_CONCURRENCY": str(cc), "REVISION_TIMEOUT_SECONDS": "300", "SERVING_LOGGING_CONFIG": "",
            "SERVING_LOGGING_LEVEL": "info", "QUEUE_ADMIN_PORT": str(free_port()),
            "QUEUE_METRICS_PORT": str(free_port()), "COLDBREW_LISTEN_HOST": "127.0.0.1"}


def nginx_proxy(name, listen, upstream):
    p = start(["/usr/sbin/nginx", "-c", nginx_conf(name,
        "upstream up { server 127.0.0.1:%d; keepalive 256; } server { listen 127.0.0.1:%d backlog=4096; "
        "location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }" % (upstream, listen))],
        name=name)
    wait_port(listen)
    time.sleep(0.2)
    return children(p.pid)[0]


def main():
    for tool in ("nginx", "haproxy", "wrk"):
        if not shutil.which(tool) and not os.path.exists("/usr/sbin/" + tool):
            raise SystemExit("bench needs %s: make deps" % tool)
    o_port = free_port()
    origin = start(["/usr/sbin/nginx", "-c", nginx_conf("origin",
        'server { listen 127.0.0.1:%d backlog=4096; location / { default_type text/plain; return 200 "hello from the origin\\n"; } '
        'location /healthz { default_type text/plain; return 200 "queue"; } }' % o_port)], name="origin", cpu=LOAD_CPU)
    wait_port(o_port)
    time.sleep(0.3)
    rows = [Row("direct", o_port, children(origin.pid)[0])]

    n_port = free_port()
    rows.append(Row("nginx", n_port, nginx_proxy("proxy", n_port, o_port)))

    h_port = free_port()
    hcfg = os.path.join(TMP, "haproxy.cfg")
    open(hcfg, "w").write("""global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
  option http-keep-alive
frontend fe
  bind 127.0.0.1:%d
  default_backend be
backend be
  server o 127.0.0.1:%d
""" % (h_port, o_port))
    hp = start(["/usr/sbin/haproxy", "-db", "-f", hcfg], name="haproxy")
    wait_port(h_port)
    rows.append(Row("haproxy", h_port, hp.pid))

    for cc in (0, 100):
        q_port = free_port()
        qp = start([os.path.join(BIN, "queue-proxy")], qp_env(q_port, o_port, cc), name="qp%d" % cc)
        wait_port(q_port)
        rows.append(Row("coldbrew cc=%d" % cc, q_port, qp.pid))

    # Before/after in the same run: BENCH_BEFORE_BIN names the binaries of
    # an earlier commit (built elsewhere), measured as rows of their own.
    before = os.environ.get("BENCH_BEFORE_BIN")
    if before:
        q_port = free_port()
        qp = start([os.path.join(before, "queue-proxy")], qp_env(q_port, o_port, 0), name="qp-before")
        wait_port(q_port)
        rows.append(Row("coldbrew cc=0 (before)", q_port, qp.pid))

    qp2_port = None
    if os.path.exists(os.path.join(BIN, "activator")):
        hdr = ["-H", "Knative-Serving-Namespace: bench", "-H", "Knative-Serving-Revision: bench-00001"]
        act1, a1 = start_activator(kube_api_with([("127.0.0.1", o_port)]))
        rows.append(Row("activator (1 hop)", a1, act1.pid, hdr))
        if before:
            act0, a0 = start_activator(kube_api_with([("127.0.0.1", o_port)]), before)
            rows.append(Row("activator (1 hop, before)", a0, act0.pid, hdr))
        qp2_port = free_port()
        start([os.path.join(BIN, "queue-proxy")], qp_env(qp2_port, o_port, 0), name="qp-2hop")
        wait_port(qp2_port)
        act2, a2 = start_activator(kube_api_with([("127.0.0.1", qp2_port)]))
        rows.append(Row("activator -> queue-proxy", a2, act2.pid, hdr))
        n2, n1 = free_port(), free_port()
        nginx_proxy("hop2", n2, o_port)
        rows.append(Row("nginx -> nginx", n1, nginx_proxy("hop1", n1, n2)))
    time.sleep(0.5)
    results = measure_all(rows)

    # Open-loop latency at a fixed rate: rounds interleaved across the paths,
    # the round with the median p99 reported for each.
    lat_rows = [(r.name, r.port, r.headers) for r in rows]
    if qp2_port:
        lat_rows.append(("queue-proxy alone", qp2_port, ()))
    runs = {name: [] for name, _, _ in lat_rows}
    for i in range(LAT_ROUNDS):
        for name, port, headers in lat_rows:
            runs[name].append(fixed_rate(port, headers))
    for name, rs in runs.items():
        rs.sort(key=lambda x: x["p99"])
        LATENCY[name] = rs[len(rs) // 2]
    write_results(results)


LOADGEN = os.path.join(ROOT, "build", "bench", "loadgen")
RATE = int(os.environ.get("BENCH_RATE", "1000"))


def fixed_rate(port, headers=(), seconds=None):
    """Open-loop latency at RATE req/s (bench/loadgen.c): p50, p99, p99.9, max in ms."""
    args = ["taskset", "-c", LOAD_CPU, LOADGEN, "-p", str(port), "-r", str(RATE), "-d", str(seconds or SECONDS), "-c", "32"]
    for i in range(1, len(headers), 2):
        args += ["-H", headers[i]]
    out = subprocess.run(args, capture_output=True, text=True).stdout
    m = re.search(r"sent (\d+) ok (\d+) errors (\d+) p50 ([\d.]+) p90 ([\d.]+) p99 ([\d.]+) p999 ([\d.]+) max ([\d.]+)", out)
    if not m:
        raise SystemExit("loadgen failed: " + out)
    v = [float(x) for x in m.groups()]
    return {"sent": int(v[0]), "ok": int(v[1]), "errors": int(v[2]), "p50": v[3], "p99": v[5], "p999": v[6], "max": v[7]}


def kube_api_with(pods):
    """The scenario tests' Kubernetes API double, holding one revision whose
    private endpoints are `pods` (ip, port)."""
    import json, urllib.request
    port = free_port()
    start(["/usr/bin/python3", os.path.join(ROOT, "tests", "scenario", "kube_api.py"), str(port)],
          name="kube-api", cpu=LOAD_CPU)
    wait_port(port)

    def apply(kind, obj):
        req = urllib.request.Request("http://127.0.0.1:%d/_test/apply" % port, method="POST",
                                     data=json.dumps({"kind": kind, "object": obj}).encode())
        urllib.request.urlopen(req).read()
    apply("Revision", {"metadata": {"namespace": "bench", "name": "bench-00001"},
                       "spec": {"containerConcurrency": 0, "timeoutSeconds": 300}})
    apply("Endpoints", {"metadata": {"namespace": "bench", "name": "bench-00001-private", "labels": {
        "serving.knative.dev/revision": "bench-00001", "networking.internal.knative.dev/serviceType": "Private"}},
        "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "http", "port": p}]} for ip, p in pods]})
    return port


def start_activator(kube_port, bin_dir=None):
    a_port = free_port()
    env = {"POD_NAME": "activator-bench", "POD_IP": "127.0.0.1", "KUBE_API_URL": "http://127.0.0.1:%d" % kube_port,
           "KUBE_TOKEN_FILE": "/nonexistent", "ACTIVATOR_HTTP_PORT": str(a_port),
           "ACTIVATOR_H2C_PORT": str(free_port()), "AUTOSCALER_URL": "ws://127.0.0.1:1",
           "COLDBREW_LISTEN_HOST": "127.0.0.1"}
    p = start([os.path.join(bin_dir or BIN, "activator")], env, name="activator")
    wait_port(a_port)
    return p, a_port


def write_results(res):
    ng = res["nginx"]
    lines = ["# coldbrew benchmark results", "",
             "Produced by `make bench` (`bench/run.sh` → `bench/bench.py`) on %s, %d cores; "
             "wrk -t1 -c%d -d%ds --latency; every path runs at once and the %d rounds are interleaved across the rows, so the machine's slow and fast phases hit every row alike (the median round is shown, every round is listed below; CPU is summed over all rounds); all against the same nginx origin "
             "(1 worker, 22-byte body). wrk and the origin are pinned to CPU 0, the proxy under test to "
             "CPU 1 (taskset), the same for every row; the direct row is wrk and the origin alone. CPU is the proxy process's utime+stime over the wrk run divided by "
             "the requests served; memory is /proc/PID/status (RssAnon = private, VmRSS = total), "
             "idle (2.5 s after the warm-up's traffic stopped) and with 1,000 open keep-alive connections. Ratios are against nginx "
             "as a reverse proxy in the same run." % (time.strftime("%Y-%m-%d"), os.cpu_count(), CONNS, SECONDS, ROUNDS), "",
             "The \"× nginx\" column is the median over the rounds of the row's req/s divided by nginx's req/s "
             "in the same round (paired: neighbouring slots see the same machine), with the lowest and "
             "highest per-round ratio beside it; two-hop rows are paired with the nginx -> nginx chain.", "",
             "| path | req/s (median round) | × nginx (paired median) | per-round range | p50 ms | p99 ms | CPU µs/req | RssAnon idle kB | VmRSS idle kB | RssAnon 1k conns kB | VmRSS 1k conns kB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in res.items():
        # Two-hop rows compare with the two-hop nginx chain; the rest with one nginx.
        base = res.get("nginx -> nginx", ng) if name in ("activator -> queue-proxy", "nginx -> nginx") else ng
        mine, theirs = r.get("all_rps", [r["rps"]]), base.get("all_rps", [base["rps"]])
        ratios = sorted(a / b for a, b in zip(mine, theirs))
        lines.append("| %s | %.0f | %.2f | %.2f–%.2f | %.3f | %.3f | %.1f | %d | %d | %d | %d |" % (
            name, r["rps"], ratios[len(ratios) // 2], ratios[0], ratios[-1], r["p50"], r["p99"], r["cpu_us"],
            r["idle_anon"], r["idle_rss"], r["k_anon"], r["k_rss"]))
    lines += ["", "Rounds (req/s): " + "; ".join("%s %s" % (n, "/".join("%.0f" % x for x in r.get("all_rps", [r["rps"]])))
                                           for n, r in res.items())]
    if LATENCY:
        d = LATENCY.get("direct", {"p50": 0, "p99": 0})
        lines += ["", "### Latency at a fixed %d req/s (open loop)" % RATE, "",
                  "bench/loadgen.c schedules requests every 1/%d s whatever the responses (no coordinated "
                  "omission), 32 keep-alive connections, %d s per round, rounds interleaved across the paths, "
                  "the round with the median p99 shown; pinned like the rows above. \"Added\" is the "
                  "path's p99 minus the direct path's p99; for the activator it is the latency it adds in front "
                  "of a pod (the activator -> queue-proxy row minus the queue-proxy-alone row)." % (RATE, SECONDS), "",
                  "| path | ok | errors | p50 ms | p99 ms | p99.9 ms | max ms | added p99 ms |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name, v in LATENCY.items():
            if name == "activator -> queue-proxy" and "queue-proxy alone" in LATENCY:
                added = v["p99"] - LATENCY["queue-proxy alone"]["p99"]
            else:
                added = v["p99"] - d["p99"]
            lines.append("| %s | %d | %d | %.3f | %.3f | %.3f | %.3f | %+.3f |" % (
                name, v["ok"], v["errors"], v["p50"], v["p99"], v["p999"], v["max"], added))
    lines += ["", "Direct = wrk straight to the origin (no proxy); its CPU and memory are the origin nginx worker's. "
              "The two-hop rows (activator -> queue-proxy -> origin, nginx -> nginx -> origin) are compared with "
              "each other; their CPU and memory are the first hop's (the activator, the first nginx worker), and the "
              "second hop runs on CPU 1 beside it.", ""]
    extra = os.environ.get("BENCH_NOTES_FILE")
    if extra and os.path.exists(extra):
        lines += [open(extra).read()]
    out = os.environ.get("BENCH_OUT", os.path.join(ROOT, "bench", "RESULTS.md"))
    # Everything after the generated block (notes, history) is kept as written.
    keep = ""
    if os.path.exists(out):
        old = open(out).read()
        for marker in ("\n## Reading the table", "\n## History"):
            if marker in old:
                keep = old[old.index(marker):]
                break
    open(out, "w").write("\n".join(lines) + keep + ("\n" if not keep.endswith("\n") else ""))
    print("wrote", out)


def run(main):
    """A bench script's entry: main(), then every process it started stopped
    (by pid), whatever main() did."""
    try:
        main()
    finally:
        for p in procs:
            stop(p)


if __name__ == "__main__":
    run(main)

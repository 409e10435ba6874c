"""Scenario tests for the local platform: the real `coldbrew run` with its
real activator child, real queue-proxies and real coffee processes, driven
by real clients (http.client, curl, wrk) on loopback. Nothing is mocked."""
import json, os, re, signal, subprocess, threading, time, urllib.request
from harness import *

COFFEE_DEFAULTS = {"autoscaling.knative.dev/initial-scale": "0",
                   "autoscaling.knative.dev/window": "6s"}




def service_doc(name="coffee", version="v1", cc=10, annotations=None, traffic=None,
                command=None, env=None, rev_name=None, timeout=60, readiness=True, port_name=None):
    ann = dict(COFFEE_DEFAULTS)
    ann.update(annotations or {})
    lines = ["apiVersion: serving.knative.dev/v1", "kind: Service", "metadata:",
             "  name: %s" % name, "  namespace: default", "spec:", "  template:", "    metadata:"]
    if rev_name:
        lines.append("      name: %s" % rev_name)
    lines.append("      annotations:")
    for k, v in ann.items():
        lines.append('        %s: "%s"' % (k, v))
    lines += ["    spec:", "      containerConcurrency: %d" % cc, "      timeoutSeconds: %d" % timeout,
              "      containers:", "        - image: example/coffee",
              "          command: %s" % json.dumps(command or ["coffee"]), "          env:",
              "            - name: COFFEE_VERSION", "              value: %s" % version]
    for k, v in (env or {}).items():
        lines += ["            - name: %s" % k, '              value: "%s"' % v]
    if port_name:
        lines += ["          ports:", "            - name: %s" % port_name, "              containerPort: 8080"]
    if readiness:
        lines += ["          readinessProbe:", "            httpGet:", "              path: /healthz"]
    if traffic:
        lines.append("  traffic:")
        for t in traffic:
            first = True
            for k, v in t.items():
                val = "true" if v is True else v
                lines.append(("    - " if first else "      ") + "%s: %s" % (k, val))
                first = False
    return "\n".join(lines) + "\n"




def host(svc="coffee", tag=None):
    return ("%s-" % tag if tag else "") + "%s.default.localhost" % svc


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cold_start_share(pl, rev, total_ms):
    """The data plane's share of a cold start: total less the user process's
    own exec-to-listening time (from the platform's and coffee's logs)."""
    log = open(os.path.join(pl.home, "coldbrew.log")).read()
    spawn = [float(m) for m in re.findall(r"pod %s-deployment-\w+ started .*? at ([\d.]+) ms" % rev, log)]
    pod_logs = os.path.join(pl.home, "logs", "default", rev)
    listen = []
    for f in os.listdir(pod_logs):
        if f.endswith(".log") and not f.endswith(".queue-proxy.log"):
            listen += [float(m) for m in re.findall(r"listening on \S+ at ([\d.]+) ms", open(os.path.join(pod_logs, f)).read())]
    ok(spawn and listen, "spawn and listen stamps for %s" % rev)
    user_ms = min(listen) - min(spawn)
    return total_ms - user_ms, user_ms


def wrk(port, hostname, seconds=3, conns=8, path="/"):
    r = subprocess.run(["wrk", "-t2", "-c%d" % conns, "-d%ds" % seconds, "-H", "Host: " + hostname,
                        "http://127.0.0.1:%d%s" % (port, path)], capture_output=True, timeout=seconds + 30)
    out = r.stdout.decode()
    m = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"requests": int(m.group(1)) if m else 0, "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sum(map(int, errs.groups())) if errs else 0, "out": out}


# ---------------------------------------------------------------- tests

@test
def local_cold_start_split_and_tags():
    pl = Platform(files=[os.path.join(ROOT, "examples", "coffee.yaml")])
    out = pl.output()
    ok("coffee ready at http://coffee.default.localhost:%d (scaled to zero)" % pl.port in out, out)
    eq(pl.pods("coffee-00001") + pl.pods("coffee-00002"), [], "no pods before the first request")
    # Cold start of each revision through its tag host.
    for tag, rev, ver in (("current", "coffee-00001", "v1"), ("candidate", "coffee-00002", "v2")):
        t0 = time.time()
        st, _, body = pl.get(host(tag=tag))
        total = (time.time() - t0) * 1e3
        eq((st, body), (200, ("coffee %s (revision %s): one espresso\n" % (ver, rev)).encode()), tag)
        dp, user = cold_start_share(pl, rev, total)
        print("    cold start %s: %.1f ms to the answer; user process exec->listening %.1f ms; data plane %.1f ms"
              % (rev, total, user, dp))
    for _ in range(20):
        eq(pl.get(host(tag="current"))[2], b"coffee v1 (revision coffee-00001): one espresso\n", "tag current")
        eq(pl.get(host(tag="candidate"))[2], b"coffee v2 (revision coffee-00002): one espresso\n", "tag candidate")
    # The 70/30 split over 10,000 requests, on keep-alive connections.
    counts = {b"v1": 0, b"v2": 0, b"other": 0}
    lock = threading.Lock()

    def worker(n):
        c = conn(pl.port)
        local = {b"v1": 0, b"v2": 0, b"other": 0}
        for _ in range(n):
            c.request("GET", "/", headers={"Host": host()})
            r = c.getresponse()
            body = r.read()
            key = body[7:9] if r.status == 200 and body.startswith(b"coffee ") else b"other"
            local[key if key in local else b"other"] += 1
        c.close()
        with lock:
            for k, v in local.items():
                counts[k] += v

    ts = [threading.Thread(target=worker, args=(2500,)) for _ in range(4)]
    [t.start() for t in ts]
    [t.join(120) for t in ts]
    eq(counts[b"other"], 0, "failed or unexpected answers")
    share = 100.0 * counts[b"v1"] / (counts[b"v1"] + counts[b"v2"])
    print("    split over %d requests: v1 %.2f%%, v2 %.2f%%" % (sum(counts.values()), share, 100 - share))
    ok(abs(share - 70) <= 3, "v1 share %.2f%% not within 70 +- 3" % share)
    eq(sum(counts.values()), 10000, "requests answered")
    st, _, body = pl.get("nope.default.localhost")
    eq((st, body), (404, b'no route for host "nope.default.localhost"\n'), "unknown host")


@test
def local_scale_up_under_load_and_back_to_zero():
    doc = service_doc(cc=2, annotations={"autoscaling.knative.dev/max-scale": "4",
                                         "autoscaling.knative.dev/panic-window-percentage": "20"})
    pl = Platform(doc)
    seen = {"max": 0}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            seen["max"] = max(seen["max"], len(pl.pods("coffee-00001", "Ready")))
            time.sleep(0.2)

    w = threading.Thread(target=watch)
    w.start()
    res = wrk(pl.port, host(), seconds=6, conns=12, path="/?sleep=20")
    stop.set()
    w.join()
    print("    under load: %d requests, %d non-2xx, up to %d ready pods" % (res["requests"], res["non2xx"], seen["max"]))
    eq(res["non2xx"] + res["socket_errors"], 0, "errors under load: " + res["out"])
    ok(seen["max"] >= 2, "scaled up (max %d ready pods)" % seen["max"])
    ok(seen["max"] <= 4, "max-scale 4 respected (%d)" % seen["max"])
    t0 = time.time()
    wait_for(lambda: pl.pods("coffee-00001") == [], 30, "scale to zero")
    print("    back to zero %.1f s after the load stopped (window 6 s + grace 1 s)" % (time.time() - t0))
    st, _, body = pl.get(host())
    eq(st, 200, "a request after scale to zero cold-starts again")


@test
def local_rps_metric_scales_by_request_rate():
    pl = Platform(service_doc(cc=0, annotations={"autoscaling.knative.dev/metric": "rps",
                                                 "autoscaling.knative.dev/target": "100",
                                                 "autoscaling.knative.dev/target-utilization-percentage": "100",
                                                 "autoscaling.knative.dev/max-scale": "3"}))
    res = wrk(pl.port, host(), seconds=5, conns=4)
    r = pl.revision("coffee-00001")
    print("    rps metric: %d requests in 5 s, %d ready pods, mode %s" % (res["requests"], len(pl.pods("coffee-00001", "Ready")), r["mode"]))
    eq(res["non2xx"] + res["socket_errors"], 0, "errors")
    eq(r["metric"], "rps", "metric")
    ok(res["requests"] > 5 * 400, "enough load to want 3 pods (%d requests)" % res["requests"])
    eq(len(pl.pods("coffee-00001", "Ready")), 3, "scaled by request rate to max-scale")


@test
def local_rollout_under_load_zero_errors():
    pl = Platform(service_doc(version="v1", annotations={"autoscaling.knative.dev/min-scale": "1"}))
    wait_for(lambda: pl.pods("coffee-00001", "Ready"), 10, "v1 ready")
    result = {}
    t = threading.Thread(target=lambda: result.update(wrk(pl.port, host(), seconds=5, conns=8)))
    t.start()
    time.sleep(1.5)
    v2 = os.path.join(pl.home, "v2.yaml")
    with open(v2, "w") as f:
        f.write(service_doc(version="v2", annotations={"autoscaling.knative.dev/initial-scale": "1"}))
    rc, out, err = pl.cli("apply", v2)
    eq(rc, 0, "apply: " + err)
    ok("created revision coffee-00002" in out, out)
    t.join(60)
    print("    rollout under load: %d requests, %d non-2xx" % (result["requests"], result["non2xx"]))
    eq(result["non2xx"] + result["socket_errors"], 0, "errors during the rollout: " + result["out"])
    eq(pl.get(host())[2], b"coffee v2 (revision coffee-00002): one espresso\n", "traffic moved to v2")
    rc, out, err = pl.cli("apply", v2)
    ok(rc == 0 and "template unchanged" in out, "re-apply is a no-op: " + out + err)


@test
def local_apply_of_a_history_file_makes_only_the_new_revision():
    src = os.path.join(ROOT, "examples", "coffee.yaml")
    pl = Platform(files=[src])
    rc, out, err = pl.cli("apply", src)
    ok(rc == 0 and out.count("template unchanged") == 2, "re-apply is a no-op: " + out + err)
    v3 = os.path.join(pl.home, "coffee-v3.yaml")
    open(v3, "w").write(open(src).read().replace("value: v2", "value: v3"))
    rc, out, err = pl.cli("apply", v3)
    ok(rc == 0 and "created revision coffee-00003" in out and "coffee-00004" not in out, out + err)
    eq(pl.get(host(tag="candidate"))[2], b"coffee v3 (revision coffee-00003): one espresso\n", "candidate moved")
    eq(pl.get(host(tag="current"))[2], b"coffee v1 (revision coffee-00001): one espresso\n", "current stays")
    bad = os.path.join(pl.home, "bad.yaml")
    open(bad, "w").write(open(src).read().replace("revisionName: coffee-00001", "revisionName: coffee-00042"))
    rc, out, err = pl.cli("apply", bad)
    ok(rc == 2 and re.search(r"bad.yaml:\d+: spec.traffic\[0\].revisionName: revision coffee-00042 does not exist", err),
       "a bad apply is refused: %d %s" % (rc, err))
    eq(pl.get(host(tag="candidate"))[2], b"coffee v3 (revision coffee-00003): one espresso\n", "nothing changed")


@test
def local_pod_sigkill_under_load():
    pl = Platform(service_doc(cc=4, annotations={"autoscaling.knative.dev/min-scale": "2"}))
    wait_for(lambda: len(pl.pods("coffee-00001", "Ready")) == 2, 10, "2 ready pods")
    victim = pl.pods("coffee-00001", "Ready")[0]
    results = {"ok": 0, "other": 0, "hung": 0}
    lock = threading.Lock()

    def worker():
        for _ in range(150):
            try:
                st, _, _ = pl.get(host(), "/?sleep=5", timeout=15)
                k = "ok" if st == 200 else "other"
            except Exception:
                k = "hung"
            with lock:
                results[k] += 1

    ts = [threading.Thread(target=worker) for _ in range(6)]
    [t.start() for t in ts]
    time.sleep(0.3)
    os.kill(victim["user_pid"], signal.SIGKILL)
    [t.join(120) for t in ts]
    print("    SIGKILL under load: %(ok)d ok, %(other)d 5xx, %(hung)d hung" % results)
    eq(results["hung"], 0, "requests that hung")
    ok(results["other"] <= 12, "only the requests on the killed pod fail (%d)" % results["other"])
    wait_for(lambda: len(pl.pods("coffee-00001", "Ready")) == 2 and
             victim["name"] not in [p["name"] for p in pl.pods("coffee-00001")], 10, "replacement pod")
    ok(not alive(victim["qp_pid"]), "the killed pod's queue-proxy is gone too")


@test
def local_reserved_instance():
    pl = Platform(service_doc(annotations={"coldbrew.dev/reserve-instance": "enable"}))
    res = wait_for(lambda: pl.pods("coffee-00001", "Ready", reserved=True), 10, "a reserved instance at zero")[0]
    nice = int(open("/proc/%d/stat" % res["user_pid"]).read().rsplit(")", 1)[1].split()[16])
    eq(nice, 19, "the reserved instance's nice value")
    def served(pod):
        txt = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % pod["prometheus_port"], timeout=2).read().decode()
        return sum(int(x) for x in re.findall(r"^http_server_request_duration_seconds_count\{[^}]*\} (\d+)", txt, re.M))

    before = served(res)
    t0 = time.time()
    st, _, body = pl.get(host())
    print("    first request served by the reserved instance in %.1f ms" % ((time.time() - t0) * 1e3))
    eq(st, 200, "first request")
    eq(served(res) - before, 1, "requests the reserved instance served")
    wait_for(lambda: pl.pods("coffee-00001", "Ready", reserved=False), 15, "a standard pod")
    wait_for(lambda: not any(p["name"] == res["name"] for p in pl.pods("coffee-00001")), 10,
             "the reserved instance released")
    wait_for(lambda: pl.pods("coffee-00001", "Ready", reserved=True) and
             not pl.pods("coffee-00001", reserved=False), 30, "back to one reserved instance at zero")
    # A reserved instance that crashes is replaced after the backoff.
    res2 = pl.pods("coffee-00001", "Ready", reserved=True)[0]
    os.kill(res2["user_pid"], signal.SIGKILL)
    wait_for(lambda: [p for p in pl.pods("coffee-00001", "Ready", reserved=True) if p["name"] != res2["name"]],
             10, "a new reserved instance after a crash")


@test
def local_activator_killed_is_restarted():
    pl = Platform(service_doc(annotations={"autoscaling.knative.dev/min-scale": "1"}))
    eq(pl.get(host())[0], 200, "before")
    act = [k for k in pl.descendants() if open("/proc/%d/cmdline" % k, "rb").read().split(b"\0")[0].endswith(b"/activator")]
    eq(len(act), 1, "one activator child")
    os.kill(act[0], signal.SIGKILL)

    def serves():
        try:
            return pl.get(host(), timeout=2)[0] == 200
        except OSError:
            return False

    t0 = time.time()
    wait_for(serves, 15, "the activator back", step=0.1)
    print("    serving again %.1f s after the activator was killed" % (time.time() - t0))
    ok("the activator exited" in open(os.path.join(pl.home, "coldbrew.log")).read(), "logged")
    for _ in range(20):
        eq(pl.get(host())[0], 200, "after the restart")


@test
def local_autoscaler_stats_socket_limits():
    pl = Platform(service_doc())
    act = [k for k in pl.descendants() if open("/proc/%d/cmdline" % k, "rb").read().split(b"\0")[0].endswith(b"/activator")][0]
    env = dict(kv.split(b"=", 1) for kv in open("/proc/%d/environ" % act, "rb").read().split(b"\0") if b"=" in kv)
    port = int(env[b"AUTOSCALER_URL"].rsplit(b":", 1)[1])
    good = socket.create_connection(("127.0.0.1", port), 5)
    good.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    resp = good.recv(4096)
    ok(resp.startswith(b"HTTP/1.1 101") and b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in resp, resp)
    silent = socket.create_connection(("127.0.0.1", port), 5)
    silent.settimeout(15)
    t0 = time.time()
    eq(silent.recv(1), b"", "the silent connection is closed")
    took = time.time() - t0
    ok(9 <= took <= 13, "closed at the 10 s handshake deadline (%.1f s)" % took)
    ok("no handshake within 10 s" in open(os.path.join(pl.home, "coldbrew.log")).read(), "logged")
    good.close()


@test
def local_bad_manifests_name_file_line_field():
    cases = [
        ("apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: x\n", r"svc0.yaml:\d+: YAML"),
        (service_doc().replace('          command: ["coffee"]\n', ""),
         r"svc0.yaml:\d+: spec.template.spec.containers\[0\].command: is required locally"),
        (service_doc(command=["coffee"] + ["x"] * 63),
         r"svc0.yaml:\d+: spec.template.spec.containers\[0\].command: at most 63 words"),
        (service_doc(annotations={"autoscaling.knative.dev/window": "3s"}),
         r"svc0.yaml:11: spec.template.metadata.annotations.autoscaling.knative.dev/window: must be a duration"),
        (service_doc(traffic=[{"revisionName": "coffee-00009", "percent": 100}]),
         r"svc0.yaml:2\d: spec.traffic\[0\].revisionName: revision coffee-00009 does not exist"),
        (service_doc(traffic=[{"latestRevision": True, "percent": 90}]), r"svc0.yaml:\d+: spec.traffic: percents must add up to 100"),
        (service_doc().replace("kind: Service", "kind: Servic"), r"svc0.yaml:2: kind: must be Service"),
        (service_doc(port_name="grpc"),
         r"svc0.yaml:\d+: spec.template.spec.containers\[0\].ports\[0\].name: must be h2c or http1"),
    ]
    for text, want in cases:
        pl = Platform(text, expect_ready=False)
        rc = pl.wait(10)
        out = pl.output()
        eq(rc, 2, "exit code for %s" % want)
        ok(re.search(want, out), "message %r in %r" % (want, out))
        ok("ready at" not in out and not os.path.exists(os.path.join(pl.home, "logs")), "nothing started: " + out)


@test
def local_h2c_revision_is_reached_on_its_http2_port():
    # A port named h2c makes the revision HTTP/2 (Knative's GetProtocol): its
    # pods are published under the Endpoints port "http2", which the
    # activator must find; an HTTP/1 request still goes through as HTTP/1.
    pl = Platform(service_doc(name="h2", port_name="h2c"), service_doc(name="h1", port_name="http1"))
    eq(pl.revision("h2-00001")["protocol"], "h2c", "status shows the protocol")
    eq(pl.revision("h1-00001")["protocol"], "http1", "http1 by name")
    st, _, body = pl.get(host("h2"))
    eq(st, 200, "cold start of an h2c revision over HTTP/1: %s" % body[:200])
    eq(pl.get(host("h1"))[0], 200, "http1 revision")
    rc, out, _ = pl.cli("status", "--once")
    ok(re.search(r"h2-00001 .* h2c", out), "status table marks h2c: " + out)
    pl.stop()


@test
def local_failing_command_answers_503_with_reason():
    pl = Platform(service_doc(name="nocmd", command=["/nonexistent/brew"]),
                  service_doc(name="quits", command=["sh", "-c", "echo out of beans; exit 3"]))
    t0 = time.time()
    st, _, body = pl.get(host("nocmd"))
    eq(st, 503, "missing command")
    ok(b"exec /nonexistent/brew: No such file or directory" in body, body)
    st, _, body = pl.get(host("quits"))
    eq(st, 503, "command that exits at once")
    ok(b"exited with status 3 before becoming ready: out of beans" in body, body)
    ok(time.time() - t0 < 10, "answered at once, not at the timeout")
    st, _, body = pl.get(host("quits"))
    eq(st, 503, "later requests get the reason at once too")
    rc, out, err = pl.cli("status", "--once")
    ok("failed: exec /nonexistent/brew" in out and "out of beans" in out, out)


@test
def local_second_platform_gets_a_clear_error():
    pl = Platform(service_doc())
    other = Proc("coldbrew-2", [os.path.join(BIN, "coldbrew"), "run", pl.files[0]], dict(pl.env, COLDBREW_HOME=pl.home + "/2"))
    eq(other.wait(10), 1, "second run on the same API port")
    ok("is another `coldbrew run` running?" in other.output(), other.output())
    env = dict(pl.env, COLDBREW_HOME=pl.home + "/3", COLDBREW_API_PORT=str(free_port()))
    third = Proc("coldbrew-3", [os.path.join(BIN, "coldbrew"), "run", pl.files[0]], env)
    eq(third.wait(10), 1, "second run on the same ingress port")
    ok("port %d is taken" % pl.port in third.output(), third.output())
    eq(pl.get(host())[0], 200, "the first platform still serves")


@test
def local_cli_status_logs_and_shutdown_leaves_no_orphans():
    pl = Platform(service_doc(annotations={"autoscaling.knative.dev/min-scale": "2"}),
                  service_doc(name="tea", version="t1", annotations={"autoscaling.knative.dev/min-scale": "1"}))
    wait_for(lambda: len(pl.pods("coffee-00001", "Ready")) == 2 and pl.pods("tea-00001", "Ready"), 10, "pods")
    eq(pl.get(host("tea"))[2], b"coffee t1 (revision tea-00001): one espresso\n", "tea")
    rc, out, err = pl.cli("status", "--once")
    ok(rc == 0 and "coffee-00001" in out and "tea-00001" in out and "Ready" in out, out + err)
    rc, out, err = pl.cli("logs", "coffee")
    ok(rc == 0 and "user-container" in out and "listening on 127.0.0.1" in out and "queue-proxy" in out, out + err)
    # logs -f follows, and picks up a replacement pod's output.
    env = dict(os.environ)
    env.update(pl.env)
    follow = subprocess.Popen([os.path.join(BIN, "coldbrew"), "logs", "tea", "-f"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    os.set_blocking(follow.stdout.fileno(), False)
    seen = [b""]

    def headers():
        try:
            seen[0] += follow.stdout.read() or b""
        except (BlockingIOError, TypeError):
            pass
        return set(re.findall(rb"==> (tea-00001/\S+) user-container <==", seen[0]))

    wait_for(lambda: len(headers()) == 1, 5, "logs -f shows the pod")
    os.kill(pl.pods("tea-00001", "Ready")[0]["user_pid"], signal.SIGKILL)
    wait_for(lambda: len(headers()) == 2, 10, "logs -f shows the replacement pod")
    ok(seen[0].count(b"listening on 127.0.0.1") >= 2, seen[0].decode(errors="replace"))
    wait_for(lambda: len(pl.pods("tea-00001", "Ready")) == 1, 10, "tea replaced")
    kids = pl.descendants()
    ok(len(kids) >= 7, "activator + 3 pods x 2 processes: %r" % kids)
    t0 = time.time()
    pl.signal(signal.SIGTERM)
    eq(pl.wait(30), 0, "exit code after SIGTERM")
    print("    drained and stopped in %.1f s" % (time.time() - t0))
    eq(follow.wait(10), 0, "logs -f ends when the platform stops")
    left = [k for k in kids if alive(k)]
    eq(left, [], "orphan processes")
    rc, out, err = pl.cli("status")
    ok(rc == 1 and "no platform answers" in err, err)


if __name__ == "__main__":
    p, f = run_all(sys.argv[1] if len(sys.argv) > 1 else None)
    sys.exit(1 if f else 0)

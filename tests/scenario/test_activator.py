"""Scenario tests for the activator: the real binary, a Kubernetes API test
double speaking Kubernetes' list/watch JSON, and revision pods made of a real
coldbrew queue-proxy in front of a real origin, all on loopback."""
import json, os, signal, socket, threading, time
from harness import *

NS = "default"


def wait_for(cond, timeout=5.0, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def rev_headers(name, ns=NS):
    return {"Knative-Serving-Namespace": ns, "Knative-Serving-Revision": name}


@test
def activator_env_missing_exits_1():
    env_less = Proc("act-noenv2", ["/usr/bin/env", "-u", "POD_NAME", "-u", "POD_IP", os.path.join(BIN, "activator")])
    eq(env_less.wait(5), 1, "exit code")
    out = env_less.output()
    ok("POD_NAME" in out and "POD_IP" in out and "missing value" in out, out)


@test
def activator_probe_table():
    k = KubeAPI()
    a = Activator(k)
    st, r, body = get(a.port, "/", {"User-Agent": "kube-probe/1.30"})
    eq((st, body), (500, b"connection has not yet been established\n"), "kubelet, autoscaler link down")
    st, r, body = get(a.port, "//healthz", {"K-Network-Probe": "activator", "User-Agent": "Knative-Autoscaling-Probe"})
    eq((st, body), (200, b"activator"), "KPA probe")
    st, r, body = get(a.port, "/", {"K-Network-Probe": "fo<o"})
    eq((st, body), (400, b'unexpected probe header value: "fo&lt;o"\n'), "other probe value")
    st, r, body = get(a.port, "/", {"K-Network-Probe": "probe", "K-Network-Hash": "h1"})
    eq((st, body, r.getheader("K-Network-Hash")), (200, b"", "h1"), "ingress probe")
    st, r, body = get(a.port, "/", {"K-Network-Probe": "probe"})
    eq(st, 400, "ingress probe without hash")


@test
def activator_unknown_revision_404():
    k = KubeAPI()
    a = Activator(k)
    st, r, body = get(a.port, "/", rev_headers("nope"))
    eq((st, body), (404, b'Error getting active endpoint: revision.serving.knative.dev "nope" not found\n'), "404")
    eq(r.getheader("X-Content-Type-Options"), "nosniff", "http.Error headers")


@test
def activator_scale_from_zero_holds_then_forwards():
    k = KubeAPI()
    k.revision(NS, "hello-00001", cc=0)
    a = Activator(k)
    pod = Pod()
    res = [None]
    t0 = time.time()
    th = threading.Thread(target=lambda: res.__setitem__(0, (get(a.port, "/x?y=1", dict(
        rev_headers("hello-00001"), Host="hello.default.example.com", **{"X-Forwarded-For": "9.9.9.9"})), time.time())))
    th.start()
    time.sleep(0.5)
    ok(res[0] is None, "held while the revision has no pod")
    published = time.time()
    k.private_endpoints(NS, "hello-00001", ready=[pod.addr])
    th.join(10)
    (st, r, body), done = res[0]
    eq(st, 200, "answered once the pod is ready")
    lag = (done - published) * 1000
    print("    answered %.1f ms after the pod was published" % lag)
    ok(lag < 500, "answered promptly after publication (%.1f ms)" % lag)
    j = json.loads(body)
    h = {kk.lower(): v for kk, v in j["headers"]}
    eq(h.get("host"), "hello.default.example.com", "queue-proxy restored Host from K-Original-Host")
    eq(h.get("k-proxy-request"), "activator", "K-Proxy-Request")
    ok("knative-serving-revision" not in h and "knative-serving-namespace" not in h, "revision headers stripped")
    eq(h.get("x-forwarded-for"), "9.9.9.9, 127.0.0.1, 127.0.0.1", "XFF appended by both hops")
    eq(j["target"], "/x?y=1", "target")


@test
def activator_host_based_lookup():
    k = KubeAPI()
    k.revision(NS, "hello-00002", cc=0)
    pod = Pod()
    k.private_endpoints(NS, "hello-00002", ready=[pod.addr])
    a = Activator(k)
    st, r, body = get(a.port, "/", {"Host": "hello-00002.default.svc.cluster.local:80"})
    eq(st, 200, "resolved from Host")
    st, r, body = get(a.port, "/", {"Host": "hello-00002.default.svc.other.domain"})
    eq(st, 404, "other cluster domain")


@test
def activator_timeout_504_while_held():
    k = KubeAPI()
    k.revision(NS, "slow-00001", cc=1, timeout=1)
    a = Activator(k)
    t0 = time.time()
    st, r, body = get(a.port, "/", rev_headers("slow-00001"))
    eq((st, body), (504, b"activator request timeout"), "timed out while held")
    ok(0.9 < time.time() - t0 < 2.0, "at timeoutSeconds")
    # A cold start that got no response from a pod is counted, by outcome.
    metrics = get(a.metrics, "/metrics")[2].decode()
    ok('kn_revision_name="slow-00001",code="504"} 1\n' in metrics, metrics)
    ledger = json.loads(get(a.metrics, "/coldstarts")[2])
    eq([(r["name"], r["count"], r["failed"]) for r in ledger["revisions"]], [("slow-00001", 0, 1)],
       "the failed cold start in the ledger")


@test
def activator_not_ready_pod_is_probed_not_trusted():
    k = KubeAPI()
    k.revision(NS, "probe-00001", cc=0)
    a = Activator(k)
    dead = free_port()
    pod = Pod()
    # A not-ready address that answers the probe is used (Knative's probe optimisation);
    # one that does not answer is not.
    k.private_endpoints(NS, "probe-00001", not_ready=[("127.0.0.1", dead), pod.addr])
    for i in range(10):
        st, _, _ = get(a.port, "/", rev_headers("probe-00001"))
        eq(st, 200, "only the healthy pod gets traffic (%d)" % i)


@test
def activator_overload_cc1_pods_added_one_at_a_time():
    """Knative's TestActivatorOverload shape: CC=1, many concurrent 300 ms
    requests while pods are added one at a time: every one answered 200."""
    k = KubeAPI()
    k.revision(NS, "busy-00001", cc=1)
    a = Activator(k)
    n = 40
    results = [None] * n

    def fire(i):
        try:
            st, _, _ = get(a.port, "/sleep?ms=300", rev_headers("busy-00001"), timeout=60)
            results[i] = st
        except Exception as e:
            results[i] = str(e)
    ths = [threading.Thread(target=fire, args=(i,)) for i in range(n)]
    for t in ths:
        t.start()
    pods = []
    for i in range(4):
        time.sleep(0.5)
        pods.append(Pod(CONTAINER_CONCURRENCY=1))
        k.private_endpoints(NS, "busy-00001", ready=[p.addr for p in pods])
    for t in ths:
        t.join(60)
    eq(results, [200] * n, "every request answered 200")
    # The activator must never put more than CC=1 on a pod: a broken per-pod
    # limit would only make the pod's queue-proxy queue (still 200), so check
    # what each user container saw at once.
    stats = [p.origin.stats() for p in pods]
    eq([st["max_in_flight"] for st in stats], [1] * len(pods), "peak concurrency per pod")
    eq(sum(st["requests"] - 1 for st in stats), n, "each request reached exactly one pod")


@test
def activator_survives_watch_drop_garbage_and_410():
    k = KubeAPI()
    k.revision(NS, "w-00001", cc=0)
    a = Activator(k, COLDBREW_K8S_BACKOFF_MAX_SECONDS="0.2")
    pod = Pod()
    k.post("drop")
    time.sleep(0.3)
    k.post("garbage")
    time.sleep(0.3)
    k.private_endpoints(NS, "w-00001", ready=[pod.addr])
    wait_for(lambda: get(a.port, "/", rev_headers("w-00001"))[0] == 200, 5, "endpoints seen after drop")
    # History compacted: re-watching from an old version gets 410 and relists.
    k.post("drop")
    k.post("compact")
    k.revision(NS, "w-00002", cc=0)
    k.private_endpoints(NS, "w-00002", ready=[pod.addr])
    wait_for(lambda: get(a.port, "/", rev_headers("w-00002"))[0] == 200, 5, "relisted after 410")
    # A revision deleted while the watch was down is forgotten after the relist.
    k.post("drop")
    k.post("compact")
    k.delete("Revision", NS, "w-00001")
    wait_for(lambda: get(a.port, "/", rev_headers("w-00001"))[0] == 404, 5, "deletion seen")
    out = a.output()
    ok("relisting" in out or "re-watching" in out, "logged the recoveries")


def concurrent_gets(port, path, headers, n):
    res = [None] * n

    def fire(i):
        try:
            res[i] = get(port, path, headers, timeout=30)[0]
        except Exception as e:
            res[i] = str(e)
    ths = [threading.Thread(target=fire, args=(i,)) for i in range(n)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(40)
    return res


@test
def activator_clusterip_fallback_when_pods_unreachable():
    """Mesh auto (§3.8): the pods' addresses refuse the activator (as a mesh
    that only admits its own sidecars does) and the private Service answers,
    so the revision routes to the ClusterIP, with capacity CC x ready pods."""
    k = KubeAPI()
    k.revision(NS, "mesh-00001", cc=1)
    behind = Pod(CONTAINER_CONCURRENCY=0)  # what kube-proxy balances onto
    a = Activator(k)
    k.private_service(NS, "mesh-00001", "127.0.0.1", behind.qp.port)
    k.private_endpoints(NS, "mesh-00001", ready=[("127.0.0.1", free_port()), ("127.0.0.1", free_port())])
    res = concurrent_gets(a.port, "/sleep?ms=300", rev_headers("mesh-00001"), 6)
    eq(res, [200] * 6, "answered through the ClusterIP")
    ok("routing to the private Service's ClusterIP 127.0.0.1:%d" % behind.qp.port in a.output(), a.output()[-800:])
    eq(behind.origin.stats()["max_in_flight"], 2, "capacity CC=1 x 2 ready pods")
    # One address leaves Endpoints: capacity follows the ready count.
    k.private_endpoints(NS, "mesh-00001", ready=[("127.0.0.1", free_port())])
    time.sleep(0.3)
    res = concurrent_gets(a.port, "/sleep?ms=200", rev_headers("mesh-00001"), 3)
    eq(res, [200] * 3, "still answered")
    st = behind.origin.stats()
    eq(st["requests"] - 2, 9, "every request went through the ClusterIP (less the two /stats calls)")


@test
def activator_no_clusterip_fallback_after_non_mesh_answer():
    """A pod address that answers with its own status (here 200 without the
    "queue" body) proves there is no mesh in the way: no fallback."""
    k = KubeAPI()
    k.revision(NS, "nomesh-00001", cc=0, timeout=1)
    behind = Pod()
    impostor = Origin()  # answers the probe 200 with a JSON body, not "queue"
    a = Activator(k)
    k.private_service(NS, "nomesh-00001", "127.0.0.1", behind.qp.port)
    k.private_endpoints(NS, "nomesh-00001", ready=[("127.0.0.1", impostor.port)])
    st, _, body = get(a.port, "/", rev_headers("nomesh-00001"))
    eq((st, body), (504, b"activator request timeout"), "held until the timeout, never sent to the ClusterIP")
    eq(behind.origin.stats()["requests"] - 1, 0, "the ClusterIP was not used (less this /stats call)")
    ok("ClusterIP" not in a.output(), "no fallback logged")


@test
def activator_mesh_modes_enabled_and_passthrough():
    k = KubeAPI()
    k.revision(NS, "modes-00001", cc=0)
    pod, behind = Pod(), Pod()
    k.private_service(NS, "modes-00001", "127.0.0.1", behind.qp.port)
    k.private_endpoints(NS, "modes-00001", ready=[pod.addr])
    a = Activator(k, COLDBREW_MESH_COMPATIBILITY_MODE="enabled")
    for _ in range(3):
        eq(get(a.port, "/", rev_headers("modes-00001"))[0], 200, "answered (enabled)")
    # (each count less the /stats call itself)
    eq(pod.origin.stats()["requests"] - 1, 0, "enabled: pods are never addressed directly")
    eq(behind.origin.stats()["requests"] - 1, 3, "enabled: everything through the ClusterIP")
    a.stop()
    a = Activator(k, COLDBREW_MESH_POD_ADDRESSABILITY="true")
    st, _, body = get(a.port, "/", dict(rev_headers("modes-00001"), Host="modes.default.example.com"))
    eq(st, 200, "answered (passthrough)")
    h = {kk.lower(): v for kk, v in json.loads(body)["headers"]}
    eq(h.get("k-passthrough-lb"), "true", "K-Passthrough-Lb sent to the pod")
    eq(h.get("host"), "modes.default.example.com", "the pod's queue-proxy restores Host")
    eq(pod.origin.stats()["requests"] - 2, 1, "passthrough: straight to the pod (less two /stats calls)")
    a.stop()
    bad = Activator(k, wait=False, COLDBREW_MESH_COMPATIBILITY_MODE="sometimes")
    eq(bad.wait(5), 1, "unknown mode refused at start-up")


@test
def activator_prometheus_metrics():
    k = KubeAPI()
    k.apply("Revision", {"apiVersion": "serving.knative.dev/v1", "kind": "Revision",
                         "metadata": {"namespace": NS, "name": "met-00001", "labels": {
                             "serving.knative.dev/service": "met", "serving.knative.dev/configuration": "met"}},
                         "spec": {"containerConcurrency": 0, "timeoutSeconds": 30,
                                  "containers": [{"image": "x"}]}})
    a = Activator(k)
    lbl = 'k8s_namespace_name="default",kn_service_name="met",kn_configuration_name="met",kn_revision_name="met-00001"'
    res = []
    th = threading.Thread(target=lambda: res.append(get(a.port, "/", rev_headers("met-00001"))[0]))
    th.start()
    wait_for(lambda: "kn_revision_request_queued{%s} 1" % lbl in get(a.metrics, "/metrics")[2].decode(),
             what="one request shown as queued")
    body = get(a.metrics, "/metrics")[2].decode()
    ok("kn_revision_request_concurrency{%s} 1" % lbl in body, body)
    ok("kn_revision_request_active{%s} 0" % lbl in body, body)
    ok('kn_activator_stats_conn_reachable{peer="autoscaler"} 0' in body, "autoscaler down: " + body)
    pod = Pod()
    k.private_endpoints(NS, "met-00001", ready=[pod.addr])
    th.join(10)
    eq(res, [200], "answered")
    body = get(a.metrics, "/metrics?x=1")[2].decode()
    ok("kn_revision_request_queued{%s} 0" % lbl in body, body)
    ok('http_server_request_duration_seconds_count{k8s_pod_name="activator-test-0",http_response_status_code="200"} 1'
       in body, body)
    eq(get(a.metrics, "/other")[0], 404, "other paths")


@test
def activator_endpoints_before_revision():
    k = KubeAPI()
    pod = Pod()
    a = Activator(k)
    k.private_endpoints(NS, "late-00001", ready=[pod.addr])
    time.sleep(0.3)
    eq(get(a.port, "/", rev_headers("late-00001"))[0], 404, "no Revision object yet")
    k.revision(NS, "late-00001", cc=0)
    wait_for(lambda: get(a.port, "/", rev_headers("late-00001"))[0] == 200, 5, "served once the Revision exists")


@test
def activator_pod_dies_with_requests_in_flight():
    k = KubeAPI()
    k.revision(NS, "die-00001", cc=0)
    a = Activator(k)
    p1, p2 = Pod(), Pod()
    k.private_endpoints(NS, "die-00001", ready=[p1.addr, p2.addr])
    res = [None] * 6
    ths = [threading.Thread(target=fire_get, args=(a.port, "/sleep?ms=1500", rev_headers("die-00001"), res, i))
           for i in range(6)]
    for t in ths:
        t.start()
    time.sleep(0.4)
    p1.qp.p.kill()  # the pod vanishes (SIGKILL): its requests fail fast
    p1.origin.p.kill()
    k.private_endpoints(NS, "die-00001", ready=[p2.addr])
    for t in ths:
        t.join(10)
    ok(all(r in (200, 502) for r in res), "each answered 200 or 502, none hung: %r" % res)
    ok(200 in res, "the surviving pod served: %r" % res)
    for i in range(5):
        eq(get(a.port, "/", rev_headers("die-00001"))[0], 200, "after the pod left")


def fire_get(port, path, headers, res, i):
    try:
        res[i] = get(port, path, headers, timeout=20)[0]
    except Exception as e:
        res[i] = str(e)


@test
def activator_drain_under_load():
    k = KubeAPI()
    k.revision(NS, "drain-00001", cc=0)
    pod = Pod()
    k.private_endpoints(NS, "drain-00001", ready=[pod.addr])
    a = Activator(k, ACTIVATOR_DRAIN_SECONDS=1.5)
    stop = time.time() + 1.2  # SIGTERM at +0.2 s; the drain period lasts until +1.7 s
    errors = []

    def load():
        while time.time() < stop:
            try:
                st = get(a.port, "/", rev_headers("drain-00001"))[0]
                if st != 200:
                    errors.append(st)
            except Exception as e:
                errors.append(str(e))
    th = threading.Thread(target=load)
    th.start()
    time.sleep(0.2)
    a.signal(signal.SIGTERM)
    time.sleep(0.1)
    st, _, body = get(a.port, "/", {"User-Agent": "kube-probe/1.30"})
    eq((st, body), (500, b"received SIGTERM from kubelet\n"), "kubelet probe fails at once")
    th.join()
    ok(not errors, "no failed request during the drain period: %d, e.g. %r" % (len(errors), errors[:3]))
    eq(a.wait(5), 0, "exit 0 after drain")




def activator_with_autoscaler(k, **env):
    asc = Autoscaler()
    a = Activator(k, AUTOSCALER_URL="ws://127.0.0.1:%d" % asc.port, **env)
    wait_for(lambda: get(a.port, "/", {"User-Agent": "kube-probe/1.30"})[0] == 200, 5, "ready once linked")
    return a, asc


@test
def activator_ready_only_with_autoscaler_link():
    k = KubeAPI()
    port = free_port()
    a = Activator(k, AUTOSCALER_URL="ws://127.0.0.1:%d" % port, COLDBREW_WS_PING_SECONDS=0.2,
                  COLDBREW_WS_READ_TIMEOUT_SECONDS=1)
    eq(get(a.port, "/", {"User-Agent": "kube-probe/1.30"})[0], 500, "not ready before the link")
    asc = Autoscaler(port)
    wait_for(lambda: get(a.port, "/", {"User-Agent": "kube-probe/1.30"})[0] == 200, 5, "ready once linked")
    asc.stop()
    wait_for(lambda: get(a.port, "/", {"User-Agent": "kube-probe/1.30"})[0] == 500, 5, "not ready once lost")
    asc2 = Autoscaler(port)
    wait_for(lambda: get(a.port, "/", {"User-Agent": "kube-probe/1.30"})[0] == 200, 10, "reconnected")
    asc2.stop()


@test
def activator_pokes_autoscaler_then_reports():
    k = KubeAPI()
    k.revision(NS, "hello-00001", cc=0, timeout=5)
    a, asc = activator_with_autoscaler(k)
    res = [None]
    t0 = time.time()
    th = threading.Thread(target=lambda: res.__setitem__(0, get(a.port, "/", rev_headers("hello-00001"))))
    th.start()
    wait_for(lambda: asc.messages(), 2, "the poke")
    t_poke, first = asc.messages()[0]
    print("    poke seen %.1f ms after the request was sent" % ((t_poke - t0) * 1000))
    eq(first, {"namespace": NS, "name": "hello-00001",
               "stat": {"pod_name": "activator-test-0", "average_concurrent_requests": 1.0, "request_count": 1.0}},
       "the poke")
    import struct
    pod = b"activator-test-0"
    stat = b"\x0a" + bytes([len(pod)]) + pod + b"\x11" + struct.pack("<d", 1) + b"\x21" + struct.pack("<d", 1)
    msg = b"\x0a\x07default\x12\x0bhello-00001\x1a" + bytes([len(stat)]) + stat
    eq(asc.batches[0][1], b"\x0a" + bytes([len(msg)]) + msg, "the poke's bytes (shape of the contract's example)")
    # The request is held (no pod); the next one-second report says so, adjusted for the poke.
    wait_for(lambda: len(asc.messages()) >= 2, 3, "a periodic report")
    _, report = asc.messages()[1]
    avg = report["stat"].get("average_concurrent_requests", 0)
    ok(0 <= avg <= 0.05, "first report subtracts the poke's 1 (got %r)" % report)
    ok("request_count" not in report["stat"], "count 1 - 1 = 0, omitted: %r" % report)
    wait_for(lambda: len(asc.messages()) >= 3, 3, "a second report")
    _, second = asc.messages()[2]
    ok(0.9 < second["stat"].get("average_concurrent_requests", 0) <= 1.0, "held request counts: %r" % second)
    pod = Pod()
    k.private_endpoints(NS, "hello-00001", ready=[pod.addr])
    th.join(10)
    eq(res[0][0], 200, "served")


@test
def activator_ten_thousand_held_requests():
    """10,000 requests held for a revision with no pod: bounded memory, and
    every one answered once a pod is ready."""
    import asyncio, resource
    n = 2000 if SANITIZE else 10000
    k = KubeAPI()
    k.revision(NS, "held-00001", cc=100)
    a = Activator(k)

    def rss():
        for l in open("/proc/%d/status" % a.p.pid):
            if l.startswith("VmRSS:"):
                return int(l.split()[1])
    before = rss()
    results = []
    req = ("GET / HTTP/1.1\r\nHost: held.example\r\nKnative-Serving-Namespace: default\r\n"
           "Knative-Serving-Revision: held-00001\r\nUser-Agent: held-test\r\n\r\n").encode()

    async def one(i, opened):
        r, w = await asyncio.open_connection("127.0.0.1", a.port)
        w.write(req)
        await w.drain()
        opened.append(i)
        line = await asyncio.wait_for(r.readline(), 60)
        results.append(line[9:12])
        w.close()

    async def go():
        opened = []
        tasks = []
        for i in range(n):
            tasks.append(asyncio.create_task(one(i, opened)))
            if i % 500 == 499:
                await asyncio.sleep(0.05)
        while len(opened) < n:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # let the activator read every head
        held = rss()
        ok(not results, "nothing answered while no pod exists")
        pod = Pod(CONTAINER_CONCURRENCY=100)
        t0 = time.time()
        k.private_endpoints(NS, "held-00001", ready=[pod.addr])
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
        return held, time.time() - t0

    held, drain = asyncio.run(go())
    per = (held - before) * 1024.0 / n
    print("    %d held: RSS %d kB -> %d kB (%.0f bytes each); all answered %.2f s after the pod appeared"
          % (n, before, held, per, drain))
    eq(sorted(set(results)), [b"200"], "every held request answered 200")
    eq(len(results), n, "all answered")
    if not SANITIZE:
        ok(held - before <= 40 * 1024, "10,000 held cost at most 40 MiB (%d kB)" % (held - before))
        ok(per <= 4096, "at most 4 KiB each (%.0f bytes)" % per)


def in_cluster_env(kube, ca, token_file):
    return {"KUBE_API_URL": None, "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(kube.port), "KUBE_CA_FILE": ca, "KUBE_TOKEN_FILE": token_file}


@test
def activator_in_cluster_tls_api_with_ca_and_token():
    import tempfile
    d = tempfile.mkdtemp(dir=LOGDIR)
    cert, key, ca = make_test_ca(d)
    token_file = os.path.join(d, "token")
    open(token_file, "w").write("s3cret-token\n")
    k = KubeAPI(tls=(cert, key, ca), token="s3cret-token")
    k.revision(NS, "tls-00001", cc=0)
    pod = Pod()
    k.private_endpoints(NS, "tls-00001", ready=[pod.addr])
    a = Activator(k, **in_cluster_env(k, ca, token_file))
    eq(get(a.port, "/", rev_headers("tls-00001"))[0], 200, "served via the TLS API")
    k.revision(NS, "tls-00002", cc=0)
    k.private_endpoints(NS, "tls-00002", ready=[pod.addr])
    wait_for(lambda: get(a.port, "/", rev_headers("tls-00002"))[0] == 200, 5, "watch over TLS")


@test
def activator_rejects_untrusted_api_and_bad_token():
    import tempfile
    d1, d2 = tempfile.mkdtemp(dir=LOGDIR), tempfile.mkdtemp(dir=LOGDIR)
    cert, key, ca = make_test_ca(d1)
    _, _, other_ca = make_test_ca(d2)
    token_file = os.path.join(d1, "token")
    open(token_file, "w").write("right")
    k = KubeAPI(tls=(cert, key, ca), token="right")
    a = Activator(k, wait=False, **in_cluster_env(k, other_ca, token_file))
    time.sleep(1.0)
    ok(a.p.poll() is None, "keeps running")
    try:
        socket.create_connection(("127.0.0.1", a.port), 0.3).close()
        ok(False, "must not serve before its caches sync")
    except OSError:
        pass
    ok("handshake failed" in a.output(), "says why: " + a.output()[-500:])
    bad = os.path.join(d1, "badtoken")
    open(bad, "w").write("wrong")
    b = Activator(k, wait=False, **in_cluster_env(k, ca, bad))
    time.sleep(1.0)
    ok("status 401" in b.output(), "logs the 401: " + b.output()[-500:])


if __name__ == "__main__":
    import sys
    p, f = run_all(sys.argv[1] if len(sys.argv) > 1 else None)
    sys.exit(1 if f else 0)

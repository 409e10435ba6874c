"""The images, run as Kubernetes runs them (tests/images/run.sh builds them first).

Each test makes a podman pod: a network namespace of its own with only
loopback in it (`--network none`), which its containers share as a
Kubernetes pod's containers do. The test process enters that namespace
(setns) for the test's length, so its clients, and the test doubles it starts
as host processes, reach the containers on 127.0.0.1 at Knative's real ports
(8012, 8022, 9090...), and no traffic leaves loopback. Every container runs
as Knative's pod spec runs it: read-only root filesystem, numeric non-root
user, every capability dropped.

Env (set by run.sh): PODMAN (the podman command with its storage flags),
QP_IMAGE, ACTIVATOR_IMAGE, COFFEE_IMAGE, IMAGES_GRACE_SECONDS."""
import ctypes, json, os, shlex, subprocess, sys, threading, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scenario"))
from harness import (KubeAPI, Autoscaler, Pod, eq, get, knative_env, make_test_ca, ok,  # noqa: E402
                     run_all, test, wait_port)

PODMAN = shlex.split(os.environ.get("PODMAN", "podman"))
QP_IMAGE = os.environ.get("QP_IMAGE", "localhost/coldbrew-queue-proxy:test")
ACTIVATOR_IMAGE = os.environ.get("ACTIVATOR_IMAGE", "localhost/coldbrew-activator:test")
COFFEE_IMAGE = os.environ.get("COFFEE_IMAGE", "localhost/coldbrew-coffee:test")
# terminationGracePeriodSeconds: podman stop's SIGKILL comes after this.
GRACE = int(os.environ.get("IMAGES_GRACE_SECONDS", "20"))
# What Knative's pod spec sets on the queue-proxy (and the activator's) container.
LOCKED = ["--read-only", "--user", "65532:65532", "--cap-drop", "ALL"]
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def podman(*args, timeout=60, check=True):
    r = subprocess.run(PODMAN + list(args), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError("podman %s: exit %d\n%s" % (" ".join(args), r.returncode, r.stderr[-2000:]))
    return r.stdout.strip()


def setns(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns %s" % path)
    finally:
        os.close(fd)


def wait_for(cond, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))


def try_get(port, path="/", headers=None, timeout=2):
    try:
        return get(port, path, headers, timeout=timeout)
    except OSError:
        return None


class PodmanPod:
    """A pod with its own loopback-only network namespace; `with` enters it
    and, on the way out, leaves it and removes the pod and its containers."""

    def __init__(self, name):
        self.name = name
        podman("pod", "rm", "-f", "--ignore", name)
        podman("pod", "create", "--name", name, "--network", "none")
        podman("pod", "start", name)
        infra = podman("pod", "inspect", name, "--format", "{{.InfraContainerID}}")
        pid = podman("inspect", "--format", "{{.State.Pid}}", infra)
        self.netns = "/proc/%s/ns/net" % pid

    def __enter__(self):
        self.home = os.open("/proc/self/ns/net", os.O_RDONLY)
        setns(self.netns)
        return self

    def run(self, name, image, env, extra=()):
        args = ["run", "-d", "--pod", self.name, "--name", "%s-%s" % (self.name, name)] + LOCKED
        args += ["--stop-timeout", str(GRACE)] + list(extra)
        for k, v in env.items():
            args += ["-e", "%s=%s" % (k, v)]
        podman(*args, image)
        name = "%s-%s" % (self.name, name)
        # What the kernel says of the running process, not what podman was asked.
        pid = podman("inspect", "--format", "{{.State.Pid}}", name)
        status = dict(line.split(":", 1) for line in open("/proc/%s/status" % pid).read().splitlines())
        eq(status["Uid"].split()[:2], ["65532", "65532"], "%s: uid" % name)
        eq(status["CapEff"].strip(), "0000000000000000", "%s: no capabilities" % name)
        mounts = open("/proc/%s/mounts" % pid).read().splitlines()
        root = [m.split()[3].split(",") for m in mounts if m.split()[1] == "/"][-1]
        ok("ro" in root, "%s: read-only root filesystem (%s)" % (name, root))
        return name

    def __exit__(self, *exc):
        if exc[0] is not None:
            for c in podman("ps", "-a", "--filter", "pod=" + self.name, "--format", "{{.Names}}",
                            check=False).split():
                print("---- podman logs %s (last 40 lines)" % c)
                r = subprocess.run(PODMAN + ["logs", "--tail", "40", c], capture_output=True, text=True, timeout=30)
                print(r.stdout + r.stderr)
        if _libc.setns(self.home, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns back")
        os.close(self.home)
        podman("pod", "rm", "-f", "-t", "0", self.name, timeout=120, check=False)


def stop_and_check(container, during=None):
    """podman stop (SIGTERM, SIGKILL after GRACE): `during` runs while it
    drains; the container must exit 0 by itself, before the grace period."""
    t0 = time.time()
    stopper = subprocess.Popen(PODMAN + ["stop", "-t", str(GRACE), container],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if during:
            during()
        stopper.wait(GRACE + 30)
    finally:
        if stopper.poll() is None:
            stopper.kill()
            stopper.wait(5)
    took = time.time() - t0
    code = podman("inspect", "--format", "{{.State.ExitCode}}", container)
    print("    %s: SIGTERM to exit %s in %.1f s (grace %d s)" % (container, code, took, GRACE))
    eq(code, "0", "%s exit code after SIGTERM" % container)
    ok(took < GRACE, "%s exited by itself within the grace period (%.1f s)" % (container, took))


KUBELET = {"User-Agent": "kube-probe/1.30", "K-Network-Probe": "queue"}


@test
def image_queue_proxy_pod_serves_probes_and_drains():
    with PodmanPod("cb-images-qp") as pod:
        pod.run("user", COFFEE_IMAGE, {"PORT": "8080", "K_REVISION": "hello-00001"})
        env = knative_env(8080, 8012)
        env.update({
            # The readiness probe Knative hands the queue-proxy (the user
            # container's tcpSocket probe, rewritten to the user port).
            "SERVING_READINESS_PROBE": json.dumps({"tcpSocket": {"port": 8080, "host": "127.0.0.1"},
                                                   "successThreshold": 1}),
            "OBSERVABILITY_CONFIG": '{"requestMetrics":{"protocol":"prometheus"}}',
            "QUEUE_DRAIN_QUIET_SECONDS": "3",
        })
        qp = pod.run("queue-proxy", QP_IMAGE, env)
        wait_port(8012, timeout=15)
        # Kubelet's readiness probe of the queue-proxy container: 200 "queue"
        # once the user container answers its own (tcp) probe.
        st, _, body = wait_for(lambda: (lambda r: r if r and r[0] == 200 else None)(try_get(8012, "/", KUBELET)),
                               15, "kubelet probe 200")
        eq(body, b"queue", "kubelet probe body")
        st, r, body = get(8012, "/", {"Host": "hello.default.example.com"})
        eq(st, 200, "request through 8012")
        ok(body.startswith(b"coffee v1"), "answered by coffee: %r" % body)
        st, r, body = get(9090, "/metrics")
        eq((st, r.getheader("Content-Type")), (200, "application/protobuf"), "autoscaler Stat on 9090")
        st, _, body = get(9091, "/metrics")
        ok(st == 200 and b"hello-00001" in body, "Prometheus request metrics on 9091")
        logs = podman("logs", qp)
        ok('"logger":"queueproxy"' in logs, "zap-shaped logs on stdout: %s" % logs[:300])

        def during_drain():
            # Probes fail at once, traffic still flows through the quiet period.
            wait_for(lambda: (try_get(8012, "/", KUBELET) or (0,))[0] == 503, 3, "kubelet probe 503 while draining")
            st, _, body = get(8012, "/")
            ok(st == 200 and body.startswith(b"coffee"), "a request during the drain is served: %s %r" % (st, body))
        stop_and_check(qp, during_drain)


@test
def image_activator_holds_then_forwards_in_cluster():
    with PodmanPod("cb-images-act") as pod:
        # The in-cluster path: the API over TLS with the service account's
        # CA and token mounted where Kubernetes mounts them, found through
        # KUBERNETES_SERVICE_HOST/PORT as a pod finds it.
        sa = os.path.join(os.environ.get("IMAGES_TMP", "/tmp"), "serviceaccount")
        os.makedirs(sa, exist_ok=True)
        cert, key, ca = make_test_ca(sa)
        with open(os.path.join(sa, "token"), "w") as f:
            f.write("images-test-token")
        for n in os.listdir(sa):
            os.chmod(os.path.join(sa, n), 0o644)
        os.chmod(sa, 0o755)
        k = KubeAPI(tls=(cert, key, ca), token="images-test-token")
        k.revision("default", "hello-00001", cc=0)
        asc = Autoscaler()
        try:
            act = pod.run("activator", ACTIVATOR_IMAGE, {
                "POD_NAME": "activator-7d9c-x", "POD_IP": "127.0.0.1", "SYSTEM_NAMESPACE": "knative-serving",
                "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(k.port),
                "AUTOSCALER_URL": "ws://127.0.0.1:%d" % asc.port, "ACTIVATOR_DRAIN_SECONDS": "2",
            }, ["-v", "%s:/var/run/secrets/kubernetes.io/serviceaccount:ro" % sa])
            wait_port(8012, timeout=15)
            # Kubelet's readiness probe of the activator: 200 once the caches
            # synced (over TLS, with the token) and the autoscaler link is up.
            wait_for(lambda: (try_get(8012, "/", {"K-Kubelet-Probe": "activator", "User-Agent": "kube-probe/1.30"})
                              or (0,))[0] == 200, 15, "activator readiness 200")
            res = [None]

            def held():
                res[0] = (get(8012, "/coffee?x=1", {"Knative-Serving-Namespace": "default",
                                                    "Knative-Serving-Revision": "hello-00001",
                                                    "Host": "hello.default.example.com"}, timeout=30), time.time())
            th = threading.Thread(target=held)
            th.start()
            time.sleep(1.0)
            ok(res[0] is None, "held while the revision has no ready pod")
            rev_pod = Pod()  # a real coldbrew queue-proxy and origin, host processes in this pod's network
            published = time.time()
            k.private_endpoints("default", "hello-00001", ready=[rev_pod.addr])
            th.join(15)
            ok(res[0] is not None, "answered after the pod appeared")
            (st, r, body), done = res[0]
            eq(st, 200, "forwarded once the pod is ready")
            j = json.loads(body)
            eq(j["target"], "/coffee?x=1", "target reached the origin")
            h = {kk.lower(): v for kk, v in j["headers"]}
            eq(h.get("k-proxy-request"), "activator", "through the activator")
            print("    held request answered %.0f ms after the pod was published" % ((done - published) * 1000))
            stop_and_check(act)
        finally:
            asc.stop()


if __name__ == "__main__":
    passed, failed = run_all(sys.argv[1] if len(sys.argv) > 1 else None)
    sys.exit(1 if failed or not passed else 0)

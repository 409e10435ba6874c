"""Scenario-test harness: real binaries, real clients, real sockets on loopback.

Every process a test starts is tracked by pid and stopped by pid (never by
name); every wait is bounded. Tests are plain functions registered with
@test; run_all() runs them and prints "N passed, N failed"."""
import http.client, json, os, signal, socket, subprocess, sys, tempfile, time, traceback

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("BUILD", "build")
BIN = os.path.join(ROOT, BUILD, "bin")
HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"
LOGDIR = tempfile.mkdtemp(prefix="coldbrew-scenario-")

_tests = []
_procs = []

from certs import make_test_ca  # noqa: E402,F401  (re-exported: tests import it from here)

# Children inherit this: the held-requests test needs 10,000+ descriptors.
import resource  # noqa: E402

_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))


def test(fn):
    _tests.append(fn)
    return fn


_rng = __import__("random").Random(os.getpid())
_given = set()


def free_port():
    """A free port below the kernel's ephemeral range (32768+), so the many
    outgoing connections of a test cannot take it between here and bind."""
    for _ in range(1000):
        p = _rng.randrange(20000, 32768)
        if p in _given:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            s.close()
        _given.add(p)
        return p
    raise AssertionError("no free port")


def wait_port(port, timeout=5.0, proc=None):
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise AssertionError("process exited early with %s" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise AssertionError("port %d did not open" % port)


class Proc:
    def __init__(self, name, argv, env=None):
        self.name = name
        self.log_path = os.path.join(LOGDIR, "%s-%d.log" % (name, len(_procs)))
        self.log = open(self.log_path, "wb")
        full = dict(os.environ)
        full.update(env or {})
        self.p = subprocess.Popen(argv, env=full, stdout=self.log, stderr=subprocess.STDOUT)
        _procs.append(self)

    def output(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def signal(self, sig):
        if self.p.poll() is None:
            self.p.send_signal(sig)

    def wait(self, timeout):
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=5.0):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            if self.wait(timeout) is None:
                self.p.kill()
                self.p.wait(5)
        if not self.log.closed:
            self.log.close()
        return self.p.returncode


class Origin(Proc):
    def __init__(self):
        self.port = free_port()
        super().__init__("origin", [PY, os.path.join(HERE, "origin.py"), str(self.port)])
        wait_port(self.port, proc=self.p)

    def stats(self):
        return json.loads(get(self.port, "/stats")[2])


def knative_env(user_port, serving_port, **extra):
    """The env Knative's revision reconciler gives the queue-proxy container."""
    env = {
        "SERVING_NAMESPACE": "default", "SERVING_SERVICE": "hello",
        "SERVING_CONFIGURATION": "hello", "SERVING_REVISION": "hello-00001",
        "SERVING_POD": "hello-00001-deployment-abc", "SERVING_POD_IP": "127.0.0.1",
        "QUEUE_SERVING_PORT": str(serving_port), "QUEUE_SERVING_TLS_PORT": "8112",
        "USER_PORT": str(user_port), "CONTAINER_CONCURRENCY": "0",
        "REVISION_TIMEOUT_SECONDS": "300", "SERVING_LOGGING_CONFIG": "",
        "SERVING_LOGGING_LEVEL": "info",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


class QueueProxy(Proc):
    """coldbrew's queue-proxy with Knative's env contract on free ports."""

    def __init__(self, user_port, **overrides):
        self.port = free_port()
        self.admin = free_port()
        self.stat = free_port()
        self.prom = free_port()
        env = knative_env(user_port, self.port)
        env.update({
            "QUEUE_ADMIN_PORT": str(self.admin),
            "QUEUE_METRICS_PORT": str(self.stat), "METRICS_PROMETHEUS_PORT": str(self.prom),
            "COLDBREW_LISTEN_HOST": "127.0.0.1",
            "OBSERVABILITY_CONFIG": '{"requestMetrics":{"protocol":"prometheus"}}',
            # A short drain so that stop() ends in a clean exit: under the
            # sanitizers that is when LeakSanitizer runs.
            "QUEUE_DRAIN_QUIET_SECONDS": "0.2",
        })
        for k, v in overrides.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        super().__init__("queue-proxy", [os.path.join(BIN, "queue-proxy")], env)
        wait_port(self.port, proc=self.p)
        wait_port(self.admin, proc=self.p)


def conn(port, timeout=10):
    return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)


def get(port, path="/", headers=None, method="GET", body=None, timeout=10):
    c = conn(port, timeout)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, r, data


def raw(port, data, timeout=3.0, wait_close=True):
    """Send raw bytes; return everything received until close or timeout."""
    s = socket.create_connection(("127.0.0.1", port), timeout)
    s.sendall(data)
    out = b""
    end = time.time() + timeout
    s.settimeout(0.2)
    while time.time() < end:
        try:
            b = s.recv(65536)
        except socket.timeout:
            if not wait_close and out:
                break
            continue
        except ConnectionResetError:
            break
        if not b:
            break
        out += b
    s.close()
    return out


def curl(*args, timeout=60):
    r = subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr.decode(errors="replace")


def eq(a, b, what=""):
    if a != b:
        raise AssertionError("%s: expected %r, got %r" % (what, b, a))


def ok(cond, what):
    if not cond:
        raise AssertionError(what)


def decode_stat(b):
    """Decode the autoscaler Stat protobuf by hand, field by field."""
    i, out = 0, {}
    names = {1: "pod_name", 2: "average_concurrent_requests", 3: "average_proxied_concurrent_requests",
             4: "request_count", 5: "proxied_request_count", 6: "process_uptime", 7: "timestamp"}
    import struct
    order = []
    while i < len(b):
        tag = b[i]; i += 1
        field, wt = tag >> 3, tag & 7
        order.append(field)
        if wt == 2:
            n = b[i]; i += 1
            out[names[field]] = b[i:i + n].decode(); i += n
        elif wt == 1:
            out[names[field]] = struct.unpack("<d", b[i:i + 8])[0]; i += 8
        elif wt == 0:
            v, shift = 0, 0
            while True:
                c = b[i]; i += 1
                v |= (c & 0x7F) << shift; shift += 7
                if not c & 0x80:
                    break
            out[names[field]] = v
        else:
            raise AssertionError("bad wire type %d" % wt)
    out["_order"] = order
    return out


def run_all(only=None):
    passed = failed = 0
    for fn in _tests:
        if only and only not in fn.__name__:
            continue
        t0 = time.time()
        try:
            fn()
            for p in list(_procs):
                p.stop()
            reports = [(p.name, p.output()) for p in _procs if any(m in p.output() for m in SANITIZER_MARKS)]
            if reports:
                raise AssertionError("sanitizer report in %s:\n%s" % (reports[0][0], reports[0][1][-4000:]))
            passed += 1
            print("PASS %-50s %.2fs" % (fn.__name__, time.time() - t0), flush=True)
        except Exception:
            failed += 1
            print("FAIL %-50s %.2fs" % (fn.__name__, time.time() - t0), flush=True)
            traceback.print_exc()
        finally:
            for p in list(_procs):
                p.stop()
            _procs[:] = []
    print("scenario: %d passed, %d failed (logs in %s)" % (passed, failed, LOGDIR))
    return passed, failed


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")
SANITIZE = os.environ.get("SANITIZE") == "1"


# ---------------------------------------------------------------- activator

class KubeAPI(Proc):
    """The Kubernetes API test double (kube_api.py): list/watch in Kubernetes' JSON shapes."""

    def __init__(self, page=2, tls=None, token=None):
        self.port = free_port()
        self.tls = tls
        argv = [PY, os.path.join(HERE, "kube_api.py"), str(self.port), str(page)]
        if tls:
            argv += ["--tls", tls[0], tls[1]]
        if token:
            argv += ["--token", token]
        self.token = token
        super().__init__("kube-api", argv, {})
        wait_port(self.port, proc=self.p)

    def post(self, what, body=None):
        if self.tls:
            import http.client, ssl
            ctx = ssl.create_default_context(cafile=self.tls[2])
            c = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=10)
            c.request("POST", "/_test/" + what, body=json.dumps(body or {}))
            r = c.getresponse()
            st, data = r.status, r.read()
            c.close()
        else:
            st, _, data = get(self.port, "/_test/" + what, method="POST", body=json.dumps(body or {}),
                              headers={"Content-Type": "application/json"})
        ok(st == 200, "kube api %s: %s" % (what, data))
        return json.loads(data)

    def apply(self, kind, obj):
        return self.post("apply", {"kind": kind, "object": obj})

    def delete(self, kind, ns, name):
        return self.post("delete", {"kind": kind, "namespace": ns, "name": name})

    def revision(self, ns, name, cc=0, timeout=300, **spec):
        s = {"containerConcurrency": cc, "timeoutSeconds": timeout,
             "containers": [{"image": "coffee", "ports": [{"containerPort": 8080}]}]}
        s.update(spec)
        return self.apply("Revision", {"apiVersion": "serving.knative.dev/v1", "kind": "Revision",
                                       "metadata": {"namespace": ns, "name": name,
                                                    "labels": {"serving.knative.dev/service": name.rsplit("-", 1)[0]}},
                                       "spec": s})

    def private_endpoints(self, ns, rev, ready=(), not_ready=(), port_name="http"):
        """ready/not_ready: lists of (ip, port); one subset per pod so ports may differ.
        port_name: "http", or "http2" for an h2c revision (Knative's names)."""
        subsets = [{"addresses": [{"ip": ip}], "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]}
                   for ip, port in ready]
        subsets += [{"notReadyAddresses": [{"ip": ip}], "ports": [{"name": port_name, "port": port}]}
                    for ip, port in not_ready]
        return self.apply("Endpoints", {"apiVersion": "v1", "kind": "Endpoints",
                                        "metadata": {"namespace": ns, "name": rev + "-private", "labels": {
                                            "serving.knative.dev/revision": rev,
                                            "serving.knative.dev/revisionUID": "uid-" + rev,
                                            "networking.internal.knative.dev/serviceType": "Private"}},
                                        "subsets": subsets})

    def private_service(self, ns, rev, cluster_ip, port):
        """The revision's private Service; `port` is its http port (80 in a cluster)."""
        return self.apply("Service", {"apiVersion": "v1", "kind": "Service",
                                      "metadata": {"namespace": ns, "name": rev + "-private", "labels": {
                                          "serving.knative.dev/revision": rev,
                                          "networking.internal.knative.dev/serviceType": "Private"}},
                                      "spec": {"clusterIP": cluster_ip, "ports": [
                                          {"name": "http", "port": port, "targetPort": 8012},
                                          {"name": "http-autometric", "port": 9090, "targetPort": 9090}]}})

    def public_endpoints(self, ns, rev, ips, port=8012):
        return self.apply("Endpoints", {"apiVersion": "v1", "kind": "Endpoints",
                                        "metadata": {"namespace": ns, "name": rev, "labels": {
                                            "serving.knative.dev/revision": rev,
                                            "networking.internal.knative.dev/serviceType": "Public"}},
                                        "subsets": [{"addresses": [{"ip": ip} for ip in ips],
                                                     "ports": [{"name": "http", "port": port}]}]})


class Activator(Proc):
    """coldbrew's activator with Knative's env, pointed at the API double."""

    def __init__(self, kube, wait=True, **overrides):
        self.port = free_port()
        self.h2c = free_port()
        self.metrics = free_port()
        env = {"POD_NAME": "activator-test-0", "POD_IP": "127.0.0.1", "SYSTEM_NAMESPACE": "knative-serving",
               "CLUSTER_DOMAIN": "cluster.local", "KUBE_API_URL": "http://127.0.0.1:%d" % kube.port,
               "KUBE_TOKEN_FILE": "/nonexistent", "ACTIVATOR_HTTP_PORT": str(self.port),
               "ACTIVATOR_H2C_PORT": str(self.h2c), "METRICS_PROMETHEUS_PORT": str(self.metrics),
               "AUTOSCALER_URL": "ws://127.0.0.1:1", "COLDBREW_LISTEN_HOST": "127.0.0.1",
               "ACTIVATOR_DRAIN_SECONDS": "0.2"}
        for k, v in overrides.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        super().__init__("activator", [os.path.join(BIN, "activator")], env)
        if wait:
            wait_port(self.port, proc=self.p)


class Pod:
    """A revision pod: a real origin behind a real coldbrew queue-proxy."""

    def __init__(self, **qp_env):
        self.origin = Origin()
        self.qp = QueueProxy(self.origin.port, **qp_env)
        self.addr = ("127.0.0.1", self.qp.port)


def pb_read_varint(b, i):
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return v, i


def pb_fields(b):
    """(field number, wire type, value) for each field of a protobuf message."""
    import struct
    i = 0
    while i < len(b):
        tag, i = pb_read_varint(b, i)
        f, wt = tag >> 3, tag & 7
        if wt == 0:
            v, i = pb_read_varint(b, i)
        elif wt == 1:
            v = struct.unpack("<d", b[i:i + 8])[0]
            i += 8
        elif wt == 2:
            n, i = pb_read_varint(b, i)
            v = b[i:i + n]
            i += n
        else:
            raise AssertionError("wire type %d" % wt)
        yield f, wt, v


def decode_wire_stats(b):
    """WireStatMessages -> [{"namespace", "name", "stat": {...}}] (Knative's stat.proto)."""
    names = {1: "pod_name", 2: "average_concurrent_requests", 3: "average_proxied_concurrent_requests",
             4: "request_count", 5: "proxied_request_count", 6: "process_uptime", 7: "timestamp"}
    out = []
    for f, _, m in pb_fields(b):
        assert f == 1
        msg = {}
        for g, _, v in pb_fields(m):
            if g == 1:
                msg["namespace"] = v.decode()
            elif g == 2:
                msg["name"] = v.decode()
            elif g == 3:
                msg["stat"] = {names[h]: (w.decode() if h == 1 else w) for h, _, w in pb_fields(v)}
        out.append(msg)
    return out


class Autoscaler:
    """The autoscaler's stat server test double: accepts the activator's
    WebSocket (any path) and decodes each binary frame as WireStatMessages."""

    def __init__(self, port=None):
        import asyncio
        import websockets
        self.port = port or free_port()
        self.batches = []  # (time, raw bytes, decoded)
        self.connections = 0
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()

        async def handler(ws, path=None):
            self.connections += 1
            try:
                async for msg in ws:
                    if isinstance(msg, bytes):
                        self.batches.append((time.time(), msg, decode_wire_stats(msg)))
            except websockets.exceptions.ConnectionClosed:
                pass  # a peer that vanishes is part of what we test

        async def main():
            self.stop_future = self.loop.create_future()
            async with websockets.serve(handler, "127.0.0.1", self.port):
                self.ready.set()
                await self.stop_future

        self.thread = threading.Thread(target=lambda: self.loop.run_until_complete(main()), daemon=True)
        self.thread.start()
        self.ready.wait(5)

    def messages(self):
        return [(t, m) for t, _, ms in self.batches for m in ms]

    def stop(self):
        self.loop.call_soon_threadsafe(lambda: self.stop_future.done() or self.stop_future.set_result(None))
        self.thread.join(5)


import threading  # noqa: E402  (used by Autoscaler)


# ---------------------------------------------------------------- the local platform

def wait_for(cond, timeout=10.0, what="condition", step=0.02):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("timed out waiting for " + what)


class Platform(Proc):
    """`coldbrew run` on its own ports and home directory."""

    def __init__(self, *docs, files=None, expect_ready=True, **env):
        self.home = tempfile.mkdtemp(prefix="home-", dir=LOGDIR)
        self.port = free_port()
        self.api_port = free_port()
        self.files = files or []
        for i, d in enumerate(docs):
            path = os.path.join(self.home, "svc%d.yaml" % i)
            with open(path, "w") as f:
                f.write(d)
            self.files.append(path)
        self.env = {"COLDBREW_PORT": str(self.port), "COLDBREW_API_PORT": str(self.api_port),
                    "COLDBREW_HOME": self.home, "COLDBREW_SCALE_TO_ZERO_GRACE_SECONDS": "1",
                    "COLDBREW_POD_DRAIN_SECONDS": "0.3"}
        self.env.update({k: str(v) for k, v in env.items()})
        super().__init__("coldbrew", [os.path.join(BIN, "coldbrew"), "run", *self.files], self.env)
        if expect_ready:
            wait_for(lambda: "ready at" in self.output() or self.p.poll() is not None, 20,
                     "coldbrew run to say ready")
            ok(self.p.poll() is None, "coldbrew run exited: " + self.output())

    def stop(self, timeout=30.0):
        """Stops the platform; a sanitizer report in any of its children's logs
        (activator, queue-proxies, user processes) is copied into this
        process's output, where run_all looks for them."""
        rc = super().stop(timeout)
        for d, _, names in os.walk(self.home):
            for n in names:
                if n.endswith(".log"):
                    text = open(os.path.join(d, n), errors="replace").read()
                    if any(m in text for m in SANITIZER_MARKS):
                        with open(self.log_path, "a") as f:
                            f.write("\n[%s]\n%s" % (n, text[-4000:]))
        return rc

    def cli(self, *args, timeout=30):
        env = dict(os.environ)
        env.update(self.env)
        r = subprocess.run([os.path.join(BIN, "coldbrew"), *args], env=env, capture_output=True,
                           timeout=timeout)
        return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")

    def status(self):
        rc, out, err = self.cli("status", "--json")
        eq(rc, 0, "status exit code (%s)" % err)
        return json.loads(out)

    def revision(self, name):
        for s in self.status()["services"]:
            for r in s["revisions"]:
                if r["name"] == name:
                    return r
        return None

    def pods(self, rev, phase=None, reserved=None):
        r = self.revision(rev)
        return [p for p in (r["pods"] if r else [])
                if (phase is None or p["phase"] == phase) and (reserved is None or p["reserved"] == reserved)]

    def get(self, host, path="/", timeout=10):
        return get(self.port, path, {"Host": host}, timeout=timeout)

    def descendants(self):
        """Every live process below coldbrew, from /proc (for the orphan check)."""
        kids = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open("/proc/%s/stat" % d) as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                    kids.setdefault(ppid, []).append(int(d))
                except (OSError, IndexError, ValueError):
                    pass
        out, todo = [], [self.p.pid]
        while todo:
            for c in kids.get(todo.pop(), []):
                out.append(c)
                todo.append(c)
        return out

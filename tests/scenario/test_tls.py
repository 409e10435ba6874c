"""Scenario tests for internal TLS (Knative's system-internal-tls): the
queue-proxy's 8112, the activator's 8112 and activator -> pod over TLS,
between real peers (openssl s_client, curl --cacert, h2load, wrk, Python's
ssl) on loopback. The contract: knative-queue-proxy.md §2 and §6,
knative-activator.md §1.1, §3.8 and §6.2.

Certificates are made here with python3-cryptography (an expired one needs
a notAfter in the past, which the openssl CLI of Debian 12 cannot set)."""
import datetime, os, shutil, socket, ssl, subprocess, tempfile, threading, time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from harness import *

NS = "default"
DATA_PLANE = "data-plane.knative.dev"


# ---------------------------------------------------------------- certificates

def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(k):
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())


class CA:
    def __init__(self, cn="coldbrew-test-ca"):
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.utcnow()
        self.cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))

    def pem(self):
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def leaf(self, sans=(DATA_PLANE, "kn-user-" + NS), days=30, expired=False, cn="queue-proxy"):
        """(cert PEM, key PEM) for a serving certificate with DNS SANs."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.utcnow()
        nb, na = now - datetime.timedelta(days=1), now + datetime.timedelta(days=days)
        if expired:
            nb, na = now - datetime.timedelta(days=10), now - datetime.timedelta(days=1)
        cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self.cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(nb).not_valid_after(na)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
                .sign(self.key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def write_certs(d, crt, key):
    """Atomic replace, as a Secret volume update is (a symlink swap)."""
    for name, data in (("tls.crt", crt), ("tls.key", key)):
        tmp = os.path.join(d, "." + name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, os.path.join(d, name))


class H2Origin(Proc):
    """An h2c user container (HTTP/2 in through TLS goes upstream as h2c: protocol mirroring)."""

    def __init__(self):
        self.port = free_port()
        super().__init__("h2-origin", [PY, os.path.join(HERE, "h2_origin.py"), str(self.port)])
        wait_port(self.port, proc=self.p)


class TlsPod:
    def __init__(self, origin, **env):
        self.origin = origin
        self.qp = QueueProxy(origin.port, **env)
        self.addr = ("127.0.0.1", self.qp.port)


def tls_pod(ca, sans=(DATA_PLANE, "kn-user-" + NS), expired=False, h2=False, **env):
    """A pod whose queue-proxy serves TLS with a certificate from `ca`;
    its user container speaks HTTP/1.1, or h2c with h2=True."""
    d = tempfile.mkdtemp(prefix="coldbrew-tls-")
    crt, key = ca.leaf(sans=sans, expired=expired)
    write_certs(d, crt, key)
    tls_port = free_port()
    env.setdefault("QUEUE_SERVING_TLS_PORT", tls_port)
    env.setdefault("COLDBREW_CERTS_DIR", d)
    pod = TlsPod(H2Origin() if h2 else Origin(), **env)
    pod.tls_port = tls_port
    pod.certs = d
    wait_port(tls_port, proc=pod.qp.p)
    return pod


def ca_file(ca):
    f = tempfile.NamedTemporaryFile(prefix="coldbrew-ca-", suffix=".crt", delete=False)
    f.write(ca.pem())
    f.close()
    return f.name


def client_ctx(cafile, alpn=("http/1.1",)):
    c = ssl.create_default_context(cafile=cafile)
    c.minimum_version = ssl.TLSVersion.TLSv1_3
    c.set_alpn_protocols(list(alpn))
    return c


def tls_get(port, cafile, path="/", alpn=("http/1.1",)):
    """GET over TLS with Python's ssl: (status, body, peer certificate DER)."""
    s = socket.create_connection(("127.0.0.1", port), 5)
    t = client_ctx(cafile, alpn).wrap_socket(s, server_hostname=DATA_PLANE)
    der = t.getpeercert(binary_form=True)
    t.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
    out = b""
    t.settimeout(5)
    while True:
        b = t.recv(65536)
        if not b:
            break
        out += b
    t.close()
    head, _, body = out.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body, der


def s_client(port, *args, data=b"", timeout=10):
    r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-servername", DATA_PLANE,
                        *args], input=data, capture_output=True, timeout=timeout)
    return r.returncode, r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")


def wait_log(proc, text, timeout=5.0):
    wait_for(lambda: text in proc.output(), timeout, "log line %r" % text)


# ---------------------------------------------------------------- queue-proxy

@test
def qp_tls_curl_http1_and_h2():
    ca = CA()
    caf = ca_file(ca)
    for flag, ver in (("--http1.1", "1.1"), ("--http2", "2")):
        pod = tls_pod(ca, h2=ver == "2")
        url = "https://%s:%d/hello" % (DATA_PLANE, pod.tls_port)
        res = "%s:%d:127.0.0.1" % (DATA_PLANE, pod.tls_port)
        rc, out, err = curl("--cacert", caf, "--resolve", res, flag, "-w", "\n%{http_code} %{http_version}", url)
        eq(rc, 0, "curl %s: %s" % (flag, err))
        eq(out.decode().rsplit("\n", 1)[1], "200 " + ver, "status and protocol over TLS")
        if ver == "1.1":
            # The plain port stays up beside it, and the admin port is plain HTTP.
            eq(get(pod.qp.port, "/hello")[0], 200, "plain serving port")
            ok(get(pod.qp.admin, "/")[0] in (200, 404), "admin port speaks plain HTTP")


@test
def qp_tls_s_client_tls13_alpn():
    ca = CA()
    pod = tls_pod(ca)
    caf = ca_file(ca)
    rc, out = s_client(pod.tls_port, "-CAfile", caf, "-alpn", "h2,http/1.1", "-verify_return_error")
    ok("TLSv1.3" in out, "TLS 1.3 negotiated:\n" + out[-2000:])
    ok("ALPN protocol: h2" in out, "h2 chosen by ALPN:\n" + out[-2000:])
    ok("Verify return code: 0 (ok)" in out, "the chain verifies against the CA")
    rc, out = s_client(pod.tls_port, "-CAfile", caf, "-alpn", "http/1.1", "-quiet", "-ign_eof",
                       data=b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    ok("HTTP/1.1 200" in out, "a request through s_client:\n" + out[-2000:])


@test
def qp_tls12_only_client_refused():
    ca = CA()
    pod = tls_pod(ca)
    rc, out = s_client(pod.tls_port, "-tls1_2")
    ok(rc != 0 and "TLSv1.3" not in out.split("---")[-1], "a TLS 1.2-only client gets no session:\n" + out[-1500:])
    wait_log(pod.qp, "TLS handshake from 127.0.0.1")
    ok("TLS version refused" in pod.qp.output(), "the refusal says why:\n" + pod.qp.output()[-1500:])
    eq(tls_get(pod.tls_port, ca_file(ca), "/hello")[0], 200, "the TLS port still serves")


@test
def qp_tls_plaintext_refused():
    ca = CA()
    pod = tls_pod(ca)
    out = raw(pod.tls_port, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    ok(out.startswith(b"HTTP/1.0 400 Bad Request"), "plain HTTP gets a 400: %r" % out)
    ok(b"Client sent an HTTP request to an HTTPS server." in out, "Go's text: %r" % out)
    wait_log(pod.qp, "plaintext HTTP from 127.0.0.1")
    eq(tls_get(pod.tls_port, ca_file(ca), "/hello")[0], 200, "the TLS port still serves")


@test
def qp_tls_handshake_timeout():
    ca = CA()
    pod = tls_pod(ca, COLDBREW_TLS_HANDSHAKE_TIMEOUT_SECONDS="0.5")
    s = socket.create_connection(("127.0.0.1", pod.tls_port), 5)
    s.sendall(b"\x16\x03\x01\x00\x80")  # a record header, then nothing
    t0 = time.time()
    s.settimeout(5)
    try:
        got = s.recv(100)
    except ConnectionResetError:
        got = b""
    took = time.time() - t0
    eq(got, b"", "the stalled handshake is cut")
    ok(0.3 < took < 3, "cut at the named timeout (%.2fs)" % took)
    wait_log(pod.qp, "COLDBREW_TLS_HANDSHAKE_TIMEOUT_SECONDS")
    eq(tls_get(pod.tls_port, ca_file(ca), "/hello")[0], 200, "the TLS port still serves")


@test
def qp_tls_client_vanishes_mid_handshake():
    ca = CA()
    pod = tls_pod(ca)
    caf = ca_file(ca)
    # Half a ClientHello, then a hang-up (a reset and a FIN alternately).
    for i in range(40):
        s = socket.create_connection(("127.0.0.1", pod.tls_port), 5)
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(20))
        if i % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    # A client that got the server's flight and then left.
    for i in range(10):
        s = socket.create_connection(("127.0.0.1", pod.tls_port), 5)
        inb, outb = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = client_ctx(caf).wrap_bio(inb, outb, server_hostname=DATA_PLANE)
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        s.sendall(outb.read())
        s.settimeout(2)
        s.recv(65536)
        s.close()
    eq(tls_get(pod.tls_port, caf, "/hello")[0], 200, "the TLS port still serves")
    # Nothing of those connections is left: LeakSanitizer checks the heap at
    # exit under SANITIZE=1, and the open descriptors are counted here.
    fds = lambda: len(os.listdir("/proc/%d/fd" % pod.qp.p.pid))
    wait_for(lambda: fds() < 20, 5, "descriptors released (%d open)" % fds())


@test
def qp_tls_reload_and_garbage():
    ca = CA()
    pod = tls_pod(ca, COLDBREW_TLS_RELOAD_INTERVAL="200ms")
    caf = ca_file(ca)
    st, _, der1 = tls_get(pod.tls_port, caf, "/hello")
    eq(st, 200, "first certificate")
    # A long-lived connection opened before the rotation.
    s = socket.create_connection(("127.0.0.1", pod.tls_port), 5)
    held = client_ctx(caf).wrap_socket(s, server_hostname=DATA_PLANE)
    crt, key = ca.leaf(cn="rotated")
    write_certs(pod.certs, crt, key)
    wait_for(lambda: tls_get(pod.tls_port, caf, "/hello")[2] != der1, 5, "the new certificate is served")
    held.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    held.settimeout(5)
    ok(held.recv(100).startswith(b"HTTP/1.1 200"), "a connection open before the rotation still works")
    held.close()
    der2 = tls_get(pod.tls_port, caf, "/hello")[2]
    # Garbage in place of the certificate: the old one keeps serving, and the log says so.
    write_certs(pod.certs, b"not a certificate\n", key)
    wait_log(pod.qp, "tls:", 3)
    time.sleep(0.6)
    st, _, der3 = tls_get(pod.tls_port, caf, "/hello")
    eq(st, 200, "still serving after garbage")
    eq(der3, der2, "with the previous certificate")
    ok("keep" in pod.qp.output().lower() or "kept" in pod.qp.output().lower(),
       "the refusal is logged:\n" + pod.qp.output()[-1500:])


@test
def qp_tls_h2load():
    ca = CA()
    pod = tls_pod(ca, h2=True)
    r = subprocess.run(["h2load", "-n", "400", "-c", "4", "-m", "4",
                        "https://127.0.0.1:%d/hello" % pod.tls_port], capture_output=True, timeout=60)
    out = r.stdout.decode()
    ok("400 succeeded, 0 failed" in out, "h2load over TLS:\n" + out[-1500:])
    ok("TLS Protocol: TLSv1.3" in out and "Application protocol: h2" in out, "TLS 1.3 and h2:\n" + out[:800])


@test
def qp_tls_rotation_under_wrk():
    ca = CA()
    pod = tls_pod(ca, COLDBREW_TLS_RELOAD_INTERVAL="100ms")
    done = {}

    def load():
        r = subprocess.run(["wrk", "-t1", "-c8", "-d3s", "https://127.0.0.1:%d/hello" % pod.tls_port],
                           capture_output=True, timeout=30)
        done["out"] = r.stdout.decode()

    th = threading.Thread(target=load)
    th.start()
    for i in range(5):
        time.sleep(0.4)
        crt, key = ca.leaf(cn="rot-%d" % i)
        write_certs(pod.certs, crt, key)
    th.join(40)
    out = done.get("out", "")
    ok("requests in" in out, "wrk ran:\n" + out)
    ok("Socket errors" not in out and "Non-2xx" not in out, "zero failed requests:\n" + out)


@test
def qp_no_certs_no_tls_listener():
    origin = Origin()
    tls_port = free_port()
    qp = QueueProxy(origin.port, QUEUE_SERVING_TLS_PORT=tls_port,
                    COLDBREW_CERTS_DIR=tempfile.mkdtemp(prefix="coldbrew-nocerts-"))
    eq(get(qp.port, "/hello")[0], 200, "plain serves")
    try:
        socket.create_connection(("127.0.0.1", tls_port), 0.5).close()
        ok(False, "nothing listens on the TLS port without certificates")
    except OSError:
        pass


@test
def qp_prometheus_over_tls():
    ca = CA()
    d = tempfile.mkdtemp(prefix="coldbrew-prom-")
    crt, key = ca.leaf(sans=("localhost",))
    write_certs(d, crt, key)
    origin = Origin()
    qp = QueueProxy(origin.port, METRICS_PROMETHEUS_TLS_CERT=os.path.join(d, "tls.crt"),
                    METRICS_PROMETHEUS_TLS_KEY=os.path.join(d, "tls.key"))
    rc, out, err = curl("--cacert", ca_file(ca), "--resolve", "localhost:%d:127.0.0.1" % qp.prom,
                        "https://localhost:%d/metrics" % qp.prom)
    eq(rc, 0, "curl over TLS to the Prometheus port: " + err)
    ok(b"# TYPE" in out, "metrics text")

# ---------------------------------------------------------------- activator

import base64, json  # noqa: E402


def b64(b):
    return base64.b64encode(b).decode()


def routing_secret(k, ca, pair=None):
    """The routing secret of knative-serving: ca.crt (trust), tls.crt/key (the activator's 8112)."""
    crt, key = pair or ca.leaf(sans=(DATA_PLANE, "localhost"), cn="activator")
    k.apply("Secret", {"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"namespace": "knative-serving", "name": "routing-serving-certs"},
                       "data": {"ca.crt": b64(ca.pem() if isinstance(ca, CA) else ca),
                                "tls.crt": b64(crt), "tls.key": b64(key)}})


def trust_bundle(k, name, pems):
    k.apply("ConfigMap", {"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"namespace": "knative-serving", "name": name,
                                       "labels": {"networking.knative.dev/trust-bundle": "true"}},
                          "data": {"ca%d.crt" % i: p.decode() for i, p in enumerate(pems)}})


def tls_endpoints(k, rev, pods, ns=NS):
    """Private Endpoints listing each pod's plain port (http, probed) and TLS port (https)."""
    subsets = [{"addresses": [{"ip": "127.0.0.1"}],
                "ports": [{"name": "http", "port": p.qp.port}, {"name": "https", "port": p.tls_port}]}
               for p in pods]
    k.apply("Endpoints", {"apiVersion": "v1", "kind": "Endpoints",
                          "metadata": {"namespace": ns, "name": rev + "-private", "labels": {
                              "serving.knative.dev/revision": rev,
                              "networking.internal.knative.dev/serviceType": "Private"}},
                          "subsets": subsets})


def act_metric(a, result):
    body = get(a.metrics, "/metrics")[2].decode()
    for line in body.splitlines():
        if line.startswith('coldbrew_activator_tls_handshakes_total{result="%s"}' % result):
            return int(line.split()[-1])
    return None


def rev_get(a, rev, path="/", port=None, timeout=10):
    return get(port or a.port, path, {"Knative-Serving-Namespace": NS, "Knative-Serving-Revision": rev},
               timeout=timeout)


class BadTlsServer:
    """A TLS server with a given certificate (even an expired one, which
    coldbrew's own server refuses to load) counting handshakes and bytes."""

    def __init__(self, crt, key):
        d = tempfile.mkdtemp(prefix="coldbrew-bad-")
        write_certs(d, crt, key)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(os.path.join(d, "tls.crt"), os.path.join(d, "tls.key"))
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.handshakes = self.app_bytes = 0
        self.stop = False
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        self.sock.settimeout(0.2)
        for _ in range(1000):
            if self.stop:
                return
            try:
                s, _ = self.sock.accept()
            except OSError:
                continue
            self.handshakes += 1
            try:
                s.settimeout(2)
                t = self.ctx.wrap_socket(s, server_side=True)
                while True:
                    b = t.recv(4096)
                    if not b:
                        break
                    self.app_bytes += len(b)
            except (OSError, ssl.SSLError):
                pass
            finally:
                s.close()

    def close(self):
        self.stop = True
        self.sock.close()


def tls_conns(port):
    out = subprocess.run(["ss", "-Htn", "state", "established", "( dport = :%d )" % port],
                         capture_output=True).stdout.decode()
    return len([l for l in out.splitlines() if l.strip()])


@test
def act_tls_scale_from_zero_to_tls_pod():
    ca = CA()
    k = KubeAPI()
    routing_secret(k, ca)
    k.revision(NS, "tls-00001", cc=0)
    https = free_port()
    a = Activator(k, COLDBREW_SYSTEM_INTERNAL_TLS="Enabled", ACTIVATOR_HTTPS_PORT=https)
    pod = tls_pod(ca)
    res = [None]
    th = threading.Thread(target=lambda: res.__setitem__(0, rev_get(a, "tls-00001", "/x")))
    th.start()
    time.sleep(0.4)
    ok(res[0] is None, "held while the revision has no pod")
    tls_endpoints(k, "tls-00001", [pod])
    th.join(10)
    eq(res[0][0], 200, "answered by the pod over TLS")
    eq(json.loads(res[0][2])["target"], "/x", "the request reached the user container")
    ok(tls_conns(pod.tls_port) >= 1, "the pooled connection is to the pod's TLS port")
    ok(act_metric(a, "full") >= 1, "a full TLS handshake was made")
    # The probes stayed plain HTTP on the http port: the queue-proxy answered them there.
    ok(tls_conns(pod.qp.port) >= 0, "plain port")
    # The activator's own 8112, with the routing secret's certificate: curl over TLS.
    wait_port(https, proc=a.p)
    rc, out, err = curl("--http1.1", "--cacert", ca_file(ca), "--resolve", "%s:%d:127.0.0.1" % (DATA_PLANE, https),
                        "-H", "Knative-Serving-Namespace: " + NS, "-H", "Knative-Serving-Revision: tls-00001",
                        "-w", "\n%{http_code}", "https://%s:%d/y" % (DATA_PLANE, https))
    eq(rc, 0, "curl to the activator's TLS port: " + err)
    eq(out.decode().rsplit("\n", 1)[1], "200", "served through the activator's TLS port")
    # Probes are plain HTTP on its 8012 as before.
    eq(get(a.port, "//healthz", {"K-Network-Probe": "activator"})[0], 200, "plain probe port")


@test
def act_tls_h2_end_to_end():
    """curl --http2 to the activator's 8112 -> h2 over TLS to the pod's 8112 -> h2c to the user container."""
    ca = CA()
    k = KubeAPI()
    routing_secret(k, ca)
    k.revision(NS, "h2tls-00001", cc=0)
    pod = tls_pod(ca, h2=True)
    tls_endpoints(k, "h2tls-00001", [pod])
    https = free_port()
    a = Activator(k, COLDBREW_SYSTEM_INTERNAL_TLS="enabled", ACTIVATOR_HTTPS_PORT=https)
    wait_port(https, proc=a.p)
    rc, out, err = curl("--http2", "--cacert", ca_file(ca), "--resolve", "%s:%d:127.0.0.1" % (DATA_PLANE, https),
                        "-H", "Knative-Serving-Namespace: " + NS, "-H", "Knative-Serving-Revision: h2tls-00001",
                        "-w", "\n%{http_code} %{http_version}", "https://%s:%d/z" % (DATA_PLANE, https))
    eq(rc, 0, "curl: " + err)
    body, tail = out.decode().rsplit("\n", 1)
    eq(tail, "200 2", "h2 over TLS to the activator")
    eq(json.loads(body)["protocol"], "HTTP/2.0", "HTTP/2 at the user container")
    ok(tls_conns(pod.tls_port) >= 1, "the activator reached the pod over TLS")
    ok(act_metric(a, "full") >= 1, "handshake counted")


@test
def act_tls_pooled_and_resumed():
    ca = CA()
    k = KubeAPI()
    routing_secret(k, ca)
    k.revision(NS, "res-00001", cc=0)
    pod = tls_pod(ca)
    tls_endpoints(k, "res-00001", [pod])
    a = Activator(k, COLDBREW_SYSTEM_INTERNAL_TLS="enabled", ACTIVATOR_HTTPS_PORT=free_port(),
                  COLDBREW_UPSTREAM_IDLE_SECONDS="0.3")
    wait_for(lambda: rev_get(a, "res-00001")[0] == 200, 5, "first request")
    for _ in range(20):
        eq(rev_get(a, "res-00001")[0], 200, "pooled")
    full = act_metric(a, "full")
    ok(full <= 2, "keep-alive connections are reused (%d full handshakes for 21 requests)" % full)
    time.sleep(0.8)  # the pooled connection idles out: the next connect resumes
    eq(rev_get(a, "res-00001")[0], 200, "after the idle timeout")
    ok(act_metric(a, "resumed") >= 1, "the TLS session was resumed")


@test
def act_tls_refuses_bad_pod_certificates():
    ca = CA()
    other = CA("untrusted-ca")
    k = KubeAPI()
    routing_secret(k, ca)
    a = Activator(k, COLDBREW_SYSTEM_INTERNAL_TLS="enabled", ACTIVATOR_HTTPS_PORT=free_port())
    cases = [("wrong-san", ca, dict(sans=(DATA_PLANE, "kn-user-other")), "lacks the SAN kn-user-"),
             ("expired", ca, dict(expired=True), "peer certificate expired"),
             ("untrusted", other, {}, "not signed by a trusted CA")]
    good = tls_pod(ca)
    for name, c, kw, why in cases:
        rev = "%s-00001" % name
        k.revision(NS, rev, cc=0)
        # The pod: a real queue-proxy for the (plain) probes, and on its TLS
        # port a TLS server with the bad certificate that records every byte
        # of application data it gets.
        pod = TlsPod(Origin())
        srv = BadTlsServer(*c.leaf(**kw))
        pod.tls_port = srv.port
        tls_endpoints(k, rev, [pod])
        wait_for(lambda: rev_get(a, rev)[0] != 503, 5, "the pod is probed healthy (plain)")
        st, _, body = rev_get(a, rev)
        eq(st, 502, "%s: refused" % name)
        ok(b"tls: handshake with" in body and why.encode() in body,
           "%s: the 502 says why: %r" % (name, body))
        wait_log(a, why)
        ok(srv.handshakes >= 1, "%s: the activator tried TLS" % name)
        eq(srv.app_bytes, 0, "%s: nothing was sent to the pod" % name)
        # (the origin counts the /stats request itself)
        eq(json.loads(get(pod.origin.port, "/stats")[2]).get("requests", 0), 1, "%s: nor its container" % name)
        srv.close()
    ok(act_metric(a, "refused") >= 3, "refusals counted")
    # Everything else keeps being served.
    k.revision(NS, "good-00001", cc=0)
    tls_endpoints(k, "good-00001", [good])
    wait_for(lambda: rev_get(a, "good-00001")[0] == 200, 5, "a good pod is served")


@test
def act_tls_rotation_of_pod_cert_and_ca_under_wrk():
    ca1, ca2 = CA("ca-one"), CA("ca-two")
    k = KubeAPI()
    routing_secret(k, ca1)
    k.revision(NS, "rot-00001", cc=0)
    pod = tls_pod(ca1, COLDBREW_TLS_RELOAD_INTERVAL="100ms")
    tls_endpoints(k, "rot-00001", [pod])
    a = Activator(k, COLDBREW_SYSTEM_INTERNAL_TLS="enabled", ACTIVATOR_HTTPS_PORT=free_port(),
                  COLDBREW_UPSTREAM_IDLE_SECONDS="0.2")
    wait_for(lambda: rev_get(a, "rot-00001")[0] == 200, 5, "served")
    done = {}
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    script.write('wrk.headers["Knative-Serving-Namespace"] = "%s"\n'
                 'wrk.headers["Knative-Serving-Revision"] = "rot-00001"\n'
                 # A new connection now and then: new handshakes during the rotation.
                 'wrk.headers["Connection"] = "close"\n' % NS)
    script.close()

    def load():
        r = subprocess.run(["wrk", "-t1", "-c4", "-d4s", "-s", script.name, "http://127.0.0.1:%d/" % a.port],
                           capture_output=True, timeout=30)
        done["out"] = r.stdout.decode()

    th = threading.Thread(target=load)
    th.start()
    time.sleep(0.5)
    trust_bundle(k, "extra-bundle", [ca2.pem()])          # 1. trust the new CA too
    wait_log(a, "trusting 2 CA certificates")
    crt, key = ca2.leaf()
    write_certs(pod.certs, crt, key)                      # 2. the pod's certificate from the new CA
    time.sleep(1.0)
    routing_secret(k, ca2)                                # 3. the secret's ca.crt becomes the new CA
    k.delete("ConfigMap", "knative-serving", "extra-bundle")
    wait_log(a, "trusting 1 CA certificates")
    th.join(40)
    out = done.get("out", "")
    ok("requests in" in out, "wrk ran:\n" + out)
    ok("Socket errors" not in out and "Non-2xx" not in out, "zero failed requests:\n" + out)
    time.sleep(0.5)  # the pooled connections idle out: the next request makes a new one
    full = act_metric(a, "full") + act_metric(a, "resumed")
    eq(rev_get(a, "rot-00001")[0], 200, "served with the new CA alone")
    ok(act_metric(a, "full") + act_metric(a, "resumed") > full, "over a new TLS connection")


@test
def act_tls_own_certificate_rotates_from_the_secret():
    ca = CA()
    k = KubeAPI()
    routing_secret(k, ca)
    https = free_port()
    a = Activator(k, COLDBREW_SYSTEM_INTERNAL_TLS="enabled", ACTIVATOR_HTTPS_PORT=https)
    wait_port(https, proc=a.p)
    caf = ca_file(ca)
    der1 = tls_get(https, caf)[2]
    routing_secret(k, ca, ca.leaf(sans=(DATA_PLANE,), cn="activator-2"))
    wait_for(lambda: tls_get(https, caf)[2] != der1, 5, "the rotated certificate is served")
    der2 = tls_get(https, caf)[2]
    # Garbage in the secret: the current certificate stays, and the log says why.
    k.apply("Secret", {"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"namespace": "knative-serving", "name": "routing-serving-certs"},
                       "data": {"ca.crt": b64(ca.pem()), "tls.crt": b64(b"garbage"), "tls.key": b64(b"junk")}})
    wait_log(a, "keeping the current certificate")
    eq(tls_get(https, caf)[2], der2, "still the previous certificate")


@test
def act_metrics_over_tls():
    ca = CA()
    d = tempfile.mkdtemp(prefix="coldbrew-actmetrics-")
    crt, key = ca.leaf(sans=("localhost",))
    write_certs(d, crt, key)
    k = KubeAPI()
    a = Activator(k, METRICS_PROMETHEUS_TLS_CERT=os.path.join(d, "tls.crt"),
                  METRICS_PROMETHEUS_TLS_KEY=os.path.join(d, "tls.key"))
    rc, out, err = curl("--cacert", ca_file(ca), "--resolve", "localhost:%d:127.0.0.1" % a.metrics,
                        "https://localhost:%d/metrics" % a.metrics)
    eq(rc, 0, "curl over TLS to the activator's metrics port: " + err)
    ok(b"# TYPE" in out, "metrics text")


@test
def act_tls_clusterip_fallback_uses_https_port():
    """mesh-compatibility-mode enabled: always the private Service, over TLS on its https port (443)."""
    ca = CA()
    k = KubeAPI()
    routing_secret(k, ca)
    k.revision(NS, "cip-00001", cc=0)
    pod = tls_pod(ca)
    k.apply("Service", {"apiVersion": "v1", "kind": "Service",
                        "metadata": {"namespace": NS, "name": "cip-00001-private", "labels": {
                            "serving.knative.dev/revision": "cip-00001",
                            "networking.internal.knative.dev/serviceType": "Private"}},
                        "spec": {"clusterIP": "127.0.0.1", "ports": [
                            {"name": "http", "port": pod.qp.port, "targetPort": 8012},
                            {"name": "https", "port": pod.tls_port, "targetPort": 8112}]}})
    tls_endpoints(k, "cip-00001", [pod])
    a = Activator(k, COLDBREW_SYSTEM_INTERNAL_TLS="enabled", ACTIVATOR_HTTPS_PORT=free_port(),
                  COLDBREW_MESH_COMPATIBILITY_MODE="enabled")
    wait_for(lambda: rev_get(a, "cip-00001")[0] == 200, 5, "served through the ClusterIP")
    ok(tls_conns(pod.tls_port) >= 1, "over TLS to the Service's https port")

# ---------------------------------------------------------------- local platform

def coffee_doc(name="tlscoffee"):
    return "\n".join([
        "apiVersion: serving.knative.dev/v1", "kind: Service", "metadata:", "  name: %s" % name,
        "  namespace: default", "spec:", "  template:", "    metadata:", "      annotations:",
        '        autoscaling.knative.dev/min-scale: "0"', "    spec:", "      containers:",
        "        - image: example/coffee", '          command: ["coffee"]', "          readinessProbe:",
        "            httpGet:", "              path: /healthz", ""])


def local_tls_check(pl, name):
    st, _, body = pl.get("%s.default.localhost" % name)
    eq(st, 200, "served through the activator -> pod over TLS: %r" % body)
    status = pl.status()
    eq(status.get("internal_tls", {}).get("enabled"), True, "status says internal TLS is on")
    rc, out, err = pl.cli("status", "--once")
    ok("INTERNAL TLS on" in out, "coldbrew status shows TLS:\n" + out)
    # The pod's queue-proxy serves the namespace's certificate from the local CA.
    ca = status["internal_tls"]["ca"]
    ok(os.path.exists(ca), "the local CA file exists")
    act_log = open(status["activator_log"]).read()
    ok("internal TLS on" in act_log and "trusting 1 CA certificates" in act_log, "the activator trusts the local CA")
    pods = pl.pods("%s-00001" % name, "Ready")
    ok(pods and pods[0]["tls_port"] > 0, "the pod has a TLS port: %r" % pods)
    ok(tls_conns(pods[0]["tls_port"]) >= 1, "the activator's pooled connection is to the pod's TLS port")
    rc, out = s_client(pods[0]["tls_port"], "-CAfile", ca, "-verify_return_error")
    ok("Verify return code: 0 (ok)" in out and "TLSv1.3" in out, "the pod serves the local CA's certificate")
    nsdir = os.path.join(pl.home, "tls", "ns", "default")
    ok(os.path.exists(os.path.join(nsdir, "tls.crt")), "per-namespace certificate issued")
    with open(os.path.join(nsdir, "tls.crt"), "rb") as f:
        leaf = x509.load_pem_x509_certificate(f.read())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    ok(set(sans) == {"kn-user-default", DATA_PLANE}, "SANs %r" % sans)


@test
def local_internal_tls_env():
    pl = Platform(coffee_doc(), COLDBREW_INTERNAL_TLS="true")
    local_tls_check(pl, "tlscoffee")


@test
def local_internal_tls_from_config_network():
    cm = "\n".join(["apiVersion: v1", "kind: ConfigMap", "metadata:", "  name: config-network",
                    "  namespace: knative-serving", "data:", '  system-internal-tls: "Enabled"', ""])
    pl = Platform(cm + "---\n" + coffee_doc("cmcoffee"))
    local_tls_check(pl, "cmcoffee")


if __name__ == "__main__":
    import sys
    p, f = run_all(sys.argv[1] if len(sys.argv) > 1 else None)
    sys.exit(1 if f else 0)

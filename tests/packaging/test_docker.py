"""Checks of docker/: the Dockerfiles and the Kubernetes kustomization.

These checks read the Dockerfiles and run the very binaries they ship the way
Knative runs them (numeric non-root user, read-only root filesystem, no
flags); tests/images/run.sh builds the images themselves with podman and
runs them in pods. The kustomization is
rendered with `kubectl kustomize` and every object is checked field by field.

Always the release build (build/bin): that is what the images contain."""
import os, re, shutil, subprocess, sys, tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scenario"))
import yaml  # noqa: E402
from harness import (ROOT, Proc, eq, free_port, get, knative_env, ok, run_all, test,  # noqa: E402
                     wait_port, Origin, KubeAPI)

DOCKER = os.path.join(ROOT, "docker")
RELEASE = os.path.join(ROOT, "build", "bin")
UID = 65532
# Present in debian:bookworm-slim itself (essential, or apt's own dependencies).
IN_BASE = {"libc6", "libgcc-s1", "libstdc++6"}


def dockerfile(name):
    """(stages, text): each stage a dict with its FROM line and instructions
    (continuation lines joined)."""
    text = open(os.path.join(DOCKER, name)).read()
    joined = re.sub(r"\\\n", " ", text)
    stages = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            stages.append({"from": rest.strip(), "ins": []})
        else:
            ok(stages, "%s: instruction before FROM" % name)
            stages[-1]["ins"].append((word, rest.strip()))
    return stages, text


def linked_packages(binary):
    """Debian packages owning the shared libraries `binary` links."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    pkgs = set()
    for line in out.splitlines():
        m = re.search(r"=> (/\S+)", line)
        if not m:
            continue
        real = os.path.realpath(m.group(1))
        q = subprocess.run(["dpkg", "-S", real], capture_output=True, text=True)
        if q.returncode != 0:  # merged /usr: dpkg knows the /lib path
            q = subprocess.run(["dpkg", "-S", real.replace("/usr/lib/", "/lib/", 1)],
                               capture_output=True, text=True)
        ok(q.returncode == 0, "no Debian package owns %s (linked by %s)" % (real, binary))
        pkgs.add(q.stdout.split(":")[0])
    return pkgs


def check_image(dockerfile_name, binary):
    stages, text = dockerfile(dockerfile_name)
    ok(len(stages) >= 2, "%s: multi-stage build" % dockerfile_name)
    build, run = stages[0], stages[-1]
    ok(build["from"].startswith("debian:bookworm"), "build stage on debian:bookworm")
    ok(any(w == "RUN" and "make deps-build" in a for w, a in build["ins"]),
       "build stage installs `make deps-build`'s packages")
    ok(run["from"] in ("debian:bookworm-slim", "gcr.io/distroless/cc-debian12"),
       "minimal runtime stage, got %s" % run["from"])
    # The runtime stage's apt list holds every package the binary links.
    apt = " ".join(a for w, a in run["ins"] if w == "RUN" and "apt-get install" in a)
    listed = set(re.findall(r"\b(lib[a-z0-9.+-]+)", apt))
    need = linked_packages(os.path.join(RELEASE, binary)) - IN_BASE
    missing = need - listed
    ok(not missing, "%s: runtime stage lacks %s" % (dockerfile_name, sorted(missing)))
    extra = {p for p in listed - need - IN_BASE}
    ok(not extra, "%s: runtime stage installs what %s does not link: %s" % (dockerfile_name, binary, sorted(extra)))
    users = [a for w, a in run["ins"] if w == "USER"]
    ok(users, "%s: USER set" % dockerfile_name)
    uid = users[-1].split(":")[0]
    ok(uid.isdigit() and int(uid) != 0, "%s: numeric non-root USER, got %s" % (dockerfile_name, users[-1]))
    entry = [a for w, a in run["ins"] if w == "ENTRYPOINT"]
    eq(len(entry), 1, "%s: one ENTRYPOINT" % dockerfile_name)
    eq(yaml.safe_load(entry[0]), ["/ko-app/" + binary], "%s: exec-form ENTRYPOINT, no flags" % dockerfile_name)
    ok(not [a for w, a in run["ins"] if w in ("CMD", "VOLUME")], "%s: no CMD flags, no VOLUME" % dockerfile_name)
    labels = " ".join(a for w, a in run["ins"] if w == "LABEL")
    for key in ("org.opencontainers.image.title", "org.opencontainers.image.source"):
        ok(key in labels, "%s: OCI label %s" % (dockerfile_name, key))
    copies = [a for w, a in run["ins"] if w == "COPY"]
    eq(copies, ["--from=build /src/build/bin/%s /ko-app/%s" % (binary, binary)],
       "%s: the runtime stage gets the binary and nothing else" % dockerfile_name)


@test
def queue_proxy_dockerfile():
    check_image("queue-proxy.Dockerfile", "queue-proxy")


@test
def activator_dockerfile():
    check_image("activator.Dockerfile", "activator")


def as_knative_runs_it(binary, workdir):
    """argv running `binary` as uid 65532 on a read-only root filesystem
    (a private mount namespace remounts / read-only), with no flags."""
    dst = os.path.join(workdir, binary)
    shutil.copy(os.path.join(RELEASE, binary), dst)
    os.chmod(dst, 0o755)
    script = ("mount --make-rprivate / && mount -o remount,bind,ro / && "
              "exec setpriv --reuid %d --regid %d --clear-groups \"$0\"" % (UID, UID))
    return ["unshare", "--mount", "sh", "-c", script, dst]


def ro_workdir():
    d = tempfile.mkdtemp(prefix="coldbrew-ro-")
    os.chmod(d, 0o755)
    return d


@test
def queue_proxy_runs_read_only_as_nonroot():
    origin = Origin()
    port, admin = free_port(), free_port()
    env = knative_env(origin.port, port)
    env.update({"QUEUE_ADMIN_PORT": str(admin), "QUEUE_METRICS_PORT": str(free_port()),
                "METRICS_PROMETHEUS_PORT": str(free_port()), "QUEUE_DRAIN_QUIET_SECONDS": "0.2"})
    qp = Proc("queue-proxy-ro", as_knative_runs_it("queue-proxy", ro_workdir()), env)
    wait_port(port, proc=qp.p)
    st, _, body = get(port, "/hello")
    eq(st, 200, "request through the read-only, non-root queue-proxy")
    st, _, body = get(port, "/", headers={"K-Network-Probe": "queue", "User-Agent": "Knative-Activator-Probe"})
    eq((st, body), (200, b"queue"), "activator probe answered")
    out = subprocess.run(["ps", "-o", "uid=", "-p", str(qp_child(qp))], capture_output=True, text=True).stdout
    eq(out.strip(), str(UID), "queue-proxy runs as uid %d" % UID)
    eq(qp.stop(), 0, "clean exit on SIGTERM")
    ok("read-only" not in qp.output().lower(), "nothing tried to write: " + qp.output()[-500:])


def qp_child(proc):
    """unshare execs sh which execs setpriv which execs the binary: same pid."""
    return proc.p.pid


@test
def activator_runs_read_only_as_nonroot():
    kube = KubeAPI()
    port = free_port()
    env = {"POD_NAME": "activator-ro", "POD_IP": "127.0.0.1", "SYSTEM_NAMESPACE": "knative-serving",
           "KUBE_API_URL": "http://127.0.0.1:%d" % kube.port, "KUBE_TOKEN_FILE": "/nonexistent",
           "ACTIVATOR_HTTP_PORT": str(port), "ACTIVATOR_H2C_PORT": str(free_port()),
           "METRICS_PROMETHEUS_PORT": str(free_port()), "AUTOSCALER_URL": "ws://127.0.0.1:1",
           "ACTIVATOR_DRAIN_SECONDS": "0.2"}
    a = Proc("activator-ro", as_knative_runs_it("activator", ro_workdir()), env)
    wait_port(port, proc=a.p)
    st, _, body = get(port, "/", headers={"Host": "nosuch.default.svc.cluster.local"})
    eq(st, 404, "unknown revision answered by the read-only, non-root activator")
    ok(a.stop() in (0, 1), "activator stopped")


def render(path):
    out = subprocess.run(["kubectl", "kustomize", path], capture_output=True, text=True)
    ok(out.returncode == 0, "kubectl kustomize %s: %s" % (path, out.stderr))
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    for d in docs:
        for f in ("apiVersion", "kind"):
            ok(d.get(f), "%s: rendered object lacks %s" % (path, f))
        md = d.get("metadata") or {}
        ok(md.get("name"), "%s: object lacks metadata.name" % path)
        eq(md.get("namespace"), "knative-serving", "%s %s namespace" % (d["kind"], md.get("name")))
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def leaves(obj, prefix=""):
    """Every leaf path of a YAML tree (list items by their `name`)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, "%s.%s" % (prefix, k) if prefix else k)
    elif isinstance(obj, list):
        for item in obj:
            key = item.get("name", "?") if isinstance(item, dict) else "?"
            yield from leaves(item, "%s[%s]" % (prefix, key))
    else:
        yield prefix, obj


@test
def kustomization_changes_only_the_images_and_activator_resources():
    objs = render(os.path.join(DOCKER, "k8s"))
    eq(sorted(objs), [("ConfigMap", "config-deployment"), ("Deployment", "activator")], "rendered objects")
    cm = dict(leaves(objs[("ConfigMap", "config-deployment")]))
    eq(sorted(cm), ["apiVersion", "data.queue-sidecar-image", "kind", "metadata.name", "metadata.namespace"],
       "ConfigMap sets queue-sidecar-image and nothing else")
    ok(re.match(r"^[\w.-]+(:\d+)?/[\w./-]+(:[\w.-]+|@sha256:[0-9a-f]{64})$", cm["data.queue-sidecar-image"]),
       "queue-sidecar-image is an image reference")
    dep = dict(leaves(objs[("Deployment", "activator")]))
    c = "spec.template.spec.containers[activator]."
    want = {c + "image", c + "name"} | {c + "resources.%s.%s" % (a, b) for a in ("requests", "limits")
                                        for b in ("cpu", "memory")}
    eq(sorted(set(dep) - {"apiVersion", "kind", "metadata.name", "metadata.namespace"}), sorted(want),
       "the Deployment patch sets the activator's image and resources only")
    ok(dep[c + "image"].startswith("registry.example.com/coldbrew/activator:"), "the images transformer applied")
    mem = lambda s: int(s[:-2]) * (1 << 20)  # noqa: E731
    ok(mem(dep[c + "resources.requests.memory"]) <= mem(dep[c + "resources.limits.memory"]), "requests <= limits")
    # The memory limit must hold the waiting cap's worth of held requests
    # (3.4 KiB each measured; see activator.yaml) plus the idle process.
    ok(mem(dep[c + "resources.limits.memory"]) >= 100000 * 3400 + (40 << 20), "limit covers COLDBREW_MAX_WAITING")


@test
def loadbalancer_kustomization():
    objs = render(os.path.join(DOCKER, "k8s", "loadbalancer"))
    eq(sorted(objs), [("Service", "activator-lb")], "rendered objects")
    svc = objs[("Service", "activator-lb")]
    eq(svc["spec"]["type"], "LoadBalancer", "type")
    eq(svc["spec"]["selector"], {"app": "activator"}, "selects Knative's activator pods")
    eq(sorted((p["name"], p["targetPort"]) for p in svc["spec"]["ports"]), [("http", 8012), ("http2", 8013)],
       "ports onto the activator's listeners")
    ok(svc["metadata"]["annotations"], "cloud load balancer annotations as an example")


if __name__ == "__main__":
    _, failed = run_all(sys.argv[1] if len(sys.argv) > 1 else None)
    sys.exit(1 if failed else 0)

"""Shared by the local-platform benchmarks: the platform under test, and
their sections of bench/RESULTS.md (each between <!-- NAME:begin --> and
<!-- NAME:end -->, after bench.py's generated table, which bench.py keeps)."""
import os, socket, subprocess, tempfile, time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
RESULTS = os.environ.get("BENCH_OUT", os.path.join(ROOT, "bench", "RESULTS.md"))
BIN = os.path.join(ROOT, os.environ.get("BUILD", "build"), "bin")


def replace_section(name, text):
    begin, end = "<!-- %s:begin -->" % name, "<!-- %s:end -->" % name
    old = open(RESULTS).read() if os.path.exists(RESULTS) else "# coldbrew benchmark results\n"
    block = "%s\n%s\n%s" % (begin, text.strip(), end)
    if begin in old and end in old:
        new = old[:old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    open(RESULTS, "w").write(new)
    print("wrote the %s section of %s" % (name, RESULTS))


def replace_heading(heading, section):
    """The bench.py-era sections (h2bench, tlsbench) are whole `## ` headings:
    the one starting with `heading` is replaced up to the next heading, or a
    new one goes before "## History"."""
    text = open(RESULTS).read() if os.path.exists(RESULTS) else ""
    marker = "\n" + heading
    if marker in text:
        a = text.index(marker) + 1
        b = text.find("\n## ", a + 3)
        text = text[:a] + section + (text[b + 1:] if b >= 0 else "")
    elif "\n## History" in text:
        a = text.index("\n## History") + 1
        text = text[:a] + section + "\n" + text[a:]
    else:
        text += "\n" + section
    open(RESULTS, "w").write(text)
    print("wrote the %s section of %s" % (heading.lstrip("# "), RESULTS))


def free_port():
    for p in range(28000, 32000):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
            return p
        except OSError:
            continue
        finally:
            s.close()
    raise SystemExit("no free port")


class Platform:
    """`coldbrew run` on its own ports, home directory and manifest."""

    def __init__(self, manifest, **env):
        self.home = tempfile.mkdtemp(prefix="coldbrew-bench-")
        self.path = os.path.join(self.home, "services.yaml")
        open(self.path, "w").write(manifest)
        self.port, self.api_port = free_port(), None
        s = socket.socket(); s.bind(("127.0.0.1", self.port))  # hold it while choosing the next
        self.api_port = free_port()
        s.close()
        self.env = dict(os.environ, COLDBREW_PORT=str(self.port), COLDBREW_API_PORT=str(self.api_port),
                        COLDBREW_HOME=self.home, **{k: str(v) for k, v in env.items()})
        self.log = open(os.path.join(self.home, "run.out"), "wb")
        self.p = subprocess.Popen([os.path.join(BIN, "coldbrew"), "run", self.path], env=self.env,
                                  stdout=self.log, stderr=subprocess.STDOUT)
        end = time.time() + 20
        while "ready at" not in open(self.log.name).read():
            if self.p.poll() is not None or time.time() > end:
                raise SystemExit("coldbrew run did not start: " + open(self.log.name).read())
            time.sleep(0.05)

    def cli(self, *args):
        return subprocess.run([os.path.join(BIN, "coldbrew"), *args], env=self.env,
                              capture_output=True, text=True, timeout=60).stdout

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(60)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()

"""Test certificates made with the openssl CLI: a CA and one server
certificate signed by it (EC P-256, valid two days). Shared by the scenario
tests (harness.make_test_ca), the image tests and bench/tlsbench.py."""
import os, subprocess


def make_test_ca(dirpath, ip="127.0.0.1", san=None, cn="kube-api", name="srv"):
    """A CA (ca.crt, ca.key) and a server certificate (<name>.crt, <name>.key)
    in dirpath, the server's subjectAltName `san` (default: IP:<ip>):
    returns (server cert, server key, CA cert)."""
    def run(*a):
        subprocess.run(["openssl", *a], check=True, capture_output=True, cwd=dirpath)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=coldbrew-test-ca")
    run("req", *ec, "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn)
    with open(os.path.join(dirpath, "san.ext"), "w") as f:
        f.write("subjectAltName=%s\n" % (san or "IP:%s" % ip))
    run("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", name + ".crt", "-days", "2", "-extfile", "san.ext")
    return tuple(os.path.join(dirpath, f) for f in (name + ".crt", name + ".key", "ca.crt"))

"""The multi-version pressure test: `make pressure`.

Runs `coldbrew run examples/coffee.yaml` (coffee v1 and v2 split 70/30,
containerConcurrency 10, scale to zero) and drives it with wrk in phases of
rising load on ?sleep=20 (each request holds a slot for 20 ms, so
concurrency, not CPU, makes it scale). During the third phase it rolls out
coffee v3 as the candidate (`coldbrew apply`). Then the load stops and the
platform falls back to zero.

Reported: per phase, throughput, latency percentiles and errors (wrk's
non-2xx and socket errors); the share of requests each revision served,
counted from every queue-proxy's Prometheus counters (polled every 0.5 s;
counters only grow, so the last value per pod is what it served); and the
pods per revision over time, as bench/pressure.png (gnuplot) and a table in
bench/RESULTS.md ("pressure" section)."""
import json, os, re, subprocess, sys, threading, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results import ROOT, Platform, replace_section  # noqa: E402

PHASES = [("warm", 4, 8), ("rising", 16, 8), ("rollout", 48, 10), ("peak", 96, 8)]
COUNT_RE = re.compile(r"^http_server_request_duration_seconds_count\{[^}]*\} (\d+)", re.M)


def wrk(port, conns, seconds):
    r = subprocess.run(["wrk", "-t2", "-c%d" % conns, "-d%ds" % seconds, "--latency", "-H",
                        "Host: coffee.default.localhost", "http://127.0.0.1:%d/?sleep=20" % port],
                       capture_output=True, text=True, timeout=seconds + 60)
    out = r.stdout

    def lat(p):
        m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s)" % p, out, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    n = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"requests": n, "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": lat(50), "p90": lat(90), "p99": lat(99),
            "errors": (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, errs.groups())) if errs else 0)}


def main():
    manifest = open(os.path.join(ROOT, "examples", "coffee.yaml")).read()
    grace = os.environ.get("COLDBREW_SCALE_TO_ZERO_GRACE_SECONDS", "10")
    pl = Platform(manifest, COLDBREW_SCALE_TO_ZERO_GRACE_SECONDS=grace)
    samples, served = [], {}  # served: pod -> (revision, count)
    stop = threading.Event()
    t_start = time.time()

    def sampler():
        while not stop.is_set():
            try:
                st = json.loads(pl.cli("status", "--json"))
            except ValueError:
                time.sleep(0.5)
                continue
            row = {"t": time.time() - t_start, "pods": {}}
            for s in st["services"]:
                for r in s["revisions"]:
                    row["pods"][r["name"]] = sum(1 for p in r["pods"] if p["phase"] == "Ready")
                    for p in r["pods"]:
                        try:
                            txt = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % p["prometheus_port"],
                                                         timeout=1).read().decode()
                            served[p["name"]] = (r["name"], sum(int(x) for x in COUNT_RE.findall(txt)))
                        except OSError:
                            pass
            samples.append(row)
            time.sleep(0.5)

    th = threading.Thread(target=sampler)
    th.start()
    results = []
    phase_start = time.time() - t_start
    try:
        for name, conns, seconds in PHASES:
            if name == "rollout":
                v3 = os.path.join(pl.home, "coffee-v3.yaml")
                open(v3, "w").write(manifest.replace("value: v2", "value: v3").replace("coffee:v2", "coffee:v3"))
                timer = threading.Timer(seconds / 3.0, lambda: print("apply v3:", pl.cli("apply", v3).strip()))
                timer.start()
            res = wrk(pl.port, conns, seconds)
            res.update(phase=name, conns=conns, seconds=seconds)
            results.append(res)
            print("%-8s c=%-3d %7.0f req/s p50 %.1f p99 %.1f ms errors %d" % (name, conns, res["rps"], res["p50"],
                                                                              res["p99"], res["errors"]))
        load_end = time.time() - t_start
        end = time.time() + 120
        while time.time() < end:
            time.sleep(1)
            if samples and samples[-1]["t"] > load_end + 2 and not any(samples[-1]["pods"].values()):
                break
        zero_at = samples[-1]["t"] if not any(samples[-1]["pods"].values()) else None
    finally:
        stop.set()
        th.join()
        pl.stop()

    revs = sorted({r for s in samples for r in s["pods"]})
    by_rev = {r: 0 for r in revs}
    for rev, n in served.values():
        by_rev[rev] = by_rev.get(rev, 0) + n
    total_served = sum(by_rev.values()) or 1
    dat = os.path.join(pl.home, "pods.dat")
    with open(dat, "w") as f:
        f.write("t " + " ".join(revs) + "\n")
        for s in samples:
            f.write("%.2f %s\n" % (s["t"], " ".join(str(s["pods"].get(r, 0)) for r in revs)))
    png = os.path.join(ROOT, "bench", "pressure.png")
    # Series are offset by a few hundredths so equal counts do not hide each other.
    plots = ", ".join("'%s' using 1:($%d+%.2f) with steps lw 2 title '%s'" % (dat, i + 2, 0.06 * i, r)
                      for i, r in enumerate(revs))
    marks, t = [], phase_start
    for name, conns, seconds in PHASES:
        marks.append("set arrow from %.1f, graph 0 to %.1f, graph 1 nohead dt 2 lc 'gray';"
                     "set label '%s (c=%d)' at %.1f, graph 0.96 font ',9';" % (t, t, name, conns, t + 0.3))
        t += seconds
    marks.append("set arrow from %.1f, graph 0 to %.1f, graph 1 nohead dt 2 lc 'gray';"
                 "set label 'load stops' at %.1f, graph 0.96 font ',9';" % (t, t, t + 0.3))
    script = ("set terminal png size 900,420; set output '%s'; set xlabel 'seconds'; set ylabel 'ready pods';"
              "set title 'coffee under rising load (rollout of v3 in the rollout phase), then back to zero';"
              "set key top right; set grid; set yrange [0:*]; %s plot %s" % (png, "".join(marks), plots))
    subprocess.run(["gnuplot", "-e", script], check=True)

    t = 0.0
    rows = []
    for r in results:
        rows.append("| %s | %d–%d | %d | %d | %.0f | %.1f | %.1f | %.1f | %d |" % (
            r["phase"], t, t + r["seconds"], r["conns"], r["requests"], r["rps"], r["p50"], r["p90"], r["p99"],
            r["errors"]))
        t += r["seconds"]
    peak = max((sum(s["pods"].values()) for s in samples), default=0)
    text = """## Local platform: multi-version pressure test

Produced by `make pressure` (`python3 bench/pressure.py`) on %s: `coldbrew run examples/coffee.yaml`
(v1 and v2 split 70/30, containerConcurrency 10, window 20 s, scale-to-zero grace %s s), wrk -t2 on
`/?sleep=20` in phases of rising concurrency; `coldbrew apply` rolls out v3 as the candidate a third
of the way into the "rollout" phase. Everything (wrk, activator, every pod) shares the 2 cores.

| phase | seconds | connections | requests | req/s | p50 ms | p90 ms | p99 ms | errors |
|---|---|---:|---:|---:|---:|---:|---:|---:|
%s

Requests served per revision (from the queue-proxies' Prometheus counters): %s.
Peak ready pods: %d. %s

![pods per revision over time](pressure.png)
""" % (time.strftime("%Y-%m-%d"), grace, "\n".join(rows),
       ", ".join("%s %d (%.1f%%)" % (r, by_rev[r], 100.0 * by_rev[r] / total_served) for r in revs), peak,
       ("Back to zero pods %.0f s after the load ended." % (zero_at - load_end)) if zero_at else
       "Not back to zero within 120 s of the load's end.")
    print(text)
    replace_section("pressure", text)
    errors = sum(r["errors"] for r in results)
    sys.exit(1 if errors or not zero_at else 0)


if __name__ == "__main__":
    main()

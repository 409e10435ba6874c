#!/usr/bin/env bash
# make bench: runs bench.py (HTTP/1.1: peers and coldbrew in the same run),
# then h2bench.py (HTTP/2 through coldbrew, HAProxy and nginx), tlsbench.py
# (the queue-proxy's TLS port against nginx's ssl listener), burst.py
# (1,000 requests at once onto a backlog-5 container) and trace_overhead.py
# (queue-proxy throughput, tracing at sampling 1.0 vs 0), each rewriting its
# part of bench/RESULTS.md. BENCH_SECONDS, BENCH_ROUNDS and BENCH_CONNS tune
# the load; BENCH_BEFORE_BIN adds rows for an earlier build's binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 65536 2>/dev/null || true
/usr/bin/python3 bench/bench.py "$@"
/usr/bin/python3 bench/h2bench.py
/usr/bin/python3 bench/tlsbench.py
if [ -f bench/burst.py ]; then /usr/bin/python3 bench/burst.py; fi
/usr/bin/python3 bench/trace_overhead.py

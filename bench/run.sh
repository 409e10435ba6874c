#!/usr/bin/env bash
# make bench: runs bench.py (peers and coldbrew in the same run) and rewrites
# bench/RESULTS.md. BENCH_SECONDS and BENCH_CONNS tune the load.
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 65536 2>/dev/null || true
exec /usr/bin/python3 bench/bench.py "$@"

#!/usr/bin/env bash
# Runs every unit test (cmocka) and every scenario test, then prints one
# closing line: "N passed, N failed". Exits non-zero when anything failed.
#   BUILD=build|build/san   which build to test
#   ONLY=unit|scenario      run one half
#   FILTER=substring        scenario tests whose name contains it
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export BUILD
passed=0
failed=0

if [ "${ONLY:-unit}" = unit ] || [ -z "${ONLY:-}" ]; then
  for t in "$BUILD"/tests/*_test; do
    [ -x "$t" ] || continue
    out=$("$t" 2>&1)
    rc=$?
    echo "$out" | grep -E '^\[ *(PASSED|FAILED|RUN|  OK) *\]|Failure|error:' | grep -v '^\[ RUN' | grep -v '^\[       OK' || true
    p=$(echo "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
    f=$(echo "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
    p=${p:-0}; f=${f:-0}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; echo "unit: $t exited $rc"; fi
    passed=$((passed + p)); failed=$((failed + f))
  done
  echo "unit: $passed passed, $failed failed"
fi

if [ "${ONLY:-scenario}" = scenario ] || [ -z "${ONLY:-}" ]; then
  log=$(mktemp)
  for f in tests/scenario/test_*.py tests/packaging/test_*.py; do
    # Streamed (not captured) so a slow or stuck test shows where it is.
    timeout 900 /usr/bin/python3 -u "$f" ${FILTER:-} 2>&1 | tee "$log"
    line=$(grep -E '^scenario: [0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
    if [ -z "$line" ]; then echo "scenario: $f did not finish"; failed=$((failed + 1)); continue; fi
    p=$(echo "$line" | sed -E 's/^scenario: ([0-9]+) passed.*/\1/')
    q=$(echo "$line" | sed -E 's/^scenario: [0-9]+ passed, ([0-9]+) failed.*/\1/')
    passed=$((passed + p)); failed=$((failed + q))
  done
  rm -f "$log"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

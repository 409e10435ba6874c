#!/usr/bin/env bash
# The README's two commands, each as the FIRST command on a fresh Debian 12:
#
#   tests/fresh/run.sh            both checks, one after the other
#   tests/fresh/run.sh test       `make test` must end with "N passed, 0 failed"
#   tests/fresh/run.sh run        `make run` must answer on :8080, and Ctrl-C must
#                                 leave no process behind
#   tests/fresh/run.sh all|install|fuzz|coldstart|pressure|bench|format
#                                 `make` (all), `make install PREFIX=/usr/local`,
#                                 `make fuzz` ...: must succeed (not in CI)
#
# Each check unpacks its own copy of the debootstrap minbase root
# (tests/fresh/rootfs.sh), clones the current commit into it (HEAD, not the
# working tree: what a user would clone), installs what a user has before the
# first command (make, and git to have cloned), and first runs the command as
# a non-root user: that must stop with one line naming the apt-get command.
# Then root runs it for real.
#
# The chroot lives in a private mount namespace (unshare), so no mount made
# here is ever seen by the host, and the root is bind-mounted onto itself so
# that / is a mount point inside (tests/packaging remounts / read-only).
# It shares the host's network: `make run` needs 8080 and 8079 free.
#
# Settings (seconds):
#   FRESH_TEST_TIMEOUT=2400       bound on the whole `make test` check
#   FRESH_RUN_TIMEOUT=1200        bound on the whole `make run` check
#   FRESH_RUN_START_TIMEOUT=900   `make run` (install, build, start) until it answers
#   FRESH_RUN_STOP_TIMEOUT=30     after Ctrl-C, until every process in the root is gone
#   FRESH_OTHER_TIMEOUT=1800      bound on the check of any other target
# Root only. Logs in build/fresh/<check>.log.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
PATH_IN="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TEST_TIMEOUT=${FRESH_TEST_TIMEOUT:-2400}
RUN_TIMEOUT=${FRESH_RUN_TIMEOUT:-1200}
START_TIMEOUT=${FRESH_RUN_START_TIMEOUT:-900}
STOP_TIMEOUT=${FRESH_RUN_STOP_TIMEOUT:-30}
OTHER_TIMEOUT=${FRESH_OTHER_TIMEOUT:-1800}

# Pids of every process whose root directory is $1 (compared by device and
# inode, which holds across mount namespaces and bind mounts).
procs_in_root() {
  local want pid
  want=$(stat -c %d:%i "$1")
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    [ "$(stat -L -c %d:%i "/proc/$pid/root" 2>/dev/null)" = "$want" ] && echo "$pid"
  done
  return 0
}

describe() { # pid ...: one line each, for the report
  local pid
  for pid in "$@"; do
    echo "  pid $pid: $(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | cut -c1-160)"
  done
}

# The README's command for a check.
command_for() {
  case "$1" in
    all) echo "make" ;;
    install) echo "make install PREFIX=/usr/local" ;;
    *) echo "make $1" ;;
  esac
}

# ---------------------------------------------------------------- inside the namespace
# run.sh --inside CHECK ROOT LOG: mounts, the non-root line, the real command.
inside() {
  local check=$1 R=$2 log=$3 t0=$EPOCHSECONDS
  mount --bind "$R" "$R"
  mount -t proc proc "$R/proc"
  mount -t sysfs sysfs "$R/sys"
  mount --rbind /dev "$R/dev"
  mount -t tmpfs -o mode=1777,nosuid,nodev shm "$R/dev/shm"
  mount -t tmpfs -o mode=1777,nosuid,nodev tmp "$R/tmp"
  in_root() { chroot "$R" env -i HOME=/root PATH="$PATH_IN" LANG=C.UTF-8 "$@"; }

  # What the user has before the README's first command.
  echo "fresh $check: apt-get install make git (the user's prerequisites)"
  in_root sh -c 'apt-get -o Acquire::Retries=3 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::Retries=3 install -y -qq make git >/dev/null' \
    >> "$log" 2>&1 || { echo "fresh $check: installing make and git failed"; tail -20 "$log"; return 1; }
  echo "fresh $check: prerequisites installed ($((EPOCHSECONDS - t0))s)"
  git clone -q --no-hardlinks "$top" "$R/root/coldbrew"
  git -C "$R/root/coldbrew" checkout -q --detach "$(git -C "$top" rev-parse HEAD)"
  # The same clone for a non-root user (uid 1000, its own home).
  mkdir -p "$R/home/dev"
  cp -a "$R/root/coldbrew" "$R/home/dev/coldbrew"
  chown -R 1000:1000 "$R/home/dev"

  # As non-root with the packages missing: one line naming apt-get, then stop.
  local out rc
  set +e
  out=$(chroot "$R" env -i HOME=/home/dev PATH="$PATH_IN" LANG=C.UTF-8 \
        setpriv --reuid 1000 --regid 1000 --clear-groups sh -c "cd /home/dev/coldbrew && $(command_for "$check")" 2>&1 < /dev/null)
  rc=$?
  set -e
  printf 'non-root `%s` (rc %d):\n%s\n' "$(command_for "$check")" "$rc" "$out" >> "$log"
  if [ "$rc" -eq 0 ] || [ "$(printf '%s\n' "$out" | wc -l)" -ne 1 ] \
     || ! printf '%s' "$out" | grep -q 'apt-get install -y ' || [ -e "$R/home/dev/coldbrew/build" ]; then
    echo "fresh $check: FAILED: as non-root, \`$(command_for "$check")\` should stop with one line naming apt-get install; got (rc $rc):"
    printf '%s\n' "$out"
    return 1
  fi
  echo "fresh $check: non-root stops with: $out"

  case "$check" in
    test) inside_test "$R" "$log" ;;
    run) inside_run "$R" "$log" ;;
    *) inside_other "$check" "$R" "$log" ;;
  esac
}

# Any other target: it must succeed (and `make`/`make install` leave the binaries).
inside_other() {
  local check=$1 R=$2 log=$3 cmd rc t0=$EPOCHSECONDS
  cmd=$(command_for "$check")
  echo "fresh $check: cd ~/coldbrew && $cmd (as root, first command; output in $log)"
  set +e
  in_root sh -c "cd /root/coldbrew && $cmd" < /dev/null >> "$log" 2>&1
  rc=$?
  set -e
  if [ "$rc" -ne 0 ]; then echo "fresh $check: FAILED: $cmd exited $rc"; tail -40 "$log"; return 1; fi
  case "$check" in
    all) ls "$R/root/coldbrew/build/bin/coldbrew" "$R/root/coldbrew/build/bin/activator" > /dev/null || return 1 ;;
    install) ls "$R/usr/local/bin/coldbrew" "$R/usr/local/bin/queue-proxy" > /dev/null || return 1 ;;
  esac
  echo "fresh $check: $cmd ok ($((EPOCHSECONDS - t0))s); its last lines:"
  tail -3 "$log"
}

inside_test() {
  local R=$1 log=$2 rc
  echo "fresh test: cd ~/coldbrew && make test (as root, first command; output in $log)"
  local t0=$EPOCHSECONDS t_deps= t_built= l mpid
  # make writes to a file, not a pipe: a process a test leaks with make's
  # stdout would hold a pipe open and hang the reader; make's own exit ends
  # the check (what is left in the root then fails it, in cleanup).
  # Created here, before the background job: its own redirection runs after
  # the fork, and tail below must not open the file before it exists (that
  # race failed CI's fresh-test in 40-60 s, twice).
  : > "$log.out"
  in_root sh -c 'cd /root/coldbrew && make test' < /dev/null >> "$log.out" 2>&1 &
  mpid=$!
  # Streamed, so CI shows where a slow run is; the times of the first lines
  # after installing and after building split the total.
  tail -n +1 -s 0.5 -f --pid="$mpid" "$log.out" | while IFS= read -r l; do
    printf '%s\n' "$l"; printf '%s\n' "$l" >> "$log"
    case "$l" in
      "deps: done") echo "$EPOCHSECONDS" > "$log.deps" ;;
      "["*|"unit: "*) [ -e "$log.built" ] || echo "$EPOCHSECONDS" > "$log.built" ;;
    esac
  done
  set +e
  wait "$mpid"
  rc=$?
  set -e
  t_deps=$(cat "$log.deps" 2>/dev/null || echo "$t0"); t_built=$(cat "$log.built" 2>/dev/null || echo "$t_deps")
  rm -f "$log.deps" "$log.built" "$log.out"
  echo "fresh test: make test took $((EPOCHSECONDS - t0))s: installing $((t_deps - t0))s, building $((t_built - t_deps))s, testing $((EPOCHSECONDS - t_built))s"
  if [ "$rc" -ne 0 ]; then echo "fresh test: FAILED: make test exited $rc"; return 1; fi
  if ! tail -1 "$log" | grep -qE '^[0-9]+ passed, 0 failed$'; then
    echo "fresh test: FAILED: make test did not end with 'N passed, 0 failed'"; return 1
  fi
}

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

inside_run() {
  local R=$1 log=$2 pid start now body left
  echo "fresh run: cd ~/coldbrew && make run (as root, first command; output in $log)"
  # A terminal's foreground job: make in a session and process group of its
  # own (setsid does not fork here: a non-interactive shell's background
  # child is no group leader), so Ctrl-C can be sent to the whole group.
  setsid chroot "$R" env -i HOME=/root PATH="$PATH_IN" LANG=C.UTF-8 \
    sh -c 'cd /root/coldbrew && make run' < /dev/null >> "$log" 2>&1 &
  pid=$!
  start=$(date +%s)
  body=
  while :; do
    now=$(date +%s)
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "fresh run: FAILED: make run exited before answering"; tail -40 "$log"; return 1
    fi
    if grep -q '^coffee ready at' "$log"; then
      # curl as the README says, from inside the root (make run installed it).
      body=$(in_root curl -sS --max-time 30 http://coffee.default.localhost:8080/ 2>&1) && break
      echo "fresh run: FAILED: curl http://coffee.default.localhost:8080/: $body"; tail -40 "$log"; return 1
    fi
    if [ $((now - start)) -ge "$START_TIMEOUT" ]; then
      echo "fresh run: FAILED: no 'coffee ready at' within ${START_TIMEOUT}s (FRESH_RUN_START_TIMEOUT)"
      tail -40 "$log"; return 1
    fi
    sleep 1
  done
  echo "fresh run: answered after $(( $(date +%s) - start ))s: $body"
  if ! printf '%s' "$body" | grep -qE '^coffee v[12] \(revision coffee-0000[12]\): one espresso$'; then
    echo "fresh run: FAILED: unexpected answer"; return 1
  fi
  # Ctrl-C: SIGINT to make's whole process group, as a terminal sends it.
  kill -INT -- "-$pid"
  start=$(date +%s)
  while :; do
    left=$(procs_in_root "$R")
    [ -z "$left" ] && break
    if [ $(( $(date +%s) - start )) -ge "$STOP_TIMEOUT" ]; then
      echo "fresh run: FAILED: ${STOP_TIMEOUT}s after Ctrl-C these still run in the root (FRESH_RUN_STOP_TIMEOUT):"
      describe $left
      tail -20 "$log"
      return 1
    fi
    sleep 0.2
  done
  wait "$pid" 2>/dev/null || true
  echo "fresh run: after Ctrl-C no process is left in the root ($(( $(date +%s) - start ))s)"
  echo "--- make run's output:"; grep -v '^deps: ' "$log" | sed -n '/^coldbrew: starting/,$p' | head -8
}

if [ "${1:-}" = --inside ]; then
  shift
  R=$2
  # Whatever happens inside, the mounts go (the namespace ends with us anyway).
  trap 'umount -R "$R" 2>/dev/null || umount -R -l "$R" 2>/dev/null || true' EXIT
  inside "$@"
  exit
fi

# ---------------------------------------------------------------- one check
[ "$(id -u)" = 0 ] || { echo "fresh: needs root (chroot, mounts)" >&2; exit 1; }
for tool in unshare chroot setpriv git tar timeout; do
  command -v "$tool" > /dev/null || { echo "fresh: needs $tool" >&2; exit 1; }
done
tarball=$(bash tests/fresh/rootfs.sh)
mkdir -p build/fresh

WORK=
TPID=
cleanup() {
  # A check still running (we were interrupted): stop it first.
  if [ -n "$TPID" ] && kill -0 "$TPID" 2>/dev/null; then
    kill -TERM "$TPID" 2>/dev/null
    for _ in $(seq 250); do kill -0 "$TPID" 2>/dev/null || break; sleep 0.1; done
  fi
  TPID=
  [ -n "$WORK" ] && [ -d "$WORK" ] || return 0
  local left rc=0
  left=$(procs_in_root "$WORK/root")
  if [ -n "$left" ]; then
    # A finished check leaves no process behind: this fails it.
    echo "fresh: FAILED: processes left in $WORK/root, killing them:"; describe $left
    rc=1
    kill -KILL $left 2>/dev/null || true
    for _ in $(seq 50); do [ -z "$(procs_in_root "$WORK/root")" ] && break; sleep 0.1; done
  fi
  # The mounts were made in a private namespace: none may show here.
  if grep -qF " $WORK/" /proc/self/mountinfo; then
    echo "fresh: $WORK still has mounts here; not removing it" >&2; return 1
  fi
  # A process killed just above may still be finishing a write: once more.
  rm -rf --one-file-system "$WORK" 2>/dev/null || { sleep 1; rm -rf --one-file-system "$WORK"; }
  WORK=
  return "$rc"
}
trap 'cleanup' EXIT
trap 'exit 130' INT TERM

check() {
  local name=$1 limit=$2 t0 rc log
  log=build/fresh/$name.log
  : > "$log"
  t0=$(date +%s)
  # (check runs under `||`, where set -e does not act: every step is checked.)
  WORK=$(mktemp -d "$top/build/fresh/$name.XXXXXX") || return 1
  mkdir "$WORK/root" && tar -xf "$tarball" -C "$WORK/root" || { echo "fresh $name: FAILED: unpacking $tarball"; cleanup; return 1; }
  # As in Debian's container images: packages do not start their daemons
  # (nginx-light and haproxy would start on the host's network, outside the test).
  printf '#!/bin/sh\nexit 101\n' > "$WORK/root/usr/sbin/policy-rc.d" &&
  chmod 0755 "$WORK/root/usr/sbin/policy-rc.d" &&
  # What an installed Debian has and debootstrap leaves out.
  printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$WORK/root/etc/hosts" &&
  cp /etc/resolv.conf "$WORK/root/etc/resolv.conf" || { echo "fresh $name: FAILED: preparing the root"; cleanup; return 1; }
  # The full package set for `make test` takes about 2.5 GB in the root: say
  # what is free, so a check that runs out of disk says so at once.
  echo "fresh $name: root unpacked in $WORK/root ($(( $(date +%s) - t0 ))s; $(df -Ph "$WORK" | awk 'NR==2 {print $4}') free there)"
  # In the background with `wait`, so Ctrl-C or TERM here reaches the trap at
  # once (bash runs traps only between foreground commands); timeout runs the
  # inside in a process group of its own and signals all of it.
  timeout -k 20 "$limit" unshare --mount --propagation private \
    "$top/tests/fresh/run.sh" --inside "$name" "$WORK/root" "$top/$log" &
  TPID=$!
  set +e
  wait "$TPID"
  rc=$?
  set -e
  TPID=
  [ "$rc" -eq 124 ] && echo "fresh $name: FAILED: not done within ${limit}s"
  cleanup || rc=1
  echo "fresh $name: $([ "$rc" -eq 0 ] && echo ok || echo FAILED) in $(( $(date +%s) - t0 ))s"
  return "$rc"
}

checks=("$@")
[ ${#checks[@]} -gt 0 ] || checks=(test run)
failed=0
for c in "${checks[@]}"; do
  case "$c" in
    test) check test "$TEST_TIMEOUT" || failed=1 ;;
    run)
      for port in 8080 8079; do
        if port_taken "$port"; then
          echo "fresh run: FAILED: port $port on 127.0.0.1 is already taken (make run needs it; the root shares the host's network)"
          failed=1; continue 2
        fi
      done
      check run "$RUN_TIMEOUT" || failed=1 ;;
    all|install|fuzz|coldstart|pressure|bench|format) check "$c" "$OTHER_TIMEOUT" || failed=1 ;;
    *) echo "fresh: unknown check $c (test, run, all, install, fuzz, coldstart, pressure, bench, format)" >&2; exit 2 ;;
  esac
done
exit "$failed"

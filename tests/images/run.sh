#!/usr/bin/env bash
# The images are built and run, not only read: builds docker/queue-proxy.Dockerfile
# and docker/activator.Dockerfile with podman (no Docker engine here, no registry)
# and runs them as Kubernetes would (tests/images/test_images.py).
#
#   tests/images/run.sh        root; installs podman, runc and catatonit with apt-get if missing
#
# Steps: packages; `make` (coffee, and the queue-proxy the activator test
# uses as a revision pod); the base images debian:bookworm and
# debian:bookworm-slim imported from the debootstrap root of
# tests/fresh/rootfs.sh (tests/images/debian-base.sh); the two images and a
# coffee image (tests/images/coffee.Dockerfile); then the pods.
#
# Podman's settings for this machine are in tests/images/containers.conf
# (named by CONTAINERS_CONF; /etc is not touched). Its image store is
# build/images/storage: kept between local runs (base images and build layers
# are cached, so a second run is quick), removed at the end when
# IMAGES_KEEP_STORE=0 (the default under CI=true). Containers, pods, the
# run-time state and temporary files are removed at the end, pass or fail.
#
# Settings:
#   IMAGES_TIMEOUT        900 s   the whole script; past it everything is stopped, exit 124
#   IMAGES_STEP_TIMEOUT   600 s   any one step (package install, one build, the pod tests)
#   IMAGES_MAX_MB         100     an image larger than this fails (they are about 80 MB)
#   IMAGES_GRACE_SECONDS  20      terminationGracePeriodSeconds for `podman stop`
#   IMAGES_KEEP_STORE     1 (0 under CI=true)   keep build/images/storage for the next run
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
IMAGES_TIMEOUT=${IMAGES_TIMEOUT:-900}
if [ -z "${_COLDBREW_IMAGES_BOUNDED:-}" ]; then
    # The whole run is bounded: timeout signals this script's process group
    # (podman included); the EXIT trap below then cleans up.
    export _COLDBREW_IMAGES_BOUNDED=1
    rc=0
    timeout -k 30 "$IMAGES_TIMEOUT" "$BASH" "$0" "$@" || rc=$?
    [ "$rc" = 124 ] && echo "images: FAIL: IMAGES_TIMEOUT (${IMAGES_TIMEOUT} s) reached, stopped" >&2
    exit "$rc"
fi

STEP_TIMEOUT=${IMAGES_STEP_TIMEOUT:-600}
MAX_MB=${IMAGES_MAX_MB:-100}
export IMAGES_GRACE_SECONDS=${IMAGES_GRACE_SECONDS:-20}
if [ "${CI:-}" = true ]; then KEEP=${IMAGES_KEEP_STORE:-0}; else KEEP=${IMAGES_KEEP_STORE:-1}; fi
[ "$(id -u)" = 0 ] || { echo "images: needs root (podman, debootstrap)" >&2; exit 1; }

STORE=$ROOT/build/images/storage
RUN=$ROOT/build/images/run
export CONTAINERS_CONF=$ROOT/tests/images/containers.conf
# Everything podman keeps goes under build/images: the image store (cached),
# its run-time state and its temporary files (removed at the end).
PODMAN="podman --root $STORE --runroot $RUN --tmpdir $RUN/libpod"
pm() { timeout "$STEP_TIMEOUT" $PODMAN "$@"; }
mkdir -p "$ROOT/build/images"
TMP=$(mktemp -d "$ROOT/build/images/tmp.XXXXXX")
export TMPDIR=$TMP
T0=$(date +%s.%N)
LAST=$T0
TIMES=()
lap() { # name: the seconds since the previous lap, printed and kept for the summary
    local now; now=$(date +%s.%N)
    local s; s=$(awk -v a="$LAST" -v b="$now" 'BEGIN{printf "%.1f", b-a}')
    echo "images: $1: ${s} s"
    TIMES+=("$1 ${s}s")
    LAST=$now
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if command -v podman >/dev/null; then
        # Only this store's pods and containers: nothing else is named here.
        timeout 120 $PODMAN pod rm -af -t 0 >/dev/null 2>&1 || true
        timeout 120 $PODMAN rm -af -t 0 >/dev/null 2>&1 || true
        if [ "$KEEP" = 1 ]; then
            timeout 120 $PODMAN image prune -f --filter until=24h >/dev/null 2>&1 || true
        else
            timeout 300 $PODMAN system reset -f >/dev/null 2>&1 || true
            rm -rf "$STORE" "$ROOT/build/images/bases.stamp"
        fi
    fi
    rm -rf "$RUN" "$TMP"
    if [ "$rc" = 0 ]; then echo "images: PASS (${TIMES[*]:-})"; else echo "images: FAIL (exit $rc)" >&2; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' INT TERM

# ---- packages: podman; runc as its runtime (crun refuses this machine's cgroups);
# catatonit, which podman builds the pods' pause image from
missing=""
for p in podman runc catatonit; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "images: installing$missing"
    timeout "$STEP_TIMEOUT" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout "$STEP_TIMEOUT" apt-get install -y -qq $missing >/dev/null
fi
lap "packages"

# ---- binaries: coffee for its image; the queue-proxy as the activator test's revision pod
timeout "$STEP_TIMEOUT" make -j2 --no-print-directory build/bin/coffee build/bin/queue-proxy >/dev/null
lap "make"

# Leftovers of an interrupted run (this store only).
pm pod rm -af -t 0 >/dev/null 2>&1 || true
pm rm -af -t 0 >/dev/null 2>&1 || true

# ---- base images, re-made only when the root tarball or the recipe changed
tarball=$(tests/fresh/rootfs.sh)
lap "rootfs"
stamp="$(stat -c '%s %Y' "$tarball") $(sha256sum tests/images/debian-base.sh | cut -c1-16)"
if [ "$(cat "$ROOT/build/images/bases.stamp" 2>/dev/null)" != "$stamp" ] \
   || ! pm image exists docker.io/library/debian:bookworm \
   || ! pm image exists docker.io/library/debian:bookworm-slim; then
    timeout "$STEP_TIMEOUT" tests/images/debian-base.sh $PODMAN
    echo "$stamp" > "$ROOT/build/images/bases.stamp"
fi
lap "base images"

# ---- the images. --network host for the build only: apt-get inside reaches
# the Debian mirror as the host's apt does (no bridge, no NAT to set up).
# --pull=never: the FROM images are the local ones above, never a registry.
build() { # tag dockerfile context
    if ! pm build --pull=never --network host -f "$2" -t "$1" "$3" > "$TMP/build.log" 2>&1; then
        tail -40 "$TMP/build.log" >&2
        echo "images: FAIL: build of $1 ($2)" >&2
        exit 1
    fi
    local bytes; bytes=$(pm image inspect --format '{{.Size}}' "$1")
    local mb=$((bytes / 1000000))
    echo "images: $1: ${mb} MB"
    if [ "$mb" -gt "$MAX_MB" ]; then
        echo "images: FAIL: $1 is ${mb} MB, over IMAGES_MAX_MB=$MAX_MB" >&2
        exit 1
    fi
    # Knative's pod spec needs a numeric non-root user and a flagless entrypoint.
    local cfg; cfg=$(pm image inspect --format '{{.Config.User}} {{json .Config.Entrypoint}} {{json .Config.Cmd}}' "$1")
    case "$cfg" in
        "65532:65532 [\"/ko-app/"*"\"] null") ;;
        *) echo "images: FAIL: $1: user/entrypoint/cmd are: $cfg" >&2; exit 1 ;;
    esac
}
export QP_IMAGE=localhost/coldbrew-queue-proxy:test
export ACTIVATOR_IMAGE=localhost/coldbrew-activator:test
export COFFEE_IMAGE=localhost/coldbrew-coffee:test
build "$QP_IMAGE" docker/queue-proxy.Dockerfile .
lap "build queue-proxy"
build "$ACTIVATOR_IMAGE" docker/activator.Dockerfile .
lap "build activator"
mkdir "$TMP/coffee"
cp build/bin/coffee "$TMP/coffee/"
build "$COFFEE_IMAGE" tests/images/coffee.Dockerfile "$TMP/coffee"
lap "build coffee"

# ---- run them as Kubernetes would
export PODMAN IMAGES_TMP=$TMP
timeout "$STEP_TIMEOUT" /usr/bin/python3 -u tests/images/test_images.py
lap "pods"

#!/usr/bin/env bash
# Prints the path of a tarball holding a fresh Debian 12 (bookworm) root,
# made with `debootstrap --variant=minbase` from the machine's Debian mirror
# and cached under build/rootfs/ (about 25 s the first time, then free).
#
#   tests/fresh/rootfs.sh            -> build/rootfs/bookworm-minbase.tar
#
# The tarball is what every fresh-root check starts from (tests/fresh/,
# the image builds in tests/images/): each unpacks its own copy, so no
# check sees what another one installed. Root only (debootstrap, chroot).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=build/rootfs/bookworm-minbase.tar
if [ -s "$out" ]; then echo "$out"; exit 0; fi
[ "$(id -u)" = 0 ] || { echo "rootfs: needs root (debootstrap)" >&2; exit 1; }
command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
# The mirror this machine's apt uses (deb822 or one-line sources), else Debian's.
mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1)
[ -n "$mirror" ] || mirror=$(awk '$1=="deb" && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
mirror=${mirror:-http://deb.debian.org/debian}
mkdir -p build/rootfs
tmp=$(mktemp -d build/rootfs/tmp.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
echo "rootfs: debootstrap --variant=minbase bookworm from $mirror" >&2
# A second try on a clean folder: a mirror that drops a download mid-run
# must not fail the check (debootstrap itself does not retry).
if ! debootstrap --variant=minbase bookworm "$tmp/root" "$mirror" > "$tmp/log" 2>&1; then
  echo "rootfs: debootstrap failed, trying once more; its last lines:" >&2; tail -5 "$tmp/log" >&2
  rm -rf --one-file-system "$tmp/root"
  debootstrap --variant=minbase bookworm "$tmp/root" "$mirror" > "$tmp/log" 2>&1 || { tail -20 "$tmp/log" >&2; exit 1; }
fi
# The same mirror for apt inside, plus security updates, as a Debian image has.
cat > "$tmp/root/etc/apt/sources.list" <<SRC
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian}/debian-security bookworm-security main
SRC
tar -C "$tmp/root" -cf "$tmp/root.tar" .
mv "$tmp/root.tar" "$out"
echo "$out"

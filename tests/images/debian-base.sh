#!/usr/bin/env bash
# Makes the two base images the Dockerfiles start FROM, without a registry:
# docker.io/library/debian:bookworm and :bookworm-slim, from the debootstrap
# minbase root that tests/fresh/rootfs.sh caches. What Debian's official
# images (debuerreotype) add to a debootstrap root is added here too:
#   - apt's "docker" settings (apt.conf.d/docker-clean and friends), without
#     which every RUN apt-get layer keeps the package cache and .bin caches;
#   - empty apt lists and caches (an image is pulled without them);
#   - for -slim: the docs, man pages, info pages and locales removed, and a
#     dpkg path-exclude file so that later installs do not bring them back.
#
#   tests/images/debian-base.sh PODMAN...   (the podman command with its flags)
# Called by tests/images/run.sh; root (unpacks a root filesystem with its owners).
set -euo pipefail
cd "$(dirname "$0")/../.."
tarball=$(tests/fresh/rootfs.sh)
work=$(mktemp -d "${TMPDIR:-/tmp}/cb-debian-base.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir "$root"
tar -C "$root" -xf "$tarball"

# --- what every Debian image carries (debuerreotype-minimizing-config)
cat > "$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
# Each RUN is a layer: apt must not leave downloaded .debs or its .bin caches in it.

DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };

Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
cat > "$root/etc/apt/apt.conf.d/docker-autoremove-suggests" <<'EOF'
# apt-get purge --auto-remove removes what was pulled in, even if something Suggests it.

Apt::AutoRemove::SuggestsImportant "false";
EOF
cat > "$root/etc/apt/apt.conf.d/docker-gzip-indexes" <<'EOF'
# Lists that a Dockerfile forgets to delete stay compressed.

Acquire::GzipIndexes "true";
EOF
cat > "$root/etc/apt/apt.conf.d/docker-no-languages" <<'EOF'
# No Translation files: images do not need them.

Acquire::Languages "none";
EOF
mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
cat > "$root/etc/dpkg/dpkg.cfg.d/docker-apt-speedup" <<'EOF'
# A build that loses power is redone anyway: no fsync per file.

force-unsafe-io
EOF
# An image is shipped without apt's lists and caches (apt-get update first).
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
mkdir -p "$root/var/lib/apt/lists/partial"
# Logs of the debootstrap run itself are not part of an image.
find "$root/var/log" -type f -delete

# CMD and PATH as Debian's images have them; no ENTRYPOINT.
tar -C "$root" --numeric-owner -cf "$work/full.tar" .
"${@}" import -q --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$work/full.tar" docker.io/library/debian:bookworm >/dev/null
rm -f "$work/full.tar"

# --- slim (debuerreotype-slimify): drop what containers do not read, keep
# copyright files and locale.alias, and tell dpkg to keep it that way.
cat > "$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
# The "slim" variant: files containers do not read stay out on later installs too.

path-exclude /usr/share/doc/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
path-exclude /usr/share/doc/kde/HTML/*/*
path-exclude /usr/share/gnome/help/*/*
path-exclude /usr/share/omf/*/*-*.emf
path-include /usr/share/doc/*/copyright
path-include /usr/share/doc/kde/HTML/C/*
path-include /usr/share/gnome/help/*/C/*
path-include /usr/share/locale/locale.alias
path-include /usr/share/omf/*/*-C.emf
EOF
(
    cd "$root/usr/share"
    find doc -mindepth 1 -depth ! -name copyright ! -type d -delete 2>/dev/null || true
    find doc -mindepth 1 -depth -type d -empty -delete 2>/dev/null || true
    rm -rf info/* linda/* lintian/overrides/* man/*
    find locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true
)
tar -C "$root" --numeric-owner -cf "$work/slim.tar" .
"${@}" import -q --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$work/slim.tar" docker.io/library/debian:bookworm-slim >/dev/null

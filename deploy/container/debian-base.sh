#!/usr/bin/env bash
# Builds a Debian 12 base image from Debian's packages alone (debootstrap), for machines
# that reach a Debian mirror but no container registry, and imports it into podman:
#
#   sudo apt-get install -y debootstrap podman
#   sudo deploy/container/debian-base.sh [IMAGE] [MIRROR]
#   sudo podman build --build-arg BASE=localhost/debian-base:bookworm -t pyserver:0.1.0 .
#
# IMAGE defaults to localhost/debian-base:bookworm, MIRROR to http://deb.debian.org/debian.
# The rootfs is the minbase variant less apt's caches, documentation and man pages.
set -euo pipefail
image="${1:-localhost/debian-base:bookworm}"
mirror="${2:-http://deb.debian.org/debian}"
work="$(mktemp -d /var/tmp/debian-base.XXXXXX)"
trap 'rm -rf "$work"' EXIT

debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror"
rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/* \
       "$work"/rootfs/usr/share/doc/* "$work"/rootfs/usr/share/man/* \
       "$work"/rootfs/var/log/* "$work"/rootfs/tmp/*
tar --numeric-owner -C "$work/rootfs" -c . |
    podman import --change 'CMD ["/bin/bash"]' - "$image"
podman image inspect --format '{{.Id}} {{.Size}}' "$image"

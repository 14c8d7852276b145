#!/usr/bin/env bash
# Build a local Debian bookworm Python base image for podman, for machines that
# reach Debian's package archive but no container registry.
#
#   scripts/podman-base-image.sh [IMAGE]        (default: localhost/python-base)
#
# Idempotent: when IMAGE already exists it does nothing, so the (slow) debootstrap
# runs once per machine and the image is cached in podman's store afterwards.
# The result is a stand-in for python:3.12-slim: Debian's python3 (3.11) with venv
# and pip, usable as `podman build --build-arg PYTHON_IMAGE=localhost/python-base`.
#
# Environment:
#   PODMAN             podman command (default: podman --cgroup-manager=cgroupfs --runtime=runc)
#   CONTAINERS_CONF    podman's containers.conf; when unset a minimal one with
#                      `default_ulimits = []` is written to a temporary file
#   DEBIAN_MIRROR      debootstrap mirror (default: the first URI of /etc/apt sources, else deb.debian.org)
set -euo pipefail

IMAGE="${1:-localhost/python-base}"
PODMAN="${PODMAN:-podman --cgroup-manager=cgroupfs --runtime=runc}"
SUITE="${DEBIAN_SUITE:-bookworm}"
PACKAGES="python3,python3-venv,python3-pip,python-is-python3,ca-certificates"

log() { printf 'podman-base-image: %s\n' "$*" >&2; }

cleanup_files=()
cleanup() {
    local f
    for f in "${cleanup_files[@]}"; do
        rm -rf --one-file-system -- "$f"
    done
}
trap cleanup EXIT

if [ -z "${CONTAINERS_CONF:-}" ]; then
    CONTAINERS_CONF="$(mktemp --suffix=.conf)"
    cleanup_files+=("$CONTAINERS_CONF")
    printf '[containers]\ndefault_ulimits = []\n' >"$CONTAINERS_CONF"
    export CONTAINERS_CONF
fi

# Serialise concurrent callers (two test sessions on one machine).
lockfile="${TMPDIR:-/tmp}/podman-base-image.lock"
exec 9>"$lockfile"
flock -w 1200 9 || { log "timed out waiting for $lockfile"; exit 1; }

if $PODMAN image exists "$IMAGE"; then
    log "$IMAGE exists (cached), nothing to do"
    exit 0
fi

for tool in debootstrap tar; do
    command -v "$tool" >/dev/null || { log "$tool not found (apt-get install debootstrap)"; exit 1; }
done
if [ "$(id -u)" -ne 0 ]; then
    log "debootstrap needs root"
    exit 1
fi

mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
    mirror="$(grep -hoE '^(URIs:[[:space:]]*|deb[[:space:]]+)https?://[^[:space:]]+/debian/?([[:space:]]|$)' \
        /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
        | grep -oE 'https?://[^[:space:]]+' | head -n1 || true)"
fi
mirror="${mirror:-http://deb.debian.org/debian}"

rootfs="$(mktemp -d "${TMPDIR:-/tmp}/python-base-rootfs.XXXXXX")"
cleanup_files+=("$rootfs")

log "debootstrap $SUITE from $mirror into $rootfs (a few minutes)"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
    tail -n 30 "$rootfs.log" >&2
    rm -f "$rootfs.log"
    exit 1
}
rm -f "$rootfs.log"

# pip may install into a virtual environment freely; the marker only guards the system site.
rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
# Slim the image: package caches and lists are not needed at run time.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log

log "importing $IMAGE"
tar -C "$rootfs" --numeric-owner -c . \
    | $PODMAN import --quiet --change 'CMD ["/usr/bin/python3"]' --change 'ENV LANG=C.UTF-8' - "$IMAGE" >/dev/null
log "$IMAGE ready"

#!/bin/sh
# make image, step 1: a local Debian bookworm base image built with
# debootstrap and `docker import`, under the tag the Dockerfile's BASE
# names (debian:bookworm), so the unmodified Dockerfile builds here as it
# would against a registry.  Skipped when the tag already exists.
# Usage: base.sh [TAG] [MIRROR]
set -eu
TAG=${1:-debian:bookworm}
MIRROR=${2:-http://deb.debian.org/debian}

if docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "base: $TAG exists, kept"
    exit 0
fi
command -v debootstrap >/dev/null 2>&1 || {
    echo "base: debootstrap is missing; run 'make deps' as root" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "base: debootstrap needs root" >&2; exit 1; }

ROOT=$(mktemp -d /tmp/clusterd-base-XXXXXX)
trap 'rm -rf "$ROOT"' EXIT INT TERM
echo "base: debootstrap --variant=minbase bookworm (a few minutes)"
debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" >"$ROOT.log" 2>&1 || {
    tail -n 30 "$ROOT.log" >&2; rm -f "$ROOT.log"; exit 1; }
rm -f "$ROOT.log"
# What the official image does: a sources list with the security and
# updates suites, no apt caches, no package lists in the layer.
cat >"$ROOT/etc/apt/sources.list" <<LIST
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
LIST
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/archives/*.deb
echo "base: docker import -> $TAG"
tar --numeric-owner -C "$ROOT" -c . |
    docker import -c 'CMD ["bash"]' -m "debootstrap --variant=minbase bookworm" - "$TAG" >/dev/null
echo "base: $TAG ready ($(docker image inspect -f '{{.Size}}' "$TAG") bytes)"

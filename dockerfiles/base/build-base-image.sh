#!/usr/bin/env bash
# Build a Python base image from Debian without any registry: debootstrap + docker import.
#   dockerfiles/base/build-base-image.sh SUITE [TAG]
# bullseye = Python 3.9, bookworm = 3.11, trixie = 3.13. The image has python3 with venv and
# the Debian CA bundle, which is all the rendered Dockerfiles need from a base image.
set -euo pipefail
suite=${1:?usage: build-base-image.sh bullseye|bookworm|trixie [TAG]}
tag=${2:-tf-load-matrix/base:$suite}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$suite" "$root" "$mirror"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$tag"
echo "built $tag"

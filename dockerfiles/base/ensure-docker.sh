#!/usr/bin/env bash
# Make a Docker engine answer and the local base image exist, installing what is missing.
# `make test` calls it, so a fresh Debian machine needs nothing by hand. No registry is needed:
# the base image is built from Debian (build-base-image.sh).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
base_image=${BASE_IMAGE:-tf-load-matrix/base:bookworm}
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  echo "ensure-docker: installing ${missing[*]}" >&2
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
fi

if ! $sudo docker info >/dev/null 2>&1; then
  echo "ensure-docker: starting dockerd (log: /tmp/tf-load-matrix-dockerd.log)" >&2
  $sudo sh -c 'nohup dockerd >/tmp/tf-load-matrix-dockerd.log 2>&1 &'
  for _ in $(seq 60); do $sudo docker info >/dev/null 2>&1 && break; sleep 1; done
  if ! $sudo docker info >/dev/null 2>&1; then
    echo "ensure-docker: dockerd did not start:" >&2
    tail -20 /tmp/tf-load-matrix-dockerd.log >&2
    exit 1
  fi
fi

if ! $sudo docker image inspect "$base_image" >/dev/null 2>&1; then
  echo "ensure-docker: building $base_image from Debian (a few minutes, once)" >&2
  suite=${base_image##*:}
  $sudo "$here/build-base-image.sh" "$suite" "$base_image"
fi

#!/usr/bin/env bash
# Installs the Debian packages berth uses (DESIGN.md §3). Idempotent: packages
# already installed are skipped, and apt-get update runs at most once, only when
# something is missing.
set -euo pipefail

packages=(
  runc conmon catatonit containernetworking-plugins iptables
  docker-registry busybox-static umoci skopeo
  golang-github-opencontainers-specs-dev golang-github-opencontainers-image-spec-dev
  util-linux procps iproute2 ca-certificates curl
  golang-github-containers-common  # /usr/share/containers/seccomp.json: the RuntimeDefault seccomp profile
  gcc libc6-dev  # a static helper in the seccomp e2e test (node-gyp needs them for the addon too)
  systemd  # systemd-analyze verify of packaging/berth.service in the tests; works without systemd running
  zstd openssl  # tests: zstd layers compressed by the reference tool; a CA and server certificate for hosts.toml
)

if [ "$(id -u)" != 0 ]; then
  echo "host-deps: must run as root (apt-get install)" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "host-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "host-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# --no-install-recommends keeps the set to what berth runs; policy-rc.d on the
# target decides whether services start (docker-registry's is not needed: berth
# starts its own instances on 127.0.0.1).
apt-get install -y -q --no-install-recommends "${missing[@]}"

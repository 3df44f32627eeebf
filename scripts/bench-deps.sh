#!/usr/bin/env bash
# Installs the benchmark-only peers (never needed by berth itself or its tests), idempotently:
#   - podman and hyperfine from Debian, when missing (apt-get update runs only then);
#   - /etc/containers/berth-bench.conf, the containers.conf the benches hand to podman through
#     CONTAINERS_CONF: this machine has no CAP_SYS_RESOURCE, so podman's default ulimits (raising
#     nofile/nproc) make every container fail to start; cgroupfs and file events because there is
#     no systemd; runc because crun refuses this host's hybrid cgroup layout (DESIGN.md §3).
#   - the packages whose files bench/pull's large fixture is built from (/usr/lib/python3.11, /usr/share/vim,
#     …, /usr/share/fish: LARGE in bench/pull.ts), so that it holds the same trees on every machine.
# Pods started by the benches use host networking bound to 127.0.0.1 or --network none.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "bench-deps: must run as root (apt-get install)" >&2
  exit 1
fi

packages=(podman hyperfine catatonit runc skopeo containerd
  libpython3.11-stdlib vim-runtime adwaita-icon-theme perl-modules-5.36 zsh-common locales cmake-data fish-common
  fonts-dejavu-core fonts-dejavu-extra java-common)
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bench-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "bench-deps: ${packages[*]} present"
fi

conf=/etc/containers/berth-bench.conf
mkdir -p /etc/containers
want=$(cat <<'CONF'
# Written by berth's scripts/bench-deps.sh; used by bench/* through CONTAINERS_CONF only.
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
netns = "none"
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
CONF
)
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$want" ]; then
  printf '%s\n' "$want" > "$conf"
  echo "bench-deps: wrote $conf"
fi

#!/usr/bin/env bash
# bench/pull: cold image pulls (large fixture, busybox) by berth, ctr (a private containerd), podman and the
# physical pipeline (curl | gzip -d | tar -x), in the same run (see bench/README.md).
#   bash bench/pull.sh [--runs 5] [--images large,busybox] [--tools berth,berthd,ctr,podman,physical] [--profile DIR]
# Needs root. Installs berth's deps and build when absent (scripts/setup.sh) and the bench-only peers
# (scripts/bench-deps.sh: podman, hyperfine, containerd).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/prepare.sh
bench_prepare pull peers
exec node dist/bench/pull.js "$@"

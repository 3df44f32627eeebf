#!/usr/bin/env bash
# bench/start: berth run --rm, 20 networked pods by berth up, daemon RSS and per-container PSS, next to
# ctr (a private containerd) and podman in the same run (see bench/README.md).
#   bash bench/start.sh [--runs N] [--pods N] [--many N]
# Needs root. Installs berth's deps and build when absent (scripts/setup.sh) and the bench-only peers
# (scripts/bench-deps.sh: podman, hyperfine, containerd).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/prepare.sh
bench_prepare start peers
exec node dist/bench/start.js "$@"

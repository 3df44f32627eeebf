#!/usr/bin/env bash
# bench/cli: wall time of berth --help, ps, validate and diff next to podman ps (see bench/README.md).
#   bash bench/cli.sh [--pods N] [--objects N] [--runs N] [--warmup N]
# Needs root. Installs berth's deps and build when absent (scripts/setup.sh), the bench-only peers
# (scripts/bench-deps.sh: podman, hyperfine, podman's containers.conf), then runs dist/bench/cli.js.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/prepare.sh
bench_prepare cli peers
exec node dist/bench/cli.js "$@"

#!/usr/bin/env bash
# bench/reconcile: the reconciler's figures on this machine next to podman's (see bench/README.md).
#   bash bench/reconcile.sh [--edits N] [--restarts N] [--pods N] [--resync S] [--window S] [--only 1,2,3,4]
# Needs root. Installs berth's deps and build when absent (scripts/setup.sh), the bench-only peers
# (scripts/bench-deps.sh: podman, hyperfine, podman's containers.conf), then runs dist/bench/reconcile.js.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/prepare.sh
bench_prepare reconcile peers
exec node dist/bench/reconcile.js "$@"

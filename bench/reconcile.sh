#!/usr/bin/env bash
# bench/reconcile: the reconciler's figures on this machine next to podman's (see bench/README.md).
#   bash bench/reconcile.sh [--edits N] [--restarts N] [--pods N] [--resync S] [--window S] [--only 1,2,3,4]
# Needs root. Installs berth's deps and build when absent (scripts/setup.sh), the bench-only peers
# (scripts/bench-deps.sh: podman, hyperfine, podman's containers.conf), then runs dist/bench/reconcile.js.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d node_modules ] || [ ! -f build/Release/berth_sys.node ] || [ ! -f dist/src/cli.js ]; then
  bash scripts/setup.sh
fi
if [ ! -f dist/bench/reconcile.js ] || [ bench/reconcile.ts -nt dist/bench/reconcile.js ] || [ ! -f dist/bench/common.js ] || [ bench/common.ts -nt dist/bench/common.js ]; then
  # tsc emits even when files outside bench/ have type errors; only a missing output is fatal.
  npx --no-install tsc -p tsconfig.json || echo "bench/reconcile: tsc reported errors (output emitted anyway)" >&2
  [ -f dist/bench/reconcile.js ] || { echo "bench/reconcile: dist/bench/reconcile.js was not built" >&2; exit 1; }
fi
bash scripts/bench-deps.sh
exec node dist/bench/reconcile.js "$@"

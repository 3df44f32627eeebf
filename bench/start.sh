#!/usr/bin/env bash
# bench/start: berth run --rm, 20 networked pods by berth up, daemon RSS and per-container PSS, next to
# ctr (a private containerd) and podman in the same run (see bench/README.md).
#   bash bench/start.sh [--runs N] [--pods N] [--many N]
# Needs root. Installs berth's deps and build when absent (scripts/setup.sh) and the bench-only peers
# (scripts/bench-deps.sh: podman, hyperfine, containerd).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f node_modules/.package-lock.json ] || [ ! -f build/Release/berth_sys.node ] || [ ! -f dist/src/cli.js ]; then
  bash scripts/setup.sh
fi
if [ ! -f dist/bench/start.js ] || [ bench/start.ts -nt dist/bench/start.js ]; then
  npx --no-install tsc -p tsconfig.json || echo "bench/start: tsc reported errors (output emitted anyway)" >&2
  [ -f dist/bench/start.js ] || { echo "bench/start: dist/bench/start.js was not built" >&2; exit 1; }
fi
bash scripts/bench-deps.sh
exec node dist/bench/start.js "$@"

#!/usr/bin/env bash
# bench/cli: wall time of berth --help, ps, validate and diff next to podman ps (see bench/README.md).
#   bash bench/cli.sh [--pods N] [--objects N] [--runs N] [--warmup N]
# Needs root. Installs berth's deps and build when absent (scripts/setup.sh), the bench-only peers
# (scripts/bench-deps.sh: podman, hyperfine, podman's containers.conf), then runs dist/bench/cli.js.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d node_modules ] || [ ! -f build/Release/berth_sys.node ] || [ ! -f dist/src/cli.js ]; then
  bash scripts/setup.sh
fi
if [ ! -f dist/bench/cli.js ] || [ bench/cli.ts -nt dist/bench/cli.js ] || [ ! -f dist/bench/common.js ] || [ bench/common.ts -nt dist/bench/common.js ]; then
  # tsc emits even when files outside bench/ have type errors; only a missing output is fatal.
  npx --no-install tsc -p tsconfig.json || echo "bench/cli: tsc reported errors (output emitted anyway)" >&2
  [ -f dist/bench/cli.js ] && [ -f dist/bench/common.js ] || { echo "bench/cli: dist/bench/cli.js was not built" >&2; exit 1; }
fi
bash scripts/bench-deps.sh
exec node dist/bench/cli.js "$@"

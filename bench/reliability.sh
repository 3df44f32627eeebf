#!/usr/bin/env bash
# bench/reliability: issue 15's crash (injected points + random kill -9 of berth up), load, hostile-input,
# registry-fault, disk-full and property suites at full size, summed into one table (see bench/README.md).
#   bash bench/reliability.sh [--trials N] [--pods N] [--edits N] [--seconds S] [--cli N] [--property-runs N]
#                             [--only crash,load,hostile,faults,property]
# Needs root. Installs berth's deps and build when absent (scripts/setup.sh); no benchmark peers are needed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f node_modules/.package-lock.json ] || [ ! -f build/Release/berth_sys.node ] || [ ! -f dist/src/cli.js ]; then
  bash scripts/setup.sh
fi
if [ ! -f dist/bench/reliability.js ] || [ bench/reliability.ts -nt dist/bench/reliability.js ]; then
  npx --no-install tsc -p tsconfig.json || echo "bench/reliability: tsc reported errors (output emitted anyway)" >&2
  [ -f dist/bench/reliability.js ] || { echo "bench/reliability: dist/bench/reliability.js was not built" >&2; exit 1; }
fi
exec node dist/bench/reliability.js "$@"

#!/usr/bin/env bash
# bench/pull: cold image pulls (large fixture, busybox) by berth, ctr (a private containerd), podman and the
# physical pipeline (curl | gzip -d | tar -x), in the same run (see bench/README.md).
#   bash bench/pull.sh [--runs 5] [--images large,busybox] [--tools berth,ctr,podman,physical] [--profile DIR]
# Needs root. Installs berth's deps and build when absent (scripts/setup.sh) and the bench-only peers
# (scripts/bench-deps.sh: podman, hyperfine, containerd).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f node_modules/.package-lock.json ] || [ ! -f build/Release/berth_sys.node ] || [ ! -f dist/src/cli.js ]; then
  bash scripts/setup.sh
fi
if [ ! -f dist/bench/pull.js ] || [ bench/pull.ts -nt dist/bench/pull.js ]; then
  npx --no-install tsc -p tsconfig.json || echo "bench/pull: tsc reported errors (output emitted anyway)" >&2
  [ -f dist/bench/pull.js ] || { echo "bench/pull: dist/bench/pull.js was not built" >&2; exit 1; }
fi
bash scripts/bench-deps.sh
exec node dist/bench/pull.js "$@"

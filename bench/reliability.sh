#!/usr/bin/env bash
# bench/reliability: issue 15's crash (injected points + random kill -9 of berth up), load, hostile-input,
# registry-fault, disk-full and property suites at full size, summed into one table (see bench/README.md).
#   bash bench/reliability.sh [--trials N] [--pods N] [--edits N] [--seconds S] [--cli N] [--property-runs N]
#                             [--only crash,load,hostile,faults,property]
# Needs root. Installs berth's deps and build when absent (scripts/setup.sh); no benchmark peers are needed.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/prepare.sh
bench_prepare reliability
exec node dist/bench/reliability.js "$@"

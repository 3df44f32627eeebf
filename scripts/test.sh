#!/usr/bin/env bash
# README line 2: installs what the tests need, builds, and runs every suite
# (unit, contract, integration, e2e). In CI (CI=true) a missing e2e prerequisite
# (root, runc, conmon, overlayfs, docker-registry) fails the run instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
suites=()
for d in unit contract integration e2e; do
  [ -d "dist/test/$d" ] && suites+=("dist/test/$d")
done
# One file at a time: e2e tests share host resources (ports, runc, mounts).
exec node --test --test-concurrency=1 --test-reporter=spec "${suites[@]}"

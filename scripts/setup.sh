#!/usr/bin/env bash
# Installs everything berth needs on a Debian machine, idempotently: the Debian
# packages (host-deps.sh), the npm packages (npm ci, which also builds the native
# addon) and the TypeScript build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/host-deps.sh
# npm writes node_modules/.package-lock.json last: without it an earlier install was cut short.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
# The native addon (mknod/xattr for whiteouts) is built by npm's install hook; rebuild if absent.
[ -f build/Release/berth_sys.node ] || npm run build:native
npx --no-install tsc -p tsconfig.json
# Manifest validators as standalone code: the schemas are compiled once here, not at every command.
node dist/scripts/compile-schemas.js


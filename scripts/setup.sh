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
# The native addons (native/*.c, one per target of binding.gyp) are built by npm's install hook;
# rebuilt when one is absent or older than its source or binding.gyp.
for target in $(grep -o '"target_name": *"[a-z_]*"' binding.gyp | sed 's/.*"\([a-z_]*\)"$/\1/'); do
  addon="build/Release/$target.node"
  if [ ! -f "$addon" ] || [ binding.gyp -nt "$addon" ] || [ -n "$(find native -type f -newer "$addon")" ]; then
    npm run build:native
    break
  fi
done
npx --no-install tsc -p tsconfig.json
# Manifest validators as standalone code: the schemas are compiled once here, not at every command.
node dist/scripts/compile-schemas.js


#!/usr/bin/env bash
# README line 1: installs what berth needs, builds the demo image offline from this
# machine's busybox-static, pushes it to a docker-registry started on 127.0.0.1:5111,
# and runs `berth up manifests/` until Ctrl-C. The demo page is then at
# http://127.0.0.1:8080/. Containers keep running after Ctrl-C (that is the point of
# berth: it is not their parent); `berth delete -f manifests/` stops them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

REG_PORT="${BERTH_DEMO_REGISTRY_PORT:-5111}"
REG_DIR=/var/lib/berth-demo-registry
mkdir -p "$REG_DIR/storage"
cat > "$REG_DIR/config.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $REG_DIR/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REG_PORT
YML

reg_pid=""
cleanup() {
  if [ -n "$reg_pid" ]; then kill "$reg_pid" 2>/dev/null || true; wait "$reg_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

if curl -fsS "http://127.0.0.1:$REG_PORT/v2/" >/dev/null 2>&1; then
  echo "demo: registry already answers on 127.0.0.1:$REG_PORT"
else
  docker-registry serve "$REG_DIR/config.yml" >"$REG_DIR/registry.log" 2>&1 &
  reg_pid=$!
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$REG_PORT/v2/" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS "http://127.0.0.1:$REG_PORT/v2/" >/dev/null || { echo "demo: registry did not start, see $REG_DIR/registry.log" >&2; exit 1; }
fi

# `berth` on PATH, as `npm install -g .` would do it (idempotent): the launcher bin/berth.
chmod +x dist/src/cli.js bin/berth
ln -sfn "$PWD/bin/berth" /usr/local/bin/berth

node dist/scripts/fixture-image.js push --registry "127.0.0.1:$REG_PORT" --repo berth/demo --tag 1.0
echo "demo: open http://127.0.0.1:8080/ once berth reports converged; in another shell: berth ps, berth logs web"
berth --log-level info up manifests/ || true
echo "demo: containers keep running; stop them with: berth delete -f manifests/"

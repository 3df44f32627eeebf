# Sourced by the bench/*.sh wrappers: `bench_prepare NAME [peers]` installs berth's deps and build when
# absent (scripts/setup.sh), rebuilds dist/bench/NAME.js when bench/NAME.ts or bench/common.ts is newer
# (tsc emits even when files outside bench/ have type errors; only a missing output is fatal) and, with
# `peers`, installs the bench-only peers (scripts/bench-deps.sh: podman, hyperfine, containerd, podman's
# containers.conf). Run from the repository root.
bench_prepare() {
  local name=$1 js="dist/bench/$1.js"
  if [ ! -f node_modules/.package-lock.json ] || [ ! -f build/Release/berth_sys.node ] || [ ! -f dist/src/cli.js ]; then
    bash scripts/setup.sh
  fi
  if [ ! -f "$js" ] || [ "bench/$name.ts" -nt "$js" ] || [ ! -f dist/bench/common.js ] || [ bench/common.ts -nt dist/bench/common.js ]; then
    npx --no-install tsc -p tsconfig.json || echo "bench/$name: tsc reported errors (output emitted anyway)" >&2
    [ -f "$js" ] || { echo "bench/$name: $js was not built" >&2; exit 1; }
  fi
  if [ "${2:-}" = peers ]; then bash scripts/bench-deps.sh; fi
}

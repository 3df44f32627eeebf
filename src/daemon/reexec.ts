import { loadAddon } from '../lib/addon.js';
import { messageOf } from '../lib/errors.js';
import { EXTRA_CA_ENV } from '../lib/extra-ca.js';

/**
 * `berth up` runs node with flags that keep a long-running daemon small. V8 sizes its heap when
 * the isolate is created (`v8.setFlagsFromString` afterwards changes nothing for the young
 * generation), so the `up` command replaces its own process image, once, with node started with
 * them: execve(2) keeps the pid, the parent, the file descriptors (stdio, systemd sockets) and pending
 * signals, so systemd's main PID, a supervisor's signals and the exit code need no forwarding
 * (a launcher that spawned the daemon would also stay resident beside it). It costs one more
 * node start (~0.1 s) at daemon start only.
 *
 * Measured with 50 networked pods (VmRSS 3 s after they run; bench/README.md): 90–103 MB with
 * node's defaults, 68 MB with these. `--expose-gc` lets the daemon collect once its queue is idle
 * (daemon/up.ts); `--compact-on-every-full-gc` makes that collection (and V8's own, rare in a
 * small heap) move objects out of fragmented pages so that the pages are released (without it
 * V8's heuristics left 3 MB of them: 71 MB); `--max-semi-space-size=1` bounds the young
 * generation (16 MiB semi-spaces by default) between idle points too, where it held 15–20 MB.
 * Tried and left out: `--optimize-for-size` (no gain once the idle collection runs),
 * `--v8-pool-size=1` (~2 MB less, but one V8 helper thread for the unpack threads' GCs too),
 * `--no-opt` (4 MB less: TurboFan's code is never paged in; but unpacking took ~15 % more CPU —
 * unpack threads share the flags), `--lite-mode` (pods took twice as long).
 *
 * `--no-wasm-dynamic-tiering --no-wasm-tier-up` keep WebAssembly on Liftoff, V8's baseline
 * compiler. The only wasm the daemon runs is undici's HTTP parser (llhttp), and on a daemon's first
 * pull V8 otherwise recompiled its hot parser function with TurboFan on a background thread:
 * ~110–145 ms of CPU (perf), competing with the pull itself on two cores, for a parser whose work
 * per response is a few header bytes and one span per body chunk. A cold busybox pull through a
 * fresh daemon: 291–304 ms → 239–267 ms wall, its CPU 230–270 → 130–160 ms (bench/README.md).
 * Both are needed: with dynamic tiering on, V8 tiers up hot functions whatever `--wasm-tier-up` says.
 */
export const DAEMON_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1', '--expose-gc', '--compact-on-every-full-gc', '--no-wasm-dynamic-tiering', '--no-wasm-tier-up'];

/**
 * Environment the daemon's node starts with when the operator set none: glibc makes an arena per
 * thread that allocates (up to 8 per core), and each keeps freed memory; two of them saved ~2 MB
 * with 50 pods. glibc reads it once, at start-up; the daemon then removes it again (with the mark),
 * so the processes it starts (conmon, runc, CNI plugins) get the environment it was given.
 */
export const DAEMON_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2' };

/**
 * Set in the environment of the re-executed daemon so that it never executes itself again
 * (should node ever drop one of the flags from execArgv); its value lists the DAEMON_ENV names
 * berth added. The daemon removes them and the mark at once (`forgetReexecEnv`).
 */
export const REEXEC_MARK = 'BERTH_UP_REEXEC';

/** A node option's name as node compares them: `_` and `-` alike, `--no-x` naming `x`, no value. */
function optionName(arg: string): string {
  const name = (arg.split('=', 1)[0] ?? arg).replaceAll('_', '-');
  return name.startsWith('--no-') ? `--${name.slice('--no-'.length)}` : name;
}

/**
 * The daemon flags node was not started with. A flag the operator set in either form (on the
 * command line or in NODE_OPTIONS, with any value, or negated) counts as set: theirs wins.
 */
export function missingDaemonFlags(execArgv: readonly string[], nodeOptions: string | undefined): string[] {
  const given = new Set([...execArgv, ...(nodeOptions ?? '').split(/\s+/)].filter((a) => a.startsWith('--')).map(optionName));
  return DAEMON_NODE_FLAGS.filter((f) => !given.has(optionName(f)));
}

export interface ProcessView {
  pid: number;
  execPath: string;
  /** process.argv: [node, script, ...args]. */
  argv: readonly string[];
  execArgv: readonly string[];
  env: NodeJS.ProcessEnv;
}

export interface DaemonExec {
  path: string;
  argv: string[];
  env: Record<string, string>;
  /** The daemon flags it adds (those node was not started with). */
  missing: string[];
}

/**
 * What `berth up` executes to get the daemon flags, or undefined when it runs with them already
 * (or was re-executed once: the mark). The command line is the same script and arguments, with
 * node's own options first: those node was started with, then the missing ones.
 */
export function daemonExec(p: ProcessView): DaemonExec | undefined {
  if (p.env[REEXEC_MARK] !== undefined) return undefined;
  const missing = missingDaemonFlags(p.execArgv, p.env.NODE_OPTIONS);
  const script = p.argv[1];
  if (missing.length === 0 || script === undefined) return undefined;
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(p.env)) if (v !== undefined) env[k] = v;
  const added = Object.keys(DAEMON_ENV).filter((k) => env[k] === undefined);
  for (const k of added) env[k] = DAEMON_ENV[k] ?? '';
  // As bin/berth does: node would parse the extra CAs at its start; the registry client reads them when it connects.
  if (env.NODE_EXTRA_CA_CERTS !== undefined) {
    env[EXTRA_CA_ENV] ??= env.NODE_EXTRA_CA_CERTS;
    delete env.NODE_EXTRA_CA_CERTS;
  }
  env[REEXEC_MARK] = added.join(',') || '-';
  return { path: p.execPath, argv: [p.execPath, ...p.execArgv, ...missing, script, ...p.argv.slice(2)], env, missing };
}

interface DaemonAddon {
  execve(path: string, argv: string[], env: string[], keepFds: number[]): never;
  mallocTrim(): boolean;
}

let addon: DaemonAddon | undefined;

/**
 * The berth_daemon addon (native/daemon.c): execve(2) — not Node ≥ 22.15's process.execve,
 * which passes only stdio on, where this must also pass systemd's sockets (`inheritedFds`) —
 * and malloc_trim(3).
 */
function daemonAddon(): DaemonAddon {
  return (addon ??= loadAddon<DaemonAddon>('berth_daemon', ['execve', 'mallocTrim']));
}

/**
 * The descriptors the new image keeps: stdio, and the sockets systemd passed this process
 * (sd_listen_fds(3): LISTEN_FDS of them from 3 on, when LISTEN_PID is this pid — the pid
 * execve keeps). Node marked every inherited descriptor close-on-exec at start-up.
 */
export function inheritedFds(env: NodeJS.ProcessEnv, pid: number): number[] {
  const fds = [0, 1, 2];
  const n = Number(env.LISTEN_FDS);
  if (env.LISTEN_PID === String(pid) && Number.isSafeInteger(n) && n > 0 && n <= 1000) for (let i = 0; i < n; i++) fds.push(3 + i);
  return fds;
}

/** In the re-executed daemon: removes the mark and the DAEMON_ENV variables berth added. */
export function forgetReexecEnv(env: NodeJS.ProcessEnv): void {
  const mark = env[REEXEC_MARK];
  if (mark === undefined) return;
  for (const k of mark.split(',')) if (Object.hasOwn(DAEMON_ENV, k)) delete env[k];
  delete env[REEXEC_MARK];
}

/**
 * Replaces this process with the daemon's node when `daemonExec` says so; returns only when it
 * does not (nothing to do, or execve failed: then the reason, and the daemon runs on without
 * the flags — they save memory, nothing depends on them). Must run before anything reads or
 * writes stdio or starts a process: the new image inherits the descriptors as they are.
 */
export function reexecWithDaemonFlags(p: ProcessView): { failed?: string } {
  const plan = daemonExec(p);
  if (plan === undefined) return {};
  try {
    daemonAddon().execve(
      plan.path,
      plan.argv,
      Object.entries(plan.env).map(([k, v]) => `${k}=${v}`),
      inheritedFds(p.env, p.pid),
    );
  } catch (err) {
    return { failed: `berth up: could not restart node with ${plan.missing.join(' ')} (running without them, using more memory): ${messageOf(err)}` };
  }
  return {};
}

/**
 * What the idle daemon runs (daemon/up.ts `collectGarbage`): a full V8 collection, then
 * malloc_trim over glibc's arenas, which keep what the pool threads, V8's compiler and the GC
 * helpers freed. Undefined without `gc` (node not started with --expose-gc: the re-exec failed or
 * the operator chose the flags) or without the addon.
 */
export function idleCollector(gc: (() => void) | undefined): (() => void) | undefined {
  if (gc === undefined) return undefined;
  let trim: () => boolean;
  try {
    trim = daemonAddon().mallocTrim;
  } catch {
    return gc;
  }
  return () => {
    gc();
    trim();
  };
}

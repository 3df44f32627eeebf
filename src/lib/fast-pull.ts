import * as path from 'node:path';
import { postNdjson } from './daemon-stream.js';
import { errorLine, exitCodeOf, isErrorCode } from './errors.js';
import { daemonSocket, fastGlobals } from './fast-read.js';
import { ProgressRenderer, type ProgressStream, type StepProgress, type StepWait } from './progress.js';

/**
 * The `berth images pull` fast path (issue 14, "≤ 0.8 × podman for a one-layer busybox"): with
 * a running `berth up`, the pull is one request on the daemon's socket (`POST /v1/images/pull`,
 * daemon/pull.ts), sent before commander, the logger, the runtime, undici or SQLite is loaded,
 * as `ctr images pull` hands its pull to the running containerd. The daemon streams the
 * progress events the in-process pull renders, each with its plan line, and they go through
 * the same renderer (lib/progress): the same lines, the same final `REF DIGEST` line, the same
 * `error ERR_…: …` line and exit code.
 *
 * Only the plain forms are taken: `[--root D] [--state D] [--log-level L] images pull
 * [-q|--quiet] [--platform P] REF`, each flag at most once, anywhere after `pull`. Anything else
 * — another flag (--registry-config, --registry-hosts-dir, …), no daemon, a daemon without the
 * route, a daemon started with another --root than the one given (it refuses before anything
 * runs) — returns false having printed nothing, and the caller runs the normal path, which does
 * the same work or says why it cannot. The daemon pulls into its root with the registry options
 * it was started with.
 */

export interface FastPull {
  socket: string;
  /** The body of `POST /v1/images/pull` (daemon/pull.ts's PullRequest). */
  request: {
    ref: string;
    platform?: string;
    quiet: boolean;
    client: { root: string | null; registryConfig: null; registryHostsDir: null };
  };
}

/** The pull a command line stands for when the fast path may take it, else undefined. `args`: argv after node and the script. */
export function parseFastPull(args: readonly string[]): FastPull | undefined {
  const g = fastGlobals(args, 'images');
  if (g === undefined || args[g.at + 1] !== 'pull') return undefined;
  const { globals } = g;
  let i = g.at;
  let quiet = false;
  let platform: string | undefined;
  let ref: string | undefined;
  for (i += 2; i < args.length; i++) {
    const a = args[i] ?? '';
    if (!a.startsWith('-')) {
      if (ref !== undefined) return undefined;
      ref = a;
      continue;
    }
    if (a === '-q' || a === '--quiet') {
      if (quiet) return undefined;
      quiet = true;
      continue;
    }
    const eq = a.startsWith('--') ? a.indexOf('=') : -1;
    if ((eq > 0 ? a.slice(0, eq) : a) !== '--platform' || platform !== undefined) return undefined;
    const value = eq > 0 ? a.slice(eq + 1) : args[++i];
    if (value === undefined || value === '' || value.startsWith('-')) return undefined;
    platform = value;
  }
  if (ref === undefined || ref === '') return undefined;
  const root = globals.get('--root');
  return {
    socket: daemonSocket(globals.get('--state')),
    request: {
      ref,
      ...(platform !== undefined ? { platform } : {}),
      quiet,
      client: {
        root: root !== undefined ? path.resolve(root) : null,
        registryConfig: null,
        registryHostsDir: null,
      },
    },
  };
}

/** A step as the daemon sends it, with the plan line the normal path's renderStep prints for it. */
type PullStep = { kind: string; image?: string; line: string };

type Line = {
  progress?: { phase?: StepProgress<PullStep>['phase']; step?: { kind?: string; image?: string }; ms?: number; error?: { code: string; message: string }; wait?: StepWait };
  line?: string;
  result?: { ref?: string; digest?: string };
  error?: { code?: string; message?: string };
};

/**
 * Pulls `p` through the daemon: taken once the daemon took it (progress and result or error
 * printed), not taken — nothing printed — when no daemon took it.
 */
export async function fastPullThroughDaemon(p: FastPull, out: { stdout: ProgressStream; stderr: (s: string) => void }): Promise<{ taken: boolean; exitCode: number }> {
  const renderer = p.request.quiet ? undefined : new ProgressRenderer<PullStep>({ out: out.stdout, describe: (s) => s.line, announceStart: (s) => s.kind === 'pull' });
  let exitCode = 1;
  let final: (() => void) | undefined;
  const outcome = await postNdjson(p.socket, '/v1/images/pull', p.request, (v) => {
    const m = v as Line;
    const e = m.progress;
    if (e !== undefined) {
      if (renderer !== undefined && e.phase !== undefined && typeof e.step?.kind === 'string') {
        renderer.handle({
          phase: e.phase,
          step: { kind: e.step.kind, ...(typeof e.step.image === 'string' ? { image: e.step.image } : {}), line: m.line ?? '' },
          ...(e.ms !== undefined ? { ms: e.ms } : {}),
          ...(e.error !== undefined ? { error: e.error } : {}),
          ...(e.wait !== undefined ? { wait: e.wait } : {}),
        });
      }
      return false;
    }
    if (m.result !== undefined) {
      const r = m.result;
      exitCode = 0;
      final = () => out.stdout.write(`${r.ref ?? p.request.ref} ${r.digest ?? ''}\n`);
      return true;
    }
    if (m.error !== undefined) {
      const code = isErrorCode(m.error.code) ? m.error.code : 'ERR_INTERNAL';
      const message = m.error.message ?? `images pull ${p.request.ref}: failed`;
      exitCode = exitCodeOf(code);
      final = () => out.stderr(errorLine(code, message));
      return true;
    }
    return false;
  });
  // The progress block is cleared before the last line, as the normal path's withProgress does.
  renderer?.close();
  if (outcome === 'declined') return { taken: false, exitCode: 1 };
  if (outcome === 'cut') out.stderr(errorLine('ERR_NETWORK', `images pull ${p.request.ref}: the daemon closed the connection before the pull ended (did berth up stop?)`));
  final?.();
  return { taken: true, exitCode };
}

/** Answers `args` on the fast path and returns true, or returns false having printed nothing. */
export async function answerFastPull(args: readonly string[]): Promise<boolean> {
  const p = parseFastPull(args);
  if (p === undefined) return false;
  const res = await fastPullThroughDaemon(p, { stdout: process.stdout, stderr: (x) => process.stderr.write(x) });
  if (!res.taken) return false;
  process.exitCode = res.exitCode;
  return true;
}

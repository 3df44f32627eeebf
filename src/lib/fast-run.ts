import { errorLine, exitCodeOf, isErrorCode } from './errors.js';
import { postNdjson } from './daemon-stream.js';
import { daemonSocket, fastGlobals } from './fast-read.js';

/**
 * The `berth run` fast path (issue 13, "run --rm ≤ 1.5 × ctr run --rm"): with a running `berth
 * up`, the whole run — apply, output, exit code, `--rm`'s delete — is one request on the daemon's
 * socket (`POST /v1/run`, daemon/run.ts), sent before commander, the logger or any runtime module
 * is loaded, so this process costs node's start-up and little more; nothing is forked here.
 *
 * Only the plain forms are taken: `[--root D] [--state D] [--log-level L] run [--rm | -d]
 * [--net pod|host] [--name N] [-n NS] [-e K=V]... IMAGE [-- CMD...]`, options before IMAGE, each
 * value-taking flag at most once (-e repeatable). Anything else — another flag, an invalid value,
 * no daemon, a daemon without the route — returns false having printed nothing, and the caller
 * runs the normal path, which does the same work (and reports bad flags the usual way).
 */

export interface RunFlags {
  name: string;
  namespace: string;
  image: string;
  command: string[];
  env: { name: string; value: string }[];
  net: 'pod' | 'host';
  mode: 'attach' | 'rm' | 'detach';
}

/** The berth.dev/v1 Container `berth run` applies: the same document on every path. */
export function runDocument(f: Omit<RunFlags, 'mode'>): Record<string, unknown> {
  return {
    apiVersion: 'berth.dev/v1',
    kind: 'Container',
    metadata: { name: f.name, namespace: f.namespace },
    spec: {
      image: f.image,
      restartPolicy: 'Never',
      terminationGracePeriodSeconds: 2,
      ...(f.net === 'host' ? { hostNetwork: true } : {}),
      ...(f.command.length > 0 ? { command: f.command } : {}),
      ...(f.env.length > 0 ? { env: f.env } : {}),
    },
  };
}

/** `run`'s default pod name when --name is not given. */
export function randomRunName(): string {
  return `run-${Math.random().toString(36).slice(2, 8)}`;
}

export interface FastRun {
  socket: string;
  flags: RunFlags;
}

/** The run a command line stands for when the fast path may take it, else undefined. `args`: argv after node and the script. */
export function parseFastRun(args: readonly string[]): FastRun | undefined {
  const g = fastGlobals(args, 'run');
  if (g === undefined) return undefined;
  const { globals } = g;
  let i = g.at;
  const local = new Map<string, string>();
  const env: RunFlags['env'] = [];
  let rm = false;
  let detach = false;
  const alias: Record<string, string> = { '-n': '--namespace', '-e': '--env', '-d': '--detach' };
  for (i++; i < args.length; i++) {
    const a = args[i] ?? '';
    if (!a.startsWith('-')) break;
    const eq = a.startsWith('--') ? a.indexOf('=') : -1;
    const flag = eq > 0 ? a.slice(0, eq) : (alias[a] ?? a);
    if (flag === '--rm' || flag === '--detach') {
      if (eq > 0 || (flag === '--rm' ? rm : detach)) return undefined;
      if (flag === '--rm') rm = true;
      else detach = true;
      continue;
    }
    if (!['--net', '--name', '--namespace', '--env'].includes(flag)) return undefined;
    const value = eq > 0 ? a.slice(eq + 1) : args[++i];
    if (value === undefined || value === '' || value.startsWith('-')) return undefined;
    if (flag === '--env') {
      const at = value.indexOf('=');
      if (at <= 0) return undefined;
      env.push({ name: value.slice(0, at), value: value.slice(at + 1) });
      continue;
    }
    if (local.has(flag)) return undefined;
    local.set(flag, value);
  }
  const image = args[i];
  if (image === undefined || image.startsWith('-')) return undefined;
  const rest = args.slice(i + 1);
  if (rest.length > 0 && rest[0] !== '--') return undefined;
  const net = local.get('--net') ?? 'pod';
  if ((net !== 'pod' && net !== 'host') || (rm && detach)) return undefined;
  return {
    socket: daemonSocket(globals.get('--state')),
    flags: {
      name: local.get('--name') ?? randomRunName(),
      namespace: local.get('--namespace') ?? 'default',
      image,
      command: rest.slice(1),
      env,
      net,
      mode: rm ? 'rm' : detach ? 'detach' : 'attach',
    },
  };
}

type Line = { out?: string; err?: string; result?: { exitCode?: number; id?: string }; error?: { code?: string; message?: string } };

/**
 * Runs `r` through the daemon: true once the daemon took it (output printed, process.exitCode
 * set), false when no daemon took it and nothing was printed.
 */
export async function fastRunThroughDaemon(r: FastRun, out: { stdout: (s: string) => void; stderr: (s: string) => void }): Promise<{ taken: boolean; exitCode: number }> {
  const { flags } = r;
  const body = {
    input: { path: '-', stdinText: JSON.stringify(runDocument(flags)), display: 'berth run' },
    podKey: `${flags.namespace}/${flags.name}`,
    mode: flags.mode,
  };
  let exitCode = 1;
  const outcome = await postNdjson(r.socket, '/v1/run', body, (v) => {
    const m = v as Line;
    if (typeof m.out === 'string') out.stdout(m.out);
    if (typeof m.err === 'string') out.stderr(m.err);
    if (m.result !== undefined) {
      if (typeof m.result.id === 'string') out.stdout(`${m.result.id}\n`);
      exitCode = typeof m.result.exitCode === 'number' ? m.result.exitCode : 0;
      return true;
    }
    if (m.error !== undefined) {
      const code = isErrorCode(m.error.code) ? m.error.code : 'ERR_INTERNAL';
      out.stderr(errorLine(code, m.error.message ?? 'run failed'));
      exitCode = exitCodeOf(code);
      return true;
    }
    return false;
  });
  // Another answer than a 200 (no daemon, an older daemon without the route): nothing ran, the normal path takes over.
  if (outcome === 'declined') return { taken: false, exitCode: 1 };
  if (outcome === 'cut') out.stderr(errorLine('ERR_INTERNAL', 'run: the daemon closed the connection before the container ended'));
  return { taken: true, exitCode };
}

/** Answers `args` on the fast path and returns true, or returns false having printed nothing. */
export async function answerFastRun(args: readonly string[]): Promise<boolean> {
  const r = parseFastRun(args);
  if (r === undefined) return false;
  const res = await fastRunThroughDaemon(r, { stdout: (x) => process.stdout.write(x), stderr: (x) => process.stderr.write(x) });
  if (!res.taken) return false;
  process.exitCode = res.exitCode;
  return true;
}

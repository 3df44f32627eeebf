import { connect } from 'node:net';
import * as path from 'node:path';
import { podQuery, psOutput, statusOutput, type PodQuery, type PsPod, type ReadOutput, type StatusView, type TextOutput } from './pod-views.js';

/**
 * The read fast path: `ps`/`status` answered by a running `berth up` before commander, the
 * logger or anything else is loaded (issue 12, "ps ≤ 2 × podman ps": node's own start-up is most
 * of that budget). It takes the plain forms of those commands only, asks the daemon with one raw
 * HTTP/1.1 request on its socket (node:http's client costs milliseconds more to load and run)
 * and prints with lib/pod-views, the same code the commander path prints with. Anything else — an
 * unknown or repeated flag, `-o yaml`, no daemon, a daemon error, an answer it does not expect —
 * returns false and the caller runs the normal path, which then does all the talking (a failed
 * fast attempt prints nothing).
 */

export interface FastRead {
  method: 'pods' | 'status';
  socket: string;
  query: PodQuery;
  output: TextOutput;
  /** -A: a NAMESPACE column (present only when given). */
  allNamespaces?: true;
}

/** The --log-level values the fast paths accept (the normal path reports others). */
export const LOG_LEVELS = new Set(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']);
const OUTPUTS = new Set(['table', 'wide', 'json']);

/**
 * The request a command line stands for when the fast path may answer it, else undefined.
 * `args` is argv after node and the script. Accepted: `[--root D] [--state D] [--log-level L]
 * (ps|pods|status) [-n NS] [-l SEL] [-o table|wide|json] [-A] [POD...]`, each flag at most once, as
 * `--flag value` or `--flag=value` (`-x value` for short ones), no value starting with "-".
 */
export function parseFastRead(args: readonly string[]): FastRead | undefined {
  const globals = new Map<string, string>();
  const local = new Map<string, string>();
  const names: string[] = [];
  let command: 'pods' | 'status' | undefined;
  let all = false;
  const alias: Record<string, string> = { '-n': '--namespace', '-l': '--selector', '-o': '--output' };
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? '';
    if (!a.startsWith('-')) {
      if (command !== undefined) names.push(a);
      else if (a === 'ps' || a === 'pods') command = 'pods';
      else if (a === 'status') command = 'status';
      else return undefined;
      continue;
    }
    if (command !== undefined && (a === '-A' || a === '--all-namespaces')) {
      if (all) return undefined;
      all = true;
      continue;
    }
    const eq = a.startsWith('--') ? a.indexOf('=') : -1;
    const flag = eq > 0 ? a.slice(0, eq) : (alias[a] ?? a);
    const allowed = command === undefined ? ['--root', '--state', '--log-level'] : ['--namespace', '--selector', '--output'];
    if (!allowed.includes(flag)) return undefined;
    const value = eq > 0 ? a.slice(eq + 1) : args[++i];
    if (value === undefined || value === '' || value.startsWith('-')) return undefined;
    const into = command === undefined ? globals : local;
    if (into.has(flag)) return undefined;
    into.set(flag, value);
  }
  if (command === undefined) return undefined;
  const level = globals.get('--log-level');
  const output = local.get('--output') ?? 'table';
  if ((level !== undefined && !LOG_LEVELS.has(level)) || !OUTPUTS.has(output)) return undefined;
  const selector = local.get('--selector');
  if (names.length > 0 && (selector !== undefined || all)) return undefined;
  return {
    method: command,
    socket: daemonSocket(globals.get('--state')),
    query: podQuery(command === 'pods' ? 'ps' : 'status', names, { namespace: local.get('--namespace') ?? 'default', namespaceGiven: local.has('--namespace'), allNamespaces: all, ...(selector !== undefined ? { selector } : {}) }),
    output: output as TextOutput,
    ...(all ? { allNamespaces: true as const } : {}),
  };
}

/**
 * The global flags the run and pull fast paths take before their command word: `--root`,
 * `--state`, `--log-level` (a known level), each at most once, as `--flag value` or
 * `--flag=value`, no value starting with "-". Their values and the index of `command`, or
 * undefined when anything else comes first or `command` never does.
 */
export function fastGlobals(args: readonly string[], command: string): { globals: Map<string, string>; at: number } | undefined {
  const globals = new Map<string, string>();
  let i = 0;
  for (; i < args.length; i++) {
    const a = args[i] ?? '';
    if (a === command) break;
    const eq = a.startsWith('--') ? a.indexOf('=') : -1;
    const flag = eq > 0 ? a.slice(0, eq) : a;
    if (!['--root', '--state', '--log-level'].includes(flag) || globals.has(flag)) return undefined;
    const value = eq > 0 ? a.slice(eq + 1) : args[++i];
    if (value === undefined || value === '' || value.startsWith('-')) return undefined;
    globals.set(flag, value);
  }
  if (args[i] !== command) return undefined;
  const level = globals.get('--log-level');
  if (level !== undefined && !LOG_LEVELS.has(level)) return undefined;
  return { globals, at: i };
}

/** The daemon's socket under `--state` (default /run/berth), as the fast paths compute it. */
export function daemonSocket(state: string | undefined): string {
  return path.join(path.resolve(state ?? '/run/berth'), 'berth.sock');
}

/**
 * An HTTP/1.1 response read so far: its body once complete, when it is a 200 with a
 * Content-Length; `partial` while bytes are missing; `unusable` for anything else (an error
 * answer, a chunked body, more bytes than announced: the normal path's node:http client handles those).
 */
export function responseBody(raw: Buffer): { body: string } | 'partial' | 'unusable' {
  const end = raw.indexOf('\r\n\r\n');
  if (end < 0) return 'partial';
  const head = raw.subarray(0, end).toString('latin1').split('\r\n');
  if (!/^HTTP\/1\.[01] 200 /.test(head[0] ?? '')) return 'unusable';
  let length: number | undefined;
  for (const h of head.slice(1)) {
    const colon = h.indexOf(':');
    const name = h.slice(0, colon).trim().toLowerCase();
    if (name === 'transfer-encoding') return 'unusable';
    if (name === 'content-length') length = Number(h.slice(colon + 1).trim());
  }
  const body = raw.subarray(end + 4);
  if (length === undefined || !Number.isSafeInteger(length) || body.length > length) return 'unusable';
  return body.length < length ? 'partial' : { body: body.toString('utf8') };
}

/** How long the daemon has to start answering (as the normal path's ping). */
const FIRST_BYTE_MS = 2000;

/** POST /v1/<method> on the socket; the JSON answer, or undefined for anything but a plain 200. */
export function askDaemon(socket: string, method: string, body: unknown): Promise<unknown> {
  const text = JSON.stringify(body);
  return new Promise((resolve) => {
    let raw: Buffer = Buffer.alloc(0);
    const s = connect(socket);
    const timer = setTimeout(() => s.destroy(), FIRST_BYTE_MS);
    let settled = false;
    const settle = (b: ReturnType<typeof responseBody>): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.destroy();
      try {
        resolve(typeof b === 'object' ? (JSON.parse(b.body) as unknown) : undefined);
      } catch {
        resolve(undefined);
      }
    };
    // Done as soon as the announced bytes are in: waiting for the daemon's close costs a millisecond.
    s.on('data', (c: Buffer) => {
      clearTimeout(timer);
      raw = raw.length === 0 ? c : Buffer.concat([raw, c]);
      const b = responseBody(raw);
      if (b !== 'partial') settle(b);
    });
    s.on('error', () => undefined);
    s.on('close', () => settle(responseBody(raw)));
    // write, not end: a half-closed request is not what every HTTP server waits out; the
    // daemon closes the connection after its answer (Connection: close).
    s.write(`POST /v1/${method} HTTP/1.1\r\nHost: berth\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`);
  });
}

/** What the fast path prints for `r`, or undefined when the daemon did not answer it plainly. */
export async function fastReadOutput(r: FastRead, now: () => number = Date.now): Promise<ReadOutput | undefined> {
  const answer = await askDaemon(r.socket, r.method, r.query);
  if (answer === undefined || (typeof answer === 'object' && answer !== null && 'error' in answer)) return undefined;
  const o = { output: r.output, now: now(), allNamespaces: r.allNamespaces === true };
  return r.method === 'pods' ? psOutput(answer as PsPod[], r.query, o) : statusOutput(answer as StatusView, r.query, o);
}

/** Answers `args` on the fast path and returns true, or returns false having printed nothing. */
export async function answerFastRead(args: readonly string[]): Promise<boolean> {
  const r = parseFastRead(args);
  if (r === undefined) return false;
  const out = await fastReadOutput(r);
  if (out === undefined) return false;
  process.stdout.write(out.stdout);
  if (out.stderr !== '') process.stderr.write(out.stderr);
  if (out.exitCode !== undefined) process.exitCode = out.exitCode;
  return true;
}

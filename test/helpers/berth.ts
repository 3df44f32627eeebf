import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Path of the compiled CLI: dist/test/helpers → dist/src/cli.js */
export const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli.js');
export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
/** The command users run (bin/berth: node on dist/src/cli.js, NODE_EXTRA_CA_CERTS left to the registry client). */
export const LAUNCHER = path.join(REPO, 'bin', 'berth');

export interface BerthEnv {
  root: string;
  state: string;
  dir: string; // scratch dir for manifests
}

export function makeEnv(prefix = 'berth-test-'): BerthEnv {
  const base = mkdtempSync(path.join(os.tmpdir(), prefix));
  return { root: path.join(base, 'root'), state: path.join(base, 'state'), dir: base };
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  /** The signal that ended the process, when one did. */
  signal?: NodeJS.Signals;
}

/**
 * Runs the CLI and resolves with its exit; `signal` is set when it was killed by one (code -1).
 * `opts.env`: the child's whole environment (default: this process's).
 */
export function berth(env: BerthEnv, args: string[], opts: { timeoutMs?: number; input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, '--root', env.root, '--state', env.state, ...args], {
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      ...(opts.env !== undefined ? { env: opts.env } : {}),
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
    const t = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`berth ${args.join(' ')} timed out after ${timeoutMs}ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(t);
      resolve({ code: code ?? -1, stdout, stderr, ...(signal !== null ? { signal } : {}) });
    });
  });
}

/** Starts `berth up DIR` in the background; the caller kills it. */
export function berthUp(env: BerthEnv, dir: string, extra: string[] = [], opts: { env?: NodeJS.ProcessEnv } = {}): { child: ChildProcess; output: () => string } {
  const child = spawn(process.execPath, [CLI, '--root', env.root, '--state', env.state, '--log-level', 'info', 'up', dir, ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(opts.env !== undefined ? { env: opts.env } : {}),
  });
  let out = '';
  child.stdout?.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr?.on('data', (b: Buffer) => (out += b.toString()));
  return { child, output: () => out };
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000, stepMs = 100): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}${last !== undefined ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

/** Mount points under `dir` (from /proc/self/mountinfo). */
export async function mountsUnder(dir: string): Promise<string[]> {
  const text = await fsp.readFile('/proc/self/mountinfo', 'utf8');
  return text
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m === dir || m.startsWith(`${dir}/`));
}

/** conmon processes whose command line mentions `needle` (e.g. the test's state dir). */
/** Pids of live processes (not this one) whose command line contains `marker` (zombies have none). */
export async function processesWith(marker: string): Promise<string[]> {
  const found: string[] = [];
  for (const pid of await fsp.readdir('/proc')) {
    if (!/^\d+$/.test(pid) || pid === String(process.pid)) continue;
    const cmd = await fsp.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes(marker)) found.push(pid);
  }
  return found;
}

export async function conmonProcesses(needle: string): Promise<number[]> {
  const out: number[] = [];
  for (const pid of await fsp.readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const cmd = await fsp.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmd.startsWith('conmon\0') || cmd.includes('/conmon\0')) {
      if (cmd.includes(needle)) out.push(Number(pid));
    }
  }
  return out;
}

/**
 * Tears down whatever a test left: runc containers in its runc root, conmon processes,
 * mounts under its root, and the temp dirs.
 */
export async function cleanupEnv(env: BerthEnv): Promise<void> {
  const { execFileSync } = await import('node:child_process');
  const runcRoot = path.join(env.state, 'runc');
  try {
    const list = JSON.parse(execFileSync('runc', ['--root', runcRoot, 'list', '--format', 'json'], { encoding: 'utf8' }) || 'null') as { id: string }[] | null;
    for (const c of list ?? []) {
      try {
        execFileSync('runc', ['--root', runcRoot, 'delete', '--force', c.id], { stdio: 'ignore' });
      } catch {
        // already gone
      }
    }
  } catch {
    // no runc root
  }
  for (const pid of await conmonProcesses(env.state)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  const mounts = (await mountsUnder(env.dir)).sort((a, b) => b.length - a.length);
  for (const m of mounts) {
    try {
      execFileSync('umount', ['-l', m], { stdio: 'ignore' });
    } catch {
      // already gone
    }
  }
  await fsp.rm(env.dir, { recursive: true, force: true });
}

export async function httpGet(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(3000) });
  return { status: res.status, body: await res.text() };
}

/**
 * A cgroup control file of a process, on v1, hybrid or v2 hosts: `v1` names the
 * controller and file there (`memory`, `memory.limit_in_bytes`), `v2` the unified file
 * (`memory.max`). Returns the trimmed content.
 */
export async function cgroupValue(pid: number, v1: [controller: string, file: string], v2: string): Promise<string> {
  const lines = (await fsp.readFile(`/proc/${pid}/cgroup`, 'utf8')).trim().split('\n');
  for (const l of lines) {
    const [, controllers, p] = l.split(':');
    if (controllers?.split(',').includes(v1[0])) {
      return (await fsp.readFile(path.join('/sys/fs/cgroup', v1[0], p ?? '', v1[1]), 'utf8')).trim();
    }
  }
  const unified = lines.find((l) => l.startsWith('0::'));
  return (await fsp.readFile(path.join('/sys/fs/cgroup', unified?.slice(3) ?? '', v2), 'utf8')).trim();
}

/** Cgroup directories named after a container id anywhere under /sys/fs/cgroup (depth ≤ 3). */
export async function cgroupDirsOf(id: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string, depth: number): Promise<void> => {
    if (depth > 3) return;
    const entries = await fsp.readdir(dir, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const full = path.join(dir, e.name);
      if (e.name === id) out.push(full);
      else if (e.name === 'berth' || depth < 1) await walk(full, depth + 1);
    }
  };
  await walk('/sys/fs/cgroup', 0);
  return out;
}

/** Starts `berth up DIR` and resolves once its daemon answers on the socket. */
export async function startDaemon(env: BerthEnv, dir: string, opts: { extra?: string[]; env?: NodeJS.ProcessEnv } = {}): Promise<ReturnType<typeof berthUp>> {
  const u = berthUp(env, dir, opts.extra ?? ['--resync', '30'], opts.env !== undefined ? { env: opts.env } : {});
  await waitFor('daemon answers', async () => ((await berth(env, ['status', '-o', 'json'])).stdout.includes('"daemon": {') ? true : undefined), 30_000);
  return u;
}

/** Stops a `berth up` (SIGKILL unless told otherwise) and waits for it; no-op when it already exited. */
export async function stopDaemon(u: ReturnType<typeof berthUp>, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (u.child.exitCode !== null || u.child.signalCode !== null) return;
  u.child.kill(signal);
  await new Promise((r) => u.child.once('exit', r));
}

/**
 * Waits until the daemon has run `n` more resync passes than it had when called (the clock
 * of `berth up`: a test that needs "at least one resync" waits for one instead of sleeping).
 */
export async function waitResyncs(env: BerthEnv, n: number, timeoutMs = 60_000): Promise<void> {
  const count = async (): Promise<number | undefined> => {
    const r = await berth(env, ['status', '-o', 'json']);
    return (JSON.parse(r.stdout) as { daemon: { resyncs: number } | null }).daemon?.resyncs;
  };
  const start = await waitFor('daemon answers', count, timeoutMs);
  await waitFor(`${n} resync pass(es)`, async () => {
    const now = await count();
    return now !== undefined && now >= start + n ? true : undefined;
  }, timeoutMs, 100);
}

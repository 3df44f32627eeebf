import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { EventEmitter } from 'node:events';
import { Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { constants as osc } from 'node:os';
import { BerthError } from './errors.js';
import { nativeSpawn, resolveExecutable, type SpawnBinding } from './spawn.js';

export interface RunProcessOptions {
  /** Wall-clock deadline for the whole run; at expiry the process group is SIGKILLed. */
  timeoutMs: number;
  signal?: AbortSignal;
  cwd?: string;
  /** Names the call in errors, e.g. `start task c1: runc`. */
  what: string;
  /** The child's whole environment (default: this process's). */
  env?: NodeJS.ProcessEnv;
  /** Written to stdin, which is then closed. Without it stdin is /dev/null. */
  input?: string;
  /** Captured bytes beyond these are dropped (default 4 MiB stdout, 64 KiB stderr). */
  maxStdoutBytes?: number;
  maxStderrBytes?: number;
}

/** Rejection of a run that exited non-zero, shaped like execFile's error so stderr parsers keep working. */
export interface ProcessExitError extends Error {
  stdout: string;
  stderr: string;
  /** Exit status, or null when a signal ended the process. */
  code: number | null;
  signal: NodeJS.Signals | null;
}

/**
 * After SIGKILL, how long to wait for the group to go before settling anyway: a process in
 * uninterruptible sleep (mount(2) on a hung NFS server) dies only when its syscall returns.
 */
const KILL_GRACE_MS = 1000;

/**
 * Runs `file args` to completion with a deadline. The child gets its own process group
 * (`detached`), so at the deadline or on abort the whole group is SIGKILLed: a wrapper
 * script's `sleep`, or a grandchild holding the output pipes, cannot keep the caller waiting.
 *
 * Rejects with BerthError ERR_TIMEOUT at the deadline, with `signal.reason` on abort, with
 * BerthError ERR_PRECONDITION when the file cannot be started, and with a ProcessExitError on
 * a non-zero exit. After a kill it settles once the group's pipes have closed, or at most
 * KILL_GRACE_MS later; a descendant that left the group (setsid) is not killed.
 */
/** How many runs took each path (tests check that the addon is really used). */
export const spawnCounts = { native: 0, forked: 0 };

export function runProcess(file: string, args: readonly string[], opts: RunProcessOptions): Promise<{ stdout: string; stderr: string }> {
  if (opts.signal?.aborted) return Promise.reject(opts.signal.reason);
  const native = nativeSpawn();
  return native !== undefined ? runSpawned(native, file, args, opts) : runForked(file, args, opts);
}

/** How much of stdout and stderr a run keeps (default 4 MiB and 64 KiB). */
function captureLimits(opts: RunProcessOptions): { maxOut: number; maxErr: number } {
  return { maxOut: opts.maxStdoutBytes ?? 4 * 2 ** 20, maxErr: opts.maxStderrBytes ?? 64 * 2 ** 10 };
}

/** The run's deadline (ERR_TIMEOUT) and its abort signal, each calling `fail`; returns what clears both. */
function armDeadline(opts: RunProcessOptions, fail: (why: unknown) => void): () => void {
  const timer = setTimeout(() => {
    fail(new BerthError('ERR_TIMEOUT', `${opts.what}: no answer within ${opts.timeoutMs / 1000}s (killed)`, { details: { timeoutMs: opts.timeoutMs } }));
  }, opts.timeoutMs);
  const onAbort = (): void => fail(opts.signal?.reason);
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  return () => {
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onAbort);
  };
}

/** The exit of a run: resolve with the output, or reject as a non-zero exit (execFile's shape). */
function finish(opts: RunProcessOptions, code: number | null, signal: NodeJS.Signals | null, stdout: string, stderr: string): { stdout: string; stderr: string } {
  if (code === 0) return { stdout, stderr };
  const why = code === null ? `killed by ${signal ?? 'a signal'}` : `exit status ${code}`;
  const e = new Error(`${opts.what}: ${why}${stderr.trim() === '' ? '' : `: ${stderr.trim()}`}`) as ProcessExitError;
  e.stdout = stdout;
  e.stderr = stderr;
  e.code = code;
  e.signal = signal;
  throw e;
}

const SIGNAL_NAMES = new Map<number, NodeJS.Signals>(Object.entries(osc.signals).map(([name, n]) => [n, name as NodeJS.Signals]));

/**
 * runProcess through posix_spawn (lib/spawn): same contract as the child_process path below —
 * own process group, deadline and abort kill the group, settled once the exit is known and
 * both output pipes have closed (or KILL_GRACE_MS after a kill) — without forking the daemon.
 */
function runSpawned(native: SpawnBinding, file: string, args: readonly string[], opts: RunProcessOptions): Promise<{ stdout: string; stderr: string }> {
  const { maxOut, maxErr } = captureLimits(opts);
  return new Promise((resolve, reject) => {
    const env = opts.env ?? process.env;
    const exe = resolveExecutable(file, env['PATH']);
    const cannot = (reason: string, cause?: unknown): void =>
      reject(new BerthError('ERR_PRECONDITION', `${opts.what}: cannot run ${file}: ${reason}`, cause !== undefined ? { cause } : {}));
    if (exe === null) {
      cannot(`spawn ${file} ENOENT`);
      return;
    }
    let pid: number;
    let stdout: Socket;
    let stderr: Socket;
    let stdin: Socket | null;
    try {
      const c = startNative(native, exe, [file, ...args], env, opts.cwd, [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe']);
      if (c === undefined) {
        runForked(file, args, opts).then(resolve, reject);
        return;
      }
      pid = c.pid;
      spawnCounts.native++;
      [stdin, stdout, stderr] = c.pipes as [Socket | null, Socket, Socket];
    } catch (err) {
      cannot((err as Error).message, err);
      return;
    }
    const out = capture(maxOut);
    const errOut = capture(maxErr);
    let open = 2;
    let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let failure: { why: unknown } | undefined;
    let settled = false;
    let grace: NodeJS.Timeout | undefined;
    const settle = (): void => {
      if (settled) return;
      settled = true;
      disarm();
      clearTimeout(grace);
      if (failure !== undefined) {
        stdout.destroy();
        stderr.destroy();
        reject(failure.why);
        return;
      }
      try {
        resolve(finish(opts, exit?.code ?? null, exit?.signal ?? null, out.text(), errOut.text()));
      } catch (e) {
        reject(e);
      }
    };
    const maybeDone = (): void => {
      if (exit !== undefined && open === 0) settle();
    };
    for (const [sock, sink] of [[stdout, out], [stderr, errOut]] as const) {
      sock.on('data', sink.push);
      sock.on('error', () => undefined);
      sock.on('close', () => {
        open--;
        maybeDone();
      });
    }
    if (stdin !== null) {
      // A child that exits without reading its input makes the write fail with EPIPE; the exit status decides.
      stdin.on('error', () => undefined);
      stdin.end(opts.input ?? '');
    }
    native.waitExit(pid).then(
      (r) => {
        exit = { code: r.code, signal: r.signal === null ? null : (SIGNAL_NAMES.get(r.signal) ?? null) };
        maybeDone();
      },
      (err: unknown) => {
        failure ??= { why: err };
        exit = { code: null, signal: null };
        maybeDone();
      },
    );
    const fail = (why: unknown): void => {
      if (failure !== undefined) return;
      failure = { why };
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        // the group is already gone
      }
      grace = setTimeout(settle, KILL_GRACE_MS);
    };
    const disarm = armDeadline(opts, fail);
  });
}

/**
 * posix_spawn with descriptor i of the child taken from stdio[i]: 'ignore' is /dev/null, 'pipe'
 * a pipe whose other end comes back as a Socket (writable for 0, readable above). Undefined when
 * a descriptor node gave us is one of the numbers the child's are moved to (then the caller
 * forks instead); throws what posix_spawn or pipe2 throw, with nothing left open.
 */
function startNative(native: SpawnBinding, exe: string, argv: readonly string[], env: NodeJS.ProcessEnv, cwd: string | undefined, stdio: readonly ('ignore' | 'pipe')[]): { pid: number; pipes: (Socket | null)[] } | undefined {
  const envp: string[] = [];
  for (const [k, v] of Object.entries(env)) if (v !== undefined) envp.push(`${k}=${v}`);
  const opened: number[] = [];
  const childFds: number[] = [];
  const ours: (number | null)[] = [];
  const closeAll = (fds: readonly number[]): void => {
    for (const fd of fds) {
      try {
        closeSync(fd);
      } catch {
        // already closed
      }
    }
  };
  try {
    for (let i = 0; i < stdio.length; i++) {
      if (stdio[i] === 'ignore') {
        const fd = openSync('/dev/null', i === 0 ? 'r' : 'w');
        opened.push(fd);
        childFds.push(fd);
        ours.push(null);
      } else {
        const [r, w] = native.pipe();
        opened.push(r, w);
        childFds.push(i === 0 ? r : w);
        ours.push(i === 0 ? w : r);
      }
    }
    if (opened.some((fd) => fd < stdio.length)) {
      closeAll(opened);
      return undefined;
    }
    const pid = native.spawn(exe, argv, envp, cwd ?? null, childFds, true);
    // The child has its copies; ours of its ends go, so EOF comes when it (and its group) are done.
    closeAll(childFds);
    return { pid, pipes: ours.map((fd, i) => (fd === null ? null : new Socket({ fd, readable: i !== 0, writable: i === 0 }))) };
  } catch (err) {
    closeAll(opened);
    throw err;
  }
}

/** What spawnChild answers: the part of ChildProcess its callers use ('exit' and 'error' events, pid, stdio, unref). */
export interface SpawnedChild extends EventEmitter {
  readonly pid: number | undefined;
  readonly stdio: (Readable | Writable | null)[];
  unref(): void;
}

/**
 * A longer-lived child with more than stdio (conmon's sync pipe on descriptor 3), through the
 * addon when it is there, else child_process; in its own process group either way (`detached`).
 * Emits 'exit' (code, signal) and, for a file that cannot be started, 'error' (asynchronously,
 * as child_process does).
 */
export function spawnChild(file: string, args: readonly string[], o: { cwd?: string; env?: NodeJS.ProcessEnv; stdio: readonly ('ignore' | 'pipe')[] }): SpawnedChild {
  const native = nativeSpawn();
  const env = o.env ?? process.env;
  const exe = native !== undefined ? resolveExecutable(file, env['PATH']) : null;
  let started: { pid: number; pipes: (Socket | null)[] } | Error | undefined;
  if (native !== undefined && exe !== null) {
    try {
      started = startNative(native, exe, [file, ...args], env, o.cwd, o.stdio);
    } catch (err) {
      started = err as Error;
    }
  }
  // No addon, a file not on PATH (child_process reports it its usual way), or low descriptors.
  if (native === undefined || started === undefined) {
    spawnCounts.forked++;
    return spawn(file, args, { detached: true, stdio: [...o.stdio], ...(o.cwd !== undefined ? { cwd: o.cwd } : {}), env }) as unknown as SpawnedChild;
  }
  const child = new EventEmitter() as EventEmitter & { pid: number | undefined; stdio: (Readable | Writable | null)[]; unref(): void };
  child.unref = (): void => undefined;
  if (started instanceof Error) {
    const err = started;
    child.pid = undefined;
    child.stdio = o.stdio.map(() => null);
    process.nextTick(() => child.emit('error', err));
    return child;
  }
  spawnCounts.native++;
  child.pid = started.pid;
  child.stdio = started.pipes;
  native.waitExit(started.pid).then(
    (r) => child.emit('exit', r.code, r.signal === null ? null : (SIGNAL_NAMES.get(r.signal) ?? null)),
    () => child.emit('exit', null, null),
  );
  return child;
}

/** runProcess through node's child_process (the addon was not built, or BERTH_NODE_SPAWN=1). */
function runForked(file: string, args: readonly string[], opts: RunProcessOptions): Promise<{ stdout: string; stderr: string }> {
  const { maxOut, maxErr } = captureLimits(opts);
  return new Promise((resolve, reject) => {
    spawnCounts.forked++;
    const child = spawn(file, args, {
      detached: true,
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      ...(opts.cwd === undefined ? {} : { cwd: opts.cwd }),
      ...(opts.env === undefined ? {} : { env: opts.env }),
    });
    const out = capture(maxOut);
    const err = capture(maxErr);
    child.stdout?.on('data', out.push);
    child.stderr?.on('data', err.push);
    if (opts.input !== undefined) {
      // A child that exits without reading its input makes the write fail with EPIPE; the exit status decides.
      child.stdin?.on('error', () => undefined);
      child.stdin?.end(opts.input);
    }

    let failure: { why: unknown } | undefined;
    let grace: NodeJS.Timeout | undefined;
    const settle = (): void => {
      disarm();
      clearTimeout(grace);
    };
    const fail = (why: unknown): void => {
      if (failure !== undefined) return;
      failure = { why };
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // the group is already gone
      }
      grace = setTimeout(() => {
        settle();
        child.stdout?.destroy();
        child.stderr?.destroy();
        child.unref();
        reject(why);
      }, KILL_GRACE_MS);
    };
    const disarm = armDeadline(opts, fail);

    // Only a failed spawn (ENOENT, EACCES) ends up here: the group is killed with process.kill.
    child.on('error', (e) => {
      settle();
      reject(failure?.why ?? new BerthError('ERR_PRECONDITION', `${opts.what}: cannot run ${file}: ${e.message}`, { cause: e }));
    });
    // 'close' waits for the pipes too, so the output is complete and, after a kill, the group
    // that held them is gone.
    child.on('close', (code, signal) => {
      settle();
      if (failure !== undefined) {
        reject(failure.why);
        return;
      }
      try {
        resolve(finish(opts, code, signal, out.text(), err.text()));
      } catch (e) {
        reject(e);
      }
    });
  });
}

function capture(max: number): { push: (b: Buffer) => void; text: () => string } {
  const parts: Buffer[] = [];
  let n = 0;
  return {
    push: (b: Buffer): void => {
      if (n >= max) return;
      const keep = b.length <= max - n ? b : b.subarray(0, max - n);
      parts.push(keep);
      n += keep.length;
    },
    text: () => Buffer.concat(parts).toString('utf8'),
  };
}

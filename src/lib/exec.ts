import { spawn } from 'node:child_process';
import { BerthError } from './errors.js';

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
export function runProcess(file: string, args: readonly string[], opts: RunProcessOptions): Promise<{ stdout: string; stderr: string }> {
  const maxOut = opts.maxStdoutBytes ?? 4 * 2 ** 20;
  const maxErr = opts.maxStderrBytes ?? 64 * 2 ** 10;
  return new Promise((resolve, reject) => {
    if (opts.signal?.aborted) {
      reject(opts.signal.reason);
      return;
    }
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
      clearTimeout(timer);
      clearTimeout(grace);
      opts.signal?.removeEventListener('abort', onAbort);
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
    const timer = setTimeout(() => {
      const s = opts.timeoutMs / 1000;
      fail(new BerthError('ERR_TIMEOUT', `${opts.what}: no answer within ${s}s (killed)`, { details: { timeoutMs: opts.timeoutMs } }));
    }, opts.timeoutMs);
    const onAbort = (): void => fail(opts.signal?.reason);
    opts.signal?.addEventListener('abort', onAbort, { once: true });

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
      const stdout = out.text();
      const stderr = err.text();
      if (code === 0) {
        resolve({ stdout, stderr });
        return;
      }
      const why = code === null ? `killed by ${signal ?? 'a signal'}` : `exit status ${code}`;
      const e = new Error(`${opts.what}: ${why}${stderr.trim() === '' ? '' : `: ${stderr.trim()}`}`) as ProcessExitError;
      e.stdout = stdout;
      e.stderr = stderr;
      e.code = code;
      e.signal = signal;
      reject(e);
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

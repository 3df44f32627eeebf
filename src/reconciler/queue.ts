import { systemClock, type Clock } from '../lib/clock.js';
import { BerthError } from '../lib/errors.js';

/**
 * What one run of the handler asks of the queue (controller-runtime's `reconcile.Result`).
 * `requeueAfter` > 0: run the key again after that many ms; absent or 0: nothing more to do.
 */
export interface Outcome {
  readonly requeueAfter?: number;
}

/**
 * Reconciles one key. Must be idempotent: the queue may run a key again at any time (dirty
 * re-run, retry, resync). `signal` aborts when the queue shuts down past its deadline.
 * A thrown error with `retryable === false` is terminal; any other throw is retried with backoff.
 */
export type Handler = (key: string, signal: AbortSignal) => Promise<Outcome>;

/**
 * Told about every failed run, for logging. `attempt` counts consecutive failures of the key,
 * this one included; `delayMs` is the retry delay, undefined when no retry is scheduled
 * (terminal error, or the queue is shutting down). Errors it throws are ignored.
 */
export type ErrorHook = (key: string, err: Error, attempt: number, delayMs: number | undefined) => void;

export interface WorkQueueOptions {
  /** Concurrency of every pool not listed in `pools`, the 'default' pool included. */
  readonly workers: number;
  readonly handler: Handler;
  readonly clock?: Clock;
  /** Names the pool a key runs in; default: every key in 'default'. Must be a pure function of the key. */
  readonly poolOf?: (key: string) => string;
  /** Concurrency per pool name, e.g. `{ pull: 2 }` so hanging pulls never hold a pod worker. */
  readonly pools?: Readonly<Record<string, number>>;
  /** First retry delay; default 1000 ms. Doubles per consecutive failure. */
  readonly baseDelayMs?: number;
  /** Retry delay cap, jitter included; default 300 000 ms. */
  readonly maxDelayMs?: number;
  /** Retry delays vary by ± this fraction; default 0.1, range [0, 1). */
  readonly jitter?: number;
  /** Source of jitter in [0, 1); default Math.random. */
  readonly random?: () => number;
  readonly onError?: ErrorHook;
}

interface Pool {
  readonly limit: number;
  readonly fifo: string[];
  running: number;
}

interface Waiter {
  settled: boolean;
  readonly resolve: (result: Outcome | Error) => void;
}

interface Run {
  readonly key: string;
  readonly pool: Pool;
  readonly controller: AbortController;
  /** Waiters registered before the handler was called; they get this run's result. */
  waiters: Waiter[];
  /** add(key) arrived while running: run once more when this run ends. */
  dirty: boolean;
}

interface Delayed {
  readonly at: number;
  readonly handle: unknown;
}

interface IdleWaiter {
  readonly keys: readonly string[] | ((key: string) => boolean) | undefined;
  readonly resolve: () => void;
}

/**
 * A rate-limited work queue of string keys (`pod/<ns>/<name>`, `image/<ref>`), modelled on
 * controller-runtime's workqueue + reconcileHandler:
 *
 * - a key is queued at most once, and never runs on two workers at a time; an add during a run
 *   marks the key dirty and it runs once more after the current run;
 * - keys are taken FIFO per pool, each pool with its own concurrency;
 * - the handler's outcome decides the requeue: success forgets the failure count (and re-adds
 *   after `requeueAfter`), a terminal error forgets with no retry, any other error retries after
 *   min(base × 2^(failures-1), max) ± jitter.
 *
 * All state is in memory; a process restart forgets queued keys and failure counts (startup
 * re-enqueues every key, so nothing is lost that matters).
 */
/** After the shutdown deadline aborted them: how long runs get to return before shutdown resolves anyway. */
const ABORTED_RUNS_WAIT_MS = 5_000;

export class WorkQueue {
  readonly #handler: Handler;
  readonly #clock: Clock;
  readonly #poolOf: (key: string) => string;
  readonly #poolLimits: Readonly<Record<string, number>>;
  readonly #workers: number;
  readonly #baseDelayMs: number;
  readonly #maxDelayMs: number;
  readonly #jitter: number;
  readonly #random: () => number;
  readonly #onError: ErrorHook | undefined;

  readonly #pools = new Map<string, Pool>();
  /** Keys waiting in some pool's fifo, not running. */
  readonly #queued = new Set<string>();
  readonly #runs = new Map<string, Run>();
  readonly #delayed = new Map<string, Delayed>();
  readonly #failures = new Map<string, number>();
  /** waitFor() callers whose run has not started yet. */
  readonly #waiters = new Map<string, Waiter[]>();
  #idleWaiters: IdleWaiter[] = [];
  #closed = false;
  #shutdown: Promise<string[]> | undefined;
  #drained: (() => void) | undefined;

  /** Throws ERR_INVALID_ARGUMENT for a concurrency below 1 or out-of-range delays/jitter. */
  constructor(opts: WorkQueueOptions) {
    const limits = opts.pools ?? {};
    for (const [name, n] of [['workers', opts.workers] as const, ...Object.entries(limits)]) {
      if (!Number.isInteger(n) || n < 1) throw new BerthError('ERR_INVALID_ARGUMENT', `work queue: ${name} concurrency must be an integer >= 1, got ${n}`);
    }
    const base = opts.baseDelayMs ?? 1000;
    const max = opts.maxDelayMs ?? 300_000;
    const jitter = opts.jitter ?? 0.1;
    if (!(base > 0) || !(max >= base) || !Number.isFinite(max)) {
      throw new BerthError('ERR_INVALID_ARGUMENT', `work queue: need 0 < baseDelayMs <= maxDelayMs < Infinity, got ${base} and ${max}`);
    }
    if (!(jitter >= 0 && jitter < 1)) throw new BerthError('ERR_INVALID_ARGUMENT', `work queue: jitter must be in [0, 1), got ${jitter}`);
    this.#handler = opts.handler;
    this.#clock = opts.clock ?? systemClock;
    this.#poolOf = opts.poolOf ?? (() => 'default');
    this.#poolLimits = limits;
    this.#workers = opts.workers;
    this.#baseDelayMs = base;
    this.#maxDelayMs = max;
    this.#jitter = jitter;
    this.#random = opts.random ?? Math.random;
    this.#onError = opts.onError;
  }

  /**
   * Queues `key` to run now. Idempotent: a key already queued stays queued once, in its place.
   * A key that is running is marked dirty and runs once more after the current run. Cancels a
   * pending delayed add of the key (this run's outcome decides the next one). No-op after shutdown.
   */
  add(key: string): void {
    if (this.#closed) return;
    this.#cancelDelayed(key);
    const run = this.#runs.get(key);
    if (run !== undefined) {
      run.dirty = true;
      return;
    }
    if (this.#queued.has(key)) return;
    const pool = this.#pool(key);
    this.#queued.add(key);
    pool.fifo.push(key);
    this.#pump(pool);
  }

  /**
   * Queues `key` to run `ms` from now; `ms` <= 0 is `add`. Of several pending times the
   * earliest wins, and a key already due now (queued, or dirty while running) ignores it.
   * Throws ERR_INVALID_ARGUMENT for a non-finite `ms`. No-op after shutdown.
   */
  addAfter(key: string, ms: number): void {
    if (!Number.isFinite(ms)) throw new BerthError('ERR_INVALID_ARGUMENT', `queue ${key}: delay must be finite, got ${ms}`);
    if (ms <= 0) {
      this.add(key);
      return;
    }
    if (this.#closed || this.#queued.has(key) || this.#runs.get(key)?.dirty === true) return;
    const at = this.#clock.now() + ms;
    const existing = this.#delayed.get(key);
    if (existing !== undefined && existing.at <= at) return;
    this.#cancelDelayed(key);
    const handle = this.#clock.setTimeout(() => {
      if (this.#delayed.get(key)?.handle !== handle) return;
      this.#delayed.delete(key);
      this.add(key);
    }, ms);
    this.#delayed.set(key, { at, handle });
  }

  /** Resets the key's failure count, so its next retry starts at the base delay. Leaves a pending retry in place. */
  forget(key: string): void {
    this.#failures.delete(key);
  }

  /** Consecutive failed runs of the key since its last success, terminal error or `forget`. */
  failures(key: string): number {
    return this.#failures.get(key) ?? 0;
  }

  /** Clock time at which a delayed add (retry or requeueAfter) will queue the key, if one is pending. */
  nextRetryAt(key: string): number | undefined {
    return this.#delayed.get(key)?.at;
  }

  /** Keys queued to run now and not yet started (dirty running keys and delayed keys not counted). */
  pending(): number {
    return this.#queued.size;
  }

  /** Keys whose handler is running. */
  active(): number {
    return this.#runs.size;
  }

  /**
   * Resolves once none of `keys` (a list, a predicate, or all keys if omitted) is queued-now or running; delayed adds do
   * not count as busy. Rejects with `signal.reason` if the signal aborts first.
   */
  whenIdle(keys?: readonly string[] | ((key: string) => boolean), signal?: AbortSignal): Promise<void> {
    if (!this.#busy(keys)) return Promise.resolve();
    return this.#cancellable(signal, (resolve) => {
      const w: IdleWaiter = { keys, resolve };
      this.#idleWaiters.push(w);
      return () => {
        this.#idleWaiters = this.#idleWaiters.filter((x) => x !== w);
      };
    });
  }

  /**
   * Resolves with the result of the first run of `key` whose handler is called after this call:
   * its Outcome, or the Error it threw (never rejects for a handler error). Call it in the same
   * synchronous turn as `add(key)`, before or after; a key that never runs waits until shutdown,
   * which resolves it with an AbortError. Rejects with `signal.reason` if the signal aborts first.
   */
  waitFor(key: string, signal?: AbortSignal): Promise<Outcome | Error> {
    if (this.#closed) return Promise.resolve(shutDownError(key));
    return this.#cancellable(signal, (resolve) => {
      const w: Waiter = { settled: false, resolve };
      const list = this.#waiters.get(key) ?? [];
      list.push(w);
      this.#waiters.set(key, list);
      return () => {
        w.settled = true;
        const rest = (this.#waiters.get(key) ?? []).filter((x) => x !== w);
        if (rest.length > 0) this.#waiters.set(key, rest);
        else this.#waiters.delete(key);
      };
    });
  }

  /**
   * Stops taking work: drops queued and delayed keys, ignores later adds, resolves waitFor
   * callers whose run never started with an AbortError. Resolves with [] once running handlers
   * have finished, or after `deadlineMs` aborts their signals and resolves with the keys still
   * running then (their handlers may finish later; results are no longer requeued).
   * Idempotent: later calls return the first call's promise.
   */
  shutdown(deadlineMs: number): Promise<string[]> {
    if (this.#shutdown !== undefined) return this.#shutdown;
    this.#closed = true;
    for (const pool of this.#pools.values()) pool.fifo.length = 0;
    this.#queued.clear();
    for (const d of this.#delayed.values()) this.#clock.clearTimeout(d.handle);
    this.#delayed.clear();
    for (const run of this.#runs.values()) run.dirty = false;
    for (const [key, list] of this.#waiters) {
      // A taken key whose handler call is still a microtask away will run; its waiters stay.
      if (this.#runs.has(key)) continue;
      settleAll(list, shutDownError(key));
      this.#waiters.delete(key);
    }
    this.#checkIdle();
    this.#shutdown = new Promise<string[]>((resolve) => {
      const abortAll = (): void => {
        this.#drained = undefined;
        const running = [...this.#runs.keys()];
        for (const run of this.#runs.values()) {
          run.controller.abort(new DOMException(`queue shut down: deadline passed while ${run.key} was running`, 'AbortError'));
        }
        // The handlers see the abort between their steps: wait for them to return (bounded), so
        // the caller does not release the state lock under a step still running (regression
        // shutdown-releases-lock-under-running-steps). Those still running after that are named.
        if (this.#runs.size === 0) return resolve(running);
        const cut = this.#clock.setTimeout(() => {
          this.#drained = undefined;
          resolve([...this.#runs.keys()]);
        }, ABORTED_RUNS_WAIT_MS);
        this.#drained = () => {
          this.#clock.clearTimeout(cut);
          this.#drained = undefined;
          resolve(running);
        };
      };
      if (this.#runs.size === 0) resolve([]);
      else if (!(deadlineMs > 0)) abortAll();
      else {
        const handle = this.#clock.setTimeout(abortAll, deadlineMs);
        this.#drained = () => {
          this.#clock.clearTimeout(handle);
          this.#drained = undefined;
          resolve([]);
        };
      }
    });
    return this.#shutdown;
  }

  #pool(key: string): Pool {
    const name = this.#poolOf(key);
    let pool = this.#pools.get(name);
    if (pool === undefined) {
      pool = { limit: this.#poolLimits[name] ?? this.#workers, fifo: [], running: 0 };
      this.#pools.set(name, pool);
    }
    return pool;
  }

  #pump(pool: Pool): void {
    while (!this.#closed && pool.running < pool.limit) {
      const key = pool.fifo.shift();
      if (key === undefined) return;
      this.#queued.delete(key);
      pool.running++;
      const run: Run = { key, pool, controller: new AbortController(), waiters: [], dirty: false };
      this.#runs.set(key, run);
      // Deferred so add() never runs handler code on its caller's stack.
      queueMicrotask(() => void this.#execute(run));
    }
  }

  async #execute(run: Run): Promise<void> {
    // Waiters attach when the handler is called, not when the key is taken, so that
    // `add(k); waitFor(k)` in one turn waits for this run even if a worker was free.
    run.waiters = this.#waiters.get(run.key) ?? [];
    this.#waiters.delete(run.key);
    let result: Outcome | Error;
    try {
      const out: unknown = await this.#handler(run.key, run.controller.signal);
      result = typeof out === 'object' && out !== null ? (out as Outcome) : {};
    } catch (err) {
      result = err instanceof Error ? err : new Error(`reconcile ${run.key}: handler threw a non-error: ${String(err)}`, { cause: err });
    }
    this.#finish(run, result);
  }

  #finish(run: Run, result: Outcome | Error): void {
    const { key } = run;
    this.#runs.delete(key);
    run.pool.running--;
    if (result instanceof Error) {
      const attempt = this.failures(key) + 1;
      if ((result as { retryable?: unknown }).retryable === false) {
        this.#failures.delete(key);
        this.#report(key, result, attempt, undefined);
      } else {
        this.#failures.set(key, attempt);
        const delay = this.#closed ? undefined : this.#backoff(attempt);
        if (delay !== undefined) this.addAfter(key, delay);
        this.#report(key, result, attempt, delay);
      }
    } else {
      this.#failures.delete(key);
      const after = result.requeueAfter;
      if (typeof after === 'number' && Number.isFinite(after) && after > 0) this.addAfter(key, after);
    }
    settleAll(run.waiters, result);
    if (run.dirty) this.add(key);
    this.#pump(run.pool);
    this.#checkIdle();
    if (this.#runs.size === 0) this.#drained?.();
  }

  #backoff(attempt: number): number {
    const exp = Math.min(this.#baseDelayMs * 2 ** (attempt - 1), this.#maxDelayMs);
    const r = Math.min(Math.max(this.#random(), 0), 1);
    const jittered = exp * (1 + this.#jitter * (2 * r - 1));
    return Math.round(Math.min(jittered, this.#maxDelayMs));
  }

  #report(key: string, err: Error, attempt: number, delayMs: number | undefined): void {
    try {
      this.#onError?.(key, err, attempt, delayMs);
    } catch {
      // A logging hook must not take the queue down with it.
    }
  }

  #cancelDelayed(key: string): void {
    const d = this.#delayed.get(key);
    if (d === undefined) return;
    this.#clock.clearTimeout(d.handle);
    this.#delayed.delete(key);
  }

  #busy(keys: readonly string[] | ((key: string) => boolean) | undefined): boolean {
    if (keys === undefined) return this.#queued.size > 0 || this.#runs.size > 0;
    if (typeof keys === 'function') return [...this.#queued].some(keys) || [...this.#runs.keys()].some(keys);
    return keys.some((k) => this.#queued.has(k) || this.#runs.has(k));
  }

  #checkIdle(): void {
    const ready = this.#idleWaiters.filter((w) => !this.#busy(w.keys));
    if (ready.length === 0) return;
    this.#idleWaiters = this.#idleWaiters.filter((w) => !ready.includes(w));
    for (const w of ready) w.resolve();
  }

  /** `register` adds a waiter and returns how to remove it; abort removes it and rejects. */
  #cancellable<T>(signal: AbortSignal | undefined, register: (resolve: (v: T) => void) => () => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (signal?.aborted === true) {
        reject(signal.reason);
        return;
      }
      const onAbort = (): void => {
        unregister();
        reject(signal?.reason);
      };
      const unregister = register((v) => {
        signal?.removeEventListener('abort', onAbort);
        resolve(v);
      });
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}

function settleAll(waiters: readonly Waiter[], result: Outcome | Error): void {
  for (const w of waiters) {
    if (w.settled) continue;
    w.settled = true;
    w.resolve(result);
  }
}

function shutDownError(key: string): Error {
  return new DOMException(`wait for ${key}: queue shut down before it ran`, 'AbortError');
}

import { closeSync, constants as fsc, createReadStream, openSync, readSync } from 'node:fs';
import { Readable } from 'node:stream';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import type { Digest } from '../../lib/digest.js';
import { BerthError, errnoCode, messageOf, type ErrorCode, type ErrorDetails } from '../../lib/errors.js';
import type { Logger } from '../../lib/log.js';
import { syncfs } from '../../lib/sys.js';
import { unpackLayer, type UnpackLimits, type UnpackResult } from './index.js';
import { copyImpliedDirMeta } from './resolve.js';
import { codeForErrno } from './writer.js';

/**
 * One layer unpacked on a worker thread, so that several layers of a pull are written at once.
 *
 * Why threads: the writer's per-entry filesystem calls are synchronous (see writer.ts), so one
 * thread writes one entry at a time, and on a cold cache a file creation waits for the disk
 * (inode and block bitmaps). Layers are independent directories (E1: each into its own empty
 * directory), so writing them on separate threads overlaps those waits and uses every core; the
 * same unpackLayer runs there with every rule of INVARIANTS.md E1–E9.
 *
 * The one dependency between layers — a directory the tar implies copies its metadata from the
 * parent layers (a copy-up) — is deferred: the worker unpacks with `deferImpliedDirs`, and
 * `finishLayer` copies that metadata once the parents are ready, then syncs (E1: fsync before
 * the rename).
 */

/**
 * A layer blob while it downloads: the content store's partial file and how many of its bytes are
 * on disk (counted as write(2) returned, not as received). Given to UnpackThreads.unpack, the layer
 * is extracted from that file as it grows, so a blob is hashed, stored and extracted while it
 * downloads instead of after (issue 14). Nothing is trusted early: the unpacker verifies digest,
 * size and diffID of exactly the bytes it read, as from a committed blob, and the caller commits the
 * snapshot only once the blob itself is committed (ImageService.unpack).
 *
 * The download side calls `open` once it has the partial file, `advance` after each write, `reset`
 * when the file is emptied to start again from zero (an unpack reading it then fails, and
 * `wasReset` tells the caller to unpack again from the committed blob) and `close` when it writes
 * no more, whatever the outcome.
 */
export class BlobFeed {
  private path_: string | undefined;
  private written_ = 0;
  private reset_ = false;
  private closed = false;
  private readonly listeners = new Set<() => void>();
  private resolveOpened!: (open: boolean) => void;
  /** true once the partial file is there to read; false when the download ended without one (the blob was present, or failed first). */
  readonly opened = new Promise<boolean>((r) => (this.resolveOpened = r));

  constructor(readonly size: number) {}

  get path(): string | undefined {
    return this.path_;
  }

  get written(): number {
    return this.written_;
  }

  get wasReset(): boolean {
    return this.reset_;
  }

  open(path: string, written: number): void {
    if (this.closed || this.path_ !== undefined) return;
    this.path_ = path;
    this.written_ = written;
    this.resolveOpened(true);
  }

  advance(written: number): void {
    if (this.closed || this.reset_ || written <= this.written_) return;
    this.written_ = written;
    for (const fn of this.listeners) fn();
  }

  reset(): void {
    if (this.closed || this.reset_) return;
    this.reset_ = true;
    for (const fn of this.listeners) fn();
  }

  close(): void {
    this.closed = true;
    this.resolveOpened(false);
  }

  /** Calls `fn` after each advance and at a reset; returns the unsubscribe. */
  on(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
}

/**
 * The blob of `feed` as a stream read on this thread while it downloads (see BlobFeed), for a
 * layer unpacked here rather than on a worker: the partial file is read as it grows and the stream
 * ends after `feed.size` bytes. It fails if the download starts again from zero (`feed.wasReset`;
 * the caller unpacks the committed blob instead). Undefined when there is no partial file to read
 * any more (committed meanwhile: read `blobPath`).
 */
export function feedSource(feed: BlobFeed, layer: Digest): Readable | undefined {
  if (feed.wasReset) return undefined;
  const fd = openPartial(feed, layer);
  if (fd === undefined) return undefined;
  const source = new GrowingFileSource(fd, feed.size, feed.written);
  const unsubscribe = feed.on(() => {
    if (feed.wasReset) source.destroy(restartedError(layer));
    else source.grow(feed.written);
  });
  source.once('close', () => {
    unsubscribe();
    closeSync(fd);
  });
  return source;
}

/** The partial file of `feed`, open for reading; undefined when there is none (renamed: the blob is committed, read it where it is now). */
function openPartial(feed: BlobFeed, layer: Digest): number | undefined {
  if (feed.path === undefined) return undefined;
  try {
    return openSync(feed.path, fsc.O_RDONLY | fsc.O_NOFOLLOW);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw new BerthError(codeForErrno(errnoCode(err)), `unpack layer ${layer}: open ${feed.path}: ${messageOf(err)}`, { cause: err, details: { layer } });
  }
}

function restartedError(layer: Digest, cause?: unknown): BerthError {
  return new BerthError('ERR_INTERNAL', `unpack layer ${layer}: the download started again from zero`, { ...(cause !== undefined ? { cause } : {}), details: { layer } });
}

/** Bytes of a growing blob a worker is told about at once (fewer messages; 1 % of a 25 MiB layer). */
const FEED_STEP = 256 * 1024;

export interface ThreadUnpackOptions {
  /** The layer blob in the content store (verified again while it is read: digest, size, diffID). */
  blobPath: string;
  /** The blob while it downloads: read from its partial file as it grows (see BlobFeed); else from blobPath. */
  feed?: BlobFeed;
  mediaType: string;
  expected: { digest: Digest; size: number; diffId: Digest };
  dest: string;
  limits?: Partial<UnpackLimits>;
  allowDevices?: boolean;
  log?: Logger;
  signal?: AbortSignal;
}

interface Job {
  id: number;
  /** The committed blob, or an fd (opened by the main thread, which closes it) on a partial file holding `written` bytes so far. */
  source: { path: string } | { fd: number; written: number };
  mediaType: string;
  expected: { digest: Digest; size: number; diffId: Digest };
  dest: string;
  limits?: Partial<UnpackLimits>;
  allowDevices: boolean;
}

type ToWorker = { type: 'job'; job: Job } | { type: 'abort'; id: number } | { type: 'feed'; id: number; written: number };

type FromWorker =
  | { type: 'log'; level: 'debug' | 'info' | 'warn' | 'error'; obj: unknown; msg: string }
  | { type: 'done'; id: number; result: UnpackResult }
  | { type: 'failed'; id: number; error: { code: ErrorCode | undefined; message: string; details: ErrorDetails | undefined; errno: string | undefined } };

const WORKER_MARK = 'berth-unpack-layer';

/** How long a thread may wait for its next layer before it exits (UnpackThreads `idleMs`). */
export const UNPACK_THREAD_IDLE_MS = 10_000;

/**
 * Up to `size` worker threads that unpack layers, one layer per thread at a time; a thread is
 * started on first need and kept for the next layer (each costs its module loading, ~0.1 s of CPU).
 * A thread idle for `idleMs` exits (each is a V8 isolate of its own, several MB: a pull whose
 * last layer still downloads should not hold the others) and is started again on demand.
 * `close` ends them; call it when the pull is done, whatever its outcome.
 */
export class UnpackThreads {
  private readonly idle: Worker[] = [];
  private readonly all = new Set<Worker>();
  private readonly waiting: ((w: Worker) => void)[] = [];
  private readonly idleTimers = new Map<Worker, NodeJS.Timeout>();
  private readonly idleMs: number;
  private nextId = 1;

  constructor(
    private readonly size: number,
    opts: { idleMs?: number } = {},
  ) {
    this.idleMs = opts.idleMs ?? UNPACK_THREAD_IDLE_MS;
  }

  /** Threads alive now (busy or idle). */
  threadCount(): number {
    return this.all.size;
  }

  /**
   * Unpacks the layer at `blobPath` into `dest` on one of the threads, without syncing and with
   * implied directories deferred (`result.impliedDirs`, for finishLayer). Errors are those of
   * unpackLayer, rebuilt on this thread with the same code, message and details (the cause stays on
   * the worker). An abort of `signal` stops that unpack; the promise settles only once the thread
   * has stopped writing into `dest`.
   */
  async unpack(opts: ThreadUnpackOptions): Promise<UnpackResult> {
    opts.signal?.throwIfAborted();
    const worker = await this.take();
    try {
      // Aborted while waiting for a thread: its abort event has fired already.
      opts.signal?.throwIfAborted();
      return await this.run(worker, opts);
    } finally {
      this.give(worker);
    }
  }

  async close(): Promise<void> {
    const all = [...this.all];
    this.all.clear();
    this.idle.length = 0;
    for (const t of this.idleTimers.values()) clearTimeout(t);
    this.idleTimers.clear();
    await Promise.all(all.map((w) => w.terminate()));
  }

  private take(): Promise<Worker> {
    const w = this.idle.pop();
    if (w !== undefined) {
      clearTimeout(this.idleTimers.get(w));
      this.idleTimers.delete(w);
      return Promise.resolve(w);
    }
    if (this.all.size < this.size) return Promise.resolve(this.spawn());
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  private spawn(): Worker {
    const w = new Worker(new URL(import.meta.url), { workerData: WORKER_MARK });
    this.all.add(w);
    return w;
  }

  private give(w: Worker): void {
    if (!this.all.has(w)) return; // it failed and was dropped, or the set was closed
    const next = this.waiting.shift();
    if (next !== undefined) next(w);
    else {
      this.idle.push(w);
      // unref: an idle thread's timer never keeps the process alive.
      this.idleTimers.set(w, setTimeout(() => this.retire(w), this.idleMs).unref());
    }
  }

  /** An idle thread whose time ran out: ended; the next layer starts a new one. */
  private retire(w: Worker): void {
    this.idleTimers.delete(w);
    const i = this.idle.indexOf(w);
    if (i < 0) return; // taken meanwhile
    this.idle.splice(i, 1);
    this.all.delete(w);
    void w.terminate();
  }

  private async run(worker: Worker, opts: ThreadUnpackOptions): Promise<UnpackResult> {
    const { feed } = opts;
    const layer = opts.expected.digest;
    const wasReset = (): boolean => feed?.wasReset === true; // read again after each await
    if (wasReset()) throw restartedError(layer);
    const fd = feed !== undefined ? openPartial(feed, layer) : undefined;
    let unsubscribe: (() => void) | undefined;
    try {
      const id = this.nextId++;
      if (fd !== undefined && feed !== undefined) {
        let told = feed.written;
        unsubscribe = feed.on(() => {
          if (feed.wasReset) worker.postMessage({ type: 'abort', id } satisfies ToWorker);
          else if (feed.written - told >= FEED_STEP || feed.written === feed.size) {
            told = feed.written;
            worker.postMessage({ type: 'feed', id, written: told } satisfies ToWorker);
          }
        });
        return await this.post(worker, opts, id, { fd, written: feed.written });
      }
      return await this.post(worker, opts, id, { path: opts.blobPath });
    } catch (err) {
      throw wasReset() && opts.signal?.aborted !== true ? restartedError(layer, err) : err;
    } finally {
      unsubscribe?.();
      if (fd !== undefined) closeSync(fd);
    }
  }

  private post(worker: Worker, opts: ThreadUnpackOptions, id: number, source: Job['source']): Promise<UnpackResult> {
    const layer = opts.expected.digest;
    const job: Job = {
      id,
      source,
      mediaType: opts.mediaType,
      expected: opts.expected,
      dest: opts.dest,
      ...(opts.limits !== undefined ? { limits: opts.limits } : {}),
      allowDevices: opts.allowDevices === true,
    };
    return new Promise<UnpackResult>((resolve, reject) => {
      const onAbort = (): void => worker.postMessage({ type: 'abort', id } satisfies ToWorker);
      const onMessage = (m: FromWorker): void => {
        switch (m.type) {
          case 'log':
            opts.log?.[m.level](m.obj as object, m.msg);
            return;
          case 'done': {
            if (m.id !== id) return;
            const impliedDirs = m.result.impliedDirs?.map((comps) => comps.map((c) => Buffer.from(c.buffer, c.byteOffset, c.byteLength)));
            done(() => resolve({ ...m.result, ...(impliedDirs !== undefined ? { impliedDirs } : {}) }));
            return;
          }
          case 'failed': {
            if (m.id !== id) return;
            const e = m.error;
            done(() => {
              if (opts.signal?.aborted === true) reject(opts.signal.reason);
              else {
                const code: ErrorCode = e.code ?? (e.errno !== undefined ? codeForErrno(e.errno) : 'ERR_INTERNAL');
                reject(new BerthError(code, e.code !== undefined ? e.message : `unpack layer ${layer}: ${e.message}`, { details: { ...e.details, layer } }));
              }
            });
            return;
          }
        }
      };
      const onError = (err: Error): void => {
        this.drop(worker);
        done(() => reject(new BerthError('ERR_INTERNAL', `unpack layer ${layer}: worker thread failed: ${messageOf(err)}`, { cause: err, details: { layer } })));
      };
      const onExit = (code: number): void => {
        this.drop(worker);
        done(() => reject(new BerthError('ERR_INTERNAL', `unpack layer ${layer}: worker thread exited (${code}) without an answer`, { details: { layer } })));
      };
      const done = (fn: () => void): void => {
        opts.signal?.removeEventListener('abort', onAbort);
        worker.off('message', onMessage);
        worker.off('error', onError);
        worker.off('exit', onExit);
        fn();
      };
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.on('exit', onExit);
      worker.postMessage({ type: 'job', job } satisfies ToWorker);
    });
  }

  /** A thread that failed is ended; a layer waiting for a thread gets a new one instead. */
  private drop(w: Worker): void {
    this.all.delete(w);
    clearTimeout(this.idleTimers.get(w));
    this.idleTimers.delete(w);
    void w.terminate();
    const next = this.waiting.shift();
    if (next !== undefined) next(this.spawn());
  }
}

/** One layer on a thread of its own (UnpackThreads of one, closed after). */
export async function unpackLayerOnThread(opts: ThreadUnpackOptions): Promise<UnpackResult> {
  const threads = new UnpackThreads(1);
  try {
    return await threads.unpack(opts);
  } finally {
    await threads.close();
  }
}

/**
 * Completes a layer unpacked with deferred implied directories, once its parent layers are ready:
 * their metadata is copied from `lowerDirs` (topmost first), then dest's filesystem is synced.
 */
export async function finishLayer(dest: string, result: UnpackResult, lowerDirs: readonly string[]): Promise<void> {
  const layer = result.digest;
  try {
    copyImpliedDirMeta(Buffer.from(dest), result.impliedDirs ?? [], lowerDirs.map((d) => Buffer.from(d)));
  } catch (err) {
    throw new BerthError(codeForErrno(errnoCode(err)), `unpack layer ${layer}: implied directories: ${messageOf(err)}`, { cause: err, details: { layer } });
  }
  try {
    await syncfs(dest);
  } catch (err) {
    throw new BerthError(codeForErrno(errnoCode(err)), `unpack layer ${layer}: syncfs: ${messageOf(err)}`, { cause: err, details: { layer } });
  }
}

// ---------------------------------------------------------------------------------------------- worker side

function runWorker(): void {
  const port = parentPort;
  if (port === null) return;
  const aborts = new Map<number, AbortController>();
  const send = (level: 'debug' | 'info' | 'warn' | 'error') => (obj: unknown, msg?: string) => {
    port.postMessage({ type: 'log', level, obj: typeof obj === 'string' ? {} : obj, msg: typeof obj === 'string' ? obj : (msg ?? '') } satisfies FromWorker);
  };
  const log = { debug: send('debug'), info: send('info'), warn: send('warn'), error: send('error') } as unknown as Logger;
  const feeds = new Map<number, GrowingFileSource>();
  port.on('message', (m: ToWorker) => {
    if (m.type === 'abort') {
      aborts.get(m.id)?.abort(new Error('unpack aborted'));
      return;
    }
    if (m.type === 'feed') {
      feeds.get(m.id)?.grow(m.written);
      return;
    }
    const job = m.job;
    const abort = new AbortController();
    aborts.set(job.id, abort);
    let source: Readable;
    if ('fd' in job.source) {
      const g = new GrowingFileSource(job.source.fd, job.expected.size, job.source.written);
      feeds.set(job.id, g);
      source = g;
    } else source = createReadStream(job.source.path, { highWaterMark: 1024 * 1024 });
    unpackLayer({
      source,
      mediaType: job.mediaType,
      expected: job.expected,
      dest: job.dest,
      ...(job.limits !== undefined ? { limits: job.limits } : {}),
      allowDevices: job.allowDevices,
      sync: false,
      deferImpliedDirs: true,
      log,
      signal: abort.signal,
    })
      .then(
        (result) => port.postMessage({ type: 'done', id: job.id, result } satisfies FromWorker),
        (err: unknown) =>
          port.postMessage({
            type: 'failed',
            id: job.id,
            error: {
              code: err instanceof BerthError ? err.code : undefined,
              message: messageOf(err),
              details: err instanceof BerthError ? err.details : undefined,
              errno: errnoCode(err),
            },
          } satisfies FromWorker),
      )
      .finally(() => {
        aborts.delete(job.id);
        feeds.delete(job.id);
      });
  });
}

/**
 * A blob file that is still being written (BlobFeed): reads up to the bytes said to be written,
 * waits for `grow` when it gets there, ends after `size` bytes. Synchronous reads: the data was
 * just written and is in the page cache (at most 1 MiB, a copy from memory, on the pulling thread
 * too: feedSource).
 */
class GrowingFileSource extends Readable {
  private pos = 0;
  private waiting = false;

  constructor(
    private readonly fd: number,
    private readonly size: number,
    private written: number,
  ) {
    super({ highWaterMark: 1024 * 1024 });
  }

  grow(written: number): void {
    // Destroyed (an abort) while it waited: its fd may be closed and reused by now, never read it.
    if (this.destroyed || written <= this.written) return;
    this.written = Math.min(written, this.size);
    if (this.waiting) {
      this.waiting = false;
      this._read();
    }
  }

  override _read(): void {
    if (this.destroyed) return;
    if (this.pos >= this.size) {
      this.push(null);
      return;
    }
    if (this.pos >= this.written) {
      this.waiting = true;
      return;
    }
    const buf = Buffer.allocUnsafe(Math.min(1024 * 1024, this.written - this.pos));
    let n: number;
    try {
      n = readSync(this.fd, buf, 0, buf.length, this.pos);
    } catch (err) {
      this.destroy(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    if (n <= 0) {
      this.destroy(new Error(`the blob file ends at ${this.pos} bytes, ${this.written} were written`));
      return;
    }
    this.pos += n;
    this.push(n === buf.length ? buf : buf.subarray(0, n));
  }
}

if (!isMainThread && workerData === WORKER_MARK) runWorker();

import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, promises as fsp, constants as fsc } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { BerthError, errnoCode } from '../../lib/errors.js';
import { digestHex, type Digest } from '../../lib/digest.js';
import { fsyncDir, mkdirp } from '../../lib/fsx.js';
import { localIoError } from '../../lib/local-io.js';

/** What a blob must be: its digest and its exact size, from a descriptor. */
export interface ExpectedBlob {
  digest: Digest;
  size: number;
}

/**
 * One blob being written into the store (containerd's content.Writer): bytes go to a private
 * temp file `ingest/<hex>.<random>`, are hashed and counted as *written* (a short write(2) is
 * continued, never dropped), and `commit` moves the file under its digest only when the count,
 * the hash and the size of the file on disk all match the descriptor.
 *
 * Errors of every method: ERR_DIGEST_MISMATCH (more, fewer or other bytes than the descriptor:
 * the content is wrong); ERR_RESOURCE_EXHAUSTED (ENOSPC, EDQUOT…) and ERR_IO (EIO, EROFS, a file
 * on disk shorter than what was written): the local disk failed, the message names the path.
 * A failed `write` or `commit` leaves the temp file in place until `abort`.
 */
export interface BlobWriter {
  /** The temp file; it never holds a committed blob. */
  readonly tempPath: string;
  /** Bytes written to the temp file so far. */
  readonly written: number;
  /** Appends `chunk` in full. Rejects without writing when it would pass the descriptor's size. */
  write(chunk: Uint8Array): Promise<void>;
  /**
   * Verifies (count, digest, fstat size after fsync), then renames into place and fsyncs the
   * directory. Idempotent across writers: committing a blob that is present replaces it with
   * the same verified bytes. After a failure nothing is stored under the digest.
   */
  commit(): Promise<void>;
  /** Closes and removes the temp file; never throws (residue is swept at startup). Idempotent. */
  abort(): Promise<void>;
}

/**
 * Content-addressed blob store: `<root>/content/blobs/sha256/<hex>`.
 *
 * Writes (rule C2) go through a BlobWriter: verified while streaming (at most size+1 bytes are
 * accepted), fsynced, size checked on disk, renamed into place, directory fsynced. A blob is never
 * stored under a digest it does not hash to, nor as a file shorter than its descriptor.
 * Local file system failures are ERR_RESOURCE_EXHAUSTED or ERR_IO naming the path, never
 * ERR_NETWORK: a caller that downloads must not fetch again because the disk is full.
 */
export class ContentStore {
  readonly root: string;
  private readonly blobs: string;
  private readonly ingestDir: string;

  constructor(root: string) {
    this.root = path.join(root, 'content');
    this.blobs = path.join(this.root, 'blobs', 'sha256');
    this.ingestDir = path.join(this.root, 'ingest');
  }

  async init(): Promise<void> {
    await mkdirp(this.blobs);
    await mkdirp(this.ingestDir);
  }

  /** Where the blob lives (whether or not it exists). The digest was validated by parseDigest. */
  path(d: Digest): string {
    return path.join(this.blobs, digestHex(d));
  }

  async has(d: Digest): Promise<boolean> {
    try {
      const st = await fsp.stat(this.path(d));
      return st.isFile();
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return false;
      throw localIoError(err, `look up blob ${d}`, this.path(d));
    }
  }

  /** Opens a writer for one blob (see BlobWriter). The caller must `commit` or `abort` it. */
  async writer(expected: ExpectedBlob): Promise<BlobWriter> {
    const tmp = path.join(this.ingestDir, `${digestHex(expected.digest)}.${randomBytes(6).toString('hex')}`);
    let fh: FileHandle;
    try {
      fh = await fsp.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
    } catch (err) {
      throw localIoError(err, `ingest ${expected.digest}`, tmp);
    }
    return new TempBlobWriter(expected, tmp, fh, this.path(expected.digest), this.blobs);
  }

  /**
   * Streams `source` into the store under `expected`. A present blob is a no-op: the source is
   * destroyed unread (the caller checks `has()` first to skip the download).
   * Errors: those of BlobWriter; a failure of `source` itself is rethrown as it is (the caller
   * knows whether that is the network); an abort of `opts.signal` destroys a stream source and
   * rejects with the signal's reason. Nothing is committed and no temp file is left on failure.
   */
  async ingest(
    expected: ExpectedBlob,
    source: Readable | AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
    opts: { signal?: AbortSignal } = {},
  ): Promise<void> {
    const destroy = (reason?: unknown): void => {
      if ('destroy' in source && typeof source.destroy === 'function') source.destroy(reason as Error | undefined);
    };
    if (await this.has(expected.digest)) {
      destroy();
      return;
    }
    const { signal } = opts;
    // A stream waiting for the network only notices the abort if it is destroyed.
    const onAbort = (): void => destroy(signal?.reason);
    const w = await this.writer(expected);
    let committed = false;
    try {
      signal?.throwIfAborted();
      signal?.addEventListener('abort', onAbort, { once: true });
      for await (const chunk of source) {
        signal?.throwIfAborted();
        await w.write(chunk);
      }
      signal?.throwIfAborted();
      await w.commit();
      committed = true;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      if (!committed) {
        destroy();
        await w.abort();
      }
    }
  }

  /** Stores bytes already in memory (manifests, configs) under their verified digest. */
  async put(expected: ExpectedBlob, data: Uint8Array): Promise<void> {
    await this.ingest(expected, [data]);
  }

  /** Reads a small blob fully, refusing more than `limit` bytes (rule P1). */
  async readSmall(d: Digest, limit = 4 * 1024 * 1024): Promise<Buffer> {
    const p = this.path(d);
    const st = await fsp.stat(p).catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') throw new BerthError('ERR_NOT_FOUND', `read blob ${d}: not in the content store`);
      throw localIoError(err, `read blob ${d}`, p);
    });
    if (st.size > limit) throw new BerthError('ERR_INVALID_IMAGE', `read blob ${d}: ${st.size} bytes exceeds the ${limit} byte limit`);
    return fsp.readFile(p).catch((err: unknown) => {
      throw localIoError(err, `read blob ${d}`, p);
    });
  }

  open(d: Digest): Readable {
    return createReadStream(this.path(d), { highWaterMark: 1024 * 1024 });
  }

  /**
   * The digests of the committed blobs on disk, with their sizes (for GC). Names that are not
   * a sha256 hex digest are not berth's and are left out (never removed).
   */
  async listBlobs(): Promise<{ digest: Digest; size: number }[]> {
    const names = await fsp.readdir(this.blobs).catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return [] as string[];
      throw localIoError(err, 'list blobs', this.blobs);
    });
    const out: { digest: Digest; size: number }[] = [];
    for (const name of names.sort()) {
      if (!/^[a-f0-9]{64}$/.test(name)) continue;
      const st = await fsp.lstat(path.join(this.blobs, name)).catch(() => undefined);
      if (st?.isFile() === true) out.push({ digest: `sha256:${name}` as Digest, size: st.size });
    }
    return out;
  }

  /**
   * Removes one blob file. Idempotent (a missing blob is success). The caller (GC) has removed
   * every row that names it first: a crash after the unlink leaves nothing pointing at it.
   */
  async remove(d: Digest): Promise<void> {
    try {
      await fsp.rm(this.path(d), { force: true });
    } catch (err) {
      throw localIoError(err, `remove blob ${d}`, this.path(d));
    }
  }

  /** Removes ingest residue of a crashed process (rule S4). Call with the state lock held. */
  async sweepIngest(): Promise<number> {
    const names = await fsp.readdir(this.ingestDir).catch(() => [] as string[]);
    await Promise.all(names.map((n) => fsp.rm(path.join(this.ingestDir, n), { force: true })));
    return names.length;
  }
}

class TempBlobWriter implements BlobWriter {
  private readonly hash = createHash('sha256');
  private state: 'open' | 'committed' | 'aborted' = 'open';
  private bytes = 0;
  private readonly what: string;

  constructor(
    private readonly expected: ExpectedBlob,
    readonly tempPath: string,
    private readonly fh: FileHandle,
    private readonly target: string,
    private readonly dir: string,
  ) {
    this.what = `ingest ${expected.digest}`;
  }

  get written(): number {
    return this.bytes;
  }

  async write(chunk: Uint8Array): Promise<void> {
    this.mustBeOpen('write');
    if (this.bytes + chunk.length > this.expected.size) {
      throw new BerthError('ERR_DIGEST_MISMATCH', `${this.what}: more than the declared ${this.expected.size} bytes`, {
        details: { digest: this.expected.digest },
      });
    }
    this.hash.update(chunk);
    // write(2) may write less than asked (a file system filling up writes what fits, and only the
    // next call fails with ENOSPC), so continue from where it stopped and count what landed.
    let off = 0;
    while (off < chunk.length) {
      let n: number;
      try {
        ({ bytesWritten: n } = await this.fh.write(chunk, off, chunk.length - off, this.bytes));
      } catch (err) {
        throw localIoError(err, this.what, this.tempPath);
      }
      if (n <= 0) {
        throw new BerthError('ERR_IO', `${this.what}: the local disk accepted no bytes at offset ${this.bytes} (${this.tempPath})`, {
          details: { digest: this.expected.digest, path: this.tempPath },
        });
      }
      off += n;
      this.bytes += n;
    }
  }

  async commit(): Promise<void> {
    this.mustBeOpen('commit');
    const { digest, size } = this.expected;
    if (this.bytes !== size) {
      throw new BerthError('ERR_DIGEST_MISMATCH', `${this.what}: got ${this.bytes} bytes, descriptor says ${size}`, { details: { digest } });
    }
    const actual = `sha256:${this.hash.copy().digest('hex')}`;
    if (actual !== digest) {
      throw new BerthError('ERR_DIGEST_MISMATCH', `${this.what}: content hashes to ${actual}`, { details: { digest, actual } });
    }
    let onDisk: number;
    try {
      // fsync first: a delayed write-back error (ENOSPC, EIO on thin or network storage) shows here.
      await this.fh.sync();
      onDisk = (await this.fh.stat()).size;
    } catch (err) {
      throw localIoError(err, this.what, this.tempPath);
    }
    // The bytes were counted as written, but the disk is the judge (containerd's writer.Commit
    // does the same): a file that lost its tail must never be renamed under the digest, since a
    // present blob is never fetched again.
    if (onDisk !== size) {
      throw new BerthError('ERR_IO', `${this.what}: the file on the local disk is ${onDisk} bytes, ${size} were written (${this.tempPath})`, {
        details: { digest, path: this.tempPath, onDisk },
      });
    }
    try {
      await this.fh.close();
      await fsp.rename(this.tempPath, this.target);
    } catch (err) {
      throw localIoError(err, this.what, this.target);
    }
    this.state = 'committed';
    try {
      await fsyncDir(this.dir);
    } catch (err) {
      throw localIoError(err, this.what, this.dir);
    }
  }

  async abort(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    await this.fh.close().catch(() => undefined);
    await fsp.rm(this.tempPath, { force: true }).catch(() => undefined);
  }

  private mustBeOpen(op: string): void {
    if (this.state !== 'open') throw new BerthError('ERR_INTERNAL', `${this.what}: ${op} on a writer that is ${this.state}`);
  }
}

import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, promises as fsp, constants as fsc } from 'node:fs';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { BerthError, errnoCode } from '../../lib/errors.js';
import { digestHex, type Digest } from '../../lib/digest.js';
import { fsyncDir, mkdirp } from '../../lib/fsx.js';

/**
 * Content-addressed blob store: `<root>/content/blobs/sha256/<hex>`.
 *
 * Writes (rule C2): bytes stream into `ingest/<hex>.<random>`, are counted and hashed
 * while they arrive (at most size+1 bytes are read), fsynced, renamed into place, and
 * the directory is fsynced. A blob is never stored under a digest it does not hash to.
 * Commits are idempotent: ingesting a blob that is present is a no-op that still
 * consumes (and verifies) nothing — the caller checks `has()` first to skip the download.
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
      throw err;
    }
  }

  /**
   * Streams `source` into the store under `expected`.
   * Errors: ERR_DIGEST_MISMATCH (wrong size or hash; nothing is committed).
   * A failure leaves no file behind except possibly an ingest temp file that
   * `sweepIngest` removes at startup.
   */
  async ingest(expected: { digest: Digest; size: number }, source: Readable | AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<void> {
    if (await this.has(expected.digest)) {
      // Drain nothing: the caller should not have fetched. Destroy to release sockets.
      if ('destroy' in source && typeof source.destroy === 'function') source.destroy();
      return;
    }
    const tmp = path.join(this.ingestDir, `${digestHex(expected.digest)}.${randomBytes(6).toString('hex')}`);
    const fh = await fsp.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
    const hash = createHash('sha256');
    let size = 0;
    let committed = false;
    try {
      for await (const chunk of source) {
        const buf = chunk as Uint8Array;
        size += buf.length;
        if (size > expected.size) {
          throw new BerthError('ERR_DIGEST_MISMATCH', `ingest ${expected.digest}: more than the declared ${expected.size} bytes`, {
            details: { digest: expected.digest },
          });
        }
        hash.update(buf);
        await fh.write(buf);
      }
      if (size !== expected.size) {
        throw new BerthError('ERR_DIGEST_MISMATCH', `ingest ${expected.digest}: got ${size} bytes, descriptor says ${expected.size}`, {
          details: { digest: expected.digest },
        });
      }
      const actual = `sha256:${hash.digest('hex')}`;
      if (actual !== expected.digest) {
        throw new BerthError('ERR_DIGEST_MISMATCH', `ingest ${expected.digest}: content hashes to ${actual}`, {
          details: { digest: expected.digest, actual },
        });
      }
      await fh.sync();
      await fh.close();
      await fsp.rename(tmp, this.path(expected.digest));
      committed = true;
      await fsyncDir(this.blobs);
    } finally {
      if (!committed) {
        await fh.close().catch(() => undefined);
        await fsp.rm(tmp, { force: true });
      }
    }
  }

  /** Stores bytes already in memory (manifests, configs) under their verified digest. */
  async put(expected: { digest: Digest; size: number }, data: Uint8Array): Promise<void> {
    await this.ingest(expected, [data]);
  }

  /** Reads a small blob fully, refusing more than `limit` bytes (rule P1). */
  async readSmall(d: Digest, limit = 4 * 1024 * 1024): Promise<Buffer> {
    const p = this.path(d);
    const st = await fsp.stat(p).catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') throw new BerthError('ERR_NOT_FOUND', `read blob ${d}: not in the content store`);
      throw err;
    });
    if (st.size > limit) throw new BerthError('ERR_INVALID_IMAGE', `read blob ${d}: ${st.size} bytes exceeds the ${limit} byte limit`);
    return fsp.readFile(p);
  }

  open(d: Digest): Readable {
    return createReadStream(this.path(d), { highWaterMark: 1024 * 1024 });
  }

  /** Removes ingest residue of a crashed process (rule S4). Call with the state lock held. */
  async sweepIngest(): Promise<number> {
    const names = await fsp.readdir(this.ingestDir).catch(() => [] as string[]);
    await Promise.all(names.map((n) => fsp.rm(path.join(this.ingestDir, n), { force: true })));
    return names.length;
  }
}

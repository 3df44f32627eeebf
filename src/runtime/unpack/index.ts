import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { PassThrough, Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { type Digest, isDigest } from '../../lib/digest.js';
import { BerthError, errnoCode, messageOf } from '../../lib/errors.js';
import type { Logger } from '../../lib/log.js';
import { syncfs } from '../../lib/sys.js';
import { TarReader } from './tarread.js';
import { codeForErrno, LayerWriter } from './writer.js';
import { createZstdDecoder } from './zstd.js';
import { crashPoint } from '../../lib/crashpoint.js';

/**
 * The layer unpacker: one pass over a layer blob that verifies it and writes it, as an overlay
 * upper-format tree, into a directory of its own (INVARIANTS.md E1–E9).
 *
 *   source ─▶ sha256 + byte count (descriptor digest, size) ─▶ gunzip | zstd ─▶ sha256 + count (diffID)
 *          ─▶ TarReader ─▶ LayerWriter (confined, replace-not-follow, whiteouts, metadata)
 *
 * Decisions (documented here, tested in test/unit/unpack.test.ts):
 * - Entry names: a leading "./", empty and "." components are ignored; absolute names and `..`
 *   components are rejected (ERR_UNSAFE_CONTENT). Names are bytes (latin1 from TarReader, raw PAX
 *   bytes) and never normalised. An entry naming the root itself ("./") is skipped, so `dest` keeps
 *   the caller's mode.
 * - Symlink targets are stored verbatim and confined when resolved (chroot semantics).
 * - Duplicate entries: the later wins (a directory over a directory merges, metadata of the later).
 * - A whiteout whose name exists in this layer is dropped with a warning; nothing is ever deleted
 *   by a whiteout. `.wh..wh.*` other than `.wh..wh..opq` (aufs metadata) is skipped.
 * - Strict framing: every tar header must follow the previous member; zero blocks followed by more
 *   entries, PAX/header-only ambiguities and GNU sparse files are rejected. PAX global headers are
 *   ignored. Non-zero bytes after the end-of-archive marker fail the tar parse (stricter than Go,
 *   which stops reading there).
 * - Violations of a configured limit (entries, sizes, path bytes, depth, xattrs) are
 *   ERR_LIMIT_EXCEEDED with `details.limit`: terminal, the same layer fails the same way. The
 *   free-space floor and ENOSPC/EDQUOT are ERR_RESOURCE_EXHAUSTED: the host ran short, retryable.
 * - Error precedence: a source stream error, then compressed size, then compressed digest, then
 *   any tar/entry error, then diffID. After a tar error the rest of the blob is still read (at most
 *   `expected.size + 1` bytes) and hashed, so corrupt bytes report ERR_DIGEST_MISMATCH (retryable)
 *   rather than the terminal ERR_INVALID_IMAGE they would otherwise cause.
 */

export interface UnpackLimits {
  maxEntries: number;
  /** Bytes of the uncompressed tar stream (headers, data and padding). */
  maxUncompressedBytes: number;
  /** Per regular file, from the header, before any byte is written. */
  maxFileSize: number;
  /** Entry name, hardlink and symlink target length in bytes. */
  maxPathBytes: number;
  /** Components in an entry name. */
  maxDepth: number;
  /** Per entry: the sum of kept xattr names and values. */
  maxXattrBytes: number;
  /** Free bytes (for unprivileged users) on dest's filesystem, checked at start and every 256 MiB. */
  minFreeBytes?: number;
  /** zstd layers: the largest frame window (the decoder's memory) accepted; see ./zstd.ts. */
  maxZstdWindowBytes?: number;
}

export const DEFAULT_UNPACK_LIMITS: Readonly<Required<UnpackLimits>> = Object.freeze({
  maxEntries: 1_000_000,
  maxUncompressedBytes: 64 * 2 ** 30,
  maxFileSize: 16 * 2 ** 30,
  maxPathBytes: 4096,
  maxDepth: 256,
  maxXattrBytes: 64 * 2 ** 10,
  minFreeBytes: 256 * 2 ** 20,
  maxZstdWindowBytes: 128 * 2 ** 20,
});

export interface UnpackOptions {
  /** The layer blob as stored (compressed). Read to its end, or until size+1 bytes. */
  source: NodeJS.ReadableStream | Readable;
  /** OCI/docker layer media type: tar, tar+gzip or tar+zstd (./zstd.ts). */
  mediaType: string;
  expected: { digest: Digest; size: number; diffId: Digest };
  /** An existing, empty directory private to this unpack (0700 parent); the caller renames it. */
  dest: string;
  limits?: Partial<UnpackLimits>;
  /** The parent layers' snapshot directories, topmost first (metadata of implied directories). */
  lowerDirs?: readonly string[];
  /** E7: create device nodes only if true and running as root; otherwise skip them with a warning. */
  allowDevices?: boolean;
  /** syncfs(2) dest's filesystem before returning, so a later rename publishes durable data (E1). Default true. */
  sync?: boolean;
  /**
   * The parent layers are still being unpacked (layers in parallel): directories the tar implies
   * are made with the default mode and returned as `impliedDirs`, for copyImpliedDirMeta once the
   * parents are ready; `lowerDirs` is then ignored.
   */
  deferImpliedDirs?: boolean;
  log?: Logger;
  signal?: AbortSignal;
}

export interface UnpackResult {
  digest: Digest;
  diffId: Digest;
  compressedSize: number;
  uncompressedSize: number;
  entries: number;
  /** A root-level `.wh..wh..opq` was seen: lower layers must not be stacked under this one. */
  opaqueRoot: boolean;
  /** With deferImpliedDirs: the implied directories (components below dest) no entry replaced. */
  impliedDirs?: Buffer[][];
}

/**
 * Verifies and extracts one layer into `dest`.
 *
 * Errors (all BerthError, naming the layer digest and, where there is one, the entry):
 * ERR_DIGEST_MISMATCH (size, digest or diffID), ERR_UNSAFE_CONTENT (escaping names, bad
 * whiteouts), ERR_INVALID_IMAGE (malformed tar or gzip, hardlink to a lower layer, bad ids),
 * ERR_UNSUPPORTED (unknown media or entry types, zstd dictionaries), ERR_LIMIT_EXCEEDED (configured limits),
 * ERR_RESOURCE_EXHAUSTED (free-space floor, ENOSPC), ERR_PRECONDITION (no addon, not allowed to
 * mknod or set trusted xattrs), ERR_INVALID_ARGUMENT (options). Aborting rejects with `signal.reason`.
 *
 * Not idempotent on the same directory: `dest` must be empty. On failure, files may have been
 * written and `dest` is left as is for the caller to delete; no work is still running when the
 * promise settles. The source is read to its end or destroyed.
 */
export async function unpackLayer(opts: UnpackOptions): Promise<UnpackResult> {
  const { expected, signal } = opts;
  const layer = expected.digest;
  const dest = path.resolve(opts.dest);
  let limits: Required<UnpackLimits>;
  let compression: Compression;
  try {
    signal?.throwIfAborted();
    limits = resolveLimits(opts.limits);
    if (!isDigest(expected.digest) || !isDigest(expected.diffId) || !Number.isSafeInteger(expected.size) || expected.size < 0) {
      throw new BerthError('ERR_INVALID_ARGUMENT', 'unpack layer: expected digest, diffId or size is invalid');
    }
    compression = compressionOf(opts.mediaType, layer);
    await checkDest(dest, layer);
    await checkFreeSpace(dest, limits.minFreeBytes, layer);
  } catch (err) {
    // From here on the source is always consumed or destroyed; make that true for early failures too.
    (opts.source as { destroy?: () => void }).destroy?.();
    throw err;
  }

  let writer: LayerWriter;
  try {
    writer = new LayerWriter({
      root: dest,
      ...(opts.lowerDirs !== undefined ? { lowers: opts.lowerDirs } : {}),
      layer,
      limits,
      allowDevices: opts.allowDevices === true,
      log: opts.log,
      deferImplied: opts.deferImpliedDirs === true,
    });
  } catch (err) {
    (opts.source as { destroy?: () => void }).destroy?.();
    throw err;
  }
  try {
    const tar = startTarStage(writer, { compression, dest, limits, layer, log: opts.log });
    const blob = await readBlob(opts.source, expected.size, tar, signal);
    if (blob.error === undefined && signal?.aborted !== true && blob.size === expected.size) tar.end();
    else tar.fail(new Error('layer blob rejected'));
    await tar.settled;

    signal?.throwIfAborted();
    if (blob.error !== undefined) {
      if (blob.error instanceof BerthError) throw blob.error;
      throw new BerthError('ERR_INTERNAL', `unpack layer ${layer}: read blob: ${messageOf(blob.error)}`, { cause: blob.error });
    }
    if (blob.size !== expected.size) {
      throw new BerthError(
        'ERR_DIGEST_MISMATCH',
        `unpack layer ${layer}: blob is ${blob.size > expected.size ? 'longer' : 'shorter'} than the descriptor size ${expected.size}`,
        { details: { layer, expectedSize: expected.size, size: blob.size } },
      );
    }
    const tarError = tar.error();
    if (blob.digest !== expected.digest) {
      throw new BerthError('ERR_DIGEST_MISMATCH', `unpack layer ${layer}: blob hashes to ${blob.digest}`, {
        details: { layer, actual: blob.digest },
        ...(tarError === undefined ? {} : { cause: tarError }),
      });
    }
    if (tarError !== undefined) throw asLayerError(tarError, layer);
    const diffId = tar.diffId();
    if (diffId !== expected.diffId) {
      throw new BerthError('ERR_DIGEST_MISMATCH', `unpack layer ${layer}: uncompressed tar hashes to ${diffId}, config says ${expected.diffId}`, {
        details: { layer, expectedDiffId: expected.diffId, actual: diffId },
      });
    }
    await writer.finish();
    if (opts.sync !== false) await syncDir(dest, layer);
    opts.log?.debug({ layer, diffId, entries: writer.entries, uncompressedSize: tar.size() }, 'unpack: layer extracted');
    return {
      digest: blob.digest,
      diffId,
      compressedSize: blob.size,
      uncompressedSize: tar.size(),
      entries: writer.entries,
      opaqueRoot: writer.opaqueRoot,
      ...(opts.deferImpliedDirs === true ? { impliedDirs: writer.impliedDirs() } : {}),
    };
  } finally {
    // Every entry has stopped (tar.settled): the root's fd can go, on success and failure alike.
    writer.close();
  }
}

const SPACE_CHECK_EVERY = 256 * 2 ** 20;

/** inflate → hash, count, limit → TarReader → LayerWriter. */
interface TarStage {
  /** Where the compressed bytes go; destroyed once the stage has failed. */
  readonly input: NodeJS.WritableStream & { readonly destroyed: boolean };
  /** Resolves (never rejects) when the tar is read to its end and the last entry written, or failed. */
  readonly settled: Promise<void>;
  end(): void;
  /** Records `err` unless an earlier error is known, and tears the stage down. */
  fail(err: unknown): void;
  error(): unknown;
  diffId(): Digest;
  size(): number;
}

interface TarStageOptions {
  compression: Compression;
  dest: string;
  limits: Required<UnpackLimits>;
  layer: Digest;
  log: Logger | undefined;
}

function startTarStage(writer: LayerWriter, o: TarStageOptions): TarStage {
  const { limits, layer } = o;
  const hash = createHash('sha256');
  let size = 0;
  let nextSpaceCheck = SPACE_CHECK_EVERY;
  let firstError: unknown;
  const reader = new TarReader({
    entry: (header, pax) => {
      crashPoint('unpack.mid-layer');
      return writer.entry(header, pax);
    },
    globalHeader: (records) => o.log?.debug({ layer, keys: [...records.keys()].slice(0, 16) }, 'unpack: pax global header ignored'),
  });
  // Each inflated chunk is counted, hashed (the diffID), checked against the limits and read as
  // tar: the entries in it are written before the next chunk is taken. The reading runs in a
  // microtask, not inside write(): zlib hands a chunk over from its thread-pool callback and queues
  // the inflate of the next one only once that hand-over returns, so reading inside it made inflate
  // and extraction take turns on one core. Deferred, the next chunk inflates on the pool while this
  // one is written (six large layers unpacked one after the other into tmpfs: 1.85–2.12 → 1.51–1.79 s).
  // One chunk of look-ahead at most: the writable's buffer (one chunk) pauses zlib's output.
  const tar = new Writable({
    highWaterMark: 256 * 1024,
    write(chunk: Buffer, _enc, cb): void {
      size += chunk.length;
      if (size > limits.maxUncompressedBytes) {
        cb(limitError(layer, 'maxUncompressedBytes', `uncompressed layer exceeds ${limits.maxUncompressedBytes} bytes`));
        return;
      }
      hash.update(chunk);
      const read = (): void => {
        try {
          reader.push(chunk);
        } catch (err) {
          cb(err instanceof Error ? err : new Error(String(err)));
          return;
        }
        cb();
      };
      if (size < nextSpaceCheck) {
        queueMicrotask(read);
        return;
      }
      nextSpaceCheck = size + SPACE_CHECK_EVERY;
      checkFreeSpace(o.dest, limits.minFreeBytes, layer).then(read, cb);
    },
    final(cb): void {
      try {
        reader.end();
      } catch (err) {
        cb(err instanceof Error ? err : new Error(String(err)));
        return;
      }
      cb();
    },
    destroy(err, cb): void {
      // A file still open for its data is closed: nothing writes into dest once this stage settles.
      reader.fail();
      cb(err);
    },
  });
  const inflate =
    o.compression === 'gzip'
      ? createGunzip({ chunkSize: 256 * 1024 })
      : o.compression === 'zstd'
        ? createZstdDecoder({ maxWindowBytes: limits.maxZstdWindowBytes })
        : new PassThrough();
  const done = pipeline(inflate, tar).catch((err: unknown) => {
    firstError ??= err;
  });
  return {
    input: inflate,
    settled: done,
    end: () => {
      if (!inflate.destroyed) inflate.end();
    },
    fail: (err) => {
      firstError ??= err;
      inflate.destroy(err instanceof Error ? err : new Error(String(err)));
    },
    error: () => firstError,
    diffId: () => `sha256:${hash.digest('hex')}` as Digest,
    size: () => size,
  };
}

interface BlobRead {
  digest: Digest;
  size: number;
  /** The source stream's own error, if it failed. */
  error: unknown;
}

/**
 * Hashes and counts the compressed bytes and feeds them to the tar stage, reading at most
 * `maxBytes + 1` bytes. Once the tar stage has failed the bytes are still hashed (to classify the
 * failure, see error precedence) but no longer forwarded. An abort fails the stage and the source.
 */
async function readBlob(
  source: NodeJS.ReadableStream | Readable,
  maxBytes: number,
  tar: TarStage,
  signal: AbortSignal | undefined,
): Promise<BlobRead> {
  const hash = createHash('sha256');
  let size = 0;
  let error: unknown;
  const onAbort = (): void => {
    tar.fail(signal?.reason);
    // A stalled source would otherwise keep the loop below waiting for its next chunk.
    (source as { destroy?: (e: Error) => void }).destroy?.(new Error('aborted'));
  };
  // Aborted already (during the checks before): no abort event will come, and a source that has
  // no data yet (a blob still downloading) would keep the loop waiting for good.
  if (signal?.aborted === true) onAbort();
  else signal?.addEventListener('abort', onAbort, { once: true });
  try {
    for await (const chunk of source as AsyncIterable<unknown>) {
      if (signal?.aborted === true) break;
      if (!Buffer.isBuffer(chunk)) throw new BerthError('ERR_INVALID_ARGUMENT', 'unpack layer: the source yields strings (setEncoding was called)');
      size += chunk.length;
      if (size > maxBytes) break; // the iterator's return() destroys the source
      hash.update(chunk);
      if (tar.error() === undefined && !tar.input.destroyed && !tar.input.write(chunk)) await drainOrClose(tar.input);
    }
  } catch (err) {
    error = err;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  return { digest: `sha256:${hash.digest('hex')}` as Digest, size, error };
}

type Compression = 'none' | 'gzip' | 'zstd';

/**
 * OCI and docker layer media types, including the non-distributable/foreign variants. Docker's
 * schema2 has no zstd type of its own; `…rootfs.diff.tar.zstd` is the name containerd and moby
 * give it.
 */
function compressionOf(mediaType: string, layer: Digest): Compression {
  switch (mediaType) {
    case 'application/vnd.oci.image.layer.v1.tar':
    case 'application/vnd.oci.image.layer.nondistributable.v1.tar':
    case 'application/vnd.docker.image.rootfs.diff.tar':
      return 'none';
    case 'application/vnd.oci.image.layer.v1.tar+gzip':
    case 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip':
    case 'application/vnd.docker.image.rootfs.diff.tar.gzip':
    case 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip':
      return 'gzip';
    case 'application/vnd.oci.image.layer.v1.tar+zstd':
    case 'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd':
    case 'application/vnd.docker.image.rootfs.diff.tar.zstd':
      return 'zstd';
    default:
      throw new BerthError('ERR_UNSUPPORTED', `unpack layer ${layer}: unsupported layer media type ${JSON.stringify(mediaType.slice(0, 200))}`);
  }
}

function resolveLimits(partial: Partial<UnpackLimits> | undefined): Required<UnpackLimits> {
  const limits: Required<UnpackLimits> = { ...DEFAULT_UNPACK_LIMITS };
  for (const [key, value] of Object.entries(partial ?? {}) as [keyof UnpackLimits, unknown][]) {
    if (value === undefined) continue;
    if (!(key in DEFAULT_UNPACK_LIMITS) || typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
      throw new BerthError('ERR_INVALID_ARGUMENT', `unpack: limit ${String(key)} must be a non-negative safe integer`);
    }
    limits[key] = value;
  }
  return limits;
}

async function checkDest(dest: string, layer: Digest): Promise<void> {
  let ok = false;
  try {
    const st = await fsp.lstat(dest);
    ok = st.isDirectory() && (await fsp.readdir(dest)).length === 0;
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
  }
  if (!ok) throw new BerthError('ERR_INVALID_ARGUMENT', `unpack layer ${layer}: ${dest} is not an existing empty directory`);
}

async function checkFreeSpace(dest: string, minFreeBytes: number, layer: Digest): Promise<void> {
  if (minFreeBytes === 0) return;
  const st = await fsp.statfs(dest);
  const free = st.bavail * st.bsize;
  if (free < minFreeBytes) {
    throw new BerthError('ERR_RESOURCE_EXHAUSTED', `unpack layer ${layer}: ${free} bytes free on the snapshot filesystem, need ${minFreeBytes}`, {
      details: { layer, limit: 'minFreeBytes', free },
    });
  }
}

async function syncDir(dest: string, layer: Digest): Promise<void> {
  try {
    await syncfs(dest);
  } catch (err) {
    throw new BerthError(codeForErrno(errnoCode(err)), `unpack layer ${layer}: syncfs: ${messageOf(err)}`, { cause: err });
  }
}

function limitError(layer: Digest, limit: string, reason: string): BerthError {
  return new BerthError('ERR_LIMIT_EXCEEDED', `unpack layer ${layer}: ${reason}`, { details: { layer, limit } });
}

/** zlib and zstd errors are plain Errors: a malformed blob. */
function asLayerError(err: unknown, layer: Digest): BerthError {
  if (err instanceof BerthError) {
    return err.message.startsWith(`unpack layer ${layer}`)
      ? err
      : new BerthError(err.code, `unpack layer ${layer}: ${err.message}`, { cause: err, details: { ...err.details, layer } });
  }
  const what = errnoCode(err)?.startsWith('Z_') === true ? 'decompress' : 'read tar';
  return new BerthError('ERR_INVALID_IMAGE', `unpack layer ${layer}: ${what}: ${messageOf(err).toLowerCase()}`, {
    cause: err,
    details: { layer },
  });
}

/** Resolves on 'drain', or when the stream is destroyed (then nobody will ever drain it). */
function drainOrClose(stream: NodeJS.WritableStream & { destroyed: boolean }): Promise<void> {
  if (stream.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      stream.removeListener('drain', done);
      stream.removeListener('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
  });
}

import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, promises as fsp, constants as fsc } from 'node:fs';
import * as path from 'node:path';
import { PassThrough, Transform, Writable, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { pack as tarPack } from 'tar-stream';
import { BerthError, errnoCode, isBerthError, messageOf } from '../../lib/errors.js';
import { digestHex, isDigest, parseDigest, sha256, type Digest } from '../../lib/digest.js';
import { fsyncDir } from '../../lib/fsx.js';
import { goField } from '../../lib/gojson.js';
import { localIoError } from '../../lib/local-io.js';
import { parseReference } from '../../lib/reference.js';
import type { Logger } from '../../lib/log.js';
import type { ContentStore } from '../content/index.js';
import { MEDIA } from '../registry/index.js';
import type { StateStore } from '../state/index.js';
import { isZstdMagic } from '../unpack/zstd.js';
import { TarReader, type EntrySink, type TarHeader } from '../unpack/tarread.js';
import { artifactKind, hostPlatform, parseImageConfig, parseManifestOrIndex, platformName, samePlatform, selectPlatform, type Descriptor, type ImageManifest } from './documents.js';
import type { ImageService, PreparedImage } from './index.js';

/**
 * Image archives for air-gapped hosts: `images import` of a `docker save` tar or an OCI image
 * layout (a directory, or a tar of one, plain or gzip), `images export` of local images as an
 * OCI image layout tar (`oci-archive`).
 *
 * Import, in order (bytes first, rows last; STYLE rule 5):
 * 1. Read the archive. A tar is read once, as a stream: each regular member is copied into a
 *    private scratch directory under the content store's ingest dir (swept after a crash), hashed
 *    and counted on the way, its size checked against the limits from its header before any byte
 *    is read. Member names with an absolute path or a `..` component, hardlinks, devices and any
 *    other entry type, duplicate names and members over the limits are refused. A symlink member
 *    stands for the regular member its target names inside the archive (docker save ≤ 24 links a
 *    shared layer's `<id>/layer.tar` to `../<other id>/layer.tar`); one that leaves the archive,
 *    names no regular member or loops is refused
 *    (ERR_UNSAFE_CONTENT, ERR_INVALID_IMAGE, ERR_LIMIT_EXCEEDED) before anything is stored. A
 *    directory is read only at the fixed OCI names (`oci-layout`, `index.json`,
 *    `blobs/sha256/<hex>`), each opened with O_NOFOLLOW below directories that are not symlinks.
 * 2. Find the images: an OCI layout (`oci-layout` + `index.json`) is used as it is, so digests
 *    are kept; as containerd's import, its entries for another platform and the artifacts beside
 *    its images (signatures, SBOMs, attestations) are skipped with a warning naming each, and the
 *    import fails only when nothing for this host is left (the error lists what was found);
 *    otherwise `manifest.json` (docker save) names each image's config and layer files,
 *    and berth writes an OCI manifest for it (layers as stored: an uncompressed `layer.tar` is an
 *    `application/vnd.oci.image.layer.v1.tar` layer whose digest is its sha256, which must equal
 *    the config's diff_id; a gzip or zstd layer file gets the tar+gzip or tar+zstd type by its magic
 *    number, its diff_id checked while it is unpacked). That manifest's digest is berth's own: docker never had one for it.
 *    It is deterministic, so the same archive imports to the same digest.
 * 3. Verify every document and blob against its digest and size (ERR_DIGEST_MISMATCH), check the
 *    image (ImageService.prepare: platform, layer count, diff_ids), then ingest the blobs through
 *    the content store's verified ingest, unpack the snapshots (ImageService.unpack, as a pull
 *    does), store the documents and record every image row of the archive in one transaction.
 *    A failure before the transaction records no image row (blobs or snapshots already written
 *    are unreferenced, and GC removes them).
 *
 * Names: an OCI index entry's `io.containerd.image.name` annotation, else its
 * `org.opencontainers.image.ref.name` when that is a name, not a tag alone (it holds ':', '/' or
 * '@'; `myapp:1.0` is docker.io/library/myapp:1.0, as berth reads every short name); docker save's `RepoTags`;
 * `--ref` names the only image of an archive instead. An image without a name is refused.
 */

export interface ArchiveLimits {
  /** Members of a tar (files and directories). */
  maxMembers: number;
  /** One member (a layer). */
  maxMemberBytes: number;
  /** All members together. */
  maxTotalBytes: number;
  /** manifest.json, index.json, oci-layout, manifests and configs (rule P1). */
  maxDocumentBytes: number;
}

export const DEFAULT_ARCHIVE_LIMITS: Readonly<ArchiveLimits> = Object.freeze({
  maxMembers: 100_000,
  maxMemberBytes: 16 * 2 ** 30,
  maxTotalBytes: 64 * 2 ** 30,
  maxDocumentBytes: 4 * 2 ** 20,
});

export type ArchiveFormat = 'oci-layout' | 'docker-save';

export interface ImportedImage {
  ref: string;
  digest: Digest;
  format: ArchiveFormat;
  /** The archive names the image so, but ImportOptions.names left that name as it was. */
  skipped?: true;
}

/** One file of an archive, by its cleaned member name. */
interface ArchiveFile {
  size: number;
  /** sha256 of the bytes (tar members: computed while spooling; directory files: undefined). */
  digest?: Digest;
  /** Where the bytes are: the scratch copy or the file in the layout directory. */
  file: string;
  /** The first bytes (compression magic). */
  head: Buffer;
}

interface ArchiveFiles {
  files: Map<string, ArchiveFile>;
  /** Removes the scratch copies. */
  close(): Promise<void>;
}

const OCI_LAYOUT = 'oci-layout';
const OCI_INDEX = 'index.json';
/** berth's export: `<index digest>+<size>` of the index a pulled image's manifest was picked from. */
const BERTH_INDEX_ANNOTATION = 'dev.berth.image.index';
const DOCKER_MANIFEST = 'manifest.json';
const BLOB_RE = /^blobs\/sha256\/([a-f0-9]{64})$/;
const NAME_ANNOTATION = 'org.opencontainers.image.ref.name';
const CONTAINERD_NAME_ANNOTATION = 'io.containerd.image.name';
const LAYER_TAR = 'application/vnd.oci.image.layer.v1.tar';
const LAYER_TAR_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
const LAYER_TAR_ZSTD = 'application/vnd.oci.image.layer.v1.tar+zstd';

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * A member name cleaned the way an archive reader must (leading `./`, empty and `.` components
 * dropped), or an error for names that leave the archive: absolute, `..`, control characters.
 */
export function cleanMemberName(name: string, what: string): string {
  if (/[\u0000-\u001f\u007f]/.test(name)) throw new BerthError('ERR_UNSAFE_CONTENT', `${what}: member name ${JSON.stringify(name)} has control characters`);
  if (name.startsWith('/')) throw new BerthError('ERR_UNSAFE_CONTENT', `${what}: member ${JSON.stringify(name)} has an absolute path`);
  const parts = name.split('/').filter((c) => c !== '' && c !== '.');
  if (parts.includes('..')) throw new BerthError('ERR_UNSAFE_CONTENT', `${what}: member ${JSON.stringify(name)} has a ".." component`);
  return parts.join('/');
}

/** Reads a tar (plain or gzip) into scratch files: see the module comment. */
async function readTar(file: string, scratch: string, limits: ArchiveLimits, what: string): Promise<ArchiveFiles> {
  const files = new Map<string, ArchiveFile>();
  /** Symlink members: cleaned name → link target as written. */
  const links = new Map<string, string>();
  const close = (): Promise<void> => fsp.rm(scratch, { recursive: true, force: true });
  await fsp.mkdir(scratch, { recursive: false, mode: 0o700 }).catch((err: unknown) => {
    throw localIoError(err, `${what}: scratch directory`, scratch);
  });
  try {
    const fh = await fsp.open(file, fsc.O_RDONLY).catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') throw new BerthError('ERR_NOT_FOUND', `${what}: no such file`);
      throw localIoError(err, what, file);
    });
    const magic = Buffer.alloc(2);
    await fh.read(magic, 0, 2, 0);
    await fh.close();
    const gzip = magic[0] === 0x1f && magic[1] === 0x8b;
    let members = 0;
    let total = 0;
    // Members are read by berth's own tar reader, as Go's archive/tar reads them (docker load,
    // skopeo, umoci and the scanners that vet an archive before it is imported): another framing
    // could import members those tools never saw. Its sinks are synchronous, so each member's
    // bytes are written in order on a promise chain, and the next chunk is taken only once the
    // chain has caught up.
    let writes: Promise<void> = Promise.resolve();
    const reader = new TarReader({
      entry: (h: TarHeader): EntrySink | undefined => {
        members++;
        if (members > limits.maxMembers) throw new BerthError('ERR_LIMIT_EXCEEDED', `${what}: more than ${limits.maxMembers} members`, { details: { limit: 'maxMembers' } });
        const raw = Buffer.from(h.name, 'latin1').toString('utf8');
        const name = cleanMemberName(raw, what);
        if (h.type === 'directory') return undefined;
        if (h.type === 'symlink' && name !== '') {
          // docker save (≤ 24) links <v1 id>/layer.tar to ../<other id>/layer.tar when two images share a layer.
          if (files.has(name) || links.has(name)) throw new BerthError('ERR_INVALID_IMAGE', `${what}: member ${JSON.stringify(name)} appears twice`);
          links.set(name, Buffer.from(h.linkname ?? '', 'latin1').toString('utf8'));
          return undefined;
        }
        if (h.type !== 'file' && h.type !== 'contiguous-file') {
          const link = Buffer.from(h.linkname ?? '', 'latin1').toString('utf8');
          const kind = h.type === 'symlink' || h.type === 'link' ? `a ${h.type === 'link' ? 'hardlink' : 'symlink'} to ${JSON.stringify(link)}` : `of type ${String(h.type)}`;
          throw new BerthError('ERR_UNSAFE_CONTENT', `${what}: member ${JSON.stringify(raw)} is ${kind}; an image archive holds regular files only`);
        }
        if (name === '') throw new BerthError('ERR_INVALID_IMAGE', `${what}: a file member names the archive root`);
        const size = h.size;
        if (!Number.isSafeInteger(size) || size > limits.maxMemberBytes) {
          throw new BerthError('ERR_LIMIT_EXCEEDED', `${what}: member ${JSON.stringify(name)} is ${size} bytes, over the ${limits.maxMemberBytes} byte limit`, { details: { limit: 'maxMemberBytes' } });
        }
        total += size;
        if (total > limits.maxTotalBytes) throw new BerthError('ERR_LIMIT_EXCEEDED', `${what}: members add up to more than ${limits.maxTotalBytes} bytes`, { details: { limit: 'maxTotalBytes' } });
        if (files.has(name) || links.has(name)) throw new BerthError('ERR_INVALID_IMAGE', `${what}: member ${JSON.stringify(name)} appears twice`);
        const dest = path.join(scratch, String(files.size));
        // Taken now, so that a second member of the same name is refused even before this one is written.
        const entry: ArchiveFile = { size: 0, file: dest, head: Buffer.alloc(0) };
        files.set(name, entry);
        const hash = createHash('sha256');
        const opened = fsp.open(dest, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
        opened.catch(() => undefined); // reported through `writes`
        const ioError = (err: unknown): unknown => (isBerthError(err) ? err : localIoError(err, `${what}: member ${JSON.stringify(name)}`, dest));
        let count = 0;
        return {
          data: (chunk: Buffer): void => {
            count += chunk.length;
            hash.update(chunk);
            if (entry.head.length < 8) entry.head = Buffer.concat([entry.head, chunk.subarray(0, 8 - entry.head.length)]);
            writes = writes
              .then(async () => {
                const fh = await opened;
                for (let off = 0; off < chunk.length; ) off += (await fh.write(chunk, off, chunk.length - off)).bytesWritten;
              })
              .catch((err: unknown) => {
                throw ioError(err);
              });
          },
          end: (): void => {
            entry.size = count;
            entry.digest = `sha256:${hash.digest('hex')}` as Digest;
            writes = writes.then(async () => (await opened).close()).catch((err: unknown) => {
              throw ioError(err);
            });
          },
          abort: (): void => {
            writes = writes.then(
              async () => (await opened).close(),
              async (err: unknown) => {
                await (await opened.catch(() => undefined))?.close().catch(() => undefined);
                throw err;
              },
            );
          },
        };
      },
    });
    // One step of the reader, then the callback once the writes it queued are done.
    const step = (work: () => void, cb: (err?: Error | null) => void): void => {
      try {
        work();
      } catch (err) {
        cb(err as Error);
        return;
      }
      writes.then(() => cb(), (err: unknown) => cb(err as Error));
    };
    const sink = new Writable({
      highWaterMark: 1024 * 1024,
      write: (chunk: Buffer, _enc, cb) => step(() => reader.push(chunk), cb),
      final: (cb) => step(() => reader.end(), cb),
    });
    const src = createReadStream(file, { highWaterMark: 1024 * 1024 });
    try {
      await (gzip ? pipeline(src, createGunzip(), sink) : pipeline(src, sink));
    } catch (err) {
      reader.fail();
      await writes.catch(() => undefined);
      // The visitor's refusals and local I/O errors name the member already; the reader's own
      // ("read tar: …") and gunzip's say what is wrong with the archive.
      if (isBerthError(err) && !err.message.startsWith('read tar:')) throw err;
      throw new BerthError('ERR_INVALID_IMAGE', `${what}: not a readable tar${gzip ? ' (gzip)' : ''}: ${messageOf(err)}`, { cause: err });
    }
    for (const [name, target] of links) files.set(name, resolveLink(files, links, name, target, what));
    return { files, close };
  } catch (err) {
    await close().catch(() => undefined);
    throw err;
  }
}

/** Symlink hops followed from one member, as the kernel's limit for a path. */
const MAX_LINK_HOPS = 40;

/**
 * The regular member a symlink member stands for: its target resolved inside the archive, from
 * the link's directory, through further symlink members. Refused (ERR_UNSAFE_CONTENT): an absolute
 * target, one that climbs above the archive's root, one that names no member or a directory, and
 * a loop.
 */
function resolveLink(files: ReadonlyMap<string, ArchiveFile>, links: ReadonlyMap<string, string>, name: string, target: string, what: string): ArchiveFile {
  const refuse = (why: string): BerthError => new BerthError('ERR_UNSAFE_CONTENT', `${what}: member ${JSON.stringify(name)} is a symlink to ${JSON.stringify(target)}, ${why}; only a link to a regular member of the archive is followed`);
  let at = name;
  let to = target;
  for (let hop = 0; hop < MAX_LINK_HOPS; hop++) {
    if (to.startsWith('/')) throw refuse('an absolute path');
    if (/[\u0000-\u001f\u007f]/.test(to)) throw refuse('which has control characters');
    const parts = at.split('/').slice(0, -1);
    for (const c of to.split('/')) {
      if (c === '' || c === '.') continue;
      if (c === '..') {
        if (parts.length === 0) throw refuse('which leaves the archive');
        parts.pop();
      } else parts.push(c);
    }
    const next = parts.join('/');
    const file = files.get(next);
    if (file !== undefined) return file;
    const further = links.get(next);
    if (further === undefined) throw refuse(`which is not a file of the archive (${JSON.stringify(next)})`);
    at = next;
    to = further;
  }
  throw refuse(`a chain of more than ${MAX_LINK_HOPS} links (a loop)`);
}

/**
 * Reads an OCI layout directory at its fixed names only: `oci-layout`, `index.json` and the blobs
 * that are there. No file is followed through a symlink (O_NOFOLLOW; the directories on the way
 * must not be symlinks).
 */
async function readLayoutDir(dir: string, what: string): Promise<ArchiveFiles> {
  const files = new Map<string, ArchiveFile>();
  const mustBeDir = async (p: string): Promise<boolean> => {
    const st = await fsp.lstat(p).catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return undefined;
      throw localIoError(err, what, p);
    });
    if (st === undefined) return false;
    if (!st.isDirectory()) throw new BerthError('ERR_UNSAFE_CONTENT', `${what}: ${p} is not a directory (symlinks are not followed)`);
    return true;
  };
  const add = async (name: string): Promise<void> => {
    const p = path.join(dir, name);
    let fh;
    try {
      fh = await fsp.open(p, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return;
      if (errnoCode(err) === 'ELOOP') throw new BerthError('ERR_UNSAFE_CONTENT', `${what}: ${name} is a symlink (not followed)`);
      throw localIoError(err, what, p);
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new BerthError('ERR_UNSAFE_CONTENT', `${what}: ${name} is not a regular file`);
      const head = Buffer.alloc(Math.min(8, st.size));
      await fh.read(head, 0, head.length, 0);
      files.set(name, { size: st.size, file: p, head });
    } finally {
      await fh.close();
    }
  };
  await add(OCI_LAYOUT);
  await add(OCI_INDEX);
  if ((await mustBeDir(path.join(dir, 'blobs'))) && (await mustBeDir(path.join(dir, 'blobs', 'sha256')))) {
    for (const n of (await fsp.readdir(path.join(dir, 'blobs', 'sha256'))).sort()) {
      if (/^[a-f0-9]{64}$/.test(n)) await add(`blobs/sha256/${n}`);
    }
  }
  return { files, close: async () => undefined };
}

/** A found image: its manifest (exact bytes), config, layer files, and the names it carries. */
interface FoundImage {
  manifest: ImageManifest;
  manifestDigest: Digest;
  manifestBytes: Buffer;
  configBytes: Buffer;
  /** Member name of each layer blob, in manifest order. */
  layerFiles: string[];
  names: string[];
  index: { digest: Digest; bytes: Buffer } | null;
  what: string;
  /** Why the image has no name although it is annotated with one. */
  unnamed?: string;
}

class ArchiveReader {
  constructor(
    private readonly a: ArchiveFiles,
    private readonly limits: ArchiveLimits,
    private readonly what: string,
  ) {}

  has(name: string): boolean {
    return this.a.files.has(name);
  }

  get(name: string, why: string): ArchiveFile {
    const f = this.a.files.get(name);
    if (f === undefined) throw new BerthError('ERR_INVALID_IMAGE', `${this.what}: ${why} ${JSON.stringify(name)} is not in the archive`);
    return f;
  }

  /** A small document, read whole with a limit (rule P1). */
  async doc(name: string, why: string): Promise<Buffer> {
    const f = this.get(name, why);
    if (f.size > this.limits.maxDocumentBytes) {
      throw new BerthError('ERR_LIMIT_EXCEEDED', `${this.what}: ${name} is ${f.size} bytes, over the ${this.limits.maxDocumentBytes} byte limit for a document`, { details: { limit: 'maxDocumentBytes' } });
    }
    const b = await fsp.readFile(f.file).catch((err: unknown) => {
      throw localIoError(err, this.what, f.file);
    });
    if (b.length !== f.size) throw new BerthError('ERR_INVALID_IMAGE', `${this.what}: ${name} changed while it was read`);
    return b;
  }

  /** A blob by descriptor, read whole (documents only) and verified: size and digest. */
  async blobDoc(d: { digest: Digest; size: number }, why: string): Promise<Buffer> {
    const b = await this.doc(`blobs/sha256/${digestHex(d.digest)}`, why);
    verify(this.what, why, d, b.length, sha256(b));
    return b;
  }

  /** The digest of a member (tar: known; directory: hashed now). */
  async digestOf(name: string): Promise<Digest> {
    const f = this.get(name, 'file');
    if (f.digest !== undefined) return f.digest;
    const hash = createHash('sha256');
    for await (const chunk of createReadStream(f.file)) hash.update(chunk as Buffer);
    f.digest = `sha256:${hash.digest('hex')}` as Digest;
    return f.digest;
  }

  open(name: string): Readable {
    return createReadStream(this.get(name, 'file').file, { highWaterMark: 1024 * 1024 });
  }

  close(): Promise<void> {
    return this.a.close();
  }
}

function verify(what: string, why: string, want: { digest: Digest; size: number }, size: number, digest: Digest): void {
  if (size !== want.size) throw new BerthError('ERR_DIGEST_MISMATCH', `${what}: ${why} ${want.digest} is ${size} bytes, its descriptor says ${want.size}`, { details: { digest: want.digest } });
  if (digest !== want.digest) throw new BerthError('ERR_DIGEST_MISMATCH', `${what}: ${why} hashes to ${digest}, not ${want.digest}`, { details: { digest: want.digest, actual: digest } });
}

/**
 * A `ref.name` annotation → a canonical reference, or undefined for a tag alone ("1.0", as
 * `skopeo copy … oci:DIR:1.0` writes it). A tag cannot hold ':', '/' or '@', so a value with one
 * of them is a name: "myapp:1.0" (`oci-archive:x.tar:myapp:1.0`) is docker.io/library/myapp:1.0,
 * normalised as every reference berth reads (docker and podman do the same).
 */
function nameFromAnnotation(v: string, what: string): string | undefined {
  if (!v.includes('/') && !v.includes('@') && !v.includes(':')) return undefined;
  try {
    return parseReference(v).canonical;
  } catch (err) {
    throw new BerthError('ERR_INVALID_IMAGE', `${what}: image name ${JSON.stringify(v)} is not a reference: ${messageOf(err)}`);
  }
}

/** An index.json entry that is not imported on this host, and why. */
interface SkippedEntry {
  what: string;
  why: string;
}

/**
 * The images of an OCI layout for this host. As containerd's import, entries that are not for it
 * are skipped, not refused: a manifest (or an index with no manifest) for another platform, and
 * artifacts stored beside images (signatures, SBOMs, attestations); the caller fails only when
 * nothing is left.
 */
async function findOciImages(r: ArchiveReader, what: string): Promise<{ found: FoundImage[]; skipped: SkippedEntry[] }> {
  const layout = await r.doc(OCI_LAYOUT, 'the OCI layout marker');
  let version: unknown;
  try {
    version = (JSON.parse(layout.toString('utf8')) as Record<string, unknown>)['imageLayoutVersion'];
  } catch {
    version = undefined;
  }
  if (typeof version !== 'string' || !/^1\.\d+\.\d+$/.test(version)) throw new BerthError('ERR_UNSUPPORTED', `${what}: oci-layout imageLayoutVersion ${JSON.stringify(version)} is not 1.x`);
  const indexBytes = await r.doc(OCI_INDEX, 'the OCI index');
  const index = parseManifestOrIndex(indexBytes, MEDIA.ociIndex, `${what} index.json`);
  if (index.kind !== 'index') throw new BerthError('ERR_INVALID_IMAGE', `${what}: index.json is not an image index`);
  const top = JSON.parse(indexBytes.toString('utf8')) as Record<string, unknown>;
  const raw = goField(top, 'manifests', `${what} index.json`) as unknown[];
  const host = hostPlatform();
  const out: FoundImage[] = [];
  const skipped: SkippedEntry[] = [];
  const isManifestType = (t: string): boolean => t === MEDIA.ociManifest || t === MEDIA.dockerManifest;
  const isIndexType = (t: string): boolean => t === MEDIA.ociIndex || t === MEDIA.dockerList;
  for (const [i, desc] of index.manifests.entries()) {
    const where = `${what} index.json manifests[${i}]`;
    const skip = (why: string): void => {
      skipped.push({ what: `index.json manifests[${i}] (${desc.digest})`, why });
    };
    const entry = raw[i];
    const rawAnn = isObject(entry) ? goField(entry, 'annotations', where) : undefined;
    const ann = isObject(rawAnn) ? rawAnn : {};
    const names: string[] = [];
    const full = ann[CONTAINERD_NAME_ANNOTATION];
    const short = ann[NAME_ANNOTATION];
    const fromFull = typeof full === 'string' ? nameFromAnnotation(full, where) : undefined;
    const fromShort = typeof short === 'string' ? nameFromAnnotation(short, where) : undefined;
    if (fromFull !== undefined) names.push(fromFull);
    else if (fromShort !== undefined) names.push(fromShort);
    const tagOnly = names.length === 0 && typeof short === 'string' ? short : undefined;
    if (!isManifestType(desc.mediaType) && !isIndexType(desc.mediaType)) {
      skip(`not an image (media type ${desc.mediaType})`);
      continue;
    }
    if (desc.platform !== undefined && !samePlatform(desc.platform, host)) {
      skip(`for ${platformName(desc.platform)}, not ${platformName(host)}`);
      continue;
    }
    let m: Descriptor = desc;
    let top: { digest: Digest; bytes: Buffer } | null = null;
    if (isIndexType(desc.mediaType)) {
      const bytes = await r.blobDoc(desc, 'index');
      const nested = parseManifestOrIndex(bytes, desc.mediaType, `${where} ${desc.digest}`);
      if (nested.kind !== 'index') throw new BerthError('ERR_INVALID_IMAGE', `${where}: ${desc.digest} is not an index`);
      try {
        m = selectPlatform(nested, host, `${where} ${desc.digest}`);
      } catch (err) {
        if (!isBerthError(err) || err.code !== 'ERR_NOT_FOUND') throw err;
        skip(`an index with no manifest for ${platformName(host)} (has ${nested.manifests.map((d) => (d.platform !== undefined ? platformName(d.platform) : 'unknown')).join(', ') || 'none'})`);
        continue;
      }
      top = { digest: desc.digest, bytes };
    }
    // berth's own export names the index a pulled image was picked from (the entry itself is the
    // manifest, which every tool reads): kept, so a pod pinned by the index digest finds the image
    // after an export and import (regression export-loses-index-digest). Checked: the blob hashes
    // to its digest and lists this manifest; otherwise it is ignored.
    const berthIndex = ann[BERTH_INDEX_ANNOTATION];
    if (top === null && typeof berthIndex === 'string') {
      const [d, n] = berthIndex.split('+');
      const size = Number(n);
      if (d !== undefined && isDigest(d) && Number.isSafeInteger(size) && size > 0 && size <= 4 * 1024 * 1024) {
        const bytes = await r.blobDoc({ digest: d as Digest, size }, 'index').catch(() => undefined);
        const doc = bytes === undefined ? undefined : (() => { try { return parseManifestOrIndex(bytes, MEDIA.ociIndex, `${where} index ${d}`); } catch { return undefined; } })();
        if (bytes !== undefined && doc?.kind === 'index' && doc.manifests.some((x) => x.digest === m.digest)) top = { digest: d as Digest, bytes };
      }
    }
    const bytes = await r.blobDoc(m, 'manifest');
    const artifact = artifactKind(bytes);
    if (artifact !== undefined) {
      skip(`not a container image (${artifact})`);
      continue;
    }
    const doc = parseManifestOrIndex(bytes, m.mediaType, `${where} manifest ${m.digest}`);
    if (doc.kind !== 'manifest') throw new BerthError('ERR_INVALID_IMAGE', `${where}: ${m.digest} points to another index (nested indexes are not supported)`);
    const configBytes = await r.blobDoc(doc.config, 'config');
    const config = parseImageConfig(configBytes, `${where} config ${doc.config.digest}`);
    if (config.os !== '' && config.architecture !== '' && !samePlatform({ os: config.os, architecture: config.architecture }, host)) {
      skip(`an image for ${config.os}/${config.architecture}, not ${platformName(host)}`);
      continue;
    }
    out.push({
      manifest: doc,
      manifestDigest: m.digest,
      manifestBytes: bytes,
      configBytes,
      layerFiles: doc.layers.map((l) => `blobs/sha256/${digestHex(l.digest)}`),
      names,
      index: top,
      what: `${where} (${m.digest})`,
      ...(tagOnly !== undefined ? { unnamed: `its ${NAME_ANNOTATION} ${JSON.stringify(tagOnly)} is a tag alone, with no repository` } : {}),
    });
  }
  return { found: out, skipped };
}

async function findDockerImages(r: ArchiveReader, what: string): Promise<FoundImage[]> {
  const bytes = await r.doc(DOCKER_MANIFEST, 'the docker save manifest');
  let list: unknown;
  try {
    list = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new BerthError('ERR_INVALID_IMAGE', `${what}: manifest.json is not JSON: ${messageOf(err)}`);
  }
  if (!Array.isArray(list)) throw new BerthError('ERR_INVALID_IMAGE', `${what}: manifest.json is not an array`);
  const out: FoundImage[] = [];
  for (const [i, e] of list.entries()) {
    const where = `${what} manifest.json[${i}]`;
    // docker's manifest.json struct has no JSON tags: its fields take their keys in any case (lib/gojson).
    const config = isObject(e) ? goField(e, 'Config', where) : undefined;
    const layerNames = isObject(e) ? goField(e, 'Layers', where) : undefined;
    if (typeof config !== 'string' || !Array.isArray(layerNames) || !layerNames.every((l) => typeof l === 'string')) {
      throw new BerthError('ERR_INVALID_IMAGE', `${where}: needs Config (a file name) and Layers (file names)`);
    }
    const tags = goField(e as Record<string, unknown>, 'RepoTags', where) ?? [];
    if (!Array.isArray(tags) || !tags.every((t) => typeof t === 'string')) throw new BerthError('ERR_INVALID_IMAGE', `${where}: RepoTags is not an array of strings`);
    const configName = cleanMemberName(config, where);
    const configBytes = await r.doc(configName, 'config');
    const configDigest = sha256(configBytes);
    // The file name names the digest in both layouts ("<hex>.json", "blobs/sha256/<hex>").
    const named = /^(?:blobs\/sha256\/)?([a-f0-9]{64})(?:\.json)?$/.exec(configName)?.[1];
    if (named !== undefined && `sha256:${named}` !== configDigest) {
      throw new BerthError('ERR_DIGEST_MISMATCH', `${where}: config ${configName} hashes to ${configDigest}`, { details: { digest: `sha256:${named}`, actual: configDigest } });
    }
    let cfg: unknown;
    try {
      cfg = JSON.parse(configBytes.toString('utf8')) as unknown;
    } catch (err) {
      throw new BerthError('ERR_INVALID_IMAGE', `${where}: config ${configName} is not JSON: ${messageOf(err)}`);
    }
    const rootfs = isObject(cfg) ? goField(cfg, 'rootfs', `${where} config`) : undefined;
    const diffIds = isObject(rootfs) ? goField(rootfs, 'diff_ids', `${where} config rootfs`) : undefined;
    if (!Array.isArray(diffIds) || diffIds.length !== layerNames.length) {
      throw new BerthError('ERR_INVALID_IMAGE', `${where}: the config's rootfs.diff_ids do not match the ${layerNames.length} layers`);
    }
    const layerFiles: string[] = [];
    const layers: Descriptor[] = [];
    for (const [j, l] of (layerNames as string[]).entries()) {
      const name = cleanMemberName(l, where);
      const f = r.get(name, 'layer');
      const digest = await r.digestOf(name);
      const diffId = parseDigest(diffIds[j], `${where} diff_ids[${j}]`);
      const namedHex = BLOB_RE.exec(name)?.[1];
      if (namedHex !== undefined && `sha256:${namedHex}` !== digest) {
        throw new BerthError('ERR_DIGEST_MISMATCH', `${where}: layer ${name} hashes to ${digest}`, { details: { digest: `sha256:${namedHex}`, actual: digest } });
      }
      let mediaType: string;
      if (digest === diffId) mediaType = LAYER_TAR;
      else if (f.head[0] === 0x1f && f.head[1] === 0x8b) mediaType = LAYER_TAR_GZIP; // its diff_id is checked while it is unpacked
      else if (isZstdMagic(f.head)) mediaType = LAYER_TAR_ZSTD; // likewise
      else {
        throw new BerthError('ERR_DIGEST_MISMATCH', `${where}: layer ${name} hashes to ${digest}, but the config's diff_id is ${diffId}`, { details: { digest: diffId, actual: digest } });
      }
      layerFiles.push(name);
      layers.push({ mediaType, digest, size: f.size });
    }
    // Deterministic bytes: the same archive always gives the same (berth-made) manifest digest.
    const manifestBytes = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MEDIA.ociManifest,
        config: { mediaType: MEDIA.ociConfig, digest: configDigest, size: configBytes.length },
        layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
      }),
    );
    const manifestDigest = sha256(manifestBytes);
    const manifest = parseManifestOrIndex(manifestBytes, MEDIA.ociManifest, `${where} manifest`) as ImageManifest;
    const names = (tags as string[]).map((t) => {
      try {
        return parseReference(t).canonical;
      } catch (err) {
        throw new BerthError('ERR_INVALID_IMAGE', `${where}: RepoTags ${JSON.stringify(t)} is not a reference: ${messageOf(err)}`);
      }
    });
    out.push({ manifest, manifestDigest, manifestBytes, configBytes, layerFiles, names, index: null, what: where });
  }
  return out;
}

export interface ImportOptions {
  /** Names the archive's only image (instead of the names it carries). */
  ref?: string;
  limits?: Partial<ArchiveLimits>;
  signal?: AbortSignal;
  /**
   * Asked for each name of each image once everything is stored, just before the rows are
   * written: false leaves that name as it is (whatever it names now, or nothing), and the name is
   * returned with `skipped`. Default: every name is recorded.
   */
  names?: (ref: string, digest: Digest) => boolean;
}

/**
 * `images import`: see the module comment. Errors: ERR_NOT_FOUND (no such path),
 * ERR_UNSAFE_CONTENT, ERR_LIMIT_EXCEEDED, ERR_INVALID_IMAGE (not an archive berth knows, a member
 * missing, an image without a name), ERR_DIGEST_MISMATCH, ERR_UNSUPPORTED (another layout
 * version), ERR_INVALID_ARGUMENT (--ref for several images), and those of unpack and the content
 * store. Idempotent: importing the same archive again records the same rows.
 */
export async function importArchive(
  deps: { images: ImageService; content: ContentStore; log: Logger },
  source: string,
  opts: ImportOptions = {},
): Promise<ImportedImage[]> {
  const what = `import ${source}`;
  const limits = { ...DEFAULT_ARCHIVE_LIMITS, ...opts.limits };
  const wanted = opts.ref === undefined ? undefined : parseReference(opts.ref);
  if (wanted?.digest !== undefined) throw new BerthError('ERR_INVALID_ARGUMENT', `${what}: --ref ${opts.ref ?? ''}: give a name or name:tag, not a digest reference`);
  const ref = wanted?.canonical;
  const st = await fsp.stat(source).catch((err: unknown) => {
    if (errnoCode(err) === 'ENOENT') throw new BerthError('ERR_NOT_FOUND', `${what}: no such file or directory`);
    throw localIoError(err, what, source);
  });
  const scratch = path.join(deps.content.root, 'ingest', `import-${randomBytes(8).toString('hex')}`);
  const files = st.isDirectory() ? await readLayoutDir(source, what) : await readTar(source, scratch, limits, what);
  const r = new ArchiveReader(files, limits, what);
  try {
    let format: ArchiveFormat;
    let found: FoundImage[];
    let skipped: SkippedEntry[] = [];
    if (r.has(OCI_LAYOUT) && r.has(OCI_INDEX)) {
      format = 'oci-layout';
      ({ found, skipped } = await findOciImages(r, what));
    } else if (r.has(DOCKER_MANIFEST)) {
      format = 'docker-save';
      found = await findDockerImages(r, what);
    } else {
      throw new BerthError('ERR_INVALID_IMAGE', `${what}: neither an OCI image layout (oci-layout, index.json) nor a docker save archive (manifest.json)`);
    }
    if (found.length === 0 && skipped.length > 0) {
      throw new BerthError('ERR_INVALID_IMAGE', `${what}: no image for ${platformName(hostPlatform())} in the archive: ${skipped.map((s) => `${s.what} is ${s.why}`).join('; ')}`);
    }
    if (found.length === 0) throw new BerthError('ERR_INVALID_IMAGE', `${what}: the archive holds no image`);
    for (const s of skipped) deps.log.warn({ archive: source, entry: s.what, reason: s.why }, `import ${source}: skipped ${s.what}: ${s.why}`);
    if (ref !== undefined) {
      if (new Set(found.map((f) => f.manifestDigest)).size > 1) throw new BerthError('ERR_INVALID_ARGUMENT', `${what}: --ref names one image, the archive holds ${found.length}`);
      for (const f of found) f.names = [ref];
    }
    for (const f of found) {
      if (f.names.length === 0) throw new BerthError('ERR_INVALID_IMAGE', `${f.what}: the image carries no name${f.unnamed !== undefined ? ` (${f.unnamed})` : ''}; give one with --ref`);
    }
    // Check every image before storing anything.
    const prepared: { image: PreparedImage; found: FoundImage }[] = found.map((f) => ({
      image: deps.images.prepare(f.what, { manifest: f.manifest, digest: f.manifestDigest, bytes: f.manifestBytes }, f.configBytes, hostPlatform(), f.index),
      found: f,
    }));
    for (const { image, found: f } of prepared) {
      for (const [i, l] of image.layers.entries()) {
        const name = f.layerFiles[i] as string;
        const file = r.get(name, 'layer');
        verify(what, `layer ${name}`, l, file.size, await r.digestOf(name));
        await deps.content.ingest({ digest: l.digest, size: l.size }, r.open(name), opts.signal !== undefined ? { signal: opts.signal } : {});
      }
    }
    for (const { image } of prepared) await deps.images.unpack(image, opts.signal);
    for (const { image } of prepared) await deps.images.storeDocuments(image);
    const named = prepared.map((p) => ({ ...p, refs: p.found.names.filter((n) => opts.names?.(n, p.image.manifestDigest) ?? true) }));
    deps.images.record(named.map((p) => ({ image: p.image, refs: p.refs })));
    const out: ImportedImage[] = [];
    for (const { image, found: f, refs } of named) {
      for (const n of f.names) out.push({ ref: n, digest: image.manifestDigest, format, ...(refs.includes(n) ? {} : { skipped: true as const }) });
      deps.log.info({ refs, ...(refs.length < f.names.length ? { skipped: f.names.filter((n) => !refs.includes(n)) } : {}), digest: image.manifestDigest, format, layers: image.layers.length }, 'image imported');
    }
    return out;
  } finally {
    await r.close();
  }
}

/** Re-hashes a blob while it is copied into the export: the archive never carries bytes the store lost. */
function verifying(d: Digest, size: number, what: string): Transform {
  const hash = createHash('sha256');
  let n = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      n += chunk.length;
      hash.update(chunk);
      cb(null, chunk);
    },
    flush(cb: TransformCallback) {
      const got = `sha256:${hash.digest('hex')}`;
      if (n !== size || got !== d) cb(new BerthError('ERR_DIGEST_MISMATCH', `${what}: blob ${d} in the content store is ${n} bytes hashing to ${got}; run berth check`, { details: { digest: d } }));
      else cb();
    },
  });
}

/**
 * `images export`: writes the images as an OCI image layout tar (`oci-archive`): `oci-layout`,
 * the blobs as stored (byte-identical, re-verified on the way), and `index.json` with one entry
 * per reference, annotated with the reference (`org.opencontainers.image.ref.name` and
 * `io.containerd.image.name`). The entry is the platform manifest berth recorded, so the
 * exported manifest digest is the local image's digest and every tool reads a plain image; the
 * index it was picked from (if any) goes along as a blob named by the entry's
 * `dev.berth.image.index` annotation, which berth's import reads back (a pin by index digest).
 * The file is written beside `file` and renamed into place after an fsync: a failure leaves no
 * partial archive. Errors: ERR_NOT_FOUND (an unknown reference), ERR_DIGEST_MISMATCH (the store
 * lost bytes), local I/O errors naming the path.
 */
export async function exportArchive(deps: { content: ContentStore; state: StateStore }, refs: readonly string[], file: string): Promise<{ ref: string; digest: Digest }[]> {
  const what = `export ${file}`;
  if (refs.length === 0) throw new BerthError('ERR_INVALID_ARGUMENT', `${what}: no image reference`);
  const entries: { ref: string; desc: { mediaType: string; digest: Digest; size: number }; indexNote?: string }[] = [];
  const blobs = new Map<Digest, number>();
  for (const r of refs) {
    const ref = parseReference(r).canonical;
    const img = deps.state.getImage(ref);
    const m = img === undefined ? undefined : deps.state.getManifest(img.digest);
    if (img === undefined || m === undefined) throw new BerthError('ERR_NOT_FOUND', `${what}: ${ref}: no such local image (berth images ls)`, { details: { ref } });
    const bytes = await deps.content.readSmall(img.digest);
    if (sha256(bytes) !== img.digest) throw new BerthError('ERR_DIGEST_MISMATCH', `${what}: manifest ${img.digest} in the content store does not verify; run berth check`, { details: { digest: img.digest } });
    const doc = parseManifestOrIndex(bytes, '', `${what} manifest ${img.digest}`);
    if (doc.kind !== 'manifest') throw new BerthError('ERR_INVALID_IMAGE', `${what}: ${img.digest} is not a manifest`);
    blobs.set(img.digest, bytes.length);
    blobs.set(doc.config.digest, doc.config.size);
    for (const l of doc.layers) blobs.set(l.digest, l.size);
    // The index the image was picked from, as a blob named by an annotation of the entry (see the import).
    let indexNote: string | undefined;
    if (img.indexDigest !== null) {
      const ib = await deps.content.readSmall(img.indexDigest).catch(() => undefined);
      if (ib !== undefined && sha256(ib) === img.indexDigest) {
        blobs.set(img.indexDigest, ib.length);
        indexNote = `${img.indexDigest}+${ib.length}`;
      }
    }
    if (!entries.some((e) => e.ref === ref)) entries.push({ ref, desc: { mediaType: doc.mediaType, digest: img.digest, size: bytes.length }, ...(indexNote !== undefined ? { indexNote } : {}) });
  }
  const index = Buffer.from(
    `${JSON.stringify(
      {
        schemaVersion: 2,
        mediaType: MEDIA.ociIndex,
        manifests: entries.map((e) => ({ ...e.desc, annotations: { [CONTAINERD_NAME_ANNOTATION]: e.ref, [NAME_ANNOTATION]: e.ref, ...(e.indexNote !== undefined ? { [BERTH_INDEX_ANNOTATION]: e.indexNote } : {}) } })),
      },
      null,
      2,
    )}\n`,
  );
  const target = path.resolve(file);
  const tmp = path.join(path.dirname(target), `.${path.basename(target)}.berth-${randomBytes(6).toString('hex')}`);
  const pack = tarPack();
  const out = createWriteStream(tmp, { flags: 'wx', mode: 0o644 });
  const written = pipeline(pack, out);
  const mtime = new Date(0);
  const add = (name: string, body: Buffer | { stream: Readable; size: number }): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      if (Buffer.isBuffer(body)) {
        pack.entry({ name, size: body.length, mode: 0o644, mtime, type: 'file' }, body, (err) => (err ? reject(err) : resolve()));
        return;
      }
      const entry = pack.entry({ name, size: body.size, mode: 0o644, mtime, type: 'file' }, (err) => (err ? reject(err) : resolve()));
      pipeline(body.stream, entry as unknown as NodeJS.WritableStream).catch(reject);
    });
  try {
    await new Promise<void>((resolve, reject) => pack.entry({ name: 'blobs/', type: 'directory', mode: 0o755, mtime }, (err) => (err ? reject(err) : resolve())));
    await new Promise<void>((resolve, reject) => pack.entry({ name: 'blobs/sha256/', type: 'directory', mode: 0o755, mtime }, (err) => (err ? reject(err) : resolve())));
    for (const [d, size] of blobs) {
      const src = deps.content.open(d);
      const check = verifying(d, size, what);
      const pass = new PassThrough();
      pipeline(src, check, pass).catch((err: unknown) => pass.destroy(err as Error));
      await add(`blobs/sha256/${digestHex(d)}`, { stream: pass, size });
    }
    await add(OCI_LAYOUT, Buffer.from('{"imageLayoutVersion":"1.0.0"}'));
    await add(OCI_INDEX, index);
    pack.finalize();
    await written;
    const fh = await fsp.open(tmp, fsc.O_RDONLY);
    await fh.sync();
    await fh.close();
    await fsp.rename(tmp, target);
    await fsyncDir(path.dirname(target));
  } catch (err) {
    pack.destroy();
    await written.catch(() => undefined);
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    if (isBerthError(err)) throw err;
    if (errnoCode(err) === 'ENOENT' && !(await fsp.stat(path.dirname(target)).then(() => true, () => false))) {
      throw new BerthError('ERR_NOT_FOUND', `${what}: directory ${path.dirname(target)} does not exist`);
    }
    throw localIoError(err, what, tmp);
  }
  return entries.map((e) => ({ ref: e.ref, digest: e.desc.digest }));
}



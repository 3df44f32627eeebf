/**
 * Hostile layers and images (issue 15; INVARIANTS.md E1–E9, C1, P1–P3, R1).
 *
 * Everything here is built byte by byte: a small ustar/PAX/GNU header writer (every field is the
 * caller's, including ones no archiver would write), gzip, OCI configs, manifests and indexes, and
 * the two ways of getting a document onto the real docker-registry that its own validation refuses
 * (planting it in the registry's storage, tampering a stored blob). The catalogues below name each
 * case, the rule it attacks and the outcome berth must produce; the tests iterate them, and
 * docs/hostile-images.md is their table (a unit test keeps the two in step).
 *
 * Canaries: every case runs with a root three levels below the test's temp dir (which holds
 * `canary.txt` and `canary-dir/`) and with a directory of its own under /tmp (`canary.txt`). Names
 * climb towards the first, absolute names and link targets aim at the second. Content, mode,
 * owner, link count, mtime, ctime, xattrs and directory listings are compared after each case.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { createGzip, gzipSync } from 'node:zlib';
import { sha256, type Digest } from '../../src/lib/digest.js';
import type { ErrorCode } from '../../src/lib/errors.js';
import { lgetxattr, llistxattr, makedev } from '../../src/lib/sys.js';
import { hostPlatform } from '../../src/runtime/images/documents.js';
import type { UnpackLimits } from '../../src/runtime/unpack/index.js';

// ── tar writer ──────────────────────────────────────────────────────────────────────────────────

const BLOCK = 512;
export const END = Buffer.alloc(2 * BLOCK);

/** One header, field by field. Strings are written as UTF-8; pass a Buffer for other bytes. */
export interface TarFields {
  name: string | Buffer;
  /** The typeflag byte, written as given: '0', '5', 'x', 'L', or anything else. */
  type: string;
  mode?: number;
  uid?: number;
  gid?: number;
  /** Seconds since the epoch. */
  mtime?: number;
  /** The size field; defaults to the data's length. Values of 8^11 and more are written in GNU base-256. */
  size?: number;
  /** 12 raw bytes for the size field, for encodings `size` cannot express (negative base-256…). */
  sizeField?: Buffer;
  linkname?: string | Buffer;
  devmajor?: number;
  devminor?: number;
  /** Corrupts the checksum field. */
  badChecksum?: boolean;
}

const MTIME = Date.parse('2021-02-03T04:05:06Z') / 1000;

function bytesOf(v: string | Buffer): Buffer {
  return typeof v === 'string' ? Buffer.from(v, 'utf8') : v;
}

/** One 512-byte header. Throws when a value does not fit its field: use PAX or a GNU long name. */
export function tarHeader(h: TarFields, dataLength: number): Buffer {
  const b = Buffer.alloc(BLOCK);
  const str = (v: string | Buffer, off: number, len: number, what: string): void => {
    const bytes = bytesOf(v);
    if (bytes.length > len) throw new Error(`tar header: ${what} is ${bytes.length} bytes, the field holds ${len}`);
    bytes.copy(b, off);
  };
  const oct = (v: number, off: number, len: number, what: string): void => {
    const digits = v.toString(8);
    if (!Number.isInteger(v) || v < 0 || digits.length > len - 1) throw new Error(`tar header: ${what} ${v} does not fit ${len} octal bytes`);
    b.write(`${digits.padStart(len - 1, '0')}\0`, off, 'latin1');
  };
  str(h.name, 0, 100, 'name');
  oct(h.mode ?? 0o644, 100, 8, 'mode');
  oct(h.uid ?? 0, 108, 8, 'uid');
  oct(h.gid ?? 0, 116, 8, 'gid');
  const size = h.size ?? dataLength;
  if (h.sizeField !== undefined) {
    if (h.sizeField.length !== 12) throw new Error('tar header: sizeField must be 12 bytes');
    h.sizeField.copy(b, 124);
  } else if (size >= 8 ** 11) {
    b[124] = 0x80; // GNU base-256: big-endian in the remaining 11 bytes
    let v = BigInt(size);
    for (let i = 135; i > 124; i--) {
      b[i] = Number(v & 0xffn);
      v >>= 8n;
    }
  } else {
    oct(size, 124, 12, 'size');
  }
  oct(h.mtime ?? MTIME, 136, 12, 'mtime');
  if (Buffer.byteLength(h.type, 'latin1') !== 1) throw new Error('tar header: type is one byte');
  b.write(h.type, 156, 'latin1');
  if (h.linkname !== undefined) str(h.linkname, 157, 100, 'linkname');
  b.write('ustar\u000000', 257, 'latin1');
  oct(h.devmajor ?? 0, 329, 8, 'devmajor');
  oct(h.devminor ?? 0, 337, 8, 'devminor');
  return setChecksum(b, { offBy: h.badChecksum === true ? 1 : 0 });
}

/**
 * Writes the checksum of header block `b` into its field, in place, and returns `b`: the sum of
 * its bytes with the field counted as spaces, unsigned (POSIX) or signed (old tars), plus `offBy`
 * (a wrong checksum on purpose).
 */
export function setChecksum(b: Buffer, opts: { signed?: boolean; offBy?: number } = {}): Buffer {
  b.fill(0x20, 148, 156);
  let sum = opts.offBy ?? 0;
  for (const x of b) sum += opts.signed === true && x >= 128 ? x - 256 : x;
  b.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return b;
}

const pad = (data: Buffer): Buffer => Buffer.concat([data, Buffer.alloc((BLOCK - (data.length % BLOCK)) % BLOCK)]);

/** Header plus the data padded to a block. `size` may declare more (or less) than `data` holds. */
export function member(h: TarFields, data: string | Buffer = Buffer.alloc(0)): Buffer {
  const bytes = bytesOf(data);
  return Buffer.concat([tarHeader(h, bytes.length), pad(bytes)]);
}

/** PAX records (`"%d %s=%s\n"`, the length counting itself), values as raw bytes. */
export function paxBody(records: readonly (readonly [string, string | Buffer])[]): Buffer {
  return Buffer.concat(
    records.map(([k, v]) => {
      const rest = Buffer.concat([Buffer.from(` ${k}=`), bytesOf(v), Buffer.from('\n')]);
      let len = rest.length + 1;
      while (String(len).length + rest.length !== len) len++;
      return Buffer.concat([Buffer.from(String(len)), rest]);
    }),
  );
}

/** A PAX extended header member ('x'), or a global one ('g'); `body` overrides the records' encoding. */
export function pax(records: readonly (readonly [string, string | Buffer])[], opts: { type?: 'x' | 'g'; body?: Buffer } = {}): Buffer {
  return member({ name: 'PaxHeaders.0/entry', type: opts.type ?? 'x', mode: 0o644 }, opts.body ?? paxBody(records));
}

/** A GNU long name ('L') or long link name ('K') member for the header that follows. */
export function gnuLong(name: string | Buffer, type: 'L' | 'K' = 'L'): Buffer {
  return member({ name: '././@LongLink', type }, Buffer.concat([bytesOf(name), Buffer.from([0])]));
}

export const file = (name: string | Buffer, data: string | Buffer, extra: Partial<TarFields> = {}): Buffer =>
  member({ name, type: '0', mode: 0o644, ...extra }, data);
export const dir = (name: string | Buffer, extra: Partial<TarFields> = {}): Buffer => member({ name, type: '5', mode: 0o755, ...extra });
export const symlink = (name: string | Buffer, target: string | Buffer): Buffer => member({ name, type: '2', linkname: target, mode: 0o777 });
export const hardlink = (name: string | Buffer, target: string | Buffer): Buffer => member({ name, type: '1', linkname: target });

/** Members followed by the end-of-archive marker. */
export function tarOf(...members: Buffer[]): Buffer {
  return Buffer.concat([...members, END]);
}

// ── layers, configs, manifests, indexes ─────────────────────────────────────────────────────────

export const MT = {
  tar: 'application/vnd.oci.image.layer.v1.tar',
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  config: 'application/vnd.oci.image.config.v1+json',
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  index: 'application/vnd.oci.image.index.v1+json',
} as const;

/** A layer blob and the descriptor facts the unpacker checks it against. */
export interface LayerBlob {
  blob: Buffer;
  mediaType: string;
  digest: Digest;
  size: number;
  diffId: Digest;
}

/** gzip (default) or plain tar; the diffID is the tar's digest either way. */
export function layerOf(tar: Buffer, opts: { compress?: boolean; mediaType?: string } = {}): LayerBlob {
  const compress = opts.compress ?? true;
  const blob = compress ? gzipSync(tar) : tar;
  return { blob, mediaType: opts.mediaType ?? (compress ? MT.gzip : MT.tar), digest: sha256(blob), size: blob.length, diffId: sha256(tar) };
}

/**
 * A decompression bomb: a gzip layer of one file of `bytes` zeros, made in chunks so the test never
 * holds the expanded bytes (1 GiB of zeros is about 1 MiB of gzip).
 */
export async function zeroBomb(bytes: number, name = 'bomb'): Promise<LayerBlob> {
  const gz = createGzip({ level: 9 });
  const out: Buffer[] = [];
  const collected = (async () => {
    for await (const c of gz) out.push(c as Buffer);
  })();
  const diff = createHash('sha256');
  const write = async (b: Buffer): Promise<void> => {
    diff.update(b);
    if (!gz.write(b)) await new Promise((r) => gz.once('drain', r));
  };
  await write(tarHeader({ name, type: '0', mode: 0o644 }, bytes));
  const zeros = Buffer.alloc(1024 * 1024);
  for (let left = bytes; left > 0; left -= zeros.length) await write(left >= zeros.length ? zeros : zeros.subarray(0, left));
  await write(Buffer.alloc((BLOCK - (bytes % BLOCK)) % BLOCK));
  await write(END);
  gz.end();
  await collected;
  const blob = Buffer.concat(out);
  return { blob, mediaType: MT.gzip, digest: sha256(blob), size: blob.length, diffId: `sha256:${diff.digest('hex')}` as Digest };
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { os: string; architecture: string };
}

export interface ImageParts {
  config: Buffer;
  configDigest: Digest;
  manifest: Buffer;
  manifestDigest: Digest;
  layers: LayerBlob[];
}

/** An image config for this host's platform; `config` goes under `.config` (User, Env, WorkingDir…). */
export function configOf(diffIds: readonly string[], config: Record<string, unknown> = { Cmd: ['/bin/true'] }): Buffer {
  const { os, architecture } = hostPlatform();
  return Buffer.from(JSON.stringify({ architecture, os, config, rootfs: { type: 'layers', diff_ids: diffIds } }));
}

/**
 * An OCI manifest over `layers`. `layerDescriptors` and `configDescriptor` replace what the
 * manifest says about the blobs (media type confusion, wrong sizes, malformed digests).
 */
export function imageOf(
  layers: LayerBlob[],
  opts: {
    config?: Buffer;
    configDescriptor?: Partial<Descriptor>;
    layerDescriptors?: Descriptor[];
    manifest?: Record<string, unknown>;
  } = {},
): ImageParts {
  const config = opts.config ?? configOf(layers.map((l) => l.diffId));
  const configDigest = sha256(config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MT.manifest,
      config: { mediaType: MT.config, digest: configDigest, size: config.length, ...opts.configDescriptor },
      layers: opts.layerDescriptors ?? layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
      ...opts.manifest,
    }),
  );
  return { config, configDigest, manifest, manifestDigest: sha256(manifest), layers };
}

/** An OCI index with one entry per descriptor, each for this host's platform. */
export function indexOf(children: readonly Descriptor[]): Buffer {
  const { os, architecture } = hostPlatform();
  return Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT.index, manifests: children.map((c) => ({ platform: { os, architecture }, ...c })) }));
}

// ── the real registry: push, plant, tamper ──────────────────────────────────────────────────────

async function expectStatus(res: Response, want: number, what: string): Promise<Response> {
  if (res.status !== want) throw new Error(`${what}: HTTP ${res.status}, want ${want}: ${(await res.text()).slice(0, 300)}`);
  return res;
}

/** A monolithic blob upload; the registry checks the digest itself, so the bytes must hash to it. */
export async function pushBlob(registryUrl: string, repo: string, data: Buffer): Promise<Digest> {
  const digest = sha256(data);
  const start = await expectStatus(await fetch(`${registryUrl}/v2/${repo}/blobs/uploads/`, { method: 'POST' }), 202, `push blob ${digest}: start`);
  const loc = new URL(start.headers.get('location') ?? '', `${registryUrl}/v2/${repo}/blobs/uploads/`);
  loc.searchParams.set('digest', digest);
  await expectStatus(await fetch(loc, { method: 'PUT', body: new Uint8Array(data), headers: { 'content-type': 'application/octet-stream' } }), 201, `push blob ${digest}`);
  return digest;
}

export async function pushManifest(registryUrl: string, repo: string, reference: string, bytes: Buffer, mediaType: string): Promise<Digest> {
  await expectStatus(
    await fetch(`${registryUrl}/v2/${repo}/manifests/${reference}`, { method: 'PUT', body: new Uint8Array(bytes), headers: { 'content-type': mediaType } }),
    201,
    `push manifest ${repo}:${reference}`,
  );
  return sha256(bytes);
}

/** Config, layers, then the manifest under `tag`. */
export async function pushImageParts(registryUrl: string, repo: string, tag: string, img: ImageParts): Promise<void> {
  await pushBlob(registryUrl, repo, img.config);
  for (const l of img.layers) await pushBlob(registryUrl, repo, l.blob);
  await pushManifest(registryUrl, repo, tag, img.manifest, MT.manifest);
}

const registryV2 = (storageDir: string): string => path.join(storageDir, 'docker/registry/v2');

function blobDataPath(storageDir: string, digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return path.join(registryV2(storageDir), 'blobs/sha256', hex.slice(0, 2), hex, 'data');
}

/**
 * Writes a manifest into the registry's filesystem storage under `tag`, as distribution lays it out,
 * for documents its PUT validation refuses (malformed digests, a manifest calling itself an index).
 * The registry then serves exactly these bytes, with Docker-Content-Digest equal to their sha256 and
 * a Content-Type taken from the document's own `mediaType`.
 */
export async function plantManifest(storageDir: string, repo: string, tag: string, bytes: Buffer): Promise<Digest> {
  const digest = sha256(bytes);
  const hex = digest.slice('sha256:'.length);
  const data = blobDataPath(storageDir, digest);
  await fsp.mkdir(path.dirname(data), { recursive: true });
  await fsp.writeFile(data, bytes);
  const repoDir = path.join(registryV2(storageDir), 'repositories', repo, '_manifests');
  for (const link of [`revisions/sha256/${hex}`, `tags/${tag}/current`, `tags/${tag}/index/sha256/${hex}`]) {
    await fsp.mkdir(path.join(repoDir, link), { recursive: true });
    await fsp.writeFile(path.join(repoDir, link, 'link'), digest);
  }
  return digest;
}

/** Replaces a stored blob's bytes behind the registry's back: it keeps serving them under the old digest. */
export async function tamperBlob(storageDir: string, digest: string, bytes: Buffer): Promise<void> {
  const data = blobDataPath(storageDir, digest);
  await fsp.access(data);
  await fsp.writeFile(data, bytes);
}

// ── canaries ────────────────────────────────────────────────────────────────────────────────────

export interface Canaries {
  /** The test's temp dir for this case: canary.txt, canary-dir/, and the root below a/b/. */
  outer: string;
  /** The unpack root: an empty 0700 directory, `outer/a/b/root`. */
  root: string;
  /** A directory of this case under /tmp, holding canary.txt: the target of absolute names and links. */
  hostDir: string;
  hostFile: string;
  /** `hostDir` relative to "/": where a confined write aimed at it lands inside the root. */
  hostDirInRoot: string;
}

const CANARY_TEXT = 'canary: must never change\n';
/** Canaries get an old mtime, so that any write shows. */
const CANARY_TIME = new Date('2001-01-01T00:00:00Z');

export async function makeCanaries(parent: string, name: string): Promise<Canaries> {
  const outer = path.join(parent, name);
  const root = path.join(outer, 'a', 'b', 'root');
  await fsp.mkdir(root, { recursive: true, mode: 0o700 });
  await fsp.writeFile(path.join(outer, 'canary.txt'), CANARY_TEXT);
  await fsp.mkdir(path.join(outer, 'canary-dir'));
  const hostDir = await fsp.mkdtemp('/tmp/berth-hostile-host-');
  const hostFile = path.join(hostDir, 'canary.txt');
  await fsp.writeFile(hostFile, CANARY_TEXT);
  for (const p of [path.join(outer, 'canary.txt'), path.join(outer, 'canary-dir'), hostFile, hostDir, outer]) {
    await fsp.utimes(p, CANARY_TIME, CANARY_TIME);
  }
  return { outer, root, hostDir, hostFile, hostDirInRoot: hostDir.slice(1) };
}

/** Everything a write, link, chmod, chown or xattr outside the root would change. */
export async function canaryState(c: Canaries): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const p of [c.outer, path.join(c.outer, 'canary.txt'), path.join(c.outer, 'canary-dir'), c.hostDir, c.hostFile, path.join(c.outer, 'a'), path.dirname(c.root), '/tmp']) {
    const st = await fsp.lstat(p, { bigint: true });
    const entry: Record<string, unknown> = {
      mode: st.mode,
      uid: st.uid,
      gid: st.gid,
      nlink: st.nlink,
      ino: st.ino,
      mtimeNs: st.mtimeNs,
      ctimeNs: st.ctimeNs,
      xattrs: llistxattr(p).sort(),
    };
    if (st.isFile()) entry['content'] = await fsp.readFile(p, 'utf8');
    // /tmp changes under other processes: only what concerns this case is compared there.
    if (p === '/tmp') {
      out[p] = { names: (await fsp.readdir(p)).filter((n) => n === path.basename(c.hostFile) || n === path.basename(c.hostDir)).sort() };
      continue;
    }
    if (st.isDirectory()) entry['names'] = (await fsp.readdir(p)).sort();
    out[p] = entry;
  }
  return out;
}

export async function assertCanariesUntouched(c: Canaries, before: Record<string, unknown>): Promise<void> {
  const after = await canaryState(c);
  assert.deepEqual(after, before, 'a canary outside the root changed');
  assert.equal(await fsp.readFile(c.hostFile, 'utf8'), CANARY_TEXT);
  assert.equal(await fsp.readFile(path.join(c.outer, 'canary.txt'), 'utf8'), CANARY_TEXT);
}

export async function removeCanaries(c: Canaries): Promise<void> {
  await fsp.rm(c.hostDir, { recursive: true, force: true });
  await fsp.rm(c.outer, { recursive: true, force: true });
}

// ── what a confined case leaves inside the root ─────────────────────────────────────────────────

export interface Inside {
  /** Relative to the root. */
  path: string;
  is: 'file' | 'dir' | 'symlink' | 'fifo' | 'char' | 'absent';
  content?: string;
  /** Symlink target, verbatim. */
  target?: string;
  /** Permission bits including setuid/setgid/sticky. */
  mode?: number;
  rdev?: readonly [number, number];
  /** An xattr that must be present with this value, or absent (null). */
  xattr?: readonly [string, string | null];
  /** Another path of the root that must be the same inode (a hardlink). */
  sameInodeAs?: string;
}

export async function assertInside(root: string, expect: readonly Inside[]): Promise<void> {
  for (const e of expect) {
    const p = path.join(root, e.path);
    const st = await fsp.lstat(p).catch(() => undefined);
    if (e.is === 'absent') {
      assert.equal(st, undefined, `${e.path} must not exist`);
      continue;
    }
    assert.ok(st !== undefined, `${e.path} must exist inside the root`);
    const kind = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFIFO() ? 'fifo' : st.isCharacterDevice() ? 'char' : 'other';
    assert.equal(kind, e.is, `${e.path} is a ${kind}`);
    if (e.content !== undefined) assert.equal(await fsp.readFile(p, 'utf8'), e.content, `${e.path} content`);
    if (e.target !== undefined) assert.equal(await fsp.readlink(p), e.target, `${e.path} target`);
    if (e.mode !== undefined) assert.equal((st.mode & 0o7777).toString(8), e.mode.toString(8), `${e.path} mode`);
    if (e.rdev !== undefined) assert.equal(st.rdev, makedev(e.rdev[0], e.rdev[1]), `${e.path} device number`);
    if (e.xattr !== undefined) {
      const v = lgetxattr(p, e.xattr[0]);
      assert.equal(v === null ? null : v.toString(), e.xattr[1], `${e.path} xattr ${e.xattr[0]}`);
    }
    if (e.sameInodeAs !== undefined) assert.equal(st.ino, (await fsp.lstat(path.join(root, e.sameInodeAs))).ino, `${e.path} is a hardlink of ${e.sameInodeAs}`);
  }
}

// ── the layer catalogue (fed to unpackLayer, the function the pull uses) ─────────────────────────

export type Outcome = ErrorCode | 'confined';

export interface LayerBuild {
  blob: Buffer;
  mediaType: string;
  /** What the unpacker is told the blob is (the descriptor and the config's diffID). */
  expected: { digest: Digest; size: number; diffId: Digest };
  /** For confined cases: what must be inside the root afterwards. */
  inside?: Inside[];
  /** For confined cases: the layer's root-level opaque marker (default false). */
  opaqueRoot?: boolean;
}

export interface LayerCase {
  /** Short kebab-case key: test names and the docs table use it. */
  id: string;
  title: string;
  rule: string;
  outcome: Outcome;
  limits?: Partial<UnpackLimits>;
  allowDevices?: boolean;
  /** A warning the unpacker must log. */
  warns?: RegExp;
  /** The root must hold no more than this many bytes of regular files afterwards. */
  maxRootBytes?: number;
  build(c: Canaries): LayerBuild | Promise<LayerBuild>;
}

const PWNED = 'pwned\n';

/** A well-formed gzip layer of `members`, described truthfully. */
function gz(members: Buffer[], inside?: Inside[], extra: Partial<LayerBuild> = {}): LayerBuild {
  const l = layerOf(tarOf(...members));
  return { blob: l.blob, mediaType: l.mediaType, expected: { digest: l.digest, size: l.size, diffId: l.diffId }, ...(inside ? { inside } : {}), ...extra };
}

/** A blob that is not a tar.gz, described truthfully (digest and size of the bytes, diffID of `tar`). */
function raw(blob: Buffer, mediaType: string, diffIdOf: Buffer = blob): LayerBuild {
  return { blob, mediaType, expected: { digest: sha256(blob), size: blob.length, diffId: sha256(diffIdOf) } };
}

export const LAYER_CASES: readonly LayerCase[] = [
  // E2 entry names: `..` and absolute names are rejected.
  { id: 'name-dotdot', title: 'file named ../../../canary.txt', rule: 'E2', outcome: 'ERR_UNSAFE_CONTENT', build: () => gz([file('../../../canary.txt', PWNED)]) },
  {
    id: 'name-dotdot-inner',
    title: 'file named a/../../../../canary-dir/new',
    rule: 'E2',
    outcome: 'ERR_UNSAFE_CONTENT',
    build: () => gz([dir('a'), file('a/../../../../canary-dir/new', PWNED)]),
  },
  { id: 'name-dot-prefixed-dotdot', title: 'file named ./../../../canary-dir/new', rule: 'E2', outcome: 'ERR_UNSAFE_CONTENT', build: () => gz([file('./../../../canary-dir/new', PWNED)]) },
  { id: 'name-absolute', title: 'file named with the host canary\'s absolute path', rule: 'E2', outcome: 'ERR_UNSAFE_CONTENT', build: (c) => gz([file(c.hostFile, PWNED)]) },
  {
    id: 'name-gnu-long-dotdot',
    title: 'GNU long name (L) of 40 × ../ then canary.txt',
    rule: 'E2',
    outcome: 'ERR_UNSAFE_CONTENT',
    build: () => gz([gnuLong(`${'../'.repeat(40)}canary.txt`), file('innocent', PWNED)]),
  },
  {
    id: 'name-nul',
    title: 'PAX path with a NUL byte before ../',
    rule: 'E9',
    outcome: 'ERR_UNSAFE_CONTENT',
    build: () => gz([pax([['path', Buffer.from('ok\u0000/../../../canary.txt', 'latin1')]]), file('innocent', PWNED)]),
  },

  // E2 symlinks: targets are stored verbatim and confined when later entries resolve through them.
  {
    id: 'symlink-root-write-through',
    title: 'symlink to /, then a file written through it at the host canary\'s path',
    rule: 'E2',
    outcome: 'confined',
    build: (c) =>
      gz([symlink('rootlink', '/'), file(`rootlink${c.hostFile}`, PWNED)], [
        { path: 'rootlink', is: 'symlink', target: '/' },
        { path: `${c.hostDirInRoot}/canary.txt`, is: 'file', content: PWNED },
      ]),
  },
  {
    id: 'symlink-absolute-dir-write-through',
    title: 'symlink to the host canary dir, then files written through it (existing and new)',
    rule: 'E2',
    outcome: 'confined',
    build: (c) =>
      gz([symlink('d', c.hostDir), file('d/canary.txt', PWNED), file('d/new', PWNED)], [
        { path: `${c.hostDirInRoot}/canary.txt`, is: 'file', content: PWNED },
        { path: `${c.hostDirInRoot}/new`, is: 'file', content: PWNED },
      ]),
  },
  {
    id: 'symlink-relative-climb',
    title: 'symlink to ../../../, then up/canary.txt and up/canary-dir/new',
    rule: 'E2',
    outcome: 'confined',
    build: () =>
      gz([symlink('up', '../../../'), file('up/canary.txt', PWNED), file('up/canary-dir/new', PWNED)], [
        { path: 'canary.txt', is: 'file', content: PWNED },
        { path: 'canary-dir/new', is: 'file', content: PWNED },
      ]),
  },
  {
    id: 'symlink-chain-climb',
    title: 'a chain of relative links each climbing further (l1 → .., l2 → l1/.., l3 → l2/../l1/../.., l4 → l3/../../../canary-dir)',
    rule: 'E2',
    outcome: 'confined',
    build: () =>
      gz(
        [symlink('l1', '..'), symlink('l2', 'l1/..'), symlink('l3', 'l2/../l1/../..'), symlink('l4', 'l3/../../../canary-dir'), file('l4/new', PWNED)],
        [{ path: 'canary-dir/new', is: 'file', content: PWNED }],
      ),
  },
  {
    id: 'symlink-chain-absolute',
    title: 'a → /b, b → host canary dir, then a/canary.txt',
    rule: 'E2',
    outcome: 'confined',
    build: (c) => gz([symlink('a', '/b'), symlink('b', c.hostDir), file('a/canary.txt', PWNED)], [{ path: `${c.hostDirInRoot}/canary.txt`, is: 'file', content: PWNED }]),
  },
  {
    id: 'symlink-final-component-replaced',
    title: 'symlink canary.txt → host canary, then a file canary.txt',
    rule: 'E3',
    outcome: 'confined',
    build: (c) => gz([symlink('canary.txt', c.hostFile), file('canary.txt', PWNED)], [{ path: 'canary.txt', is: 'file', content: PWNED }]),
  },
  {
    id: 'symlink-replaced-by-dir',
    title: 'symlink d → host canary dir, then a directory d (mode 0777), then d/new',
    rule: 'E3',
    outcome: 'confined',
    build: (c) =>
      gz([symlink('d', c.hostDir), dir('d', { mode: 0o777 }), file('d/new', PWNED)], [
        { path: 'd', is: 'dir', mode: 0o777 },
        { path: 'd/new', is: 'file', content: PWNED },
      ]),
  },
  { id: 'symlink-loop', title: 'a → b, b → a, then a/x', rule: 'E2', outcome: 'ERR_UNSAFE_CONTENT', build: () => gz([symlink('a', 'b'), symlink('b', 'a'), file('a/x', PWNED)]) },
  {
    id: 'symlink-41-hops',
    title: 'a chain of 41 links to a directory, then s0/x',
    rule: 'E2',
    outcome: 'ERR_UNSAFE_CONTENT',
    build: () => gz([dir('target'), ...Array.from({ length: 41 }, (_, i) => symlink(`s${i}`, i === 40 ? 'target' : `s${i + 1}`)), file('s0/x', PWNED)]),
  },

  // E4 hardlinks: the target follows the name rules and must be in this layer.
  { id: 'hardlink-dotdot', title: 'hardlink to ../../../canary.txt', rule: 'E4', outcome: 'ERR_UNSAFE_CONTENT', build: () => gz([hardlink('h', '../../../canary.txt')]) },
  { id: 'hardlink-absolute', title: 'hardlink to the host canary\'s absolute path', rule: 'E4', outcome: 'ERR_UNSAFE_CONTENT', build: (c) => gz([hardlink('h', c.hostFile)]) },
  {
    id: 'hardlink-through-escaping-symlink',
    title: 'symlink s → host canary dir, then a hardlink to s/canary.txt',
    rule: 'E4',
    outcome: 'ERR_INVALID_IMAGE',
    build: (c) => gz([symlink('s', c.hostDir), hardlink('h', 's/canary.txt')]),
  },
  {
    id: 'hardlink-to-escaping-symlink',
    title: 'symlink s → host canary, then a hardlink h to s (links the symlink itself)',
    rule: 'E4',
    outcome: 'confined',
    build: (c) =>
      gz([symlink('s', c.hostFile), hardlink('h', 's')], [
        { path: 'h', is: 'symlink', target: c.hostFile, sameInodeAs: 's' },
        { path: 's', is: 'symlink', target: c.hostFile },
      ]),
  },
  {
    id: 'hardlink-to-escaping-symlink-then-write',
    title: 'symlink s → host canary, hardlink h → s, then a file h',
    rule: 'E3',
    outcome: 'confined',
    build: (c) =>
      gz([symlink('s', c.hostFile), hardlink('h', 's'), file('h', PWNED)], [
        { path: 'h', is: 'file', content: PWNED },
        { path: 's', is: 'symlink', target: c.hostFile },
      ]),
  },

  // E6 whiteouts.
  { id: 'whiteout-dotdot', title: 'whiteout .wh... (hides "..")', rule: 'E6', outcome: 'ERR_UNSAFE_CONTENT', build: () => gz([file('.wh...', '')]) },
  { id: 'whiteout-dot', title: 'whiteout .wh.. (hides ".")', rule: 'E6', outcome: 'ERR_UNSAFE_CONTENT', build: () => gz([file('a/.wh..', '')]) },
  { id: 'whiteout-empty', title: 'whiteout .wh. (hides "")', rule: 'E6', outcome: 'ERR_UNSAFE_CONTENT', build: () => gz([file('.wh.', '')]) },
  { id: 'whiteout-dotdot-parent', title: 'whiteout ../../../.wh.canary.txt', rule: 'E6', outcome: 'ERR_UNSAFE_CONTENT', build: () => gz([file('../../../.wh.canary.txt', '')]) },
  { id: 'whiteout-as-directory', title: 'a whiteout name used as a directory (.wh.canary-dir/x)', rule: 'E6', outcome: 'ERR_INVALID_IMAGE', build: () => gz([file('.wh.canary-dir/x', PWNED)]) },
  {
    id: 'whiteout-through-symlink',
    title: 'symlink s → host canary dir, then s/.wh.canary.txt',
    rule: 'E6',
    outcome: 'confined',
    build: (c) => gz([symlink('s', c.hostDir), file('s/.wh.canary.txt', '')], [{ path: `${c.hostDirInRoot}/canary.txt`, is: 'char', rdev: [0, 0] }]),
  },
  {
    id: 'opaque-through-symlink',
    title: 'symlink s → host canary dir, then the opaque marker s/.wh..wh..opq',
    rule: 'E6',
    outcome: 'confined',
    build: (c) => gz([symlink('s', c.hostDir), file('s/.wh..wh..opq', '')], [{ path: c.hostDirInRoot, is: 'dir', xattr: ['trusted.overlay.opaque', 'y'] }]),
  },
  {
    id: 'opaque-through-symlink-to-root',
    title: 'symlink s → /, then s/.wh..wh..opq (the layer\'s own root: the lower stack is cut)',
    rule: 'E6',
    outcome: 'confined',
    build: () => gz([symlink('s', '/'), file('s/.wh..wh..opq', '')], [{ path: '.', is: 'dir', xattr: ['trusted.overlay.opaque', null] }], { opaqueRoot: true }),
  },
  { id: 'opaque-under-file', title: 'file f, then f/.wh..wh..opq', rule: 'E6', outcome: 'ERR_INVALID_IMAGE', build: () => gz([file('f', 'x'), file('f/.wh..wh..opq', '')]) },
  {
    id: 'whiteout-same-layer',
    title: 'file canary.txt, then .wh.canary.txt in the same layer (never deletes)',
    rule: 'E6',
    outcome: 'confined',
    build: () => gz([file('canary.txt', 'mine'), file('.wh.canary.txt', '')], [{ path: 'canary.txt', is: 'file', content: 'mine' }]),
  },

  // E7 entry types and attributes.
  {
    id: 'device-nodes-skipped',
    title: 'char 1:3 and block 8:0 without the device policy: skipped with a warning',
    rule: 'E7',
    outcome: 'confined',
    warns: /device node skipped/,
    build: () =>
      gz([member({ name: 'null', type: '3', devmajor: 1, devminor: 3 }), member({ name: 'sda', type: '4', devmajor: 8, devminor: 0 })], [
        { path: 'null', is: 'absent' },
        { path: 'sda', is: 'absent' },
      ]),
  },
  {
    id: 'device-node-through-symlink',
    title: 'with the device policy: symlink s → host canary dir, then char device s/null',
    rule: 'E7',
    outcome: 'confined',
    allowDevices: true,
    build: (c) => gz([symlink('s', c.hostDir), member({ name: 's/null', type: '3', devmajor: 1, devminor: 3 })], [{ path: `${c.hostDirInRoot}/null`, is: 'char', rdev: [1, 3] }]),
  },
  {
    id: 'device-number-out-of-range',
    title: 'with the device policy: char device 2097151:0',
    rule: 'E7',
    outcome: 'ERR_INVALID_IMAGE',
    allowDevices: true,
    build: () => gz([member({ name: 'big', type: '3', devmajor: 0o7777777, devminor: 0 })]),
  },
  {
    id: 'fifo-through-symlink',
    title: 'symlink s → host canary dir, then fifo s/fifo',
    rule: 'E7',
    outcome: 'confined',
    build: (c) => gz([symlink('s', c.hostDir), member({ name: 's/fifo', type: '6', mode: 0o644 })], [{ path: `${c.hostDirInRoot}/fifo`, is: 'fifo', mode: 0o644 }]),
  },
  {
    id: 'setuid-setgid',
    title: 'setuid+setgid root file, and a setuid file through symlink s → host canary dir',
    rule: 'E5',
    outcome: 'confined',
    build: (c) =>
      gz([file('bin/su', '#!/bin/true\n', { mode: 0o6755 }), symlink('s', c.hostDir), file('s/suid', '#!/bin/true\n', { mode: 0o4755 })], [
        { path: 'bin/su', is: 'file', mode: 0o6755 },
        { path: `${c.hostDirInRoot}/suid`, is: 'file', mode: 0o4755 },
      ]),
  },
  { id: 'unknown-typeflag', title: 'entry with typeflag Z', rule: 'E7', outcome: 'ERR_UNSUPPORTED', build: () => gz([member({ name: 'z', type: 'Z' })]) },
  { id: 'gnu-sparse', title: 'GNU sparse entry (typeflag S)', rule: 'E7', outcome: 'ERR_UNSUPPORTED', build: () => gz([member({ name: 'sparse', type: 'S' })]) },
  {
    id: 'xattr-trusted-overlay',
    title: 'PAX xattrs trusted.overlay.redirect, trusted.overlay.opaque and security.selinux on a directory: dropped',
    rule: 'E7',
    outcome: 'confined',
    build: () =>
      gz(
        [
          pax([
            ['SCHILY.xattr.trusted.overlay.redirect', '/etc'],
            ['SCHILY.xattr.trusted.overlay.opaque', 'y'],
            ['SCHILY.xattr.security.selinux', 'system_u:object_r:etc_t:s0'],
          ]),
          dir('d'),
        ],
        [
          { path: 'd', is: 'dir', xattr: ['trusted.overlay.redirect', null] },
          { path: 'd', is: 'dir', xattr: ['trusted.overlay.opaque', null] },
          { path: 'd', is: 'dir', xattr: ['security.selinux', null] },
        ],
      ),
  },

  // E8 sizes and limits, checked before writing.
  {
    id: 'declared-size-beyond-data',
    title: 'header declares 1 MiB, the archive holds 16 bytes then ends',
    rule: 'E8',
    outcome: 'ERR_INVALID_IMAGE',
    build: () => {
      const tar = Buffer.concat([member({ name: 'big', type: '0', size: 1024 * 1024 }, 'x'.repeat(16)), END]);
      return raw(gzipSync(tar), MT.gzip, tar);
    },
  },
  {
    id: 'declared-size-over-max-file-size',
    title: 'header declares 16 GiB + 1 (base-256), over maxFileSize: refused before any byte',
    rule: 'E8',
    outcome: 'ERR_LIMIT_EXCEEDED',
    build: () => {
      const tar = Buffer.concat([member({ name: 'huge', type: '0', size: 16 * 2 ** 30 + 1 }, 'x'.repeat(4096)), END]);
      return { ...raw(gzipSync(tar), MT.gzip, tar), inside: [{ path: 'huge', is: 'absent' }] };
    },
  },
  {
    id: 'size-not-safe-integer',
    title: 'header size 2^62 in base-256',
    rule: 'E8',
    outcome: 'ERR_INVALID_IMAGE',
    build: () => {
      const tar = Buffer.concat([member({ name: 'huge', type: '0', size: 2 ** 62 }), END]);
      return raw(gzipSync(tar), MT.gzip, tar);
    },
  },
  {
    id: 'size-negative',
    title: 'header size negative in base-256 (0xff…fe)',
    rule: 'E8',
    outcome: 'ERR_INVALID_IMAGE',
    build: () => {
      const field = Buffer.alloc(12, 0xff);
      field[11] = 0xfe;
      const tar = Buffer.concat([member({ name: 'neg', type: '0', sizeField: field }), END]);
      return raw(gzipSync(tar), MT.gzip, tar);
    },
  },
  {
    id: 'decompression-bomb',
    title: 'about 128 KiB of gzip expanding to 128 MiB, maxUncompressedBytes 8 MiB',
    rule: 'E8',
    outcome: 'ERR_LIMIT_EXCEEDED',
    limits: { maxUncompressedBytes: 8 * 2 ** 20 },
    maxRootBytes: 8 * 2 ** 20,
    build: async () => {
      const l = await zeroBomb(128 * 2 ** 20);
      return { blob: l.blob, mediaType: l.mediaType, expected: { digest: l.digest, size: l.size, diffId: l.diffId } };
    },
  },
  { id: 'depth-bomb', title: 'a name 300 directories deep (maxDepth 256)', rule: 'E8', outcome: 'ERR_LIMIT_EXCEEDED', build: () => gz([pax([['path', `${'d/'.repeat(300)}f`]]), file('innocent', PWNED)]) },
  {
    id: 'entry-count',
    title: '5 entries with maxEntries 4',
    rule: 'E8',
    outcome: 'ERR_LIMIT_EXCEEDED',
    limits: { maxEntries: 4 },
    build: () => gz(Array.from({ length: 5 }, (_, i) => file(`f${i}`, 'x'))),
  },
  {
    id: 'pax-size-override',
    title: 'PAX size 16 GiB + 1 over a ustar size of 0',
    rule: 'E8',
    outcome: 'ERR_LIMIT_EXCEEDED',
    build: () => gz([pax([['size', String(16 * 2 ** 30 + 1)]]), member({ name: 'f', type: '0', size: 0 })]),
  },

  // E1 and framing: the stream is verified whole; nothing hides after the end.
  {
    id: 'trailing-garbage-after-end',
    title: '1 KiB of non-zero bytes after the end-of-archive marker',
    rule: 'E1',
    outcome: 'ERR_INVALID_IMAGE',
    build: () => {
      const tar = Buffer.concat([file('ok', 'x'), END, Buffer.alloc(1024, 'garbage')]);
      return raw(gzipSync(tar), MT.gzip, tar);
    },
  },
  {
    id: 'trailing-short-garbage-after-end',
    title: '100 bytes of garbage after the end-of-archive marker',
    rule: 'E1',
    outcome: 'ERR_INVALID_IMAGE',
    build: () => {
      const tar = Buffer.concat([file('ok', 'x'), END, Buffer.alloc(100, 'garbage')]);
      return raw(gzipSync(tar), MT.gzip, tar);
    },
  },
  {
    id: 'entry-hidden-after-end',
    title: 'an entry ../../../canary.txt after the end-of-archive marker',
    rule: 'E1',
    outcome: 'ERR_INVALID_IMAGE',
    build: () => {
      const tar = Buffer.concat([file('ok', 'x'), END, file('../../../canary.txt', PWNED), END]);
      return raw(gzipSync(tar), MT.gzip, tar);
    },
  },
  {
    id: 'gzip-trailing-garbage',
    title: 'bytes after the gzip stream (covered by the digest)',
    rule: 'E1',
    outcome: 'ERR_INVALID_IMAGE',
    build: () => {
      const tar = tarOf(file('ok', 'x'));
      return raw(Buffer.concat([gzipSync(tar), Buffer.from('trailing garbage')]), MT.gzip, tar);
    },
  },
  {
    id: 'bad-header-checksum',
    title: 'a header whose checksum is off by one',
    rule: 'E1',
    outcome: 'ERR_INVALID_IMAGE',
    build: () => gz([member({ name: 'f', type: '0', badChecksum: true }, 'x')]),
  },
  {
    id: 'declared-tar-is-gzip',
    title: 'layer declared plain tar, blob is gzip',
    rule: 'P2',
    outcome: 'ERR_INVALID_IMAGE',
    build: () => {
      const tar = tarOf(file('ok', 'x'));
      return raw(gzipSync(tar), MT.tar);
    },
  },
  {
    id: 'declared-gzip-is-tar',
    title: 'layer declared tar+gzip, blob is plain tar',
    rule: 'P2',
    outcome: 'ERR_INVALID_IMAGE',
    build: () => raw(tarOf(file('ok', 'x')), MT.gzip),
  },
  {
    id: 'declared-config-as-layer',
    title: 'an image config JSON declared as a tar+gzip layer',
    rule: 'P2',
    outcome: 'ERR_INVALID_IMAGE',
    build: () => raw(configOf([]), MT.gzip),
  },
  { id: 'declared-zstd', title: 'layer declared tar+zstd, blob is plain tar', rule: 'P2', outcome: 'ERR_INVALID_IMAGE', build: () => raw(tarOf(file('ok', 'x')), MT.zstd) },
  {
    id: 'wrong-digest',
    title: 'blob does not hash to the descriptor digest',
    rule: 'E1',
    outcome: 'ERR_DIGEST_MISMATCH',
    build: () => {
      const b = gz([file('ok', 'x')]);
      return { ...b, expected: { ...b.expected, digest: sha256('another blob') } };
    },
  },
  {
    id: 'wrong-diffid',
    title: 'uncompressed tar does not hash to the config\'s diffID',
    rule: 'E1',
    outcome: 'ERR_DIGEST_MISMATCH',
    build: () => {
      const b = gz([file('ok', 'x')]);
      return { ...b, expected: { ...b.expected, diffId: sha256('another tar') } };
    },
  },
  {
    id: 'blob-longer-than-descriptor',
    title: 'blob longer than the descriptor size',
    rule: 'E8',
    outcome: 'ERR_DIGEST_MISMATCH',
    build: () => {
      const b = gz([file('ok', 'x'.repeat(10_000))]);
      return { ...b, expected: { ...b.expected, size: b.expected.size - 1 } };
    },
  },

  // E9 PAX tricks: PAX values win over the ustar fields and obey the same rules.
  { id: 'pax-path-dotdot', title: 'PAX path ../../../canary.txt over an innocent name', rule: 'E9', outcome: 'ERR_UNSAFE_CONTENT', build: () => gz([pax([['path', '../../../canary.txt']]), file('innocent', PWNED)]) },
  { id: 'pax-path-absolute', title: 'PAX path = the host canary\'s absolute path', rule: 'E9', outcome: 'ERR_UNSAFE_CONTENT', build: (c) => gz([pax([['path', c.hostFile]]), file('innocent', PWNED)]) },
  {
    id: 'pax-linkpath-escape',
    title: 'symlink with an innocent linkname and PAX linkpath = host canary dir, then a file through it',
    rule: 'E9',
    outcome: 'confined',
    build: (c) =>
      gz([pax([['linkpath', c.hostDir]]), symlink('s', 'innocent'), file('s/canary.txt', PWNED)], [
        { path: 's', is: 'symlink', target: c.hostDir },
        { path: `${c.hostDirInRoot}/canary.txt`, is: 'file', content: PWNED },
      ]),
  },
  {
    id: 'pax-linkpath-hardlink-dotdot',
    title: 'hardlink with an innocent linkname and PAX linkpath ../../../canary.txt',
    rule: 'E9',
    outcome: 'ERR_UNSAFE_CONTENT',
    build: () => gz([file('innocent', 'x'), pax([['linkpath', '../../../canary.txt']]), hardlink('h', 'innocent')]),
  },
  {
    id: 'gnu-long-link-dotdot',
    title: 'hardlink with a GNU long link name (K) climbing out',
    rule: 'E4',
    outcome: 'ERR_UNSAFE_CONTENT',
    build: () => gz([file('innocent', 'x'), gnuLong(`${'../'.repeat(40)}canary.txt`, 'K'), hardlink('h', 'innocent')]),
  },
  { id: 'pax-path-too-long', title: 'PAX path of 5,000 bytes (maxPathBytes 4096)', rule: 'E8', outcome: 'ERR_LIMIT_EXCEEDED', build: () => gz([pax([['path', 'a'.repeat(5000)]]), file('innocent', PWNED)]) },
  {
    id: 'pax-header-over-4mib',
    title: 'one PAX record of 5 MiB',
    rule: 'E9',
    outcome: 'ERR_INVALID_IMAGE',
    build: () => gz([pax([['comment', 'c'.repeat(5 * 2 ** 20)]]), file('innocent', PWNED)]),
  },
  {
    id: 'pax-record-length-lies',
    title: 'a PAX record whose length runs past the header',
    rule: 'E9',
    outcome: 'ERR_INVALID_IMAGE',
    build: () => gz([pax([], { body: Buffer.from('999 path=../../../canary.txt\n') }), file('innocent', PWNED)]),
  },
  {
    id: 'pax-global-path',
    title: 'PAX global header path=../../../canary.txt before a normal file: ignored',
    rule: 'E9',
    outcome: 'confined',
    build: () =>
      gz([pax([['path', '../../../canary.txt']], { type: 'g' }), file('ok', 'fine')], [
        { path: 'ok', is: 'file', content: 'fine' },
        { path: 'canary.txt', is: 'absent' },
      ]),
  },
  // Go's framing (docker, containerd, scanners): what Go reads as a file's data is never extracted as entries.
  {
    id: 'smuggle-nul-type-final-name',
    title: "typeflag NUL named x/ with PAX path f: a file whose data hides a member, not a directory",
    rule: 'E1',
    outcome: 'confined',
    build: () =>
      gz([pax([['path', 'f']]), member({ name: 'x/', type: '\0' }, file('smuggled', PWNED))], [
        { path: 'f', is: 'file' },
        { path: 'smuggled', is: 'absent' },
        { path: 'x', is: 'absent' },
      ]),
  },
  {
    id: 'smuggle-octal-leading-nul',
    title: 'size field "\\0 0000002000" (Go: 1024) over data that hides a member',
    rule: 'E1',
    outcome: 'confined',
    build: () =>
      gz([member({ name: 'f', type: '0', sizeField: Buffer.from('\0 0000002000', 'latin1') }), file('smuggled', PWNED)], [
        { path: 'f', is: 'file' },
        { path: 'smuggled', is: 'absent' },
      ]),
  },
  {
    id: 'smuggle-global-drops-pax',
    title: 'PAX path=smuggled, then a global header, then a file: the path is dropped as Go drops it',
    rule: 'E9',
    outcome: 'confined',
    build: () =>
      gz([pax([['path', 'smuggled']]), pax([['comment', 'g']], { type: 'g' }), file('benign', PWNED)], [
        { path: 'benign', is: 'file', content: PWNED },
        { path: 'smuggled', is: 'absent' },
      ]),
  },
  {
    id: 'smuggle-old-gnu-n',
    title: "an 'N' member naming the next file: not a long name for Go, an unsupported entry here",
    rule: 'E9',
    outcome: 'ERR_UNSUPPORTED',
    build: () => gz([member({ name: 'n', type: 'N' }, 'smuggled\0'), file('benign', PWNED)]),
  },
  {
    id: 'pax-xattr-flood',
    title: '70 user.* xattrs of 1 KiB each (maxXattrBytes 64 KiB)',
    rule: 'E7',
    outcome: 'ERR_LIMIT_EXCEEDED',
    build: () => gz([pax(Array.from({ length: 70 }, (_, i) => [`SCHILY.xattr.user.x${i}`, 'v'.repeat(1024)] as const)), file('f', 'x')]),
  },
  { id: 'pax-uid-overflow', title: 'PAX uid 4294967296', rule: 'E5', outcome: 'ERR_INVALID_IMAGE', build: () => gz([pax([['uid', '4294967296']]), file('f', 'x')]) },

  // Duplicate entries: the later one wins, by replacing, never by following.
  {
    id: 'duplicate-file',
    title: 'the same file twice',
    rule: 'E3',
    outcome: 'confined',
    build: () => gz([file('f', 'one'), file('f', 'two')], [{ path: 'f', is: 'file', content: 'two' }]),
  },
  {
    id: 'dir-file-dir',
    title: 'directory d with d/x, then a file d, then a directory d (0700)',
    rule: 'E3',
    outcome: 'confined',
    build: () =>
      gz([dir('d'), file('d/x', 'x'), file('d', 'file'), dir('d', { mode: 0o700 })], [
        { path: 'd', is: 'dir', mode: 0o700 },
        { path: 'd/x', is: 'absent' },
      ]),
  },
  {
    id: 'file-symlink-file',
    title: 'file f, then symlink f → host canary, then file f',
    rule: 'E3',
    outcome: 'confined',
    build: (c) => gz([file('f', 'one'), symlink('f', c.hostFile), file('f', PWNED)], [{ path: 'f', is: 'file', content: PWNED }]),
  },
  {
    id: 'dir-symlink-write-through',
    title: 'directory d, then symlink d → host canary dir, then d/canary.txt',
    rule: 'E3',
    outcome: 'confined',
    build: (c) =>
      gz([dir('d'), symlink('d', c.hostDir), file('d/canary.txt', PWNED)], [
        { path: 'd', is: 'symlink', target: c.hostDir },
        { path: `${c.hostDirInRoot}/canary.txt`, is: 'file', content: PWNED },
      ]),
  },
];

export function layerTestName(c: Pick<LayerCase, 'id' | 'title' | 'outcome'>): string {
  return `hostile layer ${c.id}: ${c.title} → ${c.outcome}`;
}

// ── the image catalogue (pushed to docker-registry, pulled through Runtime.pullImage) ────────────

export interface ImageCase {
  id: string;
  title: string;
  rule: string;
  /** What the pull (or, for R1, the config.json generation after it) ends in. */
  outcome: Outcome;
  /** Where the outcome is decided. */
  stage: 'pull' | 'run spec';
}

export const IMAGE_CASES: readonly ImageCase[] = [
  { id: 'traversal-layer', title: 'a layer with ../../../canary.txt', rule: 'E2', outcome: 'ERR_UNSAFE_CONTENT', stage: 'pull' },
  { id: 'symlink-escape-layer', title: 'a layer with a symlink to / and a file written through it at the host canary\'s path', rule: 'E2', outcome: 'confined', stage: 'pull' },
  {
    id: 'cross-layer-symlink',
    title: 'layer 1: symlink s → host canary dir; layer 2: s/canary.txt (each layer extracts into its own directory)',
    rule: 'E2',
    outcome: 'confined',
    stage: 'pull',
  },
  { id: 'hardlink-escape-layer', title: 'a layer hardlinking the host canary through an escaping symlink', rule: 'E4', outcome: 'ERR_INVALID_IMAGE', stage: 'pull' },
  { id: 'pax-traversal-layer', title: 'a layer whose PAX path climbs out', rule: 'E9', outcome: 'ERR_UNSAFE_CONTENT', stage: 'pull' },
  { id: 'huge-declared-size', title: 'a layer declaring a 16 GiB + 1 file', rule: 'E8', outcome: 'ERR_LIMIT_EXCEEDED', stage: 'pull' },
  {
    id: 'decompression-bomb',
    title: 'about 512 KiB of gzip expanding to 512 MiB, snapshots on a 320 MiB tmpfs (stopped by the 256 MiB free-space floor)',
    rule: 'E8',
    outcome: 'ERR_RESOURCE_EXHAUSTED',
    stage: 'pull',
  },
  { id: 'tampered-layer-blob', title: 'the registry serves other bytes for a layer digest', rule: 'C2', outcome: 'ERR_DIGEST_MISMATCH', stage: 'pull' },
  { id: 'tampered-config-blob', title: 'the registry serves other bytes for the config digest', rule: 'C2', outcome: 'ERR_DIGEST_MISMATCH', stage: 'pull' },
  { id: 'tampered-manifest', title: 'the registry serves other manifest bytes under the tag\'s Docker-Content-Digest', rule: 'C2', outcome: 'ERR_DIGEST_MISMATCH', stage: 'pull' },
  { id: 'wrong-diffid', title: 'the config\'s diff_id does not match the layer', rule: 'E1', outcome: 'ERR_DIGEST_MISMATCH', stage: 'pull' },
  { id: 'layer-size-lies', title: 'a layer descriptor size smaller than the blob', rule: 'C2', outcome: 'ERR_DIGEST_MISMATCH', stage: 'pull' },
  { id: 'digest-uppercase', title: 'config digest in uppercase hex', rule: 'C1', outcome: 'ERR_INVALID_IMAGE', stage: 'pull' },
  { id: 'digest-sha512', title: 'config digest sha512:…', rule: 'C1', outcome: 'ERR_INVALID_IMAGE', stage: 'pull' },
  { id: 'digest-short', title: 'config digest sha256:abc', rule: 'C1', outcome: 'ERR_INVALID_IMAGE', stage: 'pull' },
  { id: 'digest-traversal', title: 'layer digest sha256:../../../../canary-dir/x', rule: 'C1', outcome: 'ERR_INVALID_IMAGE', stage: 'pull' },
  { id: 'manifest-as-index', title: 'a manifest served with the index media type', rule: 'P2', outcome: 'ERR_INVALID_IMAGE', stage: 'pull' },
  { id: 'index-child-mislabeled', title: 'an index entry typed manifest that is an index', rule: 'P2', outcome: 'ERR_INVALID_IMAGE', stage: 'pull' },
  { id: 'ambiguous-document', title: 'a document with both manifests and layers', rule: 'P2', outcome: 'ERR_INVALID_IMAGE', stage: 'pull' },
  { id: 'schema1', title: 'a docker schema1 manifest', rule: 'P2', outcome: 'ERR_UNSUPPORTED', stage: 'pull' },
  { id: 'layer-declared-tar-is-gzip', title: 'a gzip layer declared as plain tar', rule: 'P2', outcome: 'ERR_INVALID_IMAGE', stage: 'pull' },
  { id: 'config-as-layer', title: 'the config blob listed as a tar+gzip layer', rule: 'P2', outcome: 'ERR_INVALID_IMAGE', stage: 'pull' },
  { id: 'config-declared-layer-type', title: 'the config descriptor with a layer media type', rule: 'P2', outcome: 'ERR_UNSUPPORTED', stage: 'pull' },
  { id: 'layer-declared-config-type', title: 'a layer descriptor with the config media type', rule: 'P2', outcome: 'ERR_UNSUPPORTED', stage: 'pull' },
  { id: 'manifest-endless', title: 'an endless manifest body from a hostile loopback registry (docker-registry itself refuses manifests over 4 MiB)', rule: 'P1', outcome: 'ERR_INVALID_IMAGE', stage: 'pull' },
  { id: 'layer-count-bomb', title: 'a manifest with 129 layers', rule: 'P1', outcome: 'ERR_INVALID_IMAGE', stage: 'pull' },
  { id: 'index-depth-bomb', title: 'eight nested indexes, each typed index', rule: 'P1', outcome: 'ERR_INVALID_IMAGE', stage: 'pull' },
  { id: 'workdir-proc', title: 'config WorkingDir /proc/self/cwd', rule: 'R1', outcome: 'ERR_INVALID_IMAGE', stage: 'run spec' },
  { id: 'workdir-dotdot', title: 'config WorkingDir /app/../../proc', rule: 'R1', outcome: 'ERR_INVALID_IMAGE', stage: 'run spec' },
  { id: 'user-traversal', title: 'config User root:../../x', rule: 'R1', outcome: 'ERR_INVALID_IMAGE', stage: 'run spec' },
  { id: 'user-huge-uid', title: 'config User of 4096 digits', rule: 'R1', outcome: 'ERR_INVALID_IMAGE', stage: 'run spec' },
  { id: 'user-uid-minus-one', title: 'config User 4294967295 ((uid_t)-1)', rule: 'R1', outcome: 'ERR_INVALID_IMAGE', stage: 'run spec' },
  { id: 'env-nul', title: 'config Env with a NUL byte', rule: 'R1', outcome: 'ERR_INVALID_IMAGE', stage: 'run spec' },
  { id: 'env-no-equals', title: 'config Env entry without =', rule: 'R1', outcome: 'ERR_INVALID_IMAGE', stage: 'run spec' },
];

export function imageCase(id: string): ImageCase {
  const c = IMAGE_CASES.find((x) => x.id === id);
  if (c === undefined) throw new Error(`no image case ${id}`);
  return c;
}

export function imageTestName(c: Pick<ImageCase, 'id' | 'title' | 'outcome'>): string {
  return `hostile image ${c.id}: ${c.title} → ${c.outcome}`;
}

// ── the published table ─────────────────────────────────────────────────────────────────────────

const cell = (s: string): string => s.replace(/\|/g, '\\|');

/** The rows of docs/hostile-images.md, one per case, in catalogue order. */
export function tableRows(): { layers: string[]; images: string[] } {
  return {
    layers: LAYER_CASES.map((c) => `| \`${c.id}\` | ${cell(c.title)} | ${c.rule} | ${c.outcome === 'confined' ? 'confined' : `\`${c.outcome}\``} | ${cell(layerTestName(c))} |`),
    images: IMAGE_CASES.map(
      (c) => `| \`${c.id}\` | ${cell(c.title)} | ${c.rule} | ${c.outcome === 'confined' ? 'confined' : `\`${c.outcome}\``} (${c.stage}) | ${cell(imageTestName(c))} |`,
    ),
  };
}

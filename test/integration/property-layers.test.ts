import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { gunzipSync, gzipSync } from 'node:zlib';
import fc from 'fast-check';
import type { Digest } from '../../src/lib/digest.js';
import { BerthError } from '../../src/lib/errors.js';
import { unpackLayer, type UnpackLimits } from '../../src/runtime/unpack/index.js';
import { propertyParams, settlesAsBerth } from '../helpers/property.js';
import { packTar, type PackHeader } from '../helpers/tar-pack.js';
import { listDisk, listModel, mergeModel, modelLayer, newDir, type DirNode, type EntrySpec, type EntryType, type ModelLimits } from '../helpers/tar-model.js';

/**
 * Issue 15, property tests of the layer unpacker (docs/property-tests.md).
 *
 * 1. Random tars (tar-stream's pack) against the reference model in test/helpers/tar-model.ts:
 *    1–3 layers, each unpacked by the real unpackLayer into its own directory over the previous
 *    ones; every layer's tree (type, mode, content, link target, hardlink groups, whiteouts,
 *    opaque markers) or its error code must be the model's; when all layers extracted, the
 *    read-only overlay mount of them must show the model's merge (mergeModel).
 * 2. The layer pipeline fuzzed: random bytes and mutated valid layers (plain and gzip), with
 *    descriptor digests that match, so the bytes reach gunzip and the tar parser, in random chunk
 *    sizes, some runs aborted part-way. Every run ends in success or a BerthError within the time
 *    bound, and nothing writes into the layer directory after the call has settled.
 * In both, a canary directory and file next to the layer directories stay as they were.
 * Root is needed: whiteouts are 0:0 char devices and opaque markers trusted.* xattrs.
 */

const NEEDS_ROOT = process.getuid?.() === 0 ? false : 'needs root (whiteout device nodes, trusted.* xattrs)';
const PER_RUN_MS = 20_000;
const UMASK = process.umask();
const MTIME = new Date('2021-02-03T04:05:06Z');
const sha = (b: Buffer): Digest => `sha256:${createHash('sha256').update(b).digest('hex')}` as Digest;

// ── tar building ────────────────────────────────────────────────────────────────────────────────

/** A generated entry: the names are JS strings that tar-stream writes as UTF-8. */
interface GenEntry {
  type: EntryType;
  name: string;
  mode: number;
  symlinkTarget: string;
  hardlinkTarget: string;
  data: string;
  /** Force a PAX header (path and linkpath in PAX records rather than the ustar fields). */
  pax: boolean;
  /** Which earlier entry of the layer (modulo their count) `relation` and `linkEarlier` refer to. */
  earlier: number;
  /** The name is: its own, the earlier entry's, a child of it, its whiteout, or its directory's opaque marker. */
  relation: 'none' | 'same' | 'child' | 'whiteout' | 'opaque';
  /** Links only: target the earlier entry's name. */
  linkEarlier: boolean;
}

/**
 * Ties entries to earlier ones, so that the cases the rules are about (duplicates, entries under
 * a symlink, whiteouts of existing names, hardlinks to existing files) come up often.
 */
function deriveNames(entries: readonly GenEntry[]): GenEntry[] {
  const out: GenEntry[] = [];
  for (const [i, e] of entries.entries()) {
    const ref = i === 0 ? undefined : (out[e.earlier % i] as GenEntry);
    if (ref === undefined) {
      out.push(e);
      continue;
    }
    const trimmed = ref.name.replace(/\/+$/, '');
    const slash = trimmed.lastIndexOf('/');
    const dir = slash < 0 ? '' : trimmed.slice(0, slash + 1);
    const baseName = trimmed.slice(slash + 1);
    let name = e.name;
    if (e.relation === 'same') name = ref.name;
    else if (e.relation === 'child' && (ref.type === 'directory' || ref.type === 'symlink' || e.earlier % 8 === 0)) name = `${trimmed}/${e.name.replace(/^[./]+/, '') || 'a'}`;
    else if (e.relation === 'whiteout') name = `${dir}.wh.${baseName}`;
    else if (e.relation === 'opaque') name = `${trimmed}/.wh..wh..opq`;
    // A hardlink mostly names an earlier entry; a random name is seldom in the layer.
    if (e.type === 'symlink' && e.linkEarlier) out.push({ ...e, name, symlinkTarget: ref.name });
    else if (e.type === 'link' && (e.linkEarlier || e.earlier % 4 !== 0)) out.push({ ...e, name, hardlinkTarget: ref.name });
    else out.push({ ...e, name });
  }
  return out;
}

/** The bytes berth reads for a name tar-stream writes as UTF-8, as a latin1 string (one char per byte). */
const bytes = (s: string): string => Buffer.from(s, 'utf8').toString('latin1');

/**
 * How an entry reaches berth. Names over 100 bytes always go through PAX (tar-stream would split
 * them into the ustar prefix, dropping a leading '/'). Without PAX, a trailing '/' on a
 * non-directory is dropped: old tars mark directories that way and tar-stream reads it so.
 */
function asWritten(e: GenEntry, canaryAbs: string): { header: PackHeader; data: Buffer | undefined; spec: EntrySpec } {
  const target = e.type === 'link' ? e.hardlinkTarget : e.symlinkTarget === 'CANARY_ABS' ? canaryAbs : e.symlinkTarget;
  const pax = e.pax || Buffer.byteLength(e.name) > 100;
  const name = !pax && e.type !== 'directory' ? e.name.replace(/\/+$/, '') || e.name : e.name;
  // pack() writes a default mode for a falsy one; a bit above 07777 is masked off when encoding.
  const header: PackHeader = { name, type: e.type, mode: e.mode === 0 ? 0o100000 : e.mode, mtime: MTIME, uid: 0, gid: 0 };
  if (pax) header.pax = {};
  if (e.type === 'symlink' || e.type === 'link') header.linkname = target;
  if (e.type === 'character-device') Object.assign(header, { devmajor: 1, devminor: 3 });
  const data = e.type === 'file' ? Buffer.from(e.data, 'latin1') : undefined;
  const spec: EntrySpec = { type: e.type, name: bytes(name), mode: e.mode & 0o7777 };
  if (e.type === 'symlink' || e.type === 'link') spec.target = bytes(target);
  if (data !== undefined) spec.data = e.data;
  return { header, data, spec };
}

// ── arbitraries ─────────────────────────────────────────────────────────────────────────────────

// Few names, so entries collide; plus the ones the rules are about. Names that are refused
// outright ('..', a leading '/') are rare, or nearly every layer would stop at its first entries.
const parentComponent = fc.oneof(
  { weight: 40, arbitrary: fc.constantFrom('a', 'b', 'c') },
  { weight: 3, arbitrary: fc.constantFrom('.', '') },
  { weight: 1, arbitrary: fc.constantFrom('..', '.wh.a') },
);
const lastComponent = fc.oneof(
  { weight: 40, arbitrary: fc.constantFrom('a', 'b', 'c') },
  { weight: 4, arbitrary: fc.constantFrom('.wh.a', '.wh.b', '.wh..wh..opq') },
  { weight: 2, arbitrary: fc.constantFrom('.', '.wh..wh.plnk', 'é', 'L'.repeat(101)) },
  { weight: 1, arbitrary: fc.constantFrom('..', '.wh.', '.wh..', '.wh...') },
);
const entryName = fc
  .tuple(
    fc.oneof({ weight: 40, arbitrary: fc.constant('') }, { weight: 4, arbitrary: fc.constant('./') }, { weight: 1, arbitrary: fc.constant('/') }),
    fc.array(parentComponent, { maxLength: 2 }),
    lastComponent,
    fc.boolean(),
  )
  .map(([lead, parents, last, trail]) => `${lead}${[...parents, last].join('/')}${trail ? '/' : ''}`);
const targetComponent = fc.constantFrom('a', 'b', 'c', 'a', 'b', '..', '.', '', 'x');
const symlinkTarget = fc.oneof(
  { weight: 6, arbitrary: fc.tuple(fc.constantFrom('', '', '/', '../'), fc.array(targetComponent, { maxLength: 3 })).map(([lead, c]) => `${lead}${c.join('/')}`) },
  { weight: 2, arbitrary: fc.constantFrom('CANARY_ABS', '../../../canary', '../../..', '/', '.', 'a/../../..', 'é') },
);
const hardlinkTarget = fc.oneof(
  { weight: 6, arbitrary: fc.array(fc.constantFrom('a', 'b', 'c'), { minLength: 1, maxLength: 3 }).map((c) => c.join('/')) },
  { weight: 1, arbitrary: entryName },
);
const entryType = fc.oneof(
  { weight: 5, arbitrary: fc.constant<EntryType>('file') },
  { weight: 4, arbitrary: fc.constant<EntryType>('directory') },
  { weight: 4, arbitrary: fc.constant<EntryType>('symlink') },
  { weight: 3, arbitrary: fc.constant<EntryType>('link') },
  { weight: 1, arbitrary: fc.constantFrom<EntryType>('fifo', 'character-device') },
);
const mode = fc.constantFrom(0o644, 0o755, 0o600, 0o700, 0o444, 0o777, 0o4755, 0o2755, 0o1777, 0o000);
/** How an entry's name relates to an earlier entry's (see deriveNames). */
const relation = fc.oneof(
  { weight: 4, arbitrary: fc.constant('none' as const) },
  { weight: 2, arbitrary: fc.constantFrom('same' as const, 'child' as const) },
  { weight: 1, arbitrary: fc.constantFrom('whiteout' as const, 'opaque' as const) },
);
const genEntry: fc.Arbitrary<GenEntry> = fc.record({
  type: entryType,
  name: entryName,
  mode,
  symlinkTarget,
  hardlinkTarget,
  data: fc.constantFrom('', 'x', 'hello', 'hello world\n'),
  pax: fc.boolean(),
  earlier: fc.nat(),
  relation,
  linkEarlier: fc.boolean(),
});
const DEFAULT_LIMITS: ModelLimits = { maxEntries: 1_000_000, maxFileSize: 16 * 2 ** 30, maxPathBytes: 4096, maxDepth: 256 };
const limitsArb: fc.Arbitrary<ModelLimits> = fc.oneof(
  { weight: 4, arbitrary: fc.constant(DEFAULT_LIMITS) },
  {
    weight: 1,
    arbitrary: fc.record({
      maxEntries: fc.constantFrom(DEFAULT_LIMITS.maxEntries, 4),
      maxFileSize: fc.constantFrom(DEFAULT_LIMITS.maxFileSize, 3),
      maxPathBytes: fc.constantFrom(DEFAULT_LIMITS.maxPathBytes, 40),
      maxDepth: fc.constantFrom(DEFAULT_LIMITS.maxDepth, 2),
    }),
  },
);
const layersArb = fc.record({
  layers: fc.array(fc.record({ entries: fc.array(genEntry, { minLength: 1, maxLength: 8 }), gzip: fc.boolean() }), { minLength: 1, maxLength: 3 }),
  limits: limitsArb,
});

// ── scratch space ───────────────────────────────────────────────────────────────────────────────

let base: string;
let seq = 0;
before(async () => {
  base = await fsp.mkdtemp(path.join(os.tmpdir(), 'berth-property-'));
});
after(async () => {
  await fsp.rm(base, { recursive: true, force: true });
});

interface Scratch {
  outer: string;
  canaryDir: string;
  canaryFile: string;
  layerDir(i: number): Promise<string>;
}

/** outer/{canary/canary.txt, canary.txt, a/b/L<i>}: layer dirs three levels below the canaries. */
async function scratch(): Promise<Scratch> {
  const outer = path.join(base, `t${++seq}`);
  const canaryDir = path.join(outer, 'canary');
  await fsp.mkdir(canaryDir, { recursive: true });
  await fsp.writeFile(path.join(canaryDir, 'canary.txt'), 'canary');
  const canaryFile = path.join(outer, 'canary.txt');
  await fsp.writeFile(canaryFile, 'canary');
  return {
    outer,
    canaryDir,
    canaryFile,
    layerDir: async (i) => {
      const d = path.join(outer, 'a', 'b', `L${i}`);
      await fsp.mkdir(d, { recursive: true, mode: 0o700 });
      return d;
    },
  };
}

async function assertCanaries(s: Scratch): Promise<void> {
  assert.deepEqual((await fsp.readdir(s.outer)).sort(), ['a', 'canary', 'canary.txt'], 'nothing appears next to the canaries');
  assert.deepEqual(await fsp.readdir(s.canaryDir), ['canary.txt'], 'the canary directory is untouched');
  assert.equal(await fsp.readFile(path.join(s.canaryDir, 'canary.txt'), 'utf8'), 'canary');
  assert.equal(await fsp.readFile(s.canaryFile, 'utf8'), 'canary');
  assert.deepEqual(await fsp.readdir(path.join(s.outer, 'a')), ['b']);
}

function chunks(blob: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < blob.length; i += size) out.push(blob.subarray(i, i + size));
  return out;
}

const GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
const TAR = 'application/vnd.oci.image.layer.v1.tar';

// ── properties ──────────────────────────────────────────────────────────────────────────────────

describe('property: layer unpacking against the chroot model', { skip: NEEDS_ROOT }, () => {
  test('random tars: each layer tree, or its error code, is the model\'s; canaries untouched', { timeout: 300_000 }, async (t) => {
    let layersChecked = 0;
    let refusals = 0;
    let overlaysChecked = 0;
    const refusedWith = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(layersArb, async ({ layers, limits }) => {
        const s = await scratch();
        let merged = '';
        let mounted = false;
        try {
          const canaryAbs = s.canaryDir;
          const lowerDirs: string[] = [];
          const lowerModels: DirNode[] = [];
          const opaqueRoots: boolean[] = [];
          for (const [i, layer] of layers.entries()) {
            const written = deriveNames(layer.entries).map((e) => asWritten(e, canaryAbs));
            const tar = await packTar(written);
            const blob = layer.gzip ? gzipSync(tar) : tar;
            const dest = await s.layerDir(i);
            const want = modelLayer(
              written.map((w) => w.spec),
              lowerModels,
              limits,
              UMASK,
              0o700 & ~UMASK,
            );
            const ending = await settlesAsBerth(`layer ${i}`, PER_RUN_MS, () =>
              unpackLayer({
                source: Readable.from(chunks(blob, 1000)),
                mediaType: layer.gzip ? GZIP : TAR,
                expected: { digest: sha(blob), size: blob.length, diffId: sha(tar) },
                dest,
                lowerDirs: [...lowerDirs],
                limits: { ...limits, minFreeBytes: 0 } satisfies Partial<UnpackLimits>,
                sync: false,
              }),
            );
            const entries = written.map((w) => w.spec);
            if (!want.ok) {
              assert.equal(ending.ok ? 'success' : ending.code, want.code, `layer ${i}: model refuses entry ${want.entry} (${want.why}); entries ${JSON.stringify(entries)}; berth: ${ending.ok ? 'success' : ending.message}`);
              refusals++;
              refusedWith.set(`${want.code} ${want.why}`, (refusedWith.get(`${want.code} ${want.why}`) ?? 0) + 1);
              break;
            }
            assert.ok(ending.ok, `layer ${i}: model accepts; berth: ${ending.ok ? '' : ending.message}; entries ${JSON.stringify(entries)}`);
            assert.equal((ending.value as { opaqueRoot: boolean }).opaqueRoot, want.opaqueRoot, `layer ${i} opaqueRoot; entries ${JSON.stringify(entries)}`);
            assert.deepEqual(await listDisk(dest), listModel(want.root), `layer ${i}: tree; entries ${JSON.stringify(entries)}`);
            layersChecked++;
            lowerDirs.unshift(dest);
            lowerModels.unshift(want.root);
            opaqueRoots.unshift(want.opaqueRoot);
          }
          if (lowerDirs.length === layers.length) {
            // Every layer extracted: the overlay the kernel builds from them is the model's merge.
            const stack = lowerDirs.map((dir, i) => ({ dir, root: lowerModels[i] as DirNode, opaqueRoot: opaqueRoots[i] as boolean }));
            const cut = stack.findIndex((l) => l.opaqueRoot);
            const used = cut < 0 ? stack : stack.slice(0, cut + 1);
            // overlayfs wants two lowerdirs when there is no upperdir: an empty one goes at the bottom.
            const empty = await s.layerDir(99);
            merged = path.join(s.outer, 'a', 'b', 'merged');
            await fsp.mkdir(merged);
            execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `ro,lowerdir=${[...used.map((l) => l.dir), empty].join(':')}`, merged]);
            mounted = true;
            const view = mergeModel([...used.map((l) => ({ root: l.root, opaqueRoot: false })), { root: newDir(0o700), opaqueRoot: false }]);
            assert.deepEqual(await listDisk(merged, { xattrs: false }), listModel(view), `overlay of ${used.length} layer(s); layers ${JSON.stringify(layers.map((l) => deriveNames(l.entries).map((e) => asWritten(e, canaryAbs).spec)))}`);
            overlaysChecked++;
          }
          await assertCanaries(s);
        } finally {
          if (mounted) execFileSync('umount', [merged]);
          await fsp.rm(s.outer, { recursive: true, force: true });
        }
      }),
      propertyParams(250),
    );
    t.diagnostic(`layers compared with the model: ${layersChecked}; overlay views compared: ${overlaysChecked}; refused as predicted: ${JSON.stringify([...refusedWith].sort())}`);
    assert.ok(layersChecked > 0 && refusals > 0 && overlaysChecked > 0, `every outcome was exercised (layers compared ${layersChecked}, overlays ${overlaysChecked}, refusals ${refusals})`);
  });
});

/** One random change to a valid blob. */
const mutation = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 600 }) }),
  fc.record({ kind: fc.constant('zero-block' as const), at: fc.nat() }),
);
type Mutation = typeof mutation extends fc.Arbitrary<infer M> ? M : never;

function mutate(blob: Buffer, muts: readonly Mutation[]): Buffer {
  let b = Buffer.from(blob);
  for (const m of muts) {
    if (b.length === 0) break;
    const at = m.at % b.length;
    if (m.kind === 'flip') b[at] = m.value;
    else if (m.kind === 'truncate') b = b.subarray(0, at);
    else if (m.kind === 'insert') b = Buffer.concat([b.subarray(0, at), Buffer.from(m.bytes), b.subarray(at)]);
    else b = Buffer.concat([b.subarray(0, at - (at % 512)), Buffer.alloc(512), b.subarray(at - (at % 512))]);
  }
  return b;
}

const MEDIA_TYPES = [GZIP, TAR, 'application/vnd.docker.image.rootfs.diff.tar.gzip', 'application/vnd.oci.image.layer.v1.tar+zstd', 'text/plain'];

const pipelineInput = fc.oneof(
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('bytes' as const), bytes: fc.uint8Array({ maxLength: 4096 }), gzipFirst: fc.boolean() }) },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('mutated' as const),
      entries: fc.array(genEntry, { minLength: 1, maxLength: 6 }),
      mutateTar: fc.boolean(),
      gzip: fc.boolean(),
      mutations: fc.oneof({ weight: 1, arbitrary: fc.constant([]) }, { weight: 2, arbitrary: fc.array(mutation, { minLength: 1, maxLength: 4 }) }),
    }),
  },
);

describe('property: the layer pipeline takes any bytes', { skip: NEEDS_ROOT }, () => {
  test('random and mutated blobs end in success or a BerthError within the bound; canaries untouched', { timeout: 300_000 }, async (t) => {
    const codes = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(pipelineInput, fc.constantFrom(...MEDIA_TYPES), fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }), fc.integer({ min: 1, max: 5000 }), fc.oneof({ weight: 3, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 4 }) }), async (input, declared, honestDiffId, chunk, abortAfter) => {
        const s = await scratch();
        try {
          let blob: Buffer;
          let mediaType = declared;
          if (input.kind === 'bytes') {
            blob = input.gzipFirst ? gzipSync(Buffer.from(input.bytes)) : Buffer.from(input.bytes);
          } else {
            const tar = await packTar(deriveNames(input.entries).map((e) => asWritten(e, s.canaryDir)));
            // Mutating the tar inside valid gzip reaches the tar parser; mutating the gzip, zlib.
            blob = input.gzip ? (input.mutateTar ? gzipSync(mutate(tar, input.mutations)) : mutate(gzipSync(tar), input.mutations)) : mutate(tar, input.mutations);
            // Mostly declared as what it is, so that unmutated layers reach the end.
            if (mediaType !== 'text/plain' && !mediaType.endsWith('+zstd')) mediaType = input.gzip ? GZIP : TAR;
          }
          let plain = blob;
          try {
            plain = gunzipSync(blob);
          } catch {
            // not gzip: the diffID of the bytes as they are
          }
          const diffId = honestDiffId ? sha(plain) : sha(Buffer.from('not the layer'));
          const dest = await s.layerDir(0);
          // Some runs are aborted part-way (the reason is a BerthError, as the puller's are); the
          // source yields to the event loop between chunks so that the abort lands mid-stream.
          const abort = new AbortController();
          const timer = abortAfter === null ? undefined : setTimeout(() => abort.abort(new BerthError('ERR_TIMEOUT', 'property: aborted')), abortAfter);
          const source = Readable.from(
            (async function* () {
              for (const c of chunks(blob, chunk)) {
                await new Promise((r) => setImmediate(r));
                yield c;
              }
            })(),
          );
          const ending = await settlesAsBerth(`blob of ${blob.length} bytes as ${mediaType}${abortAfter === null ? '' : `, aborted after ${abortAfter} ms`}`, PER_RUN_MS, () =>
            unpackLayer({
              source,
              mediaType,
              expected: { digest: sha(blob), size: blob.length, diffId },
              dest,
              limits: { minFreeBytes: 0 },
              sync: false,
              signal: abort.signal,
            }),
          ).finally(() => clearTimeout(timer));
          // Once unpackLayer has settled nothing may write into dest any more.
          const settled = await listDisk(dest);
          await new Promise((r) => setTimeout(r, 20));
          assert.deepEqual(await listDisk(dest), settled, 'dest changed after unpackLayer settled');
          const key = ending.ok ? 'success' : ending.code;
          codes.set(key, (codes.get(key) ?? 0) + 1);
          if (!ending.ok) assert.notEqual(ending.code, 'ERR_INTERNAL', `an internal error is a defect: ${ending.message}`);
          await assertCanaries(s);
        } finally {
          await fsp.rm(s.outer, { recursive: true, force: true });
        }
      }),
      propertyParams(200),
    );
    t.diagnostic(`outcomes: ${JSON.stringify([...codes].sort())}`);
    // The inputs must reach past the first checks: some layers extract, some fail inside the tar.
    assert.ok((codes.get('success') ?? 0) > 0, `outcomes: ${JSON.stringify([...codes])}`);
    assert.ok((codes.get('ERR_INVALID_IMAGE') ?? 0) > 0, `outcomes: ${JSON.stringify([...codes])}`);
  });
});


describe('regressions found by the properties', { skip: NEEDS_ROOT }, () => {
  test('hardlink-target-inside-replaced-directory: a hardlink replacing directory a with a link to a/f is ERR_INVALID_IMAGE, not ERR_INTERNAL', async () => {
    // Found by the chroot-model property: replacing `a` removed a/f before link(2), which then
    // failed with ENOENT and surfaced as ERR_INTERNAL (after deleting the target).
    const s = await scratch();
    try {
      const tar = await packTar([
        { header: { name: 'a', type: 'directory', mode: 0o755, mtime: MTIME }, data: undefined },
        { header: { name: 'a/f', type: 'file', mode: 0o644, mtime: MTIME }, data: Buffer.from('x') },
        { header: { name: 'a', type: 'link', linkname: 'a/f', mode: 0o644, mtime: MTIME }, data: undefined },
      ]);
      const dest = await s.layerDir(0);
      const ending = await settlesAsBerth('layer', PER_RUN_MS, () =>
        unpackLayer({ source: Readable.from([tar]), mediaType: TAR, expected: { digest: sha(tar), size: tar.length, diffId: sha(tar) }, dest, limits: { minFreeBytes: 0 }, sync: false }),
      );
      assert.equal(ending.ok ? 'success' : ending.code, 'ERR_INVALID_IMAGE');
      assert.match(ending.ok ? '' : ending.message, /entry "a": hardlink target "a\/f" is inside the directory the entry replaces/);
      assert.equal(await fsp.readFile(path.join(dest, 'a/f'), 'utf8'), 'x', 'nothing was removed before the refusal');
      await assertCanaries(s);
    } finally {
      await fsp.rm(s.outer, { recursive: true, force: true });
    }
  });
});

test('zstd-stage-hangs-when-aborted-early: aborting a +zstd unpack before its first byte settles', { skip: NEEDS_ROOT }, async () => {
  // Found by the layer pipeline property (abort after 0–1 ms, source yielding between chunks).
  const s = await scratch();
  try {
    const blob = Buffer.alloc(4614, 7);
    const abort = new AbortController();
    const source = Readable.from(
      (async function* () {
        for (const c of chunks(blob, 1000)) {
          await new Promise((r) => setImmediate(r));
          yield c;
        }
      })(),
    );
    const dest = await s.layerDir(0);
    const ending = await settlesAsBerth('aborted zstd layer', 5_000, () => {
      const settled = unpackLayer({
        source,
        mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd',
        expected: { digest: sha(blob), size: blob.length, diffId: sha(blob) },
        dest,
        limits: { minFreeBytes: 0 },
        sync: false,
        signal: abort.signal,
      });
      // Aborted while unpackLayer checks dest, before it reads the first chunk: the zstd stage never gets input.
      abort.abort(new BerthError('ERR_TIMEOUT', 'property: aborted'));
      return settled;
    });
    assert.equal(ending.ok ? 'success' : ending.code, 'ERR_TIMEOUT');
    await assertCanaries(s);
  } finally {
    await fsp.rm(s.outer, { recursive: true, force: true });
  }
});

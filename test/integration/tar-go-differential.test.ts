import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import type { Digest } from '../../src/lib/digest.js';
import { unpackLayer } from '../../src/runtime/unpack/index.js';
import { propertyParams, settlesAsBerth } from '../helpers/property.js';
import { dir, file, gnuLong, member, pax, setChecksum, symlink } from '../helpers/hostile.js';

/**
 * berth's layer unpacker against umoci, a reader built on Go's archive/tar (as docker, containerd and
 * the image scanners are), on tars whose headers are mutated where the tar formats leave room for
 * two readings: the typeflag, the size and mode fields' encodings, a trailing `/`, the link name,
 * the magic and version, the prefix and GNU time fields, a star trailer, and the PAX, GNU long-name
 * and global headers before a member. One member's data is itself a whole tar member ("smuggled"): a reader that frames the
 * archive differently from Go extracts it where Go reads file data, or the other way round.
 *
 * Property: when both extract the layer, the trees are the same (paths, types, file contents,
 * link targets). Either may refuse a layer the other takes (berth refuses more: V7 headers, a size
 * on a symlink, unknown types); what must never happen is two different trees from one layer.
 */

const execFileP = promisify(execFile);
const NEEDS = process.getuid?.() === 0 ? false : 'needs root (umoci unpack keeps owners, device nodes)';
const sha = (b: Buffer): Digest => `sha256:${createHash('sha256').update(b).digest('hex')}` as Digest;

/** A member whose data is a complete member of its own. */
const SMUGGLED = file('smuggled', 'hidden\n');

/** The base layer: one header each, in order; `carrier` holds SMUGGLED as its data. */
function baseMembers(): Buffer[] {
  return [dir('d/'), file('d/a', 'a'.repeat(600)), symlink('s', 'd/a'), file('carrier', SMUGGLED), file('z', 'last\n')];
}

/** Meta headers a mutation may put before a member. */
const PREFIXES: Record<string, () => Buffer> = {
  'pax-path': () => pax([['path', 'p']]),
  'pax-path-slash': () => pax([['path', 'p/']]),
  'pax-path-empty': () => pax([['path', '']]),
  'pax-size-0': () => pax([['size', '0']]),
  'pax-size-512': () => pax([['size', '512']]),
  'pax-size-plus': () => pax([['size', '+512']]),
  'pax-size-empty': () => pax([['size', '']]),
  'pax-linkpath': () => pax([['linkpath', 'z']]),
  'gnu-name': () => gnuLong('g'),
  'gnu-name-slash': () => gnuLong('g/'),
  'gnu-name-empty': () => gnuLong(''),
  'gnu-link': () => gnuLong('z', 'K'),
  global: () => pax([['comment', 'c']], { type: 'g' }),
  'old-gnu-n': () => member({ name: 'n', type: 'N' }, 'renamed\0'),
};

type FieldEdit =
  | { kind: 'type'; value: string }
  | { kind: 'size'; value: string }
  | { kind: 'slash'; add: boolean }
  | { kind: 'magic'; value: 'ustar' | 'gnu' | 'ustar-bad-version' | 'v7' }
  | { kind: 'prefix'; value: string }
  | { kind: 'star' }
  | { kind: 'linkname'; value: string }
  | { kind: 'mode'; value: string };

interface Plan {
  /** Which member's header is edited (index into the base members). */
  target: number;
  edits: FieldEdit[];
  /** Meta headers put before the target member. */
  before: string[];
}

const TYPES = ['\0', '0', '1', '2', '5', '6', '7', 'x', 'g', 'L', 'K', 'N', 'S', 'D', 'A'];
/** 12-byte size fields: plain, NUL- and space-padded, base-256, malformed. Sizes 0, 512, 1024 keep block alignment. */
const SIZES = [
  '00000000000\0',
  '00000001000\0',
  '00000002000\0',
  '\0 0000002000',
  '\0\0\0\0\0\0\0\0\0\0\0\0',
  '   0000001000',
  '0000001000  ',
  '1000\0 garbage',
  '0000 0001000',
  '00000001000x',
  '\u0080\0\0\0\0\0\0\0\0\0\u0004\0',
  '\u00ff\u00ff\u00ff\u00ff\u00ff\u00ff\u00ff\u00ff\u00ff\u00ff\u00ff\u00ff',
].map((s) => Buffer.from(s, 'latin1').subarray(0, 12));

const planArb: fc.Arbitrary<Plan> = fc.record({
  target: fc.integer({ min: 0, max: 4 }),
  edits: fc.array(
    fc.oneof(
      fc.record({ kind: fc.constant('type' as const), value: fc.constantFrom(...TYPES) }),
      fc.record({ kind: fc.constant('size' as const), value: fc.constantFrom(...SIZES.map((b) => b.toString('latin1'))) }),
      fc.record({ kind: fc.constant('slash' as const), add: fc.boolean() }),
      fc.record({ kind: fc.constant('magic' as const), value: fc.constantFrom('ustar' as const, 'gnu' as const, 'ustar-bad-version' as const, 'v7' as const) }),
      fc.record({ kind: fc.constant('prefix' as const), value: fc.constantFrom('pfx\0', 'pfx', '00000000017\0', 'q'.repeat(140)) }),
      fc.record({ kind: fc.constant('star' as const) }),
      fc.record({ kind: fc.constant('linkname' as const), value: fc.constantFrom('d/a', 'z', 'carrier', '', 'd/', 'missing') }),
      fc.record({ kind: fc.constant('mode' as const), value: fc.constantFrom('0000755\0', '\0 000644', '   644 \0', '0000-44\0', '\u0080\0\0\0\0\0\u0001\u00ed') }),
    ),
    { minLength: 1, maxLength: 3 },
  ),
  before: fc.array(fc.constantFrom(...Object.keys(PREFIXES)), { maxLength: 2 }),
});

/** The header with `edits` applied and its checksum made right. */
function editHeader(h: Buffer, edits: readonly FieldEdit[]): Buffer {
  const b = Buffer.from(h);
  for (const e of edits) {
    switch (e.kind) {
      case 'type':
        b.write(e.value, 156, 'latin1');
        break;
      case 'size':
        Buffer.from(e.value, 'latin1').copy(b, 124);
        break;
      case 'slash': {
        const end = b.indexOf(0, 0);
        const len = end < 0 || end > 100 ? 100 : end;
        if (e.add && len < 100) b[len] = 0x2f;
        if (!e.add && len > 0 && b[len - 1] === 0x2f) b[len - 1] = 0;
        break;
      }
      case 'magic':
        b.write({ ustar: 'ustar\u000000', gnu: 'ustar  \u0000', 'ustar-bad-version': 'ustar\u0000xx', v7: '\0\0\0\0\0\0\0\0' }[e.value], 257, 'latin1');
        break;
      case 'prefix':
        b.fill(0, 345, 500);
        b.write(e.value, 345, 'latin1');
        break;
      case 'star':
        b.write('tar\0', 508, 'latin1');
        break;
      case 'linkname':
        b.fill(0, 157, 257);
        b.write(e.value, 157, 'latin1');
        break;
      case 'mode':
        Buffer.from(e.value, 'latin1').copy(b, 100, 0, 8);
        break;
    }
  }
  return setChecksum(b);
}

function layerOfPlan(p: Plan): Buffer {
  const members = baseMembers().map((m, i) => {
    if (i !== p.target) return m;
    return Buffer.concat([...p.before.map((k) => (PREFIXES[k] as () => Buffer)()), editHeader(m.subarray(0, 512), p.edits), m.subarray(512)]);
  });
  return Buffer.concat([...members, Buffer.alloc(1024)]);
}

// ── the two readers ──────────────────────────────────────────────────────────────────────────────

interface Node {
  type: 'file' | 'dir' | 'symlink' | 'other';
  content?: string;
  target?: string;
}
type Tree = Record<string, Node>;

async function walk(root: string): Promise<Tree> {
  const out: Tree = {};
  const visit = async (rel: string): Promise<void> => {
    for (const name of (await fsp.readdir(path.join(root, rel))).sort()) {
      const r = rel === '' ? name : `${rel}/${name}`;
      const p = path.join(root, r);
      const st = await fsp.lstat(p);
      if (st.isDirectory()) {
        out[r] = { type: 'dir' };
        await visit(r);
      } else if (st.isFile()) out[r] = { type: 'file', content: createHash('sha256').update(await fsp.readFile(p)).digest('hex').slice(0, 16) };
      else if (st.isSymbolicLink()) out[r] = { type: 'symlink', target: await fsp.readlink(p) };
      else out[r] = { type: 'other' };
    }
  };
  await visit('');
  return out;
}

async function umoci(work: string, blob: Buffer, diffId: Digest): Promise<Tree | string> {
  const layout = path.join(work, 'layout');
  const blobs = path.join(layout, 'blobs', 'sha256');
  await fsp.mkdir(blobs, { recursive: true });
  const put = async (b: Buffer): Promise<{ digest: Digest; size: number }> => {
    const digest = sha(b);
    await fsp.writeFile(path.join(blobs, digest.slice(7)), b);
    return { digest, size: b.length };
  };
  const layer = await put(blob);
  const config = await put(Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [diffId] } })));
  const manifest = await put(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...layer }],
      }),
    ),
  );
  await fsp.writeFile(path.join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await fsp.writeFile(
    path.join(layout, 'index.json'),
    JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': 't' } }] }),
  );
  const bundle = path.join(work, 'bundle');
  try {
    await execFileP('umoci', ['unpack', '--image', `${layout}:t`, bundle], { timeout: 60_000 });
  } catch (err) {
    return `umoci: ${String((err as { stderr?: unknown }).stderr ?? err).trim().split('\n').pop() ?? ''}`;
  }
  return walk(path.join(bundle, 'rootfs'));
}

async function berth(work: string, blob: Buffer, tar: Buffer): Promise<Tree | string> {
  const dest = path.join(work, 'berth');
  await fsp.mkdir(dest, { mode: 0o700 });
  const end = await settlesAsBerth('unpackLayer', 20_000, () =>
    unpackLayer({
      source: Readable.from([blob]),
      mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
      expected: { digest: sha(blob), size: blob.length, diffId: sha(tar) },
      dest,
      allowDevices: true,
      sync: false,
    }),
  );
  return end.ok ? walk(dest) : `berth: ${end.code} ${end.message}`;
}

describe('tar framing: berth against a Go archive/tar reader (umoci)', { skip: NEEDS }, () => {
  let base: string;
  before(async () => {
    base = await fsp.mkdtemp(path.join(os.tmpdir(), 'berth-tar-diff-'));
  });
  after(async () => {
    await fsp.rm(base, { recursive: true, force: true });
  });

  test('the unmutated base layer: both readers extract the same tree, the smuggled member stays data', async () => {
    const tar = Buffer.concat([...baseMembers(), Buffer.alloc(1024)]);
    const blob = gzipSync(tar);
    const work = await fsp.mkdtemp(path.join(base, 'case-'));
    const [u, b] = [await umoci(work, blob, sha(tar)), await berth(work, blob, tar)];
    assert.equal(typeof u, 'object', String(u));
    assert.deepEqual(b, u);
    assert.equal((u as Tree)['smuggled'], undefined);
    assert.equal((u as Tree)['carrier']?.type, 'file');
  });

  test('mutated headers: whenever both extract a layer, they extract the same tree', async () => {
    let both = 0;
    const reasons: Record<string, number> = {};
    await fc.assert(
      fc.asyncProperty(planArb, async (p) => {
        const tar = layerOfPlan(p);
        const blob = gzipSync(tar);
        const work = await fsp.mkdtemp(path.join(base, 'case-'));
        try {
          const u = await umoci(work, blob, sha(tar));
          const b = await berth(work, blob, tar);
          for (const r of [u, b]) if (typeof r === 'string') reasons[r.slice(0, 70)] = (reasons[r.slice(0, 70)] ?? 0) + 1;
          if (typeof u === 'object' && typeof b === 'object') {
            both++;
            assert.deepEqual(b, u, `plan ${JSON.stringify(p)}: berth and umoci extracted different trees`);
          }
        } finally {
          await fsp.rm(work, { recursive: true, force: true });
        }
      }),
      propertyParams(150),
    );
    // The property says nothing if the two never agree to extract: most plans must reach the comparison.
    if (process.env.BERTH_DIFF_DEBUG) console.log(JSON.stringify({ both, reasons }));
    assert.ok(both >= 30, `only ${both} plans were extracted by both readers`);
  });
});

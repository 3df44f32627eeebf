import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { hostPlatform, parseImageConfig, parseManifestOrIndex, selectPlatform } from '../../src/runtime/images/documents.js';
import { MEDIA } from '../../src/runtime/registry/index.js';
import { propertyParams, returnsOrBerth, type Ending } from '../helpers/property.js';

/**
 * Issue 15, fuzzing the image document parser (docs/property-tests.md): random bytes, random JSON
 * and mutated valid manifests, indexes and configs into parseManifestOrIndex, selectPlatform and
 * parseImageConfig. Each call returns or throws a BerthError with a code, within the bound; the
 * unmutated documents parse (so the mutations start from inputs that reach every check).
 */

const BOUND_MS = 1_000;
const dg = (s: string): string => `sha256:${createHash('sha256').update(s).digest('hex')}`;
const host = hostPlatform();

const VALID_MANIFEST = {
  schemaVersion: 2,
  mediaType: MEDIA.ociManifest,
  config: { mediaType: MEDIA.ociConfig, digest: dg('config'), size: 123 },
  layers: [
    { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: dg('l1'), size: 10 },
    { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: dg('l2'), size: 20 },
  ],
  annotations: { a: 'b' },
};
const VALID_INDEX = {
  schemaVersion: 2,
  mediaType: MEDIA.ociIndex,
  manifests: [
    { mediaType: MEDIA.ociManifest, digest: dg('m1'), size: 500, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
    { mediaType: MEDIA.ociManifest, digest: dg('m2'), size: 501, platform: { os: host.os, architecture: host.architecture } },
    { mediaType: MEDIA.ociIndex, digest: dg('i1'), size: 502, platform: { os: host.os, architecture: host.architecture } },
  ],
};
const VALID_CONFIG = {
  architecture: host.architecture,
  os: 'linux',
  config: { User: '1000:1000', Env: ['PATH=/bin', 'A=b'], Entrypoint: ['/bin/sh'], Cmd: ['-c', 'true'], WorkingDir: '/app', StopSignal: 'SIGTERM', Labels: { x: 'y' } },
  rootfs: { type: 'layers', diff_ids: [dg('d1'), dg('d2')] },
  history: [{ created_by: 'x' }],
};

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Every path (keys and indexes) in a JSON value, the root included. */
function paths(v: Json, at: (string | number)[] = []): (string | number)[][] {
  const out = [at];
  if (Array.isArray(v)) v.forEach((x, i) => out.push(...paths(x, [...at, i])));
  else if (v !== null && typeof v === 'object') for (const [k, x] of Object.entries(v)) out.push(...paths(x, [...at, k]));
  return out;
}

/** Interesting replacement values: wrong types, edge numbers, near-miss digests and media types. */
const oddValue: fc.Arbitrary<Json> = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }) as fc.Arbitrary<Json>,
  fc.constantFrom<Json>(
    null,
    true,
    -1,
    0,
    1.5,
    2 ** 53,
    1e308,
    '',
    'sha256:',
    `sha256:${'A'.repeat(64)}`,
    `sha512:${'a'.repeat(128)}`,
    'sha256:../../etc/passwd',
    MEDIA.ociIndex,
    MEDIA.ociManifest,
    MEDIA.dockerList,
    MEDIA.dockerManifest,
    MEDIA.dockerSchema1,
    'application/vnd.oci.image.layer.v1.tar+zstd',
    'application/json',
    [],
    {},
    ['a', 1],
    { os: 'linux' },
    { urls: ['https://example.invalid/x'] },
    '__proto__',
    { __proto__: null } as unknown as Json,
  ),
);

const mutationArb = fc.record({ at: fc.nat(), op: fc.constantFrom('set', 'delete', 'add'), value: oddValue, key: fc.constantFrom('urls', 'manifests', 'layers', 'config', 'mediaType', 'schemaVersion', '__proto__', 'constructor', 'x') });
type Mutation = typeof mutationArb extends fc.Arbitrary<infer M> ? M : never;

function applyMutations(doc: Json, muts: readonly Mutation[]): Json {
  let root = JSON.parse(JSON.stringify(doc)) as Json;
  for (const mut of muts) {
    // Values from constantFrom are shared between runs: never link or change them in place.
    const m = { ...mut, value: JSON.parse(JSON.stringify(mut.value)) as Json };
    const all = paths(root);
    const p = all[m.at % all.length] as (string | number)[];
    if (p.length === 0) {
      if (m.op === 'set') root = m.value;
      else if (m.op === 'add' && root !== null && typeof root === 'object' && !Array.isArray(root)) Object.defineProperty(root, m.key, { value: m.value, enumerable: true, writable: true, configurable: true });
      continue;
    }
    let parent = root as Record<string | number, Json>;
    for (const k of p.slice(0, -1)) parent = parent[k] as Record<string | number, Json>;
    const last = p[p.length - 1] as string | number;
    if (m.op === 'set') parent[last] = m.value;
    else if (m.op === 'delete') {
      if (Array.isArray(parent)) parent.splice(last as number, 1);
      else delete parent[last];
    } else {
      const target = parent[last];
      if (target !== null && typeof target === 'object' && !Array.isArray(target)) {
        Object.defineProperty(target, m.key, { value: m.value, enumerable: true, writable: true, configurable: true });
      } else if (Array.isArray(target)) target.push(m.value);
    }
  }
  return root;
}

const declaredArb = fc.oneof(
  fc.constantFrom('', 'application/json', MEDIA.ociManifest, MEDIA.ociIndex, MEDIA.dockerManifest, MEDIA.dockerList, MEDIA.dockerSchema1Signed, 'text/html'),
  fc.string({ maxLength: 40 }),
);

/** Bytes as a registry could serve them: the JSON text, or it with raw byte damage. */
const bytesOf = (text: string, damage: readonly { at: number; byte: number }[]): Buffer => {
  const b = Buffer.from(text, 'utf8');
  for (const d of damage) if (b.length > 0) b[d.at % b.length] = d.byte;
  return b;
};
const damageArb = fc.array(fc.record({ at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }), { maxLength: 2 });

const documentInput = fc.oneof(
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 2048 }).map((u) => Buffer.from(u)) },
  { weight: 1, arbitrary: fc.json({ maxDepth: 4 }).map((s) => Buffer.from(s)) },
  {
    weight: 6,
    arbitrary: fc
      .tuple(fc.constantFrom<Json>(VALID_MANIFEST as unknown as Json, VALID_INDEX as unknown as Json, VALID_CONFIG as unknown as Json), fc.array(mutationArb, { minLength: 1, maxLength: 4 }), damageArb)
      .map(([doc, muts, damage]) => bytesOf(JSON.stringify(applyMutations(doc, muts)), damage)),
  },
);

function tally(codes: Map<string, number>, e: Ending): void {
  const key = e.ok ? 'ok' : e.code;
  codes.set(key, (codes.get(key) ?? 0) + 1);
}

describe('property: image documents', () => {
  test('the unmutated documents parse (the fuzz starts from inputs that pass every check)', () => {
    const m = parseManifestOrIndex(Buffer.from(JSON.stringify(VALID_MANIFEST)), MEDIA.ociManifest, 'manifest');
    assert.equal(m.kind, 'manifest');
    const i = parseManifestOrIndex(Buffer.from(JSON.stringify(VALID_INDEX)), '', 'index');
    assert.equal(i.kind, 'index');
    assert.equal(i.kind === 'index' ? selectPlatform(i, host, 'index').digest : '', dg('m2'));
    assert.equal(parseImageConfig(Buffer.from(JSON.stringify(VALID_CONFIG)), 'config').rootfs.diff_ids.length, 2);
  });

  test('parseManifestOrIndex, selectPlatform and parseImageConfig: a value or a BerthError, within the bound', (t) => {
    const codes = new Map<string, number>();
    fc.assert(
      fc.property(documentInput, declaredArb, (bytes, declared) => {
        const what = `document ${JSON.stringify(bytes.toString('latin1').slice(0, 300))} declared ${JSON.stringify(declared)}`;
        const parsed = returnsOrBerth(what, BOUND_MS, () => parseManifestOrIndex(bytes, declared, 'doc'));
        tally(codes, parsed);
        if (parsed.ok) {
          const doc = parsed.value as ReturnType<typeof parseManifestOrIndex>;
          // What parses is what the rules promise: known kinds, well-formed digests and sizes.
          const descs = doc.kind === 'index' ? doc.manifests : [doc.config, ...doc.layers];
          for (const d of descs) {
            assert.match(d.digest, /^sha256:[a-f0-9]{64}$/, what);
            assert.ok(Number.isSafeInteger(d.size) && d.size >= 0, what);
          }
          if (doc.kind === 'index') tally(codes, returnsOrBerth(`select platform in ${what}`, BOUND_MS, () => selectPlatform(doc, host, 'doc')));
          else assert.ok(doc.layers.length <= 128, what);
        }
        const config = returnsOrBerth(`config ${what}`, BOUND_MS, () => parseImageConfig(bytes, 'cfg'));
        tally(codes, config);
        if (config.ok) {
          for (const d of (config.value as ReturnType<typeof parseImageConfig>).rootfs.diff_ids) assert.match(d, /^sha256:[a-f0-9]{64}$/, what);
        }
      }),
      propertyParams(3000),
    );
    t.diagnostic(`outcomes: ${JSON.stringify([...codes].sort())}`);
    assert.ok((codes.get('ok') ?? 0) > 0 && (codes.get('ERR_INVALID_IMAGE') ?? 0) > 0, JSON.stringify([...codes]));
  });
});

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MAX_LAYERS,
  hostPlatform,
  parseImageConfig,
  parseManifestOrIndex,
  selectPlatform,
  type ImageIndex,
  type Platform,
} from '../../src/runtime/images/documents.js';
import { MEDIA, isLoopbackHost, parseReference } from '../../src/runtime/registry/index.js';
import { BerthError, type ErrorCode } from '../../src/lib/errors.js';
import { sha256 } from '../../src/lib/digest.js';

const LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
const DOCKER_LAYER = 'application/vnd.docker.image.rootfs.diff.tar.gzip';
const D1 = sha256('one');
const D2 = sha256('two');
const D3 = sha256('three');

function throwsCode(fn: () => unknown, code: ErrorCode, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof BerthError, `expected a BerthError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (message !== undefined) assert.match(err.message, message);
    return true;
  });
}

const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));

function manifest(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    schemaVersion: 2,
    mediaType: MEDIA.ociManifest,
    config: { mediaType: MEDIA.ociConfig, digest: D1, size: 100 },
    layers: [{ mediaType: LAYER_GZIP, digest: D2, size: 200 }],
    ...over,
  };
}

function index(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    schemaVersion: 2,
    mediaType: MEDIA.ociIndex,
    manifests: [{ mediaType: MEDIA.ociManifest, digest: D1, size: 300, platform: { os: 'linux', architecture: 'amd64' } }],
    ...over,
  };
}

const parse = (doc: unknown, declared: string = MEDIA.ociManifest): ReturnType<typeof parseManifestOrIndex> =>
  parseManifestOrIndex(json(doc), declared, 'test doc');

describe('unit: parseManifestOrIndex accepts the four supported document types', () => {
  test('OCI image manifest', () => {
    const m = parse(manifest());
    assert.equal(m.kind, 'manifest');
    if (m.kind !== 'manifest') return;
    assert.equal(m.mediaType, MEDIA.ociManifest);
    assert.deepEqual(m.config, { mediaType: MEDIA.ociConfig, digest: D1, size: 100 });
    assert.deepEqual(m.layers, [{ mediaType: LAYER_GZIP, digest: D2, size: 200 }]);
  });

  test('OCI image index, platforms kept', () => {
    const doc = index({
      manifests: [
        { mediaType: MEDIA.ociManifest, digest: D1, size: 1, platform: { os: 'linux', architecture: 'arm', variant: 'v7' } },
        { mediaType: MEDIA.ociManifest, digest: D2, size: 2, platform: { os: 'linux', architecture: 'amd64' } },
      ],
    });
    const i = parse(doc, MEDIA.ociIndex);
    assert.equal(i.kind, 'index');
    if (i.kind !== 'index') return;
    assert.equal(i.mediaType, MEDIA.ociIndex);
    assert.deepEqual(
      i.manifests.map((m) => m.platform),
      [
        { os: 'linux', architecture: 'arm', variant: 'v7' },
        { os: 'linux', architecture: 'amd64' },
      ],
    );
  });

  test('Docker schema2 manifest', () => {
    const m = parse(
      manifest({
        mediaType: MEDIA.dockerManifest,
        config: { mediaType: MEDIA.dockerConfig, digest: D1, size: 10 },
        layers: [
          { mediaType: DOCKER_LAYER, digest: D2, size: 20 },
          { mediaType: DOCKER_LAYER, digest: D3, size: 30 },
        ],
      }),
      MEDIA.dockerManifest,
    );
    assert.equal(m.kind, 'manifest');
    assert.equal(m.mediaType, MEDIA.dockerManifest);
    if (m.kind === 'manifest') assert.deepEqual(m.layers.map((l) => l.digest), [D2, D3]);
  });

  test('Docker manifest list', () => {
    const doc = index({
      mediaType: MEDIA.dockerList,
      manifests: [{ mediaType: MEDIA.dockerManifest, digest: D1, size: 5, platform: { os: 'linux', architecture: 'amd64' } }],
    });
    const i = parse(doc, MEDIA.dockerList);
    assert.equal(i.kind, 'index');
    assert.equal(i.mediaType, MEDIA.dockerList);
  });

  test('without an embedded mediaType the declared one (or the shape, for application/json) decides', () => {
    const { mediaType: _m, ...bare } = manifest();
    assert.equal(parse(bare, MEDIA.ociManifest).kind, 'manifest');
    assert.equal(parse(bare, '').mediaType, MEDIA.ociManifest);
    const { mediaType: _i, ...bareIndex } = index();
    assert.equal(parse(bareIndex, 'application/json').mediaType, MEDIA.ociIndex);
    // The embedded type wins when the declared one is generic.
    assert.equal(parse(manifest({ mediaType: MEDIA.dockerManifest, config: { mediaType: MEDIA.dockerConfig, digest: D1, size: 1 } }), '').mediaType, MEDIA.dockerManifest);
  });
});

describe('unit: parseManifestOrIndex rejects', () => {
  test('declared media type disagreeing with the embedded one (P2)', () => {
    throwsCode(() => parse(manifest(), MEDIA.ociIndex), 'ERR_INVALID_IMAGE', /differs/);
    throwsCode(() => parse(manifest(), MEDIA.dockerManifest), 'ERR_INVALID_IMAGE', /differs/);
    throwsCode(() => parse(index(), MEDIA.ociManifest), 'ERR_INVALID_IMAGE', /differs/);
  });

  test('a declared type the shape contradicts, when nothing is embedded', () => {
    const { mediaType: _m, ...bare } = manifest();
    throwsCode(() => parse(bare, MEDIA.ociIndex), 'ERR_INVALID_IMAGE');
    const { mediaType: _i, ...bareIndex } = index();
    throwsCode(() => parse(bareIndex, MEDIA.ociManifest), 'ERR_INVALID_IMAGE');
  });

  test('an ambiguous document with both manifests and layers (P2)', () => {
    const both: Record<string, unknown> = { ...manifest(), manifests: index()['manifests'] };
    throwsCode(() => parse(both), 'ERR_INVALID_IMAGE', /ambiguous/);
    throwsCode(() => parse({ ...both, mediaType: MEDIA.ociIndex }, MEDIA.ociIndex), 'ERR_INVALID_IMAGE', /ambiguous/);
    const { mediaType: _m, ...bare } = both;
    throwsCode(() => parse(bare, ''), 'ERR_INVALID_IMAGE', /ambiguous/);
    // An index with a config only is just as ambiguous.
    throwsCode(() => parse({ ...index(), config: manifest()['config'] }, MEDIA.ociIndex), 'ERR_INVALID_IMAGE', /ambiguous/);
  });

  test('schemaVersion 1 (and anything but 2)', () => {
    throwsCode(() => parse({ schemaVersion: 1, name: 'x', tag: 'y', fsLayers: [], history: [] }, MEDIA.dockerSchema1), 'ERR_UNSUPPORTED', /schemaVersion 1/);
    throwsCode(() => parse(manifest({ schemaVersion: 1 })), 'ERR_UNSUPPORTED');
    throwsCode(() => parse(manifest({ schemaVersion: '2' })), 'ERR_UNSUPPORTED');
    const { schemaVersion: _s, ...none } = manifest();
    throwsCode(() => parse(none), 'ERR_UNSUPPORTED');
  });

  test('a schema1 media type with schemaVersion 2 is not a manifest or index', () => {
    throwsCode(() => parse(manifest({ mediaType: MEDIA.dockerSchema1 }), MEDIA.dockerSchema1), 'ERR_UNSUPPORTED');
  });

  test('malformed digests anywhere in a descriptor (C1)', () => {
    for (const bad of ['sha256:../../x', `sha256:${'A'.repeat(64)}`, `sha256:${'a'.repeat(63)}`, `sha512:${'a'.repeat(128)}`, `${D1}\n`, 'sha256', 42]) {
      throwsCode(() => parse(manifest({ layers: [{ mediaType: LAYER_GZIP, digest: bad, size: 1 }] })), 'ERR_INVALID_IMAGE', /digest/);
      throwsCode(() => parse(manifest({ config: { mediaType: MEDIA.ociConfig, digest: bad, size: 1 } })), 'ERR_INVALID_IMAGE', /digest/);
      throwsCode(() => parse(index({ manifests: [{ mediaType: MEDIA.ociManifest, digest: bad, size: 1 }] }), MEDIA.ociIndex), 'ERR_INVALID_IMAGE', /digest/);
    }
  });

  test('negative, fractional, unsafe or non-numeric sizes', () => {
    for (const size of [-1, 1.5, 2 ** 53, '12', null, Number.NaN]) {
      throwsCode(() => parse(manifest({ layers: [{ mediaType: LAYER_GZIP, digest: D2, size }] })), 'ERR_INVALID_IMAGE', /size/);
    }
    const noSize = { mediaType: LAYER_GZIP, digest: D2 };
    throwsCode(() => parse(manifest({ layers: [noSize] })), 'ERR_INVALID_IMAGE', /size/);
    assert.equal(parse(manifest({ layers: [{ mediaType: LAYER_GZIP, digest: D2, size: 0 }] })).kind, 'manifest');
  });

  test('descriptor urls: foreign layers are never fetched (P3)', () => {
    const foreign = { mediaType: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip', digest: D2, size: 1, urls: ['https://example.com/layer'] };
    throwsCode(() => parse(manifest({ layers: [foreign] })), 'ERR_UNSUPPORTED', /urls/);
    throwsCode(() => parse(manifest({ layers: [{ mediaType: LAYER_GZIP, digest: D2, size: 1, urls: [] }] })), 'ERR_UNSUPPORTED', /urls/);
    throwsCode(() => parse(manifest({ config: { mediaType: MEDIA.ociConfig, digest: D1, size: 1, urls: ['http://x'] } })), 'ERR_UNSUPPORTED', /urls/);
  });

  test(`more than ${MAX_LAYERS} layers (P1); exactly ${MAX_LAYERS} is fine`, () => {
    const layers = (n: number): unknown[] => Array.from({ length: n }, (_, i) => ({ mediaType: LAYER_GZIP, digest: sha256(String(i)), size: i }));
    const atLimit = parse(manifest({ layers: layers(MAX_LAYERS) }));
    assert.equal(atLimit.kind === 'manifest' ? atLimit.layers.length : -1, MAX_LAYERS);
    throwsCode(() => parse(manifest({ layers: layers(MAX_LAYERS + 1) })), 'ERR_INVALID_IMAGE', /129 layers exceed the limit of 128/);
  });

  test('an unknown layer media type', () => {
    for (const mt of ['application/vnd.oci.image.layer.v1.tar+bzip2', MEDIA.ociConfig, 'application/octet-stream']) {
      throwsCode(() => parse(manifest({ layers: [{ mediaType: mt, digest: D2, size: 1 }] })), 'ERR_UNSUPPORTED', /not a supported layer type/);
    }
  });

  test('a config whose media type is not an image config', () => {
    for (const mt of [LAYER_GZIP, MEDIA.ociManifest, 'application/vnd.cncf.helm.config.v1+json']) {
      throwsCode(() => parse(manifest({ config: { mediaType: mt, digest: D1, size: 1 } })), 'ERR_UNSUPPORTED', /not an image config/);
    }
  });

  test('non-JSON, non-object and structurally broken documents', () => {
    throwsCode(() => parseManifestOrIndex(Buffer.from('{"schemaVersion":2,'), MEDIA.ociManifest, 'x'), 'ERR_INVALID_IMAGE', /not JSON/);
    throwsCode(() => parse([manifest()]), 'ERR_INVALID_IMAGE', /not a JSON object/);
    throwsCode(() => parse(manifest({ layers: 'none' })), 'ERR_INVALID_IMAGE');
    throwsCode(() => parse(manifest({ config: null })), 'ERR_INVALID_IMAGE');
    throwsCode(() => parse(index({ manifests: {} }), MEDIA.ociIndex), 'ERR_INVALID_IMAGE');
    throwsCode(() => parse(manifest({ layers: [{ digest: D2, size: 1 }] })), 'ERR_INVALID_IMAGE', /mediaType/);
  });
});

describe('unit: parseImageConfig', () => {
  const config = (over: Record<string, unknown> = {}, rootfs: unknown = { type: 'layers', diff_ids: [D1, D2] }): Buffer =>
    json({ architecture: 'amd64', os: 'linux', config: over, rootfs });

  test('keeps Env, Cmd, Entrypoint, WorkingDir, User and StopSignal', () => {
    const c = parseImageConfig(
      config({
        Env: ['PATH=/usr/bin', 'A=b=c'],
        Cmd: ['-f'],
        Entrypoint: ['httpd'],
        WorkingDir: '/srv',
        User: '1000:1000',
        StopSignal: 'SIGQUIT',
      }),
      'cfg',
    );
    assert.deepEqual(c, {
      architecture: 'amd64',
      os: 'linux',
      config: { Env: ['PATH=/usr/bin', 'A=b=c'], Cmd: ['-f'], Entrypoint: ['httpd'], WorkingDir: '/srv', User: '1000:1000', StopSignal: 'SIGQUIT' },
      rootfs: { type: 'layers', diff_ids: [D1, D2] },
    });
  });

  test('null Cmd/Entrypoint and a missing config section are empty, not errors', () => {
    assert.deepEqual(parseImageConfig(config({ Cmd: null, Entrypoint: null }), 'cfg').config, {});
    assert.deepEqual(parseImageConfig(json({ rootfs: { type: 'layers', diff_ids: [] } }), 'cfg'), {
      architecture: '',
      os: '',
      config: {},
      rootfs: { type: 'layers', diff_ids: [] },
    });
  });

  test('rejects rootfs.type other than "layers" and a missing rootfs', () => {
    throwsCode(() => parseImageConfig(config({}, { type: 'snapshots', diff_ids: [D1] }), 'cfg'), 'ERR_INVALID_IMAGE', /rootfs/);
    throwsCode(() => parseImageConfig(config({}, { diff_ids: [D1] }), 'cfg'), 'ERR_INVALID_IMAGE', /rootfs/);
    throwsCode(() => parseImageConfig(json({ config: {} }), 'cfg'), 'ERR_INVALID_IMAGE', /rootfs/);
  });

  test('rejects bad diff_ids (C1)', () => {
    throwsCode(() => parseImageConfig(config({}, { type: 'layers', diff_ids: [D1, 'sha256:../../x'] }), 'cfg'), 'ERR_INVALID_IMAGE', /diff_ids\[1\]/);
    throwsCode(() => parseImageConfig(config({}, { type: 'layers', diff_ids: [7] }), 'cfg'), 'ERR_INVALID_IMAGE');
    throwsCode(() => parseImageConfig(config({}, { type: 'layers', diff_ids: D1 }), 'cfg'), 'ERR_INVALID_IMAGE');
  });

  test('rejects non-string arrays in Env, Cmd and Entrypoint', () => {
    throwsCode(() => parseImageConfig(config({ Env: ['A=1', 2] }), 'cfg'), 'ERR_INVALID_IMAGE', /Env/);
    throwsCode(() => parseImageConfig(config({ Cmd: 'sh -c true' }), 'cfg'), 'ERR_INVALID_IMAGE', /Cmd/);
    throwsCode(() => parseImageConfig(config({ Entrypoint: [['sh']] }), 'cfg'), 'ERR_INVALID_IMAGE', /Entrypoint/);
    throwsCode(() => parseImageConfig(config({ Env: { A: '1' } }), 'cfg'), 'ERR_INVALID_IMAGE', /Env/);
  });

  test('rejects non-JSON and non-object configs', () => {
    throwsCode(() => parseImageConfig(Buffer.from('nope'), 'cfg'), 'ERR_INVALID_IMAGE', /not JSON/);
    throwsCode(() => parseImageConfig(json(null), 'cfg'), 'ERR_INVALID_IMAGE');
  });
});

describe('unit: selectPlatform and hostPlatform', () => {
  const entry = (digest: string, platform: Platform | undefined, mediaType: string = MEDIA.ociManifest): unknown =>
    platform === undefined ? { mediaType, digest, size: 1 } : { mediaType, digest, size: 1, platform };
  const idx = (...manifests: unknown[]): ImageIndex => {
    const i = parse(index({ manifests }), MEDIA.ociIndex);
    assert.equal(i.kind, 'index');
    return i as ImageIndex;
  };
  const D4 = sha256('four');

  test('picks linux/amd64 when the index lists arm64 first', () => {
    const i = idx(entry(D1, { os: 'linux', architecture: 'arm64', variant: 'v8' }), entry(D2, { os: 'linux', architecture: 'amd64' }));
    assert.equal(selectPlatform(i, { os: 'linux', architecture: 'amd64' }, 'idx').digest, D2);
    assert.equal(selectPlatform(i, { os: 'linux', architecture: 'arm64' }, 'idx').digest, D1);
  });

  test('honours variant', () => {
    const i = idx(
      entry(D1, { os: 'linux', architecture: 'arm', variant: 'v6' }),
      entry(D2, { os: 'linux', architecture: 'arm', variant: 'v7' }),
      entry(D3, { os: 'linux', architecture: 'arm64', variant: 'v8' }),
    );
    assert.equal(selectPlatform(i, { os: 'linux', architecture: 'arm', variant: 'v7' }, 'idx').digest, D2);
    assert.equal(selectPlatform(i, { os: 'linux', architecture: 'arm', variant: 'v6' }, 'idx').digest, D1);
    throwsCode(() => selectPlatform(i, { os: 'linux', architecture: 'arm', variant: 'v5' }, 'idx'), 'ERR_NOT_FOUND');
    // Variant only narrows when both sides name one.
    assert.equal(selectPlatform(i, { os: 'linux', architecture: 'arm64' }, 'idx').digest, D3);
  });

  test('regression platform-variants: normalised and with containerd\'s fallbacks — never a newer variant than the host\'s', () => {
    const D5 = sha256('five');
    // amd64/v3 listed first: a plain amd64 host takes the baseline, never v3 (SIGILL without its instructions).
    const amd = idx(entry(D1, { os: 'linux', architecture: 'amd64', variant: 'v3' }), entry(D2, { os: 'linux', architecture: 'amd64' }));
    assert.equal(selectPlatform(amd, { os: 'linux', architecture: 'amd64' }, 'idx').digest, D2);
    assert.equal(selectPlatform(amd, { os: 'linux', architecture: 'amd64', variant: 'v3' }, 'idx').digest, D1);
    // v3 wanted, only v2 and the baseline listed: v2.
    const amd2 = idx(entry(D2, { os: 'linux', architecture: 'amd64' }), entry(D3, { os: 'linux', architecture: 'amd64', variant: 'v2' }));
    assert.equal(selectPlatform(amd2, { os: 'linux', architecture: 'amd64', variant: 'v3' }, 'idx').digest, D3);
    // An ARMv6 board does not take arm/v7 listed first; arm/v7 falls back to v6; arm without a variant is v7.
    const arm = idx(entry(D1, { os: 'linux', architecture: 'arm', variant: 'v7' }), entry(D2, { os: 'linux', architecture: 'arm', variant: 'v6' }));
    assert.equal(selectPlatform(arm, { os: 'linux', architecture: 'arm', variant: 'v6' }, 'idx').digest, D2);
    assert.equal(selectPlatform(idx(entry(D2, { os: 'linux', architecture: 'arm', variant: 'v6' })), { os: 'linux', architecture: 'arm', variant: 'v7' }, 'idx').digest, D2);
    throwsCode(() => selectPlatform(idx(entry(D3, { os: 'linux', architecture: 'arm' })), { os: 'linux', architecture: 'arm', variant: 'v6' }, 'idx'), 'ERR_NOT_FOUND');
    assert.equal(selectPlatform(idx(entry(D3, { os: 'linux', architecture: 'arm' })), { os: 'linux', architecture: 'arm', variant: 'v7' }, 'idx').digest, D3);
    // Aliases: aarch64 is arm64, x86_64 is amd64; arm64 falls back to 32-bit arm, amd64 to 386.
    assert.equal(selectPlatform(idx(entry(D4, { os: 'linux', architecture: 'aarch64' })), { os: 'linux', architecture: 'arm64' }, 'idx').digest, D4);
    assert.equal(selectPlatform(idx(entry(D4, { os: 'linux', architecture: 'x86_64' })), { os: 'linux', architecture: 'amd64' }, 'idx').digest, D4);
    assert.equal(selectPlatform(idx(entry(D5, { os: 'linux', architecture: 'arm', variant: 'v7' })), { os: 'linux', architecture: 'arm64' }, 'idx').digest, D5);
    assert.equal(selectPlatform(idx(entry(D5, { os: 'linux', architecture: '386' })), { os: 'linux', architecture: 'amd64' }, 'idx').digest, D5);
    // The host's own platform is preferred over a fallback listed first.
    assert.equal(selectPlatform(idx(entry(D5, { os: 'linux', architecture: '386' }), entry(D2, { os: 'linux', architecture: 'amd64' })), { os: 'linux', architecture: 'amd64' }, 'idx').digest, D2);
  });

  test('skips entries without a platform, other OSes and nested indexes', () => {
    const i = idx(
      entry(D1, undefined),
      entry(D2, { os: 'windows', architecture: 'amd64' }),
      entry(D3, { os: 'linux', architecture: 'amd64' }, MEDIA.ociIndex),
      entry(D4, { os: 'linux', architecture: 'amd64' }, MEDIA.dockerManifest),
    );
    assert.equal(selectPlatform(i, { os: 'linux', architecture: 'amd64' }, 'idx').digest, D4);
  });

  test('errors with ERR_NOT_FOUND listing the available platforms', () => {
    const i = idx(entry(D1, { os: 'linux', architecture: 'arm64' }), entry(D2, { os: 'linux', architecture: 's390x' }), entry(D3, { os: 'windows', architecture: 'amd64' }));
    throwsCode(
      () => selectPlatform(i, { os: 'linux', architecture: 'amd64' }, 'pull x index'),
      'ERR_NOT_FOUND',
      /^pull x index: no manifest for linux\/amd64 .*linux\/arm64, linux\/s390x, windows\/amd64/,
    );
    throwsCode(() => selectPlatform(idx(), { os: 'linux', architecture: 'amd64' }, 'idx'), 'ERR_NOT_FOUND', /has none/);
  });

  test('hostPlatform is linux with the Go architecture name of this process', () => {
    const p = hostPlatform();
    assert.equal(p.os, 'linux');
    const expected: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386' };
    assert.equal(p.architecture, expected[process.arch] ?? p.architecture);
    assert.notEqual(p.architecture, 'x64');
  });
});

describe('unit: parseReference', () => {
  const D = sha256('manifest');
  const pick = (s: string): Record<string, unknown> => {
    const r = parseReference(s);
    return { domain: r.domain, path: r.path, tag: r.tag, digest: r.digest, canonical: r.canonical };
  };

  test('docker.io normalisation', () => {
    assert.deepEqual(pick('busybox'), { domain: 'docker.io', path: 'library/busybox', tag: 'latest', digest: undefined, canonical: 'docker.io/library/busybox:latest' });
    assert.equal(parseReference('busybox:1.36').canonical, 'docker.io/library/busybox:1.36');
    assert.equal(parseReference('docker.io/busybox').canonical, 'docker.io/library/busybox:latest');
    assert.equal(parseReference('library/busybox').canonical, 'docker.io/library/busybox:latest');
    assert.equal(parseReference('bitnami/redis:7').canonical, 'docker.io/bitnami/redis:7');
  });

  test('host:port registries', () => {
    assert.deepEqual(pick('127.0.0.1:5000/berth/demo:1.0'), {
      domain: '127.0.0.1:5000',
      path: 'berth/demo',
      tag: '1.0',
      digest: undefined,
      canonical: '127.0.0.1:5000/berth/demo:1.0',
    });
    assert.deepEqual(pick('ghcr.io/org/app'), { domain: 'ghcr.io', path: 'org/app', tag: 'latest', digest: undefined, canonical: 'ghcr.io/org/app:latest' });
  });

  test('digests, with and without a tag', () => {
    assert.deepEqual(pick(`busybox@${D}`), { domain: 'docker.io', path: 'library/busybox', tag: undefined, digest: D, canonical: `docker.io/library/busybox@${D}` });
    assert.deepEqual(pick(`ghcr.io/a/b:1@${D}`), { domain: 'ghcr.io', path: 'a/b', tag: '1', digest: D, canonical: `ghcr.io/a/b:1@${D}` });
  });

  test('rejects uppercase repositories, bad digests and junk (C1)', () => {
    for (const bad of ['Busybox', 'docker.io/Library/busybox', 'example.com/Foo/bar', 'Foo/bar', 'busybox@sha256:../../x', `busybox@${D.toUpperCase()}`, 'busybox@sha256:abc', '', 'a//b', '/x', 'x:', 'x:-tag', 'x y']) {
      throwsCode(() => parseReference(bad), 'ERR_INVALID_ARGUMENT');
    }
    throwsCode(() => parseReference('x'.repeat(500)), 'ERR_INVALID_ARGUMENT', /too long/);
  });

  test('localhost/x is a registry on localhost, not docker.io', () => {
    assert.deepEqual(pick('localhost/x'), { domain: 'localhost', path: 'x', tag: 'latest', digest: undefined, canonical: 'localhost/x:latest' });
    assert.equal(parseReference('localhost:5000/x:y').domain, 'localhost:5000');
  });

  test('IPv6 [::1]:5000/x:y', () => {
    assert.deepEqual(pick('[::1]:5000/x:y'), { domain: '[::1]:5000', path: 'x', tag: 'y', digest: undefined, canonical: '[::1]:5000/x:y' });
  });
});

describe('unit: isLoopbackHost', () => {
  test('loopback: 127.x, localhost, [::1], with or without a port', () => {
    for (const h of ['127.0.0.1', '127.0.0.1:5000', '127.1.2.3', '127.255.255.254:80', 'localhost', 'localhost:5000', '[::1]', '[::1]:5000']) {
      assert.equal(isLoopbackHost(h), true, h);
    }
  });

  test('not loopback: private, public, lookalike names', () => {
    for (const h of ['10.0.0.1', '10.0.0.1:5000', 'example.com', 'example.com:443', '203.0.113.5', '127.0.0.1.example.com', 'localhost.example.com', '[::2]:5000', '128.0.0.1', '0.0.0.0', '']) {
      assert.equal(isLoopbackHost(h), false, h);
    }
  });
});

test('regression index-docker-io-not-normalised: index.docker.io is Docker Hub, as docker reads it', () => {
  assert.equal(parseReference('index.docker.io/busybox').canonical, 'docker.io/library/busybox:latest');
  assert.equal(parseReference('index.docker.io/foo/bar:1').canonical, 'docker.io/foo/bar:1');
  assert.equal(parseReference('busybox').canonical, 'docker.io/library/busybox:latest');
});

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BerthError } from '../../src/lib/errors.js';
import { goField } from '../../src/lib/gojson.js';
import { parseImageConfig, parseManifestOrIndex } from '../../src/runtime/images/documents.js';
import { MEDIA } from '../../src/runtime/registry/index.js';

/**
 * Regression json-keys-as-go: Go's encoding/json (containerd, docker, skopeo, the image scanners)
 * fills a struct field from a key that matches its name under case folding, the last one winning.
 * berth read exact keys only, so one verified document could give a Go reader one entrypoint or
 * layer list and berth another.
 */

const D = (c: string): string => `sha256:${c.repeat(64)}`;
const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));
/** JSON text with the keys in this order (JSON.stringify would do, but keeps it explicit). */
const text = (s: string): Buffer => Buffer.from(s);

function refusedAmbiguous(fn: () => unknown, keys: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof BerthError, String(err));
    assert.equal(err.code, 'ERR_INVALID_IMAGE');
    assert.match(err.message, keys);
    assert.match(err.message, /refused as ambiguous/);
    return true;
  });
}

describe('documents read as Go reads JSON (regression json-keys-as-go)', () => {
  const rootfs = { type: 'layers', diff_ids: [D('a')] };

  test('a config key in another case fills the field, as in Go', () => {
    const c = parseImageConfig(json({ architecture: 'amd64', os: 'linux', RootFS: rootfs, config: { entrypoint: ['/bin/app'], cmd: ['x'], user: '1000', WORKINGDIR: '/w', Env: ['A=1'] } }), 'cfg');
    assert.deepEqual(c.config, { User: '1000', Env: ['A=1'], Entrypoint: ['/bin/app'], Cmd: ['x'], WorkingDir: '/w' });
    assert.deepEqual(c.rootfs.diff_ids, [D('a')]);
  });

  test('two keys for one field (Entrypoint and entrypoint, User and USER) are refused: Go takes the last, berth took the exact one', () => {
    refusedAmbiguous(() => parseImageConfig(text(`{"rootfs":${JSON.stringify(rootfs)},"config":{"Entrypoint":["/evil"],"entrypoint":["/benign"]}}`), 'cfg'), /"Entrypoint" and "entrypoint"/);
    refusedAmbiguous(() => parseImageConfig(text(`{"rootfs":${JSON.stringify(rootfs)},"config":{"User":"0","USER":"1000"}}`), 'cfg'), /"User" and "USER"/);
    refusedAmbiguous(() => parseImageConfig(text(`{"rootfs":{"type":"layers","diff_ids":["${D('a')}"],"Diff_IDs":["${D('b')}"]}}`), 'cfg'), /diff_ids/);
  });

  test('manifests: Layers beside layers is refused; a lone Layers is the layer list; U+017F folds with s', () => {
    const layer = { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: D('1'), size: 1 };
    const config = { mediaType: MEDIA.ociConfig, digest: D('c'), size: 2 };
    refusedAmbiguous(
      () => parseManifestOrIndex(text(`{"schemaVersion":2,"mediaType":"${MEDIA.ociManifest}","config":${JSON.stringify(config)},"layers":[${JSON.stringify(layer)}],"Layers":[]}`), MEDIA.ociManifest, 'm'),
      /"layers" and "Layers"/,
    );
    const lone = parseManifestOrIndex(json({ schemaVersion: 2, MediaType: MEDIA.ociManifest, Config: config, LAYERS: [{ MediaType: layer.mediaType, Digest: layer.digest, \u017Fize: 1 }] }), MEDIA.ociManifest, 'm');
    assert.equal(lone.kind, 'manifest');
    assert.deepEqual(lone.kind === 'manifest' ? lone.layers : [], [layer]);
    refusedAmbiguous(() => parseManifestOrIndex(json({ schemaVersion: 2, mediaType: MEDIA.ociManifest, config: { ...config, \u017Fize: 3 }, layers: [layer] }), MEDIA.ociManifest, 'm'), /"size" and "\u017Fize"/);
  });

  test('indexes: a platform read with folded keys, two keys for one refused', () => {
    const entry = { mediaType: MEDIA.ociManifest, digest: D('d'), size: 3, Platform: { OS: 'linux', Architecture: 'amd64' } };
    const idx = parseManifestOrIndex(json({ schemaVersion: 2, mediaType: MEDIA.ociIndex, manifests: [entry] }), MEDIA.ociIndex, 'i');
    assert.deepEqual(idx.kind === 'index' ? idx.manifests[0]?.platform : undefined, { os: 'linux', architecture: 'amd64' });
    refusedAmbiguous(() => parseManifestOrIndex(json({ schemaVersion: 2, mediaType: MEDIA.ociIndex, manifests: [{ ...entry, Platform: { os: 'linux', OS: 'windows', architecture: 'amd64' } }] }), MEDIA.ociIndex, 'i'), /"os" and "OS"/);
  });

  test('goField: exact keys alone are read as before; other non-ASCII letters do not fold to ASCII', () => {
    assert.equal(goField({ size: 1 }, 'size', 'x'), 1);
    assert.equal(goField({ other: 1 }, 'size', 'x'), undefined);
    assert.equal(goField({ 'sız\u0065': 1 }, 'size', 'x'), undefined); // dotless i is its own fold class
    assert.equal(goField({ \u212Aey: 2 }, 'key', 'x'), 2); // KELVIN SIGN folds with k
  });
});

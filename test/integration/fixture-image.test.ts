import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { request } from 'undici';
import { sha256 } from '../../src/lib/digest.js';
import { isBerthError } from '../../src/lib/errors.js';
import { buildBusyboxImage, MEDIA_TYPE_MANIFEST, pushImage, type BuiltImage } from '../../scripts/fixture-image.js';
import {
  validateDescriptor,
  validateImageConfig,
  validateImageIndex,
  validateImageManifest,
  validateRuntimeConfig,
} from '../helpers/oci-schemas.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { listTree, umociUnpack } from '../helpers/tree.js';

const execFileP = promisify(execFile);
const REPO = 'berth/demo';
const TAG = '1.0';

const tempDirs: string[] = [];
async function tempDir(prefix: string): Promise<string> {
  const d = await fsp.mkdtemp(path.join(os.tmpdir(), prefix));
  tempDirs.push(d);
  return d;
}
after(async () => {
  await Promise.all(tempDirs.map((d) => fsp.rm(d, { recursive: true, force: true })));
});

async function getBytes(url: string, accept?: string): Promise<{ status: number; body: Buffer; digest: string | undefined }> {
  const res = await request(url, accept === undefined ? {} : { headers: { accept } });
  const body = Buffer.from(await res.body.arrayBuffer());
  const d = res.headers['docker-content-digest'];
  return { status: res.statusCode, body, digest: Array.isArray(d) ? d[0] : d };
}

describe('fixture image against docker-registry', () => {
  let registry: TestRegistry;
  let img: BuiltImage;

  before(async () => {
    registry = await startRegistry();
    img = await buildBusyboxImage();
    await pushImage(registry.url, REPO, TAG, img);
  });
  after(async () => {
    await registry?.stop();
  });

  test('build is deterministic and push is idempotent', async () => {
    const again = await buildBusyboxImage();
    assert.equal(again.manifestDigest, img.manifestDigest);
    assert.ok(again.manifest.equals(img.manifest));
    assert.equal(again.layers.length, 2);
    await pushImage(registry.url, REPO, TAG, again);
    await pushImage(registry.url, REPO, 'again', again);

    const other = await buildBusyboxImage({ page: '<h1>other</h1>\n' });
    assert.notEqual(other.manifestDigest, img.manifestDigest);
    assert.equal(other.layers[0]?.digest, img.layers[0]?.digest, 'the busybox layer does not depend on the page');
    assert.notEqual(other.layers[1]?.digest, img.layers[1]?.digest);

    const tags = await getBytes(`${registry.url}/v2/${REPO}/tags/list`);
    assert.deepEqual((JSON.parse(tags.body.toString()) as { tags: string[] }).tags.sort(), ['1.0', 'again']);
  });

  test('push failures name the step and carry the registry answer', async () => {
    const other = await buildBusyboxImage({ page: 'missing layer\n' });
    // Skipping the page layer's upload leaves the manifest referring to a blob the registry lacks.
    const missing: BuiltImage = { ...other, layers: other.layers.slice(0, 1) };
    await assert.rejects(pushImage(registry.url, REPO, 'broken', missing), (err: unknown) => {
      assert.ok(isBerthError(err, 'ERR_REGISTRY'));
      assert.match(err.message, /^push manifest berth\/demo:broken: PUT .* answered 400: .*BLOB_UNKNOWN/);
      return true;
    });
    await assert.rejects(pushImage('http://127.0.0.1:1', REPO, TAG, img), (err: unknown) => {
      assert.ok(isBerthError(err, 'ERR_NETWORK'));
      assert.match(err.message, /^push blob sha256:[0-9a-f]{64} to berth\/demo: check: HEAD .*ECONNREFUSED/);
      return true;
    });
    await assert.rejects(pushImage(registry.url, 'Upper/Case', TAG, img), /invalid repository name/);
  });

  test('manifest and config from the registry validate against image-spec', async () => {
    const m = await getBytes(`${registry.url}/v2/${REPO}/manifests/${TAG}`, MEDIA_TYPE_MANIFEST);
    assert.equal(m.status, 200);
    assert.equal(m.digest, img.manifestDigest);
    assert.ok(m.body.equals(img.manifest), 'registry serves the exact bytes we pushed');
    const manifest: unknown = JSON.parse(m.body.toString());
    validateImageManifest(manifest);

    const c = await getBytes(`${registry.url}/v2/${REPO}/blobs/${img.configDigest}`);
    assert.equal(c.status, 200);
    assert.equal(sha256(c.body), img.configDigest);
    const config = JSON.parse(c.body.toString()) as { rootfs: { diff_ids: string[] }; os: string };
    validateImageConfig(config);
    assert.deepEqual(
      config.rootfs.diff_ids,
      img.layers.map((l) => l.diffId),
    );
    assert.equal(config.os, 'linux');

    for (const layer of img.layers) {
      const l = await getBytes(`${registry.url}/v2/${REPO}/blobs/${layer.digest}`);
      assert.equal(l.status, 200);
      assert.equal(sha256(l.body), layer.digest);
    }

    const descriptor = { mediaType: MEDIA_TYPE_MANIFEST, digest: img.manifestDigest, size: img.manifest.length };
    validateDescriptor(descriptor);
    validateImageIndex({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [{ ...descriptor, platform: { architecture: 'amd64', os: 'linux' } }],
    });
    assert.throws(() => validateImageManifest({ schemaVersion: 2, config: descriptor, layers: [] }), /layers/);
    assert.throws(() => validateImageIndex({ schemaVersion: 3, manifests: [] }), /schemaVersion/);
    assert.throws(() => validateImageConfig({ architecture: 'amd64', os: 'linux', created: 'yesterday' }), /created/);
  });

  test('skopeo inspect reports our digest', async () => {
    const { stdout } = await execFileP('skopeo', ['inspect', '--tls-verify=false', `docker://${registry.host}/${REPO}:${TAG}`]);
    const info = JSON.parse(stdout) as { Digest: string; Layers: string[]; Os: string };
    assert.equal(info.Digest, img.manifestDigest);
    assert.deepEqual(
      info.Layers,
      img.layers.map((l) => l.digest),
    );
  });

  test('umoci unpacks the image into the expected tree', async () => {
    const work = await tempDir('berth-umoci-');
    const rootfs = await umociUnpack(registry.host, `${REPO}:${TAG}`, work);
    const tree = await listTree(rootfs);
    const byPath = new Map(tree.map((line) => [line.split(' ')[0], line]));

    const busybox = await fsp.readFile('/bin/busybox');
    assert.equal(byPath.get('bin/busybox'), `bin/busybox f 0755 0 0 ${busybox.length} - ${sha256(busybox)}`);
    const page = await fsp.readFile(path.join(rootfs, 'var/www/index.html'), 'utf8');
    assert.match(page, /berth demo/);
    assert.equal(byPath.get('var/www/index.html'), `var/www/index.html f 0644 0 0 ${page.length} - ${sha256(page)}`);
    assert.equal(byPath.get('bin/sh'), 'bin/sh l 0777 0 0 - busybox -');
    assert.equal(byPath.get('tmp'), 'tmp d 1777 0 0 - - -');
    assert.equal(byPath.get('root'), 'root d 0700 0 0 - - -');
    assert.match(byPath.get('etc/passwd') ?? '', /^etc\/passwd f 0644 0 0 \d+ - sha256:/);
    assert.deepEqual([...tree].sort(), tree, 'listTree is sorted');
  });
});

describe('listTree', () => {
  test('describes every file type without following symlinks', async () => {
    const root = await tempDir('berth-tree-');
    await fsp.mkdir(path.join(root, 'd'));
    await fsp.writeFile(path.join(root, 'd/f'), 'hi');
    await fsp.chmod(path.join(root, 'd/f'), 0o4750);
    await fsp.symlink('/etc/passwd', path.join(root, 'escape'));
    await fsp.writeFile(path.join(root, 'a b'), '');
    await execFileP('mknod', [path.join(root, 'null'), 'c', '1', '3']);
    await execFileP('mkfifo', [path.join(root, 'fifo')]);
    // Explicit modes so the expected lines do not depend on the umask.
    for (const f of ['a b', 'null', 'fifo']) await fsp.chmod(path.join(root, f), 0o644);
    const tree = await listTree(root);
    const dirMode = ((await fsp.stat(path.join(root, 'd'))).mode & 0o7777).toString(8).padStart(4, '0');
    assert.deepEqual(tree, [
      `a\\x20b f 0644 0 0 0 - ${sha256('')}`,
      `d d ${dirMode} 0 0 - - -`,
      `d/f f 4750 0 0 2 - ${sha256('hi')}`,
      'escape l 0777 0 0 - /etc/passwd -',
      'fifo p 0644 0 0 - - -',
      'null c 0644 0 0 1:3 - -',
    ]);
  });
});

describe('runtime-spec validator', () => {
  test('accepts `runc spec` and rejects a bad ociVersion', async () => {
    const dir = await tempDir('berth-runc-spec-');
    await execFileP('runc', ['spec'], { cwd: dir });
    const spec = JSON.parse(await fsp.readFile(path.join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    validateRuntimeConfig(spec);
    assert.throws(() => validateRuntimeConfig({ ...spec, ociVersion: 5 }), /\/ociVersion/);
    assert.throws(() => validateRuntimeConfig({ process: {} }), /ociVersion/);
  });
});

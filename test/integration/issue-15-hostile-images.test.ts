import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { chainIds, digestHex, sha256, type Digest } from '../../src/lib/digest.js';
import { BerthError, messageOf, type ErrorCode } from '../../src/lib/errors.js';
import { createLogger } from '../../src/lib/log.js';
import { Runtime, type LocalImage } from '../../src/runtime/index.js';
import { StateStore } from '../../src/runtime/state/index.js';
import {
  assertCanariesUntouched,
  canaryState,
  configOf,
  dir,
  file,
  hardlink,
  imageCase,
  imageOf,
  imageTestName,
  indexOf,
  layerOf,
  MT,
  member,
  pax,
  plantManifest,
  pushBlob,
  pushImageParts,
  pushManifest,
  removeCanaries,
  symlink,
  tamperBlob,
  tarOf,
  zeroBomb,
  makeCanaries,
  type Canaries,
  type ImageParts,
  type LayerBlob,
} from '../helpers/hostile.js';
import { requireE2E } from '../helpers/prereq.js';
import { smallSnapshotRuntime } from '../helpers/small-snapshots.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { listTree } from '../helpers/tree.js';

/**
 * Issue 15, hostile images: each case is pushed to the real docker-registry on loopback (or, when
 * the registry's own validation refuses the document, planted in its storage or tampered there)
 * and pulled through Runtime.pullImage, berth's real pull path. Each pull ends in the case's coded
 * error, or (R1 cases) succeeds and the config.json generation the reconciler runs before any start
 * (Runtime.checkRunSpec) refuses it. After every case: nothing is stored under a digest it does not
 * hash to, no snapshot or image row exists for the hostile image, no temp residue is left, the
 * image pulled before is intact, and the canaries around berth's root are unchanged.
 *
 * Berth's root is the canaries' root (`<tmp>/canaries/a/b/root`), so a snapshot being extracted
 * lives at `<root>/snapshots/tmp-…/fs`, six levels below the temp dir's canary.txt.
 */

const UP = '../'.repeat(6);
const PWNED = 'pwned\n';

interface Good {
  ref: string;
  digest: Digest;
  chainIds: Digest[];
  tree: string[];
}

describe('issue 15: hostile images pulled from docker-registry', { timeout: 600_000 }, () => {
  let ok = true;
  let registry: TestRegistry | undefined;
  let rt: Runtime | undefined;
  let work = '';
  let c: Canaries;
  let good: Good;
  let seq = 0;
  const mounts: string[] = [];

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    work = await fsp.mkdtemp('/tmp/berth-hostile-images-');
    c = await makeCanaries(work, 'canaries');
    registry = await startRegistry();
    rt = await Runtime.open({ root: c.root, state: path.join(work, 'state'), log: createLogger('silent') });
    good = await pullGood(rt, c.root, 'berth/good');
  });

  after(async () => {
    await rt?.close();
    for (const m of mounts.reverse()) execFileSync('umount', ['-l', m]);
    if (work !== '') {
      await removeCanaries(c);
      await fsp.rm(work, { recursive: true, force: true });
    }
    await registry?.stop();
  });

  async function pullGood(runtime: Runtime, root: string, repo: string): Promise<Good> {
    const img = imageOf([layerOf(tarOf(dir('etc'), file('etc/hello', 'hello from a good image\n'), symlink('link', 'etc/hello')))]);
    await pushImageParts(url(), repo, '1', img);
    const ref = `${registry?.host ?? ''}/${repo}:1`;
    const local = await runtime.pullImage(ref);
    assert.equal(local.digest, img.manifestDigest);
    return { ref, digest: local.digest, chainIds: local.chainIds, tree: await snapshotTrees(root, local.chainIds) };
  }

  const url = (): string => registry?.url ?? '';
  const next = (): string => `berth/hostile-${++seq}`;

  async function snapshotTrees(root: string, ids: readonly Digest[]): Promise<string[]> {
    const out: string[] = [];
    for (const id of ids) out.push(...(await listTree(path.join(root, 'snapshots', digestHex(id), 'fs'))).map((l) => `${id} ${l}`));
    return out;
  }

  /** Pulls `ref`, expecting `code`; returns the error. */
  async function pullFails(runtime: Runtime, ref: string, code: ErrorCode, re?: RegExp): Promise<BerthError> {
    let caught: unknown;
    try {
      await runtime.pullImage(ref);
    } catch (err) {
      caught = err;
    }
    assert.ok(caught instanceof BerthError, `expected BerthError ${code}, got ${caught === undefined ? 'success' : messageOf(caught)}`);
    assert.equal(caught.code, code, caught.message);
    if (re !== undefined) assert.match(caught.message, re);
    return caught;
  }

  /**
   * What every case must leave: blobs that hash to their names, no ingest or extraction residue,
   * snapshot directories and rows in step, no row for `hostile` (image refs and chainIDs), the good
   * image as it was, and the canaries untouched.
   */
  async function assertSound(
    runtime: Runtime,
    root: string,
    g: Good,
    opts: { canaries?: Record<string, unknown>; hostileRepo?: string; hostileChainIds?: readonly Digest[]; absentBlobs?: readonly string[] } = {},
  ): Promise<void> {
    const blobs = path.join(root, 'content/blobs/sha256');
    for (const name of await fsp.readdir(blobs)) {
      assert.equal(sha256(await fsp.readFile(path.join(blobs, name))), `sha256:${name}`, `blob ${name} hashes to its name`);
    }
    for (const d of opts.absentBlobs ?? []) {
      await assert.rejects(fsp.lstat(path.join(blobs, d.replace(/^sha256:/, ''))), `nothing stored under ${d}`);
    }
    assert.deepEqual(await fsp.readdir(path.join(root, 'content/ingest')), [], 'no ingest residue');
    const snapDirs = (await fsp.readdir(path.join(root, 'snapshots'))).sort();
    assert.deepEqual(snapDirs.filter((n) => n.startsWith('tmp-')), [], 'no extraction residue');
    const state = new StateStore(root);
    try {
      assert.deepEqual(snapDirs, state.listSnapshots().map(digestHex).sort(), 'snapshot directories and rows agree');
      for (const id of opts.hostileChainIds ?? []) assert.equal(state.getSnapshot(id), undefined, `no snapshot ${id}`);
      if (opts.hostileRepo !== undefined) {
        const repo = `/${opts.hostileRepo}:`;
        assert.deepEqual(state.listImages().filter((i) => i.ref.includes(repo)), [], 'no image row for the hostile image');
      }
    } finally {
      state.close();
    }
    const local = runtime.localImage(g.ref);
    assert.ok(local !== undefined, 'the good image is still there');
    assert.equal(local.digest, g.digest);
    assert.deepEqual(local.chainIds, g.chainIds);
    assert.deepEqual(await snapshotTrees(root, g.chainIds), g.tree, 'the good image\'s snapshots are unchanged');
    if (opts.canaries !== undefined) await assertCanariesUntouched(c, opts.canaries);
  }

  /**
   * Pushes `img` under a fresh repo, runs `afterPush` (a registry-side tamper must come after the
   * push: uploading a blob again rewrites its stored bytes) and expects the pull to fail with the
   * case's code.
   */
  async function refused(
    t: TestContext,
    id: string,
    img: ImageParts,
    opts: { re?: RegExp; absentBlobs?: readonly string[]; afterPush?: () => Promise<void> } = {},
  ): Promise<void> {
    if (!ok || rt === undefined) return t.skip();
    const before = await canaryState(c);
    const repo = next();
    await pushImageParts(url(), repo, '1', img);
    await opts.afterPush?.();
    const ref = `${registry?.host ?? ''}/${repo}:1`;
    const code = imageCase(id).outcome;
    assert.notEqual(code, 'confined');
    await pullFails(rt, ref, code as ErrorCode, opts.re);
    await assertSound(rt, c.root, good, { canaries: before, hostileRepo: repo, hostileChainIds: chainIdsOf(img.layers), absentBlobs: opts.absentBlobs ?? [] });
  }

  /** Plants `manifest` under a fresh repo (blobs pushed normally) and expects the pull to fail. */
  async function plantedRefused(t: TestContext, id: string, manifest: Buffer, blobs: readonly Buffer[], re?: RegExp): Promise<void> {
    if (!ok || rt === undefined || registry === undefined) return t.skip();
    const before = await canaryState(c);
    const repo = next();
    for (const b of blobs) await pushBlob(url(), repo, b);
    await plantManifest(registry.storageDir, repo, '1', manifest);
    const ref = `${registry.host}/${repo}:1`;
    await pullFails(rt, ref, imageCase(id).outcome as ErrorCode, re);
    await assertSound(rt, c.root, good, { canaries: before, hostileRepo: repo });
  }

  const chainIdsOf = (layers: readonly LayerBlob[]): Digest[] => chainIds(layers.map((l) => l.diffId));

  // ── layers ────────────────────────────────────────────────────────────────────────────────────

  test(imageTestName(imageCase('traversal-layer')), async (t) => {
    const img = imageOf([layerOf(tarOf(file('ok', 'x'), file(`${UP}canary.txt`, PWNED), file(`${UP}canary-dir/new`, PWNED)))]);
    await refused(t, 'traversal-layer', img, { re: /'\.\.' component/ });
  });

  test(imageTestName(imageCase('symlink-escape-layer')), async (t) => {
    if (!ok || rt === undefined) return t.skip();
    const before = await canaryState(c);
    const img = imageOf([
      layerOf(tarOf(symlink('rootlink', '/'), file(`rootlink${c.hostFile}`, PWNED), symlink('up', UP), file('up/canary.txt', PWNED), file('up/canary-dir/new', PWNED))),
    ]);
    const repo = next();
    await pushImageParts(url(), repo, '1', img);
    const local: LocalImage = await rt.pullImage(`${registry?.host ?? ''}/${repo}:1`);
    const fs = path.join(c.root, 'snapshots', digestHex(local.chainIds[0] ?? ('' as Digest)), 'fs');
    // Written, but inside the snapshot: chroot semantics.
    assert.equal(await fsp.readFile(path.join(fs, c.hostDirInRoot, 'canary.txt'), 'utf8'), PWNED);
    assert.equal(await fsp.readFile(path.join(fs, 'canary.txt'), 'utf8'), PWNED);
    assert.equal(await fsp.readFile(path.join(fs, 'canary-dir/new'), 'utf8'), PWNED);
    assert.equal(await fsp.readlink(path.join(fs, 'rootlink')), '/');
    await assertSound(rt, c.root, good, { canaries: before });
  });

  test(imageTestName(imageCase('cross-layer-symlink')), async (t) => {
    if (!ok || rt === undefined) return t.skip();
    const before = await canaryState(c);
    const img = imageOf([layerOf(tarOf(symlink('s', c.hostDir))), layerOf(tarOf(file('s/canary.txt', PWNED), file('s/new', PWNED)))]);
    const repo = next();
    await pushImageParts(url(), repo, '1', img);
    const local = await rt.pullImage(`${registry?.host ?? ''}/${repo}:1`);
    const [lower, upper] = local.chainIds.map((id) => path.join(c.root, 'snapshots', digestHex(id), 'fs'));
    assert.ok(lower !== undefined && upper !== undefined);
    assert.equal(await fsp.readlink(path.join(lower, 's')), c.hostDir);
    // The upper layer holds a real directory s (it hides the lower symlink in the overlay).
    assert.ok((await fsp.lstat(path.join(upper, 's'))).isDirectory());
    assert.equal(await fsp.readFile(path.join(upper, 's/canary.txt'), 'utf8'), PWNED);
    assert.equal(await fsp.readFile(path.join(upper, 's/new'), 'utf8'), PWNED);
    await assertSound(rt, c.root, good, { canaries: before });
  });

  test(imageTestName(imageCase('hardlink-escape-layer')), async (t) => {
    const img = imageOf([layerOf(tarOf(symlink('s', c.hostDir), hardlink('h', 's/canary.txt')))]);
    await refused(t, 'hardlink-escape-layer', img, { re: /not in this layer/ });
  });

  test(imageTestName(imageCase('pax-traversal-layer')), async (t) => {
    const img = imageOf([layerOf(tarOf(pax([['path', `${UP}canary.txt`]]), file('innocent', PWNED)))]);
    await refused(t, 'pax-traversal-layer', img, { re: /'\.\.' component/ });
  });

  test(imageTestName(imageCase('huge-declared-size')), async (t) => {
    const tar = Buffer.concat([member({ name: 'huge', type: '0', size: 16 * 2 ** 30 + 1 }, 'x'.repeat(4096)), Buffer.alloc(1024)]);
    const img = imageOf([layerOf(tar)]);
    await refused(t, 'huge-declared-size', img, { re: /limit is/ });
  });

  test(imageTestName(imageCase('decompression-bomb')), async (t) => {
    if (!ok || registry === undefined) return t.skip();
    // The pull path has no way to lower maxUncompressedBytes (64 GiB by default): what stops a
    // bomb there is the free-space floor (256 MiB), checked every 256 MiB of uncompressed bytes.
    const { root, snaps, runtime: small } = await smallSnapshotRuntime(path.join(work, 'bomb'), mounts);
    try {
      const g = await pullGood(small, root, 'berth/good-bomb');
      const used = async (): Promise<number> => {
        const st = await fsp.statfs(snaps);
        return (st.blocks - st.bfree) * st.bsize;
      };
      const usedBefore = await used();
      const bomb = await zeroBomb(512 * 2 ** 20);
      assert.ok(bomb.size < 1024 * 1024, `the bomb is ${bomb.size} bytes of gzip`);
      const img = imageOf([bomb]);
      const repo = next();
      await pushImageParts(url(), repo, '1', img);
      const ref = `${registry.host}/${repo}:1`;
      const before = await canaryState(c);
      await pullFails(small, ref, 'ERR_RESOURCE_EXHAUSTED', /bytes free on the snapshot filesystem/);
      assert.ok((await used()) - usedBefore < 1024 * 1024, 'the partial extraction was removed');
      await assertSound(small, root, g, { canaries: before, hostileRepo: repo, hostileChainIds: chainIdsOf(img.layers) });
    } finally {
      await small.close();
    }
  });

  // ── digests ───────────────────────────────────────────────────────────────────────────────────

  test(imageTestName(imageCase('tampered-layer-blob')), async (t) => {
    const layer = layerOf(tarOf(file('a', 'x'.repeat(5000))));
    const evil = layerOf(tarOf(file(`${UP}canary.txt`, 'y'.repeat(5000))));
    await refused(t, 'tampered-layer-blob', imageOf([layer]), {
      re: /hashes to|declared|bytes/,
      absentBlobs: [layer.digest],
      afterPush: () => tamperBlob(registry?.storageDir ?? '', layer.digest, evil.blob),
    });
  });

  test(imageTestName(imageCase('tampered-config-blob')), async (t) => {
    const layer = layerOf(tarOf(file('b', 'x')));
    const img = imageOf([layer], { config: configOf([layer.diffId], { Cmd: ['/bin/true'], WorkingDir: '/a' }) });
    const other = Buffer.from(img.config.toString().replace('"/a"', '"/b"'));
    assert.equal(other.length, img.config.length);
    await refused(t, 'tampered-config-blob', img, {
      re: /hashing to/,
      absentBlobs: [img.configDigest],
      afterPush: () => tamperBlob(registry?.storageDir ?? '', img.configDigest, other),
    });
  });

  test(imageTestName(imageCase('tampered-manifest')), async (t) => {
    if (!ok || rt === undefined || registry === undefined) return t.skip();
    const before = await canaryState(c);
    const img = imageOf([layerOf(tarOf(file('m', 'x')))]);
    const repo = next();
    await pushImageParts(url(), repo, '1', img);
    // Same document with one more space: still a valid manifest, another digest.
    await tamperBlob(registry.storageDir, img.manifestDigest, Buffer.from(img.manifest.toString().replace('{', '{ ')));
    const ref = `${registry.host}/${repo}:1`;
    await pullFails(rt, ref, 'ERR_DIGEST_MISMATCH', /Docker-Content-Digest/);
    await assertSound(rt, c.root, good, { canaries: before, hostileRepo: repo, absentBlobs: [img.manifestDigest, img.configDigest] });
  });

  test(imageTestName(imageCase('wrong-diffid')), async (t) => {
    const layer = layerOf(tarOf(file('w', 'x')));
    const img = imageOf([layer], { config: configOf([sha256('not the tar')]) });
    await refused(t, 'wrong-diffid', { ...img, layers: [{ ...layer, diffId: sha256('not the tar') }] }, { re: /config says/ });
  });

  test(imageTestName(imageCase('layer-size-lies')), async (t) => {
    const layer = layerOf(tarOf(file('s', 'x'.repeat(20_000))));
    const img = imageOf([layer], { layerDescriptors: [{ mediaType: layer.mediaType, digest: layer.digest, size: layer.size - 1 }] });
    await refused(t, 'layer-size-lies', img, { re: /more than the declared/, absentBlobs: [layer.digest] });
  });

  const plantedImage = (mutate: (doc: Record<string, unknown>, img: ImageParts) => void): { manifest: Buffer; img: ImageParts } => {
    const img = imageOf([layerOf(tarOf(file('p', 'x')))]);
    const doc = JSON.parse(img.manifest.toString()) as Record<string, unknown>;
    mutate(doc, img);
    return { manifest: Buffer.from(JSON.stringify(doc)), img };
  };
  const withConfigDigest = (digest: string) => (doc: Record<string, unknown>): void => {
    doc['config'] = { ...(doc['config'] as object), digest };
  };

  for (const [id, digest] of [
    ['digest-uppercase', (d: Digest) => `sha256:${digestHex(d).toUpperCase()}`],
    ['digest-sha512', () => `sha512:${'ab'.repeat(64)}`],
    ['digest-short', () => 'sha256:abc'],
  ] as const) {
    test(imageTestName(imageCase(id)), async (t) => {
      const { manifest, img } = plantedImage((doc, i) => withConfigDigest(digest(i.configDigest))(doc));
      await plantedRefused(t, id, manifest, [img.config, ...img.layers.map((l) => l.blob)], /not a sha256 digest/);
    });
  }

  test(imageTestName(imageCase('digest-traversal')), async (t) => {
    const { manifest, img } = plantedImage((doc) => {
      doc['layers'] = [{ mediaType: MT.gzip, digest: 'sha256:../../../../canary-dir/x', size: 1 }];
    });
    await plantedRefused(t, 'digest-traversal', manifest, [img.config], /not a sha256 digest/);
  });

  // ── media types ───────────────────────────────────────────────────────────────────────────────

  test(imageTestName(imageCase('manifest-as-index')), async (t) => {
    const { manifest, img } = plantedImage((doc) => {
      doc['mediaType'] = MT.index;
    });
    await plantedRefused(t, 'manifest-as-index', manifest, [img.config, ...img.layers.map((l) => l.blob)], /index without a manifests array/);
  });

  test(imageTestName(imageCase('ambiguous-document')), async (t) => {
    const { manifest, img } = plantedImage((doc) => {
      doc['manifests'] = [];
    });
    await plantedRefused(t, 'ambiguous-document', manifest, [img.config, ...img.layers.map((l) => l.blob)], /ambiguous/);
  });

  test(imageTestName(imageCase('schema1')), async (t) => {
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 1, name: 'berth/s1', tag: '1', architecture: 'amd64', fsLayers: [], history: [] }));
    await plantedRefused(t, 'schema1', manifest, [], /schema1/);
  });

  test(imageTestName(imageCase('manifest-endless')), async (t) => {
    if (!ok || rt === undefined) return t.skip();
    const before = await canaryState(c);
    let sent = 0;
    let closed!: () => void;
    const gone = new Promise<void>((r) => (closed = r));
    const server = createServer((req, res) => {
      if (req.url === '/v2/') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{}');
        return;
      }
      // A manifest that never ends: berth must stop at its 4 MiB limit and hang up.
      res.writeHead(200, { 'content-type': MT.manifest });
      const chunk = Buffer.alloc(64 * 1024, 0x20);
      const pump = (): void => {
        while (!res.destroyed && sent < 256 * 2 ** 20) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
      };
      res.on('close', () => closed());
      res.write('{"schemaVersion":2,"padding":"');
      pump();
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    t.after(() => {
      server.closeAllConnections();
      server.close();
    });
    const port = (server.address() as AddressInfo).port;
    await pullFails(rt, `127.0.0.1:${port}/berth/endless:1`, 'ERR_INVALID_IMAGE', /exceeds the 4194304 byte limit/);
    await gone;
    assert.ok(sent < 32 * 2 ** 20, `the registry sent ${sent} bytes before berth hung up`);
    await assertSound(rt, c.root, good, { canaries: before });
  });

  test(imageTestName(imageCase('layer-count-bomb')), async (t) => {
    const { manifest, img } = plantedImage((doc) => {
      doc['layers'] = Array.from({ length: 129 }, (_, i) => ({ mediaType: MT.gzip, digest: sha256(`layer ${i}`), size: 100 }));
    });
    await plantedRefused(t, 'layer-count-bomb', manifest, [img.config], /129 layers exceed the limit of 128/);
  });

  test(imageTestName(imageCase('index-child-mislabeled')), async (t) => {
    if (!ok || rt === undefined) return t.skip();
    const before = await canaryState(c);
    const repo = next();
    const img = imageOf([layerOf(tarOf(file('i', 'x')))]);
    await pushImageParts(url(), repo, 'inner-manifest', img);
    const inner = indexOf([{ mediaType: MT.manifest, digest: img.manifestDigest, size: img.manifest.length }]);
    await pushManifest(url(), repo, 'inner', inner, MT.index);
    const outer = indexOf([{ mediaType: MT.manifest, digest: sha256(inner), size: inner.length }]);
    await pushManifest(url(), repo, '1', outer, MT.index);
    const ref = `${registry?.host ?? ''}/${repo}:1`;
    await pullFails(rt, ref, 'ERR_INVALID_IMAGE', /is served as application\/vnd\.oci\.image\.index\.v1\+json/);
    await assertSound(rt, c.root, good, { canaries: before, hostileRepo: repo, hostileChainIds: chainIdsOf(img.layers) });
  });

  test(imageTestName(imageCase('index-depth-bomb')), async (t) => {
    if (!ok || rt === undefined) return t.skip();
    const before = await canaryState(c);
    const repo = next();
    const img = imageOf([layerOf(tarOf(file('n', 'x')))]);
    await pushImageParts(url(), repo, 'level-0', img);
    let child = { mediaType: MT.manifest as string, digest: img.manifestDigest as string, size: img.manifest.length };
    for (let level = 1; level <= 8; level++) {
      const idx = indexOf([child]);
      await pushManifest(url(), repo, level === 8 ? '1' : `level-${level}`, idx, MT.index);
      child = { mediaType: MT.index, digest: sha256(idx), size: idx.length };
    }
    const ref = `${registry?.host ?? ''}/${repo}:1`;
    await pullFails(rt, ref, 'ERR_INVALID_IMAGE', /nested indexes are not supported/);
    await assertSound(rt, c.root, good, { canaries: before, hostileRepo: repo, hostileChainIds: chainIdsOf(img.layers) });
  });

  test(imageTestName(imageCase('layer-declared-tar-is-gzip')), async (t) => {
    const gzipped = layerOf(tarOf(file('g', 'x')));
    // Declared plain tar, so its diffID is the blob's own digest: only the tar parse can object.
    const asTar: LayerBlob = { ...gzipped, mediaType: MT.tar, diffId: gzipped.digest };
    await refused(t, 'layer-declared-tar-is-gzip', imageOf([asTar]), { re: /read tar/ });
  });

  test(imageTestName(imageCase('config-as-layer')), async (t) => {
    const config = configOf([sha256('x')]);
    const asLayer: LayerBlob = { blob: config, mediaType: MT.gzip, digest: sha256(config), size: config.length, diffId: sha256('x') };
    await refused(t, 'config-as-layer', imageOf([asLayer], { config: configOf([sha256('x')], { Cmd: ['/x'] }) }), { re: /decompress/ });
  });

  test(imageTestName(imageCase('config-declared-layer-type')), async (t) => {
    await refused(t, 'config-declared-layer-type', imageOf([layerOf(tarOf(file('c', 'x')))], { configDescriptor: { mediaType: MT.gzip } }), { re: /is not an image config/ });
  });

  test(imageTestName(imageCase('layer-declared-config-type')), async (t) => {
    const layer = layerOf(tarOf(file('l', 'x')));
    await refused(
      t,
      'layer-declared-config-type',
      imageOf([layer], { layerDescriptors: [{ mediaType: MT.config, digest: layer.digest, size: layer.size }] }),
      { re: /is not a supported layer type/ },
    );
  });

  // ── configs (R1): pulled, then refused when the container's config.json is generated ─────────

  const r1: readonly [string, Record<string, unknown>, RegExp][] = [
    ['workdir-proc', { Cmd: ['/bin/true'], WorkingDir: '/proc/self/cwd' }, /lies under \/proc/],
    ['workdir-dotdot', { Cmd: ['/bin/true'], WorkingDir: '/app/../../proc' }, /not a clean absolute path/],
    ['user-traversal', { Cmd: ['/bin/true'], User: 'root:../../x' }, /is not a user or group name/],
    ['user-huge-uid', { Cmd: ['/bin/true'], User: '9'.repeat(4096) }, /outside 0\.\.4294967294/],
    ['user-uid-minus-one', { Cmd: ['/bin/true'], User: '4294967295' }, /outside 0\.\.4294967294/],
    ['env-nul', { Cmd: ['/bin/true'], Env: ['PATH=/bin', 'EVIL=a\u0000b'] }, /is not KEY=VALUE/],
    ['env-no-equals', { Cmd: ['/bin/true'], Env: ['PATH=/bin', 'NOEQUALS'] }, /is not KEY=VALUE/],
  ];
  /** The reconciler's run spec for a host-network pod (Runtime.checkRunSpec's second argument). */
  const run = (extra: { workingDir?: string } = {}): Parameters<Runtime['checkRunSpec']>[1] => ({
    pod: { hostNetwork: true, shareProcessNamespace: false },
    ...extra,
  });
  const r1Layer = layerOf(tarOf(dir('app'), file('app/run', 'x')));
  for (const [id, config, re] of r1) {
    test(imageTestName(imageCase(id)), async (t) => {
      if (!ok || rt === undefined) return t.skip();
      const before = await canaryState(c);
      const img = imageOf([r1Layer], { config: configOf([r1Layer.diffId], config) });
      const repo = next();
      await pushImageParts(url(), repo, '1', img);
      const local = await rt.pullImage(`${registry?.host ?? ''}/${repo}:1`);
      assert.throws(
        () => rt?.checkRunSpec(local, run()),
        (err: unknown) => {
          assert.ok(err instanceof BerthError, `expected a BerthError, got ${String(err)}`);
          assert.equal(err.code, imageCase(id).outcome, err.message);
          assert.match(err.message, re);
          return true;
        },
      );
      // The same image runs once the manifest overrides what it can (a working dir), which is
      // why R1 is enforced per container and not at pull time.
      if (id.startsWith('workdir-')) rt.checkRunSpec(local, run({ workingDir: '/app' }));
      await assertSound(rt, c.root, good, { canaries: before });
    });
  }
});

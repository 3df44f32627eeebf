import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildBusyboxImage, pushImage, type BuiltImage } from '../../scripts/fixture-image.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { listTree, umociUnpack } from '../helpers/tree.js';
import { validateImageConfig, validateImageManifest } from '../helpers/oci-schemas.js';
import { requireE2E } from '../helpers/prereq.js';
import { Runtime } from '../../src/runtime/index.js';
import { Snapshotter } from '../../src/runtime/snapshots/index.js';
import { StateStore } from '../../src/runtime/state/index.js';
import { createLogger } from '../../src/lib/log.js';
import { digestHex, sha256 } from '../../src/lib/digest.js';
import { createServer } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';

interface FaultProxy {
  readonly port: number;
  /** GET /v2/…/blobs/<digest> requests seen, by digest. */
  readonly blobGets: Map<string, number>;
  close(): void;
}

/**
 * A loopback proxy in front of the registry that reads each upstream answer in full and hands it
 * to `fault`, which may answer in its own way (and returns true) or leave it to the proxy.
 */
async function faultProxy(
  upstream: string,
  fault: (req: IncomingMessage, res: ServerResponse, up: { status: number; headers: Record<string, string>; body: Buffer }) => boolean = () => false,
): Promise<FaultProxy> {
  const blobGets = new Map<string, number>();
  const proxy = createServer((req, res) => {
    void (async () => {
      const blob = /\/blobs\/(sha256:[a-f0-9]{64})$/.exec(req.url ?? '')?.[1];
      if (blob !== undefined) blobGets.set(blob, (blobGets.get(blob) ?? 0) + 1);
      const r = await fetch(`${upstream}${req.url ?? '/'}`, { method: req.method ?? 'GET', headers: { accept: String(req.headers['accept'] ?? '*/*') } });
      const body = Buffer.from(await r.arrayBuffer());
      const headers: Record<string, string> = {};
      r.headers.forEach((v, k) => (headers[k] = v));
      delete headers['content-encoding'];
      delete headers['transfer-encoding'];
      headers['content-length'] = String(body.length);
      if (fault(req, res, { status: r.status, headers, body })) return;
      res.writeHead(r.status, headers);
      res.end(body);
    })();
  });
  proxy.listen(0, '127.0.0.1');
  await once(proxy, 'listening');
  return {
    port: (proxy.address() as AddressInfo).port,
    blobGets,
    close() {
      proxy.closeAllConnections();
      proxy.close();
    },
  };
}

/**
 * Pull from the real docker-registry: documents validate against the official image-spec
 * schemas, layers land as chainID snapshots, and the overlay rootfs equals umoci's unpack
 * of the same image (skopeo copies it into an OCI layout).
 */
describe('integration: pull from docker-registry', { timeout: 300_000 }, () => {
  let registry: TestRegistry | undefined;
  let img: BuiltImage;
  let work: string;
  let rt: Runtime | undefined;
  let ok = true;
  const ref = (): string => `${registry?.host ?? ''}/berth/demo:1.0`;

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    work = mkdtempSync(path.join(os.tmpdir(), 'berth-pull-'));
    registry = await startRegistry();
    img = await buildBusyboxImage();
    await pushImage(registry.url, 'berth/demo', '1.0', img);
    rt = await Runtime.open({ root: path.join(work, 'root'), state: path.join(work, 'state'), log: createLogger('silent') });
  });

  after(async () => {
    await rt?.close();
    if (work !== undefined) {
      for (const m of (await fsp.readFile('/proc/self/mountinfo', 'utf8')).split('\n').map((l) => l.split(' ')[4] ?? '')) {
        if (m.startsWith(work)) execFileSync('umount', ['-l', m]);
      }
      await fsp.rm(work, { recursive: true, force: true });
    }
    await registry?.stop();
  });

  test('pull stores verified blobs, records the image, and the documents validate', async (t) => {
    if (!ok || rt === undefined) return t.skip();
    const local = await rt.pullImage(ref());
    assert.equal(local.digest, img.manifestDigest);
    assert.equal(local.layers.length, 2);
    const root = path.join(work, 'root');
    const manifest = JSON.parse(await fsp.readFile(path.join(root, 'content/blobs/sha256', digestHex(img.manifestDigest)), 'utf8')) as unknown;
    validateImageManifest(manifest);
    const config = JSON.parse(await fsp.readFile(path.join(root, 'content/blobs/sha256', digestHex(img.configDigest)), 'utf8')) as unknown;
    validateImageConfig(config);
    for (const l of img.layers) {
      const stored = await fsp.readFile(path.join(root, 'content/blobs/sha256', digestHex(l.digest)));
      assert.ok(stored.equals(l.data), `layer ${l.digest} stored byte for byte`);
    }
    // Snapshot directories are keyed by chainID and nothing is left in ingest or tmp dirs.
    for (const id of local.chainIds) await fsp.access(path.join(root, 'snapshots', digestHex(id), 'fs'));
    assert.deepEqual(await fsp.readdir(path.join(root, 'content/ingest')), []);
    assert.deepEqual((await fsp.readdir(path.join(root, 'snapshots'))).filter((n) => n.startsWith('tmp-')), []);
    // A second pull is idempotent and returns the same image.
    const again = await rt.pullImage(ref());
    assert.deepEqual(again.chainIds, local.chainIds);
  });

  test('the overlay rootfs mounted by the snapshotter (mountRootfs) equals umoci unpack of the same image', async (t) => {
    if (!ok || rt === undefined) return t.skip();
    const local = rt.localImage(ref());
    assert.ok(local !== undefined);
    // berth's own mount code, not a mount command of the test's: the real Snapshotter over the
    // same root and database (a second StateStore on one SQLite file is safe: WAL).
    const state = new StateStore(path.join(work, 'root'));
    const snapshots = new Snapshotter(path.join(work, 'root'), state);
    const target = path.join(work, 'merged');
    try {
      await snapshots.mountRootfs('umoci-compare', local.chainIds, target);
      const ours = await listTree(target);
      const umociRoot = await umociUnpack(registry?.host ?? '', 'berth/demo:1.0', path.join(work, 'umoci'));
      const theirs = await listTree(umociRoot);
      assert.ok(ours.length > 100, `listing has ${ours.length} entries`);
      assert.deepEqual(ours, theirs);
    } finally {
      await snapshots.unmount(target);
      await snapshots.removeContainer('umoci-compare');
      state.close();
    }
  });

  test('a snapshot directory deleted behind berth\'s back is forgotten by sweep and restored by the next pull', async (t) => {
    if (!ok || rt === undefined) return t.skip();
    const local = rt.localImage(ref());
    assert.ok(local !== undefined);
    const top = local.chainIds[local.chainIds.length - 1];
    assert.ok(top !== undefined);
    await fsp.rm(path.join(work, 'root', 'snapshots', digestHex(top)), { recursive: true });
    await rt.sweep();
    assert.equal(rt.localImage(ref()), undefined, 'image no longer counts as present');
    const again = await rt.pullImage(ref());
    assert.deepEqual(again.chainIds, local.chainIds);
    await fsp.access(path.join(work, 'root', 'snapshots', digestHex(top), 'fs'));
    assert.ok(rt.localImage(ref()) !== undefined);
  });

  test('regression: blob-body-broke-off — a layer download cut mid-body is fetched again and the pull succeeds', async (t) => {
    if (!ok || rt === undefined || registry === undefined) return t.skip();
    const upstream = registry.url;
    const layer = img.layers[1];
    assert.ok(layer !== undefined);
    let cut = 0;
    const proxy = await faultProxy(upstream, (req, res, up) => {
      if (!req.url?.includes(`/blobs/${layer.digest}`) || cut > 0) return false;
      cut++;
      res.writeHead(up.status, up.headers);
      res.write(up.body.subarray(0, Math.floor(up.body.length / 2)));
      setTimeout(() => res.destroy(), 20);
      return true;
    });
    const port = proxy.port;
    const fresh = await Runtime.open({ root: path.join(work, 'root2'), state: path.join(work, 'state2'), log: createLogger('silent') });
    try {
      const local = await fresh.pullImage(`127.0.0.1:${port}/berth/demo:1.0`);
      assert.equal(cut, 1, 'the first download was cut');
      assert.equal(local.digest, img.manifestDigest);
    } finally {
      await fresh.close();
      proxy.close();
    }
  });

  test('regression: local-io-error-code — a full disk during a pull is ERR_RESOURCE_EXHAUSTED naming the path, and no blob is downloaded twice', async (t) => {
    if (!ok || rt === undefined || registry === undefined) return t.skip();
    const proxy = await faultProxy(registry.url);
    t.after(() => proxy.close());
    const root = path.join(work, 'root-enospc');
    const content = path.join(root, 'content');
    await fsp.mkdir(content, { recursive: true });
    // The content store on a 64 KiB tmpfs: the busybox layer (hundreds of KiB) cannot fit.
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0700', 'tmpfs', content]);
    t.after(() => execFileSync('umount', ['-l', content]));
    const small = await Runtime.open({ root, state: path.join(work, 'state-enospc'), log: createLogger('silent') });
    t.after(() => small.close());
    const big = img.layers[0];
    assert.ok(big !== undefined && big.size > 64 * 1024, 'the fixture layer is larger than the tmpfs');
    await assert.rejects(small.pullImage(`127.0.0.1:${proxy.port}/berth/demo:1.0`), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_RESOURCE_EXHAUSTED', err.message);
      assert.match(err.message, /no space left on the local disk/);
      assert.ok(err.message.includes(path.join(content, 'ingest')), `names the path: ${err.message}`);
      return true;
    });
    for (const l of img.layers) assert.ok((proxy.blobGets.get(l.digest) ?? 0) <= 1, `${l.digest} fetched ${proxy.blobGets.get(l.digest)} times: a full disk is not a broken download`);
    assert.equal(proxy.blobGets.get(big.digest), 1);
    await assert.rejects(fsp.access(path.join(content, 'blobs/sha256', digestHex(big.digest))), 'nothing committed under the digest');
    // The partials of the layers that hit the full disk (or were stopped by it) are kept for a
    // resume once space is freed (issue 14): files named by a layer's digest, each holding a
    // prefix of that layer; no temp file.
    const ingest = await fsp.readdir(path.join(content, 'ingest'));
    assert.ok(ingest.length >= 1, 'the resumable partial is kept');
    for (const name of ingest) {
      const partial = img.layers.find((l) => name === digestHex(l.digest));
      assert.ok(partial !== undefined, `only resumable partials are left: ${ingest.join(', ')}`);
      const kept = await fsp.readFile(path.join(content, 'ingest', name));
      assert.ok(kept.length < partial.size && kept.equals(partial.data.subarray(0, kept.length)), `the partial is a prefix of the layer (${kept.length} bytes)`);
    }
    // Space freed: the same store pulls the image, and every blob it has is whole.
    execFileSync('mount', ['-o', 'remount,size=16m', content]);
    const local = await small.pullImage(`127.0.0.1:${proxy.port}/berth/demo:1.0`);
    assert.equal(local.digest, img.manifestDigest);
    for (const l of img.layers) assert.ok((await fsp.readFile(path.join(content, 'blobs/sha256', digestHex(l.digest)))).equals(l.data));
  });

  for (const fault of ['404', 'wrong digest'] as const) {
    test(`regression: sibling-downloads-keep-running — a layer that fails (${fault}) aborts the slow sibling download before pull() rejects`, async (t) => {
      if (!ok || rt === undefined || registry === undefined) return t.skip();
      const [slow, failing] = img.layers;
      assert.ok(slow !== undefined && failing !== undefined);
      let slowStarted!: () => void;
      const slowSending = new Promise<void>((r) => (slowStarted = r));
      let slowClosed = false;
      let slowClose!: () => void;
      const slowGone = new Promise<void>((r) => (slowClose = r));
      const proxy = await faultProxy(registry.url, (req, res, up) => {
        if (req.url?.includes(`/blobs/${slow.digest}`)) {
          // Headers and the first 16 KiB, then nothing: a download that is still running.
          res.writeHead(up.status, up.headers);
          res.write(up.body.subarray(0, 16 * 1024), () => slowStarted());
          res.on('close', () => {
            slowClosed = true;
            slowClose();
          });
          return true;
        }
        if (req.url?.includes(`/blobs/${failing.digest}`)) {
          // Fail only once the slow download is under way, so there is a sibling to stop.
          void slowSending.then(() => {
            if (fault === '404') {
              res.writeHead(404, { 'content-type': 'application/json' });
              res.end('{"errors":[{"code":"BLOB_UNKNOWN"}]}');
            } else {
              const body = Buffer.from(up.body);
              body[body.length - 1] = (body[body.length - 1] ?? 0) ^ 0xff;
              res.writeHead(up.status, up.headers);
              res.end(body);
            }
          });
          return true;
        }
        return false;
      });
      t.after(() => proxy.close());
      const root = path.join(work, `root-sibling-${fault.replace(' ', '-')}`);
      const fresh = await Runtime.open({ root, state: path.join(work, `state-sibling-${fault.replace(' ', '-')}`), log: createLogger('silent') });
      t.after(() => fresh.close());
      const started = Date.now();
      await assert.rejects(fresh.pullImage(`127.0.0.1:${proxy.port}/berth/demo:1.0`), (err: Error & { code?: string }) => {
        assert.equal(err.code, fault === '404' ? 'ERR_NOT_FOUND' : 'ERR_DIGEST_MISMATCH', err.message);
        assert.ok(err.message.includes(failing.digest), `the failing layer's error, not the sibling's abort: ${err.message}`);
        return true;
      });
      // Nothing of the slow download is left running when pull() has returned, nor committed; its
      // partial file stays for the next pull's Range resume (regression sibling-failure-drops-partials).
      assert.deepEqual(await fsp.readdir(path.join(root, 'content/ingest')), [digestHex(slow.digest)], 'the slow download stopped and kept its partial file');
      await assert.rejects(fsp.access(path.join(root, 'content/blobs/sha256', digestHex(slow.digest))));
      // The client closed the socket before it settled; the server's close event needs one more turn of its loop.
      await Promise.race([slowGone, sleep(1000)]);
      assert.equal(slowClosed, true, 'the registry saw the slow download closed');
      assert.ok(Date.now() - started < 10_000, 'the pull did not wait for a timeout');
    });
  }

  test('an image without layers is refused at pull time with a clear error', async (t) => {
    if (!ok || rt === undefined || registry === undefined) return t.skip();
    const config = Buffer.from(JSON.stringify({ architecture: (JSON.parse(img.config.toString()) as { architecture: string }).architecture, os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [] } }));
    const configDigest = sha256(config);
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length }, layers: [] }));
    await pushImage(registry.url, 'berth/empty', '1.0', { manifest, manifestDigest: sha256(manifest), config, configDigest, layers: [] });
    await assert.rejects(rt.pullImage(`${registry.host}/berth/empty:1.0`), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_INVALID_IMAGE');
      assert.match(err.message, /no layers/);
      return true;
    });
  });

  test('a tag that does not exist fails with ERR_NOT_FOUND naming the reference', async (t) => {
    if (!ok || rt === undefined) return t.skip();
    await assert.rejects(rt.pullImage(`${registry?.host ?? ''}/berth/demo:nope`), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_NOT_FOUND');
      assert.match(err.message, /berth\/demo:nope/);
      return true;
    });
  });
});

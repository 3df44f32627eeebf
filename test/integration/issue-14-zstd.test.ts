import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fsp, readFileSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';
import { chainIds, digestHex, sha256, type Digest } from '../../src/lib/digest.js';
import { BerthError, messageOf, type ErrorCode } from '../../src/lib/errors.js';
import { createLogger } from '../../src/lib/log.js';
import { Runtime } from '../../src/runtime/index.js';
import { dir, END, file, imageOf, MT, pushImageParts, symlink, tarOf, tarHeader, type LayerBlob } from '../helpers/hostile.js';
import { requireE2E, requireTools } from '../helpers/prereq.js';
import { smallSnapshotRuntime } from '../helpers/small-snapshots.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { listTree } from '../helpers/tree.js';

/**
 * Issue 14, zstd layers: layers compressed by the reference `zstd` tool (Debian package zstd) are
 * pushed to the real docker-registry on loopback, pulled, and must unpack to the same snapshot
 * trees as the same tars pulled gzip-compressed by another runtime. Hostile zstd blobs (a window
 * bomb, a zeros bomb against the free-space floor, a corrupted block, a truncated frame, trailing
 * garbage) are refused with a coded error naming the layer digest and leave no snapshot.
 */

const DOCKER_ZSTD = 'application/vnd.docker.image.rootfs.diff.tar.zstd';

function zstd(data: Buffer, args: readonly string[] = []): Buffer {
  return execFileSync('zstd', ['-q', '-c', ...args], { input: data, maxBuffer: 256 * 2 ** 20 });
}

function zstdLayer(tar: Buffer, blob: Buffer, mediaType: string = MT.zstd): LayerBlob {
  return { blob, mediaType, digest: sha256(blob), size: blob.length, diffId: sha256(tar) };
}

function gzLayer(tar: Buffer): LayerBlob {
  const blob = gzipSync(tar);
  return { blob, mediaType: MT.gzip, digest: sha256(blob), size: blob.length, diffId: sha256(tar) };
}

/** A skippable frame (RFC 8878 §3.1.2) carrying `payload`. */
function skippable(payload: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt32LE(0x184d2a53, 0);
  h.writeUInt32LE(payload.length, 4);
  return Buffer.concat([h, payload]);
}

/** Text that compresses like real files: the machine's license texts, repeated to `bytes`. */
function licenseText(bytes: number): Buffer {
  const dirPath = '/usr/share/common-licenses';
  const parts: Buffer[] = [];
  let n = 0;
  const names = readdirSync(dirPath).filter((f) => !f.includes('.'));
  while (n < bytes) {
    for (const f of names) {
      let b: Buffer;
      try {
        b = readFileSync(path.join(dirPath, f));
      } catch {
        continue;
      }
      parts.push(b);
      n += b.length;
    }
  }
  return Buffer.concat(parts).subarray(0, bytes);
}

/** Pseudo-random bytes (incompressible: zstd stores them as raw blocks), deterministic. */
function noise(bytes: number): Buffer {
  const out = Buffer.alloc(Math.ceil(bytes / 4) * 4);
  let x = 0x9e3779b9;
  for (let i = 0; i < out.length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out.writeUInt32LE(x >>> 0, i);
  }
  return out.subarray(0, bytes);
}

describe('issue 14: zstd layers', { timeout: 600_000 }, () => {
  let ok = true;
  let registry: TestRegistry | undefined;
  let work = '';
  let zrt: Runtime | undefined;
  let grt: Runtime | undefined;
  const mounts: string[] = [];
  let seq = 0;
  const repo = (): string => `berth/zstd-${++seq}`;
  const host = (): string => registry?.host ?? '';
  const url = (): string => registry?.url ?? '';

  before(async (t) => {
    ok = requireE2E(t) && requireTools(t, ['zstd']);
    if (!ok) return;
    work = await fsp.mkdtemp('/tmp/berth-issue14-zstd-');
    registry = await startRegistry();
    zrt = await Runtime.open({ root: path.join(work, 'zroot'), state: path.join(work, 'zstate'), log: createLogger('silent') });
    grt = await Runtime.open({ root: path.join(work, 'groot'), state: path.join(work, 'gstate'), log: createLogger('silent') });
  });

  after(async () => {
    await zrt?.close();
    await grt?.close();
    for (const m of mounts.reverse()) execFileSync('umount', ['-l', m]);
    await registry?.stop();
    if (work !== '') await fsp.rm(work, { recursive: true, force: true });
  });

  async function trees(root: string, ids: readonly Digest[]): Promise<string[]> {
    const out: string[] = [];
    for (const id of ids) out.push(...(await listTree(path.join(root, 'snapshots', digestHex(id), 'fs'))).map((l) => `${id} ${l}`));
    return out;
  }

  async function pullFails(rt: Runtime, ref: string, codes: readonly ErrorCode[], digest: Digest, re?: RegExp): Promise<BerthError> {
    let caught: unknown;
    try {
      await rt.pullImage(ref);
    } catch (err) {
      caught = err;
    }
    assert.ok(caught instanceof BerthError, `expected a BerthError, got ${caught === undefined ? 'success' : messageOf(caught)}`);
    assert.ok(codes.includes(caught.code), `expected ${codes.join(' or ')}, got ${caught.code}: ${caught.message}`);
    assert.ok(caught.message.includes(digest), `the message names the layer ${digest}: ${caught.message}`);
    if (re !== undefined) assert.match(caught.message, re);
    return caught;
  }

  /** No snapshot directory for `chain`, and no unpack residue under the snapshots dir. */
  async function assertNoSnapshot(root: string, chain: readonly Digest[]): Promise<void> {
    const snaps = await fsp.readdir(path.join(root, 'snapshots'));
    for (const id of chain) assert.ok(!snaps.includes(digestHex(id)), `no snapshot ${id}`);
    const residue = snaps.filter((n) => !/^[a-f0-9]{64}$/.test(n));
    assert.deepEqual(residue, [], 'no temp residue under snapshots/');
  }

  test('zstd layers from the zstd tool (checksums, no checksum, concatenated and skippable frames, docker media type) unpack like their gzip twins', async (t) => {
    if (!ok) return t.skip();
    const rtZ = zrt as Runtime;
    const rtG = grt as Runtime;
    const tars = [
      tarOf(dir('etc'), file('etc/hello', 'hello from a zstd layer\n'), symlink('link', 'etc/hello'), file('licenses', licenseText(3 * 2 ** 20)), file('noise', noise(2 ** 20 + 17))),
      tarOf(dir('etc'), file('etc/second', 'second layer\n'), file('etc/.wh.hello', ''), file('big', licenseText(5 * 2 ** 20 + 3))),
      tarOf(dir('opt'), file('opt/third', 'third layer\n', { mode: 0o4755 })),
    ];
    const half = Math.floor(tars[1]!.length / 2);
    const zl = [
      zstdLayer(tars[0]!, zstd(tars[0]!, ['-3', '--check'])),
      // Two frames and a skippable frame between them: one stream (RFC 8878 §3.1).
      zstdLayer(tars[1]!, Buffer.concat([zstd(tars[1]!.subarray(0, half), ['-1']), skippable(Buffer.from('berth')), zstd(tars[1]!.subarray(half), ['-19', '--no-check'])]), DOCKER_ZSTD),
      zstdLayer(tars[2]!, zstd(tars[2]!, ['--no-check'])),
    ];
    const zimg = imageOf(zl);
    const gimg = imageOf(tars.map(gzLayer));
    await pushImageParts(url(), 'berth/zstd-good', '1', zimg);
    await pushImageParts(url(), 'berth/gzip-twin', '1', gimg);
    const z = await rtZ.pullImage(`${host()}/berth/zstd-good:1`);
    const g = await rtG.pullImage(`${host()}/berth/gzip-twin:1`);
    assert.equal(z.digest, zimg.manifestDigest);
    assert.deepEqual(z.chainIds, chainIds(tars.map((x) => sha256(x))), 'chainIDs from the verified diffIDs');
    assert.deepEqual(z.chainIds, g.chainIds);
    const zt = await trees(path.join(work, 'zroot'), z.chainIds);
    const gt = await trees(path.join(work, 'groot'), g.chainIds);
    assert.ok(zt.length >= 8, `the trees list the layers' files (${zt.length} lines)`);
    assert.deepEqual(zt, gt);
    assert.ok(zt.some((l) => l.startsWith(`${z.chainIds[0]} etc/hello `)), 'etc/hello is in the first layer');
  });

  test('images import: a docker save tar with a zstd layer file is detected by its magic and unpacks like the gzip twin', async (t) => {
    if (!ok) return t.skip();
    const tar = tarOf(dir('srv'), file('srv/imported', 'imported through a docker save archive\n'), file('srv/text', licenseText(300_000)));
    const layer = zstd(tar, ['-6']);
    const config = Buffer.from(JSON.stringify(JSON.parse(imageOf([zstdLayer(tar, layer)]).config.toString())));
    const configHex = digestHex(sha256(config));
    const p = pack();
    const chunks: Buffer[] = [];
    p.on('data', (c: unknown) => chunks.push(c as Buffer));
    const done = new Promise<void>((r) => p.on('end', () => r()));
    p.entry({ name: `${configHex}.json` }, config);
    p.entry({ name: 'abc/layer.tar' }, layer);
    p.entry({ name: 'manifest.json' }, JSON.stringify([{ Config: `${configHex}.json`, RepoTags: ['berth/zimport:1'], Layers: ['abc/layer.tar'] }]));
    p.finalize();
    await done;
    const archive = path.join(work, 'zimport.tar');
    await fsp.writeFile(archive, Buffer.concat(chunks));
    const imported = await (zrt as Runtime).importImages(archive);
    assert.equal(imported.length, 1);
    const inspected = (zrt as Runtime).inspectImage(imported[0]!.ref);
    assert.equal((inspected.manifest.layers[0] as { mediaType: string }).mediaType, MT.zstd);
    const twin = imageOf([gzLayer(tar)]);
    await pushImageParts(url(), 'berth/zimport-twin', '1', twin);
    const g = await (grt as Runtime).pullImage(`${host()}/berth/zimport-twin:1`);
    const ids = chainIds([sha256(tar)]);
    assert.deepEqual(await trees(path.join(work, 'zroot'), ids), await trees(path.join(work, 'groot'), g.chainIds));
  });

  test('zstd window bomb: a frame declaring a 2 GiB window is ERR_LIMIT_EXCEEDED naming the layer, before any allocation', async (t) => {
    if (!ok) return t.skip();
    const tar = tarOf(file('f', 'x'));
    const real = zstd(tar);
    // Frame header: magic, descriptor without single-segment (a window byte follows), window 2^31.
    const fhd = real[4]! & ~0x20 & ~0xc0; // no single segment, no content size field
    const blocks = real.subarray(4 + 1 + frameHeaderRest(real[4]!));
    const bomb = Buffer.concat([real.subarray(0, 4), Buffer.from([fhd, (31 - 10) << 3]), blocks]);
    const layer = zstdLayer(tar, bomb);
    const img = imageOf([layer]);
    const r = repo();
    await pushImageParts(url(), r, '1', img);
    const err = await pullFails(zrt as Runtime, `${host()}/${r}:1`, ['ERR_LIMIT_EXCEEDED'], layer.digest, /2147483648 byte window.*maxZstdWindowBytes/);
    assert.equal(err.details['limit'], 'maxZstdWindowBytes');
    await assertNoSnapshot(path.join(work, 'zroot'), chainIds([layer.diffId]));
  });

  test('zstd zeros bomb: 512 MiB of zeros in a few KiB stops at the free-space floor, leaving nothing', async (t) => {
    if (!ok) return t.skip();
    // As the gzip bomb in issue-15-hostile-images: a small tmpfs under snapshots/, whose
    // free-space floor (256 MiB, checked every 256 MiB of uncompressed bytes) stops it.
    const { root, snaps, runtime: small } = await smallSnapshotRuntime(path.join(work, 'bomb'), mounts);
    try {
      const layer = await zstdZeroBomb(512 * 2 ** 20);
      assert.ok(layer.size < 64 * 1024, `the bomb is ${layer.size} bytes of zstd`);
      const img = imageOf([layer]);
      const r = repo();
      await pushImageParts(url(), r, '1', img);
      await pullFails(small, `${host()}/${r}:1`, ['ERR_RESOURCE_EXHAUSTED'], layer.digest, /bytes free on the snapshot filesystem/);
      const st = await fsp.statfs(snaps);
      assert.ok((st.blocks - st.bfree) * st.bsize < 4 * 2 ** 20, 'the partial extraction was removed');
      await assertNoSnapshot(root, chainIds([layer.diffId]));
    } finally {
      await small.close();
    }
  });

  test('corrupted zstd frames are refused naming the layer: reserved block type, truncated frame, trailing garbage, flipped entropy bytes', async (t) => {
    if (!ok) return t.skip();
    const tar = tarOf(dir('etc'), file('etc/text', licenseText(400_000)));
    const good = zstd(tar, ['-3']);
    const headerLen = 4 + 1 + frameHeaderRest(good[4]!);
    const reserved = Buffer.from(good);
    reserved[headerLen] = reserved[headerLen]! | 0x06; // first block's type = 3 (reserved)
    const flipped = Buffer.from(good);
    for (let i = 0; i < 64; i++) {
      const at = headerLen + 200 + i * 97;
      flipped[at] = flipped[at]! ^ 0x5a;
    }
    const cases: { name: string; blob: Buffer; codes: ErrorCode[]; re?: RegExp }[] = [
      { name: 'reserved block type', blob: reserved, codes: ['ERR_INVALID_IMAGE'], re: /decompress zstd: block at byte \d+: reserved block type/ },
      { name: 'truncated', blob: good.subarray(0, good.length - 100), codes: ['ERR_INVALID_IMAGE'], re: /truncated/ },
      { name: 'trailing garbage', blob: Buffer.concat([good, Buffer.from('trailing garbage')]), codes: ['ERR_INVALID_IMAGE'], re: /after the last zstd frame/ },
      // Corrupt entropy-coded bytes either fail to decode or decode to other bytes (the diffID).
      { name: 'flipped bytes', blob: flipped, codes: ['ERR_INVALID_IMAGE', 'ERR_DIGEST_MISMATCH'] },
    ];
    for (const c of cases) {
      const layer = zstdLayer(tar, c.blob);
      const r = repo();
      await pushImageParts(url(), r, '1', imageOf([layer]));
      await pullFails(zrt as Runtime, `${host()}/${r}:1`, c.codes, layer.digest, c.re);
      await assertNoSnapshot(path.join(work, 'zroot'), chainIds([layer.diffId]));
    }
  });
});

/** A zstd layer of one file of `bytes` zeros, streamed through the zstd tool (the test never holds the expanded bytes). */
async function zstdZeroBomb(bytes: number): Promise<LayerBlob> {
  const child = spawn('zstd', ['-q', '-c', '-3'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const out: Buffer[] = [];
  child.stdout.on('data', (c: Buffer) => out.push(c));
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  const diff = createHash('sha256');
  const write = async (b: Buffer): Promise<void> => {
    diff.update(b);
    if (!child.stdin.write(b)) await new Promise((r) => child.stdin.once('drain', r));
  };
  await write(tarHeader({ name: 'bomb', type: '0', mode: 0o644 }, bytes));
  const zeros = Buffer.alloc(2 ** 20);
  for (let left = bytes; left > 0; left -= zeros.length) await write(left >= zeros.length ? zeros : zeros.subarray(0, left));
  await write(Buffer.alloc((512 - (bytes % 512)) % 512));
  await write(END);
  child.stdin.end();
  assert.equal(await exited, 0, 'zstd compressed the bomb');
  const blob = Buffer.concat(out);
  return { blob, mediaType: MT.zstd, digest: sha256(blob), size: blob.length, diffId: `sha256:${diff.digest('hex')}` as Digest };
}

/** Bytes after the frame header descriptor (window byte, dictionary id, content size). */
function frameHeaderRest(fhd: number): number {
  const single = (fhd >> 5) & 1;
  const fcsFlag = fhd >> 6;
  return (single ? 0 : 1) + [0, 1, 2, 4][fhd & 3]! + (fcsFlag === 0 ? single : [0, 2, 4, 8][fcsFlag]!);
}

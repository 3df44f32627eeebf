import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { after, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import type { Digest } from '../../src/lib/digest.js';
import { BerthError } from '../../src/lib/errors.js';
import { unpackLayer, type UnpackResult } from '../../src/runtime/unpack/index.js';
import { finishLayer, unpackLayerOnThread, UnpackThreads } from '../../src/runtime/unpack/thread.js';
import { packTar, type PackHeader } from '../helpers/tar-pack.js';
import { listTree } from '../helpers/tree.js';

/**
 * Issue 14 (speed): the layers of a pull are unpacked at once, each on a worker thread, with the
 * metadata of directories a tar implies copied from the parent layers only once they are ready
 * (unpack/thread.ts). These tests hold that path to the sequential one: the same tree, owners, modes
 * and times, the same refusals, and no write outside the layer when a later entry replaced an
 * implied directory by a symlink.
 */

const MTIME = new Date('2021-02-03T04:05:06Z');
const GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
const work: string[] = [];

/** packTar with MTIME as every entry's default mtime. */
const tarOf = (members: { header: PackHeader; data?: string }[]): Promise<Buffer> => packTar(members.map((m) => ({ ...m, header: { mtime: MTIME, ...m.header } })));

const sha = (b: Buffer): Digest => `sha256:${createHash('sha256').update(b).digest('hex')}` as Digest;

async function blobOf(tar: Buffer): Promise<{ path: string; expected: { digest: Digest; size: number; diffId: Digest }; data: Buffer }> {
  const data = gzipSync(tar);
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'berth-ptest-blob-'));
  work.push(dir);
  const p = path.join(dir, 'blob');
  await fsp.writeFile(p, data);
  return { path: p, expected: { digest: sha(data), size: data.length, diffId: sha(tar) }, data };
}

async function emptyDir(): Promise<string> {
  const base = await fsp.mkdtemp(path.join(os.tmpdir(), 'berth-ptest-'));
  work.push(base);
  await fsp.chmod(base, 0o700);
  const d = path.join(base, 'fs');
  await fsp.mkdir(d, { mode: 0o755 });
  return d;
}

after(async () => {
  for (const d of work) await fsp.rm(d, { recursive: true, force: true });
});

test('issue-14 parallel unpack: a layer unpacked on a thread and finished over its lowers equals the sequential unpack', async () => {
  // The lower layer: directories with their own modes, owners and times, and a symlink that must not lead out.
  const lowerTar = await tarOf([
    { header: { name: 'opt/', type: 'directory', mode: 0o750, uid: 1000, gid: 1001, mtime: new Date('2020-01-01T00:00:00Z') } },
    { header: { name: 'opt/app/', type: 'directory', mode: 0o700, uid: 1000, gid: 1000, mtime: new Date('2020-01-02T00:00:00Z') } },
    { header: { name: 'tmp/', type: 'directory', mode: 0o1777 } },
    { header: { name: 'etc-link', type: 'symlink', linkname: '/etc', mode: 0o777 } },
    { header: { name: 'usr/share/', type: 'directory', mode: 0o755, mtime: new Date('2019-05-05T00:00:00Z') } },
  ]);
  const lower = await emptyDir();
  const lowerBlob = await blobOf(lowerTar);
  await unpackLayer({ source: Readable.from([lowerBlob.data]), mediaType: GZIP, expected: lowerBlob.expected, dest: lower, sync: false });

  // The upper layer implies opt, opt/app, tmp, usr, usr/share, etc-link and new/deep without listing them.
  const upperTar = await tarOf([
    { header: { name: 'opt/app/bin/tool', type: 'file', mode: 0o755 }, data: 'tool' },
    { header: { name: 'tmp/x', type: 'file', mode: 0o644 }, data: 'x' },
    { header: { name: 'usr/share/doc/README', type: 'file', mode: 0o644 }, data: 'readme' },
    { header: { name: 'etc-link/y', type: 'file', mode: 0o644 }, data: 'y' },
    { header: { name: 'new/deep/z', type: 'file', mode: 0o600 }, data: 'z' },
    // An implied directory that a later entry lists explicitly keeps the entry's metadata.
    { header: { name: 'usr/share/doc/', type: 'directory', mode: 0o711, mtime: new Date('2018-01-01T00:00:00Z') } },
  ]);
  const upperBlob = await blobOf(upperTar);

  const sequential = await emptyDir();
  await unpackLayer({ source: Readable.from([upperBlob.data]), mediaType: GZIP, expected: upperBlob.expected, dest: sequential, lowerDirs: [lower], sync: false });

  const threaded = await emptyDir();
  const res: UnpackResult = await unpackLayerOnThread({ blobPath: upperBlob.path, mediaType: GZIP, expected: upperBlob.expected, dest: threaded });
  assert.ok(res.impliedDirs !== undefined && res.impliedDirs.length > 0, 'the thread reports the implied directories');
  assert.equal(res.diffId, upperBlob.expected.diffId);
  await finishLayer(threaded, res, [lower]);

  // Same names, types, modes, owners and contents. Times of implied directories differ by design: the
  // sequential unpack copies them before the children are made (which bumps the mtime), the threaded
  // one after, so there they are exactly the lower layer's.
  assert.deepEqual(await listTree(threaded), await listTree(sequential));
  for (const d of ['opt', 'opt/app', 'usr/share']) {
    assert.equal((await fsp.lstat(path.join(threaded, d))).mtimeMs, (await fsp.lstat(path.join(lower, d))).mtimeMs, `${d} has the lower's mtime`);
  }
  const opt = await fsp.lstat(path.join(threaded, 'opt'));
  assert.deepEqual([opt.mode & 0o7777, opt.uid, opt.gid, opt.mtime.toISOString()], [0o750, 1000, 1001, '2020-01-01T00:00:00.000Z']);
  assert.equal((await fsp.lstat(path.join(threaded, 'tmp'))).mode & 0o7777, 0o1777);
  assert.equal((await fsp.lstat(path.join(threaded, 'usr', 'share', 'doc'))).mode & 0o7777, 0o711);
});

test('issue-14 parallel unpack: an implied directory later replaced by a symlink is not followed when its metadata is copied', async () => {
  const canary = await fsp.mkdtemp(path.join(os.tmpdir(), 'berth-ptest-canary-'));
  work.push(canary);
  await fsp.chmod(canary, 0o700);
  const lower = await emptyDir();
  await fsp.mkdir(path.join(lower, 'a', 'b'), { recursive: true });
  await fsp.chmod(path.join(lower, 'a'), 0o1777);
  await fsp.chmod(path.join(lower, 'a', 'b'), 0o1777);
  // a and a/b are implied, then a becomes a symlink to the canary (absolute: confined when resolved,
  // but a careless fix-up of "a/b" by path would chmod the host's canary).
  const tar = await tarOf([
    { header: { name: 'a/b/f', type: 'file', mode: 0o644 }, data: 'f' },
    { header: { name: 'a', type: 'symlink', linkname: canary, mode: 0o777 } },
  ]);
  const blob = await blobOf(tar);
  const dest = await emptyDir();
  const res = await unpackLayerOnThread({ blobPath: blob.path, mediaType: GZIP, expected: blob.expected, dest });
  assert.deepEqual(res.impliedDirs ?? [], [], 'the replaced implied directories are no longer listed');
  await finishLayer(dest, { ...res, impliedDirs: [[Buffer.from('a')], [Buffer.from('a'), Buffer.from('b')]] }, [lower]);
  assert.equal((await fsp.stat(canary)).mode & 0o7777, 0o700, 'the canary outside the layer is untouched');
  assert.ok((await fsp.lstat(path.join(dest, 'a'))).isSymbolicLink());
});

test('issue-14 parallel unpack: refusals on the thread keep their code, message and layer', async () => {
  const tar = await tarOf([{ header: { name: 'ok', type: 'file', mode: 0o644 }, data: 'ok' }]);
  const blob = await blobOf(tar);
  const wrong = { ...blob.expected, diffId: sha(Buffer.from('other')) };
  await assert.rejects(unpackLayerOnThread({ blobPath: blob.path, mediaType: GZIP, expected: wrong, dest: await emptyDir() }), (err: unknown) => {
    assert.ok(err instanceof BerthError);
    assert.equal(err.code, 'ERR_DIGEST_MISMATCH');
    assert.match(err.message, new RegExp(`unpack layer ${blob.expected.digest}: uncompressed tar hashes to`));
    assert.equal(err.details['layer'], blob.expected.digest);
    return true;
  });
  const escape = await blobOf(await tarOf([{ header: { name: '../escape', type: 'file', mode: 0o644 }, data: 'x' }]));
  await assert.rejects(unpackLayerOnThread({ blobPath: escape.path, mediaType: GZIP, expected: escape.expected, dest: await emptyDir() }), (err: unknown) => {
    assert.ok(err instanceof BerthError);
    assert.equal(err.code, 'ERR_UNSAFE_CONTENT');
    assert.match(err.message, /'\.\.' component/);
    return true;
  });
});

test('issue-14 parallel unpack: an abort rejects with the caller\'s reason once the thread has stopped', async () => {
  const members = Array.from({ length: 3000 }, (_, i) => ({ header: { name: `d${i % 50}/f${i}`, type: 'file' as const, mode: 0o644 }, data: `file ${i}` }));
  const blob = await blobOf(await tarOf(members));
  const ac = new AbortController();
  const reason = new BerthError('ERR_TIMEOUT', 'test abort');
  const p = unpackLayerOnThread({ blobPath: blob.path, mediaType: GZIP, expected: blob.expected, dest: await emptyDir(), signal: ac.signal });
  setTimeout(() => ac.abort(reason), 5);
  await assert.rejects(p, (err: unknown) => err === reason);
});

test('issue-14 parallel unpack: two threads take five layers in turn; a layer aborted while it waits for a thread never runs', async () => {
  const threads = new UnpackThreads(2);
  try {
    const layers = await Promise.all(
      Array.from({ length: 5 }, async (_, i) => blobOf(await tarOf(Array.from({ length: 200 }, (_, j) => ({ header: { name: `l${i}/d${j % 7}/f${j}`, type: 'file' as const, mode: 0o644 }, data: `${i}:${j}` }))))),
    );
    const dests = await Promise.all(layers.map(() => emptyDir()));
    const ac = new AbortController();
    const reason = new BerthError('ERR_TIMEOUT', 'queued layer aborted');
    const runs = layers.map((l, i) =>
      threads.unpack({ blobPath: l.path, mediaType: GZIP, expected: l.expected, dest: dests[i] as string, ...(i === 4 ? { signal: ac.signal } : {}) }),
    );
    ac.abort(reason); // the fifth waits behind the first four on two threads
    const results = await Promise.allSettled(runs);
    for (const [i, r] of results.slice(0, 4).entries()) {
      assert.equal(r.status, 'fulfilled', `layer ${i}`);
      if (r.status === 'fulfilled') {
        assert.equal(r.value.entries, 200);
        assert.equal(r.value.diffId, layers[i]?.expected.diffId);
      }
      assert.equal((await listTree(dests[i] as string)).filter((line) => line.includes(' f ')).length, 200);
    }
    assert.deepEqual(results[4], { status: 'rejected', reason });
    assert.deepEqual(await fsp.readdir(dests[4] as string), [], 'the aborted layer wrote nothing');
  } finally {
    await threads.close();
  }
});

test('issue-14 parallel unpack: a layer unpacked on a thread writes nothing to stderr, one warning per file closed included (regression native-fd-closed-by-fs-warns)', async () => {
  // Files made in one openat2 by the addon were closed through fs, and node warned for each in a
  // worker ("File descriptor N closed but not opened in unmanaged mode"): 17.8k lines for the large
  // bench image, which filled a daemon's stderr pipe that nobody drained and failed the pull.
  const members = [{ header: { name: 'd/', type: 'directory' as const, mode: 0o755 } }];
  for (let i = 0; i < 50; i++) members.push({ header: { name: `d/f${i}`, type: 'file', mode: 0o644 }, data: `file ${i}\n` } as never);
  const blob = await blobOf(await tarOf(members));
  const dest = await emptyDir();
  const written: string[] = [];
  const original = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    written.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString());
    return (original as (c: string | Uint8Array, ...r: unknown[]) => boolean)(chunk, ...rest);
  }) as typeof process.stderr.write;
  const threads = new UnpackThreads(1);
  try {
    const res = await threads.unpack({ blobPath: blob.path, mediaType: GZIP, expected: blob.expected, dest });
    assert.equal(res.entries, 51);
    assert.equal(await fsp.readFile(path.join(dest, 'd/f49'), 'utf8'), 'file 49\n');
    await threads.close(); // the worker's stderr reaches this thread before its exit completes
    await new Promise((r) => setTimeout(r, 100));
  } finally {
    process.stderr.write = original;
    await threads.close();
  }
  assert.deepEqual(written.filter((l) => /Warning|closed but not opened/.test(l)), []);
});

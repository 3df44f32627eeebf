import { after, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { ContentStore } from '../../src/runtime/content/index.js';
import { sha256, parseDigest } from '../../src/lib/digest.js';
import { isCode } from '../helpers/codes.js';

/** Contract of the content store (rules C1, C2): verify → fsync → rename; idempotent; nothing partial. */

const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-content-'));
after(() => fsp.rm(dir, { recursive: true, force: true }));

async function fresh(): Promise<ContentStore> {
  const s = new ContentStore(mkdtempSync(path.join(dir, 's-')));
  await s.init();
  return s;
}

test('content: ingest stores bytes under their digest and is idempotent', async () => {
  const s = await fresh();
  const data = Buffer.from('hello berth');
  const d = sha256(data);
  assert.equal(await s.has(d), false);
  await s.ingest({ digest: d, size: data.length }, Readable.from([data.subarray(0, 3), data.subarray(3)]));
  assert.equal(await s.has(d), true);
  assert.deepEqual(await s.readSmall(d), data);
  await s.ingest({ digest: d, size: data.length }, Readable.from([data]));
  assert.deepEqual(await fsp.readdir(path.join(s.root, 'ingest')), []);
});

test('content: wrong digest, short body and long body commit nothing', async () => {
  const s = await fresh();
  const data = Buffer.from('payload');
  const d = sha256(data);
  const cases: [string, Buffer[], number][] = [
    ['wrong bytes', [Buffer.from('paylaod')], data.length],
    ['short', [data.subarray(0, 3)], data.length],
    ['long', [data, Buffer.from('x')], data.length],
  ];
  for (const [what, chunks, size] of cases) {
    await assert.rejects(s.ingest({ digest: d, size }, Readable.from(chunks)), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_DIGEST_MISMATCH', what);
      assert.match(err.message, new RegExp(d));
      return true;
    });
    assert.equal(await s.has(d), false, what);
    assert.deepEqual(await fsp.readdir(path.join(s.root, 'ingest')), [], `${what}: no temp file left`);
  }
});

test('content: digests are validated before they reach a path (C1)', () => {
  for (const bad of ['sha256:../../etc/passwd', 'sha256:ABC', 'md5:' + 'a'.repeat(32), 'sha256:' + 'a'.repeat(63), '']) {
    assert.throws(() => parseDigest(bad), (err: Error & { code?: string }) => err.code === 'ERR_INVALID_IMAGE');
  }
});

test('content: a read over the limit is refused; sweepIngest removes crash residue', async () => {
  const s = await fresh();
  const data = Buffer.alloc(100, 1);
  const d = sha256(data);
  await s.put({ digest: d, size: data.length }, data);
  await assert.rejects(s.readSmall(d, 50), /exceeds/);
  await fsp.writeFile(path.join(s.root, 'ingest', 'deadbeef.123'), 'partial');
  assert.equal(await s.sweepIngest(), 1);
  assert.deepEqual(await fsp.readdir(path.join(s.root, 'ingest')), []);
});

/** A store whose root is a fresh tmpfs of `size` (root only), unmounted when the test ends. */
async function onTmpfs(t: TestContext, size: string): Promise<{ s: ContentStore; mnt: string } | undefined> {
  if (process.getuid?.() !== 0) {
    t.skip('needs root to mount a tmpfs');
    return undefined;
  }
  const mnt = mkdtempSync(path.join(dir, 'tmpfs-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', mnt]);
  t.after(() => {
    execFileSync('umount', ['-l', mnt]);
  });
  const s = new ContentStore(mnt);
  await s.init();
  return { s, mnt };
}

const literally = (s: string): RegExp => new RegExp(s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));


test('regression: short-write — a blob larger than the free space fails with ERR_RESOURCE_EXHAUSTED naming the path, commits nothing', async (t) => {
  const fs = await onTmpfs(t, '64k');
  if (fs === undefined) return;
  const { s } = fs;
  const ingestDir = path.join(s.root, 'ingest');
  // One chunk: write(2) stores the first 64 KiB and returns short without an error; only a
  // second write fails. Counting received bytes committed the cut file under the digest.
  // Several chunks: the write after the disk filled fails with ENOSPC outright.
  const data = Buffer.alloc(100 * 1024, 7);
  const d = sha256(data);
  const chunked = Array.from({ length: 25 }, (_, i) => data.subarray(i * 4096, (i + 1) * 4096));
  for (const [what, chunks] of [['one chunk', [data]], ['4 KiB chunks', chunked]] as const) {
    await assert.rejects(s.ingest({ digest: d, size: data.length }, Readable.from(chunks)), isCode('ERR_RESOURCE_EXHAUSTED', /local disk/, literally(ingestDir)));
    assert.equal(await s.has(d), false, `${what}: nothing committed under the digest`);
    assert.deepEqual(await fsp.readdir(ingestDir), [], `${what}: no temp file left`);
  }
  // The same store takes a blob that fits: the failure left nothing behind that is in the way.
  const small = Buffer.alloc(10 * 1024, 1);
  await s.put({ digest: sha256(small), size: small.length }, small);
  assert.deepEqual(await s.readSmall(sha256(small)), small);
});

test('regression: short-write — commit refuses a temp file that is shorter on disk than what was written', async () => {
  const s = await fresh();
  const data = Buffer.alloc(8192, 3);
  const d = sha256(data);
  const w = await s.writer({ digest: d, size: data.length });
  await w.write(data);
  assert.equal(w.written, data.length);
  // The disk lost the tail behind the writer's back (what a short write nobody checked leaves).
  await fsp.truncate(w.tempPath, 4096);
  await assert.rejects(w.commit(), isCode('ERR_IO', /4096 bytes/, literally(w.tempPath)));
  assert.equal(await s.has(d), false);
  await w.abort();
  await w.abort();
  assert.deepEqual(await fsp.readdir(path.join(s.root, 'ingest')), []);
});

test('local-io-error-code: a read-only content store is ERR_IO naming the path, never a network error', async (t) => {
  const fs = await onTmpfs(t, '1m');
  if (fs === undefined) return;
  execFileSync('mount', ['-o', 'remount,ro', fs.mnt]);
  const data = Buffer.from('read-only');
  await assert.rejects(fs.s.put({ digest: sha256(data), size: data.length }, data), isCode('ERR_IO', /read-only/, literally(path.join(fs.s.root, 'ingest'))));
});

test('content: an aborted ingest destroys its source, commits nothing and leaves no temp file', async () => {
  const s = await fresh();
  const data = Buffer.alloc(4096, 9);
  const d = sha256(data);
  const ac = new AbortController();
  // A source that yields once, then waits for more like a stalled download.
  const source = new Readable({ read() {} });
  source.push(data.subarray(0, 1024));
  const ingest = s.ingest({ digest: d, size: data.length }, source, { signal: ac.signal });
  await new Promise((r) => setTimeout(r, 20));
  ac.abort(new Error('sibling failed'));
  await assert.rejects(ingest, /sibling failed/);
  assert.equal(source.destroyed, true);
  assert.equal(await s.has(d), false);
  assert.deepEqual(await fsp.readdir(path.join(s.root, 'ingest')), []);
});

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { ContentStore } from '../../src/runtime/content/index.js';
import { sha256, parseDigest } from '../../src/lib/digest.js';

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

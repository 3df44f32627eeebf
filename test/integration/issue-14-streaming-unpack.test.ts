import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, promises as fsp, writeSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { unpackLayer } from '../../src/runtime/unpack/index.js';
import { BlobFeed, feedSource, UnpackThreads } from '../../src/runtime/unpack/thread.js';
import { file, layerOf, tarOf } from '../helpers/hostile.js';

/**
 * Issue 14: a layer is extracted from the content store's partial file while it downloads
 * (BlobFeed, unpack/thread.ts). These tests feed a real worker thread a file that grows as a
 * download would write it, with no registry in between: the result must equal an unpack of the
 * whole blob, and an abort or a restart from zero while the thread waits for bytes must end it.
 */

const base = mkdtempSync(path.join(os.tmpdir(), 'berth-stream-'));
after(() => fsp.rm(base, { recursive: true, force: true }));
let n = 0;

function layer(): ReturnType<typeof layerOf> {
  return layerOf(tarOf(file('a/one.bin', randomBytes(300 * 1024)), file('a/b/two.bin', randomBytes(500 * 1024)), file('three.txt', 'three')));
}

/** A partial file and its feed, opened the way ImageService.fetchLayer does. */
async function partial(size: number): Promise<{ feed: BlobFeed; fd: number; dest: string }> {
  const dir = path.join(base, `t${++n}`);
  await fsp.mkdir(path.join(dir, 'dest'), { recursive: true });
  const f = path.join(dir, 'partial');
  const fd = openSync(f, 'w');
  const feed = new BlobFeed(size);
  feed.open(f, 0);
  return { feed, fd, dest: path.join(dir, 'dest') };
}

/** The layer unpacked on `threads` from the partial file behind `p.feed`; no committed blob exists to fall back on. */
function unpackFed(threads: UnpackThreads, l: ReturnType<typeof layerOf>, p: { feed: BlobFeed; dest: string }, signal?: AbortSignal): ReturnType<UnpackThreads['unpack']> {
  return threads.unpack({ blobPath: path.join(base, 'never-there'), feed: p.feed, mediaType: l.mediaType, expected: { digest: l.digest, size: l.size, diffId: l.diffId }, dest: p.dest, ...(signal !== undefined ? { signal } : {}) });
}

test('a layer fed while its file grows is unpacked and verified like the whole blob', { timeout: 30_000 }, async () => {
  const l = layer();
  const p = await partial(l.size);
  const threads = new UnpackThreads(1);
  try {
    const job = unpackFed(threads, l, p);
    for (let off = 0; off < l.size; ) {
      const len = Math.min(64 * 1024 + 17, l.size - off);
      off += writeSync(p.fd, l.blob, off, len, off);
      p.feed.advance(off);
      await sleep(2);
    }
    const res = await job;
    assert.equal(res.digest, l.digest);
    assert.equal(res.diffId, l.diffId);
    assert.equal(res.entries, 3);
    assert.equal((await fsp.stat(path.join(p.dest, 'a/b/two.bin'))).size, 500 * 1024);
    assert.equal(await fsp.readFile(path.join(p.dest, 'three.txt'), 'utf8'), 'three');
  } finally {
    closeSync(p.fd);
    await threads.close();
  }
});

test('an abort while the thread waits for more bytes ends the unpack; later feed updates are ignored', { timeout: 30_000 }, async () => {
  const l = layer();
  const p = await partial(l.size);
  const threads = new UnpackThreads(1);
  const ac = new AbortController();
  try {
    const third = Math.floor(l.size / 3);
    writeSync(p.fd, l.blob, 0, third, 0);
    p.feed.advance(third);
    const job = unpackFed(threads, l, p, ac.signal);
    job.catch(() => undefined);
    await sleep(200); // the thread has read the third and waits
    ac.abort(new Error('stopped by the test'));
    await assert.rejects(job, /stopped by the test/);
    // The download side goes on for a moment: nothing reads or crashes.
    writeSync(p.fd, l.blob, third, l.size - third, third);
    p.feed.advance(l.size);
    await sleep(100);
    // The same thread takes the next layer.
    const l2 = layer();
    const p2 = await partial(l2.size);
    writeSync(p2.fd, l2.blob, 0, l2.size, 0);
    p2.feed.advance(l2.size);
    const res = await unpackFed(threads, l2, p2);
    assert.equal(res.diffId, l2.diffId);
    assert.equal(threads.threadCount(), 1);
    closeSync(p2.fd);
  } finally {
    closeSync(p.fd);
    await threads.close();
  }
});

test('a restart from zero (reset) while the thread reads ends the unpack and says so', { timeout: 30_000 }, async () => {
  const l = layer();
  const p = await partial(l.size);
  const threads = new UnpackThreads(1);
  try {
    const half = Math.floor(l.size / 2);
    writeSync(p.fd, l.blob, 0, half, 0);
    p.feed.advance(half);
    const job = unpackFed(threads, l, p);
    job.catch(() => undefined);
    await sleep(200);
    p.feed.reset();
    await assert.rejects(job, /the download started again from zero/);
    assert.equal(p.feed.wasReset, true);
  } finally {
    closeSync(p.fd);
    await threads.close();
  }
});

// A single missing layer (a one-layer image, or a new top layer) is unpacked on the pulling thread,
// from the same partial file (feedSource), while it downloads.

test('one layer on this thread: fed while its file grows, unpacked and verified like the whole blob', { timeout: 30_000 }, async () => {
  const l = layer();
  const p = await partial(l.size);
  try {
    const source = feedSource(p.feed, l.digest);
    assert.ok(source !== undefined);
    const job = unpackLayer({ source, mediaType: l.mediaType, expected: { digest: l.digest, size: l.size, diffId: l.diffId }, dest: p.dest, sync: false });
    // The first 70 %: the first file (300 KiB of the ~800 KiB) is written before the rest exists.
    const seventy = Math.floor(l.size * 0.7);
    for (let off = 0; off < l.size; ) {
      const len = Math.min(64 * 1024 + 17, l.size - off);
      off += writeSync(p.fd, l.blob, off, len, off);
      p.feed.advance(off);
      await sleep(2);
      if (off >= seventy && off - len < seventy) {
        await sleep(100);
        assert.equal((await fsp.stat(path.join(p.dest, 'a/one.bin'))).size, 300 * 1024, 'extracted while the blob was still growing');
      }
    }
    const res = await job;
    assert.equal(res.digest, l.digest);
    assert.equal(res.diffId, l.diffId);
    assert.equal((await fsp.stat(path.join(p.dest, 'a/b/two.bin'))).size, 500 * 1024);
    assert.equal(await fsp.readFile(path.join(p.dest, 'three.txt'), 'utf8'), 'three');
  } finally {
    closeSync(p.fd);
  }
});

test('one layer on this thread: a restart from zero ends the read and says so; a committed blob gives no feed source', { timeout: 30_000 }, async () => {
  const l = layer();
  const p = await partial(l.size);
  try {
    const half = Math.floor(l.size / 2);
    writeSync(p.fd, l.blob, 0, half, 0);
    p.feed.advance(half);
    const source = feedSource(p.feed, l.digest);
    assert.ok(source !== undefined);
    const job = unpackLayer({ source, mediaType: l.mediaType, expected: { digest: l.digest, size: l.size, diffId: l.diffId }, dest: p.dest, sync: false });
    job.catch(() => undefined);
    await sleep(100);
    p.feed.reset();
    await assert.rejects(job, /the download started again from zero/);
    assert.equal(feedSource(p.feed, l.digest), undefined, 'no source once reset');
    // The partial file renamed away (committed): nothing to follow, the caller reads the blob.
    const q = await partial(l.size);
    closeSync(q.fd);
    await fsp.rename(q.feed.path as string, `${q.feed.path as string}.committed`);
    assert.equal(feedSource(q.feed, l.digest), undefined);
  } finally {
    closeSync(p.fd);
  }
});

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fsp, readdirSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import type { Digest } from '../../src/lib/digest.js';
import { UnpackThreads } from '../../src/runtime/unpack/thread.js';
import { packTar } from '../helpers/tar-pack.js';

/**
 * Issue 13 (daemon memory): an unpack thread is a V8 isolate of its own; one that waits for a
 * layer longer than `idleMs` exits, and the next layer starts one again. Checked on the process's
 * real threads (/proc/self/task), not only on the pool's bookkeeping.
 */

const GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
const work: string[] = [];
const sha = (b: Buffer): Digest => `sha256:${createHash('sha256').update(b).digest('hex')}` as Digest;
const osThreads = (): number => readdirSync('/proc/self/task').length;

after(async () => {
  for (const d of work) await fsp.rm(d, { recursive: true, force: true });
});

async function layer(name: string): Promise<{ blobPath: string; expected: { digest: Digest; size: number; diffId: Digest }; dest: string }> {
  const base = await fsp.mkdtemp(path.join(os.tmpdir(), 'berth-idle-thread-'));
  work.push(base);
  await fsp.chmod(base, 0o700);
  const tar = await packTar([
    { header: { name: `${name}/`, type: 'directory', mode: 0o755 } },
    { header: { name: `${name}/file`, type: 'file', mode: 0o644 }, data: `content of ${name}\n`.repeat(1000) },
  ]);
  const blob = gzipSync(tar);
  const blobPath = path.join(base, 'blob');
  await fsp.writeFile(blobPath, blob);
  const dest = path.join(base, 'fs');
  await fsp.mkdir(dest, { mode: 0o755 });
  return { blobPath, expected: { digest: sha(blob), size: blob.length, diffId: sha(tar) }, dest };
}

async function waitFor(what: string, ok: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('issue-13 unpack-thread-idle: idle unpack threads exit after idleMs and are started again on demand', async () => {
  const threads = new UnpackThreads(2, { idleMs: 300 });
  try {
    const [a, b] = await Promise.all([layer('a'), layer('b')]);
    const busy = Promise.all([a, b].map((l) => threads.unpack({ ...l, mediaType: GZIP })));
    const results = await busy;
    assert.deepEqual(
      results.map((r) => r.diffId),
      [a.expected.diffId, b.expected.diffId],
    );
    assert.equal(await fsp.readFile(path.join(a.dest, 'a/file'), 'utf8'), 'content of a\n'.repeat(1000));
    // Both threads were started and are kept for the next layer for now.
    assert.equal(threads.threadCount(), 2);
    const withThreads = osThreads();

    await waitFor('the idle threads to exit', () => threads.threadCount() === 0, 5000);
    // Their OS threads are gone too (a worker's thread ends a little after terminate() resolves).
    await waitFor('the OS threads to end', () => osThreads() <= withThreads - 2, 5000);

    // On demand again: one layer, one new thread.
    const c = await layer('c');
    const r = await threads.unpack({ ...c, mediaType: GZIP });
    assert.equal(r.diffId, c.expected.diffId);
    assert.equal(threads.threadCount(), 1);
  } finally {
    await threads.close();
  }
  assert.equal(threads.threadCount(), 0);
});

test('issue-13 unpack-thread-idle: a thread taken again before idleMs is reused, not restarted', async () => {
  const threads = new UnpackThreads(2, { idleMs: 60_000 });
  try {
    for (const name of ['d', 'e', 'f']) {
      const l = await layer(name);
      await threads.unpack({ ...l, mediaType: GZIP });
      assert.equal(threads.threadCount(), 1, `after layer ${name}`);
    }
  } finally {
    await threads.close();
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eachBounded } from '../../src/lib/bounded.js';
import { sleep } from '../../src/lib/time.js';

/**
 * Issue 14, "sibling-downloads-keep-running": the bounded runner used for the layers of a pull
 * kept the other downloads running after one failed, and the pull returned (and the state lock
 * was released) while they still wrote. The runner must abort the siblings and wait for them.
 */

test('regression: sibling-downloads-keep-running — a failure aborts the running siblings, starts no more, and rejects only after they settled', async () => {
  const events: string[] = [];
  const started: number[] = [];
  const run = eachBounded([0, 1, 2, 3, 4, 5], 3, async (i, signal) => {
    started.push(i);
    if (i === 1) {
      await sleep(10);
      events.push('1 failed');
      throw new Error('layer 1: 404');
    }
    // A slow download: runs until aborted, then takes a moment to close (like a socket).
    try {
      await sleep(60_000, signal);
    } finally {
      await sleep(20);
      events.push(`${i} settled (aborted: ${String(signal.aborted)})`);
    }
  });
  await assert.rejects(run, /layer 1: 404/, 'the first failure, not a sibling\'s abort');
  events.push('rejected');
  assert.deepEqual(started, [0, 1, 2], 'nothing starts after the failure');
  assert.deepEqual(events, ['1 failed', '0 settled (aborted: true)', '2 settled (aborted: true)', 'rejected']);
});

test('eachBounded: runs every item with at most `limit` at once, in order', async () => {
  let running = 0;
  let peak = 0;
  const done: number[] = [];
  await eachBounded([1, 2, 3, 4, 5, 6, 7], 3, async (i) => {
    running++;
    peak = Math.max(peak, running);
    await sleep(5 * (i % 3));
    running--;
    done.push(i);
  });
  assert.equal(peak, 3);
  assert.deepEqual(done.sort(), [1, 2, 3, 4, 5, 6, 7]);
  await eachBounded([], 3, () => Promise.reject(new Error('never called')));
});

test('eachBounded: the caller\'s abort reaches every running call and rejects with its reason after they settled', async () => {
  const ac = new AbortController();
  let settled = 0;
  const run = eachBounded([1, 2, 3], 2, async (_i, signal) => {
    try {
      await sleep(60_000, signal);
    } finally {
      settled++;
    }
  }, { signal: ac.signal });
  setTimeout(() => ac.abort(new Error('shutdown')), 10);
  await assert.rejects(run, /shutdown/);
  assert.equal(settled, 2, 'both running calls settled, the third never started');
});

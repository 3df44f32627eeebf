import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createLogger } from '../../src/lib/log.js';
import { LeaseManager } from '../../src/runtime/gc/leases.js';
import { thresholdProblem } from '../../src/runtime/gc/auto.js';
import { StateStore } from '../../src/runtime/state/index.js';

/**
 * The lease manager on a real state database (issue 14): the two in-process windows GC and a
 * pull share without a gate. A resource leased after GC began its sweep is never removed by it;
 * a lease added while GC removes that resource's file waits until the removal is done (so the
 * pull then sees the file gone and writes it again). Releasing deletes the row; a lease is
 * extended while held.
 */

const D = `sha256:${'a'.repeat(64)}`;

function withState(fn: (s: StateStore) => Promise<void>): () => Promise<void> {
  return async () => {
    const root = mkdtempSync(path.join(os.tmpdir(), 'berth-leases-'));
    const s = new StateStore(root);
    try {
      await fn(s);
    } finally {
      s.close();
      rmSync(root, { recursive: true, force: true });
    }
  };
}

describe('leases', () => {
  test('a lease is a row with its resources until released', withState(async (s) => {
    const m = new LeaseManager(s, createLogger('silent'));
    const l = m.create('pull');
    await l.add([{ kind: 'blob', id: D }, { kind: 'snapshot', id: D }]);
    assert.equal(m.held(), 1);
    assert.deepEqual(s.listLeases().map((x) => [x.id, x.resources.length]), [[l.id, 2]]);
    assert.ok((s.listLeases()[0]?.expiresAt ?? 0) > Date.now() + 59 * 60_000, 'expires in an hour');
    l.release();
    l.release();
    assert.equal(m.held(), 0);
    assert.deepEqual(s.listLeases(), []);
  }));

  test('held leases are extended before they expire', withState(async (s) => {
    const m = new LeaseManager(s, createLogger('silent'), 4000);
    const l = m.create('pull');
    const first = s.listLeases()[0]?.expiresAt ?? 0;
    await new Promise((r) => setTimeout(r, 1300));
    assert.ok((s.listLeases()[0]?.expiresAt ?? 0) > first, 'extended after TTL/4');
    l.release();
  }));

  test('gc-skips-resource-leased-during-sweep: a resource leased after the sweep began is not removed', withState(async (s) => {
    const m = new LeaseManager(s, createLogger('silent'));
    m.beginSweep();
    const l = m.create('pull');
    await l.add([{ kind: 'blob', id: D }]);
    l.release();
    let ran = false;
    assert.equal(await m.remove('blob', D, async () => void (ran = true)), false, 'even after the lease was released');
    assert.equal(ran, false);
    assert.equal(await m.remove('snapshot', D, async () => void (ran = true)), true, 'another kind is another resource');
    m.endSweep();
  }));

  test('lease-waits-for-removal-in-flight: adding a resource GC is removing waits until the removal is done', withState(async (s) => {
    const m = new LeaseManager(s, createLogger('silent'));
    m.beginSweep();
    let finish: () => void = () => undefined;
    let removed = false;
    const removal = m.remove('blob', D, () => new Promise<void>((r) => (finish = () => {
      removed = true;
      r();
    })));
    const l = m.create('pull');
    let added = false;
    const adding = l.add([{ kind: 'blob', id: D }]).then(() => (added = true));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(added, false, 'the lease waits while the file is being removed');
    finish();
    await adding;
    assert.equal(removed, true);
    assert.equal(await removal, true);
    // From now on the sweep leaves it alone.
    assert.equal(await m.remove('blob', D, async () => undefined), false);
    m.endSweep();
    l.release();
  }));

  test('image GC thresholds: 0 ≤ low < high ≤ 100', () => {
    assert.equal(thresholdProblem({ highPercent: 85, lowPercent: 80 }), undefined);
    assert.equal(thresholdProblem({ highPercent: 100, lowPercent: 0 }), undefined);
    assert.match(thresholdProblem({ highPercent: 80, lowPercent: 80 }) ?? '', /--image-gc-low-threshold 80 must be below --image-gc-high-threshold 80/);
    assert.match(thresholdProblem({ highPercent: 101, lowPercent: 80 }) ?? '', /--image-gc-high-threshold 101: must be a percentage from 0 to 100/);
  });
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeClock } from '../../src/lib/clock.js';
import { BerthError } from '../../src/lib/errors.js';
import { WorkQueue, type Handler, type Outcome } from '../../src/reconciler/queue.js';

interface Gate<T> {
  readonly promise: Promise<T>;
  readonly open: (v: T) => void;
}

function gate<T = Outcome>(): Gate<T> {
  let open!: (v: T) => void;
  const promise = new Promise<T>((r) => {
    open = r;
  });
  return { promise, open };
}

/** Records every call and how many runs of each key overlap. */
function recorder(clock: FakeClock, body: (key: string, n: number, signal: AbortSignal) => Promise<Outcome> | Outcome) {
  const calls: { key: string; at: number }[] = [];
  const running = new Map<string, number>();
  const maxPerKey = new Map<string, number>();
  const handler: Handler = async (key, signal) => {
    const n = calls.filter((c) => c.key === key).length + 1;
    calls.push({ key, at: clock.now() });
    running.set(key, (running.get(key) ?? 0) + 1);
    maxPerKey.set(key, Math.max(maxPerKey.get(key) ?? 0, running.get(key) ?? 0));
    try {
      return await body(key, n, signal);
    } finally {
      running.set(key, (running.get(key) ?? 1) - 1);
    }
  };
  const keys = (): string[] => calls.map((c) => c.key);
  return { calls, keys, maxPerKey, handler };
}

test('FakeClock fires due timers in time order, including ones scheduled by a fired callback', () => {
  const clock = new FakeClock(100);
  const fired: string[] = [];
  clock.setTimeout(() => fired.push('b@30'), 30);
  clock.setTimeout(() => {
    fired.push('a@10');
    clock.setTimeout(() => fired.push('c@15'), 5);
    clock.setTimeout(() => fired.push('late@60'), 50);
  }, 10);
  const cleared = clock.setTimeout(() => fired.push('cleared'), 20);
  clock.clearTimeout(cleared);
  clock.advance(40);
  assert.deepEqual(fired, ['a@10', 'c@15', 'b@30']);
  assert.equal(clock.now(), 140);
  assert.equal(clock.nextTimerAt(), 160);
  clock.advance(20);
  assert.deepEqual(fired, ['a@10', 'c@15', 'b@30', 'late@60']);
  assert.equal(clock.timerCount(), 0);
});

test('dedupe: a key added several times while waiting runs once', async () => {
  const clock = new FakeClock();
  const busy = gate();
  const r = recorder(clock, (key) => (key === 'pod/default/busy' ? busy.promise : {}));
  const q = new WorkQueue({ clock, workers: 1, handler: r.handler });
  q.add('pod/default/busy');
  await clock.advanceAsync(0);
  q.add('pod/default/a');
  q.add('pod/default/b');
  q.add('pod/default/a');
  q.add('pod/default/a');
  assert.equal(q.pending(), 2);
  busy.open({});
  await q.whenIdle();
  assert.deepEqual(r.keys(), ['pod/default/busy', 'pod/default/a', 'pod/default/b']);
});

test('an add while the key runs re-runs it once afterwards, never two runs of one key at a time', async () => {
  const clock = new FakeClock();
  const gates = [gate(), gate(), gate()];
  const r = recorder(clock, (_key, n) => gates[n - 1]?.promise ?? {});
  const q = new WorkQueue({ clock, workers: 4, handler: r.handler });
  q.add('pod/default/a');
  await clock.advanceAsync(0);
  q.add('pod/default/a');
  q.add('pod/default/a');
  await clock.advanceAsync(0);
  assert.equal(r.calls.length, 1, 'dirty key must wait for the current run');
  assert.equal(q.active(), 1);
  assert.equal(q.pending(), 0, 'a dirty running key is not also queued');
  gates[0]?.open({});
  await clock.advanceAsync(0);
  assert.equal(r.calls.length, 2, 'dirty key runs again after the run ends');
  gates[1]?.open({});
  await q.whenIdle();
  assert.equal(r.calls.length, 2, 'two adds during one run coalesce into one re-run');
  assert.equal(r.maxPerKey.get('pod/default/a'), 1);
});

test('retryable failures back off 1 s, 2 s, 4 s … capped at 300 s', async () => {
  const clock = new FakeClock();
  const delays: number[] = [];
  const r = recorder(clock, () => {
    throw new BerthError('ERR_NETWORK', 'pull: connection reset');
  });
  const q = new WorkQueue({
    clock,
    workers: 1,
    handler: r.handler,
    random: () => 0.5, // jitter factor exactly 1
    onError: (_key, _err, _attempt, delay) => delays.push(delay ?? -1),
  });
  q.add('image/x');
  await clock.advanceAsync(0);
  for (let i = 0; i < 11; i++) {
    const at = q.nextRetryAt('image/x');
    assert.ok(at !== undefined, `retry ${i + 1} scheduled`);
    await clock.advanceAsync(at - clock.now());
  }
  const expected = [1000, 2000, 4000, 8000, 16_000, 32_000, 64_000, 128_000, 256_000, 300_000, 300_000, 300_000];
  assert.deepEqual(delays, expected);
  const gaps = r.calls.slice(1).map((c, i) => c.at - (r.calls[i]?.at ?? 0));
  assert.deepEqual(gaps, expected.slice(0, 11));
  assert.equal(q.failures('image/x'), 12);
});

test('jitter stays within ± the fraction and never exceeds the cap', async () => {
  const cases: { random: number; first3: number[]; capped: number }[] = [
    { random: 0, first3: [900, 1800, 3600], capped: 270_000 },
    { random: 0.75, first3: [1050, 2100, 4200], capped: 300_000 },
    { random: 0.999_999, first3: [1100, 2200, 4400], capped: 300_000 },
  ];
  for (const c of cases) {
    const clock = new FakeClock();
    const delays: number[] = [];
    const q = new WorkQueue({
      clock,
      workers: 1,
      handler: () => Promise.reject(new Error('flaky')),
      random: () => c.random,
      onError: (_k, _e, _a, d) => delays.push(d ?? -1),
    });
    q.add('pod/default/a');
    await clock.advanceAsync(0);
    for (let i = 0; i < 11; i++) await clock.advanceAsync((q.nextRetryAt('pod/default/a') ?? 0) - clock.now());
    assert.deepEqual(delays.slice(0, 3), c.first3, `random=${c.random}`);
    assert.equal(delays[11], c.capped, `random=${c.random}`);
    for (const [i, d] of delays.entries()) {
      const nominal = Math.min(1000 * 2 ** i, 300_000);
      assert.ok(d >= nominal * 0.9 && d <= Math.min(nominal * 1.1, 300_000), `attempt ${i + 1}: ${d}`);
    }
  }
});

test('a terminal error is not retried and forgets the failure count; a retryable one is retried', async () => {
  const clock = new FakeClock();
  const reported: { key: string; attempt: number; delay: number | undefined }[] = [];
  const r = recorder(clock, (key) => {
    throw new BerthError(key === 'pod/default/bad' ? 'ERR_INVALID_MANIFEST' : 'ERR_RUNTIME', `reconcile ${key}: failed`);
  });
  const q = new WorkQueue({ clock, workers: 2, handler: r.handler, random: () => 0.5, onError: (key, _e, attempt, delay) => reported.push({ key, attempt, delay }) });
  q.add('pod/default/bad');
  q.add('pod/default/flaky');
  await clock.advanceAsync(0);
  assert.equal(q.nextRetryAt('pod/default/bad'), undefined);
  assert.equal(q.failures('pod/default/bad'), 0);
  assert.equal(q.nextRetryAt('pod/default/flaky'), 1000);
  assert.equal(q.failures('pod/default/flaky'), 1);
  await clock.advanceAsync(600_000);
  assert.equal(r.calls.filter((c) => c.key === 'pod/default/bad').length, 1);
  assert.ok(r.calls.filter((c) => c.key === 'pod/default/flaky').length > 5);
  assert.deepEqual(reported.find((e) => e.key === 'pod/default/bad'), { key: 'pod/default/bad', attempt: 1, delay: undefined });
});

test('success forgets the failure count, so the next failure starts again at the base delay', async () => {
  const clock = new FakeClock();
  const delays: number[] = [];
  const script = ['fail', 'fail', 'ok', 'fail'];
  const q = new WorkQueue({
    clock,
    workers: 1,
    random: () => 0.5,
    onError: (_k, _e, _a, d) => delays.push(d ?? -1),
    handler: async () => {
      if (script.shift() === 'fail') throw new Error('flaky');
      return {};
    },
  });
  q.add('pod/default/a');
  await clock.advanceAsync(0);
  await clock.advanceAsync(1000);
  assert.equal(q.failures('pod/default/a'), 2);
  await clock.advanceAsync(2000);
  assert.equal(q.failures('pod/default/a'), 0);
  assert.equal(q.nextRetryAt('pod/default/a'), undefined);
  q.add('pod/default/a');
  await clock.advanceAsync(0);
  assert.deepEqual(delays, [1000, 2000, 1000]);
  q.forget('pod/default/a');
  assert.equal(q.failures('pod/default/a'), 0);
});

test('requeueAfter re-adds the key after the delay; earliest pending time wins; add now beats a later time', async () => {
  const clock = new FakeClock();
  const r = recorder(clock, (key) => (key === 'pod/default/resync' ? { requeueAfter: 5000 } : {}));
  const q = new WorkQueue({ clock, workers: 2, handler: r.handler });
  q.add('pod/default/resync');
  await clock.advanceAsync(0);
  assert.equal(q.nextRetryAt('pod/default/resync'), 5000);
  await clock.advanceAsync(4999);
  assert.equal(r.calls.length, 1);
  await clock.advanceAsync(1);
  assert.deepEqual(r.calls, [{ key: 'pod/default/resync', at: 0 }, { key: 'pod/default/resync', at: 5000 }]);

  q.addAfter('pod/default/b', 5000);
  q.addAfter('pod/default/b', 2000);
  q.addAfter('pod/default/b', 8000);
  assert.equal(q.nextRetryAt('pod/default/b'), clock.now() + 2000);
  await clock.advanceAsync(10_000);
  assert.deepEqual(r.calls.filter((c) => c.key === 'pod/default/b').map((c) => c.at), [7000]);

  // One worker, held busy, so pod/default/c stays queued (not running) while we poke it.
  const busy = gate();
  const r2 = recorder(clock, (key) => (key === 'pod/default/busy' ? busy.promise : {}));
  const q2 = new WorkQueue({ clock, workers: 1, handler: r2.handler });
  q2.add('pod/default/busy');
  q2.addAfter('pod/default/c', 3000);
  q2.add('pod/default/c');
  assert.equal(q2.nextRetryAt('pod/default/c'), undefined, 'add now cancels the later time');
  q2.addAfter('pod/default/c', 1000);
  assert.equal(q2.nextRetryAt('pod/default/c'), undefined, 'a key queued now ignores a later time');
  await clock.advanceAsync(500);
  busy.open({});
  await clock.advanceAsync(10_000);
  assert.deepEqual(r2.calls.map((c) => [c.key, c.at]), [['pod/default/busy', 15_000], ['pod/default/c', 15_500]]);
});

test('pools: a pull that never finishes holds only the image pool; pods run on their own workers, FIFO', async () => {
  const clock = new FakeClock();
  const podGates = new Map([
    ['pod/default/a', gate()],
    ['pod/default/b', gate()],
  ]);
  const r = recorder(clock, (key) => {
    if (key === 'image/x') return new Promise<Outcome>(() => {});
    return podGates.get(key)?.promise ?? {};
  });
  const q = new WorkQueue({
    clock,
    workers: 2,
    pools: { pull: 1 },
    poolOf: (key) => (key.startsWith('image/') ? 'pull' : 'default'),
    handler: r.handler,
  });
  q.add('image/x');
  q.add('image/y');
  q.add('pod/default/a');
  q.add('pod/default/b');
  q.add('pod/default/c');
  await clock.advanceAsync(0);
  assert.deepEqual(r.keys().sort(), ['image/x', 'pod/default/a', 'pod/default/b']);
  assert.equal(q.active(), 3, 'both pod workers busy next to the hanging pull');
  assert.equal(q.pending(), 2, 'image/y waits for the pull pool, pod/default/c for a pod worker');
  const done = q.waitFor('pod/default/c');
  podGates.get('pod/default/a')?.open({});
  podGates.get('pod/default/b')?.open({});
  assert.deepEqual(await done, {});
  await q.whenIdle(['pod/default/a', 'pod/default/b', 'pod/default/c']);
  assert.deepEqual(r.keys().filter((k) => k.startsWith('pod/')), ['pod/default/a', 'pod/default/b', 'pod/default/c']);
  assert.ok(!r.keys().includes('image/y'), 'the pull pool has concurrency 1');
  // berth up's "converged" line waits for pod keys only: the hanging pull does not hold it back.
  let podsIdle = false;
  void q.whenIdle((k) => k.startsWith('pod/')).then(() => (podsIdle = true));
  let allIdle = false;
  void q.whenIdle().then(() => (allIdle = true));
  await clock.advanceAsync(0);
  assert.equal(podsIdle, true);
  assert.equal(allIdle, false, 'image/x still hangs');
});

test('whenIdle waits for queued and running keys, not for delayed retries', async () => {
  const clock = new FakeClock();
  const gates = new Map([
    ['pod/default/a', gate()],
    ['pod/default/b', gate()],
  ]);
  const q = new WorkQueue({
    clock,
    workers: 2,
    handler: async (key) => {
      const g = gates.get(key);
      if (g === undefined) throw new Error('flaky');
      return g.promise;
    },
  });
  const order: string[] = [];
  q.add('pod/default/a');
  q.add('pod/default/b');
  q.add('pod/default/flaky');
  const idleA = q.whenIdle(['pod/default/a']).then(() => order.push('a idle'));
  const idleAll = q.whenIdle().then(() => order.push('all idle'));
  await clock.advanceAsync(0);
  assert.deepEqual(order, []);
  gates.get('pod/default/a')?.open({});
  await idleA;
  assert.deepEqual(order, ['a idle']);
  gates.get('pod/default/b')?.open({});
  await idleAll;
  assert.deepEqual(order, ['a idle', 'all idle']);
  assert.ok(q.nextRetryAt('pod/default/flaky') !== undefined, 'the delayed retry is pending but does not count as busy');

  const ac = new AbortController();
  q.add('pod/default/flaky');
  const aborted = q.whenIdle(['pod/default/flaky'], ac.signal);
  ac.abort(new Error('deadline'));
  await assert.rejects(aborted, /deadline/);
});

test('waitFor resolves with the next run that starts after the call, its Outcome or its Error', async () => {
  const clock = new FakeClock();
  const gates = [gate(), gate()];
  const r = recorder(clock, async (key, n) => {
    if (key === 'pod/default/bad') throw new BerthError('ERR_INVALID_MANIFEST', 'bad');
    await gates[n - 1]?.promise;
    return { requeueAfter: n * 1000 };
  });
  const q = new WorkQueue({ clock, workers: 1, handler: r.handler });
  q.add('pod/default/a');
  await clock.advanceAsync(0);
  const w = q.waitFor('pod/default/a'); // run 1 already started: wait for run 2
  q.add('pod/default/a');
  let settled: Outcome | Error | undefined;
  void w.then((v) => (settled = v));
  gates[0]?.open({});
  await clock.advanceAsync(0);
  assert.equal(settled, undefined, 'run 1 started before waitFor');
  gates[1]?.open({});
  assert.deepEqual(await w, { requeueAfter: 2000 });

  q.add('pod/default/bad');
  const e = await q.waitFor('pod/default/bad');
  assert.ok(e instanceof BerthError && e.code === 'ERR_INVALID_MANIFEST');
});

test('a handler that throws synchronously or rejects with a non-error is retried and crashes nothing', async () => {
  const clock = new FakeClock();
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown): void => void unhandled.push(e);
  process.on('unhandledRejection', onUnhandled);
  try {
    const handler = ((key: string): Promise<Outcome> => {
      if (key === 'pod/default/sync') throw new Error('sync boom');
      return Promise.reject('string boom');
    }) as Handler;
    const q = new WorkQueue({
      clock,
      workers: 2,
      handler,
      onError: () => {
        throw new Error('logger broke');
      },
    });
    q.add('pod/default/sync');
    q.add('pod/default/str');
    const [a, b] = await Promise.all([q.waitFor('pod/default/sync'), q.waitFor('pod/default/str')]);
    assert.ok(a instanceof Error && a.message === 'sync boom');
    assert.ok(b instanceof Error && b.cause === 'string boom', String(b));
    assert.equal(q.failures('pod/default/sync'), 1);
    assert.equal(q.failures('pod/default/str'), 1);
    await clock.advanceAsync(0);
    assert.deepEqual(unhandled, []);
  } finally {
    process.off('unhandledRejection', onUnhandled);
  }
});

test('shutdown aborts running handlers only after the deadline and returns the keys still running', async () => {
  const clock = new FakeClock();
  const seen: AbortSignal[] = [];
  const q = new WorkQueue({
    clock,
    workers: 2,
    handler: (key, signal) => {
      seen.push(signal);
      if (key === 'pod/default/quick') return new Promise((r) => clock.setTimeout(() => r({}), 1000));
      return new Promise((_r, reject) => signal.addEventListener('abort', () => reject(signal.reason)));
    },
  });
  q.add('pod/default/quick');
  q.add('pod/default/stuck');
  q.add('pod/default/queued');
  await clock.advanceAsync(0);
  const waiter = q.waitFor('pod/default/queued');
  let result: string[] | undefined;
  const done = q.shutdown(5000).then((keys) => (result = keys));
  assert.equal(q.shutdown(1), q.shutdown(5000), 'shutdown is idempotent');
  const w = await waiter;
  assert.ok(w instanceof Error && w.name === 'AbortError', 'a waiter whose run never started is released');
  q.add('pod/default/late');
  await clock.advanceAsync(4999);
  assert.equal(q.pending(), 0);
  assert.equal(seen.length, 2, 'no new work after shutdown');
  assert.deepEqual(seen.map((s) => s.aborted), [false, false]);
  assert.equal(result, undefined);
  await clock.advanceAsync(1);
  await done;
  assert.equal(seen[1]?.aborted, true);
  assert.equal(seen[0]?.aborted, false, 'the handler that finished in time is not aborted');
  assert.deepEqual(result, ['pod/default/stuck']);
  assert.equal(q.active(), 0, 'the aborted handler unwound');
  assert.equal(clock.timerCount(), 0, 'no retry timer left behind');
});

test('shutdown resolves early with no keys when handlers finish before the deadline', async () => {
  const clock = new FakeClock();
  const g = gate();
  let signal: AbortSignal | undefined;
  const q = new WorkQueue({
    clock,
    workers: 1,
    handler: (_k, s) => {
      signal = s;
      return g.promise;
    },
  });
  q.add('pod/default/a');
  await clock.advanceAsync(0);
  const done = q.shutdown(60_000);
  g.open({ requeueAfter: 1000 });
  assert.deepEqual(await done, []);
  assert.equal(signal?.aborted, false);
  assert.equal(clock.timerCount(), 0, 'deadline timer cleared and no requeue after shutdown');
});

test('shutdown in the same turn as add(k); waitFor(k) still runs the taken key and reports its result', async () => {
  const clock = new FakeClock();
  const q = new WorkQueue({ clock, workers: 1, handler: async () => ({ requeueAfter: 7 }) });
  q.add('pod/default/a');
  q.add('pod/default/b');
  const a = q.waitFor('pod/default/a');
  const b = q.waitFor('pod/default/b');
  const done = q.shutdown(1000);
  assert.deepEqual(await a, { requeueAfter: 7 }, 'a was taken by a worker before shutdown');
  const rb = await b;
  assert.ok(rb instanceof Error && rb.name === 'AbortError', 'b was only queued, so it never runs');
  assert.deepEqual(await done, []);
});

test('regression shutdown-releases-lock-under-running-steps: after the deadline aborts a run, shutdown waits for it to return (bounded)', async () => {
  const clock = new FakeClock();
  let finished = false;
  const q = new WorkQueue({
    clock,
    workers: 2,
    handler: (key, signal) =>
      new Promise((resolve) => {
        // A step that notices the abort only when its current external call ends, 2 s later;
        // the other never returns at all.
        if (key === 'pod/default/never') return;
        signal.addEventListener('abort', () => clock.setTimeout(() => ((finished = true), resolve({})), 2000));
      }),
  });
  q.add('pod/default/slow');
  await clock.advanceAsync(0);
  let result: string[] | undefined;
  const done = q.shutdown(1000).then((k) => (result = k));
  await clock.advanceAsync(1000);
  assert.equal(result, undefined, 'not resolved while the aborted run is still unwinding');
  await clock.advanceAsync(2000);
  await done;
  assert.ok(finished);
  assert.deepEqual(result, ['pod/default/slow']);
  assert.equal(q.active(), 0);

  const q2 = new WorkQueue({ clock, workers: 1, handler: () => new Promise(() => undefined) });
  q2.add('pod/default/never');
  await clock.advanceAsync(0);
  let r2: string[] | undefined;
  const done2 = q2.shutdown(100).then((k) => (r2 = k));
  await clock.advanceAsync(100);
  assert.equal(r2, undefined);
  await clock.advanceAsync(5000);
  await done2;
  assert.deepEqual(r2, ['pod/default/never'], 'named as still running once the wait is over');
  assert.equal(q2.active(), 1);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Prober } from '../../src/reconciler/prober.js';
import type { DesiredContainer, DesiredPod, DesiredProbe } from '../../src/reconciler/desired.js';
import type { Runtime } from '../../src/runtime/index.js';
import { createLogger } from '../../src/lib/log.js';

/**
 * The prober's scheduling, with a runtime that only answers probes (the e2e probes test runs
 * them against real containers): how many timers a worker keeps, and when the first probe runs.
 */
function fakeRuntime(calls: number[]): Runtime {
  return {
    runHandler: async () => {
      calls.push(Date.now());
      return { ok: true, message: '' };
    },
    addEvent: () => undefined,
  } as unknown as Runtime;
}

const probe = (o: Partial<DesiredProbe>): DesiredProbe => ({ exec: { command: ['true'] }, initialDelayMs: 0, periodMs: 5, timeoutMs: 1000, successThreshold: 1, failureThreshold: 3, ...o });

function podWith(c: DesiredContainer): DesiredPod {
  return {
    key: 'default/p', kind: 'Pod', namespace: 'default', name: 'p', source: '/m/p.yaml', line: 1, podHash: 'h', hostNetwork: true,
    restartPolicy: 'Always', gracePeriodMs: 1000, labels: {}, annotations: {}, paused: false, containers: [c],
  } as DesiredPod;
}

const container = (probes: NonNullable<DesiredContainer['probes']>): DesiredContainer => ({ name: 'c', image: 'i', pullPolicy: 'IfNotPresent', specHash: 's', env: [], ports: [], probes });

test('regression prober-keeps-every-timer: a worker holds one pending timer per probe however long it runs', async () => {
  const calls: number[] = [];
  const prober = new Prober(fakeRuntime(calls), createLogger('silent'), () => undefined);
  prober.sync(podWith(container({ liveness: probe({}), readiness: probe({}) })), [{ id: 'c1', name: 'c', startedAt: Date.now() }]);
  await new Promise((r) => setTimeout(r, 200));
  const w = (prober as unknown as { workers: Map<string, { timers: Map<string, unknown> }> }).workers.get('c1');
  prober.stopPod();
  assert.ok(calls.length >= 10, `probes ran: ${calls.length}`);
  assert.ok(w !== undefined && w.timers.size === 0, 'stop clears them');
  // While running: sampled above before the stop would be racy; count through a fresh worker.
  const again = new Prober(fakeRuntime([]), createLogger('silent'), () => undefined);
  again.sync(podWith(container({ liveness: probe({}), readiness: probe({}) })), [{ id: 'c2', name: 'c', startedAt: Date.now() }]);
  await new Promise((r) => setTimeout(r, 200));
  const w2 = (again as unknown as { workers: Map<string, { timers: Map<string, unknown> }> }).workers.get('c2');
  assert.ok(w2 !== undefined && w2.timers.size <= 2, `pending timers: ${w2?.timers.size}`);
  again.stopPod();
});

test('regression probe-initial-delay-from-container-start: initialDelaySeconds counts from the container start', async () => {
  const calls: number[] = [];
  const prober = new Prober(fakeRuntime(calls), createLogger('silent'), () => undefined);
  const began = Date.now();
  // Started 40 s ago (a daemon restart, or a slow startup probe): a 30 s initial delay is over.
  prober.sync(podWith(container({ liveness: probe({ initialDelayMs: 30_000, periodMs: 10_000 }) })), [{ id: 'c1', name: 'c', startedAt: began - 40_000 }]);
  await new Promise((r) => setTimeout(r, 100));
  prober.stopPod();
  assert.equal(calls.length, 1, 'probed at once');
  // Started just now: the first probe waits for the delay.
  const later: number[] = [];
  const fresh = new Prober(fakeRuntime(later), createLogger('silent'), () => undefined);
  fresh.sync(podWith(container({ liveness: probe({ initialDelayMs: 30_000 }) })), [{ id: 'c2', name: 'c', startedAt: Date.now() }]);
  await new Promise((r) => setTimeout(r, 100));
  fresh.stopPod();
  assert.equal(later.length, 0);
});

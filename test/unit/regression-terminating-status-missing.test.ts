import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildDescription, renderDescription } from '../../src/reconciler/describe.js';
import type { DesiredPod } from '../../src/reconciler/desired.js';
import { buildStatus } from '../../src/reconciler/status.js';
import type { ObservedContainer, ObservedPod } from '../../src/runtime/index.js';
import { StateStore } from '../../src/runtime/state/index.js';
import { validateStatus } from '../helpers/berth-schemas.js';

/**
 * Regression terminating-status-missing: a pod whose deletion waited out a long grace period
 * read `0/1 Running` in status and `Status: Running` in describe. kubectl shows Terminating (and
 * describe `Terminating (lasts …)`) from the deletionTimestamp on, unless the pod had already
 * ended. berth records that time on the pod row before it stops anything (a real SQLite store here).
 */

const pod: DesiredPod = {
  key: 'default/slow', kind: 'Pod', namespace: 'default', name: 'slow', source: '/m/slow.yaml', line: 1, podHash: 'p',
  hostNetwork: true, restartPolicy: 'OnFailure', gracePeriodMs: 30_000, labels: {}, annotations: {}, paused: false,
  containers: [{ name: 'app', image: 'r/x:1', pullPolicy: 'IfNotPresent', specHash: 'h', env: [], ports: [] }],
};

const row = (state: 'removing' | 'exited', exitCode: number | null): ObservedContainer => ({
  id: 'default.slow.app.h-0', podKey: 'default/slow', name: 'app', specHash: 'h', imageRef: 'r/x:1', imageDigest: 'sha256:aa' as never,
  state, pid: state === 'removing' ? 42 : null, pidStart: null, exitCode, createdAt: 1000, startedAt: 1000, finishedAt: state === 'exited' ? 3000 : null,
  attempt: 0, reason: exitCode === 0 ? 'Completed' : null, live: state !== 'exited',
});

const ready = [{ key: 'pod/default/slow', type: 'Ready', status: 'True' as const, reason: 'Running', message: '1/1 containers running', observedGeneration: 1, lastTransitionTime: 2000 }];

function read(containers: ObservedContainer[], deletionTimestamp: number | null) {
  const observed: ObservedPod = { key: pod.key, namespace: 'default', name: 'slow', source: pod.source, podHash: 'p', spec: JSON.stringify(pod), createdAt: 500, generation: 1, deletionTimestamp, containers };
  const report = buildStatus({ pods: [observed], restarts: [], conditions: ready, now: 5000, daemon: null });
  assert.deepEqual(validateStatus(report), []);
  const status = report.pods[0];
  assert.ok(status !== undefined);
  return { status, text: renderDescription(buildDescription({ pod: observed, status, restarts: [], images: {}, events: [] }), 5000) };
}

test('regression terminating-status-missing: a pod being deleted is Terminating in status and describe, with the time left', () => {
  const { status, text } = read([row('removing', null)], 25_000);
  assert.equal(status.status, 'Terminating');
  assert.equal(status.deletionTimestamp, new Date(25_000).toISOString());
  assert.match(text, /^Status:\s+Terminating \(lasts 20s\)$/m);
  assert.doesNotMatch(text, /^Reason:/m);
  // Not being deleted: as before.
  assert.equal(read([row('removing', null)], null).status.status, 'Running');
});

test('regression terminating-status-missing: a pod that had already ended keeps its word while it is deleted (kubectl: terminal phase)', () => {
  const done = [{ ...ready[0]!, status: 'False' as const, reason: 'Completed', message: '' }];
  const observed: ObservedPod = { key: pod.key, namespace: 'default', name: 'slow', source: pod.source, podHash: 'p', spec: JSON.stringify(pod), createdAt: 500, generation: 1, deletionTimestamp: 25_000, containers: [row('exited', 0)] };
  assert.equal(buildStatus({ pods: [observed], restarts: [], conditions: done, now: 5000, daemon: null }).pods[0]?.status, 'Completed');
});

test('regression terminating-status-missing: the state store records the deletion on the pod row; applying the pod again clears it', () => {
  const root = mkdtempSync(path.join(os.tmpdir(), 'berth-term-'));
  const s = new StateStore(root);
  try {
    const rec = { key: 'default/slow', namespace: 'default', name: 'slow', source: '/m/slow.yaml', podHash: 'p', spec: '{}', createdAt: 1 };
    s.upsertPod(rec);
    assert.equal(s.getPod('default/slow')?.deletionTimestamp, null);
    s.markPodDeleting('default/slow', 31_000);
    assert.equal(s.getPod('default/slow')?.deletionTimestamp, 31_000);
    s.upsertPod(rec);
    assert.equal(s.getPod('default/slow')?.deletionTimestamp, null);
  } finally {
    s.close();
    rmSync(root, { recursive: true, force: true });
  }
});

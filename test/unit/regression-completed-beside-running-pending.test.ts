import { test } from 'node:test';
import assert from 'node:assert/strict';
import { podVerdict } from '../../src/reconciler/conditions.js';
import { buildDescription } from '../../src/reconciler/describe.js';
import type { DesiredContainer, DesiredPod, RestartPolicy } from '../../src/reconciler/desired.js';
import { buildStatus } from '../../src/reconciler/status.js';
import type { ObservedContainer, ObservedPod } from '../../src/runtime/index.js';
import { validateStatus } from '../helpers/berth-schemas.js';

/**
 * Regression completed-beside-running-pending: with restartPolicy OnFailure, container `done`
 * exited 0 and `long` still running, the pod read `1/2 Pending` with Reconciling=True for ever,
 * though nothing was left to do. The kubelet's phase for it is Running, and kubectl's printPod
 * shows STATUS NotReady (a Completed container beside a running one, the pod not Ready), READY
 * 1/2; a container that failed for good under Never beside a running one shows Error.
 */

const c = (name: string): DesiredContainer => ({ name, image: 'r/x:1', pullPolicy: 'IfNotPresent', specHash: `h-${name}`, env: [], ports: [] });

const desired = (restartPolicy: RestartPolicy): DesiredPod => ({
  key: 'default/job', kind: 'Pod', namespace: 'default', name: 'job', source: '/m/job.yaml', line: 1, podHash: 'p',
  hostNetwork: true, restartPolicy, gracePeriodMs: 1000, labels: {}, annotations: {}, paused: false,
  containers: [c('done'), c('long')],
});

const row = (name: string, state: 'running' | 'exited', exitCode: number | null = null): ObservedContainer => ({
  id: `default.job.${name}.h-0`, podKey: 'default/job', name, specHash: `h-${name}`, imageRef: 'r/x:1', imageDigest: 'sha256:aa' as never,
  state, pid: state === 'running' ? 42 : null, pidStart: null, exitCode, createdAt: 1000, startedAt: 1000, finishedAt: state === 'exited' ? 3000 : null,
  attempt: 0, reason: state === 'exited' ? (exitCode === 0 ? 'Completed' : 'Error') : null, live: state === 'running',
});

function read(pod: DesiredPod, rows: ObservedContainer[]) {
  const observed: ObservedPod = { key: pod.key, namespace: 'default', name: 'job', source: pod.source, podHash: 'p', spec: JSON.stringify(pod), createdAt: 500, generation: 1, containers: rows };
  const v = podVerdict({ desired: pod, observed: { key: pod.key, source: pod.source, podHash: 'p', spec: observed.spec, containers: rows }, generation: 1, images: [], waiting: [], failed: [], blocked: [], invalid: [] });
  const report = buildStatus({ pods: [observed], restarts: [], conditions: v.conditions.map((x) => ({ ...x, key: 'pod/default/job', lastTransitionTime: 4000 })), now: 5000, daemon: null });
  assert.deepEqual(validateStatus(report), []);
  const status = report.pods[0];
  assert.ok(status !== undefined);
  const d = buildDescription({ pod: observed, status, restarts: [], images: {}, events: [] });
  return { v, status, d };
}

test('regression completed-beside-running-pending: OnFailure, one container completed and one running reads NotReady 1/2, phase Running, settled', () => {
  const { v, status, d } = read(desired('OnFailure'), [row('done', 'exited', 0), row('long', 'running')]);
  assert.equal(v.phase, 'NotReady');
  assert.deepEqual(v.conditions.map((x) => [x.type, x.status]), [['Ready', 'False'], ['Reconciling', 'False'], ['Stalled', 'False'], ['InvalidSpec', 'False']]);
  assert.equal(status.status, 'NotReady');
  assert.equal(status.ready, '1/2');
  assert.equal(d.phase, 'Running');
  // Under Never the same: a completed container is not run again.
  assert.equal(read(desired('Never'), [row('done', 'exited', 0), row('long', 'running')]).status.status, 'NotReady');
});

test('regression completed-beside-running-pending: Never, one container failed and one running reads Error, phase Running, settled', () => {
  const { v, status, d } = read(desired('Never'), [row('done', 'exited', 2), row('long', 'running')]);
  assert.equal(status.status, 'Error');
  assert.equal(status.ready, '1/2');
  assert.match(status.lastError, /done exited with code 2/);
  assert.equal(v.conditions.find((x) => x.type === 'Reconciling')?.status, 'False');
  assert.equal(d.phase, 'Running');
});

test('regression completed-beside-running-pending: a container the policy restarts is still pending work (Always: a completed one runs again)', () => {
  const { v } = read(desired('Always'), [row('done', 'exited', 0), row('long', 'running')]);
  assert.equal(v.phase, 'Pending');
  assert.equal(v.conditions.find((x) => x.type === 'Reconciling')?.status, 'True');
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { podVerdict } from '../../src/reconciler/conditions.js';
import { buildDescription, renderDescription } from '../../src/reconciler/describe.js';
import type { DesiredContainer, DesiredPod, RestartPolicy } from '../../src/reconciler/desired.js';
import type { Plan } from '../../src/reconciler/plan.js';
import { buildStatus } from '../../src/reconciler/status.js';
import type { ObservedContainer, ObservedPod, RestartRecord } from '../../src/runtime/index.js';
import { validateStatus } from '../helpers/berth-schemas.js';

/**
 * Regression init-status-hidden: init containers were invisible to status and describe. A pod
 * whose init container ran showed `Pending` ("0/1 containers running"), one whose init container
 * crash-looped `CrashLoopBackOff` with RESTARTS 0 and no next try, one whose init container failed
 * under restartPolicy Never `Error`; describe said Running (or Pending for the failed one), had no
 * "Init Containers:" section and gave the app container the pod's word as its waiting reason. Now
 * they read as kubectl's printPod and the kubelet's getPhase read the same pod.
 */

const c = (name: string, specHash: string): DesiredContainer => ({ name, image: 'r/x:1', pullPolicy: 'IfNotPresent', specHash, env: [], ports: [] });

const desired = (restartPolicy: RestartPolicy, inits: string[] = ['setup']): DesiredPod => ({
  key: 'default/web', kind: 'Pod', namespace: 'default', name: 'web', source: '/m/web.yaml', line: 1, podHash: 'p',
  hostNetwork: true, restartPolicy, gracePeriodMs: 1000, labels: {}, annotations: {}, paused: false,
  initContainers: inits.map((n) => c(n, `h-${n}`)),
  containers: [c('app', 'h-app')],
});

type Row = ObservedContainer;
const row = (name: string, state: 'running' | 'exited', exitCode: number | null = null, attempt = 0): Row => ({
  id: `default.web.${name}.h-${attempt}`, podKey: 'default/web', name, specHash: `h-${name}`, imageRef: 'r/x:1', imageDigest: 'sha256:aa' as never,
  state, pid: state === 'running' ? 42 : null, pidStart: null, exitCode, createdAt: 1000, startedAt: 1000, finishedAt: state === 'exited' ? 3000 : null,
  attempt, reason: state === 'exited' ? (exitCode === 0 ? 'Completed' : 'Error') : null, live: state === 'running',
});

const NOW = 5000;

/** Status and description of the pod as the controller would have left it: the verdict's conditions stored. */
function read(pod: DesiredPod, rows: Row[], restarts: RestartRecord[], plan: { waiting?: NonNullable<Plan['waiting']>; blocked?: Plan['blocked'] } = {}) {
  const observed: ObservedPod = { key: pod.key, namespace: 'default', name: 'web', source: pod.source, podHash: 'p', spec: JSON.stringify(pod), createdAt: 500, generation: 1, containers: rows };
  const view = { key: pod.key, source: pod.source, podHash: 'p', spec: observed.spec, containers: rows.map((r) => ({ ...r, state: r.state })) };
  const v = podVerdict({ desired: pod, observed: view, generation: 1, images: [], waiting: plan.waiting ?? [], failed: [], blocked: plan.blocked ?? [], invalid: [] });
  const report = buildStatus({ pods: [observed], restarts, conditions: v.conditions.map((x) => ({ ...x, key: 'pod/default/web', lastTransitionTime: 4000 })), now: NOW, daemon: null });
  assert.deepEqual(validateStatus(report), []);
  const status = report.pods[0];
  assert.ok(status !== undefined);
  const none = { digest: 'sha256:aa', entrypoint: [], cmd: ['sh'], effective: ['sh'] };
  const d = buildDescription({ pod: observed, status, restarts, images: { setup: none, second: none, app: none }, events: [] });
  return { v, status, d, text: renderDescription(d, NOW) };
}

const restart = (name: string, restarts: number, backoffMs: number): RestartRecord => ({
  podKey: 'default/web', name, restarts, nextAttempt: restarts + 1, backoffMs, lastId: `default.web.${name}.h-${restarts}`, lastExitCode: 1, lastReason: 'Error', lastStartedAt: 1000, lastFinishedAt: 3000,
});

test('regression init-status-hidden: a running init container is Init:0/1; the pod is Pending, the app container PodInitializing', () => {
  const { v, status, d, text } = read(desired('Always'), [row('setup', 'running')], []);
  assert.equal(v.conditions.find((x) => x.type === 'Ready')?.message, 'containers with incomplete status: [setup]');
  assert.equal(status.status, 'Init:0/1');
  assert.equal(status.ready, '0/1');
  assert.deepEqual(status.initContainers.map((x) => [x.name, x.state]), [['setup', 'running']]);
  assert.equal(d.phase, 'Pending');
  assert.deepEqual([d.initContainers[0]?.state, d.containers[0]?.state, d.containers[0]?.stateReason], ['Running', 'Waiting', 'PodInitializing']);
  assert.match(text, /^Init Containers:\n {2}setup:\n(.*\n)*? {4}State:\s+Running\n/m);
  assert.match(text, /^Containers:\n {2}app:\n(.*\n)*? {4}State:\s+Waiting\n {6}Reason:\s+PodInitializing\n/m);
  assert.ok(text.indexOf('Init Containers:') < text.indexOf('\nContainers:'));
});

test('regression init-status-hidden: the second of two init containers running is Init:1/2', () => {
  const { status } = read(desired('Always', ['setup', 'second']), [row('setup', 'exited', 0), row('second', 'running')], []);
  assert.equal(status.status, 'Init:1/2');
});

test('regression init-status-hidden: a crash-looping init container is Init:CrashLoopBackOff with its restarts and next try; the pod is Pending', () => {
  const waiting = [{ key: 'default/web/setup', reason: 'CrashLoopBackOff' as const, until: 23_000, message: 'init container exited with code 1; back-off 20s restarting failed init container' }];
  const { status, d, text } = read(desired('OnFailure'), [row('setup', 'exited', 1, 2)], [restart('setup', 2, 20_000)], { waiting });
  assert.equal(status.status, 'Init:CrashLoopBackOff');
  assert.equal(status.restarts, 2);
  assert.equal(status.nextTryAt, new Date(23_000).toISOString());
  assert.equal(d.phase, 'Pending');
  assert.deepEqual([d.initContainers[0]?.state, d.initContainers[0]?.stateReason, d.initContainers[0]?.restarts], ['Waiting', 'CrashLoopBackOff', 2]);
  assert.deepEqual([d.containers[0]?.state, d.containers[0]?.stateReason], ['Waiting', 'PodInitializing']);
  assert.match(text, /^Status:\s+Pending$/m);
});

test('regression init-status-hidden: an init container failed under restartPolicy Never is Init:Error and the pod Failed', () => {
  const blocked = [{ key: 'default/web/setup', reason: 'init container setup failed with exit code 1 and restartPolicy is Never', failed: true as const }];
  const { status, d } = read(desired('Never'), [row('setup', 'exited', 1)], [], { blocked });
  assert.equal(status.status, 'Init:Error');
  assert.equal(d.phase, 'Failed');
  assert.deepEqual([d.initContainers[0]?.state, d.initContainers[0]?.terminated?.exitCode], ['Terminated', 1]);
  assert.deepEqual([d.containers[0]?.state, d.containers[0]?.stateReason], ['Waiting', 'PodInitializing']);
  // No reason recorded: kubectl's Init:ExitCode:N.
  const bare = read(desired('Never'), [{ ...row('setup', 'exited', 3), reason: null }], [], { blocked }).status;
  assert.equal(bare.status, 'Init:ExitCode:3');
});

test('regression init-status-hidden: past its init containers the pod is Running and RESTARTS counts the app containers only', () => {
  const { status, d, text } = read(desired('OnFailure'), [row('setup', 'exited', 0, 1), row('app', 'running')], [restart('setup', 1, 1000)]);
  assert.equal(status.status, 'Running');
  assert.equal(status.restarts, 0);
  assert.equal(d.phase, 'Running');
  assert.deepEqual([d.initContainers[0]?.state, d.initContainers[0]?.stateReason], ['Terminated', 'Completed']);
  assert.match(text, /^Init Containers:\n {2}setup:\n(.*\n)*? {4}State:\s+Terminated\n {6}Reason:\s+Completed\n/m);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DURATION_BUCKETS, Metrics, parseMetricsAddr, type MetricsSource } from '../../src/daemon/metrics.js';
import type { KeyReport } from '../../src/reconciler/controller.js';
import type { DesiredContainer, DesiredPod } from '../../src/reconciler/desired.js';
import { plan, type Step } from '../../src/reconciler/plan.js';
import type { ContainerStatus, PodStatus, StatusReport } from '../../src/reconciler/status.js';
import { parsePrometheus, sampleValue } from '../helpers/prom.js';

test('metrics: --metrics-addr takes only loopback addresses (the API is the unix socket)', () => {
  assert.deepEqual(parseMetricsAddr('127.0.0.1:9464'), { host: '127.0.0.1', port: 9464 });
  assert.deepEqual(parseMetricsAddr('[::1]:9464'), { host: '::1', port: 9464 });
  for (const bad of ['0.0.0.0:9464', '10.0.0.1:9464', '[::]:9464', '192.168.1.2:80', '127.0.0.1', '127.0.0.1:0', '127.0.0.1:70000', ':9464', 'example.com:9464']) {
    assert.throws(() => parseMetricsAddr(bad), { code: 'ERR_INVALID_ARGUMENT' }, bad);
  }
});

// Data for Metrics.render: a status report as the daemon's status() gives it, and the
// reports the controller emits, with steps from the real planner. Nothing here stands in
// for a component.

const IMG = '127.0.0.1:5000/berth/demo:1.0';
const ctr: DesiredContainer = { name: 'app', image: IMG, pullPolicy: 'IfNotPresent', specHash: 'h1', env: [], ports: [] };
const pod: DesiredPod = {
  key: 'default/web', kind: 'Pod', namespace: 'default', name: 'web', source: '/m/web.yaml', line: 1, podHash: 'ph',
  hostNetwork: true, restartPolicy: 'Always', gracePeriodMs: 1000, labels: {}, annotations: {}, paused: false, containers: [ctr],
};

function container(name: string, state: string): ContainerStatus {
  return { name, id: state === 'waiting' ? null : `id-${name}`, state, pid: null, exitCode: null, reason: null, restarts: 0, startedAt: null, finishedAt: null, nextRestartAt: null };
}

function podStatus(key: string, status: string, restarts: number, containers: ContainerStatus[]): PodStatus {
  const [namespace = '', name = ''] = key.split('/');
  return {
    key, namespace, name, kind: 'Pod', source: `/m/${name}.yaml`, status, ready: `${containers.filter((c) => c.state === 'running').length}/${containers.length}`,
    restarts, createdAt: '2025-01-01T00:00:00.000Z', generation: 1, lastError: '', lastErrorCode: null, nextTryAt: null, paused: false, ip: null, hostNetwork: true, deletionTimestamp: null, conditions: [], containers, initContainers: [],
  };
}

const images = { [IMG]: { local: 'sha256:aa', localTop: 'sha256:aa' } };
/** The planner's steps for a new pod (create-pod, start) and for its exited container (a policy restart). */
const newPodSteps = plan({ desired: [pod], observed: [], images, now: 1_000_000 }).steps;
const restartSteps = plan({
  desired: [pod],
  observed: [{
    key: pod.key, source: pod.source, podHash: pod.podHash, spec: JSON.stringify(pod), restarts: [],
    containers: [{ id: 'id-app', name: 'app', specHash: 'h1', imageRef: IMG, imageDigest: 'sha256:aa', state: 'exited', exitCode: 3, pid: 100, attempt: 0, startedAt: 1000, finishedAt: 2000 }],
  }],
  images,
  now: 1_000_000,
}).steps;
const startStep = newPodSteps.find((s): s is Extract<Step, { kind: 'start' }> => s.kind === 'start');

const source = (pods: PodStatus[], queue = { pending: 2, active: 1 }): MetricsSource => ({
  status: async (): Promise<StatusReport> => ({ apiVersion: 'berth.dev/v1', kind: 'Status', generatedAt: '2025-01-01T00:00:00.000Z', daemon: null, pods }),
  queue: () => queue,
});

const report = (key: string, durationMs: number, steps: KeyReport['steps']): KeyReport => ({ key, steps, blocked: [], waitingImages: [], imageErrors: [], settled: true, durationMs });

test('metrics: render is valid Prometheus text with every metric typed, before anything ran', async () => {
  const fam = parsePrometheus(await new Metrics().render(source([])));
  for (const [name, type] of [
    ['berth_reconcile_runs_total', 'counter'], ['berth_reconcile_duration_seconds', 'histogram'], ['berth_reconcile_failures_total', 'counter'],
    ['berth_steps_total', 'counter'], ['berth_pulls_total', 'counter'], ['berth_restarts_total', 'counter'], ['berth_queue_pending', 'gauge'],
    ['berth_pods', 'gauge'], ['berth_containers', 'gauge'],
  ] as const) {
    assert.equal(fam.get(name)?.type, type, name);
    assert.ok((fam.get(name)?.help ?? '') !== '', `${name} has HELP`);
  }
  // Series a dashboard expects exist at 0 from the start.
  assert.equal(sampleValue(fam, 'berth_reconcile_duration_seconds_count', { kind: 'pod' }), 0);
  assert.equal(sampleValue(fam, 'berth_reconcile_duration_seconds_bucket', { kind: 'image', le: '+Inf' }), 0);
  assert.equal(sampleValue(fam, 'berth_pulls_total', { result: 'failure' }), 0);
  assert.equal(sampleValue(fam, 'berth_containers', { state: 'running' }), 0);
  assert.equal(sampleValue(fam, 'berth_queue_pending'), 2);
});

test('metrics: observed runs move the histogram per key kind, failures, pulls, restarts; status gives pods and containers by state', async () => {
  const m = new Metrics();
  m.observe(report(`image/${IMG}`, 1200, [{ step: { kind: 'pull', image: IMG, reason: 'not present' } }]));
  m.observe(report(`image/other:1`, 30, [{ step: { kind: 'pull', image: 'other:1', reason: 'not present' }, error: { code: 'ERR_REGISTRY', message: 'pull other:1: 404' } }]));
  assert.deepEqual(newPodSteps.map((s) => s.kind), ['create-pod', 'start']);
  assert.deepEqual(restartSteps.map((s) => (s.kind === 'replace' ? `replace restart=${s.restart?.count ?? '-'}` : s.kind)), ['replace restart=1']);
  assert.ok(startStep !== undefined);
  m.observe(report('pod/default/web', 40, newPodSteps.map((step) => ({ step }))));
  m.observe(report('pod/default/web', 3, []));
  m.observe(report('pod/default/web', 7000, restartSteps.map((step) => ({ step }))));
  m.observe(report('pod/default/bad', 2, [{ step: startStep, error: { code: 'ERR_RUNTIME', message: 'runc create: boom' } }]));
  const text = await m.render(source([
    podStatus('default/web', 'Running', 1, [container('app', 'running')]),
    podStatus('default/bad', 'Error', 0, [container('app', 'exited'), container('side', 'waiting')]),
  ]));
  const fam = parsePrometheus(text);
  const v = (name: string, labels: Record<string, string> = {}): number | undefined => sampleValue(fam, name, labels);

  assert.equal(v('berth_reconcile_runs_total'), 6);
  assert.equal(v('berth_reconcile_duration_seconds_count', { kind: 'pod' }), 4);
  assert.equal(v('berth_reconcile_duration_seconds_count', { kind: 'image' }), 2);
  assert.ok(Math.abs((v('berth_reconcile_duration_seconds_sum', { kind: 'pod' }) ?? 0) - 7.045) < 1e-9);
  // Cumulative: 2 ms and 3 ms ≤ 5 ms; 40 ms ≤ 50 ms; 7 s ≤ 10 s.
  assert.equal(v('berth_reconcile_duration_seconds_bucket', { kind: 'pod', le: '0.005' }), 2);
  assert.equal(v('berth_reconcile_duration_seconds_bucket', { kind: 'pod', le: '0.05' }), 3);
  assert.equal(v('berth_reconcile_duration_seconds_bucket', { kind: 'pod', le: '5' }), 3);
  assert.equal(v('berth_reconcile_duration_seconds_bucket', { kind: 'pod', le: '10' }), 4);
  assert.equal(v('berth_reconcile_duration_seconds_bucket', { kind: 'image', le: '1' }), 1);
  assert.equal(v('berth_reconcile_duration_seconds_bucket', { kind: 'image', le: '2.5' }), 2);
  assert.equal(fam.get('berth_reconcile_duration_seconds')?.samples.filter((s) => s.name.endsWith('_bucket') && s.labels['kind'] === 'pod').length, DURATION_BUCKETS.length + 1);

  assert.equal(v('berth_reconcile_failures_total', { kind: 'pod' }), 1);
  assert.equal(v('berth_reconcile_failures_total', { kind: 'image' }), 1);
  assert.equal(v('berth_pulls_total', { result: 'success' }), 1);
  assert.equal(v('berth_pulls_total', { result: 'failure' }), 1);
  assert.equal(v('berth_restarts_total'), 1);
  assert.equal(v('berth_steps_total', { kind: 'start' }), 2);
  assert.equal(v('berth_step_failures_total', { code: 'ERR_RUNTIME' }), 1);

  assert.equal(v('berth_pods', { status: 'Running' }), 1);
  assert.equal(v('berth_pods', { status: 'Error' }), 1);
  assert.equal(v('berth_containers', { state: 'running' }), 1);
  assert.equal(v('berth_containers', { state: 'exited' }), 1);
  assert.equal(v('berth_containers', { state: 'waiting' }), 1);
  assert.equal(v('berth_container_restarts', { pod: 'default/web' }), 1);
  assert.equal(v('berth_pod_ready', { pod: 'default/bad' }), 0);
});

test('metrics: label values are escaped (a pod key cannot break the exposition)', async () => {
  const fam = parsePrometheus(await new Metrics().render(source([podStatus('default/we"b\\x', 'Running', 0, [])])));
  assert.equal(sampleValue(fam, 'berth_pod_ready', { pod: 'default/we"b\\x' }), 1);
});

test('prometheus parser: rejects what a scraper would (untyped sample, non-cumulative buckets, +Inf ≠ count, split family, duplicates)', () => {
  const h = (buckets: [string, number][], count: number): string =>
    `# TYPE x histogram\n${buckets.map(([le, n]) => `x_bucket{le="${le}"} ${n}`).join('\n')}\nx_sum 1\nx_count ${count}\n`;
  assert.doesNotThrow(() => parsePrometheus(h([['0.1', 1], ['1', 2], ['+Inf', 3]], 3)));
  assert.throws(() => parsePrometheus('y 1\n'), /no # TYPE/);
  assert.throws(() => parsePrometheus(h([['0.1', 2], ['1', 1], ['+Inf', 3]], 3)), /cumulative/);
  assert.throws(() => parsePrometheus(h([['0.1', 1], ['1', 2], ['+Inf', 3]], 4)), /differs from _count/);
  assert.throws(() => parsePrometheus(h([['0.1', 1], ['1', 2]], 2)), /\+Inf/);
  assert.throws(() => parsePrometheus('# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na{x="1"} 2\n'), /not together/);
  assert.throws(() => parsePrometheus('# TYPE a gauge\na{x="1"} 1\na{x="1"} 2\n'), /twice/);
  assert.throws(() => parsePrometheus('# TYPE a gauge\na{x="1} 1\n'), /bad labels|not a sample/);
  assert.throws(() => parsePrometheus('# TYPE a gauge\na one\n'), /bad value/);
  assert.throws(() => parsePrometheus('# TYPE a gauge\na 1'), /newline/);
});

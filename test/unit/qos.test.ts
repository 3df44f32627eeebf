import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseManifestText, formatProblem } from '../../src/reconciler/manifest.js';
import { cpuShares, oomScoreAdj, qosClass } from '../../src/reconciler/qos.js';
import { generateSpec } from '../../src/runtime/tasks/spec.js';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const pod = (resources: string, second = ''): string => `apiVersion: v1
kind: Pod
metadata: {name: q}
spec:
  hostNetwork: true
  containers:
    - name: a
      image: busybox
${resources}${second}`;

const load = (text: string) => {
  const r = parseManifestText(text, '/m/q.yaml');
  assert.deepEqual(r.problems.map(formatProblem), []);
  const p = r.pods[0];
  assert.ok(p !== undefined);
  return p;
};

const GiB = 1024 ** 3;

test('regression requests-ignored: QoS class, OOM score and CPU shares as the kubelet computes them', () => {
  const best = load(pod(''));
  assert.equal(qosClass(best), 'BestEffort');
  assert.equal(oomScoreAdj(best, best.containers[0]!, 8 * GiB), 1000);
  assert.equal(cpuShares(best.containers[0]!), 2);

  // Limits only: requests default to them → Guaranteed.
  const guaranteed = load(pod('      resources: {limits: {cpu: 500m, memory: 64Mi}}\n'));
  assert.equal(qosClass(guaranteed), 'Guaranteed');
  assert.equal(oomScoreAdj(guaranteed, guaranteed.containers[0]!, 8 * GiB), -997);
  assert.equal(cpuShares(guaranteed.containers[0]!), 512);

  const burstable = load(pod('      resources: {requests: {cpu: 250m, memory: 2Gi}, limits: {memory: 4Gi}}\n'));
  assert.equal(qosClass(burstable), 'Burstable');
  assert.equal(oomScoreAdj(burstable, burstable.containers[0]!, 8 * GiB), 750);
  assert.equal(cpuShares(burstable.containers[0]!), 256);
  // Clamped to [3, 999].
  const big = load(pod('      resources: {requests: {memory: 8Gi}}\n'));
  assert.equal(oomScoreAdj(big, big.containers[0]!, 8 * GiB), 3);
  const tiny = load(pod('      resources: {requests: {cpu: 1m}}\n'));
  assert.equal(oomScoreAdj(tiny, tiny.containers[0]!, 8 * GiB), 999);
  assert.equal(cpuShares(tiny.containers[0]!), 2);

  // One container without limits makes the pod Burstable.
  const mixed = load(pod('      resources: {limits: {cpu: 1, memory: 64Mi}}\n', '    - name: b\n      image: busybox\n'));
  assert.equal(qosClass(mixed), 'Burstable');

  // A request above its limit is a problem naming the field.
  const r = parseManifestText(pod('      resources: {requests: {memory: 128Mi}, limits: {memory: 64Mi}}\n'), '/m/q.yaml');
  assert.match(r.problems.map(formatProblem).join('\n'), /resources\.requests\.memory: "128Mi" is more than the limit "64Mi"/);
});

test('regression requests-ignored: the spec carries cpu shares, the OOM score and swap no larger than the limit', () => {
  const rootfs = mkdtempSync(path.join(os.tmpdir(), 'berth-qos-'));
  try {
    const spec = generateSpec(
      { architecture: 'amd64', os: 'linux', config: { Cmd: ['/bin/sh'] }, rootfs: { type: 'layers', diff_ids: [] } },
      { id: 'x', sandbox: { kind: 'host', files: [] }, rootfs, memoryBytes: 64 * 1024 * 1024, cpuMillis: 500, cpuShares: 512, oomScoreAdj: -997 },
    ) as { process: { oomScoreAdj?: number }; linux: { resources: { cpu: { shares?: number; quota?: number }; memory: { limit: number; swap?: number } } } };
    assert.ok(spec.process.oomScoreAdj !== undefined && spec.process.oomScoreAdj <= 0 && spec.process.oomScoreAdj >= -997);
    assert.equal(spec.linux.resources.cpu.shares, 512);
    assert.equal(spec.linux.resources.cpu.quota, 50_000);
    const swapKnown = spec.linux.resources.memory.swap;
    assert.ok(swapKnown === undefined || swapKnown === 64 * 1024 * 1024);
  } finally {
    rmSync(rootfs, { recursive: true, force: true });
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { changedFields, plan, type ObservedPodView } from '../../src/reconciler/plan.js';
import { planToJson, renderDetails, renderPlan } from '../../src/reconciler/render.js';
import type { DesiredContainer, DesiredPod } from '../../src/reconciler/desired.js';

/** Issue 12: `diff` prints old → new per changed field, like `kubectl diff`; a field can be masked. */

const IMG = '127.0.0.1:5000/berth/demo:1.0';

const ctr = (hash: string, extra: Partial<DesiredContainer> = {}): DesiredContainer => ({ name: 'app', image: IMG, pullPolicy: 'IfNotPresent', specHash: hash, env: [], ports: [], ...extra });

const pod = (c: DesiredContainer, extra: Partial<DesiredPod> = {}): DesiredPod => ({
  key: 'default/web', kind: 'Pod', namespace: 'default', name: 'web', source: '/m/web.yaml', line: 3, podHash: 'ph', hostNetwork: true,
  restartPolicy: 'Always', gracePeriodMs: 30_000, labels: {}, annotations: {}, paused: false, containers: [c], ...extra,
});

const observed = (p: DesiredPod): ObservedPodView => ({
  key: p.key, source: p.source, podHash: p.podHash, spec: JSON.stringify(p),
  containers: [{ id: 'default.web.app.h1-0', name: 'app', specHash: p.containers[0]?.specHash ?? '', imageRef: IMG, imageDigest: 'sha256:aa', state: 'running', exitCode: null, pid: 1, attempt: 0, startedAt: 1, finishedAt: null }],
});

const images = { [IMG]: { local: 'sha256:aa', localTop: 'sha256:aa' } };

test('diff details: a replace carries old and new per field and renders them under its line', () => {
  const before = pod(ctr('h1', { command: ['sh', '-c', 'a'], env: [{ name: 'A', value: '1' }, { name: 'B', value: 'x' }] }));
  const after = pod(ctr('h2', { command: ['sh', '-c', 'b'], env: [{ name: 'A', value: '2' }, { name: 'C', value: 'y' }], workingDir: '/srv' }));
  const p = plan({ desired: [after], observed: [observed(before)], images });
  const s = p.steps[0];
  assert.ok(s?.kind === 'replace');
  assert.deepEqual(s.changes, ['command', 'env', 'workingDir']);
  assert.deepEqual(s.details, [
    { field: 'command', old: ['sh', '-c', 'a'], new: ['sh', '-c', 'b'] },
    { field: 'env', key: 'A', old: '1', new: '2' },
    { field: 'env', key: 'B', old: 'x' },
    { field: 'env', key: 'C', new: 'y' },
    { field: 'workingDir', new: '/srv' },
  ]);
  assert.equal(
    renderPlan(p),
    [
      '~ container default/web/app: replace default.web.app.h1-0 (spec changed: command, env, workingDir)',
      '    command: ["sh","-c","a"] → ["sh","-c","b"]',
      '    env.A: "1" → "2"',
      '    env.B: "x" → <unset>',
      '    env.C: <unset> → "y"',
      '    workingDir: <unset> → "/srv"',
      '',
    ].join('\n'),
  );
  const json = planToJson(p) as { steps: { details: unknown }[] };
  assert.deepEqual(json.steps[0]?.details, s.details, 'diff -o json includes the details');
});

test('diff details: a pod-level change shows its values as the manifest writes them', () => {
  const before = pod(ctr('h1'));
  const after = pod(ctr('h1'), { gracePeriodMs: 5000, labels: { app: 'web' } });
  const p = plan({ desired: [after], observed: [observed(before)], images });
  const s = p.steps[0];
  assert.ok(s?.kind === 'update-pod');
  assert.deepEqual(s.details, [
    { field: 'spec.terminationGracePeriodSeconds', old: 30, new: 5 },
    { field: 'metadata.labels', old: {}, new: { app: 'web' } },
  ]);
  assert.match(renderPlan(p), /\n {4}spec\.terminationGracePeriodSeconds: 30 → 5\n {4}metadata\.labels: \{\} → \{"app":"web"\}\n$/);
});

test('diff details: a moved tag names the digests; env reordered only is one whole-list change', () => {
  const p = pod(ctr('h1', { pullPolicy: 'Always' }));
  const moved = plan({ desired: [p], observed: [observed(p)], images: { [IMG]: { local: 'sha256:aa', localTop: 'sha256:aa', remote: 'sha256:bb' } } });
  const r = moved.steps.find((s) => s.kind === 'replace');
  assert.ok(r?.kind === 'replace');
  assert.deepEqual(r.details, [{ field: 'image digest', old: 'sha256:aa', new: 'sha256:bb' }]);
  const a = [{ name: 'A', value: '1' }, { name: 'B', value: '2' }];
  // The names in their order (never the values: one may be a Secret's).
  assert.deepEqual(changedFields({ env: a }, { env: [...a].reverse() }), [{ field: 'env', old: ['A', 'B'], new: ['B', 'A'] }]);
  assert.deepEqual(changedFields(undefined, { env: a }), [], 'no previous spec: nothing to compare');
});

test('diff details: a masked field never prints its values, in text or JSON', () => {
  const details = [{ field: 'env', key: 'PASSWORD', old: 'hunter2', new: 'hunter3', masked: true }];
  assert.deepEqual(renderDetails(details), ['    env.PASSWORD: *** (before) → *** (after)']);
  const p = pod(ctr('h2'));
  const json = JSON.stringify(planToJson({ steps: [{ kind: 'replace', pod: p, container: p.containers[0] as DesiredContainer, oldId: 'x', reason: 'spec changed', changes: ['env'], details, attempt: 1 }], blocked: [] }));
  assert.doesNotMatch(json, /hunter/);
  assert.match(json, /"old":"\*\*\*","new":"\*\*\*","masked":true/);
});

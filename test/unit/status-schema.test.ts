import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildStatus } from '../../src/reconciler/status.js';
import { podVerdict } from '../../src/reconciler/conditions.js';
import type { DesiredPod } from '../../src/reconciler/desired.js';
import { validateEvents, validateStatus } from '../helpers/berth-schemas.js';

const pod: DesiredPod = {
  key: 'default/web', kind: 'Pod', namespace: 'default', name: 'web', source: '/m/web.yaml', line: 1, podHash: 'p',
  hostNetwork: true, restartPolicy: 'Always', gracePeriodMs: 1000, labels: {}, annotations: {}, paused: false,
  containers: [{ name: 'app', image: 'r/x:1', pullPolicy: 'IfNotPresent', specHash: 'h', env: [], ports: [] }],
};

const row = (state: 'running' | 'exited') => ({
  id: 'default.web.app.h-1', podKey: 'default/web', name: 'app', specHash: 'h', imageRef: 'r/x:1', imageDigest: 'sha256:aa' as never,
  state, pid: state === 'running' ? 42 : null, pidStart: null, exitCode: state === 'exited' ? 1 : null, createdAt: 1000, startedAt: 1000,
  finishedAt: state === 'exited' ? 3000 : null, attempt: 1, reason: state === 'exited' ? 'Error' : null, live: state === 'running',
});

test('status: a crash-looping pod validates against schemas/status.json and shows the next try', () => {
  const v = podVerdict({ desired: pod, observed: undefined, generation: 2, images: [], waiting: [{ key: 'default/web/app', reason: 'CrashLoopBackOff', until: 13_000, message: 'exited with code 1; back-off 10s restarting failed container' }], failed: [], blocked: [], invalid: [] });
  assert.equal(v.phase, 'CrashLoopBackOff');
  const report = buildStatus({
    pods: [{ key: 'default/web', namespace: 'default', name: 'web', source: '/m/web.yaml', podHash: 'p', spec: JSON.stringify(pod), createdAt: 500, generation: 2, containers: [row('exited')] }],
    restarts: [{ podKey: 'default/web', name: 'app', restarts: 1, nextAttempt: 2, backoffMs: 10_000, lastId: 'default.web.app.h-1', lastExitCode: 1, lastReason: 'Error', lastStartedAt: 1000, lastFinishedAt: 3000 }],
    conditions: v.conditions.map((c) => ({ ...c, key: 'pod/default/web', lastTransitionTime: 4000 })),
    now: 5000,
    daemon: { pid: 7, pending: 0, active: 0, resyncs: 3 },
  });
  assert.deepEqual(validateStatus(report), []);
  const p = report.pods[0];
  assert.equal(p?.status, 'CrashLoopBackOff');
  assert.equal(p?.nextTryAt, new Date(13_000).toISOString());
  assert.equal(p?.ready, '0/1');
  assert.equal(p?.restarts, 1);
  assert.match(p?.lastError ?? '', /back-off 10s/);
});

test('status: the schema rejects what berth must never print (a wrong status word, a missing field)', () => {
  const bad = { apiVersion: 'berth.dev/v1', kind: 'Status', generatedAt: new Date(0).toISOString(), daemon: null, pods: [{ key: 'default/web', status: 'Sleeping' }] };
  const errs = validateStatus(bad);
  assert.ok(errs.some((e) => /status/.test(e)), errs.join('\n'));
  assert.ok(errs.some((e) => /required/.test(e)), errs.join('\n'));
});

test('events: the schema takes berth events and refuses unknown reasons', () => {
  assert.deepEqual(validateEvents([{ id: 1, ts: 1, key: 'pod/default/web', type: 'Normal', reason: 'Started', message: 'x', code: null }]), []);
  assert.deepEqual(validateEvents([{ id: 2, ts: 1, key: 'image/r/x:1', type: 'Warning', reason: 'Failed', message: 'x', code: 'ERR_UNSAFE_CONTENT' }]), []);
  assert.notDeepEqual(validateEvents([{ id: 2, ts: 1, key: 'image/r/x:1', type: 'Warning', reason: 'Failed', message: 'x', code: 'ERR_BOGUS' }]), []);
  assert.notDeepEqual(validateEvents([{ id: 1, ts: 1, key: 'pod/default/web', type: 'Normal', reason: 'Teleported', message: 'x' }]), []);
});

test('conditions: Running is Ready; an invalid file keeps Running containers but says InvalidSpec', () => {
  const observed = { key: 'default/web', source: '/m/web.yaml', podHash: 'p', spec: '{}', containers: [{ id: 'i', name: 'app', specHash: 'h', imageRef: 'r/x:1', imageDigest: 'sha256:aa', state: 'running' as const, exitCode: null, pid: 1, attempt: 0, startedAt: 1, finishedAt: null }] };
  const base = { desired: pod, observed, generation: 1, images: [], waiting: [], failed: [], blocked: [] };
  const ok = podVerdict({ ...base, invalid: [] });
  assert.equal(ok.phase, 'Running');
  assert.equal(ok.conditions.find((c) => c.type === 'Ready')?.status, 'True');
  const bad = podVerdict({ ...base, invalid: ['/m/web.yaml:3:1: spec: bogus'] });
  assert.equal(bad.phase, 'InvalidSpec');
  assert.equal(bad.conditions.find((c) => c.type === 'InvalidSpec')?.status, 'True');
  assert.equal(bad.conditions.find((c) => c.type === 'Ready')?.status, 'True');
});

test('regression: events-schema-misses-reasons — every reason and key kind berth records is one schemas/events.json takes', async () => {
  // SandboxReady, Imported, Evicted, Unhealthy and the hook failures were recorded but missing
  // from the schema, so `berth events -o json` printed events its own schema refused.
  const { readdirSync, readFileSync, statSync } = await import('node:fs');
  const path = await import('node:path');
  const files: string[] = [];
  const walk = (d: string): void => {
    for (const f of readdirSync(d)) {
      const p = path.join(d, f);
      if (statSync(p).isDirectory()) walk(p);
      else if (p.endsWith('.ts')) files.push(p);
    }
  };
  walk(path.resolve(import.meta.dirname, '../../../src'));
  const reasons = new Set<string>();
  const kinds = new Set<string>();
  for (const f of files) {
    const text = readFileSync(f, 'utf8');
    for (const m of text.matchAll(/addEvent\(\s*(?:`([a-z]+)\/|[A-Z_]+ \+|key)[^,]*,\s*'([A-Za-z]+)'/g)) {
      if (m[1] !== undefined) kinds.add(m[1]);
      reasons.add(m[2] as string);
    }
    for (const m of text.matchAll(/d\.event\([^,]+,\s*'([A-Za-z]+)'/g)) reasons.add(m[1] as string);
  }
  assert.ok(reasons.size >= 20 && reasons.has('SandboxReady') && reasons.has('ImageRemoved'), [...reasons].join(' '));
  assert.ok(kinds.has('pod') && kinds.has('network'), [...kinds].join(' '));
  for (const reason of reasons) {
    for (const kind of kinds) {
      assert.deepEqual(validateEvents([{ id: 1, ts: 1, key: `${kind}/x`, type: 'Warning', reason, message: 'x', code: null }]), [], `${kind}/… ${reason}`);
    }
  }
});

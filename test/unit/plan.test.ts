import { test } from 'node:test';
import assert from 'node:assert/strict';
import { plan, type ObservedPodView, type ImageView } from '../../src/reconciler/plan.js';
import type { DesiredContainer, DesiredPod } from '../../src/reconciler/desired.js';
import { defaultPullPolicy, parseCpu, parseMemory, canonicalJson } from '../../src/reconciler/desired.js';

const IMG = '127.0.0.1:5000/berth/demo:1.0';

function ctr(name: string, hash: string, extra: Partial<DesiredContainer> = {}): DesiredContainer {
  return { name, image: IMG, pullPolicy: 'IfNotPresent', specHash: hash, env: [], ports: [], ...extra };
}

function pod(name: string, containers: DesiredContainer[], extra: Partial<DesiredPod> = {}): DesiredPod {
  return {
    key: `default/${name}`,
    kind: 'Pod',
    namespace: 'default',
    name,
    source: `/m/${name}.yaml`,
    line: 1,
    podHash: 'ph',
    hostNetwork: true,
    restartPolicy: 'Always',
    gracePeriodMs: 30_000,
    labels: {},
    annotations: {},
    paused: false,
    containers,
    ...extra,
  };
}

type ObsState = { name: string; hash: string; state?: 'running' | 'exited' | 'created' | 'paused'; exitCode?: number; id?: string; attempt?: number; startedAt?: number; finishedAt?: number };

function observed(p: DesiredPod, states: ObsState[], restarts: ObservedPodView['restarts'] = []): ObservedPodView {
  return {
    key: p.key,
    source: p.source,
    podHash: p.podHash,
    spec: JSON.stringify(p),
    containers: states.map((s) => ({
      id: s.id ?? `id-${s.name}-${s.hash}`,
      name: s.name,
      specHash: s.hash,
      imageRef: IMG,
      imageDigest: 'sha256:aa',
      state: s.state ?? 'running',
      exitCode: s.exitCode ?? null,
      pid: 100,
      attempt: s.attempt ?? 0,
      startedAt: s.startedAt ?? null,
      finishedAt: s.finishedAt ?? null,
    })),
    restarts,
  };
}

const present: Record<string, ImageView> = { [IMG]: { local: 'sha256:aa', localTop: 'sha256:aa' } };

test('plan: a new pod pulls its missing image, creates the pod and starts each container', () => {
  const p = pod('web', [ctr('a', 'h1'), ctr('b', 'h2')]);
  const r = plan({ desired: [p], observed: [], images: {} });
  assert.deepEqual(
    r.steps.map((s) => s.kind),
    ['pull', 'create-pod', 'start', 'start'],
  );
});

test('plan: nothing to do when everything matches (idempotent apply)', () => {
  const p = pod('web', [ctr('a', 'h1')]);
  const r = plan({ desired: [p], observed: [observed(p, [{ name: 'a', hash: 'h1' }])], images: present });
  assert.deepEqual(r.steps, []);
});

test('plan: a changed container is replaced, its sibling is left alone, changed fields are named', () => {
  const before = pod('web', [ctr('a', 'h1', { command: ['x'] }), ctr('b', 'h2')]);
  const after = pod('web', [ctr('a', 'h1b', { command: ['y'] }), ctr('b', 'h2')]);
  const obs = observed(before, [
    { name: 'a', hash: 'h1' },
    { name: 'b', hash: 'h2' },
  ]);
  const r = plan({ desired: [after], observed: [obs], images: present });
  assert.equal(r.steps.length, 1);
  const s = r.steps[0];
  assert.ok(s !== undefined && s.kind === 'replace');
  assert.equal(s.container.name, 'a');
  assert.equal(s.oldId, 'id-a-h1');
  assert.deepEqual(s.changes, ['command']);
});

test('plan: a container removed from the pod is removed', () => {
  const before = pod('web', [ctr('a', 'h1'), ctr('b', 'h2')]);
  const after = pod('web', [ctr('a', 'h1')]);
  const r = plan({ desired: [after], observed: [observed(before, [{ name: 'a', hash: 'h1' }, { name: 'b', hash: 'h2' }])], images: present });
  assert.deepEqual(
    r.steps.map((s) => `${s.kind}:${'name' in s ? s.name : ''}`),
    ['remove:b'],
  );
});

test('plan: prune deletes only pods from the pruned source that are no longer declared', () => {
  const kept = pod('kept', [ctr('a', 'h')]);
  const gone = pod('gone', [ctr('a', 'h')]);
  const foreign = pod('foreign', [ctr('a', 'h')], { source: '/elsewhere/foreign.yaml' });
  const obs = [observed(kept, [{ name: 'a', hash: 'h' }]), observed(gone, [{ name: 'a', hash: 'h' }]), observed(foreign, [{ name: 'a', hash: 'h' }])];
  const noPrune = plan({ desired: [kept], observed: obs, images: present });
  assert.deepEqual(noPrune.steps, []);
  const r = plan({ desired: [kept], observed: obs, images: present, prune: { sources: ['/m'] } });
  assert.deepEqual(
    r.steps.map((s) => (s.kind === 'delete-pod' ? s.podKey : s.kind)),
    ['default/gone'],
  );
  // "/m" must not match "/mx/...": prefixes are whole path components.
  const other = pod('other', [ctr('a', 'h')], { source: '/mx/other.yaml' });
  const r2 = plan({ desired: [], observed: [observed(other, [{ name: 'a', hash: 'h' }])], images: present, prune: { sources: ['/m'] } });
  assert.deepEqual(r2.steps, []);
});

test('plan: restartPolicy decides whether an exited container is started again', () => {
  for (const [policy, code, restart] of [
    ['Always', 0, true],
    ['Always', 1, true],
    ['OnFailure', 0, false],
    ['OnFailure', 2, true],
    ['Never', 1, false],
  ] as const) {
    const p = pod('job', [ctr('a', 'h')], { restartPolicy: policy });
    const r = plan({ desired: [p], observed: [observed(p, [{ name: 'a', hash: 'h', state: 'exited', exitCode: code }])], images: present });
    assert.equal(r.steps.length, restart ? 1 : 0, `${policy} exit ${code}`);
    if (restart) assert.equal(r.steps[0]?.kind, 'replace');
  }
});

test('plan: pullPolicy Always with a moved tag pulls first, then replaces', () => {
  const p = pod('web', [ctr('a', 'h', { pullPolicy: 'Always' })]);
  const images = { [IMG]: { local: 'sha256:aa', localTop: 'sha256:aa', remote: 'sha256:bb' } };
  const r = plan({ desired: [p], observed: [observed(p, [{ name: 'a', hash: 'h' }])], images });
  assert.deepEqual(
    r.steps.map((s) => s.kind),
    ['pull', 'replace'],
  );
  const same = plan({ desired: [p], observed: [observed(p, [{ name: 'a', hash: 'h' }])], images: { [IMG]: { ...images[IMG], remote: 'sha256:aa' } } });
  assert.deepEqual(same.steps, []);
});

test('plan: pullPolicy Never without the image is blocked, not pulled', async () => {
  const p = pod('web', [ctr('a', 'h', { pullPolicy: 'Never' })]);
  const r = plan({ desired: [p], observed: [], images: {} });
  // Recorded, so status lists it with the reason; nothing pulled, nothing started.
  assert.deepEqual(r.steps.map((s) => s.kind), ['create-pod']);
  assert.equal(r.blocked.length, 1);
  assert.match(r.blocked[0]?.reason ?? '', /Never/);
  // diff -o json gives the blocked entry its code, as its stderr line does (issue 15).
  const { planToJson } = await import('../../src/reconciler/render.js');
  assert.deepEqual((planToJson(r) as { blocked: unknown[] }).blocked, [{ key: 'default/web/a', reason: r.blocked[0]?.reason, code: 'ERR_PRECONDITION' }]);
  // A pod that exists keeps what runs.
  const running = plan({ desired: [p], observed: [observed(p, [{ name: 'a', hash: 'h-old' }])], images: {} });
  assert.deepEqual(running.steps, []);
});

test('plan: a pod-level change updates the pod record', () => {
  const before = pod('web', [ctr('a', 'h')]);
  const after = pod('web', [ctr('a', 'h')], { gracePeriodMs: 5000 });
  const r = plan({ desired: [after], observed: [observed(before, [{ name: 'a', hash: 'h' }])], images: present });
  assert.equal(r.steps.length, 1);
  const s = r.steps[0];
  assert.ok(s?.kind === 'update-pod');
  assert.deepEqual(s.changes, ['spec.terminationGracePeriodSeconds']);
});

test('plan: duplicate incarnations of one container are cleaned up', () => {
  const p = pod('web', [ctr('a', 'h2')]);
  const r = plan({ desired: [p], observed: [observed(p, [{ name: 'a', hash: 'h1', state: 'exited', exitCode: 0 }, { name: 'a', hash: 'h2' }])], images: present });
  assert.deepEqual(
    r.steps.map((s) => s.kind),
    ['remove'],
  );
});

test('desired: quantities, default pull policy and canonical JSON', () => {
  assert.equal(parseMemory('64Mi'), 64 * 1024 * 1024);
  assert.equal(parseMemory('1G'), 1e9);
  assert.equal(parseMemory('12ab'), undefined);
  assert.equal(parseCpu('500m'), 500);
  assert.equal(parseCpu('1.5'), 1500);
  assert.equal(parseCpu('0'), undefined);
  assert.equal(defaultPullPolicy('docker.io/library/busybox:latest'), 'Always');
  assert.equal(defaultPullPolicy('127.0.0.1:5000/x/y:1.0'), 'IfNotPresent');
  assert.equal(defaultPullPolicy('127.0.0.1:5000/x/y@sha256:' + 'a'.repeat(64)), 'IfNotPresent');
  assert.equal(canonicalJson({ b: 1, a: [2, { d: 1, c: undefined }] }), '{"a":[2,{"d":1}],"b":1}');
});

test('plan: crash-loop backoff — the first restart is at once, then 10 s, 20 s, 40 s … 300 s from the exit', () => {
  const p = pod('crash', [ctr('app', 'h1')]);
  const exitedAt = 1_000_000;
  const obs = (backoffMs: number, restarts: number) =>
    observed(p, [{ name: 'app', hash: 'h1', state: 'exited', exitCode: 1, attempt: restarts, startedAt: exitedAt - 500, finishedAt: exitedAt }], [
      { name: 'app', restarts, nextAttempt: restarts + 1, backoffMs },
    ]);
  // First exit: restart now; the next delay becomes 10 s.
  const r0 = plan({ desired: [p], observed: [obs(0, 0)], images: present, now: exitedAt + 5 });
  const s0 = r0.steps.find((s) => s.kind === 'replace');
  assert.ok(s0 !== undefined && s0.kind === 'replace');
  assert.deepEqual(s0.restart, { count: 1, nextBackoffMs: 10_000 });
  assert.equal(s0.attempt, 1);
  // Second exit: nothing before 10 s, a restart at 10 s that sets 20 s.
  const early = plan({ desired: [p], observed: [obs(10_000, 1)], images: present, now: exitedAt + 9_999 });
  assert.deepEqual(early.steps, []);
  assert.equal(early.waiting?.[0]?.until, exitedAt + 10_000);
  assert.equal(early.waiting?.[0]?.reason, 'CrashLoopBackOff');
  const due = plan({ desired: [p], observed: [obs(10_000, 1)], images: present, now: exitedAt + 10_000 });
  const s1 = due.steps.find((s) => s.kind === 'replace');
  assert.ok(s1 !== undefined && s1.kind === 'replace');
  assert.deepEqual(s1.restart, { count: 2, nextBackoffMs: 20_000 });
  assert.equal(s1.attempt, 2);
  // The cap.
  const capped = plan({ desired: [p], observed: [obs(300_000, 9)], images: present, now: exitedAt + 300_000 });
  const s2 = capped.steps.find((s) => s.kind === 'replace');
  assert.ok(s2 !== undefined && s2.kind === 'replace');
  assert.equal(s2.restart?.nextBackoffMs, 300_000);
});

test('plan: a run of 10 minutes forgives the backoff (restart at once)', () => {
  const p = pod('long', [ctr('app', 'h1')]);
  const o = observed(p, [{ name: 'app', hash: 'h1', state: 'exited', exitCode: 1, startedAt: 0, finishedAt: 600_000 }], [{ name: 'app', restarts: 5, nextAttempt: 6, backoffMs: 160_000 }]);
  const r = plan({ desired: [p], observed: [o], images: present, now: 600_001 });
  const s = r.steps.find((x) => x.kind === 'replace');
  assert.ok(s !== undefined && s.kind === 'replace');
  assert.deepEqual(s.restart, { count: 6, nextBackoffMs: 10_000 });
});

test('plan: a container paused by runc behind berth\'s back is left alone', () => {
  const p = pod('frozen', [ctr('app', 'h1')]);
  const r = plan({ desired: [p], observed: [observed(p, [{ name: 'app', hash: 'h1', state: 'paused' }])], images: present, now: 1 });
  assert.deepEqual(r.steps, []);
});

test('plan: the paused annotation stops running containers and starts none; removing it starts them', () => {
  const p = pod('sleepy', [ctr('app', 'h1')], { paused: true });
  const running = plan({ desired: [p], observed: [observed(p, [{ name: 'app', hash: 'h1' }])], images: present, now: 1 });
  assert.deepEqual(running.steps.map((s) => s.kind), ['remove']);
  const gone = plan({ desired: [p], observed: [observed(p, [])], images: present, now: 1 });
  assert.deepEqual(gone.steps, []);
  const resumed = plan({ desired: [{ ...p, paused: false }], observed: [observed(p, [])], images: present, now: 1 });
  assert.deepEqual(resumed.steps.map((s) => s.kind), ['start']);
});

test('plan: delete by key prunes exactly the named pods, whatever their source', () => {
  const a = pod('a', [ctr('x', 'h1')]);
  const b = pod('b', [ctr('x', 'h1')]);
  const r = plan({ desired: [], observed: [observed(a, [{ name: 'x', hash: 'h1' }]), observed(b, [{ name: 'x', hash: 'h1' }])], images: present, prune: { keys: ['default/b'] } });
  assert.deepEqual(r.steps.map((s) => (s.kind === 'delete-pod' ? s.podKey : s.kind)), ['default/b']);
});

test('plan: a start shows what will really run — the image entrypoint in front of args (Kubernetes command/args rules)', async () => {
  const { renderStep, planToJson } = await import('../../src/reconciler/render.js');
  const view: Record<string, ImageView> = { [IMG]: { local: 'sha256:aa', localTop: 'sha256:aa', entrypoint: ['/entry.sh'], cmd: ['serve'] } };
  const argvOf = (c: DesiredContainer, images = view): string[] | undefined => {
    // The argv diff -o json reports (the text line is checked below).
    const json = planToJson(plan({ desired: [pod('p', [c])], observed: [], images })) as { steps: { kind: string; argv?: string[] }[] };
    return json.steps.find((x) => x.kind === 'start')?.argv;
  };
  assert.deepEqual(argvOf(ctr('a', 'h', { args: ['--port', '80'] })), ['/entry.sh', '--port', '80']);
  assert.deepEqual(argvOf(ctr('a', 'h', { command: ['sh'] })), ['sh']);
  assert.deepEqual(argvOf(ctr('a', 'h', { command: ['sh'], args: ['-c', 'x'] })), ['sh', '-c', 'x']);
  assert.deepEqual(argvOf(ctr('a', 'h')), ['/entry.sh', 'serve']);
  assert.equal(argvOf(ctr('a', 'h', { args: ['x'] }), {}), undefined, 'unknown while the image is not here');
  const s = plan({ desired: [pod('p', [ctr('a', 'h', { args: ['--port', '80'] })])], observed: [], images: view }).steps.find((x) => x.kind === 'start');
  assert.ok(s !== undefined);
  assert.match(renderStep(s), /: start \S+ -- \/entry\.sh --port 80$/);
});

// Issue 13: pod sandboxes ------------------------------------------------------------

const SB = { hash: 'sb1', hostname: 'web', dns: { policy: 'ClusterFirst' as const }, shareProcessNamespace: false, ports: [] };

function withSandbox(p: ObservedPodView, sandbox: { hash: string; ready: boolean; ip?: string }): ObservedPodView {
  return { ...p, sandbox: { hash: sandbox.hash, ready: sandbox.ready, ip: sandbox.ip ?? '10.89.0.2' } };
}

test('issue 13: plan — a new networked pod creates its sandbox before its containers; a ready one is left alone', () => {
  const d = pod('web', [ctr('a', 'h1'), ctr('b', 'h2')], { hostNetwork: false, sandbox: SB });
  const fresh = plan({ desired: [d], observed: [], images: present });
  assert.deepEqual(fresh.steps.map((s) => s.kind), ['create-pod', 'sandbox', 'start', 'start']);
  const sb = fresh.steps[1];
  assert.ok(sb?.kind === 'sandbox' && !sb.replace && sb.reason === 'none yet' && sb.removeIds.length === 0);
  const steady = withSandbox(observed(d, [{ name: 'a', hash: 'h1' }, { name: 'b', hash: 'h2' }]), { hash: 'sb1', ready: true });
  assert.deepEqual(plan({ desired: [d], observed: [steady], images: present }).steps, []);
});

test('issue 13: plan — a dead sandbox or changed network settings rebuild it: every container goes with the old one and starts anew', () => {
  const d = pod('web', [ctr('a', 'h1'), ctr('b', 'h2')], { hostNetwork: false, sandbox: SB });
  const obs = observed(d, [{ name: 'a', hash: 'h1', attempt: 2 }, { name: 'b', hash: 'h2', state: 'exited', exitCode: 1 }]);
  const dead = plan({ desired: [d], observed: [withSandbox(obs, { hash: 'sb1', ready: false })], images: present });
  assert.deepEqual(dead.steps.map((s) => s.kind), ['sandbox', 'start', 'start']);
  const step = dead.steps[0];
  assert.ok(step?.kind === 'sandbox' && step.replace);
  assert.match(step.reason, /sandbox gone/);
  assert.deepEqual(step.removeIds, ['id-a-h1', 'id-b-h2']);
  // Attempt numbers continue past the removed containers: ids are never reused.
  const startA = dead.steps[1];
  assert.ok(startA?.kind === 'start' && startA.attempt === 3 && startA.reason === 'new sandbox');
  const moved = pod('web', [ctr('a', 'h1'), ctr('b', 'h2')], { hostNetwork: false, sandbox: { ...SB, hash: 'sb2' } });
  const changed = plan({ desired: [moved], observed: [withSandbox(observed(d, [{ name: 'a', hash: 'h1' }]), { hash: 'sb1', ready: true })], images: present });
  const first = changed.steps.find((s) => s.kind === 'sandbox');
  assert.ok(first?.kind === 'sandbox' && first.reason === 'network settings changed');
});

test('issue 13: plan — a pod that ran to completion gets no new sandbox; a paused pod keeps its own; hostNetwork removes it', () => {
  const done = pod('job', [ctr('a', 'h1')], { hostNetwork: false, sandbox: SB, restartPolicy: 'Never' });
  const finished = withSandbox(observed(done, [{ name: 'a', hash: 'h1', state: 'exited', exitCode: 0 }]), { hash: 'sb1', ready: false });
  assert.deepEqual(plan({ desired: [done], observed: [finished], images: present }).steps, []);
  // OnFailure after a failure restarts, so it needs a sandbox again.
  const retry = { ...done, restartPolicy: 'OnFailure' as const };
  const failed = withSandbox(observed(retry, [{ name: 'a', hash: 'h1', state: 'exited', exitCode: 3 }]), { hash: 'sb1', ready: false });
  assert.deepEqual(plan({ desired: [retry], observed: [failed], images: present }).steps.map((s) => s.kind), ['sandbox', 'start']);
  const paused = pod('web', [ctr('a', 'h1')], { hostNetwork: false, sandbox: SB, paused: true });
  const pausedObs = withSandbox(observed(paused, [{ name: 'a', hash: 'h1' }]), { hash: 'sb1', ready: false });
  assert.deepEqual(plan({ desired: [paused], observed: [pausedObs], images: present }).steps.map((s) => s.kind), ['remove']);
  const host = pod('web', [ctr('a', 'h9')]);
  const wasNetworked = withSandbox(observed(host, [{ name: 'a', hash: 'h1' }]), { hash: 'sb1', ready: true });
  const toHost = plan({ desired: [host], observed: [wasNetworked], images: present });
  assert.deepEqual(toHost.steps.map((s) => s.kind), ['replace', 'remove-sandbox']);
});

// Issue 13: init containers ----------------------------------------------------------

test('issue 13: plan — init containers run one at a time, in order, to a successful exit before any container', () => {
  const d = pod('web', [ctr('app', 'h9')], { initContainers: [ctr('first', 'i1'), ctr('second', 'i2')] });
  const fresh = plan({ desired: [d], observed: [], images: present });
  assert.deepEqual(fresh.steps.map((s) => (s.kind === 'start' ? `start ${s.container.name}` : s.kind)), ['create-pod', 'start first']);
  const firstRunning = plan({ desired: [d], observed: [observed(d, [{ name: 'first', hash: 'i1' }])], images: present });
  assert.deepEqual(firstRunning.steps, []);
  const firstDone = plan({ desired: [d], observed: [observed(d, [{ name: 'first', hash: 'i1', state: 'exited', exitCode: 0 }])], images: present });
  assert.deepEqual(firstDone.steps.map((s) => (s.kind === 'start' ? `start ${s.container.name}` : s.kind)), ['start second']);
  const allDone = plan({
    desired: [d],
    observed: [observed(d, [{ name: 'first', hash: 'i1', state: 'exited', exitCode: 0 }, { name: 'second', hash: 'i2', state: 'exited', exitCode: 0 }])],
    images: present,
  });
  assert.deepEqual(allDone.steps.map((s) => (s.kind === 'start' ? `start ${s.container.name}` : s.kind)), ['start app']);
  // Done init containers are never removed as "no longer declared" nor run again.
  const steady = plan({
    desired: [d],
    observed: [observed(d, [{ name: 'first', hash: 'i1', state: 'exited', exitCode: 0 }, { name: 'second', hash: 'i2', state: 'exited', exitCode: 0 }, { name: 'app', hash: 'h9' }])],
    images: present,
  });
  assert.deepEqual(steady.steps, []);
});

test('issue 13: plan — a failed init container is restarted with back-off, or leaves the pod failed under Never', () => {
  const d = pod('web', [ctr('app', 'h9')], { initContainers: [ctr('first', 'i1')], restartPolicy: 'OnFailure' });
  const failed = observed(d, [{ name: 'first', hash: 'i1', state: 'exited', exitCode: 3, startedAt: 1000, finishedAt: 2000 }]);
  const p = plan({ desired: [d], observed: [failed], images: present, now: 2000 });
  const r = p.steps[0];
  assert.ok(r?.kind === 'replace' && r.container.name === 'first' && r.restart?.count === 1, JSON.stringify(p.steps));
  const backingOff = plan({ desired: [d], observed: [{ ...failed, restarts: [{ name: 'first', restarts: 1, nextAttempt: 1, backoffMs: 10_000 }] }], images: present, now: 5000 });
  assert.deepEqual(backingOff.steps, []);
  assert.equal(backingOff.waiting?.[0]?.until, 12_000);
  const never = { ...d, restartPolicy: 'Never' as const };
  const dead = plan({ desired: [never], observed: [observed(never, [{ name: 'first', hash: 'i1', state: 'exited', exitCode: 3 }])], images: present });
  assert.deepEqual(dead.steps, []);
  assert.match(dead.blocked[0]?.reason ?? '', /init container first failed with exit code 3 and restartPolicy is Never/);
});

test('regression liveness-kill-honours-restart-policy: an unhealthy container is killed and kept; Never does not restart it', () => {
  for (const restartPolicy of ['Always', 'OnFailure', 'Never'] as const) {
    const p = pod('live', [ctr('app', 'h1')], { restartPolicy });
    const o = observed(p, [{ name: 'app', hash: 'h1', id: 'c1' }]);
    const c0 = o.containers[0];
    assert.ok(c0 !== undefined);
    c0.unhealthy = 'liveness probe failed 3 times';
    const r = plan({ desired: [p], observed: [o], images: present, now: 1_000_000 });
    assert.deepEqual(
      r.steps.map((s) => s.kind),
      ['kill'],
      `${restartPolicy}: the container is stopped, not replaced`,
    );
    // Once its exit is recorded (137 after SIGKILL), the policy decides: Never leaves it exited.
    const exited = observed(p, [{ name: 'app', hash: 'h1', id: 'c1', state: 'exited', exitCode: 137, startedAt: 990_000, finishedAt: 1_000_000 }], [{ name: 'app', restarts: 0, nextAttempt: 1, backoffMs: 0 }]);
    const after = plan({ desired: [p], observed: [exited], images: present, now: 1_000_001 });
    assert.deepEqual(after.steps.map((s) => s.kind), restartPolicy === 'Never' ? [] : ['replace'], restartPolicy);
  }
});

test('regression liveness-restart-backs-off: the restart after a liveness kill waits out the crash-loop back-off', () => {
  const p = pod('live', [ctr('app', 'h1')]);
  // Before: an unhealthy container was replaced at once, whatever the back-off said.
  const sick = observed(p, [{ name: 'app', hash: 'h1', id: 'c4', startedAt: 1_000_000 }], [{ name: 'app', restarts: 3, nextAttempt: 4, backoffMs: 80_000 }]);
  const s0 = sick.containers[0];
  assert.ok(s0 !== undefined);
  s0.unhealthy = 'liveness probe failed 3 times';
  assert.deepEqual(plan({ desired: [p], observed: [sick], images: present, now: 1_030_000 }).steps.map((s) => s.kind), ['kill']);
  // The fourth kill in a short life: back-off 80 s, counted from the exit.
  const exited = observed(p, [{ name: 'app', hash: 'h1', id: 'c4', state: 'exited', exitCode: 137, startedAt: 1_000_000, finishedAt: 1_030_000 }], [{ name: 'app', restarts: 3, nextAttempt: 4, backoffMs: 80_000 }]);
  const early = plan({ desired: [p], observed: [exited], images: present, now: 1_040_000 });
  assert.deepEqual(early.steps, []);
  assert.equal(early.waiting?.[0]?.reason, 'CrashLoopBackOff');
  const due = plan({ desired: [p], observed: [exited], images: present, now: 1_110_000 });
  assert.deepEqual(due.steps.map((s) => s.kind), ['replace']);
});

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, cleanupEnv, makeEnv, startDaemon, stopDaemon, waitFor, type berthUp, type BerthEnv } from '../helpers/berth.js';

/**
 * Issue 13, init containers under `berth up`: they run in order, each to a successful exit,
 * before the pod's container starts; a failing one is restarted by policy (OnFailure) until it
 * succeeds. Real runc, conmon and the exit watch.
 */

interface StatusPod {
  key: string;
  status: string;
  ready: string;
  restarts: number;
  nextTryAt: string | null;
  containers: { name: string; state: string }[];
  initContainers: { name: string; state: string; restarts: number }[];
}

describe('e2e: init containers (issue 13)', { timeout: 300_000 }, () => {
  let ok = true;
  let env: BerthEnv;
  let demo: DemoFixture | undefined;
  let dir: string;
  let up: ReturnType<typeof berthUp> | undefined;

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv('berth-init-');
    demo = await startDemoFixture();
    dir = path.join(env.dir, 'manifests');
    await fsp.mkdir(dir);
    const image = `${demo.registry.host}/berth/demo:1.0`;
    await fsp.writeFile(
      path.join(dir, 'pod.yaml'),
      `apiVersion: v1
kind: Pod
metadata: {name: ordered}
spec:
  hostNetwork: true
  restartPolicy: OnFailure
  terminationGracePeriodSeconds: 1
  volumes: [{name: work, emptyDir: {}}]
  initContainers:
    - name: one
      image: ${image}
      command: ["sh", "-c", "echo one >> /work/order"]
      volumeMounts: [{name: work, mountPath: /work}]
    - name: flaky
      image: ${image}
      command: ["sh", "-c", "if [ -f /work/tried ]; then echo flaky >> /work/order; exit 0; fi; touch /work/tried; exit 1"]
      volumeMounts: [{name: work, mountPath: /work}]
  containers:
    - name: app
      image: ${image}
      command: ["sh", "-c", "cat /work/order; sleep 3600"]
      volumeMounts: [{name: work, mountPath: /work}]
`,
    );
    // regression init-status-hidden: an init container that runs on, one that always fails
    // (OnFailure: crash loop) and one that fails under Never.
    const initPod = (name: string, policy: string, script: string): string => `apiVersion: v1
kind: Pod
metadata: {name: ${name}}
spec:
  hostNetwork: true
  restartPolicy: ${policy}
  terminationGracePeriodSeconds: 1
  initContainers:
    - name: setup
      image: ${image}
      command: ["sh", "-c", "${script}"]
  containers:
    - name: app
      image: ${image}
      command: ["sleep", "3600"]
`;
    await fsp.writeFile(path.join(dir, 'init-states.yaml'), [initPod('init-waits', 'Always', 'sleep 3600'), initPod('init-loops', 'OnFailure', 'exit 1'), initPod('init-fails', 'Never', 'exit 1')].join('---\n'));
    up = await startDaemon(env, dir);
  });

  after(async () => {
    if (!ok) return;
    if (up !== undefined) await stopDaemon(up);
    await berth(env, ['delete', '-f', dir]).catch(() => undefined);
    await cleanupEnv(env);
    await demo?.stop();
  });

  test('init containers run in order to success (a failed one is retried) before the container starts', async (t) => {
    if (!ok) return t.skip();
    await waitFor('app running', async () => {
      const r = await berth(env, ['status', '-o', 'json']);
      const p = (JSON.parse(r.stdout) as { pods: StatusPod[] }).pods.find((x) => x.key === 'default/ordered');
      return p?.containers.find((c) => c.name === 'app')?.state === 'running' ? true : undefined;
    }, 60_000);
    const out = await waitFor('app output', async () => {
      const l = (await berth(env, ['logs', 'ordered/app'])).stdout;
      return l.includes('flaky') ? l : undefined;
    });
    assert.equal(out.trim(), 'one\nflaky');
    const events = (await berth(env, ['events', '--for', 'ordered'])).stdout;
    assert.match(events, /container flaky restarted \(restart 1; init container exited with code 1\)/);
  });

  test('regression init-status-hidden: status and describe show init containers as kubectl does (Init:0/1, Init:CrashLoopBackOff, Init:Error, PodInitializing)', async (t) => {
    if (!ok) return t.skip();
    const pods = async (): Promise<StatusPod[]> => (JSON.parse((await berth(env, ['status', '-o', 'json'])).stdout) as { pods: StatusPod[] }).pods;
    const seen = await waitFor('init statuses', async () => {
      const all = await pods();
      const by = (k: string): StatusPod | undefined => all.find((p) => p.key === `default/${k}`);
      const w = by('init-waits');
      const l = by('init-loops');
      const f = by('init-fails');
      return w?.status === 'Init:0/1' && l?.status === 'Init:CrashLoopBackOff' && f?.status === 'Init:Error' ? { w, l, f } : undefined;
    }, 90_000, 250);
    assert.equal(seen.w.ready, '0/1');
    assert.equal(seen.w.initContainers[0]?.state, 'running');
    assert.ok(seen.l.restarts >= 1, `init restarts counted: ${seen.l.restarts}`);
    assert.equal(seen.l.restarts, seen.l.initContainers[0]?.restarts);
    assert.notEqual(seen.l.nextTryAt, null);
    const table = (await berth(env, ['status', 'init-loops', 'init-fails', 'init-waits'])).stdout;
    assert.match(table, /default\/init-loops\s+0\/1\s+Init:CrashLoopBackOff \(next try in \S+\)\s+[1-9]/);
    assert.match(table, /default\/init-fails\s+0\/1\s+Init:Error\s+0/);
    assert.match(table, /default\/init-waits\s+0\/1\s+Init:0\/1\s+0/);

    const loops = (await berth(env, ['describe', 'pod', 'init-loops'])).stdout;
    assert.match(loops, /^Status:\s+Pending$/m);
    assert.match(loops, /^Init Containers:\n {2}setup:\n(.*\n)*? {4}State:\s+Waiting\n {6}Reason:\s+CrashLoopBackOff\n/m);
    assert.match(loops, /^Containers:\n {2}app:\n(.*\n)*? {4}State:\s+Waiting\n {6}Reason:\s+PodInitializing\n/m);
    const fails = (await berth(env, ['describe', 'pod', 'init-fails'])).stdout;
    assert.match(fails, /^Status:\s+Failed$/m);
    assert.match(fails, /^Init Containers:\n {2}setup:\n(.*\n)*? {4}State:\s+Terminated\n {6}Reason:\s+Error\n {6}Exit Code:\s+1\n/m);
    assert.match(fails, /^Containers:\n {2}app:\n(.*\n)*? {4}State:\s+Waiting\n {6}Reason:\s+PodInitializing\n/m);
    const waits = (await berth(env, ['describe', 'pod', 'init-waits'])).stdout;
    assert.match(waits, /^Status:\s+Pending$/m);
  });
});

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
  containers: { name: string; state: string }[];
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
});

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, cleanupEnv, makeEnv, waitFor, type BerthEnv } from '../helpers/berth.js';

/**
 * Regression terminating-status-missing: while `berth delete` waited out the grace period of a
 * container that ignores SIGTERM, `ps` showed it `removing` but `status` said `0/1 Running` and
 * describe `Status: Running`. kubectl shows a pod being deleted as Terminating; now berth records
 * the deletion (the pod's deletionTimestamp) before it stops anything, and status and describe
 * read it. Real runc and conmon; a sleep as PID 1 ignores SIGTERM.
 */
describe('e2e: a pod being deleted is Terminating', { timeout: 180_000 }, () => {
  let ok = true;
  let env: BerthEnv;
  let demo: DemoFixture | undefined;
  let file: string;

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv('berth-term-');
    demo = await startDemoFixture();
    file = path.join(env.dir, 'slow.yaml');
    await fsp.writeFile(
      file,
      `apiVersion: v1
kind: Pod
metadata: {name: slow}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 8
  containers:
    - name: app
      image: ${demo.registry.host}/berth/demo:1.0
      command: ["sleep", "3600"]
`,
    );
  });

  after(async () => {
    if (!ok) return;
    await berth(env, ['delete', '-f', file]).catch(() => undefined);
    await cleanupEnv(env);
    await demo?.stop();
  });

  test('regression terminating-status-missing: status and describe say Terminating while the delete waits out the grace period', async (t) => {
    if (!ok) return t.skip();
    const applied = await berth(env, ['apply', '-f', file]);
    assert.equal(applied.code, 0, applied.stderr);
    const deleting = berth(env, ['delete', 'pod', 'slow']);
    const table = await waitFor('Terminating in status', async () => {
      const out = (await berth(env, ['status', 'slow'])).stdout;
      return /default\/slow\s+\S+\s+Terminating\s/.test(out) ? out : undefined;
    }, 6000, 100);
    assert.match(table, /^POD\s+READY\s+STATUS/m);
    const json = JSON.parse((await berth(env, ['status', 'slow', '-o', 'json'])).stdout) as { pods: { status: string; deletionTimestamp: string | null }[] };
    assert.equal(json.pods[0]?.status, 'Terminating');
    assert.ok(json.pods[0]?.deletionTimestamp !== null && Date.parse(json.pods[0]?.deletionTimestamp ?? '') > Date.now());
    const d = (await berth(env, ['describe', 'pod', 'slow'])).stdout;
    assert.match(d, /^Status:\s+Terminating \(lasts \d+s\)$/m);
    const done = await deleting;
    assert.equal(done.code, 0, done.stderr);
    assert.equal((await berth(env, ['status', 'slow'])).code, 1);
  });
});

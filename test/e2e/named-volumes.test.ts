import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, cleanupEnv, makeEnv, waitFor, type BerthEnv } from '../helpers/berth.js';

/**
 * Issue 13, persistentVolumeClaim → a named volume under berth's root: it outlives the pod,
 * the next pod that names it sees the data, `berth volumes ls` lists it with the pods that
 * name it, and `volumes rm` refuses while a pod names it. Real runc, conmon, overlay.
 */
describe('e2e: named volumes (issue 13)', { timeout: 300_000 }, () => {
  let ok = true;
  let env: BerthEnv;
  let demo: DemoFixture | undefined;
  let file: string;

  const podYaml = (cmd: string, readOnly = false): string => `apiVersion: v1
kind: Pod
metadata: {name: keeper}
spec:
  hostNetwork: true
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  volumes: [{name: data, persistentVolumeClaim: {claimName: keep-me${readOnly ? ', readOnly: true' : ''}}}]
  containers:
    - name: c
      image: ${demo?.registry.host ?? ''}/berth/demo:1.0
      command: ["sh", "-c", ${JSON.stringify(cmd)}]
      volumeMounts: [{name: data, mountPath: /data}]
`;
  const runPod = async (cmd: string, readOnly = false): Promise<string> => {
    await fsp.writeFile(file, podYaml(cmd, readOnly));
    const r = await berth(env, ['apply', '-f', file]);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    await waitFor('keeper exited', async () => {
      const s = JSON.parse((await berth(env, ['status', '-o', 'json'])).stdout) as { pods: { key: string; containers: { state: string }[] }[] };
      return s.pods.find((p) => p.key === 'default/keeper')?.containers[0]?.state === 'exited' ? true : undefined;
    });
    return (await berth(env, ['logs', 'keeper/c'])).stdout;
  };

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv('berth-vol-');
    demo = await startDemoFixture();
    file = path.join(env.dir, 'keeper.yaml');
  });

  after(async () => {
    if (!ok) return;
    await berth(env, ['delete', '-f', file]).catch(() => undefined);
    await cleanupEnv(env);
    await demo?.stop();
  });

  test('a named volume outlives its pod and is listed, refused for removal while named, removed after', async (t) => {
    if (!ok) return t.skip();
    assert.match(await runPod('echo kept > /data/file; echo wrote'), /wrote/);
    const ls = JSON.parse((await berth(env, ['volumes', 'ls', '-o', 'json'])).stdout) as { name: string; bytes: number; usedBy: string[] }[];
    assert.deepEqual(ls, [{ name: 'keep-me', bytes: 5, usedBy: ['default/keeper'] }]);
    const refused = await berth(env, ['volumes', 'rm', 'keep-me']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /volume keep-me: used by pod default\/keeper/);
    const d = await berth(env, ['delete', '-f', file]);
    assert.equal(d.code, 0, d.stderr);
    assert.equal(await fsp.readFile(path.join(env.root, 'volumes', 'keep-me', 'file'), 'utf8'), 'kept\n');
    // The next pod that names it sees the data; readOnly makes it read-only.
    const again = await runPod('cat /data/file; touch /data/x; echo RC=$?', true);
    assert.match(again, /^kept$/m);
    assert.match(again, /^RC=1$/m);
    assert.equal((await berth(env, ['delete', '-f', file])).code, 0);
    // Regression volumes-rm-partial: a missing name removes nothing, the others included.
    const partial = await berth(env, ['volumes', 'rm', 'keep-me', 'no-such-volume']);
    assert.equal(partial.code, 1, partial.stderr);
    assert.match(partial.stderr, /volume no-such-volume: no such volume/);
    assert.equal(await fsp.readFile(path.join(env.root, 'volumes', 'keep-me', 'file'), 'utf8'), 'kept\n');
    const rm = await berth(env, ['volumes', 'rm', 'keep-me']);
    assert.equal(rm.code, 0, rm.stderr);
    await assert.rejects(fsp.stat(path.join(env.root, 'volumes', 'keep-me')));
    assert.equal((await berth(env, ['volumes', 'rm', '../etc'])).code, 2);
  });
});

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, cleanupEnv, makeEnv, startDaemon, stopDaemon, waitFor, type berthUp, type BerthEnv } from '../helpers/berth.js';

/**
 * The GitOps layout the README documents: each commit exported into a hidden directory
 * `.rev-<commit>` of the watched directory and a link `current` swapped to it (what git-sync
 * does, and what the README's cron script does after `git pull`). A swap is followed, the
 * pods keep their source (`current/…`) across swaps, and a broken commit keeps the last
 * good objects.
 */

interface StatusPod {
  key: string;
  status: string;
  source: string;
  containers: { id: string | null; state: string }[];
}

describe('e2e: GitOps layout (link swapped to each commit)', { timeout: 300_000 }, () => {
  let ok = true;
  let demo: DemoFixture | undefined;
  let env: BerthEnv;
  let dir: string;
  let up: ReturnType<typeof berthUp> | undefined;

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv('berth-gitops-');
    demo = await startDemoFixture();
    dir = path.join(env.dir, 'manifests');
    await fsp.mkdir(dir);
  });
  after(async () => {
    if (up !== undefined) await stopDaemon(up);
    if (env !== undefined) await cleanupEnv(env);
    await demo?.stop();
  });

  const pod = (msg: string): string => `apiVersion: v1
kind: Pod
metadata:
  name: hello
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
    - name: main
      image: ${demo?.registry.host ?? ''}/berth/demo:1.0
      command: ["sh", "-c", "echo ${msg}; exec sleep 3600"]
`;
  /** One commit: its files in `.rev-<n>`, then `current` replaced by rename (atomic, as git-sync and `mv -T` do). */
  const publish = async (rev: string, text: string): Promise<void> => {
    await fsp.mkdir(path.join(dir, `.rev-${rev}`));
    await fsp.writeFile(path.join(dir, `.rev-${rev}`, 'hello.yaml'), text);
    await fsp.symlink(`.rev-${rev}`, path.join(dir, 'current.tmp'));
    await fsp.rename(path.join(dir, 'current.tmp'), path.join(dir, 'current'));
  };
  const hello = async (): Promise<StatusPod | undefined> =>
    (JSON.parse((await berth(env, ['status', '-o', 'json'])).stdout) as { pods: StatusPod[] }).pods.find((p) => p.key === 'default/hello');

  test('swap to a new commit replaces the container; swap to a broken commit keeps it (InvalidSpec, last good objects)', async (t) => {
    if (!ok || demo === undefined) return t.skip();
    await publish('1', pod('one'));
    up = await startDaemon(env, dir);
    const first = await waitFor('pod Running', async () => ((await hello())?.status === 'Running' ? await hello() : undefined), 60_000);
    assert.equal(first?.source, path.join(dir, 'current', 'hello.yaml'), 'the source is the path through the link, stable across swaps');

    await publish('2', pod('two'));
    await waitFor('commit 2 runs', async () => ((await berth(env, ['logs', 'hello'])).stdout.includes('two') ? true : undefined), 30_000);
    const second = await hello();
    assert.equal(second?.source, first?.source);
    assert.notEqual(second?.containers[0]?.id, first?.containers[0]?.id);
    // The previous commit can go once the link points away from it.
    await fsp.rm(path.join(dir, '.rev-1'), { recursive: true });

    await publish('3', 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: hello\nspec:\n  hostNetwork: true\n  containers: [ {name: main, imagee: x} ]\n');
    const kept = await waitFor('broken commit reported', async () => ((await hello())?.status === 'InvalidSpec' ? await hello() : undefined), 30_000);
    assert.equal(kept?.containers[0]?.id, second?.containers[0]?.id, 'the last good container keeps running');
    assert.equal(kept?.containers[0]?.state, 'running');
    assert.match(up.output(), /invalid manifest \(last good objects kept\): .*current\/hello\.yaml:\d+:\d+: .*did you mean "image"/);
  });
});

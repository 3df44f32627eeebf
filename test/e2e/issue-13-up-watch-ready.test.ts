import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, berthUp, cleanupEnv, makeEnv, stopDaemon, waitFor, type BerthEnv } from '../helpers/berth.js';

/**
 * Regression up-serves-before-watching (found by bench/start): `berth up` served its socket before
 * its directory watchers had finished their first scan, and chokidar reports nothing for files
 * written before that (ignoreInitial), so a manifest written as soon as the socket appeared waited
 * for the periodic rescan (30 s by default) instead of starting at once. Now the socket appears
 * only once the watchers are ready, so its appearance means "writes are seen".
 */
describe('e2e: berth up watches before it serves (issue 13, bench/start)', { timeout: 180_000 }, () => {
  let ok = true;
  let env: BerthEnv;
  let demo: DemoFixture | undefined;
  let image = '';
  let dir = '';
  let up: ReturnType<typeof berthUp> | undefined;

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv('berth-upwatch-');
    demo = await startDemoFixture();
    image = `${demo.registry.host}/berth/demo:1.0`;
    const pull = await berth(env, ['images', 'pull', image]);
    assert.equal(pull.code, 0, pull.stderr);
    dir = path.join(env.dir, 'manifests');
    // Many files for the watcher's first scan to walk, which widens the window the bug lived in.
    const bulk = path.join(dir, 'bulk');
    await mkdir(bulk, { recursive: true });
    await Promise.all(Array.from({ length: 3000 }, (_, i) => writeFile(path.join(bulk, `f${i}.txt`), '')));
  });

  after(async () => {
    if (!ok) return;
    if (up !== undefined) await stopDaemon(up, 'SIGTERM');
    await berth(env, ['delete', '-f', dir]).catch(() => undefined);
    await cleanupEnv(env);
    await demo?.stop();
  });

  test('regression up-serves-before-watching: a pod written the moment the socket appears starts without waiting for the rescan', async (t) => {
    if (!ok) return t.skip();
    up = berthUp(env, dir, ['--resync', '600']);
    const socket = path.join(env.state, 'berth.sock');
    await waitFor('the socket', async () => (existsSync(socket) ? true : undefined), 60_000, 2);
    await writeFile(
      path.join(dir, 'early.yaml'),
      `apiVersion: v1\nkind: Pod\nmetadata: {name: early}\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 1\n  containers:\n    - name: c\n      image: ${image}\n      command: ["sleep", "3600"]\n`,
    );
    await waitFor(
      'pod early running (well before the 600 s rescan)',
      async () => {
        const r = await berth(env, ['ps', '-o', 'json']);
        const pods = r.code === 0 ? (JSON.parse(r.stdout) as { key: string; containers: { state: string }[] }[]) : [];
        return pods.find((p) => p.key === 'default/early')?.containers[0]?.state === 'running' ? true : undefined;
      },
      20_000,
      100,
    );
  });
});

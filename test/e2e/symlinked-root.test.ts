import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, cleanupEnv, conmonProcesses, makeEnv, mountsUnder, type BerthEnv } from '../helpers/berth.js';

/**
 * regression: symlinked-root — a --root reached through a symlink made runc refuse the
 * rootfs, and the rollback missed the overlay mount (mountinfo holds real paths), so the
 * pod stayed stuck with a leaked mount.
 */
describe('e2e: --root and --state through a symlink', { timeout: 300_000 }, () => {
  let demo: DemoFixture | undefined;
  let env: BerthEnv;
  let linked: BerthEnv;
  let file: string;
  let ok = true;

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv();
    await fsp.mkdir(path.join(env.dir, 'real'));
    await fsp.symlink(path.join(env.dir, 'real'), path.join(env.dir, 'link'));
    linked = { root: path.join(env.dir, 'link', 'root'), state: path.join(env.dir, 'link', 'state'), dir: env.dir };
    demo = await startDemoFixture();
    file = path.join(env.dir, 'web.yaml');
    await fsp.writeFile(file, demo.text);
  });
  after(async () => {
    if (env !== undefined) await cleanupEnv({ ...env, state: path.join(env.dir, 'real', 'state') });
    await demo?.stop();
  });

  test('apply, apply again, delete: all work and nothing leaks', async (t) => {
    if (!ok) return t.skip();
    const a = await berth(linked, ['apply', '-f', file]);
    assert.equal(a.code, 0, a.stderr);
    const again = await berth(linked, ['apply', '-f', file]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /no changes/);
    const d = await berth(linked, ['delete', '-f', file]);
    assert.equal(d.code, 0, d.stderr);
    assert.deepEqual(await mountsUnder(path.join(env.dir, 'real')), []);
    assert.deepEqual(await conmonProcesses(path.join(env.dir, 'real', 'state')), []);
  });
});

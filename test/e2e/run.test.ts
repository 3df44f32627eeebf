import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, cleanupEnv, makeEnv, mountsUnder, startDaemon, stopDaemon, type BerthEnv } from '../helpers/berth.js';

/**
 * Issue 13, `berth run`: a one-off container outside any manifest prints its output and exits
 * with the container's exit code; --rm leaves nothing; -d prints the id and returns; the same
 * through a running `berth up`. Real runc, conmon, overlay.
 */
describe('e2e: berth run (issue 13)', { timeout: 300_000 }, () => {
  let ok = true;
  let env: BerthEnv;
  let demo: DemoFixture | undefined;
  let image = '';

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv('berth-run-');
    demo = await startDemoFixture();
    image = `${demo.registry.host}/berth/demo:1.0`;
  });

  after(async () => {
    if (!ok) return;
    await cleanupEnv(env);
    await demo?.stop();
  });

  const pods = async (): Promise<string[]> => (JSON.parse((await berth(env, ['ps', '-o', 'json'])).stdout) as { key: string }[]).map((p) => p.key);

  test('run --rm prints the output, exits with the container exit code and leaves no pod, mount or container', async (t) => {
    if (!ok) return t.skip();
    const r = await berth(env, ['run', '--rm', '--net', 'host', '--name', 'once', '-e', 'WHO=berth', image, '--', 'sh', '-c', 'echo hello $WHO; echo oops >&2; exit 3']);
    assert.equal(r.code, 3, r.stderr);
    assert.equal(r.stdout, 'hello berth\n');
    // Regression run-stderr-to-stdout: the container's stderr stays stderr, as with podman run.
    assert.match(r.stderr, /^oops$/m);
    assert.deepEqual(await pods(), []);
    assert.deepEqual((await mountsUnder(env.dir)).filter((m) => m.includes('/containers/')), []);
    const zero = await berth(env, ['run', '--rm', '--net', 'host', image, '--', 'true']);
    assert.equal(zero.code, 0, zero.stderr);
  });

  test('run -d starts it and returns its id; without --rm the pod stays until deleted', async (t) => {
    if (!ok) return t.skip();
    const r = await berth(env, ['run', '-d', '--net', 'host', '--name', 'bg', image, '--', 'sleep', '300']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout.trim(), /^default\.bg\.bg\.[0-9a-f]{8}-0$/);
    assert.deepEqual(await pods(), ['default/bg']);
    const d = await berth(env, ['delete', 'pod', 'bg']);
    assert.equal(d.code, 0, d.stderr);
    assert.deepEqual(await pods(), []);
  });

  test('run through a running berth up; a bad image reference is exit 2', async (t) => {
    if (!ok) return t.skip();
    const up = await startDaemon(env, env.dir);
    try {
      const r = await berth(env, ['run', '--rm', '--net', 'host', image, '--', 'sh', '-c', 'echo via-daemon; echo oops >&2; exit 5']);
      assert.equal(r.code, 5, r.stderr);
      assert.equal(r.stdout, 'via-daemon\n');
      assert.match(r.stderr, /^oops$/m, 'regression run-stderr-to-stdout, through the daemon');
    } finally {
      await stopDaemon(up, 'SIGTERM');
    }
    const bad = await berth(env, ['run', '--rm', 'UPPER/case', '--', 'true']);
    assert.equal(bad.code, 2, bad.stderr);
  });
});

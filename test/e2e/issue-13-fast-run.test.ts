import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { askDaemon } from '../../src/lib/fast-read.js';
import { fastRunThroughDaemon, parseFastRun, type FastRun } from '../../src/lib/fast-run.js';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, cleanupEnv, makeEnv, mountsUnder, startDaemon, stopDaemon, type BerthEnv } from '../helpers/berth.js';

/**
 * Issue 13, "run --rm ≤ 1.5 × ctr run --rm": with `berth up` running, `berth run` is one request
 * on the daemon's socket (lib/fast-run → daemon/run.ts) answered with the container's output and
 * exit code; `--rm` answers only once the pod is gone. Real runc, conmon, overlay (mounted with
 * mount(2) through the addon).
 */
describe('e2e: berth run through the daemon (issue 13 fast path)', { timeout: 300_000 }, () => {
  let ok = true;
  let env: BerthEnv;
  let demo: DemoFixture | undefined;
  let image = '';
  let up: Awaited<ReturnType<typeof startDaemon>> | undefined;
  // What the daemon watches: an empty directory of its own (the pods here come through its socket).
  let watched = '';

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv('berth-fastrun-');
    demo = await startDemoFixture();
    image = `${demo.registry.host}/berth/demo:1.0`;
    watched = path.join(env.dir, 'watched');
    await mkdir(watched);
    const pull = await berth(env, ['images', 'pull', image]);
    assert.equal(pull.code, 0, pull.stderr);
  });

  after(async () => {
    if (!ok) return;
    if (up !== undefined) await stopDaemon(up, 'SIGTERM');
    await cleanupEnv(env);
    await demo?.stop();
  });

  const parsed = (args: string[]): FastRun => {
    const r = parseFastRun(['--state', env.state, 'run', ...args]);
    assert.ok(r !== undefined, args.join(' '));
    return r;
  };
  const capture = (): { out: { stdout: (s: string) => void; stderr: (s: string) => void }; stdout: () => string; stderr: () => string } => {
    let o = '';
    let e = '';
    return { out: { stdout: (s) => (o += s), stderr: (s) => (e += s) }, stdout: () => o, stderr: () => e };
  };
  const podKeys = async (): Promise<string[]> => ((await askDaemon(path.join(env.state, 'berth.sock'), 'pods', {})) as { key: string }[]).map((p) => p.key);

  test('no daemon: the fast path takes nothing and prints nothing', async (t) => {
    if (!ok) return t.skip();
    const c = capture();
    const res = await fastRunThroughDaemon(parsed(['--rm', image, '--', 'true']), c.out);
    assert.equal(res.taken, false);
    assert.equal(c.stdout() + c.stderr(), '');
  });

  test('run --rm through the daemon: output (UTF-8 intact), exit code, and no pod, container or mount left', async (t) => {
    if (!ok) return t.skip();
    up = await startDaemon(env, watched);
    const c = capture();
    const res = await fastRunThroughDaemon(parsed(['--rm', '--net', 'host', '--name', 'fast', '-e', 'WHO=wörld', image, '--', 'sh', '-c', 'echo "héllo $WHO"; echo oops >&2; exit 3']), c.out);
    assert.deepEqual(res, { taken: true, exitCode: 3 }, c.stderr());
    assert.equal(c.stdout(), 'héllo wörld\n');
    // Regression run-stderr-to-stdout: the container's stderr arrives as stderr.
    assert.equal(c.stderr(), 'oops\n');
    assert.deepEqual(await podKeys(), []);
    assert.deepEqual((await mountsUnder(env.dir)).filter((m) => m.includes('/containers/')), []);
    // The CLI takes the same path (and the same exit code) before commander loads.
    const cli = await berth(env, ['run', '--rm', '--net', 'host', image, '--', 'sh', '-c', 'echo via-cli; exit 4']);
    assert.equal(cli.code, 4, cli.stderr);
    assert.equal(cli.stdout, 'via-cli\n');
  });

  // Regression delete-settles-on-a-run-in-flight: the delete of `--rm` was answered by the run the
  // container's exit had started (which began before the delete set its desire), so `run --rm`
  // returned while its pod was still there, and the next run of the same name found it.
  test('regression delete-settles-on-a-run-in-flight: run --rm answers only once its pod is gone', async (t) => {
    if (!ok) return t.skip();
    up ??= await startDaemon(env, watched);
    for (let i = 0; i < 6; i++) {
      const c = capture();
      const res = await fastRunThroughDaemon(parsed(['--rm', '--net', 'host', '--name', 'again', image, '--', '/bin/true']), c.out);
      assert.deepEqual(res, { taken: true, exitCode: 0 }, c.stderr());
      assert.deepEqual(await podKeys(), [], `run ${i}: the pod is still recorded after run --rm returned`);
    }
  });

  // The same bug made deterministic: a delete sent while a replace of the pod waits out its grace
  // period was answered by that replace's report (a run that began before the delete set its
  // desire), so it returned with the pod still there.
  test('regression delete-settles-on-a-run-in-flight: a delete during a replace returns once the pod is gone', async (t) => {
    if (!ok) return t.skip();
    up ??= await startDaemon(env, watched);
    const pod = (marker: string): string =>
      `apiVersion: v1\nkind: Pod\nmetadata: {name: inflight}\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 6\n  containers:\n    - name: c\n      image: ${image}\n      command: ["sh", "-c", "trap '' TERM; while true; do sleep 1; done # ${marker}"]\n`;
    const file = path.join(env.dir, 'inflight.yaml');
    await writeFile(file, pod('v1'));
    const first = await berth(env, ['apply', '-f', file]);
    assert.equal(first.code, 0, first.stderr);
    await writeFile(file, pod('v2'));
    const replacing = berth(env, ['apply', '-f', file]);
    // The replace's run is in flight (waiting out the 6 s grace of a container that ignores SIGTERM).
    await new Promise((r) => setTimeout(r, 2000));
    const del = await berth(env, ['delete', '-f', file]);
    assert.equal(del.code, 0, del.stderr);
    assert.deepEqual(await podKeys(), [], 'delete returned while the pod was still recorded');
    await replacing;
  });

  test('run -d through the daemon prints the id; a bad image reference is exit 2 naming it', async (t) => {
    if (!ok) return t.skip();
    up ??= await startDaemon(env, watched);
    const c = capture();
    const res = await fastRunThroughDaemon(parsed(['-d', '--net', 'host', '--name', 'bg', image, '--', 'sleep', '300']), c.out);
    assert.deepEqual(res, { taken: true, exitCode: 0 }, c.stderr());
    assert.match(c.stdout().trim(), /^default\.bg\.bg\.[0-9a-f]{8}-0$/);
    assert.deepEqual(await podKeys(), ['default/bg']);
    const d = await berth(env, ['delete', 'pod', 'bg']);
    assert.equal(d.code, 0, d.stderr);
    const bad = capture();
    const r = await fastRunThroughDaemon(parsed(['--rm', 'UPPER/case', '--', 'true']), bad.out);
    assert.deepEqual(r, { taken: true, exitCode: 2 });
    assert.match(bad.stderr(), /UPPER\/case/);
    // Its line carries the code, as the commander path's does (regression fast-run-error-line-without-code).
    assert.match(bad.stderr(), /^error ERR_INVALID_(MANIFEST|ARGUMENT): /m);
    assert.doesNotMatch(bad.stderr(), /^error: /m);
    assert.deepEqual(await podKeys(), []);
  });
});

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp, statSync } from 'node:fs';
import * as path from 'node:path';
import { buildBusyboxImage, pushImage } from '../../scripts/fixture-image.js';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, berthUp, cleanupEnv, makeEnv, waitFor, type BerthEnv } from '../helpers/berth.js';

/**
 * The CLI talks to `berth up` over its socket when it runs and works in-process otherwise:
 * the same script of commands gives the same output and exit codes both ways, and with
 * the daemon there is one writer (no ERR_LOCKED, the lock stays with the daemon).
 */
describe('e2e: CLI through the daemon socket and in-process', { timeout: 600_000 }, () => {
  let demo: DemoFixture | undefined;
  let env: BerthEnv;
  let ok = true;

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv();
    demo = await startDemoFixture();
  });
  after(async () => {
    if (env !== undefined) await cleanupEnv(env);
    await demo?.stop();
  });

  const podYaml = (name: string, arg: string, policy = 'IfNotPresent', image = `${demo?.registry.host ?? ''}/berth/demo:1.0`): string => `apiVersion: v1
kind: Pod
metadata:
  name: ${name}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 0
  containers:
    - name: app
      image: ${image}
      imagePullPolicy: ${policy}
      command: ["sleep", "${arg}"]
`;

  /** One scripted session; returns each command's exit code and output (pids and ages masked). */
  const session = async (files: string, tag: string): Promise<string[]> => {
    const image = `${demo?.registry.host ?? ''}/berth/demo:${tag}`;
    const f = path.join(files, 'app.yaml');
    const bad = path.join(files, 'bad.yaml');
    const never = path.join(files, 'never.yaml');
    await fsp.writeFile(f, podYaml('app', '3600', 'IfNotPresent', image));
    await fsp.writeFile(bad, podYaml('bad', '1', 'IfNotPresent', image).replace('command:', 'comand:'));
    await fsp.writeFile(never, podYaml('never', '1', 'Never', '127.0.0.1:1/absent/image:1'));
    const out: string[] = [];
    const run = async (args: string[]): Promise<void> => {
      const r = await berth(env, args);
      // Each session uses its own tag (a cold image both times); ids carry the spec hash.
      const mask = (s: string): string =>
        s
          .replaceAll(files, '<dir>')
          .replaceAll(`:${tag}`, ':<tag>')
          .replace(/default\.app\.app\.[0-9a-f]{8}-\d+/g, '<id>')
          .replace(/ \(\d+\.\ds\)$/gm, ' (<duration>)')
          // A pull's per-layer lines (size, time, rate) come only for layers not already here:
          // the second session's tag shares the first one's layers (progress.test checks them).
          .replace(/^ {2}\S+: layer [0-9a-f]{12} .*\n/gm, '');
      out.push(`$ berth ${args.map(mask).join(' ')}\nexit ${r.code}\n${mask(r.stdout)}--- stderr\n${mask(r.stderr)}`);
    };
    await run(['diff', '-f', f]);
    await run(['apply', '-f', f]);
    await run(['apply', '-f', f]);
    await run(['diff', '-f', f]);
    await fsp.writeFile(f, podYaml('app', '3601', 'IfNotPresent', image));
    await run(['diff', '-f', f]);
    await run(['apply', '-f', f, '--dry-run']);
    await run(['apply', '-f', f]);
    await run(['apply', '-f', bad]);
    await run(['apply', '-f', never]);
    // Recorded though blocked (the kubelet's ErrImageNeverPull): status lists it with the reason.
    const st = JSON.parse((await berth(env, ['status', 'never', '-o', 'json'])).stdout) as { pods: { key: string; status: string; lastError: string }[] };
    out.push(`status never: ${st.pods.map((p) => `${p.key} ${p.status} ${p.lastError}`).join('; ').replaceAll(`:${tag}`, ':<tag>')}`);
    await run(['logs', 'app', '--tail', '5']);
    await run(['logs', 'nope']);
    await run(['delete', '-f', f]);
    await run(['delete', 'pod', 'app']);
    await run(['delete', '-f', never]);
    await run(['apply', '-f', path.join(files, 'missing.yaml')]);
    return out;
  };

  test('the same commands give the same output and exit codes with and without berth up', async (t) => {
    if (!ok) return t.skip();
    const files = path.join(env.dir, 'cli');
    await fsp.mkdir(files);
    const alone = await session(files, '1.0');

    await pushImage(demo?.registry.url ?? '', 'berth/demo', '2.0', await buildBusyboxImage());
    const watched = path.join(env.dir, 'watched');
    await fsp.mkdir(watched);
    const up = berthUp(env, watched);
    try {
      await waitFor('daemon socket', async () => (statSync(path.join(env.state, 'berth.sock'), { throwIfNoEntry: false }) !== undefined ? true : undefined), 30_000);
      assert.equal(statSync(path.join(env.state, 'berth.sock')).mode & 0o777, 0o600, 'socket is root-only');
      const through = await session(files, '2.0');
      for (let i = 0; i < alone.length; i++) assert.equal(through[i], alone[i]);
      assert.equal(through.length, alone.length);
      for (const s of through) assert.doesNotMatch(s, /ERR_LOCKED|state is locked|waiting for the state lock/);
      const images = await berth(env, ['images', 'ls']);
      assert.equal(images.code, 0);
      assert.match(images.stdout, /berth\/demo:1\.0 .*\n.*berth\/demo:2\.0 /);
      // One writer: the daemon kept the state lock throughout.
      const holder = (await fsp.readFile(path.join(env.state, 'berth.lock'), 'utf8')).trim();
      assert.equal(holder, String(up.child.pid));
      // The commands above really went through the daemon: its log saw them.
      assert.match(up.output(), /container default\/app\/app: replace/);
    } finally {
      up.child.kill('SIGTERM');
      await new Promise((r) => up.child.once('exit', r));
    }
    assert.match(up.output(), /stopped watching; containers keep running/);
    // A sanity check on the script itself: it did create, replace and delete.
    const all = alone.join('\n');
    assert.match(all, /\+ pod default\/app/);
    assert.match(all, /~ container default\/app\/app: replace/);
    assert.match(all, /- pod default\/app: delete/);
    assert.match(all, /exit 2\n[\s\S]*comand/);
    assert.match(all, /delete pod default\/app: not found/);
    assert.match(all, /status never: default\/never Pending .*imagePullPolicy is Never/);
  });
});

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, CLI, cleanupEnv, makeEnv, startDaemon, stopDaemon, type BerthEnv } from '../helpers/berth.js';

/**
 * Live progress (issue 12): a step that waits prints its line when it starts and again, with
 * its duration, when it ends — in-process and through the daemon's socket alike. The CLI's
 * output stream is read with a timestamp per line.
 */
describe('e2e: apply prints each step as it starts and ends', { timeout: 300_000 }, () => {
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

  const podYaml = (arg: string): string => `apiVersion: v1
kind: Pod
metadata:
  name: slow
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 5
  containers:
    - name: app
      image: ${demo?.registry.host ?? ''}/berth/demo:1.0
      command: ["sleep", "${arg}"]
`;

  /** Runs berth with its stdout lines stamped by arrival (ms after spawn). */
  const stamped = (args: string[]): Promise<{ code: number; lines: { at: number; text: string }[]; stderr: string }> =>
    new Promise((resolve, reject) => {
      const began = Date.now();
      const child = spawn(process.execPath, [CLI, '--root', env.root, '--state', env.state, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      const lines: { at: number; text: string }[] = [];
      let buf = '';
      let stderr = '';
      child.stdout.on('data', (b: Buffer) => {
        buf += b.toString();
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          lines.push({ at: Date.now() - began, text: buf.slice(0, i) });
          buf = buf.slice(i + 1);
        }
      });
      child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code: code ?? -1, lines, stderr }));
    });

  const replaceShowsProgress = async (file: string, arg: string): Promise<void> => {
    await fsp.writeFile(file, podYaml(arg));
    const r = await stamped(['apply', '-f', file]);
    assert.equal(r.code, 0, r.stderr);
    const start = r.lines.find((l) => /^~ container default\/slow\/app: replace .* \.\.\.$/.test(l.text));
    const end = r.lines.find((l) => /^~ container default\/slow\/app: replace .* \((\d+\.\d)s\)$/.test(l.text));
    assert.ok(start !== undefined && end !== undefined, JSON.stringify(r.lines));
    // sleep ignores SIGTERM: the grace period (5 s) runs out before the replace ends.
    const took = Number(/\((\d+\.\d)s\)$/.exec(end.text)?.[1]);
    assert.ok(took >= 4.9 && took < 8, `the end line says ${took}s`);
    assert.ok(end.at - start.at >= 4800, `the start line came ${end.at - start.at} ms before the end line, not with it`);
  };

  test('in-process and through berth up: the start line of a replace at once, its end line with the duration', async (t) => {
    if (!ok) return t.skip();
    const file = path.join(env.dir, 'slow.yaml');
    await fsp.writeFile(file, podYaml('3600'));
    const first = await berth(env, ['apply', '-f', file]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /^\+ container default\/slow\/app: start .* \(\d+\.\ds\)$/m);
    await replaceShowsProgress(file, '3601');
    const watched = path.join(env.dir, 'watched');
    await fsp.mkdir(watched);
    const up = await startDaemon(env, watched);
    try {
      await replaceShowsProgress(file, '3602');
    } finally {
      await stopDaemon(up);
    }
    assert.equal((await berth(env, ['delete', '-f', file])).code, 0);
  });
});

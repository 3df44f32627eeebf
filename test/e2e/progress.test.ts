import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { buildBusyboxImage, pushImage } from '../../scripts/fixture-image.js';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { requireE2E, requireTools } from '../helpers/prereq.js';
import { berth, CLI, cleanupEnv, makeEnv, startDaemon, stopDaemon, type BerthEnv } from '../helpers/berth.js';

/**
 * Live progress (issue 12): a step that waits prints its line when it starts and again, with
 * its duration, when it ends — in-process and through the daemon's socket alike. The CLI's
 * output stream is read with a timestamp per line. Waiting out a grace period is one line off a
 * TTY and a countdown rewritten in place on one (script(1) gives the CLI a pty); a pull prints a
 * line per layer written; `--quiet` prints no progress.
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

  /** Runs berth with its stdout lines stamped by arrival (ms after spawn); `tty`: under script(1), on a pty. */
  const stamped = (args: string[], tty = false): Promise<{ code: number; lines: { at: number; text: string }[]; stderr: string }> =>
    new Promise((resolve, reject) => {
      const began = Date.now();
      const argv = [CLI, '--root', env.root, '--state', env.state, ...args];
      const quote = (a: string): string => `'${a.replaceAll("'", "'\\''")}'`;
      // script -e: its exit code is the command's; the pty merges stderr into the output.
      const child = tty
        ? spawn('script', ['-q', '-e', '-c', [process.execPath, ...argv].map(quote).join(' '), '/dev/null'], { stdio: ['ignore', 'pipe', 'pipe'] })
        : spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
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

  const grace = /^ {2}stopping default\/slow\/app: SIGTERM sent, SIGKILL in (\d)s$/;

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
    // Not a TTY: the wait is exactly one line, a second in (WAIT_NOTICE_MS), well before the end.
    const waits = r.lines.filter((l) => grace.test(l.text));
    assert.equal(waits.length, 1, JSON.stringify(r.lines));
    const w = waits[0]!;
    const left = Number(grace.exec(w.text)?.[1]);
    assert.ok(left >= 3 && left <= 4, `the grace line says SIGKILL in ${left}s`);
    assert.ok(w.at - start.at >= 900 && end.at - w.at >= 2500, `grace line ${w.at - start.at} ms after the start, ${end.at - w.at} ms before the end`);
    assert.ok(r.lines.every((l) => !l.text.includes('\x1b') && !l.text.includes('\r')), 'nothing rewritten in place off a TTY');
  };

  /** On a pty: the countdown is rewritten in place (\r, erase line) and gone when the step ends. */
  const replaceShowsCountdown = async (file: string, arg: string): Promise<void> => {
    await fsp.writeFile(file, podYaml(arg));
    const r = await stamped(['apply', '-f', file], true);
    assert.equal(r.code, 0, JSON.stringify(r.lines));
    const raw = r.lines.map((l) => l.text).join('\n');
    const shown = [...raw.matchAll(/stopping default\/slow\/app: SIGTERM sent, SIGKILL in (\d)s/g)].map((m) => Number(m[1]));
    assert.ok(new Set(shown).size >= 3, `the countdown moved: ${JSON.stringify(shown)}`);
    assert.deepEqual(shown, [...shown].sort((a, b) => b - a), 'it counts down');
    assert.ok(raw.includes('\r\x1b[K'), 'rewritten in place');
    // Each countdown line is erased before the next text: the end line starts right after an erase.
    assert.match(raw, /\r\x1b\[K~ container default\/slow\/app: replace .* \(\d+\.\ds\)/);
  };

  /** One line per layer written: the image, the layer, its size, time and rate. */
  const layerLine = (image: string): RegExp => new RegExp(`^  ${image.replace(/[.]/g, '\\.')}: layer [0-9a-f]{12} [\\d.]+ (B|kB|MB) in \\d+\\.\\ds( \\([\\d.]+ (B|kB|MB|GB)/s\\))?$`);

  test('in-process and through berth up: the start line of a replace at once, one grace line, its end line with the duration; layers as pulled', async (t) => {
    if (!ok) return t.skip();
    const tty = requireTools(t, ['script']);
    const file = path.join(env.dir, 'slow.yaml');
    await fsp.writeFile(file, podYaml('3600'));
    const image = `${demo?.registry.host ?? ''}/berth/demo:1.0`;
    const first = await berth(env, ['apply', '-f', file]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /^\+ container default\/slow\/app: start .* \(\d+\.\ds\)$/m);
    // A fresh root: the image is pulled, and each of its two layers gets its line.
    assert.equal(first.stdout.split('\n').filter((l) => layerLine(image).test(l)).length, 2, first.stdout);
    await replaceShowsProgress(file, '3601');
    if (tty) await replaceShowsCountdown(file, '3602');
    const watched = path.join(env.dir, 'watched');
    await fsp.mkdir(watched);
    const up = await startDaemon(env, watched);
    try {
      await replaceShowsProgress(file, '3603');
      if (tty) await replaceShowsCountdown(file, '3604');
      // A pull through the daemon: a second tag whose last layer is new (a different page).
      await pushImage(demo?.registry.url ?? '', 'berth/demo', 'progress', await buildBusyboxImage({ page: '<h1>progress</h1>\n' }));
      const tagged = `${demo?.registry.host ?? ''}/berth/demo:progress`;
      const pull = await stamped(['images', 'pull', tagged]);
      assert.equal(pull.code, 0, pull.stderr);
      const texts = pull.lines.map((l) => l.text);
      assert.equal(texts[0], `~ image ${tagged}: pull (requested) ...`);
      assert.equal(texts.filter((l) => layerLine(tagged).test(l)).length, 1, 'the layer already here is not downloaded again');
      assert.match(texts.at(-2) ?? '', new RegExp(`^~ image ${tagged.replace(/[.]/g, '\\.')}: pull \\(requested\\) \\(\\d+\\.\\ds\\)$`));
      assert.match(texts.at(-1) ?? '', /^\S+ sha256:[0-9a-f]{64}$/);
      // --quiet: the result only; a failure still says why, with its exit code.
      const quiet = await berth(env, ['images', 'pull', '--quiet', tagged]);
      assert.deepEqual([quiet.code, quiet.stdout.split('\n').length], [0, 2], quiet.stdout);
      const missing = await berth(env, ['images', 'pull', '-q', `${demo?.registry.host ?? ''}/berth/demo:nope`]);
      assert.deepEqual([missing.code, missing.stdout], [1, '']);
      assert.match(missing.stderr, /^error ERR_NOT_FOUND: pull .*not found/m);
    } finally {
      await stopDaemon(up);
    }
    await fsp.writeFile(file, podYaml('3605'));
    const quietApply = await berth(env, ['apply', '-q', '-f', file]);
    assert.deepEqual([quietApply.code, quietApply.stdout, quietApply.stderr], [0, '', '']);
    const quietDelete = await berth(env, ['delete', '--quiet', '-f', file]);
    assert.deepEqual([quietDelete.code, quietDelete.stdout, quietDelete.stderr], [0, '', '']);
  });
});

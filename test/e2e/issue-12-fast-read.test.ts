import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { parseFastRead } from '../../src/lib/fast-read.js';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, cleanupEnv, makeEnv, startDaemon, stopDaemon, waitFor, type BerthEnv, type RunResult } from '../helpers/berth.js';

/**
 * Issue 12, fast reads: `ps`/`status` answered by a running daemon before commander loads
 * (lib/fast-read) print byte for byte what the commander path prints for the same state, and
 * anything the fast path does not take — a flag after the command that commander reads as a
 * global one, `-o yaml`, no daemon, a dead daemon's socket — goes the normal way.
 */
describe('e2e: the ps/status fast path prints what the commander path prints', { timeout: 300_000 }, () => {
  let demo: DemoFixture | undefined;
  let env: BerthEnv;
  let ok = true;
  let up: Awaited<ReturnType<typeof startDaemon>> | undefined;

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv();
    demo = await startDemoFixture();
  });
  after(async () => {
    if (up !== undefined) await stopDaemon(up);
    if (env !== undefined) await cleanupEnv(env);
    await demo?.stop();
  });

  const pod = (name: string, labels: string, containers: { name: string; command: string }[], restartPolicy = 'Always'): string => `apiVersion: v1
kind: Pod
metadata:
  name: ${name}
  labels: ${labels}
spec:
  hostNetwork: true
  restartPolicy: ${restartPolicy}
  terminationGracePeriodSeconds: 0
  containers:
${containers.map((c) => `    - name: ${c.name}\n      image: ${demo?.registry.host ?? ''}/berth/demo:1.0\n      command: ["sh", "-c", ${JSON.stringify(c.command)}]\n`).join('')}`;

  /** AGE, "next try in" and the status' generatedAt are read from the clock: two runs differ there. */
  const steady = (s: string): string => s.replace(/\b\d+[smhd]\b/g, '<age>').replace(/"generatedAt": "[^"]*"/, '"generatedAt": "<now>"');
  const args = (a: string[]): string[] => ['--root', env.root, '--state', env.state, ...a];

  const same = (fast: RunResult, normal: RunResult, what: string): void => {
    assert.equal(fast.code, normal.code, `${what}: exit codes\n${fast.stderr}\n${normal.stderr}`);
    assert.equal(steady(fast.stdout), steady(normal.stdout), `${what}: stdout`);
    assert.equal(fast.stderr, normal.stderr, `${what}: stderr`);
  };

  test('ps, ps -o wide|json, names, -l, status, status -o wide|json: the same bytes by either path; no daemon or a dead one: the normal path', async (t) => {
    if (!ok) return t.skip();
    const file = path.join(env.dir, 'pods.yaml');
    await fsp.writeFile(
      file,
      [
        pod('web', '{ app: web }', [{ name: 'app', command: "trap 'exit 0' TERM; sleep 3600 & wait" }]),
        pod('duo', '{ app: duo, tier: x }', [
          { name: 'a', command: "trap 'exit 0' TERM; sleep 3600 & wait" },
          { name: 'b', command: "trap 'exit 0' TERM; sleep 3600 & wait" },
        ]),
        pod('done', '{ app: done }', [{ name: 'once', command: 'exit 3' }], 'Never'),
      ].join('---\n'),
    );
    assert.equal((await berth(env, ['apply', '-f', file])).code, 0);
    await waitFor('done exited', async () => ((await berth(env, ['ps', 'done'])).stdout.includes('exited(3)') ? true : undefined));
    const watched = path.join(env.dir, 'watched');
    await fsp.mkdir(watched);
    up = await startDaemon(env, watched);

    const cases: string[][] = [
      ['ps'],
      ['pods', '-o', 'wide'],
      ['ps', '--output=json'],
      ['ps', 'web', 'duo'],
      ['ps', 'web', 'nope'],
      ['ps', 'nope'],
      ['ps', '-n', 'other', 'web'],
      ['ps', '-l', 'app=duo'],
      ['ps', '-l', 'app in (x'],
      ['status'],
      ['status', '-o', 'wide'],
      ['status', '-o', 'json'],
      ['status', 'done', 'nope'],
      ['status', '--selector', '!tier'],
    ];
    for (const c of cases) {
      assert.notEqual(parseFastRead(args(c)), undefined, `${c.join(' ')} is taken by the fast path`);
      // commander reads a global flag after the command too; the fast path does not take it.
      const normalArgs = [...c, '--log-level', 'warn'];
      assert.equal(parseFastRead(args(normalArgs)), undefined, `${normalArgs.join(' ')} goes to commander`);
      const fast = await berth(env, c);
      const normal = await berth(env, normalArgs);
      same(fast, normal, c.join(' '));
    }
    const listed = await berth(env, ['ps']);
    assert.equal(listed.stdout.trim().split('\n').length, 5, listed.stdout);
    assert.match(listed.stdout, /^default\/done\s+once\s+exited\(3\)\s+-\s+0\s/m);
    const missing = await berth(env, ['ps', 'web', 'nope']);
    assert.equal(missing.code, 1);
    assert.equal(missing.stderr, 'error ERR_NOT_FOUND: ps default/nope: no such pod\n');
    const badSelector = await berth(env, ['ps', '-l', 'app in (x']);
    assert.equal(badSelector.code, 2, 'a selector the daemon refuses: the normal path says why');

    const yaml = await berth(env, ['status', '-o', 'yaml']);
    assert.equal(parseFastRead(args(['status', '-o', 'yaml'])), undefined);
    assert.match(yaml.stdout, /^daemon:\n\s+pid: \d+/m);

    // A daemon killed outright leaves its socket behind: refused, so the normal path (in-process).
    await stopDaemon(up, 'SIGKILL');
    up = undefined;
    await fsp.access(path.join(env.state, 'berth.sock'));
    const alone = await berth(env, ['status']);
    assert.equal(alone.code, 0, alone.stderr);
    assert.match(alone.stderr, /^note: no berth up runs on this state/m);
    assert.equal(steady((await berth(env, ['ps'])).stdout), steady(listed.stdout), 'in-process ps lists the same');
    await fsp.rm(path.join(env.state, 'berth.sock'), { force: true });
    const noSocket = await berth(env, ['ps']);
    assert.equal(steady(noSocket.stdout), steady(listed.stdout));

    assert.equal((await berth(env, ['delete', '-f', file])).code, 0);
  });
});

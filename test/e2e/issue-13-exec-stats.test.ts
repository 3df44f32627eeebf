import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { ContainerStats } from '../../src/daemon/service.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, startDaemon } from '../helpers/berth.js';
import { PodSuite, waitRunning } from '../helpers/pod-suite.js';

/**
 * Issue 13, "Logs, exec, stats": `berth exec [-i] POD[/CTR] -- CMD` runs CMD through runc exec
 * in the container (its env), prints its output and exits with its exit code; `berth stats`
 * reads CPU, memory and pids from each running container's cgroup. Real runc and conmon,
 * hostNetwork pods of the demo image; the last test repeats both through a running daemon.
 */

type Stat = ContainerStats;

const MEM_LIMIT = 64 * 2 ** 20;

describe('e2e: berth exec and berth stats (issue 13)', { timeout: 300_000 }, () => {
  const suite = new PodSuite();

  before(async (t) => {
    if (!requireE2E(t)) return;
    await suite.setUp('berth-exec-');
    const { env, dir, image } = suite;
    await fsp.writeFile(
      path.join(dir, 'ex.yaml'),
      `apiVersion: v1
kind: Pod
metadata: {name: ex}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
    - name: main
      image: ${image}
      command: ["sh", "-c", "while true; do sleep 1; done"]
      env: [{name: WHO, value: main-container}]
    - name: side
      image: ${image}
      command: ["sh", "-c", "while true; do sleep 1; done"]
      resources: {limits: {memory: 64Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: busy}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
    - name: spin
      image: ${image}
      command: ["sh", "-c", "while :; do :; done"]
      resources: {limits: {cpu: 200m}}
`,
    );
    const r = await berth(env, ['apply', '-f', dir]);
    assert.equal(r.code, 0, r.stderr);
    await waitRunning(env, ['ex', 'busy']);
  });

  after(() => suite.tearDown());

  test('exec prints the command\'s output and exits with its exit code', async (t) => {
    if (!suite.ok) return t.skip();
    const r = await berth(suite.env, ['exec', 'ex/main', '--', 'sh', '-c', 'echo out; echo err >&2; exit 7']);
    assert.equal(r.code, 7, r.stderr);
    assert.equal(r.stdout, 'out\n');
    assert.equal(r.stderr, 'err\n');
    const zero = await berth(suite.env, ['exec', 'ex/side', '--', 'true']);
    assert.equal(zero.code, 0, zero.stderr);
  });

  test('without CONTAINER exec runs in the first container, with its env, and names the others', async (t) => {
    if (!suite.ok) return t.skip();
    const r = await berth(suite.env, ['exec', 'ex', '--', 'sh', '-c', 'echo "$WHO"']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'main-container\n');
    assert.match(r.stderr, /Defaulted container "main" out of: main, side/);
  });

  test('-i passes stdin to the command; without it the command reads nothing', async (t) => {
    if (!suite.ok) return t.skip();
    const r = await berth(suite.env, ['exec', '-i', 'ex/side', '--', 'cat'], { input: 'hello\nfrom stdin\n' });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'hello\nfrom stdin\n');
    const n = await berth(suite.env, ['exec', 'ex/side', '--', 'wc', '-c'], { input: 'ignored\n' });
    assert.equal(n.code, 0, n.stderr);
    assert.equal(n.stdout.trim(), '0');
  });

  test('a command that does not exist exits 127 with runc\'s words', async (t) => {
    if (!suite.ok) return t.skip();
    const r = await berth(suite.env, ['exec', 'ex/main', '--', '/no/such/tool', 'x']);
    assert.equal(r.code, 127, r.stderr);
    assert.match(r.stderr, /\/no\/such\/tool/);
    assert.match(r.stderr, /no such file or directory|not found/i);
  });

  test('a missing pod or container exits 1 naming it; a missing -- is refused', async (t) => {
    if (!suite.ok) return t.skip();
    const pod = await berth(suite.env, ['exec', 'nope', '--', 'true']);
    assert.equal(pod.code, 1);
    assert.match(pod.stderr, /^error ERR_NOT_FOUND: exec default\/nope: no such pod$/m);
    const ctr = await berth(suite.env, ['exec', 'ex/zzz', '--', 'true']);
    assert.equal(ctr.code, 1);
    assert.match(ctr.stderr, /exec default\/ex\/zzz: no such container \(containers: main, side\)/);
    // -t works without a local terminal too (issue-13-exec-tty covers it under a pty).
    const tty = await berth(suite.env, ['exec', '-t', 'ex/main', '--', 'sh', '-c', 'exit 4']);
    assert.equal(tty.code, 4, tty.stderr);
    const dashes = await berth(suite.env, ['exec', 'ex/main', 'true']);
    assert.equal(dashes.code, 2);
    assert.match(dashes.stderr, /put the command after --/);
  });

  test('stats reads CPU, memory and pids from each running container\'s cgroup', async (t) => {
    if (!suite.ok) return t.skip();
    const r = await berth(suite.env, ['stats', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    const stats = JSON.parse(r.stdout) as Stat[];
    assert.deepEqual(stats.map((s) => `${s.pod}/${s.container}`), ['default/busy/spin', 'default/ex/main', 'default/ex/side']);
    for (const s of stats) {
      assert.ok(s.memory.bytes > 0, `${s.container}: memory ${s.memory.bytes}`);
      assert.ok(s.pids.current >= 1, `${s.container}: pids ${s.pids.current}`);
      assert.ok(s.cpu.seconds >= 0 && s.cpu.percent >= 0);
      assert.match(s.id, new RegExp(`^default\\.${s.pod.split('/')[1] ?? ''}\\.${s.container}\\.`));
    }
    const side = stats.find((s) => s.container === 'side');
    const main = stats.find((s) => s.container === 'main');
    const spin = stats.find((s) => s.container === 'spin');
    assert.equal(side?.memory.limitBytes, MEM_LIMIT);
    assert.equal(main?.memory.limitBytes, null);
    // A busy loop capped at 200m: clearly busy over the sample, and at most ~0.2 CPU (some slack for the quota period).
    assert.ok((spin?.cpu.percent ?? 0) > 2 && (spin?.cpu.percent ?? 0) < 35, `spin: ${spin?.cpu.percent}%`);
    assert.ok((spin?.cpu.seconds ?? 0) > 0);
    assert.ok((main?.cpu.percent ?? 100) < 10, `main: ${main?.cpu.percent}%`);

    const one = await berth(suite.env, ['stats', 'ex']);
    assert.equal(one.code, 0, one.stderr);
    const lines = one.stdout.trim().split('\n');
    assert.match(lines[0] ?? '', /^POD\s+CONTAINER\s+CPU %\s+CPU TIME\s+MEM USAGE \/ LIMIT\s+MEM %\s+PIDS$/);
    assert.equal(lines.length, 3);
    assert.match(lines.find((l) => l.includes('side')) ?? '', /default\/ex\s+side\s+[\d.]+%\s+[\d.]+s\s+[\d.]+ [kMG]?B \/ 67\.1 MB\s+[\d.]+%\s+\d+/);
    const missing = await berth(suite.env, ['stats', 'ex', 'nope']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^error ERR_NOT_FOUND: stats default\/nope: no such pod or no running container$/m);
    assert.match(missing.stdout, /default\/ex\s+main/);
  });

  test('through a running daemon: exec still returns the exit code and stats the same containers', async (t) => {
    if (!suite.ok) return t.skip();
    const empty = path.join(suite.env.dir, 'watched');
    await fsp.mkdir(empty);
    suite.daemon = await startDaemon(suite.env, empty);
    const r = await berth(suite.env, ['exec', '-i', 'ex/side', '--', 'sh', '-c', 'cat; exit 3'], { input: 'via daemon\n' });
    assert.equal(r.code, 3, r.stderr);
    assert.equal(r.stdout, 'via daemon\n');
    const pod = await berth(suite.env, ['exec', 'nope', '--', 'true']);
    assert.equal(pod.code, 1);
    assert.match(pod.stderr, /exec default\/nope: no such pod/);
    const s = await berth(suite.env, ['stats', '-o', 'json', 'ex']);
    assert.equal(s.code, 0, s.stderr);
    assert.deepEqual((JSON.parse(s.stdout) as Stat[]).map((x) => x.container), ['main', 'side']);
  });
});

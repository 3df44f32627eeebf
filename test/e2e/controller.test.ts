import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { buildBusyboxImage, pushImage } from '../../scripts/fixture-image.js';
import { freePort } from '../helpers/registry.js';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, CLI, cleanupEnv, makeEnv, startDaemon, stopDaemon, waitFor, type berthUp, type BerthEnv } from '../helpers/berth.js';
import { validateEvents, validateStatus } from '../helpers/berth-schemas.js';

/**
 * `berth up` as the daemon (issue 11): exits restart at once with crash-loop backoff that
 * survives a daemon restart, one daemon per state, events and status, apply --wait, paused
 * intent and runc-paused containers.
 */

interface StatusPod {
  key: string;
  status: string;
  ready: string;
  restarts: number;
  nextTryAt: string | null;
  lastError: string;
  conditions: { type: string; status: string; reason: string }[];
  containers: { name: string; id: string | null; state: string; pid: number | null; restarts: number; startedAt: string | null; finishedAt: string | null; nextRestartAt: string | null; exitCode: number | null; reason: string | null }[];
}

describe('e2e: controller (berth up is the daemon)', { timeout: 900_000 }, () => {
  let demo: DemoFixture | undefined;
  let env: BerthEnv;
  let dir: string;
  let ok = true;
  let up: ReturnType<typeof berthUp> | undefined;

  const podYaml = (name: string, command: string[], extra = ''): string => `apiVersion: v1
kind: Pod
metadata:
  name: ${name}
${extra}spec:
  hostNetwork: true
  restartPolicy: Always
  terminationGracePeriodSeconds: 1
  containers:
    - name: app
      image: ${demo?.registry.host ?? ''}/berth/demo:1.0
      command: ${JSON.stringify(command)}
`;

  const status = async (): Promise<{ daemon: { pid: number } | null; pods: StatusPod[] }> => {
    const r = await berth(env, ['status', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    const parsed = JSON.parse(r.stdout) as { daemon: { pid: number } | null; pods: StatusPod[] };
    assert.deepEqual(validateStatus(parsed), [], 'status -o json matches schemas/status.json');
    return parsed;
  };
  const pod = async (key: string): Promise<StatusPod | undefined> => (await status()).pods.find((p) => p.key === key);

  const startUp = (): Promise<ReturnType<typeof berthUp>> => startDaemon(env, dir);
  const killUp = (u: ReturnType<typeof berthUp>): Promise<void> => stopDaemon(u);

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv();
    demo = await startDemoFixture();
    dir = path.join(env.dir, 'site');
    await fsp.mkdir(dir);
  });
  after(async () => {
    if (up !== undefined) await killUp(up);
    if (env !== undefined) await cleanupEnv(env);
    await demo?.stop();
  });

  test('crash loop: restarted within 1 s of its exit, then back-off 10 s → 20 s → 40 s; status shows CrashLoopBackOff; a daemon restart keeps the back-off', async (t) => {
    if (!ok) return t.skip();
    await fsp.writeFile(path.join(dir, 'crash.yaml'), podYaml('crash', ['sh', '-c', 'echo attempt; sleep 2; exit 3']));
    up = await startUp();
    // Each attempt as it is first seen running: its start, and the exit before it.
    const attempts = new Map<number, { startedAt: number; prevFinishedAt: number }>();
    const record = async (): Promise<StatusPod | undefined> => {
      const p = await pod('default/crash');
      const c = p?.containers[0];
      if (p !== undefined && c?.state === 'running' && c.startedAt !== null && !attempts.has(c.restarts)) {
        attempts.set(c.restarts, { startedAt: Date.parse(c.startedAt), prevFinishedAt: c.finishedAt !== null ? Date.parse(c.finishedAt) : NaN });
      }
      return p;
    };
    await waitFor('third restart running', async () => ((await record())?.containers[0]?.restarts === 3 && attempts.has(3) ? true : undefined), 90_000, 150);
    const gap = (n: number): number => {
      const a = attempts.get(n);
      assert.ok(a !== undefined, `attempt ${n} seen running`);
      return a.startedAt - a.prevFinishedAt;
    };
    // conmon's exit file time is the exit; the restart comes from the exit watch, not a resync.
    assert.ok(gap(1) >= 0 && gap(1) <= 1000, `first restart ${gap(1)} ms after the exit`);
    assert.ok(gap(2) >= 10_000 && gap(2) <= 11_500, `second restart ${gap(2)} ms after the exit (back-off 10 s)`);
    assert.ok(gap(3) >= 20_000 && gap(3) <= 21_500, `third restart ${gap(3)} ms after the exit (back-off 20 s)`);

    // After the third attempt exits: CrashLoopBackOff, next try 40 s after that exit.
    const looping = await waitFor('CrashLoopBackOff', async () => {
      const p = await pod('default/crash');
      return p?.status === 'CrashLoopBackOff' && p.nextTryAt !== null ? p : undefined;
    }, 30_000, 150);
    const c = looping.containers[0];
    assert.ok(c !== undefined && c.finishedAt !== null && c.nextRestartAt !== null);
    assert.equal(c.exitCode, 3);
    assert.equal(c.reason, 'Error');
    assert.equal(Date.parse(c.nextRestartAt) - Date.parse(c.finishedAt), 40_000);
    assert.equal(looping.restarts, 3);
    assert.ok(looping.conditions.some((x) => x.type === 'Stalled' && x.status === 'True' && x.reason === 'CrashLoopBackOff'));
    const table = await berth(env, ['status']);
    assert.match(table.stdout, /default\/crash\s+0\/1\s+CrashLoopBackOff \(next try in \d+s\)\s+3\s/);
    // Regression logs-previous-during-crashloopbackoff: in the back-off the attempt that crashed is
    // the previous one (the kubelet's lastState.terminated), as `kubectl logs --previous` shows it.
    const backingOff = await berth(env, ['logs', '--previous', 'crash']);
    assert.equal(backingOff.code, 0, backingOff.stderr);
    assert.equal(backingOff.stdout, 'attempt\n');

    // kill -9 of the daemon, a new one: the back-off continues where it was (no restart before it is due).
    await killUp(up);
    up = await startUp();
    const dueAt = Date.parse(c.nextRestartAt);
    const again = await pod('default/crash');
    assert.equal(again?.containers[0]?.nextRestartAt, c.nextRestartAt, 'the same next try after the daemon restart');
    assert.equal(again?.restarts, 3);
    const fourth = await waitFor('fourth attempt', async () => {
      const p = await pod('default/crash');
      const x = p?.containers[0];
      return x?.restarts === 4 && x.startedAt !== null ? x : undefined;
    }, 60_000, 150);
    const startedAt = Date.parse(fourth.startedAt ?? '');
    assert.ok(startedAt >= dueAt && startedAt <= dueAt + 1500, `fourth restart at ${startedAt - dueAt} ms from when it was due`);

    // logs --previous shows the attempt before; events tell the story in order.
    const prev = await berth(env, ['logs', '--previous', 'crash']);
    assert.equal(prev.code, 0, prev.stderr);
    assert.equal(prev.stdout, 'attempt\n');
    const ev = await berth(env, ['events', '--for', 'crash', '-o', 'json']);
    const events = JSON.parse(ev.stdout) as { reason: string; message: string }[];
    assert.deepEqual(validateEvents(events), []);
    const reasons = events.map((e) => e.reason);
    // Nothing ran when the daemon restarted (the container waited out its back-off): nothing adopted.
    assert.ok(!reasons.includes('Adopted'));
    // One BackOff per exit that waits: the daemon restart does not repeat it.
    assert.equal(reasons.filter((r) => r === 'BackOff').length, 3, reasons.join(','));
    for (const r of ['Created', 'Started', 'Exited', 'Restarted', 'BackOff']) assert.ok(reasons.includes(r), `event ${r} in ${reasons.join(',')}`);
    assert.ok(reasons.indexOf('Created') < reasons.indexOf('Started') && reasons.indexOf('Started') < reasons.indexOf('Exited') && reasons.indexOf('Exited') < reasons.indexOf('Restarted'));
    await fsp.rm(path.join(dir, 'crash.yaml'));
    await waitFor('crash pod pruned', async () => ((await pod('default/crash')) === undefined ? true : undefined), 30_000);
  });

  test('one daemon per state: a second berth up refuses and names the running one', async (t) => {
    if (!ok) return t.skip();
    up ??= await startUp();
    const second = await berth(env, ['up', dir], { timeoutMs: 30_000 });
    assert.equal(second.code, 1);
    assert.match(second.stderr, new RegExp(`another berth up already runs .*\\(pid ${up.child.pid ?? 0}\\)`));
  });

  test('apply --wait: exit 0 once Ready; exit 1 naming the pod and the reason on timeout', async (t) => {
    if (!ok) return t.skip();
    up ??= await startUp();
    const good = path.join(env.dir, 'good.yaml');
    await fsp.writeFile(good, podYaml('sleeper', ['sleep', '3600']));
    const r = await berth(env, ['apply', '-f', good, '--wait', '--timeout', '30s']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /ready: default\/sleeper/);
    assert.equal((await pod('default/sleeper'))?.status, 'Running');

    const bad = path.join(env.dir, 'bad.yaml');
    await fsp.writeFile(bad, podYaml('failing', ['sh', '-c', 'exit 7']));
    const started = Date.now();
    const w = await berth(env, ['apply', '-f', bad, '--wait', '--timeout', '4s']);
    assert.equal(w.code, 1, w.stdout);
    assert.ok(Date.now() - started < 15_000);
    assert.match(w.stderr, /pod default\/failing not ready after 4s: CrashLoopBackOff: default\/failing\/app: exited with code 7/);
    assert.equal((await berth(env, ['delete', '-f', bad])).code, 0);
    // regression wait-ready-on-a-container-that-exits-at-once: alive when its start is observed (50 ms), dead
    // by the next look; one Ready reading used to end the wait with exit 0.
    const late = path.join(env.dir, 'late.yaml');
    await fsp.writeFile(late, podYaml('late', ['sh', '-c', 'sleep 0.05; exit 7']));
    const l = await berth(env, ['apply', '-f', late, '--wait', '--timeout', '3s']);
    assert.equal(l.code, 1, l.stdout);
    assert.match(l.stderr, /pod default\/late not ready after 3s/);
    assert.equal((await berth(env, ['delete', '-f', late])).code, 0);
  });

  test('a container frozen with runc pause is reported paused and is not replaced', async (t) => {
    if (!ok) return t.skip();
    up ??= await startUp();
    const before = (await pod('default/sleeper'))?.containers[0];
    assert.ok(before?.id !== null && before?.id !== undefined && before.pid !== null);
    const runc = ['--root', path.join(env.state, 'runc')];
    execFileSync('runc', [...runc, 'pause', before.id]);
    try {
      // A resync pass (enqueued by a manifest change elsewhere would do too) must not replace it.
      const r = await berth(env, ['apply', '-f', path.join(env.dir, 'good.yaml')]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /no changes/);
      const ps = JSON.parse((await berth(env, ['ps', '-o', 'json'])).stdout) as { key: string; containers: { state: string; pid: number }[] }[];
      const now = ps.find((p) => p.key === 'default/sleeper')?.containers[0];
      assert.equal(now?.pid, before.pid);
    } finally {
      execFileSync('runc', [...runc, 'resume', before.id]);
    }
    assert.equal((await pod('default/sleeper'))?.containers[0]?.pid, before.pid);
  });

  test('berth.dev/paused stops the pod and keeps it stopped; removing the annotation starts it again', async (t) => {
    if (!ok) return t.skip();
    up ??= await startUp();
    const file = path.join(dir, 'nap.yaml');
    await fsp.writeFile(file, podYaml('nap', ['sleep', '3600']));
    await waitFor('nap running', async () => ((await pod('default/nap'))?.status === 'Running' ? true : undefined), 30_000);
    await fsp.writeFile(file, podYaml('nap', ['sleep', '3600'], '  annotations:\n    berth.dev/paused: "true"\n'));
    const paused = await waitFor('nap paused', async () => {
      const p = await pod('default/nap');
      return p?.status === 'Paused' && p.containers[0]?.state !== 'running' ? p : undefined;
    }, 30_000);
    assert.equal(paused.ready, '0/1');
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal((await pod('default/nap'))?.status, 'Paused', 'stays stopped');
    await fsp.writeFile(file, podYaml('nap', ['sleep', '3600']));
    await waitFor('nap running again', async () => ((await pod('default/nap'))?.status === 'Running' ? true : undefined), 30_000);
  });

  test('ownership: apply and delete from the CLI of a pod the watched directory owns are refused naming the file; --force takes it', async (t) => {
    if (!ok) return t.skip();
    up ??= await startUp();
    const other = path.join(env.dir, 'nap-copy.yaml');
    await fsp.writeFile(other, podYaml('nap', ['sleep', '7200']));
    const r = await berth(env, ['apply', '-f', other]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`pod default/nap is owned by ${path.join(dir, 'nap.yaml').replaceAll('/', '\\/')}, which berth up watches`));
    const d = await berth(env, ['delete', 'pod', 'nap']);
    assert.equal(d.code, 1);
    assert.match(d.stderr, /owned by .*nap\.yaml/);
    assert.equal((await pod('default/nap'))?.status, 'Running');
    const forced = await berth(env, ['apply', '-f', other, '--force']);
    assert.equal(forced.code, 0, `${forced.stdout}\n${forced.stderr}`);
    assert.match(forced.stdout, /~ container default\/nap\/app: replace/);
    // The CLI source owns it now; the watched declaration is reported, not applied.
    const p = await waitFor('conflict reported', async () => {
      const x = await pod('default/nap');
      return x?.conditions.some((c) => c.type === 'Stalled' && c.reason === 'OwnedElsewhere') === true ? x : undefined;
    }, 10_000);
    assert.match(p.lastError, /nap\.yaml:\d+ also declares default\/nap/);
    assert.equal((await berth(env, ['delete', '-f', other])).code, 0);
    await fsp.rm(path.join(dir, 'nap.yaml'));
  });

  test('events --follow shows a pod\'s life in order as it happens', async (t) => {
    if (!ok) return t.skip();
    up ??= await startUp();
    const follower = spawn(process.execPath, [CLI, '--root', env.root, '--state', env.state, 'events', '--follow', '--for', 'story', '-o', 'json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    follower.stdout.on('data', (b: Buffer) => (text += b.toString()));
    try {
      await new Promise((r) => setTimeout(r, 500));
      const file = path.join(dir, 'story.yaml');
      await fsp.writeFile(file, podYaml('story', ['sh', '-c', 'sleep 1; exit 0']).replace('restartPolicy: Always', 'restartPolicy: Never'));
      const reasons = (): string[] => text.split('\n').filter((l) => l !== '').map((l) => (JSON.parse(l) as { reason: string }).reason);
      await waitFor('exit followed', async () => (reasons().includes('Exited') ? true : undefined), 30_000);
      await fsp.rm(file);
      await waitFor('prune followed', async () => (reasons().includes('Pruned') ? true : undefined), 30_000);
      const seen = reasons();
      const order = ['Created', 'Started', 'Ready', 'Exited', 'Pruned'];
      assert.deepEqual(seen.filter((r) => order.includes(r)), order, seen.join(','));
      const events = text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as unknown);
      assert.deepEqual(validateEvents(events), []);
      const exited = events.find((e) => (e as { reason: string }).reason === 'Exited') as { message: string; type: string };
      assert.match(exited.message, /exited with code 0 \(Completed\)/);
      assert.equal(exited.type, 'Normal');
    } finally {
      follower.kill('SIGINT');
    }
  });

  test('a berth.dev/v1 Image in the watched directory is pulled ahead of any pod', async (t) => {
    if (!ok || demo === undefined) return t.skip();
    up ??= await startUp();
    await pushImage(demo.registry.url, 'berth/demo', 'prepull', await buildBusyboxImage());
    await fsp.writeFile(path.join(dir, 'image.yaml'), `apiVersion: berth.dev/v1\nkind: Image\nmetadata:\n  name: demo\nspec:\n  ref: ${demo.registry.host}/berth/demo:prepull\n`);
    await waitFor('image pulled', async () => ((await berth(env, ['images', 'ls'])).stdout.includes('berth/demo:prepull') ? true : undefined), 30_000);
    const ev = JSON.parse((await berth(env, ['events', '-o', 'json'])).stdout) as { key: string; reason: string; message: string }[];
    assert.ok(ev.some((e) => e.key === `image/${demo?.registry.host ?? ''}/berth/demo:prepull` && e.reason === 'Pulled'), JSON.stringify(ev.slice(-5)));
    await fsp.rm(path.join(dir, 'image.yaml'));
  });

  test('--metrics-addr serves Prometheus text on loopback only; a non-loopback address is refused', async (t) => {
    if (!ok) return t.skip();
    if (up !== undefined) await killUp(up);
    const refused = await berth(env, ['up', dir, '--metrics-addr', '0.0.0.0:9464'], { timeoutMs: 30_000 });
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /loopback/);
    const port = await freePort();
    up = await startDaemon(env, dir, { extra: ['--metrics-addr', `127.0.0.1:${port}`] });
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    assert.match(text, /^# TYPE berth_pods gauge$/m);
    assert.match(text, /^berth_queue_pending \d+$/m);
    assert.match(text, /^berth_reconcile_runs_total \d+$/m);
  });
});

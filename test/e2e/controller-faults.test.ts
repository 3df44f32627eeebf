import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { promises as fsp, statSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import * as path from 'node:path';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, cleanupEnv, conmonProcesses, makeEnv, startDaemon, stopDaemon, waitFor, type berthUp, type BerthEnv } from '../helpers/berth.js';

/**
 * The daemon is never the reason a workload stops: a pull that hangs for one pod, a runc
 * that never answers for one container, and kill -9 of the daemon mid-pass leave every
 * other pod converging and every running container as it was.
 */

interface Pod {
  key: string;
  status: string;
  lastError: string;
  containers: { name: string; state: string; pid: number | null; id: string | null }[];
}

describe('e2e: controller faults', { timeout: 600_000 }, () => {
  let demo: DemoFixture | undefined;
  let env: BerthEnv;
  let dir: string;
  let ok = true;
  const ups: ReturnType<typeof berthUp>[] = [];
  let silent: Server | undefined;
  const sockets = new Set<Socket>();

  // `sleep` as PID 1 ignores SIGTERM, and a stop gives every container 2 s after the signal (the
  // kubelet's minimum): the sleepers here leave on SIGTERM, so a replace is not 2 s slower.
  const leaveOnTerm = (command: string[]): string[] => (command[0] === 'sleep' ? ['sh', '-c', `trap 'exit 0' TERM; sleep ${command.slice(1).join(' ')} & wait`] : command);
  const podYaml = (name: string, command: string[], image?: string, grace = 0): string => `apiVersion: v1
kind: Pod
metadata:
  name: ${name}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: ${grace}
  containers:
    - name: app
      image: ${image ?? `${demo?.registry.host ?? ''}/berth/demo:1.0`}
      command: ${JSON.stringify(leaveOnTerm(command))}
`;
  const pods = async (): Promise<Pod[]> => {
    const r = await berth(env, ['status', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as { pods: Pod[] }).pods;
  };
  const pidOf = async (key: string): Promise<number | undefined> => {
    const c = (await pods()).find((p) => p.key === key)?.containers[0];
    return c?.state === 'running' ? (c.pid ?? undefined) : undefined;
  };
  const stopUps = async (): Promise<void> => {
    for (const u of ups.splice(0)) await stopDaemon(u);
  };
  const startUp = async (opts: { env?: NodeJS.ProcessEnv } = {}): Promise<ReturnType<typeof berthUp>> => {
    const u = await startDaemon(env, dir, opts);
    ups.push(u);
    return u;
  };

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv();
    demo = await startDemoFixture();
    dir = path.join(env.dir, 'site');
    await fsp.mkdir(dir);
    // A "registry" that accepts connections and never says a word.
    silent = createServer((s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
    await new Promise<void>((r) => silent?.listen(0, '127.0.0.1', () => r()));
  });
  after(async () => {
    await stopUps();
    for (const s of sockets) s.destroy();
    silent?.close();
    if (env !== undefined) await cleanupEnv(env);
    await demo?.stop();
  });

  test('a pull that hangs for pod A never delays pod B: an edit of B converges within 1 s', async (t) => {
    if (!ok || silent === undefined) return t.skip();
    t.after(stopUps);
    const port = (silent.address() as { port: number }).port;
    await fsp.writeFile(path.join(dir, 'b.yaml'), podYaml('b', ['sleep', '3600']));
    await startUp();
    const first = await waitFor('b running', () => pidOf('default/b'), 20_000);
    await fsp.writeFile(path.join(dir, 'a.yaml'), podYaml('a', ['sleep', '3600'], `127.0.0.1:${port}/hang/forever:1`));
    await waitFor('a waits for its pull', async () => ((await pods()).find((p) => p.key === 'default/a')?.status === 'ContainerCreating' ? true : undefined), 30_000);
    assert.ok(sockets.size > 0, 'the pull is connected to the silent registry');
    const saved = Date.now();
    await fsp.writeFile(path.join(dir, 'b.yaml'), podYaml('b', ['sleep', '3601']));
    const second = await waitFor('b replaced', async () => {
      const p = await pidOf('default/b');
      return p !== undefined && p !== first ? p : undefined;
    }, 10_000, 20);
    const took = Date.now() - saved;
    assert.ok(took <= 1000, `edit of b converged in ${took} ms while a's pull hangs`);
    assert.ok(execFileSync('cat', [`/proc/${second}/cmdline`]).toString().includes('3601'));
    assert.equal((await pods()).find((p) => p.key === 'default/a')?.status, 'ContainerCreating', 'a still waits');
    await fsp.rm(path.join(dir, 'a.yaml'));
    await fsp.rm(path.join(dir, 'b.yaml'));
    await waitFor('a and b pruned', async () => ((await pods()).length === 0 ? true : undefined), 30_000);
    await stopUps();
  });

  test('regression: pull-waiter-lost — a pod re-planned while its pull is in flight starts as soon as the pull ends', async (t) => {
    if (!ok || demo === undefined) return t.skip();
    t.after(stopUps);
    // A gate in front of the registry: connections wait until the test opens it.
    const held: Socket[] = [];
    let open = false;
    const upstream = Number(demo.registry.host.split(':')[1]);
    const pipe = (c: Socket): void => {
      const u = connect(upstream, '127.0.0.1');
      c.pipe(u).pipe(c);
      u.on('error', () => c.destroy());
      c.on('error', () => u.destroy());
    };
    const gate = createServer((c) => (open ? pipe(c) : held.push(c)));
    await new Promise<void>((r) => gate.listen(0, '127.0.0.1', () => r()));
    t.after(() => {
      for (const c of held) c.destroy();
      gate.close();
    });
    const image = `127.0.0.1:${(gate.address() as { port: number }).port}/berth/demo:1.0`;
    await startUp();
    await fsp.writeFile(path.join(dir, 'late.yaml'), podYaml('late', ['sleep', '3600'], image));
    await waitFor('pull held at the gate', async () => (held.length > 0 ? true : undefined), 30_000, 20);
    // Re-plan the pod while its pull hangs (an edit), then let the pull through.
    await fsp.writeFile(path.join(dir, 'late.yaml'), podYaml('late', ['sleep', '3601'], image));
    await waitFor('edit seen', async () => ((await pods()).find((p) => p.key === 'default/late')?.status === 'ContainerCreating' ? true : undefined), 10_000);
    await new Promise((r) => setTimeout(r, 300));
    open = true;
    for (const c of held.splice(0)) pipe(c);
    const released = Date.now();
    await waitFor('late running', () => pidOf('default/late'), 10_000, 50);
    assert.ok(Date.now() - released < 5000, `started ${Date.now() - released} ms after the pull (the resync is 30 s)`);
    await fsp.rm(path.join(dir, 'late.yaml'));
    await waitFor('late pruned', async () => ((await pods()).length === 0 ? true : undefined), 30_000);
  });

  test('a runc that never answers fails that container\'s step with ERR_TIMEOUT; other pods converge; status answers meanwhile', async (t) => {
    if (!ok) return t.skip();
    t.after(stopUps);
    const real = execFileSync('sh', ['-c', 'command -v runc']).toString().trim();
    const bin = path.join(env.dir, 'wedged-bin');
    await fsp.mkdir(bin, { recursive: true });
    // `runc start` of the container named "wedged" hangs; every other call is the real runc.
    await fsp.writeFile(
      path.join(bin, 'runc'),
      `#!/bin/sh\ncase " $* " in *" start "*default.wedged.*) exec sleep 3599 ;; esac\nexec ${real} "$@"\n`,
      { mode: 0o755 },
    );
    t.after(() => {
      // A daemon killed with SIGKILL cannot take its hung child with it.
      try {
        execFileSync('pkill', ['-x', '-f', 'sleep 3599'], { stdio: 'ignore' });
      } catch {
        // none left
      }
    });
    await startUp({ env: { ...process.env, PATH: `${bin}:${process.env['PATH'] ?? ''}` } });
    await fsp.writeFile(path.join(dir, 'wedged.yaml'), podYaml('wedged', ['sleep', '3600']));
    // While the start hangs (10 s deadline), the daemon answers and another pod converges.
    await new Promise((r) => setTimeout(r, 1500));
    const asked = Date.now();
    const during = await pods();
    assert.ok(Date.now() - asked < 2000, 'status answered while runc hangs');
    assert.notEqual(during.find((p) => p.key === 'default/wedged')?.status, 'Running');
    const saved = Date.now();
    await fsp.writeFile(path.join(dir, 'other.yaml'), podYaml('other', ['sleep', '3600']));
    await waitFor('other running', () => pidOf('default/other'), 5000, 50);
    assert.ok(Date.now() - saved < 3000, `other converged in ${Date.now() - saved} ms`);
    const failed = await waitFor('wedged fails at the deadline', async () => {
      const p = (await pods()).find((x) => x.key === 'default/wedged');
      return p !== undefined && /did not answer within 10s/.test(p.lastError) ? p : undefined;
    }, 30_000, 200);
    assert.equal(failed.status, 'Error');
    const ev = JSON.parse((await berth(env, ['events', '--for', 'wedged', '-o', 'json'])).stdout) as { reason: string }[];
    assert.ok(!ev.some((e) => e.reason === 'Started'), 'never reported started');
    // The hung runc was killed with its process group: no sleeping wrapper left behind.
    const leftovers = execFileSync('ps', ['-eo', 'args']).toString().split('\n').filter((l) => l.trim() === 'sleep 3599');
    assert.ok(leftovers.length <= 1, `at most the one hanging now: ${leftovers.join(' | ')}`);
    await fsp.rm(path.join(dir, 'wedged.yaml'));
    await fsp.rm(path.join(dir, 'other.yaml'));
    await stopUps();
    await startUp();
    await waitFor('pruned', async () => ((await pods()).length === 0 ? true : undefined), 60_000);
    await stopUps();
  });

  test('regression start-failure-ignores-restart-policy: a command runc cannot start is an exit 128 StartError — Never leaves it, Always backs off, the reason is an event', async (t) => {
    if (!ok) return t.skip();
    t.after(stopUps);
    const withPolicy = (name: string, policy: string): string => podYaml(name, ['/nonexistent']).replace('  hostNetwork: true\n', `  hostNetwork: true\n  restartPolicy: ${policy}\n`);
    await fsp.writeFile(path.join(dir, 'never.yaml'), withPolicy('never', 'Never'));
    await fsp.writeFile(path.join(dir, 'always.yaml'), withPolicy('always', 'Always'));
    await startUp();
    const containerOf = async (key: string): Promise<{ state: string; exitCode: number | null; reason: string | null; id: string | null } | undefined> =>
      (JSON.parse((await berth(env, ['status', '-o', 'json'])).stdout) as { pods: { key: string; containers: { state: string; exitCode: number | null; reason: string | null; id: string | null }[] }[] }).pods.find((p) => p.key === key)?.containers[0];
    const never = await waitFor('never exited', async () => {
      const c = await containerOf('default/never');
      return c?.state === 'exited' ? c : undefined;
    }, 30_000);
    assert.equal(never.exitCode, 128);
    assert.equal(never.reason, 'StartError');
    const ev = JSON.parse((await berth(env, ['events', '--for', 'never', '-o', 'json'])).stdout) as { reason: string; type: string; message: string }[];
    assert.ok(ev.some((e) => e.reason === 'Failed' && e.type === 'Warning' && /nonexistent/.test(e.message)), JSON.stringify(ev));
    // Always: restarted by the crash-loop back-off (the first at once, then 10 s), not every few seconds.
    await waitFor('always in back-off', async () => ((await pods()).find((p) => p.key === 'default/always')?.status === 'CrashLoopBackOff' ? true : undefined), 30_000);
    const firstNever = never.id;
    const ids = new Set<string>();
    const until = Date.now() + 6000;
    while (Date.now() < until) {
      const c = await containerOf('default/always');
      if (c?.id !== null && c?.id !== undefined) ids.add(c.id);
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.ok(ids.size <= 2, `at most one restart within 6 s of back-off: ${[...ids].join(' ')}`);
    // Never: the same exited container, no new attempt.
    assert.equal((await containerOf('default/never'))?.id, firstNever);
    await fsp.rm(path.join(dir, 'never.yaml'));
    await fsp.rm(path.join(dir, 'always.yaml'));
    await waitFor('pruned', async () => ((await pods()).length === 0 ? true : undefined), 60_000);
  });

  test('regression exit-recorded-137-while-conmon-writes: an exit whose conmon has not written the file yet is not recorded as 137; conmon\'s code is', async (t) => {
    if (!ok) return t.skip();
    const file = path.join(env.dir, 'slowexit.yaml');
    await fsp.writeFile(file, podYaml('slowexit', ['sh', '-c', 'sleep 2; exit 7']).replace('  hostNetwork: true\n', '  hostNetwork: true\n  restartPolicy: Never\n'));
    const a = await berth(env, ['apply', '-f', file]);
    assert.equal(a.code, 0, a.stderr);
    const [conmon] = await conmonProcesses('default.slowexit.');
    assert.ok(conmon !== undefined, 'conmon of the container');
    // conmon cannot reap the init nor write its exit file while stopped, as when it syncs the log to a slow disk.
    process.kill(conmon, 'SIGSTOP');
    try {
      await new Promise((r) => setTimeout(r, 3000));
      await berth(env, ['apply', '-f', file]);
      const during = (await pods()).find((p) => p.key === 'default/slowexit')?.containers[0];
      assert.notEqual(during?.state, 'exited', `not recorded while conmon has not written the exit: ${JSON.stringify(during)}`);
    } finally {
      process.kill(conmon, 'SIGCONT');
    }
    await waitFor('exit 7 recorded', async () => {
      await berth(env, ['apply', '-f', file]);
      const c = (await pods()).find((p) => p.key === 'default/slowexit')?.containers[0] as { state: string; exitCode?: number | null } | undefined;
      return c?.state === 'exited' ? c : undefined;
    }, 20_000, 500).then((c) => assert.equal(c.exitCode, 7));
    const d = await berth(env, ['delete', '-f', file]);
    assert.equal(d.code, 0, d.stderr);
  });

  test('drift with no exit file (conmon killed, then its container) is found by the resync without starting a process per pod', async (t) => {
    if (!ok) return t.skip();
    t.after(stopUps);
    await fsp.writeFile(path.join(dir, 'orphan.yaml'), podYaml('orphan', ['sleep', '3600']));
    const u = await startDaemon(env, dir, { extra: ['--resync', '2'] });
    ups.push(u);
    const first = await waitFor('orphan running', () => pidOf('default/orphan'), 30_000);
    const c = (await pods()).find((p) => p.key === 'default/orphan')?.containers[0];
    assert.ok(c?.id !== null && c?.id !== undefined);
    const conmonPid = Number(await fsp.readFile(path.join(env.state, 'conmon', c.id, 'conmon.pid'), 'utf8'));
    process.kill(conmonPid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 200));
    process.kill(first, 'SIGKILL');
    const second = await waitFor('restarted by the resync', async () => {
      const p = await pidOf('default/orphan');
      return p !== undefined && p !== first ? p : undefined;
    }, 15_000, 100);
    assert.notEqual(second, first);
    const ev = JSON.parse((await berth(env, ['events', '--for', 'orphan', '-o', 'json'])).stdout) as { reason: string; message: string }[];
    assert.ok(ev.some((e) => e.reason === 'Exited' && /code 137 .*vanished/.test(e.message)), JSON.stringify(ev));
    await fsp.rm(path.join(dir, 'orphan.yaml'));
    await waitFor('orphan pruned', async () => ((await pods()).length === 0 ? true : undefined), 30_000);
  });

  test('kill -9 of the daemon mid-pass: running containers keep their pids, nothing running is restarted, state converges', async (t) => {
    if (!ok) return t.skip();
    // p1 takes 5 s to stop (sleep ignores SIGTERM): its replace is a window to kill the daemon in.
    const ignoreTerm = (secs: number): string[] => ['sh', '-c', `trap '' TERM; sleep ${secs} & wait`];
    for (const n of ['p1', 'p2', 'p3']) await fsp.writeFile(path.join(dir, `${n}.yaml`), podYaml(n, n === 'p1' ? ignoreTerm(3600) : ['sleep', '3600'], undefined, n === 'p1' ? 5 : 0));
    const up = await startUp();
    const before = new Map<string, number>();
    for (const n of ['p1', 'p2', 'p3']) before.set(n, await waitFor(`${n} running`, () => pidOf(`default/${n}`), 60_000));
    // An edit of p1 and a new p4; the daemon is killed while p1's old container is being stopped.
    await fsp.writeFile(path.join(dir, 'p1.yaml'), podYaml('p1', ignoreTerm(3601), undefined, 5));
    await fsp.writeFile(path.join(dir, 'p4.yaml'), podYaml('p4', ['sleep', '3600']));
    await waitFor('p1 mid-replace', async () => {
      const ps = JSON.parse((await berth(env, ['ps', '-o', 'json'])).stdout) as { key: string; containers: { state: string }[] }[];
      return ps.find((p) => p.key === 'default/p1')?.containers.some((c) => c.state === 'removing') === true ? true : undefined;
    }, 10_000, 20);
    up.child.kill('SIGKILL');
    await new Promise((r) => up.child.once('exit', r));
    assert.ok(statSync(`/proc/${before.get('p1') ?? 0}`, { throwIfNoEntry: false }) !== undefined, 'the old p1 was still running when the daemon died');
    await startUp();
    await waitFor('p1 edited and p4 running', async () => {
      const ps = await pods();
      const p1 = ps.find((p) => p.key === 'default/p1')?.containers[0];
      const p4 = ps.find((p) => p.key === 'default/p4')?.containers[0];
      if (p1?.state !== 'running' || p4?.state !== 'running' || p1.pid === null) return undefined;
      return execFileSync('cat', [`/proc/${p1.pid}/cmdline`]).toString().includes('3601') ? true : undefined;
    }, 60_000);
    for (const n of ['p2', 'p3']) assert.equal(await pidOf(`default/${n}`), before.get(n), `${n} kept its pid`);
    const ps = await pods();
    assert.ok(ps.every((p) => p.status === 'Running'), JSON.stringify(ps.map((p) => [p.key, p.status])));
    const ev = JSON.parse((await berth(env, ['events', '-o', 'json'])).stdout) as { key: string; reason: string }[];
    for (const n of ['p2', 'p3']) {
      const mine = ev.filter((e) => e.key === `pod/default/${n}`).map((e) => e.reason);
      assert.equal(mine.filter((r) => r === 'Started').length, 1, `${n} started once: ${mine.join(',')}`);
      assert.ok(mine.includes('Adopted'), `${n} adopted: ${mine.join(',')}`);
      assert.ok(!mine.includes('Killed') && !mine.includes('Exited'), `${n} never stopped: ${mine.join(',')}`);
    }
    // No leftovers of the interrupted pass: one runc container per pod.
    const runc = JSON.parse(execFileSync('runc', ['--root', path.join(env.state, 'runc'), 'list', '--format', 'json']).toString() || '[]') as { id: string }[];
    assert.equal(runc.length, 4, runc.map((c) => c.id).join(', '));
    const check = await berth(env, ['check']);
    assert.doesNotMatch(check.stdout, /^(warn|fail)\s+(container|residue|mount)/m, check.stdout);
    // SIGTERM drains and exits; it never stops a container.
    const running = new Map<string, number | undefined>();
    for (const n of ['p1', 'p2', 'p3', 'p4']) running.set(n, await pidOf(`default/${n}`));
    const last = ups[ups.length - 1];
    assert.ok(last !== undefined);
    await stopDaemon(last, 'SIGTERM');
    assert.equal(last.child.exitCode, 0, last.output());
    for (const n of ['p1', 'p2', 'p3', 'p4']) assert.equal(await pidOf(`default/${n}`), running.get(n), `${n} still runs after SIGTERM of berth up`);
  });
});

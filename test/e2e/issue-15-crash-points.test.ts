import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { buildBusyboxImage, pushImage } from '../../scripts/fixture-image.js';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { countFailure, crashCheck, netnsList, netnsOf, newFigures, printFigures, removeTestNetwork, requireCrashHost, withoutCrash, type CrashCheck } from '../helpers/crash-check.js';
import { listStore, storeProblems } from '../helpers/gc-check.js';
import { berth, cleanupEnv, conmonProcesses, makeEnv, mountsUnder, startDaemon, stopDaemon, waitFor, type BerthEnv, type RunResult } from '../helpers/berth.js';

/**
 * Issue 15, crash suite: berth is SIGKILLed by itself at injected crash points
 * (src/lib/crashpoint.ts, BERTH_CRASH_AT) instead of at wall-clock delays, so every trial hits
 * its window. After each trial a plain `berth apply` (or `gc`) must converge with:
 * every container that was running keeping its pid, all pods Running, `berth check` clean,
 * no orphan mount, no ingest or `tmp-` residue, every blob hashing to its name, rows and files
 * agreeing, and no netns, veth or IP allocation of a pod that has no sandbox.
 * docs/crash-suite.md lists the points and what each checks.
 */

const sh = (cmd: string, args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8' });

describe('e2e: crash points (issue 15)', { timeout: 1_200_000 }, () => {
  let ok = true;
  let env: BerthEnv;
  let demo: DemoFixture | undefined;
  let dir: string;
  let forwardBefore = '';
  const bridge = `bc${randomBytes(3).toString('hex')}`;
  const subnet = `10.${200 + ((randomBytes(1)[0] ?? 0) % 50)}.${randomBytes(1)[0] ?? 0}.0/24`;
  const NET = ['--bridge', bridge, '--pod-subnet', subnet];
  const B = (args: string[], opts: { crashAt?: string; timeoutMs?: number } = {}): Promise<RunResult> =>
    berth(env, [...NET, ...args], {
      timeoutMs: opts.timeoutMs ?? 180_000,
      env: opts.crashAt !== undefined ? { ...process.env, BERTH_CRASH_AT: opts.crashAt } : withoutCrash(),
    });
  /** Every pod key the suite ever declared: none may keep a netns once it has no sandbox. */
  const everDeclared = new Set<string>();
  const trials: { point: string; via: string; result: string }[] = [];
  let imageSeq = 0;

  const image = (tag: string): string => `${demo?.registry.host ?? ''}/berth/${tag}`;
  /** A new image in the registry whose second layer and config are new (the first is shared with the demo). */
  const freshImage = async (): Promise<string> => {
    const tag = `crash${++imageSeq}`;
    await pushImage(demo?.registry.url ?? '', 'berth/extra', tag, await buildBusyboxImage({ page: `crash trial ${tag} ${randomBytes(4).toString('hex')}\n` }));
    return image(`extra:${tag}`);
  };
  const writePod = async (name: string, o: { img?: string; hostNetwork?: boolean; cmd?: string } = {}): Promise<void> => {
    everDeclared.add(`default/${name}`);
    await fsp.writeFile(
      path.join(dir, `${name}.yaml`),
      `apiVersion: v1
kind: Pod
metadata:
  name: ${name}
spec:
  terminationGracePeriodSeconds: 1
  hostNetwork: ${o.hostNetwork ?? true}
  containers:
    - name: main
      image: ${o.img ?? image('demo:1.0')}
      command: ["sh", "-c", "${o.cmd ?? 'exec sleep 3600'}"]
`,
    );
  };

  let check: CrashCheck;
  const ps = (): ReturnType<CrashCheck['ps']> => check.ps();
  const status = (): ReturnType<CrashCheck['status']> => check.status();
  const running = (): Promise<Map<string, number>> => check.running();
  const declared = (): Promise<string[]> => check.declared();

  /** Runs `args` with the crash point armed and asserts the process died by SIGKILL there. */
  const crash = async (point: string, args: string[]): Promise<void> => {
    const r = await B(args, { crashAt: point });
    assert.equal(r.signal, 'SIGKILL', `berth ${args.join(' ')} with BERTH_CRASH_AT=${point} was to die by SIGKILL, got code ${r.code} signal ${r.signal ?? 'none'}\n${r.stdout}\n${r.stderr}`);
  };

  /**
   * A plain apply converges: exit 0, every declared pod Running, the containers in `keep`
   * (id → pid, running before the crash and not changed by the trial) with the same pid, and
   * nothing left over anywhere (test/helpers/crash-check.ts).
   */
  const converge = async (what: string, keep: Map<string, number>): Promise<void> => {
    const r = await B(['apply', '-f', dir]);
    assert.equal(r.code, 0, `${what}: recovery apply\n${r.stdout}\n${r.stderr}`);
    await check.allRunning(what);
    await check.keptPids(what, keep);
    await check.residueFree(what);
  };
  const residueFree = (what: string): Promise<void> => check.residueFree(what);

  const figures = newFigures('crash-points');
  /** One crash trial: counted, and a failure classified by the check it came from (BERTH_FIGURES). */
  const trial = (name: string, fn: () => Promise<void>): void => {
    test(name, async (t) => {
      if (!ok) return t.skip();
      figures.trials++;
      try {
        await fn();
        figures.passed++;
      } catch (err) {
        countFailure(figures, err);
        throw err;
      }
    });
  };

  const record = (point: string, via: string): void => {
    trials.push({ point, via, result: 'pass' });
  };

  before(async (t) => {
    const fwd = requireCrashHost(t);
    ok = fwd !== undefined;
    if (fwd === undefined) return;
    forwardBefore = fwd;
    env = makeEnv('berth-crash-');
    demo = await startDemoFixture();
    dir = path.join(env.dir, 'manifests');
    await fsp.mkdir(dir);
    check = crashCheck({ env, dir, bridge, subnet, everDeclared, run: (args) => B(args) });
    // N=3 hostNetwork pods and one in a sandbox on the test's own bridge.
    for (const n of ['a', 'b', 'c']) await writePod(n);
    await writePod('net', { hostNetwork: false });
    await converge('initial apply', new Map());
  });

  after(async () => {
    if (!ok) return;
    if (env !== undefined) {
      await B(['delete', '-f', dir], { timeoutMs: 180_000 }).catch(() => undefined);
      await cleanupEnv(env);
    }
    await demo?.stop();
    await removeTestNetwork({ root: env.root, bridge: bridge, everDeclared, forwardBefore });
    printFigures(figures);
    if (trials.length > 0) process.stderr.write(`crash suite: ${trials.length} trial(s)\n${trials.map((x) => `  ${x.point.padEnd(36)} ${x.via.padEnd(28)} ${x.result}`).join('\n')}\n`);
  });

  // Pull of a new image, crashing inside the content store or the layer unpack.
  for (const [point, hit] of [
    ['content.after-temp-write', '1'],
    ['content.after-temp-write', '3'],
    ['content.before-rename', '1'],
    ['content.before-rename', '3'],
    ['unpack.mid-layer', '2'],
  ] as const) {
    trial(`apply of a pod with a new image, killed at ${point}:${hit}, converges`, async () => {
      const keep = await running();
      const name = `pull${imageSeq + 1}`;
      await writePod(name, { img: await freshImage() });
      await crash(`${point}:${hit}`, ['apply', '-f', dir]);
      await converge(`${point}:${hit}`, keep);
      record(`${point}:${hit}`, 'apply (pull)');
    });
  }

  trial('berth images pull killed at content.before-rename:2, then the pull completes', async () => {
    const keep = await running();
    const ref = await freshImage();
    await crash('content.before-rename:2', ['images', 'pull', ref]);
    const r = await B(['images', 'pull', ref]);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    await converge('images pull after content.before-rename:2', keep);
    record('content.before-rename:2', 'images pull');
  });

  trial('a new container killed between runc create and runc start is started by the next apply', async () => {
    const keep = await running();
    await writePod('started');
    await crash('task.between-create-start', ['apply', '-f', dir]);
    await converge('task.between-create-start (new pod)', keep);
    record('task.between-create-start', 'apply (new pod)');
  });

  trial('regression adopted-without-started-at: a container killed after runc start, before its row says so, is adopted with its start time', async () => {
    const keep = await running();
    await writePod('adopted');
    await crash('task.after-start', ['apply', '-f', dir]);
    await converge('task.after-start (new pod)', keep);
    const st = JSON.parse((await B(['status', '-o', 'json'])).stdout) as { pods: { key: string; containers: { state: string; startedAt: string | null }[] }[] };
    const c = st.pods.find((p) => p.key === 'default/adopted')?.containers[0];
    assert.equal(c?.state, 'running');
    assert.ok(c?.startedAt !== null && c?.startedAt !== undefined && Date.now() - Date.parse(c.startedAt) < 120_000, JSON.stringify(c));
    record('task.after-start', 'apply (new pod)');
  });

  trial('a replace killed between runc create and runc start converges; the other pods keep their pids', async () => {
    const before = await running();
    const old = [...before.keys()].find((id) => id.startsWith('default.c.'));
    assert.ok(old !== undefined);
    await writePod('c', { cmd: 'exec sleep 3601' });
    await crash('task.between-create-start', ['apply', '-f', dir]);
    const keep = new Map([...before].filter(([id]) => id !== old));
    await converge('task.between-create-start (replace)', keep);
    assert.ok(!(await running()).has(old), 'the replaced container is gone');
    record('task.between-create-start', 'apply (replace)');
  });

  trial('a new sandbox killed before and inside CNI ADD is rebuilt by the next apply', async () => {
    for (const point of ['sandbox.before-cni-add', 'sandbox.mid-cni-add']) {
      const keep = await running();
      const name = `net${point.includes('mid') ? 'mid' : 'pre'}`;
      await writePod(name, { hostNetwork: false });
      await crash(point, ['apply', '-f', dir]);
      assert.ok(netnsList().includes(netnsOf(env.root, `default/${name}`)), `${point}: the crash left the netns behind (the window was hit)`);
      await converge(point, keep);
      record(point, 'apply (new sandbox pod)');
    }
  });

  trial('a sandbox killed inside CNI ADD whose pod is then removed leaves no netns, veth or address', async () => {
    const keep = await running();
    await writePod('netgone', { hostNetwork: false });
    await crash('sandbox.mid-cni-add', ['apply', '-f', dir]);
    await fsp.rm(path.join(dir, 'netgone.yaml'));
    const r = await B(['apply', '--prune', '-f', dir]);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    await converge('sandbox.mid-cni-add (pod removed)', keep);
    assert.ok(!netnsList().includes(netnsOf(env.root, 'default/netgone')));
    record('sandbox.mid-cni-add', 'apply --prune (pod removed)');
  });

  trial('GC killed after its rows commit and before the files go: no row names a missing file; the next gc finishes', async () => {
    // The pull pods move to the demo image: their extra images are declared by nothing.
    for (const f of await fsp.readdir(dir)) if (f.startsWith('pull')) await writePod(f.slice(0, -5));
    await converge('pull pods moved to the demo image', new Map());
    const keep = await running();
    const before = await listStore(env.root);
    await crash('state.after-row-before-files', ['images', 'prune']);
    const mid = await listStore(env.root);
    assert.ok(mid.manifests.length < before.manifests.length, 'the crash came after the rows were deleted');
    const dangling = storeProblems(mid).filter((p) => !/referenced by no row|has no row$/.test(p));
    assert.deepEqual(dangling, [], 'after the crash, no row names a missing file');
    assert.ok(storeProblems(mid).length > 0, 'the crash came before the files were removed');
    const g = await B(['gc']);
    assert.equal(g.code, 0, `${g.stdout}\n${g.stderr}`);
    await converge('state.after-row-before-files', keep);
    assert.deepEqual((await listStore(env.root)).images.map((i) => i.ref), [image('demo:1.0')]);
    record('state.after-row-before-files', 'images prune, then gc');
  });

  trial('GC killed inside its rows transaction: the transaction rolls back whole; the next gc collects', async () => {
    const keep = await running();
    const ref = await freshImage();
    const p = await B(['images', 'pull', ref]);
    assert.equal(p.code, 0, `${p.stdout}\n${p.stderr}`);
    const rm = await B(['images', 'rm', ref]);
    assert.equal(rm.code, 0, `${rm.stdout}\n${rm.stderr}`);
    const before = await listStore(env.root);
    await crash('state.in-transaction', ['gc']);
    assert.deepEqual(await listStore(env.root), before, 'every row and file as before the killed gc');
    const g = await B(['gc']);
    assert.equal(g.code, 0, `${g.stdout}\n${g.stderr}`);
    assert.ok((await listStore(env.root)).manifests.length < before.manifests.length, 'the gc that was killed had rows to delete');
    await converge('state.in-transaction', keep);
    record('state.in-transaction', 'gc, then gc');
  });

  trial('reboot simulation: runc state, overlays, netns and conmons gone; berth up brings every pod back by restart policy', async () => {
    const byName = async (): Promise<Map<string, number>> => {
      const out = new Map<string, number>();
      for (const p of await ps()) for (const c of p.containers) if (c.state === 'running' && c.pid !== null) out.set(`${p.key}/${c.name}`, c.pid);
      return out;
    };
    const before = await byName();
    const runcRoot = path.join(env.state, 'runc');
    const ids = (JSON.parse(sh('runc', ['--root', runcRoot, 'list', '--format', 'json']) || '[]') as { id: string }[]).map((c) => c.id);
    for (const id of ids) execFileSync('runc', ['--root', runcRoot, 'delete', '--force', id], { stdio: 'ignore' });
    for (const pid of await conmonProcesses(env.state)) process.kill(pid, 'SIGKILL');
    for (const m of (await mountsUnder(env.root)).sort((a, b) => b.length - a.length)) execFileSync('umount', [m]);
    for (const key of everDeclared) {
      if (netnsList().includes(netnsOf(env.root, key))) execFileSync('ip', ['netns', 'delete', netnsOf(env.root, key)]);
    }
    assert.deepEqual(await mountsUnder(env.root), []);
    const u = await startDaemon(env, dir, { extra: ['--resync', '30', ...NET], env: withoutCrash() });
    try {
      const want = await declared();
      // The daemon answers status from its rows, which say running until it has observed the
      // loss: wait for every container to run with a pid it did not have before.
      let after = new Map<string, number>();
      await waitFor('every pod Running again under berth up, each container with a new pid', async () => {
        const pods = await status();
        after = await byName();
        const anew = [...before].every(([c, pid]) => after.has(c) && after.get(c) !== pid);
        return pods.length === want.length && pods.every((p) => p.status === 'Running') && anew && after.size === before.size ? true : undefined;
      }, 120_000, 500).catch((err: unknown) => {
        throw new Error(`${String(err)}\nbefore ${JSON.stringify([...before])}\nafter ${JSON.stringify([...after])}\n${u.output().slice(-4000)}`);
      });
      await residueFree('reboot simulation');
      trials.push({ point: '(reboot simulation)', via: 'berth up', result: 'pass' });
    } finally {
      await stopDaemon(u);
    }
  });
});

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { printFigures, type PsPod } from '../helpers/crash-check.js';
import { prng } from '../helpers/gc-images.js';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, cleanupEnv, makeEnv, startDaemon, stopDaemon, waitFor, type BerthEnv, type RunResult } from '../helpers/berth.js';

/**
 * Issue 15, load suite, against one `berth up DIR` on this machine:
 * - N pods (BERTH_LOAD_PODS, default 100; hostNetwork, one sh + sleep each) from one directory
 *   converge; the time from the daemon's start to all Running is printed;
 * - a storm of E edits (BERTH_LOAD_EDITS, default 200) spread over S seconds
 *   (BERTH_LOAD_SECONDS, default 15) to P of the pods (BERTH_LOAD_STORM_PODS, default 25),
 *   each rewriting a file in place (truncate + write, so the watcher may read half a file)
 *   with the container's generation argument bumped, ends in exactly the final files' state:
 *   the recorded spec and the running process of every pod carry the file's last generation,
 *   `berth diff` finds nothing to do, and the daemon is still the same process;
 * - C concurrent CLI commands (BERTH_LOAD_CLI, default 20: status, ps, diff, a no-op apply,
 *   logs, events) against the running daemon all answer with their expected exit codes.
 * Prints a `BERTH_FIGURES` JSON line on stderr (bench/reliability collects it).
 */

const PODS = Math.max(1, Number(process.env['BERTH_LOAD_PODS'] ?? '100') || 100);
const EDITS = Math.max(1, Number(process.env['BERTH_LOAD_EDITS'] ?? '200') || 200);
const SECONDS = Math.max(1, Number(process.env['BERTH_LOAD_SECONDS'] ?? '15') || 15);
const STORM_PODS = Math.min(PODS, Math.max(1, Number(process.env['BERTH_LOAD_STORM_PODS'] ?? '25') || 25));
const CLI = Math.max(1, Number(process.env['BERTH_LOAD_CLI'] ?? '20') || 20);
const SEED = Number(process.env['BERTH_SEED'] ?? '0x10ad') >>> 0;

const podName = (i: number): string => `ld-${String(i).padStart(4, '0')}`;

describe('e2e: load (issue 15)', { timeout: 3_600_000 }, () => {
  let ok = true;
  let env: BerthEnv;
  let demo: DemoFixture | undefined;
  let dir: string;
  let daemon: Awaited<ReturnType<typeof startDaemon>> | undefined;
  const gen = new Map<string, number>();
  const figures: Record<string, number | string | boolean> = { suite: 'load', pods: PODS, edits: EDITS, stormSeconds: SECONDS, stormPods: STORM_PODS, cli: CLI };

  const B = (args: string[], timeoutMs = 300_000): Promise<RunResult> => berth(env, args, { timeoutMs });
  const podText = (name: string, g: number): string => `apiVersion: v1
kind: Pod
metadata:
  name: ${name}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 2
  containers:
    - name: main
      image: ${demo?.registry.host ?? ''}/berth/demo:1.0
      command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait", "gen-${g}"]
      resources:
        limits:
          memory: 16Mi
`;
  const write = async (name: string, g: number): Promise<void> => {
    gen.set(name, g);
    await fsp.writeFile(path.join(dir, `${name}.yaml`), podText(name, g));
  };
  const ps = async (): Promise<PsPod[]> => {
    const r = await B(['ps', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as PsPod[];
  };
  const runningCount = async (): Promise<number> => {
    const r = await B(['status', '-o', 'json']);
    if (r.code !== 0) return -1;
    return (JSON.parse(r.stdout) as { pods: { status: string }[] }).pods.filter((p) => p.status === 'Running').length;
  };
  const daemonAlive = (): boolean => daemon !== undefined && daemon.child.exitCode === null && daemon.child.signalCode === null;

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv('berth-ld-');
    demo = await startDemoFixture();
    dir = path.join(env.dir, 'manifests');
    await fsp.mkdir(dir);
    // The image is pulled once, before the clock starts: the figure is about pods, not the pull.
    const p = await B(['images', 'pull', `${demo.registry.host}/berth/demo:1.0`]);
    assert.equal(p.code, 0, p.stderr);
  });

  after(async () => {
    if (!ok) return;
    printFigures(figures);
    if (daemon !== undefined) await stopDaemon(daemon, 'SIGTERM').catch(() => undefined);
    if (env !== undefined) {
      await B(['delete', '-f', dir], 600_000).catch(() => undefined);
      await cleanupEnv(env);
    }
    await demo?.stop();
  });

  test(`${PODS} pods from one directory converge under berth up`, async (t) => {
    if (!ok) return t.skip();
    for (let i = 0; i < PODS; i++) await write(podName(i), 0);
    const t0 = Date.now();
    daemon = await startDaemon(env, dir, { extra: ['--resync', '30'] });
    await waitFor(`${PODS} pods Running`, async () => ((await runningCount()) === PODS ? true : undefined), 600_000, 500);
    const ms = Date.now() - t0;
    figures['convergeMs'] = ms;
    process.stderr.write(`load: ${PODS} pods Running ${(ms / 1000).toFixed(1)} s after berth up started\n`);
    const pods = await ps();
    assert.equal(pods.length, PODS);
    assert.ok(pods.every((p) => p.containers.filter((c) => c.state === 'running').length === 1), 'one running container per pod');
  });

  test(`a storm of ${EDITS} edits in ${SECONDS} s ends in exactly the final files' state, with no crash and no lost update`, async (t) => {
    if (!ok || daemon === undefined) return t.skip();
    const pid = daemon.child.pid;
    const rand = prng(SEED);
    const t0 = Date.now();
    for (let e = 0; e < EDITS; e++) {
      const due = t0 + Math.round(((e + 1) * SECONDS * 1000) / EDITS);
      const wait = due - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      const name = podName(Math.floor(rand() * STORM_PODS));
      await write(name, (gen.get(name) ?? 0) + 1);
    }
    const stormMs = Date.now() - t0;
    figures['stormMs'] = stormMs;
    assert.ok(stormMs < SECONDS * 1000 + 5000, `the storm took ${stormMs} ms`);
    // Converged: nothing left to do, every pod Running.
    const t1 = Date.now();
    let diff: RunResult | undefined;
    await waitFor('berth diff finds nothing to do after the storm', async () => {
      diff = await B(['diff', '-f', dir]);
      return diff.code === 0 ? true : undefined;
    }, 600_000, 1000).catch((err: unknown) => {
      throw new Error(`${String(err)}\n${(diff?.stdout ?? '').slice(0, 4000)}${diff?.stderr ?? ''}`);
    });
    await waitFor(`${PODS} pods Running after the storm`, async () => ((await runningCount()) === PODS ? true : undefined), 600_000, 500);
    figures['settleMs'] = Date.now() - t1;
    process.stderr.write(`load: ${EDITS} edits in ${(stormMs / 1000).toFixed(1)} s to ${STORM_PODS} pods; converged ${((Date.now() - t1) / 1000).toFixed(1)} s after the last edit\n`);
    assert.ok(daemonAlive() && daemon.child.pid === pid, `the daemon did not crash\n${daemon.output().slice(-4000)}`);
    // No lost update: each pod's running process and recorded spec carry its file's last generation.
    const pods = await ps();
    const db = new Database(path.join(env.root, 'berth.db'), { readonly: true, fileMustExist: true });
    let lost = 0;
    const wrong: string[] = [];
    try {
      const spec = db.prepare('SELECT spec FROM pods WHERE key = ?');
      for (let i = 0; i < PODS; i++) {
        const name = podName(i);
        const want = `gen-${gen.get(name) ?? -1}`;
        const running = pods.find((p) => p.key === `default/${name}`)?.containers.filter((c) => c.state === 'running') ?? [];
        const cpid = running[0]?.pid;
        const argv = running.length === 1 && cpid != null && existsSync(`/proc/${cpid}`) ? readFileSync(`/proc/${cpid}/cmdline`, 'utf8').split('\0').filter((x) => x !== '') : [];
        const row = spec.get(`default/${name}`) as { spec: string } | undefined;
        if (argv.at(-1) !== want || row === undefined || !row.spec.includes(`"${want}"`)) {
          lost++;
          wrong.push(`${name}: file ${want}, process ${JSON.stringify(argv.at(-1))}, recorded ${row === undefined ? 'no row' : (/"gen-\d+"/.exec(row.spec)?.[0] ?? '?')}`);
        }
      }
    } finally {
      db.close();
    }
    figures['lostUpdates'] = lost;
    assert.deepEqual(wrong, [], 'every pod runs and records its file\'s last content');
  });

  test(`${CLI} concurrent CLI commands against the running daemon all answer`, async (t) => {
    if (!ok || daemon === undefined) return t.skip();
    const kinds: { args: string[]; want: number }[] = [
      { args: ['status'], want: 0 },
      { args: ['ps'], want: 0 },
      { args: ['diff', '-f', dir], want: 0 },
      { args: ['apply', '-f', dir], want: 0 },
      { args: ['logs', podName(0)], want: 0 },
      { args: ['events', '-o', 'json'], want: 0 },
    ];
    const cmds = Array.from({ length: CLI }, (_, i) => kinds[i % kinds.length] as { args: string[]; want: number });
    const before = (await ps()).flatMap((p) => p.containers.filter((c) => c.state === 'running').map((c) => `${c.id}:${c.pid ?? ''}`)).sort();
    const t0 = Date.now();
    const results = await Promise.all(cmds.map(async (c) => ({ c, r: await B(c.args, 300_000), at: Date.now() - t0 })));
    const ms = Date.now() - t0;
    const bad = results.filter(({ c, r }) => r.code !== c.want).map(({ c, r }) => `berth ${c.args.join(' ')}: exit ${r.code} (want ${c.want})\n${r.stdout.slice(0, 500)}${r.stderr.slice(0, 1000)}`);
    figures['cliMs'] = ms;
    figures['cliOk'] = results.length - bad.length;
    process.stderr.write(`load: ${CLI} concurrent commands answered in ${(ms / 1000).toFixed(1)} s (slowest ${Math.max(...results.map((x) => x.at))} ms)\n`);
    assert.deepEqual(bad, []);
    assert.ok(daemonAlive(), 'the daemon is still running');
    // The no-op applies and the reads changed nothing.
    const afterRun = (await ps()).flatMap((p) => p.containers.filter((c) => c.state === 'running').map((c) => `${c.id}:${c.pid ?? ''}`)).sort();
    assert.deepEqual(afterRun, before, 'no container was restarted by the no-op applies');
  });
});

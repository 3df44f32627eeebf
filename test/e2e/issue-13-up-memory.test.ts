import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { DAEMON_ENV, DAEMON_NODE_FLAGS, REEXEC_MARK } from '../../src/daemon/reexec.js';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { requireE2E, requireTools } from '../helpers/prereq.js';
import { CLI, berth, cleanupEnv, conmonProcesses, makeEnv, waitFor, type BerthEnv, type RunResult } from '../helpers/berth.js';
import { removeTestBridge } from '../helpers/cni.js';

/**
 * Issue 13, daemon memory: `berth up` replaces its own process (execve: same pid, same stdio)
 * with node started with DAEMON_NODE_FLAGS, collects once its queue is idle, and so stays under
 * the 70 MB with pods running. Here: the real daemon's /proc cmdline, its stdout and exit
 * code through the re-execution, the environment its children get, and its VmRSS with a handful
 * of networked pods 4 s after they run (node's defaults: ~75 MB with 5 pods on this machine type;
 * with the flags ~65 MB; 50 pods: 68 MB). Each run uses its own bridge and subnet and removes them.
 */

const POD_COUNT = 5;
/** The target for 50 pods, asserted with 5: node's defaults are above it already. */
const RSS_BOUND_KB = 70 * 1024;

const vmRssKb = (pid: number): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
const cmdline = (pid: number): string[] => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((a) => a !== '');
const environ = (pid: number): string[] => readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');

describe('e2e: berth up memory (issue 13)', { timeout: 300_000 }, () => {
  let ok = true;
  let env: BerthEnv;
  let demo: DemoFixture | undefined;
  let dir = '';
  let image = '';
  const bridge = `bm${randomBytes(3).toString('hex')}`;
  const subnet = `10.${150 + ((randomBytes(1)[0] ?? 0) % 50)}.${randomBytes(1)[0] ?? 0}.0/24`;
  const net = ['--bridge', bridge, '--pod-subnet', subnet];
  const B = (args: string[], opts: { timeoutMs?: number } = {}): Promise<RunResult> => berth(env, [...net, ...args], opts);
  const daemons: ChildProcess[] = [];

  /** `berth up` as an operator starts it: plain `node cli.js`, no node flags, stdout and stderr piped. */
  const startUp = (nodeArgs: string[] = []): { child: ChildProcess; out: () => string; err: () => string; exit: Promise<number | null> } => {
    const child = spawn(process.execPath, [...nodeArgs, CLI, '--root', env.root, '--state', env.state, ...net, '--log-level', 'info', 'up', dir, '--resync', '30'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      // The test's own environment, without what would change the outcome.
      env: Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'NODE_OPTIONS' && k !== REEXEC_MARK && !(k in DAEMON_ENV))),
    });
    daemons.push(child);
    let out = '';
    let err = '';
    child.stdout?.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr?.on('data', (b: Buffer) => (err += b.toString()));
    const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    return { child, out: () => out, err: () => err, exit };
  };

  before(async (t) => {
    ok = requireE2E(t) && requireTools(t, ['ip', 'iptables-save', 'catatonit']);
    if (!ok) return;
    env = makeEnv('berth-upmem-');
    demo = await startDemoFixture();
    image = `${demo.registry.host}/berth/demo:1.0`;
    dir = path.join(env.dir, 'manifests');
    await fsp.mkdir(dir);
    const pull = await B(['images', 'pull', image]);
    assert.equal(pull.code, 0, pull.stderr);
  });

  after(async () => {
    if (!ok) return;
    for (const d of daemons) if (d.exitCode === null && d.signalCode === null) d.kill('SIGKILL');
    await B(['delete', '-f', dir], { timeoutMs: 120_000 }).catch(() => undefined);
    await cleanupEnv(env);
    await demo?.stop();
    await removeTestBridge(bridge);
  });

  test('issue-13 up-memory: the daemon is the process that was started, with the flags, its stdout and a clean environment for its children', async (t) => {
    if (!ok) return t.skip();
    const up = startUp();
    const pid = up.child.pid ?? -1;
    await waitFor('berth up serves its socket', async () => {
      if (up.child.exitCode !== null) throw new Error(`berth up exited ${up.child.exitCode}: ${up.err()}`);
      return existsSync(path.join(env.state, 'berth.sock')) ? true : undefined;
    }, 60_000, 50);
    // execve kept the pid: what runs under it is node with every daemon flag, then the same script and arguments.
    const argv = cmdline(pid);
    for (const f of DAEMON_NODE_FLAGS) assert.ok(argv.includes(f), `${f} in ${argv.join(' ')}`);
    assert.ok(argv.indexOf(CLI) > argv.indexOf(DAEMON_NODE_FLAGS[0] ?? ''), argv.join(' '));
    assert.deepEqual(argv.slice(argv.indexOf(CLI) + 1, argv.indexOf(CLI) + 3), ['--root', env.root]);
    // Regression reexec-closed-stdio: node marks inherited descriptors close-on-exec, so the first
    // re-execution ran with stdout on /dev/null; the daemon's lines must reach the pipe.
    await waitFor('the daemon\'s first line on stdout', async () => (up.out().includes('berth: watching') ? true : undefined), 10_000, 50);

    await fsp.writeFile(
      path.join(dir, 'pods.yaml'),
      Array.from({ length: POD_COUNT }, (_, i) =>
        `---\napiVersion: v1\nkind: Pod\nmetadata: {name: m${i}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n    - name: sleep\n      image: ${image}\n      command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]\n`,
      ).join(''),
    );
    await waitFor(`${POD_COUNT} networked pods running`, async () => {
      const r = await B(['status', '-o', 'json']);
      if (r.code !== 0) return undefined;
      const pods = (JSON.parse(r.stdout) as { pods: { status: string; ip: string | null }[] }).pods;
      return pods.filter((p) => p.status === 'Running' && p.ip !== null).length === POD_COUNT ? true : undefined;
    }, 120_000, 200);

    // The conmons it started (its children until they double-fork) got neither the mark nor the
    // variables berth added for its own node.
    const conmons = await conmonProcesses(env.state);
    assert.ok(conmons.length >= POD_COUNT, `conmons: ${conmons.length}`);
    const childEnv = environ(conmons[0] ?? -1);
    assert.ok(!childEnv.some((kv) => kv.startsWith(`${REEXEC_MARK}=`)), childEnv.join(' '));
    for (const k of Object.keys(DAEMON_ENV)) assert.ok(!childEnv.some((kv) => kv.startsWith(`${k}=`)), `${k} leaked into conmon's environment`);

    // The daemon collects a second after its queue empties. Sampled 4 s after the pods run, as
    // bench/start does 3 s after: with node's defaults VmRSS stays ~74 MB here until V8's own
    // memory reducer runs, ~8 s after the burst.
    await new Promise((r) => setTimeout(r, 4000));
    const rss = vmRssKb(pid);
    t.diagnostic(`VmRSS with ${POD_COUNT} networked pods, 4 s after they run: ${rss} kB`);
    assert.ok(rss <= RSS_BOUND_KB, `VmRSS ${rss} kB > ${RSS_BOUND_KB} kB`);

    // SIGTERM to the pid that was started stops the daemon itself: exit 0, its last line, and the containers keep running.
    up.child.kill('SIGTERM');
    assert.equal(await up.exit, 0, up.err());
    assert.match(up.out(), /berth: stopped watching; containers keep running/);
    assert.equal((await conmonProcesses(env.state)).length, conmons.length);
  });

  test('issue-13 up-memory: a failing berth up passes its exit code and error line through the re-execution', async (t) => {
    if (!ok) return t.skip();
    const first = startUp();
    await waitFor('berth up serves its socket', async () => (existsSync(path.join(env.state, 'berth.sock')) && first.out().includes('berth: watching') ? true : undefined), 60_000, 50);
    // A second daemon on the same state re-executes itself, then fails on the daemon lock: exit 1, ERR_LOCKED on stderr.
    const second = startUp(['--max-semi-space-size=2']);
    assert.equal(await second.exit, 1);
    assert.match(second.err(), /error ERR_LOCKED: berth up: another berth up already runs on .* \(pid \d+\)/);
    first.child.kill('SIGTERM');
    assert.equal(await first.exit, 0, first.err());
  });
});

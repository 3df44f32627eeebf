/**
 * bench/start — issue 13's start figures on this machine, peers measured in the same run. Prints figures and
 * ratios; asserts nothing.
 *
 *   bash bench/start.sh [--runs 15] [--pods 20] [--many 50]
 *
 * A. One-off container, image present: `berth run --rm --net host IMG -- /bin/true` — in-process (no daemon) and
 *    again with `berth up` running (the run handed to it over its socket) — next to
 *    `ctr run --rm IMG ID /bin/true` (Debian containerd, a private instance on its own socket, root and state) and
 *    `podman run --rm --network none IMG /bin/true` (private store), in one hyperfine invocation.
 *    Target: berth ≤ 1.5 × ctr.
 * B. 20 pods with CNI networking (berth's own bridge), written as one file into the directory a running `berth up`
 *    watches: time from the write until all are Running (status asked on the daemon's socket every 100 ms). Peers: 20 × `ctr run -d`
 *    one after the other (no networking: ctr has none by default) and `podman kube play` of the same 20 pods
 *    (podman's default network). Target: berth ≤ 0.5 × 20 × `ctr run -d`.
 * C. With `--many` pods running (B's plus more, networked): RSS of `berth up` (VmRSS) and the proportional set size
 *    (smaps_rollup Pss) of the per-container processes berth adds — conmon for every container, plus the
 *    sandbox's catatonit (its own conmon too) per pod. Targets: RSS ≤ 70 MB; ≤ 1 MB PSS per container.
 *
 * Set-up (not timed): the fixture image in a loopback registry; berth pulls it with `berth images pull`, ctr with
 * `ctr images pull --plain-http`, podman copies it with skopeo. Nothing leaves 127.0.0.1 or berth's own bridge.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { askDaemon, daemonSocket } from '../src/lib/fast-read.js';
import { LAUNCHER, berth, mountsUnder, type BerthEnv } from '../test/helpers/berth.js';
import { startDemoFixture, type DemoFixture } from '../test/helpers/demo.js';
import { removeTestBridge } from '../test/helpers/cni.js';
import { PODMAN_CONF, cleanupAll, havePodman, log, machine, must, newEnv, podman, podmanArgs, podmanStore, prePull, preparePodman, revision, sleep, spawnContainerd, spawnUpLogged, stopUp, waitDaemonSocket, type PrivateContainerd } from './common.js';

const { values: opt } = parseArgs({ options: { runs: { type: 'string', default: '15' }, pods: { type: 'string', default: '20' }, many: { type: 'string', default: '50' } } });
const RUNS = Math.max(5, Number(opt.runs));
const PODS = Number(opt.pods);
const MANY = Math.max(PODS, Number(opt.many));
const BRIDGE = 'berthbench0';
const SUBNET = '10.251.0.0/16';

const pct = (a: number, b: number): string => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}×` : 'n/a');

// ---------------------------------------------------------------------------------------------- containerd

function ctrArgs(c: PrivateContainerd): string[] {
  return ['-a', c.sock, '-n', 'berthbench'];
}

async function startContainerd(fx: DemoFixture, image: string): Promise<PrivateContainerd | undefined> {
  if (spawnSync('containerd', ['--version']).status !== 0) return undefined;
  // stderr ignored: a pipe nobody reads fills up and blocks containerd (its tasks rm then hangs).
  const c = spawnContainerd('berth-bench-containerd-', ['ignore', 'ignore', 'ignore']);
  for (let i = 0; i < 200 && !existsSync(c.sock); i++) await sleep(50);
  must(runSync('ctr', [...ctrArgs(c), 'images', 'pull', '--plain-http', `${fx.registry.host}/berth/demo:1.0`]), 'ctr images pull');
  if (image !== `${fx.registry.host}/berth/demo:1.0`) throw new Error('image mismatch');
  return c;
}

async function stopContainerd(c: PrivateContainerd): Promise<void> {
  const ids = (runSync('ctr', [...ctrArgs(c), 'containers', 'ls', '-q']).stdout || '').split('\n').filter((x) => x !== '');
  for (const id of ids) {
    runSync('ctr', [...ctrArgs(c), 'tasks', 'kill', '-s', 'SIGKILL', id]);
    // containerd 1.6 under load: `tasks rm` of a task whose shim is already gone can block for
    // minutes; a short deadline and another try gets past it.
    for (let i = 0; i < 50; i++) {
      if (runSync('ctr', [...ctrArgs(c), 'tasks', 'rm', id], undefined, 5_000).code === 0) break;
      await sleep(100);
    }
    runSync('ctr', [...ctrArgs(c), 'containers', 'rm', id]);
  }
  c.proc.kill('SIGTERM');
  await sleep(500);
  for (const m of (await mountsUnder(c.base)).sort((a, b) => b.length - a.length)) spawnSync('umount', ['-l', m]);
  rmSync(c.base, { recursive: true, force: true });
}

function runSync(cmd: string, args: string[], env?: NodeJS.ProcessEnv, timeoutMs = 120_000): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs, ...(env !== undefined ? { env } : {}) });
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

// ---------------------------------------------------------------------------------------------- hyperfine

function hyperfine(label: string, cmds: { name: string; argv: string[] }[]): Map<string, number> {
  const out = path.join(os.tmpdir(), `berth-bench-start-${label.replace(/\W+/g, '-')}.json`);
  const args = ['-N', '-i', '--warmup', '2', '--runs', String(RUNS), '--style', 'basic', '--export-json', out];
  for (const c of cmds) args.push('-n', c.name);
  for (const c of cmds) args.push(c.argv.join(' '));
  log(`\n-- hyperfine: ${label} (--runs ${RUNS}) --`);
  const r = spawnSync('hyperfine', args, { stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, CONTAINERS_CONF: PODMAN_CONF } });
  if (r.status !== 0) throw new Error(`hyperfine ${label}: exit ${String(r.status)}`);
  const res = JSON.parse(readFileSync(out, 'utf8')) as { results: { median: number; exit_codes: number[] }[] };
  rmSync(out, { force: true });
  const m = new Map<string, number>();
  res.results.forEach((x, i) => {
    const name = cmds[i]?.name ?? String(i);
    if (x.exit_codes.some((c) => c !== 0)) log(`  ! ${name}: exit codes ${[...new Set(x.exit_codes)].join('/')}`);
    m.set(name, x.median * 1000);
  });
  return m;
}

// ---------------------------------------------------------------------------------------------- pods

function networkedPod(name: string, image: string): string {
  return [
    '---',
    'apiVersion: v1',
    'kind: Pod',
    `metadata: {name: ${name}}`,
    'spec:',
    '  terminationGracePeriodSeconds: 1',
    '  containers:',
    '    - name: sleep',
    `      image: ${image}`,
    `      command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]`,
    '',
  ].join('\n');
}

/**
 * Running pods, asked on the daemon's socket from this process: a `berth status` CLI per poll
 * (a node start every 100 ms) would take CPU from the pods being timed, which ctr's loop does
 * not pay for. What the daemon answers is what `berth status` prints.
 */
async function runningCount(env: BerthEnv): Promise<number> {
  const r = (await askDaemon(daemonSocket(env.state), 'status', {}).catch(() => undefined)) as { pods?: { status: string }[] } | undefined;
  return (r?.pods ?? []).filter((p) => p.status === 'Running').length;
}

async function waitRunning(env: BerthEnv, n: number, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if ((await runningCount(env)) >= n) return;
    await sleep(100);
  }
  throw new Error(`${n} pods not Running within ${timeoutMs} ms`);
}

function pss(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return m === null ? NaN : Number(m[1]) * 1024;
  } catch {
    return NaN;
  }
}

function pidsOf(comm: string, needle: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/comm`, 'utf8').trim() !== comm) continue;
      if (!readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(needle)) continue;
      out.push(Number(d));
    } catch {
      // gone
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------- main

async function main(): Promise<void> {
  log(`bench/start — ${new Date().toISOString()}`);
  log(`revision: ${revision()}`);
  log(`machine:  ${machine()}`);
  const fx = await startDemoFixture();
  const image = `${fx.registry.host}/berth/demo:1.0`;
  const { env, dir } = newEnv('berth-bench-start-');
  let ctr: PrivateContainerd | undefined;
  let up: { child: ChildProcess; output: () => string } | undefined;
  try {
    await prePull(env, image);
    const noPodman = havePodman();
    if (noPodman === undefined) await preparePodman(fx, image);
    else log(`podman: ${noPodman}`);
    ctr = await startContainerd(fx, image);
    if (ctr === undefined) log('ctr: containerd not installed (bash scripts/bench-deps.sh)');

    // A. run --rm ------------------------------------------------------------------------------------------
    const berthG = ['--root', env.root, '--state', env.state];
    const cmds = [{ name: 'berth run --rm', argv: [LAUNCHER, ...berthG, 'run', '--rm', '--net', 'host', '--name', 'bench-rm', image, '--', '/bin/true'] }];
    if (ctr !== undefined) cmds.push({ name: 'ctr run --rm', argv: ['ctr', ...ctrArgs(ctr), 'run', '--rm', image, 'bench-rm', '/bin/true'] });
    if (noPodman === undefined) cmds.push({ name: 'podman run --rm', argv: ['podman', ...podmanArgs(), 'run', '--rm', '--network', 'none', image, '/bin/true'] });
    const a = hyperfine('run --rm', cmds);
    const aB = a.get('berth run --rm') ?? NaN;
    const aC = a.get('ctr run --rm') ?? NaN;
    const aP = a.get('podman run --rm') ?? NaN;

    // B. 20 networked pods by berth up -----------------------------------------------------------------------
    // berth up with berth's own bridge for the bench (global options before the command).
    up = spawnUpLogged([...berthG, '--bridge', BRIDGE, '--pod-subnet', SUBNET, '--log-level', 'warn'], dir, ['--resync', '30'], path.join(env.dir, 'up.log'));
    const child = up.child;
    await waitDaemonSocket(env, up);
    // A with the daemon running: `berth run` is one request on its socket (lib/fast-run).
    const ad = hyperfine('run --rm, berth up running', cmds.map((c) => (c.name === 'berth run --rm' ? { ...c, name: 'berth run --rm (daemon)' } : c)));
    const aD = ad.get('berth run --rm (daemon)') ?? NaN;
    const aDC = ad.get('ctr run --rm') ?? NaN;
    const aDP = ad.get('podman run --rm') ?? NaN;
    const t0 = performance.now();
    writeFileSync(path.join(dir, 'pods.yaml'), Array.from({ length: PODS }, (_, i) => networkedPod(`p${i}`, image)).join(''));
    await waitRunning(env, PODS, 300_000);
    const bB = performance.now() - t0;
    let bC = NaN;
    if (ctr !== undefined) {
      const c0 = performance.now();
      for (let i = 0; i < PODS; i++) must(runSync('ctr', [...ctrArgs(ctr), 'run', '-d', image, `bench-d${i}`, 'sleep', '3600']), `ctr run -d ${i}`);
      bC = performance.now() - c0;
    }
    let bP = NaN;
    if (noPodman === undefined) {
      const kube = path.join(env.dir, 'kube.yaml');
      writeFileSync(kube, Array.from({ length: PODS }, (_, i) => networkedPod(`pk${i}`, image)).join(''));
      const p0 = performance.now();
      await podman(['kube', 'play', kube], 600_000);
      bP = performance.now() - p0;
      for (let i = 0; i < PODS; i++) podmanStore.pods.add(`pk${i}`);
    }

    // C. memory with MANY pods --------------------------------------------------------------------------------
    writeFileSync(path.join(dir, 'more.yaml'), Array.from({ length: MANY - PODS }, (_, i) => networkedPod(`q${i}`, image)).join(''));
    await waitRunning(env, MANY, 600_000);
    await sleep(3000);
    const rss = Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${child.pid ?? 0}/status`, 'utf8'))?.[1] ?? NaN) * 1024;
    const conmons = pidsOf('conmon', env.state);
    // berth's infra containers only: their cgroup is /berth/<ns>.<pod>._sandbox.<hash> (podman's have their own).
    const catatonits = pidsOf('catatonit', '-P').filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cgroup`, 'utf8').includes('._sandbox.');
      } catch {
        return false;
      }
    });
    const conmonPss = conmons.map(pss).filter(Number.isFinite);
    const catPss = catatonits.map(pss).filter(Number.isFinite);
    const avg = (xs: number[]): number => (xs.length === 0 ? NaN : xs.reduce((x, y) => x + y, 0) / xs.length);
    // Per app container: its conmon, plus (per pod, one app container each) the sandbox's conmon and catatonit.
    const perContainer = (avg(conmonPss) * conmons.length + avg(catPss) * catatonits.length) / MANY;

    const mb = (b: number): string => `${(b / 2 ** 20).toFixed(1)} MB`;
    log('\n== results ==');
    log(`A. run --rm /bin/true (p50), berth up running: berth ${aD.toFixed(0)} ms, ctr ${aDC.toFixed(0)} ms, podman ${aDP.toFixed(0)} ms — berth/ctr ${pct(aD, aDC)} (target ≤ 1.50×), berth/podman ${pct(aD, aDP)}`);
    log(`A. run --rm /bin/true (p50), in-process: berth ${aB.toFixed(0)} ms, ctr ${aC.toFixed(0)} ms, podman ${aP.toFixed(0)} ms — berth/ctr ${pct(aB, aC)} (target ≤ 1.50×), berth/podman ${pct(aB, aP)}`);
    log(`B. ${PODS} networked pods by berth up: ${bB.toFixed(0)} ms; ${PODS} × ctr run -d: ${bC.toFixed(0)} ms (berth/ctr ${pct(bB, bC)}, target ≤ 0.50×); podman kube play: ${bP.toFixed(0)} ms (berth/podman ${pct(bB, bP)})`);
    log(`C. ${MANY} pods: berth up RSS ${mb(rss)} (target ≤ 70 MB); per container ${mb(perContainer)} PSS (conmon ${mb(avg(conmonPss))} × ${conmons.length}, catatonit ${mb(avg(catPss))} × ${catatonits.length}; target ≤ 1 MB)`);
  } finally {
    if (up !== undefined) await stopUp(up);
    await berth(env, ['--bridge', BRIDGE, '--pod-subnet', SUBNET, 'delete', '-f', dir], { timeoutMs: 600_000 }).catch(() => undefined);
    if (ctr !== undefined) await stopContainerd(ctr);
    await cleanupAll(fx);
    await removeTestBridge(BRIDGE);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/start: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});

/**
 * bench/cli — wall time of berth's read commands on this machine, next to `podman ps` measured in the same
 * hyperfine invocation (issue 12, "Fast reads": `ps` ≤ 2 × `podman ps`). Prints figures and ratios; asserts nothing.
 *
 *   bash bench/cli.sh [--pods 20] [--objects 200] [--runs 20] [--warmup 3]
 *
 * A. 20 pods running (hostNetwork, busybox `sh -c "trap 'exit 0' TERM; sleep 3600 & wait"`), applied in-process;
 *    podman has 20 containers of the same image and command (`podman run -d --network none`) in its private store.
 *    A1 (no daemon): `node -e 0` (the floor), `berth --help`, `podman --help`, `podman ps`, `berth ps`.
 *    A2 (`berth up DIR` running on the same state, default --resync): `podman ps`, `berth ps` (answered by the
 *       daemon).
 * B. 200 pod manifests (10 files × 20 pods, as bench/reconcile section 3), applied and converged by `berth up DIR`:
 *    B1 (daemon running): `podman ps`, `berth diff -f DIR` (through the daemon; exit 0 = converged),
 *       `berth validate -f DIR`.
 *    B2 (daemon stopped, containers running): `podman ps`, `berth diff -f DIR` (in-process), `berth validate -f DIR`.
 *
 * Every invocation is `hyperfine -N --warmup W --runs R` over its commands in the order listed, so each berth figure
 * has a `podman ps` taken minutes apart at most, under the same load. Ratios use medians.
 *
 * Set-up (bench/common.ts, not timed): the fixture image in a loopback registry; each berth instance has a temp
 * --root/--state and pulls the image with `berth images pull`; podman gets a private store with CONTAINERS_CONF
 * from scripts/bench-deps.sh and the same image copied with skopeo. Nothing leaves 127.0.0.1.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { CLI, LAUNCHER, berth, type BerthEnv } from '../test/helpers/berth.js';
import { startDemoFixture, type DemoFixture } from '../test/helpers/demo.js';
import {
  PODMAN_CONF,
  buildFingerprint,
  cleanupAll,
  havePodman,
  log,
  machine,
  must,
  newEnv,
  podman,
  podmanArgs,
  podmanStore,
  prePull,
  preparePodman,
  revision,
  secs,
  sleeperPod,
  startUp,
  stopUp,
  waitConverged,
  waitDaemonSocket,
  type Daemon,
} from './common.js';

const { values: opt } = parseArgs({
  options: {
    pods: { type: 'string', default: '20' },
    objects: { type: 'string', default: '200' },
    runs: { type: 'string', default: '20' },
    warmup: { type: 'string', default: '3' },
  },
});
const PS_PODS = Number(opt.pods);
const OBJECTS = Number(opt.objects);
const RUNS = Math.max(10, Number(opt.runs));
const WARMUP = Math.max(1, Number(opt.warmup));
const PER_FILE = 20;
const PS_TARGET = 2; // ps ≤ 2 × podman ps

// ---------------------------------------------------------------------------------------------- hyperfine

interface Cmd {
  name: string;
  argv: string[];
}
interface Result {
  name: string;
  median: number; // ms
  mean: number;
  stddev: number;
  min: number;
  codes: number[]; // distinct exit codes over the timed runs
}

const berthCmd = (env: BerthEnv, name: string, args: string[]): Cmd => ({ name, argv: [LAUNCHER, '--root', env.root, '--state', env.state, ...args] });
const podmanCmd = (name: string, args: string[]): Cmd => ({ name, argv: ['podman', ...podmanArgs(), ...args] });

/** Environment of every timed command: podman's CONTAINERS_CONF (berth does not read it). */
const benchEnv = { ...process.env, CONTAINERS_CONF: PODMAN_CONF };

/** Runs each command once (not timed) and returns its exit code and a short excerpt of its output. */
function probe(c: Cmd): { code: number; out: string } {
  const r = spawnSync(c.argv[0] ?? '', c.argv.slice(1), { encoding: 'utf8', env: benchEnv, maxBuffer: 64 << 20, timeout: 120_000 });
  return { code: r.status ?? -1, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

/** One hyperfine invocation over `cmds`, in order; -i so a non-zero exit is reported (exit codes) instead of aborting. */
function hyperfine(label: string, cmds: Cmd[], jsonDir: string): Map<string, Result> {
  log(`\n-- hyperfine: ${label} (-N, --warmup ${WARMUP}, --runs ${RUNS}) --`);
  const out = path.join(jsonDir, `${label.replace(/[^a-z0-9]+/gi, '-')}.json`);
  const args = ['-N', '-i', '--warmup', String(WARMUP), '--runs', String(RUNS), '--style', 'basic', '--export-json', out];
  for (const c of cmds) args.push('-n', c.name);
  for (const c of cmds) {
    if (c.argv.some((a) => /[\s'"\\]/.test(a))) throw new Error(`hyperfine ${label}: argument with spaces or quotes in ${c.argv.join(' ')}`);
    args.push(c.argv.join(' '));
  }
  const r = spawnSync('hyperfine', args, { stdio: ['ignore', 'inherit', 'inherit'], env: benchEnv });
  if (r.status !== 0) throw new Error(`hyperfine ${label}: exit ${String(r.status)}`);
  const res = JSON.parse(readFileSync(out, 'utf8')) as { results: { command: string; mean: number; stddev: number; median: number; min: number; exit_codes: number[] }[] };
  const m = new Map<string, Result>();
  res.results.forEach((x, i) => {
    const name = cmds[i]?.name ?? x.command;
    m.set(name, { name, median: x.median * 1000, mean: x.mean * 1000, stddev: x.stddev * 1000, min: x.min * 1000, codes: [...new Set(x.exit_codes)] });
  });
  return m;
}

// ---------------------------------------------------------------------------------------------- table

interface Row {
  figure: string;
  berth: Result | undefined;
  peer?: Result | undefined; // the natural peer (podman --help for --help, podman ps for ps)
  ps: Result | undefined; // podman ps of the same hyperfine invocation
  target?: number; // × podman ps
}
const rows: Row[] = [];
const failures: string[] = [];

const fmt = (r: Result | undefined): string => (r === undefined ? 'n/a' : `${r.median.toFixed(r.median < 10 ? 1 : 0)} ms`);
const fmtLong = (r: Result | undefined): string =>
  r === undefined ? 'n/a' : `p50 ${r.median.toFixed(1)} ms, mean ${r.mean.toFixed(1)} ± ${r.stddev.toFixed(1)} ms, min ${r.min.toFixed(1)} ms, exit ${r.codes.join('/')}`;
const ratioOf = (a: Result | undefined, b: Result | undefined): number => (a === undefined || b === undefined || b.median <= 0 ? NaN : a.median / b.median);
const x = (r: number): string => (Number.isFinite(r) ? `${r.toFixed(2)}×` : 'n/a');

function printResults(m: Map<string, Result>): void {
  for (const r of m.values()) log(`  ${r.name.padEnd(34)} ${fmtLong(r)}`);
}

// ---------------------------------------------------------------------------------------------- podman containers

const podmanNames: string[] = [];

async function startPodmanContainers(image: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const name = `bench-ps-${String(i).padStart(2, '0')}`;
    podmanNames.push(name);
    await podman(['run', '-d', '--network', 'none', '--name', name, image, 'sh', '-c', "trap 'exit 0' TERM; sleep 3600 & wait"]);
  }
  const running = (await podman(['ps', '-q'])).split('\n').filter((l) => l.trim() !== '').length;
  if (running !== n) throw new Error(`podman: ${running} containers running, expected ${n}`);
}

async function stopPodmanContainers(): Promise<void> {
  if (podmanStore.base === undefined || podmanNames.length === 0) return;
  await podman(['rm', '-f', '-t', '0', ...podmanNames.splice(0)], 120_000).catch((err: unknown) => log(`podman rm: ${String(err)}`));
}

// ---------------------------------------------------------------------------------------------- berth

function writePods(dir: string, prefix: string, n: number, image: string): void {
  for (let f = 0; f * PER_FILE < n; f++) {
    const docs: string[] = [];
    for (let i = f * PER_FILE; i < Math.min(n, (f + 1) * PER_FILE); i++) docs.push(sleeperPod(`${prefix}-${String(i).padStart(3, '0')}`, image));
    writeFileSync(path.join(dir, `pods-${String(f).padStart(2, '0')}.yaml`), docs.join('---\n'));
  }
}

/** Runs the berth commands once outside the timing and says what they printed (ps: pod count; diff: exit 0). */
function checkOnce(cmds: Cmd[]): void {
  for (const c of cmds) {
    if (!c.name.startsWith('berth')) continue;
    const p = probe(c);
    const lines = p.out.split('\n').filter((l) => l !== '');
    const excerpt = lines.length === 0 ? ' (no output)' : p.code !== 0 || lines.length <= 2 ? `: ${lines.slice(0, 4).join(' | ')}` : `; first: ${lines[0] ?? ''}`;
    log(`  once: ${c.name}: exit ${p.code}, ${lines.length} line(s)${excerpt}`);
  }
}

async function benchPs(image: string, jsonDir: string, withPodman: boolean): Promise<void> {
  log(`\n== A. --help and ps with ${PS_PODS} pods running ==`);
  const { env, dir } = newEnv('berth-bench-cli-ps-');
  writePods(dir, 'ps', PS_PODS, image);
  await prePull(env, image);
  let t0 = performance.now();
  must(await berth(env, ['apply', '-f', dir], { timeoutMs: 10 * 60_000 }), 'berth apply -f DIR');
  await waitConverged(env, PS_PODS, 5 * 60_000);
  log(`berth: ${PS_PODS} pods applied in-process and Running after ${secs(performance.now() - t0)}`);
  if (withPodman) {
    t0 = performance.now();
    await startPodmanContainers(image, PS_PODS);
    log(`podman: ${PS_PODS} containers running after ${secs(performance.now() - t0)}`);
  }
  const pps = withPodman ? [podmanCmd('podman ps', ['ps'])] : [];
  const a1: Cmd[] = [
    { name: 'node -e 0', argv: [process.execPath, '-e', '0'] },
    berthCmd(env, 'berth --help', ['--help']),
    ...(withPodman ? [podmanCmd('podman --help', ['--help'])] : []),
    ...pps,
    berthCmd(env, 'berth ps (in-process)', ['ps']),
  ];
  checkOnce(a1);
  const r1 = hyperfine('A1 no daemon', a1, jsonDir);
  printResults(r1);

  const up: Daemon = startUp(env, dir, 30); // the default --resync
  await waitDaemonSocket(env, up);
  await waitConverged(env, PS_PODS, 60_000);
  const a2: Cmd[] = [...pps, berthCmd(env, 'berth ps (daemon)', ['ps'])];
  checkOnce(a2);
  const r2 = hyperfine('A2 berth up running', a2, jsonDir);
  printResults(r2);
  await stopUp(up);

  rows.push({ figure: '`node -e 0` (floor)', berth: r1.get('node -e 0'), ps: r1.get('podman ps') });
  rows.push({ figure: '`--help`', berth: r1.get('berth --help'), peer: r1.get('podman --help'), ps: r1.get('podman ps') });
  rows.push({ figure: `\`ps\`, ${PS_PODS} pods, in-process`, berth: r1.get('berth ps (in-process)'), peer: r1.get('podman ps'), ps: r1.get('podman ps'), target: PS_TARGET });
  rows.push({ figure: `\`ps\`, ${PS_PODS} pods, through the daemon`, berth: r2.get('berth ps (daemon)'), peer: r2.get('podman ps'), ps: r2.get('podman ps'), target: PS_TARGET });

  t0 = performance.now();
  const d = await berth(env, ['delete', '-f', dir], { timeoutMs: 10 * 60_000 });
  log(`berth delete -f DIR (${PS_PODS} pods): exit ${d.code} after ${secs(performance.now() - t0)}`);
}

async function benchManifests(image: string, jsonDir: string, withPodman: boolean): Promise<void> {
  log(`\n== B. validate and diff over ${OBJECTS} pod manifests (${Math.ceil(OBJECTS / PER_FILE)} files × ${PER_FILE}), applied and converged ==`);
  const { env, dir } = newEnv('berth-bench-cli-diff-');
  writePods(dir, 'obj', OBJECTS, image);
  await prePull(env, image);
  let up: Daemon | undefined = startUp(env, dir, 30); // the default --resync
  try {
    await waitDaemonSocket(env, up);
    const t0 = performance.now();
    await waitConverged(env, OBJECTS, 30 * 60_000);
    log(`berth up: ${OBJECTS} pods Running after ${secs(performance.now() - t0)}`);
    const pps = withPodman ? [podmanCmd('podman ps', ['ps'])] : [];
    const b1: Cmd[] = [...pps, berthCmd(env, 'berth diff (daemon)', ['diff', '-f', dir]), berthCmd(env, 'berth validate (daemon running)', ['validate', '-f', dir])];
    checkOnce(b1);
    const r1 = hyperfine('B1 berth up running', b1, jsonDir);
    printResults(r1);
    await stopUp(up);
    up = undefined;
    const b2: Cmd[] = [...pps, berthCmd(env, 'berth diff (in-process)', ['diff', '-f', dir]), berthCmd(env, 'berth validate', ['validate', '-f', dir])];
    checkOnce(b2);
    const r2 = hyperfine('B2 no daemon', b2, jsonDir);
    printResults(r2);
    rows.push({ figure: `\`validate -f DIR\`, ${OBJECTS} objects`, berth: r2.get('berth validate'), ps: r2.get('podman ps') });
    rows.push({ figure: `\`validate -f DIR\`, ${OBJECTS} objects (daemon running)`, berth: r1.get('berth validate (daemon running)'), ps: r1.get('podman ps') });
    rows.push({ figure: `\`diff -f DIR\`, ${OBJECTS} objects, in-process`, berth: r2.get('berth diff (in-process)'), ps: r2.get('podman ps') });
    rows.push({ figure: `\`diff -f DIR\`, ${OBJECTS} objects, through the daemon`, berth: r1.get('berth diff (daemon)'), ps: r1.get('podman ps') });
  } finally {
    if (up !== undefined) await stopUp(up);
    const t0 = performance.now();
    const d = await berth(env, ['delete', '-f', dir], { timeoutMs: 20 * 60_000 }).catch((err: unknown) => ({ code: -1, stdout: '', stderr: String(err) }));
    log(`berth delete -f DIR (${OBJECTS} pods, in-process): exit ${d.code} after ${secs(performance.now() - t0)}`);
  }
}

// ---------------------------------------------------------------------------------------------- main

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench/cli: must run as root (runc, overlay mounts)');
  if (spawnSync('hyperfine', ['--version']).status !== 0) throw new Error('bench/cli: hyperfine missing (bash scripts/bench-deps.sh)');
  log(`bench/cli — ${new Date().toISOString()}`);
  log(machine());
  const buildAtStart = buildFingerprint();
  log(`berth ${revision()}; build ${buildAtStart}`);
  let fx: DemoFixture | undefined;
  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = true;
    log(`\n${sig}: cleaning up`);
    void stopPodmanContainers()
      .then(() => cleanupAll(fx))
      .finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let withPodman = false;
  let jsonDir = '';
  try {
    fx = await startDemoFixture();
    const image = `${fx.registry.host}/berth/demo:1.0`;
    log(`registry on ${fx.registry.host}; image ${image} (fixture from busybox-static)`);
    const why = havePodman();
    if (why === undefined) {
      try {
        await preparePodman(fx, image);
        withPodman = true;
        log(`podman: private store at ${podmanStore.base ?? ''}, image copied from the registry with skopeo (not timed)`);
      } catch (err) {
        log(`podman: store preparation failed, peer skipped: ${String(err)}`);
      }
    } else log(`podman: ${why}`);
    jsonDir = mkdtempSync(path.join(os.tmpdir(), 'berth-bench-cli-hyperfine-'));

    for (const [name, fn] of [
      ['A. --help, ps', () => benchPs(image, jsonDir, withPodman)],
      ['B. validate, diff', () => benchManifests(image, jsonDir, withPodman)],
    ] as const) {
      if (interrupted) break;
      try {
        await fn();
      } catch (err) {
        const msg = err instanceof Error ? (err.stack ?? err.message) : String(err);
        failures.push(`${name}: ${msg.split('\n').slice(0, 30).join('\n')}`);
        log(`\n!! section ${name} failed:\n${msg}`);
      }
    }
  } finally {
    if (!interrupted) {
      await stopPodmanContainers();
      await cleanupAll(fx);
    }
    if (jsonDir !== '') rmSync(jsonDir, { recursive: true, force: true });
  }

  log('\n== summary (p50 of hyperfine runs; ratios against the podman ps of the same hyperfine invocation) ==');
  const header = ['figure', 'berth', 'peer', 'peer p50', 'berth/peer', 'podman ps', 'berth/podman ps', 'target'];
  const table = [header];
  for (const r of rows) {
    const vsPs = ratioOf(r.berth, r.ps);
    table.push([
      r.figure,
      fmt(r.berth),
      r.peer === undefined ? '—' : `\`${r.peer.name}\``,
      r.peer === undefined ? '—' : fmt(r.peer),
      r.peer === undefined ? '—' : x(ratioOf(r.berth, r.peer)),
      fmt(r.ps),
      x(vsPs),
      r.target === undefined ? '—' : `≤ ${r.target}× podman ps: ${!Number.isFinite(vsPs) ? 'n/a' : vsPs <= r.target ? 'met' : 'not met'}`,
    ]);
  }
  const widths = header.map((_, i) => Math.max(...table.map((row) => (row[i] ?? '').length)));
  for (const row of table) log(`| ${row.map((c, i) => c.padEnd(widths[i] ?? 0)).join(' | ')} |`);
  for (const r of rows) {
    if (r.berth !== undefined && !(r.berth.codes.length === 1 && r.berth.codes[0] === 0)) log(`note: ${r.figure}: exit codes ${r.berth.codes.join('/')} (not all 0)`);
  }
  const buildAtEnd = buildFingerprint();
  if (buildAtEnd !== buildAtStart) {
    log(`\nWARNING: ${path.dirname(CLI)} was rebuilt during the run (${buildAtStart} → ${buildAtEnd}); the figures mix two builds. Run again.`);
  } else log(`\nbuild ${buildAtEnd} unchanged during the run`);
  if (failures.length > 0) {
    log('\nsections that failed (figures above are from the others):');
    for (const f of failures) log(`- ${f.split('\n')[0] ?? ''}`);
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench/cli: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);

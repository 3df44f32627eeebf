/**
 * bench/reconcile — the reconciler's figures on this machine, in one run, next to podman's where podman has an
 * equivalent. Prints figures and ratios; asserts nothing.
 *
 *   bash bench/reconcile.sh [--edits N] [--restarts N] [--pods N] [--resync S] [--window S] [--only 1,2,3,4]
 *
 * 1. manifest saved → container serving (`berth up DIR`; peer: `podman kube play --replace FILE`)
 * 2. container SIGKILLed → restarted and serving (first restart of each of N fresh pods; peer: podman, same)
 * 3. CPU of one no-op resync pass of `berth up` over N tiny pods
 * 4. wall time of `berth diff -f DIR` and `berth status` over N pods, through the daemon and in-process
 *
 * Every berth instance has its own temp --root/--state; podman gets its own temp --root/--runroot/--tmpdir/
 * --network-config-dir and CONTAINERS_CONF=/etc/containers/berth-bench.conf (scripts/bench-deps.sh); that set-up,
 * shared with bench/cli, lives in bench/common.ts. All traffic stays on 127.0.0.1: pods use hostNetwork with httpd
 * bound to 127.0.0.1; the registry listens on 127.0.0.1.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, promises as fsp, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { CLI, LAUNCHER, berth, type BerthEnv } from '../test/helpers/berth.js';
import { startDemoFixture, type DemoFixture } from '../test/helpers/demo.js';
import { freePort } from '../test/helpers/registry.js';
import {
  buildFingerprint,
  cleanupAll,
  havePodman,
  log,
  machine,
  mean,
  ms,
  must,
  newEnv,
  pct,
  podman,
  podmanStore,
  prePull,
  preparePodman,
  ratio,
  revision,
  secs,
  sleep,
  sleeperPod,
  startUp,
  stopUp,
  waitConverged,
  waitDaemonSocket,
  type Daemon,
} from './common.js';

// ---------------------------------------------------------------------------------------------- options

const { values: opt } = parseArgs({
  options: {
    edits: { type: 'string', default: '40' },
    restarts: { type: 'string', default: '12' },
    pods: { type: 'string', default: '200' },
    resync: { type: 'string', default: '5' },
    window: { type: 'string', default: '60' },
    only: { type: 'string', default: '1,2,3,4' },
  },
});
const EDITS = Number(opt.edits);
const RESTARTS = Number(opt.restarts);
const PODS = Number(opt.pods);
const RESYNC_S = Number(opt.resync);
const WINDOW_S = Math.max(RESYNC_S, Math.round(Number(opt.window) / RESYNC_S) * RESYNC_S); // a whole number of periods
const ONLY = new Set(opt.only.split(',').map((s) => s.trim()));

// ---------------------------------------------------------------------------------------------- small helpers

/** One GET / on 127.0.0.1:port without keep-alive; the body on 200, undefined on anything else. */
function get(port: number, timeoutMs = 1000): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve(res.statusCode === 200 ? body : undefined));
      res.on('error', () => resolve(undefined));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(undefined));
  });
}

/** Polls every `stepMs` until `pred(body)`; returns ms since `t0` (performance.now()) or undefined on timeout. */
async function pollUntil(port: number, pred: (body: string) => boolean, t0: number, timeoutMs: number, stepMs = 5): Promise<number | undefined> {
  for (;;) {
    const body = await get(port);
    const now = performance.now();
    if (body !== undefined && pred(body)) return now - t0;
    if (now - t0 > timeoutMs) return undefined;
    await sleep(stepMs);
  }
}

function writeAtomic(file: string, text: string): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp`); // dotfiles are ignored by berth's watcher
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

/** busybox httpd on 127.0.0.1:port serving `page` (a shell word list, evaluated at start); SIGTERM → exit 0. */
function httpdPod(o: { name: string; image: string; port: number; pageCmd: string; restartPolicy?: string }): string {
  const script = `trap 'kill $p; exit 0' TERM; mkdir -p /tmp/w; ${o.pageCmd} > /tmp/w/index.html; httpd -f -p 127.0.0.1:${o.port} -h /tmp/w & p=$!; wait`;
  return [
    'apiVersion: v1',
    'kind: Pod',
    'metadata:',
    `  name: ${o.name}`,
    'spec:',
    '  hostNetwork: true',
    `  restartPolicy: ${o.restartPolicy ?? 'Always'}`,
    '  terminationGracePeriodSeconds: 2',
    '  containers:',
    '    - name: httpd',
    `      image: ${o.image}`,
    `      command: ["sh", "-c", ${JSON.stringify(script)}]`,
    '',
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------- berth processes

interface PsPod {
  key: string;
  containers: { name: string; state: string; pid: number | null }[];
}

async function berthPid(env: BerthEnv, key: string): Promise<number | undefined> {
  const pods = JSON.parse(must(await berth(env, ['ps', '-o', 'json']), 'berth ps -o json')) as PsPod[];
  const c = pods.find((p) => p.key === key)?.containers.find((x) => x.state === 'running');
  return c?.pid ?? undefined;
}

// ---------------------------------------------------------------------------------------------- results

interface Row {
  figure: string;
  value: number; // ms
  target?: number; // ms, lower is better
  peer?: number; // ms
  peerName?: string;
  note?: string;
}
const rows: Row[] = [];
const failures: string[] = [];
const notes: string[] = [];

// ---------------------------------------------------------------------------------------------- 1. save → serving

async function benchSaveToServing(image: string): Promise<void> {
  log(`\n== 1. manifest saved → container serving (${EDITS} edits each; poll GET every 5 ms) ==`);
  const mark = (i: number): string => `edit-marker-[${i}]`;

  // berth
  const { env, dir } = newEnv('berth-bench-save-');
  const port = await freePort();
  const file = path.join(dir, 'web.yaml');
  const pod = (i: number): string => httpdPod({ name: 'save', image, port, pageCmd: `echo ${mark(i)}` });
  writeAtomic(file, pod(0));
  await prePull(env, image);
  const up = startUp(env, dir, 1000);
  const berthTimes: number[] = [];
  let berthMiss = 0;
  try {
    const first = await pollUntil(port, (b) => b.includes(mark(0)), performance.now(), 180_000, 20);
    if (first === undefined) throw new Error(`berth up never served the first version on 127.0.0.1:${port}; berth up output:\n${up.output().slice(-3000)}`);
    log(`berth: first version (image present) served after ${ms(first)}`);
    await sleep(500);
    for (let i = 1; i <= EDITS; i++) {
      const tmp = path.join(dir, '.web.yaml.tmp');
      writeFileSync(tmp, pod(i));
      renameSync(tmp, file);
      const t0 = performance.now();
      const dt = await pollUntil(port, (b) => b.includes(mark(i)), t0, 30_000);
      if (dt === undefined) {
        berthMiss++;
        log(`berth: edit ${i} not served within 30 s`);
        if (berthMiss >= 3) throw new Error(`berth: 3 edits not served within 30 s; berth up output:\n${up.output().slice(-3000)}`);
      } else berthTimes.push(dt);
      await sleep(300);
    }
  } finally {
    await stopUp(up);
    await berth(env, ['delete', '-f', dir], { timeoutMs: 60_000 }).catch(() => undefined);
  }
  log(`berth: n=${berthTimes.length} p50 ${ms(pct(berthTimes, 50))} p90 ${ms(pct(berthTimes, 90))} p99 ${ms(pct(berthTimes, 99))} max ${ms(Math.max(...berthTimes))}${berthMiss > 0 ? ` (${berthMiss} not served in 30 s)` : ''}`);
  log(`berth samples (ms): ${berthTimes.map((x) => x.toFixed(0)).join(' ')}`);

  // podman
  let pm50 = NaN;
  let pm99 = NaN;
  const why = havePodman();
  if (why !== undefined) log(`podman: skipped: ${why}`);
  else {
    try {
      const pport = await freePort();
      const pdir = await fsp.mkdtemp(path.join(podmanStore.base ?? os.tmpdir(), 'kube-'));
      const pfile = path.join(pdir, 'web.yaml');
      const ppod = (i: number): string => httpdPod({ name: 'save', image, port: pport, pageCmd: `echo ${mark(i)}` });
      podmanStore.pods.add('save');
      writeAtomic(pfile, ppod(0));
      await podman(['kube', 'play', '--replace', pfile]);
      if ((await pollUntil(pport, (b) => b.includes(mark(0)), performance.now(), 30_000)) === undefined) throw new Error('podman: first version not served in 30 s');
      await sleep(500);
      const times: number[] = [];
      const cmdTimes: number[] = [];
      for (let i = 1; i <= EDITS; i++) {
        writeAtomic(pfile, ppod(i));
        const t0 = performance.now();
        let cmdDone = NaN;
        const cmd = podman(['kube', 'play', '--replace', pfile]).then(() => (cmdDone = performance.now() - t0));
        cmd.catch(() => undefined);
        const dt = await pollUntil(pport, (b) => b.includes(mark(i)), t0, 30_000);
        await cmd;
        if (dt !== undefined) times.push(dt);
        else log(`podman: edit ${i} not served within 30 s`);
        cmdTimes.push(cmdDone);
        await sleep(300);
      }
      pm50 = pct(times, 50);
      pm99 = pct(times, 99);
      log(`podman kube play --replace: n=${times.length} p50 ${ms(pm50)} p90 ${ms(pct(times, 90))} p99 ${ms(pm99)}; the command itself p50 ${ms(pct(cmdTimes, 50))}`);
      log(`podman samples (ms): ${times.map((x) => x.toFixed(0)).join(' ')}`);
      const fast = times.filter((x) => x < 1000);
      if (fast.length < times.length && fast.length > 0) {
        notes.push(
          `podman kube play --replace is bimodal here (${times.length - fast.length} of ${times.length} edits stalled ~3 s); without the stalls its p50 is ${ms(pct(fast, 50))} (berth/podman ${ratio(pct(berthTimes, 50), pct(fast, 50))})`,
        );
        log(`podman: ${times.length - fast.length} of ${times.length} edits took ≥ 1 s (kube play --replace stalls ~3 s between removing the old pod and creating the new one on this host); p50 of the others ${ms(pct(fast, 50))}`);
      }
      await podman(['pod', 'rm', '-f', '-t', '0', 'save']).catch(() => undefined);
    } catch (err) {
      log(`podman: failed: ${String(err)}`);
    }
  }
  rows.push({ figure: 'save → serving p50 (berth up)', value: pct(berthTimes, 50), target: 250, peer: pm50, peerName: 'podman kube play --replace' });
  rows.push({ figure: 'save → serving p99 (berth up)', value: pct(berthTimes, 99), target: 500, peer: pm99, peerName: 'podman kube play --replace' });
}

// ---------------------------------------------------------------------------------------------- 2. exit → restarted

async function benchRestart(image: string): Promise<void> {
  log(`\n== 2. container SIGKILLed → restarted and serving: FIRST restart of each of ${RESTARTS} fresh pods ==`);
  log('(only the first restart of a pod is immediate; later ones wait crash-loop backoff, 10 s doubling — so one kill per pod)');
  // Every start writes a fresh uuid into the page: a different body means a new process serves.
  const pageCmd = 'cat /proc/sys/kernel/random/uuid';

  const { env, dir } = newEnv('berth-bench-restart-');
  const ports: number[] = [];
  for (let i = 0; i < RESTARTS; i++) ports.push(await freePort());
  writeFileSync(path.join(dir, 'crash.yaml'), ports.map((p, i) => httpdPod({ name: `crash-${i}`, image, port: p, pageCmd })).join('---\n'));
  await prePull(env, image);
  const up = startUp(env, dir, 1000);
  const times: number[] = [];
  try {
    await waitDaemonSocket(env, up);
    for (const p of ports) {
      if ((await pollUntil(p, () => true, performance.now(), 180_000, 50)) === undefined) throw new Error(`berth up never served 127.0.0.1:${p}; output:\n${up.output().slice(-3000)}`);
    }
    await sleep(1000);
    for (let i = 0; i < RESTARTS; i++) {
      const key = `default/crash-${i}`;
      const port = ports[i] ?? 0;
      const pid = await berthPid(env, key);
      const before = await get(port);
      if (pid === undefined || before === undefined) {
        log(`berth: ${key}: no running pid (${String(pid)}) or not serving; skipped`);
        continue;
      }
      const t0 = performance.now();
      process.kill(pid, 'SIGKILL');
      const dt = await pollUntil(port, (b) => b !== before, t0, 30_000);
      if (dt === undefined) {
        log(`berth: ${key}: not serving again within 30 s after SIGKILL of pid ${pid}`);
        continue;
      }
      const after = await berthPid(env, key);
      log(`berth: ${key}: pid ${pid} → ${String(after)} serving after ${ms(dt)}`);
      times.push(dt);
    }
  } finally {
    await stopUp(up);
    await berth(env, ['delete', '-f', dir], { timeoutMs: 120_000 }).catch(() => undefined);
  }
  log(`berth: n=${times.length} p50 ${ms(pct(times, 50))} p90 ${ms(pct(times, 90))} max ${ms(Math.max(...times))}`);

  let pm50 = NaN;
  const why = havePodman();
  if (why !== undefined) log(`podman: skipped: ${why}`);
  else {
    try {
      const pdir = await fsp.mkdtemp(path.join(podmanStore.base ?? os.tmpdir(), 'kube-'));
      const ptimes: number[] = [];
      const pports: number[] = [];
      for (let i = 0; i < RESTARTS; i++) pports.push(await freePort());
      for (let i = 0; i < RESTARTS; i++) {
        const f = path.join(pdir, `crash-${i}.yaml`);
        writeFileSync(f, httpdPod({ name: `crash-${i}`, image, port: pports[i] ?? 0, pageCmd }));
        podmanStore.pods.add(`crash-${i}`);
        await podman(['kube', 'play', '--replace', f]);
      }
      for (const p of pports) {
        if ((await pollUntil(p, () => true, performance.now(), 30_000, 50)) === undefined) throw new Error(`podman pod never served 127.0.0.1:${p}`);
      }
      await sleep(1000);
      for (let i = 0; i < RESTARTS; i++) {
        const port = pports[i] ?? 0;
        const pid = Number((await podman(['inspect', '--format', '{{.State.Pid}}', `crash-${i}-httpd`])).trim());
        const before = await get(port);
        if (!(pid > 0) || before === undefined) {
          log(`podman: crash-${i}: no pid or not serving; skipped`);
          continue;
        }
        const t0 = performance.now();
        process.kill(pid, 'SIGKILL');
        const dt = await pollUntil(port, (b) => b !== before, t0, 30_000);
        if (dt === undefined) log(`podman: crash-${i}: not serving again within 30 s`);
        else ptimes.push(dt);
      }
      pm50 = pct(ptimes, 50);
      log(`podman (restartPolicy Always via kube play): n=${ptimes.length} p50 ${ms(pm50)} p90 ${ms(pct(ptimes, 90))} max ${ms(Math.max(...ptimes))}`);
      for (let i = 0; i < RESTARTS; i++) await podman(['pod', 'rm', '-f', '-t', '0', `crash-${i}`]).catch(() => undefined);
    } catch (err) {
      log(`podman: failed: ${String(err)}`);
    }
  }
  rows.push({ figure: 'exit → restarted p50 (first restart)', value: pct(times, 50), target: 300, peer: pm50, peerName: 'podman restart policy' });
}

// ---------------------------------------------------------------------------------------------- 3 + 4. 200 pods

let CLK_TCK = 100;

interface Cpu {
  /** utime+stime of the daemon, ms (CLK_TCK resolution) */
  self: number;
  /** cutime+cstime: children it waited for (runc, etc.), ms */
  children: number;
  /** sum over the daemon's threads of /proc/<pid>/task/<tid>/schedstat run time, ms (ns resolution) */
  sched: number;
}

function cpuOf(pid: number): Cpu {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // f[0] is field 3 (state)
  const tick = 1000 / CLK_TCK;
  const n = (i: number): number => Number(f[i - 3] ?? NaN);
  let sched = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      sched += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]) / 1e6;
    } catch {
      // thread gone
    }
  }
  return { self: (n(14) + n(15)) * tick, children: (n(16) + n(17)) * tick, sched };
}
const cpuDiff = (a: Cpu, b: Cpu): Cpu => ({ self: b.self - a.self, children: b.children - a.children, sched: b.sched - a.sched });

/** Samples the daemon's CPU every `stepMs` over `windowMs`; returns the total and the busy bursts (CPU ms each). */
async function sampleCpu(pid: number, windowMs: number, stepMs = 100): Promise<{ total: Cpu; bursts: number[] }> {
  const start = cpuOf(pid);
  let prev = start;
  const bursts: number[] = [];
  let cur = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < windowMs) {
    await sleep(stepMs);
    const now = cpuOf(pid);
    const d = now.sched - prev.sched;
    prev = now;
    if (d > 0.5) cur += d; // busy sample (> 0.5 ms of CPU per 100 ms)
    else if (cur > 0) {
      bursts.push(cur);
      cur = 0;
    }
  }
  if (cur > 0) bursts.push(cur);
  return { total: cpuDiff(start, prev), bursts };
}

interface Timed {
  mean: number;
  p50: number;
  tool: string;
  code: number;
}

async function timeCommand(label: string, env: BerthEnv, args: string[], jsonDir: string): Promise<Timed> {
  // exit code once, outside the timing (diff: 0 = no changes, 1 = changes pending, 2 = error)
  const once = await berth(env, args, { timeoutMs: 120_000 });
  if (once.code !== 0) log(`  note: berth ${args.join(' ')} exits ${once.code}: ${(once.stdout + once.stderr).split('\n').slice(0, 4).join(' | ')}`);
  const argv = [LAUNCHER, '--root', env.root, '--state', env.state, ...args];
  if (spawnSync('hyperfine', ['--version']).status === 0) {
    const out = path.join(jsonDir, `${label.replace(/[^a-z0-9]+/gi, '-')}.json`);
    const r = spawnSync('hyperfine', ['-N', '-i', '--warmup', '1', '--runs', '10', '--style', 'none', '--export-json', out, argv.join(' ')], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`hyperfine ${label}: exit ${String(r.status)}: ${r.stderr}`);
    const res = (JSON.parse(readFileSync(out, 'utf8')) as { results: { mean: number; median: number }[] }).results[0];
    if (res === undefined) throw new Error(`hyperfine ${label}: no result`);
    return { mean: res.mean * 1000, p50: res.median * 1000, tool: 'hyperfine', code: once.code };
  }
  const xs: number[] = [];
  for (let i = 0; i < 11; i++) {
    const t0 = performance.now();
    await berth(env, args, { timeoutMs: 120_000 });
    if (i > 0) xs.push(performance.now() - t0);
  }
  return { mean: mean(xs), p50: pct(xs, 50), tool: 'own loop (10 runs, 1 warmup)', code: once.code };
}

async function benchManyPods(image: string, doCpu: boolean, doCli: boolean): Promise<void> {
  log(`\n== 3/4. ${PODS} tiny pods (hostNetwork, busybox sleep 3600) ==`);
  const { env, dir } = newEnv('berth-bench-many-');
  const perFile = 20;
  for (let f = 0; f * perFile < PODS; f++) {
    const docs: string[] = [];
    for (let i = f * perFile; i < Math.min(PODS, (f + 1) * perFile); i++) docs.push(sleeperPod(`idle-${String(i).padStart(3, '0')}`, image));
    writeFileSync(path.join(dir, `pods-${String(f).padStart(2, '0')}.yaml`), docs.join('---\n'));
  }
  const jsonDir = path.join(env.dir, 'hyperfine');
  mkdirSync(jsonDir);
  await prePull(env, image);
  let up: Daemon | undefined = startUp(env, dir, 1000);
  try {
    await waitDaemonSocket(env, up);
    const t0 = performance.now();
    await waitConverged(env, PODS, 30 * 60_000);
    const conv = performance.now() - t0;
    log(`berth up --resync 1000: ${PODS} pods Running after ${secs(conv)} (${ms(conv / PODS)} per pod; status polled every 2 s)`);
    rows.push({ figure: `converge ${PODS} pods (berth up, image present)`, value: conv, note: 'informative' });
    const daemonPid = up.child.pid ?? 0;

    let idleRate: Cpu | undefined; // CPU ms per second with no resync
    if (doCpu) {
      await sleep(3000);
      const idleMs = 20_000;
      const idle = await sampleCpu(daemonPid, idleMs);
      idleRate = { self: idle.total.self / (idleMs / 1000), children: idle.total.children / (idleMs / 1000), sched: idle.total.sched / (idleMs / 1000) };
      log(`idle (no resync, ${idleMs / 1000} s): daemon CPU ${idle.total.sched.toFixed(1)} ms (schedstat), ${idle.total.self} ms utime+stime, children ${idle.total.children} ms`);
    }

    if (doCli) {
      log(`\n-- 4. wall time over ${PODS} pods --`);
      const diffD = await timeCommand('diff-daemon', env, ['diff', '-f', dir], jsonDir);
      log(`through the daemon: diff -f DIR mean ${ms(diffD.mean)} p50 ${ms(diffD.p50)} (exit ${diffD.code}; ${diffD.tool})`);
      const statD = await timeCommand('status-daemon', env, ['status'], jsonDir);
      log(`through the daemon: status       mean ${ms(statD.mean)} p50 ${ms(statD.p50)} (${statD.tool})`);
      await stopUp(up);
      up = undefined;
      const diffI = await timeCommand('diff-inproc', env, ['diff', '-f', dir], jsonDir);
      log(`in-process:         diff -f DIR mean ${ms(diffI.mean)} p50 ${ms(diffI.p50)} (exit ${diffI.code}; ${diffI.tool})`);
      const statI = await timeCommand('status-inproc', env, ['status'], jsonDir);
      log(`in-process:         status       mean ${ms(statI.mean)} p50 ${ms(statI.p50)} (${statI.tool})`);
      rows.push({ figure: `diff -f DIR, ${PODS} pods, via daemon (p50)`, value: diffD.p50, target: 500 });
      rows.push({ figure: `diff -f DIR, ${PODS} pods, in-process (p50)`, value: diffI.p50, target: 500 });
      rows.push({ figure: `status, ${PODS} pods, via daemon (p50)`, value: statD.p50, note: 'informative' });
      rows.push({ figure: `status, ${PODS} pods, in-process (p50)`, value: statI.p50, note: 'informative' });
    }

    if (doCpu && idleRate !== undefined) {
      log(`\n-- 3. CPU of a no-op resync pass (berth up --resync ${RESYNC_S}, window ${WINDOW_S} s = ${WINDOW_S / RESYNC_S} passes) --`);
      if (up !== undefined) await stopUp(up);
      up = startUp(env, dir, RESYNC_S);
      await waitDaemonSocket(env, up);
      await waitConverged(env, PODS, 5 * 60_000); // restart adopts; nothing should be restarted
      await sleep(RESYNC_S * 1000 + 2000); // the start-up pass and one resync behind us
      const pid = up.child.pid ?? 0;
      const k = WINDOW_S / RESYNC_S;
      const w = await sampleCpu(pid, WINDOW_S * 1000);
      const perPass = (w.total.sched - idleRate.sched * WINDOW_S) / k;
      const perPassTicks = (w.total.self + w.total.children - (idleRate.self + idleRate.children) * WINDOW_S) / k;
      const bursts = [...w.bursts].sort((a, b) => b - a);
      log(`window: daemon CPU ${w.total.sched.toFixed(0)} ms (schedstat), ${w.total.self} ms utime+stime, children ${w.total.children} ms (runc etc. it waited for)`);
      log(`per pass: ${ms(perPass)} (schedstat, idle rate subtracted); ${ms(perPassTicks)} (utime+stime+children, ${(1000 / CLK_TCK).toFixed(0)} ms ticks)`);
      log(`busy bursts seen (100 ms sampling): ${bursts.length}, CPU ms each: ${bursts.map((b) => b.toFixed(0)).join(' ')}`);
      rows.push({ figure: `no-op resync over ${PODS} pods, CPU per pass`, value: Math.max(perPass, perPassTicks), target: 50, note: 'max of the two counters' });
      await stopUp(up);
      up = undefined;
    }
  } finally {
    if (up !== undefined) await stopUp(up);
    const t0 = performance.now();
    const r = await berth(env, ['delete', '-f', dir], { timeoutMs: 20 * 60_000 }).catch((err: unknown) => ({ code: -1, stdout: '', stderr: String(err) }));
    log(`cleanup: berth delete -f DIR (${PODS} pods, in-process) exit ${r.code} after ${secs(performance.now() - t0)}${r.code !== 0 ? `: ${r.stderr.slice(-1000)}` : ''}`);
  }
}

// ---------------------------------------------------------------------------------------------- main

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench/reconcile: must run as root (runc, overlay mounts)');
  CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
  log(`bench/reconcile — ${new Date().toISOString()}`);
  log(machine());
  log(`berth ${revision()}; build ${buildFingerprint()}`);
  const buildAtStart = buildFingerprint();
  let fx: DemoFixture | undefined;
  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = true;
    log(`\n${sig}: cleaning up`);
    void cleanupAll(fx).finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    fx = await startDemoFixture();
    const image = `${fx.registry.host}/berth/demo:1.0`;
    log(`registry on ${fx.registry.host}; image ${image} (fixture from busybox-static)`);
    const why = havePodman();
    if (why === undefined) {
      try {
        await preparePodman(fx, image);
        log(`podman: private store at ${podmanStore.base ?? ''}, image copied from the registry with skopeo (not timed)`);
      } catch (err) {
        log(`podman: store preparation failed, peer skipped: ${String(err)}`);
        podmanStore.base = undefined;
      }
    } else log(`podman: ${why}`);

    const sections: [string, () => Promise<void>][] = [];
    if (ONLY.has('1')) sections.push(['1. save → serving', () => benchSaveToServing(image)]);
    if (ONLY.has('2')) sections.push(['2. exit → restarted', () => benchRestart(image)]);
    if (ONLY.has('3') || ONLY.has('4')) sections.push(['3/4. 200 pods', () => benchManyPods(image, ONLY.has('3'), ONLY.has('4'))]);
    for (const [name, fn] of sections) {
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
    if (!interrupted) await cleanupAll(fx);
  }

  log('\n== summary ==');
  const header = ['figure', 'berth', 'target', 'met', 'peer', 'peer figure', 'berth/peer'];
  const table = [header];
  for (const r of rows) {
    const met = r.target === undefined ? '—' : !Number.isFinite(r.value) ? 'n/a' : r.value <= r.target ? 'met' : 'NOT met';
    table.push([
      r.figure,
      ms(r.value),
      r.target === undefined ? (r.note ?? '—') : `≤ ${ms(r.target)}`,
      met,
      r.peerName ?? '—',
      r.peer === undefined ? '—' : ms(r.peer),
      r.peer === undefined ? '—' : ratio(r.value, r.peer),
    ]);
  }
  const widths = header.map((_, i) => Math.max(...table.map((row) => (row[i] ?? '').length)));
  for (const row of table) log(`| ${row.map((c, i) => c.padEnd(widths[i] ?? 0)).join(' | ')} |`);
  for (const n of notes) log(`note: ${n}`);
  const buildAtEnd = buildFingerprint();
  if (buildAtEnd !== buildAtStart) {
    log(`\nWARNING: ${path.dirname(CLI)} was rebuilt during the run (${buildAtStart} → ${buildAtEnd}); the figures mix two builds. Run again.`);
  }
  if (failures.length > 0) {
    log('\nsections that failed (berth or peer misbehaved; figures above are from the others):');
    for (const f of failures) log(`- ${f.split('\n')[0] ?? ''}`);
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench/reconcile: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);

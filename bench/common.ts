/**
 * bench/common — set-up shared by the benches (bench/reconcile, bench/cli): temp berth instances and their
 * `berth up` daemons, the private podman store, private containerd instances, figures formatting, the machine
 * line, the commit and a build fingerprint, and the cleanup of everything they started. Nothing here times
 * anything.
 *
 * Every berth instance has its own temp --root/--state; podman gets its own temp --root/--runroot/--tmpdir/
 * --network-config-dir and CONTAINERS_CONF=/etc/containers/berth-bench.conf (scripts/bench-deps.sh).
 */
import { execFile, spawn, spawnSync, type ChildProcess, type StdioOptions } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, promises as fsp, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { createHash } from 'node:crypto';
import { CLI, LAUNCHER, REPO, berth, berthUp, cleanupEnv, makeEnv, mountsUnder, waitFor, type BerthEnv } from '../test/helpers/berth.js';
import type { DemoFixture } from '../test/helpers/demo.js';

const execFileP = promisify(execFile);
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
export const PODMAN_CONF = '/etc/containers/berth-bench.conf';

// ---------------------------------------------------------------------------------------------- small helpers

export function pct(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1)); // nearest rank
  return s[i] ?? NaN;
}
export const mean = (xs: readonly number[]): number => (xs.length === 0 ? NaN : xs.reduce((a, b) => a + b, 0) / xs.length);
export const ms = (x: number): string => (Number.isFinite(x) ? `${x.toFixed(x < 10 ? 1 : 0)} ms` : 'n/a');
export const secs = (x: number): string => (Number.isFinite(x) ? `${(x / 1000).toFixed(2)} s` : 'n/a');
export const ratio = (a: number, b: number): string => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}×` : 'n/a');

export function log(line = ''): void {
  process.stdout.write(`${line}\n`);
}

export function sleeperPod(name: string, image: string): string {
  return [
    'apiVersion: v1',
    'kind: Pod',
    'metadata:',
    `  name: ${name}`,
    'spec:',
    '  hostNetwork: true',
    '  restartPolicy: Always',
    '  terminationGracePeriodSeconds: 1',
    '  containers:',
    '    - name: sleep',
    `      image: ${image}`,
    // sh handles SIGTERM (a bare `sleep` as PID 1 ignores it and every delete would wait the grace period)
    `      command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]`,
    '',
  ].join('\n');
}
// ---------------------------------------------------------------------------------------------- berth processes

export interface Daemon {
  child: ChildProcess;
  output: () => string;
}

export const daemons = new Set<Daemon>();
export const envs: { env: BerthEnv; dirs: string[] }[] = [];

export function startUp(env: BerthEnv, dir: string, resyncS: number): Daemon {
  const d = berthUp(env, dir, ['--resync', String(resyncS)]);
  daemons.add(d);
  return d;
}

/**
 * `bin/berth [global…] up DIR [extra…]` with its stdout and stderr in `logFile`, not a pipe: the
 * benches time commands with spawnSync, which stops this process from draining a pipe, and a daemon
 * writing into a full pipe is not what is being measured.
 */
export function spawnUpLogged(global: string[], dir: string, extra: string[], logFile: string): Daemon {
  const fd = openSync(logFile, 'a');
  try {
    const child = spawn(LAUNCHER, [...global, 'up', dir, ...extra], { stdio: ['ignore', fd, fd] });
    return { child, output: () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '') };
  } finally {
    closeSync(fd);
  }
}

export async function stopUp(d: Daemon, graceMs = 20_000): Promise<void> {
  daemons.delete(d);
  const c = d.child;
  if (c.exitCode !== null || c.signalCode !== null) return;
  const exited = once(c, 'exit');
  c.kill('SIGTERM');
  const t = setTimeout(() => c.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(t);
}

export async function waitDaemonSocket(env: BerthEnv, d: Daemon): Promise<void> {
  await waitFor(
    'berth up to serve its socket',
    async () => {
      if (d.child.exitCode !== null) throw new Error(`berth up exited ${d.child.exitCode}:\n${d.output().slice(-3000)}`);
      return existsSync(path.join(env.state, 'berth.sock')) ? true : undefined;
    },
    60_000,
    50,
  );
}

export function newEnv(prefix: string): { env: BerthEnv; dir: string } {
  const env = makeEnv(prefix);
  const dir = path.join(env.dir, 'manifests');
  mkdirSync(dir, { recursive: true });
  envs.push({ env, dirs: [dir] });
  return { env, dir };
}

/**
 * `berth images pull` before `berth up` (not timed): the figures are about edits, restarts and resyncs with the
 * image present. (On 8f02157 it also avoided a lost wake-up — a pod whose image `berth up` pulled itself stayed
 * ContainerCreating until the next resync — fixed in af5d1ff.)
 */
export async function prePull(env: BerthEnv, image: string): Promise<void> {
  must(await berth(env, ['images', 'pull', image], { timeoutMs: 180_000 }), `berth images pull ${image}`);
}

export function must(r: { code: number; stdout: string; stderr: string }, what: string): string {
  if (r.code !== 0) throw new Error(`${what}: exit ${r.code}\nstdout: ${r.stdout.slice(-2000)}\nstderr: ${r.stderr.slice(-2000)}`);
  return r.stdout;
}

// ---------------------------------------------------------------------------------------------- podman

/** The private podman store: its base dir once prepared, and the pods a bench created in it. */
export const podmanStore: { base: string | undefined; pods: Set<string> } = { base: undefined, pods: new Set<string>() };

export function podmanArgs(): string[] {
  if (podmanStore.base === undefined) throw new Error('podman store not prepared');
  return [
    '--root', path.join(podmanStore.base, 'root'),
    '--runroot', path.join(podmanStore.base, 'run'),
    '--tmpdir', path.join(podmanStore.base, 'tmp'),
    '--network-config-dir', path.join(podmanStore.base, 'net'),
    '--storage-driver', 'overlay',
    '--cgroup-manager', 'cgroupfs',
    '--events-backend', 'file',
  ];
}

export async function podman(args: string[], timeoutMs = 120_000): Promise<string> {
  const { stdout } = await execFileP('podman', [...podmanArgs(), ...args], {
    env: { ...process.env, CONTAINERS_CONF: PODMAN_CONF },
    timeout: timeoutMs,
    maxBuffer: 16 << 20,
  });
  return stdout;
}

export function havePodman(): string | undefined {
  if (spawnSync('podman', ['--version']).status !== 0) return 'podman not installed (bash scripts/bench-deps.sh)';
  if (!existsSync(PODMAN_CONF)) return `${PODMAN_CONF} missing (bash scripts/bench-deps.sh)`;
  return undefined;
}

/** Private podman store holding the same image as berth pulls, copied from the loopback registry (not timed). */
export async function preparePodman(fx: DemoFixture, image: string): Promise<void> {
  podmanStore.base = await fsp.mkdtemp(path.join(os.tmpdir(), 'berth-bench-podman-'));
  for (const d of ['root', 'run', 'tmp', 'net']) mkdirSync(path.join(podmanStore.base, d));
  const dest = `containers-storage:[overlay@${path.join(podmanStore.base, 'root')}+${path.join(podmanStore.base, 'run')}]${image}`;
  await execFileP('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${fx.registry.host}/berth/demo:1.0`, dest], { timeout: 120_000 });
  const images = await podman(['images', '--format', '{{.Repository}}:{{.Tag}}']);
  if (!images.includes(image)) throw new Error(`podman store lacks ${image} after skopeo copy:\n${images}`);
}

export async function podmanCleanup(): Promise<void> {
  if (podmanStore.base === undefined) return;
  for (const name of podmanStore.pods) await podman(['pod', 'rm', '-f', '-t', '0', name], 60_000).catch(() => undefined);
  await podman(['pod', 'rm', '-a', '-f', '-t', '0'], 60_000).catch(() => undefined);
  await podman(['rm', '-a', '-f', '-t', '0'], 60_000).catch(() => undefined);
  await podman(['system', 'reset', '--force'], 120_000).catch(() => undefined); // unmounts its overlay store
  for (const m of (await mountsUnder(podmanStore.base)).sort((a, b) => b.length - a.length)) {
    spawnSync('umount', ['-l', m]);
  }
  await fsp.rm(podmanStore.base, { recursive: true, force: true });
  podmanStore.base = undefined;
}

// ---------------------------------------------------------------------------------------------- containerd

/** A private containerd instance: its process, its temp dir (root, state, config) and its socket. */
export interface PrivateContainerd {
  proc: ChildProcess;
  base: string;
  sock: string;
}

/**
 * Starts a private containerd (CRI plugin off) with its own root, state, config and socket in a new temp dir
 * whose name starts with `prefix`. Returns at once: waiting until it serves, and stopping it, are the caller's.
 */
export function spawnContainerd(prefix: string, stdio: StdioOptions): PrivateContainerd {
  const base = mkdtempSync(path.join(os.tmpdir(), prefix));
  const sock = path.join(base, 'containerd.sock');
  const cfg = path.join(base, 'config.toml');
  writeFileSync(
    cfg,
    [
      'version = 2',
      `root = "${path.join(base, 'root')}"`,
      `state = "${path.join(base, 'state')}"`,
      'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
      '[grpc]',
      `  address = "${sock}"`,
      '[ttrpc]',
      `  address = "${sock}.ttrpc"`,
      '',
    ].join('\n'),
  );
  const proc = spawn('containerd', ['--config', cfg], { stdio });
  return { proc, base, sock };
}

// ---------------------------------------------------------------------------------------------- convergence

export interface StatusJson {
  pods: { key: string; status: string; ready: string }[];
}

export async function waitConverged(env: BerthEnv, n: number, timeoutMs: number): Promise<void> {
  let last = '';
  await waitFor(
    `${n} pods Running`,
    async () => {
      const r = await berth(env, ['status', '-o', 'json'], { timeoutMs: 60_000 });
      if (r.code !== 0) {
        last = `status exit ${r.code}: ${r.stderr.slice(-500)}`;
        return undefined;
      }
      const s = JSON.parse(r.stdout) as StatusJson;
      const running = s.pods.filter((p) => p.status === 'Running' && p.ready === '1/1').length;
      last = `${running}/${n} Running; others: ${[...new Set(s.pods.filter((p) => p.status !== 'Running').map((p) => p.status))].join(',')}`;
      return running >= n ? true : undefined;
    },
    timeoutMs,
    2000,
  ).catch((err: unknown) => {
    throw new Error(`${String(err)} (last: ${last})`);
  });
}

// ---------------------------------------------------------------------------------------------- run identity

/** Names and mtimes of the compiled CLI tree: another `tsc` during the run changes it (the figures then mix builds). */
export function buildFingerprint(): string {
  const h = createHash('sha256');
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const full = path.join(dir, e.name);
      if (e.isDirectory()) walk(full);
      else if (e.name.endsWith('.js')) {
        try {
          h.update(`${full} ${readFileSync(full).length} ${statMtime(full)}\n`);
        } catch {
          // removed meanwhile
        }
      }
    }
  };
  walk(path.dirname(CLI));
  return h.digest('hex').slice(0, 12);
}
export const statMtime = (f: string): number => Math.floor(statSync(f).mtimeMs);

export function revision(): string {
  const git = (args: string[]): string => spawnSync('git', ['-C', REPO, ...args], { encoding: 'utf8' }).stdout?.trim() ?? '';
  const head = git(['rev-parse', '--short', 'HEAD']);
  if (head === '') return `${process.env.BERTH_BENCH_REVISION ?? 'not a git checkout'} (${REPO})`;
  const dirty = git(['status', '--porcelain', '--', 'src']).split('\n').filter((l) => l !== '').length;
  return `${head}${dirty > 0 ? ` + ${dirty} uncommitted file(s) in src/` : ''} (${REPO})`;
}

export function machine(): string {
  const cpus = os.cpus();
  const memGiB = (os.totalmem() / 2 ** 30).toFixed(1);
  const ver = (cmd: string, args: string[]): string => (spawnSync(cmd, args, { encoding: 'utf8' }).stdout ?? '').split('\n')[0]?.trim() ?? '';
  return [
    `${cpus.length} × ${cpus[0]?.model ?? '?'}, ${memGiB} GiB RAM, Linux ${os.release()}, node ${process.version}`,
    `${ver('runc', ['--version'])}; ${ver('conmon', ['--version'])}; ${ver('podman', ['--version']) || 'podman absent'}; ${ver('hyperfine', ['--version']) || 'hyperfine absent'}`,
    `load average at start: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`,
    process.env.NODE_EXTRA_CA_CERTS !== undefined
      ? `NODE_EXTRA_CA_CERTS=${process.env.NODE_EXTRA_CA_CERTS} is set here: node parses it at every start; berth's commands run through bin/berth, which leaves it to the registry client`
      : 'NODE_EXTRA_CA_CERTS is not set',
  ].join('\n');
}

export async function cleanupAll(fx: DemoFixture | undefined): Promise<void> {
  for (const d of [...daemons]) await stopUp(d, 10_000).catch(() => undefined);
  for (const { env, dirs } of envs.splice(0)) {
    for (const dir of dirs) await berth(env, ['delete', '-f', dir], { timeoutMs: 10 * 60_000 }).catch(() => undefined);
    await cleanupEnv(env).catch((err: unknown) => log(`cleanup ${env.dir}: ${String(err)}`));
  }
  await podmanCleanup().catch((err: unknown) => log(`podman cleanup: ${String(err)}`));
  await fx?.stop().catch(() => undefined);
}

/**
 * bench/pull — issue 14's pull figures on this machine, peers measured in the same run. Prints figures and
 * ratios; asserts nothing.
 *
 *   bash bench/pull.sh [--runs 5] [--images large,busybox] [--tools berth,berthd,ctr,podman,physical] [--rebuild]
 *                      [--delete-between]
 *   bash bench/pull.sh --profile DIR     # one cold berth pull under `node --cpu-prof`, one under `strace -c -f`
 *   bash bench/pull.sh --serve           # push the fixtures, print their references, serve until Ctrl-C
 *
 * Fixtures (built once from host directories, cached under /var/tmp/berth-bench-pull; --rebuild makes them
 * again): `large`, six gzip layers of /usr/lib/python3.11 and parts of /usr/share (GNU tar, sorted names,
 * fixed mtime, gzip -6), and `busybox`, one layer with the host's busybox-static, its applet links and
 * /etc/passwd. Both are pushed to a docker-registry on 127.0.0.1 (test/helpers/registry.ts).
 *
 * Every run starts cold: a fresh destination (berth: new --root/--state; ctr: a new private containerd
 * instance with its own root, state and socket; podman: a new private store; physical: a new directory),
 * then `sync` and `echo 3 > /proc/sys/vm/drop_caches`, so the registry re-reads its blobs from disk. Rounds
 * interleave the tools (the order rotates per round), so slow phases of a noisy machine hit all of them.
 * Destinations are deleted after the last round, not between runs (see `deferred`; --delete-between
 * deletes each right after its run, as before).
 *
 *  - berth (in-process), tool `berth`: `berth images pull REF` with no daemon (the CLI opens the state
 *              database, takes the lock, resolves, downloads, verifies, unpacks into snapshots, records)
 *  - berth (daemon), tool `berthd`: the same command with a `berth up` already running on the fresh
 *              --root/--state (started before the timed command, as ctr's private containerd is): the CLI
 *              hands the pull to the daemon (lib/fast-pull) and prints what it streams back
 *  - ctr:      `ctr images pull --plain-http REF` (containerd 1.6 fetches and unpacks into overlayfs)
 *  - podman:   `podman pull --tls-verify=false REF` (private store, overlay driver)
 *  - physical: per layer, in parallel: `curl | tee fifo | gzip -d | tar -x` with `sha256sum < fifo`
 *
 * Wall time is measured around the command; CPU (user+sys) of the command's process tree comes from
 * /usr/bin/time, plus the daemon's own CPU (from /proc/<pid>/stat) for ctr and berth (daemon), which only
 * ask their daemon.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, promises as fsp, readFileSync, readdirSync, rmSync, symlinkSync, copyFileSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { createGzip } from 'node:zlib';
import { CLI, LAUNCHER, mountsUnder } from '../test/helpers/berth.js';
import { startRegistry, type TestRegistry } from '../test/helpers/registry.js';
import { MEDIA_TYPE_LAYER_GZIP, ociImageOf, ociArchitecture, pushImage, type BuiltImage, type BuiltLayer } from '../scripts/fixture-image.js';
import { sha256, type Digest } from '../src/lib/digest.js';
import { PODMAN_CONF, log, machine, ratio, revision, secs, sleep, spawnContainerd, spawnUpLogged, stopUp, waitDaemonSocket, type PrivateContainerd } from './common.js';

const { values: opt } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    images: { type: 'string', default: 'large,busybox' },
    tools: { type: 'string', default: 'berth,berthd,ctr,podman,physical' },
    rebuild: { type: 'boolean', default: false },
    profile: { type: 'string' },
    serve: { type: 'boolean', default: false },
    'delete-between': { type: 'boolean', default: false },
  },
});
const RUNS = Math.max(1, Number(opt.runs));
const CACHE = '/var/tmp/berth-bench-pull';
const EPOCH = 1704067200; // 2024-01-01: fixed mtimes make the digests a function of the host's files
const TIME = '/usr/bin/time';

type Tool = 'berth' | 'berthd' | 'ctr' | 'podman' | 'physical';
const ALL_TOOLS: readonly Tool[] = ['berth', 'berthd', 'ctr', 'podman', 'physical'];
/** How the figures name each tool. */
const LABEL: Readonly<Record<Tool, string>> = { berth: 'berth (in-process)', berthd: 'berth (daemon)', ctr: 'ctr', podman: 'podman', physical: 'physical' };

// ---------------------------------------------------------------------------------------------- fixtures

interface FixtureSpec {
  name: string;
  /** Per layer: paths relative to `cwd` handed to tar. */
  layers: string[][];
  cwd: string;
}

const LARGE: FixtureSpec = {
  name: 'large',
  cwd: '/',
  layers: [
    ['usr/lib/python3.11'],
    ['usr/share/vim'],
    ['usr/share/icons'],
    ['usr/share/perl', 'usr/share/zsh'],
    ['usr/share/i18n', 'usr/share/cmake-3.25'],
    ['usr/share/fish', 'usr/share/fonts', 'usr/share/java'],
  ],
};

interface CachedLayer {
  file: string;
  digest: Digest;
  size: number;
  diffId: Digest;
  entries: number;
  uncompressed: number;
}

/** tar → sha256 (diffID) → gzip -6 → sha256 (digest) → file, in one pass. */
async function buildLayer(cwd: string, paths: string[], file: string): Promise<CachedLayer> {
  const tar = spawn('tar', ['--sort=name', '--format=gnu', '--numeric-owner', `--mtime=@${EPOCH}`, '-C', cwd, '-cf', '-', ...paths], { stdio: ['ignore', 'pipe', 'inherit'] });
  const diff = createHash('sha256');
  const comp = createHash('sha256');
  let uncompressed = 0;
  let size = 0;
  const tapIn = new Transform({
    transform(c: Buffer, _e, cb) {
      diff.update(c);
      uncompressed += c.length;
      cb(null, c);
    },
  });
  const tapOut = new Transform({
    transform(c: Buffer, _e, cb) {
      comp.update(c);
      size += c.length;
      cb(null, c);
    },
  });
  const exited = new Promise<number>((resolve) => tar.on('close', (code) => resolve(code ?? -1)));
  await pipeline(tar.stdout, tapIn, createGzip({ level: 6 }), tapOut, createWriteStream(file));
  if ((await exited) !== 0) throw new Error(`tar of ${paths.join(' ')} failed`);
  const list = spawnSync('tar', ['-tzf', file], { maxBuffer: 64 << 20, encoding: 'utf8' });
  const entries = list.stdout.split('\n').filter((l) => l !== '').length;
  return { file, digest: `sha256:${comp.digest('hex')}` as Digest, size, diffId: `sha256:${diff.digest('hex')}` as Digest, entries, uncompressed };
}

/** A one-layer busybox root: the host's busybox-static, one symlink per applet, /etc/passwd and /etc/group. */
function stageBusybox(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  for (const d of ['bin', 'etc', 'tmp', 'root', 'proc', 'sys', 'dev']) mkdirSync(path.join(dir, d), { recursive: true });
  copyFileSync('/bin/busybox', path.join(dir, 'bin/busybox'));
  spawnSync('chmod', ['0755', path.join(dir, 'bin/busybox')]);
  const applets = spawnSync('/bin/busybox', ['--list'], { encoding: 'utf8' }).stdout.split('\n').filter((a) => /^[a-z0-9_.[-]+$/.test(a) && a !== 'busybox');
  for (const a of applets) symlinkSync('busybox', path.join(dir, 'bin', a));
  writeFileSync(path.join(dir, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  writeFileSync(path.join(dir, 'etc/group'), 'root:x:0:\n');
}

async function fixture(spec: FixtureSpec): Promise<{ image: BuiltImage; layers: CachedLayer[] }> {
  const dir = path.join(CACHE, spec.name);
  const metaFile = path.join(dir, 'meta.json');
  let layers: CachedLayer[];
  if (!opt.rebuild && existsSync(metaFile)) {
    layers = JSON.parse(readFileSync(metaFile, 'utf8')) as CachedLayer[];
  } else {
    log(`building fixture ${spec.name} into ${dir} (cached for later runs)`);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    layers = [];
    for (const [i, paths] of spec.layers.entries()) layers.push(await buildLayer(spec.cwd, paths, path.join(dir, `layer${i}.tar.gz`)));
    writeFileSync(metaFile, JSON.stringify(layers, null, 1));
  }
  const built: BuiltLayer[] = layers.map((l) => ({ digest: l.digest, size: l.size, diffId: l.diffId, data: readFileSync(l.file), mediaType: MEDIA_TYPE_LAYER_GZIP }));
  for (const l of built) if (sha256(l.data) !== l.digest) throw new Error(`cached layer ${l.digest} is corrupt: rerun with --rebuild`);
  const config = Buffer.from(
    JSON.stringify({
      created: new Date(EPOCH * 1000).toISOString(),
      architecture: ociArchitecture(),
      os: 'linux',
      config: { Env: ['PATH=/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: built.map((l) => l.diffId) },
    }),
  );
  return { image: ociImageOf(config, built), layers };
}

// ---------------------------------------------------------------------------------------------- timing

interface Sample {
  wallMs: number;
  cpuMs: number;
}

function dropCaches(): void {
  spawnSync('sync');
  writeFileSync('/proc/sys/vm/drop_caches', '3\n');
}

/** Runs argv under /usr/bin/time; wall from here, CPU (user+sys, children included) from time's report. */
function timed(argv: string[], env?: NodeJS.ProcessEnv): Sample & { code: number; stderr: string } {
  const out = path.join(os.tmpdir(), `berth-bench-pull-time-${process.pid}`);
  const t0 = performance.now();
  const r = spawnSync(TIME, ['-f', '%U %S', '-o', out, ...argv], { encoding: 'utf8', maxBuffer: 64 << 20, timeout: 30 * 60_000, ...(env !== undefined ? { env } : {}) });
  const wallMs = performance.now() - t0;
  const line = existsSync(out) ? readFileSync(out, 'utf8').trim().split('\n').pop() ?? '' : '';
  rmSync(out, { force: true });
  const [u, s] = line.split(' ').map(Number);
  return { wallMs, cpuMs: ((u ?? NaN) + (s ?? NaN)) * 1000, code: r.status ?? -1, stderr: `${r.stderr ?? ''}${r.stdout ?? ''}` };
}

const CLK_TCK = 100;
function procCpuMs(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return ((Number(rest[11]) + Number(rest[12])) * 1000) / CLK_TCK;
  } catch {
    return NaN;
  }
}

// ---------------------------------------------------------------------------------------------- tools

/**
 * Trees of timed runs, deleted after the last round (unless --delete-between). This VM's root file
 * system is ext4 without a journal: for a while after a delete, creating an inode steps over every
 * recently freed one (`recently_deleted` in ext4's inode allocator, up to ~45 % of a pull's CPU in
 * perf), so a run right after the previous tool's 17.8k files were deleted measured that delete more
 * than itself, and by how many the previous tool had made. podman's store is emptied by `podman
 * system reset`, a delete of its own: that waits for the end too (`deferredResets`).
 */
const deferred: string[] = [];
const deferredResets: string[] = [];
let deferDeletes = false;

async function removeTree(base: string): Promise<void> {
  for (const m of (await mountsUnder(base)).sort((a, b) => b.length - a.length)) spawnSync('umount', ['-l', m]);
  if (deferDeletes) deferred.push(base);
  else await fsp.rm(base, { recursive: true, force: true });
}

async function startContainerd(): Promise<PrivateContainerd> {
  const c = spawnContainerd('berth-bench-pull-ctrd-', ['ignore', 'ignore', 'ignore']);
  for (let i = 0; i < 400; i++) {
    if (existsSync(c.sock) && spawnSync('ctr', ['-a', c.sock, 'version'], { stdio: 'ignore' }).status === 0) return c;
    await sleep(25);
  }
  c.proc.kill('SIGKILL');
  throw new Error('private containerd did not start');
}

async function stopContainerd(c: PrivateContainerd): Promise<void> {
  if (c.proc.exitCode === null) {
    const exited = new Promise((r) => c.proc.once('exit', r));
    c.proc.kill('SIGTERM');
    const t = setTimeout(() => c.proc.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(t);
  }
  await removeTree(c.base);
}

const podmanEnv = { ...process.env, CONTAINERS_CONF: PODMAN_CONF };

/** Empties a podman store made by a run (its images, layers and locks) before its tree is deleted. */
function podmanReset(base: string): void {
  spawnSync('podman', [...podmanBase(base), 'system', 'reset', '--force'], { env: podmanEnv, stdio: 'ignore', timeout: 120_000 });
}

const podmanBase = (base: string): string[] => [
  '--root', path.join(base, 'root'),
  '--runroot', path.join(base, 'run'),
  '--tmpdir', path.join(base, 'tmp'),
  '--storage-driver', 'overlay',
  '--cgroup-manager', 'cgroupfs',
  '--events-backend', 'file',
];

/** The physical pipeline as one bash script: every layer at once, curl → tee(fifo → sha256sum) → gzip -d → tar -x. */
function physicalScript(reg: TestRegistry, repo: string, layers: readonly CachedLayer[], dest: string): string {
  const lines = ['set -euo pipefail'];
  layers.forEach((l, i) => {
    const d = path.join(dest, String(i));
    lines.push(
      `mkdir -p ${d}; mkfifo ${d}.fifo`,
      `sha256sum < ${d}.fifo > ${d}.sha &`,
      `(curl -sS --fail ${reg.url}/v2/${repo}/blobs/${l.digest} | tee ${d}.fifo | gzip -d | tar -x -C ${d}) &`,
    );
  });
  lines.push('wait');
  return lines.join('\n');
}

interface Target {
  name: string;
  ref: string;
  repo: string;
  layers: CachedLayer[];
}

/** One cold run of `tool` on `t`: prepare (not timed), drop caches, the timed command, check, clean up. */
async function runOnce(tool: Tool, t: Target, reg: TestRegistry): Promise<Sample> {
  switch (tool) {
    case 'berth': {
      const base = mkdtempSync(path.join(os.tmpdir(), 'berth-bench-pull-berth-'));
      try {
        dropCaches();
        const r = timed([LAUNCHER, '--root', path.join(base, 'root'), '--state', path.join(base, 'state'), 'images', 'pull', t.ref]);
        if (r.code !== 0) throw new Error(`berth images pull: exit ${r.code}\n${r.stderr.slice(-3000)}`);
        return r;
      } finally {
        await removeTree(base);
      }
    }
    case 'berthd': {
      const base = mkdtempSync(path.join(os.tmpdir(), 'berth-bench-pull-berthd-'));
      const env = { root: path.join(base, 'root'), state: path.join(base, 'state'), dir: base };
      mkdirSync(path.join(base, 'manifests'));
      // Not timed: `berth up` on the fresh root and state, serving its socket, as ctr's containerd is started first.
      const d = spawnUpLogged(['--root', env.root, '--state', env.state, '--log-level', 'info'], path.join(base, 'manifests'), ['--resync', '3600'], path.join(base, 'up.log'));
      try {
        await waitDaemonSocket(env, d);
        dropCaches();
        const cpu0 = procCpuMs(d.child.pid ?? -1);
        const r = timed([LAUNCHER, '--root', env.root, '--state', env.state, 'images', 'pull', t.ref]);
        const daemonCpu = procCpuMs(d.child.pid ?? -1) - cpu0;
        if (r.code !== 0) throw new Error(`berth images pull (daemon): exit ${r.code}\n${r.stderr.slice(-3000)}\nberth up's output:\n${d.output().slice(-3000)}`);
        return { wallMs: r.wallMs, cpuMs: r.cpuMs + daemonCpu };
      } finally {
        await stopUp(d);
        await removeTree(base);
      }
    }
    case 'ctr': {
      const c = await startContainerd();
      try {
        dropCaches();
        const cpu0 = procCpuMs(c.proc.pid ?? -1);
        const r = timed(['ctr', '-a', c.sock, '-n', 'bench', 'images', 'pull', '--plain-http', t.ref]);
        const daemonCpu = procCpuMs(c.proc.pid ?? -1) - cpu0;
        if (r.code !== 0) throw new Error(`ctr images pull: exit ${r.code}\n${r.stderr.slice(-3000)}`);
        return { wallMs: r.wallMs, cpuMs: r.cpuMs + daemonCpu };
      } finally {
        await stopContainerd(c);
      }
    }
    case 'podman': {
      const base = mkdtempSync(path.join(os.tmpdir(), 'berth-bench-pull-podman-'));
      try {
        for (const d of ['root', 'run', 'tmp']) mkdirSync(path.join(base, d));
        dropCaches();
        const r = timed(['podman', ...podmanBase(base), 'pull', '-q', '--tls-verify=false', t.ref], podmanEnv);
        if (r.code !== 0) throw new Error(`podman pull: exit ${r.code}\n${r.stderr.slice(-3000)}`);
        return r;
      } finally {
        if (deferDeletes) deferredResets.push(base);
        else podmanReset(base);
        await removeTree(base);
      }
    }
    case 'physical': {
      const base = mkdtempSync(path.join(os.tmpdir(), 'berth-bench-pull-phys-'));
      try {
        const script = path.join(base, 'pull.sh');
        writeFileSync(script, physicalScript(reg, t.repo, t.layers, path.join(base, 'dest')));
        dropCaches();
        const r = timed(['bash', script]);
        if (r.code !== 0) throw new Error(`physical pipeline: exit ${r.code}\n${r.stderr.slice(-3000)}`);
        t.layers.forEach((l, i) => {
          const got = readFileSync(path.join(base, 'dest', `${i}.sha`), 'utf8').split(' ')[0];
          if (`sha256:${got}` !== l.digest) throw new Error(`physical pipeline: layer ${i} hashed to ${got}, expected ${l.digest}`);
        });
        return r;
      } finally {
        await removeTree(base);
      }
    }
  }
}

const median = (xs: readonly number[]): number => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

function toolAvailable(tool: Tool): string | undefined {
  const need: Record<Tool, string[]> = { berth: [TIME], berthd: [TIME], ctr: ['ctr', 'containerd'], podman: ['podman'], physical: ['curl', 'gzip', 'tar', 'sha256sum'] };
  for (const cmd of need[tool]) if (spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status !== 0) return `${cmd} not installed (bash scripts/bench-deps.sh)`;
  if (tool === 'podman' && !existsSync(PODMAN_CONF)) return `${PODMAN_CONF} missing (bash scripts/bench-deps.sh)`;
  return undefined;
}

// ---------------------------------------------------------------------------------------------- profile

/** Self time per function of a .cpuprofile, top `n`, and totals by where the code lives. */
function summariseProfile(file: string, n = 30): string[] {
  interface Node {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
    hitCount?: number;
  }
  const prof = JSON.parse(readFileSync(file, 'utf8')) as { nodes: Node[]; startTime: number; endTime: number; samples: number[]; timeDeltas: number[] };
  const byId = new Map(prof.nodes.map((nd) => [nd.id, nd]));
  const self = new Map<number, number>();
  prof.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0)));
  const byFn = new Map<string, number>();
  const byPlace = new Map<string, number>();
  let total = 0;
  for (const [id, us] of self) {
    const nd = byId.get(id);
    if (nd === undefined) continue;
    total += us;
    const url = nd.callFrame.url.replace(/^file:\/\//, '').replace(`${path.dirname(path.dirname(CLI))}/`, '');
    const key = `${nd.callFrame.functionName || '(anonymous)'} ${url === '' ? '' : `${path.basename(url)}:${nd.callFrame.lineNumber + 1}`}`;
    byFn.set(key, (byFn.get(key) ?? 0) + us);
    const place = nd.callFrame.functionName.startsWith('(') ? nd.callFrame.functionName
      : url.includes('node_modules/') ? `node_modules/${url.split('node_modules/')[1]?.split('/')[0] ?? '?'}`
      : url.startsWith('node:') ? url
      : url === '' ? '(native)' : `berth ${url.split('/').slice(-3).join('/')}`;
    byPlace.set(place, (byPlace.get(place) ?? 0) + us);
  }
  const fmt = (m: Map<string, number>, k: number): string[] =>
    [...m].sort((a, b) => b[1] - a[1]).slice(0, k).map(([name, us]) => `  ${(us / 1000).toFixed(0).padStart(6)} ms ${((100 * us) / total).toFixed(1).padStart(5)}%  ${name}`);
  return [`sampled ${(total / 1000).toFixed(0)} ms (wall ${((prof.endTime - prof.startTime) / 1000).toFixed(0)} ms)`, 'by place:', ...fmt(byPlace, 25), 'by function (self):', ...fmt(byFn, n)];
}

async function profile(t: Target, outDir: string): Promise<void> {
  mkdirSync(outDir, { recursive: true });
  const pull = (base: string): string[] => [CLI, '--root', path.join(base, 'root'), '--state', path.join(base, 'state'), 'images', 'pull', t.ref];
  for (const mode of ['cpu', 'strace'] as const) {
    const base = mkdtempSync(path.join(os.tmpdir(), 'berth-bench-pull-prof-'));
    try {
      dropCaches();
      const argv = mode === 'cpu'
        ? [process.execPath, '--cpu-prof', '--cpu-prof-dir', outDir, ...pull(base)]
        : ['strace', '-c', '-f', '-o', path.join(outDir, 'strace-c.txt'), process.execPath, ...pull(base)];
      const r = timed(argv);
      if (r.code !== 0) throw new Error(`${mode} pull: exit ${r.code}\n${r.stderr.slice(-3000)}`);
      log(`${mode}: wall ${secs(r.wallMs)}, cpu ${secs(r.cpuMs)}`);
    } finally {
      await removeTree(base);
    }
  }
  const prof = readdirSync(outDir).filter((f) => f.endsWith('.cpuprofile')).sort().pop();
  if (prof !== undefined) {
    const summary = summariseProfile(path.join(outDir, prof));
    writeFileSync(path.join(outDir, 'cpu-summary.txt'), `${summary.join('\n')}\n`);
    for (const l of summary) log(l);
  }
  log(readFileSync(path.join(outDir, 'strace-c.txt'), 'utf8').split('\n').slice(0, 30).join('\n'));
}

// ---------------------------------------------------------------------------------------------- main

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench/pull needs root (drop_caches, overlay, containerd)');
  const imageNames = String(opt.images).split(',').filter((x) => x !== '');
  const tools = String(opt.tools).split(',').filter((x): x is Tool => (ALL_TOOLS as readonly string[]).includes(x));
  log(`bench/pull — ${revision()}`);
  log(machine());
  const usable: Tool[] = [];
  for (const tool of tools) {
    const why = toolAvailable(tool);
    if (why === undefined) usable.push(tool);
    else log(`skipping ${tool}: ${why}`);
  }

  mkdirSync(CACHE, { recursive: true });
  const targets: Target[] = [];
  const reg = await startRegistry();
  const cleanup = async (): Promise<void> => {
    await reg.stop().catch(() => undefined);
    for (const b of deferredResets.splice(0)) podmanReset(b);
    for (const d of deferred.splice(0)) await fsp.rm(d, { recursive: true, force: true }).catch(() => undefined);
  };
  if (!opt.serve) process.once('SIGINT', () => void cleanup().then(() => process.exit(130)));
  try {
    for (const name of imageNames) {
      let spec: FixtureSpec;
      if (name === 'large') spec = LARGE;
      else if (name === 'busybox') {
        const root = path.join(CACHE, 'busybox-root');
        if (opt.rebuild || !existsSync(path.join(CACHE, 'busybox', 'meta.json'))) stageBusybox(root);
        spec = { name: 'busybox', cwd: root, layers: [['.']] };
      } else throw new Error(`unknown image ${name} (large, busybox)`);
      const { image, layers } = await fixture(spec);
      await pushImage(reg.url, `bench/${name}`, '1', image);
      const ref = `${reg.host}/bench/${name}:1`;
      const mib = (b: number): string => (b / 2 ** 20).toFixed(1);
      log(`${name}: ${layers.length} layer(s), ${mib(layers.reduce((a, l) => a + l.size, 0))} MiB compressed → ${mib(layers.reduce((a, l) => a + l.uncompressed, 0))} MiB, ${layers.reduce((a, l) => a + l.entries, 0)} entries; ${ref}`);
      targets.push({ name, ref, repo: `bench/${name}`, layers });
    }

    if (opt.serve) {
      log('serving until SIGINT/SIGTERM');
      await new Promise((resolve) => {
        process.once('SIGTERM', resolve);
        process.once('SIGINT', resolve);
      });
      return;
    }
    if (opt.profile !== undefined) {
      const t = targets[0];
      if (t === undefined) throw new Error('no image to profile');
      await profile(t, path.resolve(opt.profile));
      return;
    }

    const results = new Map<string, Sample[]>();
    deferDeletes = opt['delete-between'] !== true;
    log(deferDeletes ? 'destinations are deleted after the last round (--delete-between: after each run)' : 'destinations are deleted after each run');
    for (const t of targets) {
      log(`\n-- ${t.name}: ${RUNS} cold run(s) per tool, interleaved --`);
      for (let round = 0; round < RUNS; round++) {
        const order = usable.map((_, i) => usable[(i + round) % usable.length] as Tool);
        const line: string[] = [];
        for (const tool of order) {
          const s = await runOnce(tool, t, reg);
          const key = `${t.name}/${tool}`;
          results.set(key, [...(results.get(key) ?? []), s]);
          line.push(`${LABEL[tool]} ${secs(s.wallMs)} (cpu ${secs(s.cpuMs)})`);
        }
        log(`  round ${round + 1}: ${line.join(', ')}`);
      }
    }

    log('\n| image | tool | median wall | min–max | median CPU (user+sys) |');
    log('|---|---|---|---|---|');
    const med = (key: string): number => median((results.get(key) ?? []).map((s) => s.wallMs));
    for (const t of targets) {
      for (const tool of usable) {
        const xs = results.get(`${t.name}/${tool}`) ?? [];
        const w = xs.map((s) => s.wallMs);
        log(`| ${t.name} | ${LABEL[tool]} | ${secs(median(w))} | ${secs(Math.min(...w))}–${secs(Math.max(...w))} | ${secs(median(xs.map((s) => s.cpuMs)))} |`);
      }
    }
    log('\ntargets (medians):');
    const check = (label: string, a: number, b: number, limit: number): void => {
      const r = a / b;
      log(`  ${label}: ${ratio(a, b)} (target ≤ ${limit}×: ${Number.isFinite(r) ? (r <= limit ? 'met' : 'not met') : 'n/a'})`);
    };
    const berths = (['berth', 'berthd'] as const).filter((b) => usable.includes(b));
    for (const b of berths) {
      if (targets.some((t) => t.name === 'large')) {
        check(`large: ${LABEL[b]} / podman`, med(`large/${b}`), med('large/podman'), 0.5);
        check(`large: ${LABEL[b]} / physical`, med(`large/${b}`), med('large/physical'), 1.15);
        log(`  large: ${LABEL[b]} / ctr: ${ratio(med(`large/${b}`), med('large/ctr'))}`);
      }
      if (targets.some((t) => t.name === 'busybox')) {
        check(`busybox: ${LABEL[b]} / podman`, med(`busybox/${b}`), med('busybox/podman'), 0.8);
        log(`  busybox: ${LABEL[b]} / ctr: ${ratio(med(`busybox/${b}`), med('busybox/ctr'))}`);
      }
    }
  } finally {
    await cleanup();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/pull: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});

import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, promises as fsp, readdirSync, readFileSync, realpathSync } from 'node:fs';
import * as path from 'node:path';
import type { SuiteContext, TestContext } from 'node:test';
import { removeTestBridge } from './cni.js';
import { requireE2E, requireTools } from './prereq.js';
import { conmonProcesses, mountsUnder, waitFor, type BerthEnv, type RunResult } from './berth.js';
import { listStore, storeProblems } from './gc-check.js';
import { bridgeChains, netnsName } from '../../src/runtime/network/index.js';

/**
 * The checks every crash trial of issue 15 ends with (injected crash points in
 * test/e2e/issue-15-crash-points.test.ts, random-moment kills of `berth up` in
 * test/e2e/issue-15-random-kill.test.ts), read from the host and berth's files rather than
 * from berth's own opinion where they can be: runc's list, conmon processes, mountinfo,
 * the cgroup trees, `ip netns`, the bridge's veths, host-local's allocations, iptables, the
 * content store's files hashed again, and the rows read with SQLite directly.
 * docs/crash-suite.md lists what each check means.
 */

export interface PsPod {
  key: string;
  containers: { id: string; name: string; state: string; pid: number | null }[];
}
export interface StatusPod {
  key: string;
  status: string;
  hostNetwork: boolean;
  ip: string | null;
}

export interface CrashCheckOptions {
  env: BerthEnv;
  /** The manifest directory: one `<name>.yaml` per pod `default/<name>`. */
  dir: string;
  /** The test's own bridge and pod subnet (a /24). */
  bridge: string;
  subnet: string;
  /** Runs the CLI with the test's global flags and no crash point armed. */
  run: (args: string[]) => Promise<RunResult>;
  /** Every pod key the test ever declared: none may keep a netns, cgroup or address once it has no sandbox or container. */
  everDeclared: ReadonlySet<string>;
}

export interface CrashCheck {
  ps(): Promise<PsPod[]>;
  status(): Promise<StatusPod[]>;
  /** Pid of every running container, by id. */
  running(): Promise<Map<string, number>>;
  /** Keys of the pods the directory declares, sorted. */
  declared(): Promise<string[]>;
  /** Waits (up to `timeoutMs`) until exactly the declared pods are reported and all are Running. */
  allRunning(what: string, timeoutMs?: number): Promise<void>;
  /** Every container in `keep` (id → pid) runs with that pid. */
  keptPids(what: string, keep: ReadonlyMap<string, number>): Promise<void>;
  /** Everything the state says runs is there once, and nothing else is (see the file comment). */
  residueFree(what: string): Promise<void>;
  /** `berth check`: exit 0, no fail line, no warn line other than the host's runc version. */
  checkClean(what: string): Promise<void>;
  /** Every blob file hashes to its name. */
  blobsIntact(what: string): Promise<void>;
}

const sh = (cmd: string, args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8' });

export function crashCheck(o: CrashCheckOptions): CrashCheck {
  const { env, dir, bridge, subnet, run, everDeclared } = o;

  const ps = async (): Promise<PsPod[]> => {
    const r = await run(['ps', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as PsPod[];
  };
  const status = async (): Promise<StatusPod[]> => {
    const r = await run(['status', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as { pods: StatusPod[] }).pods;
  };
  const running = async (): Promise<Map<string, number>> => {
    const out = new Map<string, number>();
    for (const p of await ps()) for (const c of p.containers) if (c.state === 'running' && c.pid !== null) out.set(c.id, c.pid);
    return out;
  };
  const declared = async (): Promise<string[]> => (await fsp.readdir(dir)).filter((f) => f.endsWith('.yaml')).map((f) => `default/${f.slice(0, -5)}`).sort();

  const allRunning = async (what: string, timeoutMs = 60_000): Promise<void> => {
    const want = await declared();
    let last = '';
    await waitFor(`${what}: every declared pod Running`, async () => {
      const pods = await status();
      last = JSON.stringify(pods.map((p) => `${p.key}:${p.status}`));
      const keys = pods.map((p) => p.key).sort();
      return JSON.stringify(keys) === JSON.stringify(want) && pods.every((p) => p.status === 'Running') ? true : undefined;
    }, timeoutMs, 250).catch((err: unknown) => {
      throw new Error(`${String(err)}\nwanted ${JSON.stringify(want)}\nlast status ${last}`);
    });
  };

  const keptPids = async (what: string, keep: ReadonlyMap<string, number>): Promise<void> => {
    const now = await running();
    for (const [id, pid] of keep) assert.equal(now.get(id), pid, `${what}: container ${id} kept its pid ${pid}`);
  };

  const blobsIntact = async (what: string): Promise<void> => {
    const d = path.join(env.root, 'content', 'blobs', 'sha256');
    for (const name of await fsp.readdir(d)) {
      const h = createHash('sha256');
      for await (const chunk of createReadStream(path.join(d, name))) h.update(chunk as Buffer);
      assert.equal(h.digest('hex'), name, `${what}: blob ${name} hashes to its name`);
    }
  };

  const checkClean = async (what: string): Promise<void> => {
    const r = await run(['check']);
    const bad = r.stdout.split('\n').filter((l) => /^fail\b/.test(l) || (/^warn\b/.test(l) && !/^warn\s+runc\b/.test(l)));
    assert.deepEqual(bad, [], `${what}: berth check\n${r.stdout}${r.stderr}`);
    assert.equal(r.code, 0, `${what}: berth check exit\n${r.stdout}${r.stderr}`);
  };

  const residueFree = async (what: string): Promise<void> => {
    const pods = await ps();
    const st = await status();
    const containers = pods.flatMap((p) => p.containers).filter((c) => c.state !== 'exited');
    const sandboxPods = st.filter((p) => !p.hostNetwork).map((p) => p.key);
    // runc: one container per row, plus one infra container per sandbox; all running.
    const runc = JSON.parse(sh('runc', ['--root', path.join(env.state, 'runc'), 'list', '--format', 'json']) || '[]') as { id: string; status: string }[];
    const infra = runc.filter((c) => c.id.includes('._sandbox.'));
    assert.deepEqual(runc.filter((c) => !c.id.includes('._sandbox.')).map((c) => c.id).sort(), containers.map((c) => c.id).sort(), `${what}: runc containers = rows`);
    assert.deepEqual(infra.map((c) => c.id.split('.')[1]).sort(), sandboxPods.map((k) => k.split('/')[1]).sort(), `${what}: one infra container per sandbox pod`);
    assert.ok(runc.every((c) => c.status === 'running'), `${what}: every runc container running: ${JSON.stringify(runc)}`);
    assert.equal((await conmonProcesses(env.state)).length, runc.length, `${what}: one conmon per runc container`);
    // Cgroups (cgroupsPath /berth/<id>): of the pods this test declared, only those of live runc containers.
    const live = new Set(runc.map((c) => c.id));
    const orphanCgroups = cgroupDirs().filter((d) => {
      const id = path.basename(d);
      const [ns, pod] = id.split('.');
      return everDeclared.has(`${ns ?? ''}/${pod ?? ''}`) && !live.has(id);
    });
    assert.deepEqual(orphanCgroups, [], `${what}: cgroups of containers that no longer run`);
    // Mounts: exactly the rootfs of each container row.
    assert.deepEqual((await mountsUnder(env.root)).sort(), containers.map((c) => path.join(env.root, 'containers', c.id, 'bundle', 'rootfs')).sort(), `${what}: mounts under the root`);
    // Crash residue: partial downloads, extraction temp dirs, atomic-write temp files, container dirs.
    assert.deepEqual(await fsp.readdir(path.join(env.root, 'content', 'ingest')), [], `${what}: ingest residue`);
    assert.deepEqual((await fsp.readdir(path.join(env.root, 'snapshots'))).filter((n) => !/^[a-f0-9]{64}$/.test(n)), [], `${what}: snapshot residue`);
    assert.deepEqual(await fsp.readdir(path.join(env.root, 'containers')).then((d) => d.sort()), containers.map((c) => c.id).sort(), `${what}: container directories`);
    assert.deepEqual(await tempFiles(env.root), [], `${what}: temp files under the root`);
    await blobsIntact(what);
    assert.deepEqual(unleased(storeProblems(await listStore(env.root)), leasedNow(env.root)), [], `${what}: rows and files agree`);
    // Network: a netns, a veth and an address per sandbox pod, none for any other pod.
    const nsNow = netnsList();
    for (const key of everDeclared) assert.equal(nsNow.includes(netnsOf(env.root, key)), sandboxPods.includes(key), `${what}: netns of ${key}`);
    const veths = existsSync(`/sys/class/net/${bridge}`) ? sh('ip', ['-o', 'link', 'show', 'master', bridge]).trim().split('\n').filter((l) => l !== '') : [];
    assert.equal(veths.length, sandboxPods.length, `${what}: veths on ${bridge}: ${veths.join('\n')}`);
    assert.equal(allocations(env).length, sandboxPods.length, `${what}: host-local allocations ${allocations(env).join(', ')}`);
    // regression: crash-mid-add-leaks-firewall-rules — no rule names an address no pod holds (masquerade and
    // forward rules are per bridge now); the bridge's own rules are there exactly while a sandbox is.
    const net = subnet.split('.').slice(0, 3).join('.');
    const saved = sh('iptables-save', []);
    const ruleIPs = [...new Set([...saved.matchAll(/^-A .*?(\d+\.\d+\.\d+\.\d+)\/32/gm)].map((m) => m[1] ?? '').filter((ip) => ip.startsWith(`${net}.`)))].sort();
    const held = new Set(allocations(env));
    assert.deepEqual(ruleIPs.filter((ip) => !held.has(ip)), [], `${what}: rules naming addresses no pod holds`);
    const chains = bridgeChains(bridge);
    assert.equal(saved.includes(`-j ${chains.nat}`) && saved.includes(`-j ${chains.filter}`), sandboxPods.length > 0, `${what}: the bridge's rules exist iff a sandbox does`);
    await checkClean(what);
  };

  return { ps, status, running, declared, allRunning, keptPids, residueFree, checkClean, blobsIntact };
}

/** The environment of this process without BERTH_CRASH_AT. */
export function withoutCrash(): NodeJS.ProcessEnv {
  const e = { ...process.env };
  delete e['BERTH_CRASH_AT'];
  return e;
}

export function netnsList(): string[] {
  return sh('ip', ['netns', 'list']).split('\n').map((l) => l.split(' ')[0] ?? '').filter((x) => x !== '');
}

/** The netns berth pins for a pod of the berth root `root` (runtime/network's own naming). */
export function netnsOf(root: string, podKey: string): string {
  let real = path.resolve(root);
  try {
    real = realpathSync(root);
  } catch {
    // removed already (teardown): the runtime resolved the same absolute path
  }
  return netnsName(real, podKey);
}

/** host-local's allocation files (one per IP) under berth's root. */
export function allocations(env: BerthEnv): string[] {
  const d = path.join(env.root, 'cni', 'networks', 'berth');
  return existsSync(d) ? readdirSync(d).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f)) : [];
}

/** `<hierarchy>/berth/<id>` directories in every cgroup hierarchy (v1 controllers and the unified tree). */
function cgroupDirs(): string[] {
  const out: string[] = [];
  for (const h of readdirSync('/sys/fs/cgroup')) {
    const base = path.join('/sys/fs/cgroup', h, 'berth');
    if (!existsSync(base)) continue;
    for (const e of readdirSync(base, { withFileTypes: true })) if (e.isDirectory()) out.push(path.join(base, e.name));
  }
  // the unified tree of a pure v2 host
  const v2 = '/sys/fs/cgroup/berth';
  if (existsSync(path.join('/sys/fs/cgroup', 'cgroup.controllers')) && existsSync(v2)) {
    for (const e of readdirSync(v2, { withFileTypes: true })) if (e.isDirectory()) out.push(path.join(v2, e.name));
  }
  return out;
}

/**
 * Temp files and directories of interrupted writes anywhere under the root (lib/fsx's
 * `.tmp-…`, the snapshotter's `tmp-…`), not descending into image layers and container
 * root filesystems (the images' own files).
 */
async function tempFiles(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string, depth: number): Promise<void> => {
    for (const e of await fsp.readdir(d, { withFileTypes: true }).catch(() => [])) {
      const full = path.join(d, e.name);
      if (/^\.?tmp-/.test(e.name) || e.name.includes('.berth-tmp-')) out.push(full);
      if (!e.isDirectory() || depth > 6) continue;
      const rel = path.relative(root, full);
      if (/^snapshots\/[a-f0-9]{64}$/.test(rel) || e.name === 'rootfs' || /^content\/blobs$/.test(rel)) continue;
      await walk(full, depth + 1);
    }
  };
  await walk(root, 0);
  return out.sort();
}

/** The figures a crash suite reports on its `BERTH_FIGURES` line (bench/reliability sums them). */
export interface CrashFigures {
  suite: string;
  trials: number;
  passed: number;
  /** Running containers the trial did not change that lost their pid or vanished. */
  lost: number;
  /** Blobs that do not hash to their name, rows and files that disagree. */
  corrupt: number;
  /** Leftovers: mounts, cgroups, netns, veths, addresses, rules, runc containers, conmons, temp files. */
  orphaned: number;
  /** Trials that failed another way (no convergence, a command's exit code, a berth process that could not load). */
  other: number;
}

export function newFigures(suite: string): CrashFigures {
  return { suite, trials: 0, passed: 0, lost: 0, corrupt: 0, orphaned: 0, other: 0 };
}

/** Counts a failed trial under the check its error came from (by the check's own message). */
export function countFailure(f: CrashFigures, err: unknown): void {
  const m = err instanceof Error ? err.message : String(err);
  // A berth process that could not load its modules (dist/ rewritten by a build at that moment) is
  // not a verdict on any check, whichever step it broke.
  if (/does not provide an export named|Cannot find module/.test(m)) f.other++;
  else if (/kept its pid/.test(m)) f.lost++;
  else if (/hashes to its name|rows and files agree/.test(m)) f.corrupt++;
  else if (/runc containers = rows|infra container|every runc container running|one conmon|cgroups of|mounts under|residue|container directories|temp files|netns of|veths on|allocations|firewall rules|berth check/.test(m)) f.orphaned++;
  else f.other++;
}

/** The machine-readable line bench/reliability collects (stderr). */
export function printFigures(f: object): void {
  process.stderr.write(`BERTH_FIGURES ${JSON.stringify(f)}\n`);
}

/**
 * Removes what a crash suite's network may have left once berth has deleted its pods: the netns of
 * every pod it declared, its bridge and its rules, the idle CNI chains, and ip_forward as it was before (`forwardBefore`).
 */
export async function removeTestNetwork(o: { root: string; bridge: string; everDeclared: ReadonlySet<string>; forwardBefore: string }): Promise<void> {
  for (const key of o.everDeclared) {
    try {
      execFileSync('ip', ['netns', 'delete', netnsOf(o.root, key)], { stdio: 'ignore' });
    } catch {
      // not there
    }
  }
  await removeTestBridge(o.bridge);
  if (o.forwardBefore !== '') execFileSync('sysctl', ['-q', '-w', `net.ipv4.ip_forward=${o.forwardBefore}`]);
}

/**
 * Resources (`blob sha256:…`, `snapshot sha256:…`) of the unexpired leases in the state (issue 14: a pull
 * killed mid-way leaves its lease, which keeps what it wrote until it expires so a pull again resumes); empty
 * before the leases table exists.
 */
export function leasedNow(root: string): Set<string> {
  const db = new Database(path.join(root, 'berth.db'), { readonly: true, fileMustExist: true });
  try {
    const has = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'lease_resources'").get() !== undefined;
    if (!has) return new Set();
    const rows = db.prepare('SELECT r.kind AS kind, r.id AS id FROM lease_resources r JOIN leases l ON l.id = r.lease_id WHERE l.expires_at > ?').all(Date.now()) as { kind: string; id: string }[];
    return new Set(rows.map((r) => `${r.kind} ${r.id}`));
  } finally {
    db.close();
  }
}

/** storeProblems without "no row names it" for what an unexpired lease holds (GC keeps those by design). */
export function unleased(problems: readonly string[], leased: ReadonlySet<string>): string[] {
  return problems.filter((p) => {
    const blob = /^blob (\S+) is referenced by no row$/.exec(p);
    if (blob !== null) return !leased.has(`blob ${blob[1] ?? ''}`);
    const dir = /^snapshot directory (\S+) has no row$/.exec(p);
    if (dir !== null) return !leased.has(`snapshot ${dir[1] ?? ''}`);
    return true;
  });
}

/**
 * The host a crash suite needs: the e2e prerequisites, `ip`, `iptables-save`, catatonit and the CNI
 * plugins in /usr/lib/cni (a missing plugin is an error, not a skip). Returns ip_forward as it was,
 * for removeTestNetwork, or undefined when the suite must skip.
 */
export function requireCrashHost(t: TestContext | SuiteContext): string | undefined {
  if (!(requireE2E(t) && requireTools(t, ['ip', 'iptables-save', 'catatonit']))) return undefined;
  for (const plugin of ['bridge', 'host-local', 'portmap', 'loopback']) {
    if (!existsSync(`/usr/lib/cni/${plugin}`)) throw new Error(`CNI plugin /usr/lib/cni/${plugin} is missing (Debian package containernetworking-plugins, scripts/host-deps.sh)`);
  }
  return readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim();
}

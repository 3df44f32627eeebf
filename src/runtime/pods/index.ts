import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { BerthError } from '../../lib/errors.js';
import { mkdirp } from '../../lib/fsx.js';
import type { Logger } from '../../lib/log.js';
import { crashPoint } from '../../lib/crashpoint.js';
import { hostIPsOverlap } from '../../lib/netaddr.js';
import { isSameProcess, startTime } from '../../lib/proc.js';
import { boundHostPorts, createNetns, deleteNetns, netnsExists, netnsName, netnsPath, sweepTaggedRules, CniNetwork, type CniTarget, type PortMapping } from '../network/index.js';
import type { SandboxRecord, StateStore } from '../state/index.js';
import type { TaskDriver } from '../tasks/index.js';
import { generateSandboxSpec, type SandboxRef } from '../tasks/spec.js';

/**
 * Pod sandboxes: what the kubelet asks containerd's CRI for with RunPodSandbox. A sandbox is
 * a pinned network namespace (`ip netns add`) attached to berth's bridge by the CNI plugins,
 * plus an infra container (catatonit in pause mode, under conmon like any container) that
 * holds the pod's IPC, UTS and PID namespaces; the pod's /etc/hosts, /etc/resolv.conf and
 * /etc/hostname are files in its directory. App containers join it by path (SandboxRef).
 *
 * The row is an intent row (rule S3): `creating` before the netns exists, `ready` once the
 * infra container runs, `removing` before teardown. A row found in `creating`/`removing`
 * is torn down by a repairing observation. Teardown is idempotent: runc delete of a gone
 * container, CNI DEL of a gone netns or allocation and `ip netns delete` of a gone netns all
 * succeed, so it can be retried until it completes.
 */

export interface DnsSpec {
  /** Kubernetes dnsPolicy. berth has no cluster DNS: ClusterFirst falls back to Default, as the kubelet does without one. */
  policy: 'ClusterFirst' | 'ClusterFirstWithHostNet' | 'Default' | 'None';
  nameservers?: string[];
  searches?: string[];
  options?: { name: string; value?: string }[];
}

export interface SandboxSpec {
  podKey: string;
  namespace: string;
  name: string;
  /** Hash over everything below: a different hash rebuilds the sandbox. */
  hash: string;
  hostname: string;
  subdomain?: string;
  dns: DnsSpec;
  ports: PortMapping[];
}

export interface SandboxView {
  id: string;
  hash: string;
  state: SandboxRecord['state'];
  /** Recorded ready, its infra container alive (same process) and its netns present. */
  ready: boolean;
  ip: string | null;
  pid: number | null;
}

/** The host's resolv.conf, else systemd-resolved's upstream list when the host's names only a loopback stub. */
const HOST_RESOLV = ['/etc/resolv.conf', '/run/systemd/resolve/resolv.conf'];
const MAX_NAMESERVERS = 3;
const MAX_SEARCHES = 32;

export class SandboxManager {
  constructor(
    private readonly root: string,
    private readonly state: StateStore,
    private readonly tasks: TaskDriver,
    private readonly net: CniNetwork,
    private readonly log: Logger,
    private readonly catatonit = '/usr/bin/catatonit',
  ) {}

  private readonly ops = new Map<string, Promise<void>>();
  private claims: Promise<void> = Promise.resolve();

  /** Runs `f` after every earlier claim has finished (a one-slot queue across all pods). */
  private async claimGate(f: () => Promise<void>): Promise<void> {
    const before = this.claims;
    let done!: () => void;
    this.claims = new Promise((r) => (done = r));
    try {
      await before;
      await f();
    } finally {
      done();
    }
  }

  dir(id: string): string {
    return path.join(this.root, 'sandboxes', id);
  }

  /** What a pod's sandbox row says and whether it is alive. No process is started. */
  view(podKey: string): SandboxView | undefined {
    const r = this.state.getSandbox(podKey);
    if (r === undefined) return undefined;
    const ready = r.state === 'ready' && isSameProcess(r.pid, r.pidStart) && existsSync(r.netns);
    return { id: r.id, hash: r.hash, state: r.state, ready, ip: r.ip, pid: r.pid };
  }

  /** Rolls back a sandbox left `creating` or `removing` by a crash. */
  async repair(podKey: string): Promise<void> {
    const r = this.state.getSandbox(podKey);
    if (r === undefined || r.state === 'ready') return;
    this.log.info({ pod: podKey, id: r.id, state: r.state }, 'rolling back interrupted sandbox operation');
    await this.remove(podKey);
  }

  /**
   * The namespaces and files a container of the pod joins. Throws ERR_PRECONDITION when the
   * sandbox is not ready (the pod's next run rebuilds it).
   */
  ref(podKey: string, shareProcessNamespace: boolean): SandboxRef {
    const r = this.state.getSandbox(podKey);
    if (r === undefined || r.state !== 'ready' || r.pid === null || !isSameProcess(r.pid, r.pidStart)) {
      throw new BerthError('ERR_RUNTIME', `pod ${podKey}: its sandbox is not running (it is rebuilt by the pod's next run)`);
    }
    const dir = this.dir(r.id);
    const ns = (t: string): string => `/proc/${r.pid ?? 0}/ns/${t}`;
    return {
      kind: 'pod',
      hostname: readHostname(path.join(dir, 'hostname')),
      netns: r.netns,
      ipc: ns('ipc'),
      uts: ns('uts'),
      ...(shareProcessNamespace ? { pid: ns('pid') } : {}),
      files: [
        { destination: '/etc/hosts', source: path.join(dir, 'hosts') },
        { destination: '/etc/resolv.conf', source: path.join(dir, 'resolv.conf') },
        { destination: '/etc/hostname', source: path.join(dir, 'hostname') },
      ],
    };
  }

  /** Infra container ids, which are containers of berth without container rows. */
  ids(): Set<string> {
    return new Set(this.state.listSandboxes().map((s) => s.id));
  }

  /**
   * Creates the pod's sandbox; an existing one (another hash, or dead) is torn down first.
   * The caller has removed the pod's containers. On failure nothing is left: no netns, no
   * IP allocation, no port rule, no infra container, no row.
   */
  create(spec: SandboxSpec, shareProcessNamespace: boolean): Promise<SandboxRecord> {
    return this.locked(spec.podKey, () => this.createNow(spec, shareProcessNamespace));
  }

  private async createNow(spec: SandboxSpec, shareProcessNamespace: boolean): Promise<SandboxRecord> {
    await this.removeNow(spec.podKey);
    const id = sandboxId(spec.podKey, spec.hash);
    const nsName = netnsName(this.root, spec.podKey);
    const rec: SandboxRecord = {
      podKey: spec.podKey,
      id,
      hash: spec.hash,
      state: 'creating',
      netns: netnsPath(nsName),
      ip: null,
      pid: null,
      pidStart: null,
      ports: JSON.stringify(spec.ports),
      // Recorded before ADD runs, so a crash inside ADD is DELeted with the same list.
      cniConfig: JSON.stringify(this.net.conflist(spec.ports)),
      cniResult: null,
      createdAt: Date.now(),
    };
    // The checks and the row that claims the ports are one step across pods: two pods mapping one
    // hostPort, created at once (locks are per pod), cannot both pass the check before either row
    // is written (regression hostport-check-race).
    await this.claimGate(async () => {
      this.checkSubnet(spec.podKey);
      await this.checkPorts(spec);
      this.state.putSandbox(rec);
    });
    const dir = this.dir(id);
    try {
      await fsp.rm(dir, { recursive: true, force: true });
      await mkdirp(path.join(dir, 'rootfs'), 0o755);
      await fsp.chmod(dir, 0o711);
      await createNetns(nsName);
      // After putSandbox: a release running now sees this row and keeps the rules.
      await this.net.ensureBridgeRules();
      crashPoint('sandbox.before-cni-add');
      const att = await this.net.add(target(rec), spec.ports);
      crashPoint('sandbox.mid-cni-add');
      rec.ip = att.ip;
      rec.cniConfig = att.config;
      rec.cniResult = att.result;
      this.state.putSandbox(rec);
      // Plain writes, no fsync: the directory was just emptied, nothing reads these files before the
      // infra container starts, and after a crash or a reboot the sandbox is rebuilt with new ones.
      await fsp.writeFile(path.join(dir, 'hosts'), hostsFile(spec, att.ip), { mode: 0o644 });
      await fsp.writeFile(path.join(dir, 'resolv.conf'), await resolvConf(spec.dns, this.log), { mode: 0o644 });
      await fsp.writeFile(path.join(dir, 'hostname'), `${spec.hostname}\n`, { mode: 0o644 });
      const runSpec = generateSandboxSpec({
        id,
        rootfs: path.join(dir, 'rootfs'),
        netns: rec.netns,
        hostname: spec.hostname,
        catatonit: this.catatonit,
        annotations: { 'dev.berth.pod': spec.podKey, 'dev.berth.sandbox': 'true', 'dev.berth.share-pid': String(shareProcessNamespace) },
      });
      const pid = await this.tasks.create({ id, bundle: dir, spec: runSpec, logPath: path.join(dir, 'infra.log'), logSizeMax: 64 * 1024 });
      await this.tasks.start(id);
      rec.pid = pid;
      rec.pidStart = startTime(pid);
      rec.state = 'ready';
      this.state.putSandbox(rec);
      this.log.info({ pod: spec.podKey, id, ip: att.ip, pid }, 'sandbox ready');
      return rec;
    } catch (err) {
      const undone = await this.teardown(rec).then(
        () => true,
        (e: unknown) => {
          this.log.warn({ pod: spec.podKey, err: e }, 'sandbox rollback failed; the row stays for the next removal or repair');
          return false;
        },
      );
      if (undone) {
        this.state.deleteSandbox(spec.podKey);
        await this.releaseRules();
      } else {
        // The row is what lets a later DEL find the network (CNI: an ADD must eventually be
        // followed by a DEL): kept as `removing`, so the next create, removal or repair tears
        // down what is left (regression sandbox-rollback-forgets-failed-teardown).
        this.state.putSandbox({ ...rec, state: 'removing' });
      }
      throw err;
    }
  }

  /** Tears the pod's sandbox down (infra container, CNI DEL, netns, files) and deletes its row. Idempotent. */
  remove(podKey: string): Promise<void> {
    return this.locked(podKey, () => this.removeNow(podKey));
  }

  private async removeNow(podKey: string): Promise<void> {
    const r = this.state.getSandbox(podKey);
    if (r === undefined) return;
    if (r.state !== 'removing') this.state.putSandbox({ ...r, state: 'removing' });
    await this.teardown(r);
    this.state.deleteSandbox(podKey);
    await this.releaseRules();
  }

  /**
   * Crash residue: a kill between the last sandbox's row deletion and its rule removal leaves the
   * bridge's rules with no pod. Looked at only when the bridge exists (no pod network ever, no cost).
   */
  async releaseIdleRules(): Promise<void> {
    if (this.state.listSandboxes().length > 0 || !existsSync(`/sys/class/net/${this.net.bridge}`)) return;
    await this.releaseRules();
  }

  /**
   * Rules removed from outside (a firewall reload) are put back: the bridge's, and the host-port
   * rules of each ready sandbox that has host ports (CniNetwork.checkRules, restorePortRules).
   * Each pod's restore holds that pod's lock and looks at its row again, so a sandbox being torn
   * down meanwhile never gets rules back. Sandboxes without a CNI result (hostNetwork) take no part.
   */
  async repairRules(): Promise<{ bridge: boolean; pods: string[] }> {
    const rows = this.state.listSandboxes().filter((r) => r.state === 'ready' && r.cniConfig !== null && r.cniResult !== null);
    const found = await this.net.checkRules(
      rows.map((r) => ({ id: r.id, ports: JSON.parse(r.ports) as PortMapping[] })),
      () => this.state.listSandboxes().length > 0,
    );
    const pods: string[] = [];
    for (const id of found.portsMissing) {
      const podKey = rows.find((r) => r.id === id)?.podKey;
      if (podKey === undefined) continue;
      await this.locked(podKey, async () => {
        const r = this.state.getSandbox(podKey);
        if (r?.id !== id || r.state !== 'ready' || r.cniConfig === null || r.cniResult === null) return;
        if (await this.net.restorePortRules(target(r), r.cniConfig, r.cniResult, JSON.parse(r.ports) as PortMapping[])) pods.push(podKey);
      });
    }
    return { bridge: found.bridge, pods };
  }

  /** One sandbox operation per pod at a time (create, remove, rule repair). */
  private locked<T>(podKey: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.ops.get(podKey) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    this.ops.set(podKey, tail);
    void tail.then(() => {
      if (this.ops.get(podKey) === tail) this.ops.delete(podKey);
    });
    return run;
  }

  /** The bridge's own rules go with the last sandbox (a failure to remove them is logged, not thrown: the pod is gone). */
  private async releaseRules(): Promise<void> {
    await this.net
      .releaseBridgeRules(() => this.state.listSandboxes().length > 0)
      .catch((err: unknown) => this.log.warn({ bridge: this.net.bridge, err }, 'removing the bridge rules failed'));
  }

  /**
   * Every step is tried, whatever failed before it (an infra container runc cannot delete must not
   * keep the IP allocation, veth and port rules), and the first failure is thrown at the end: the
   * row then stays and a later removal tries again; each step is idempotent.
   */
  private async teardown(r: SandboxRecord): Promise<void> {
    let first: unknown;
    const step = async (f: () => Promise<unknown>): Promise<boolean> => {
      try {
        await f();
        return true;
      } catch (err) {
        first ??= err;
        return false;
      }
    };
    await step(() => this.tasks.delete(r.id));
    const ports = JSON.parse(r.ports) as PortMapping[];
    const gone = !(await netnsExists(r.netns));
    const deleted = await step(async () => {
      try {
        await this.net.del(target(r), r.cniConfig, r.cniResult, ports);
      } catch (err) {
        // A rule the plugin could not remove (a chain still referenced) is swept, then DEL is asked once more.
        if ((await sweepTaggedRules(r.id)) === 0) throw err;
        await this.net.del(target(r), r.cniConfig, r.cniResult, ports);
      }
    });
    // Without its netns the bridge plugin cannot see the pod's address and skips its masquerade rule.
    if (gone) await step(() => sweepTaggedRules(r.id));
    // The netns stays while DEL has not succeeded: the next DEL needs it to find the pod's interface.
    if (deleted) await step(() => deleteNetns(path.basename(r.netns)));
    await step(() => fsp.rm(this.dir(r.id), { recursive: true, force: true }));
    if (first !== undefined) throw first;
  }

  /**
   * The bridge's pods all live in one subnet: a command run with another --pod-subnet for the same
   * bridge would add a second range to it and rewrite its masquerade rules for the new subnet
   * only, cutting the running pods off (regression pod-subnet-changed-under-running-pods).
   * Refused, naming what runs and how to go on.
   */
  private checkSubnet(podKey: string): void {
    const others = this.state.listSandboxes().filter((r) => r.podKey !== podKey);
    for (const r of others) {
      const n = CniNetwork.networkOf(r.cniConfig ?? '');
      if (n.bridge === this.net.bridge && n.subnet !== undefined && n.subnet !== this.net.subnet) {
        throw new BerthError(
          'ERR_CONFLICT',
          `pod ${podKey}: bridge ${this.net.bridge} carries pods in ${n.subnet} (pod ${r.podKey} among them), not ${this.net.subnet}: run with --pod-subnet ${n.subnet}, or delete those pods first`,
        );
      }
    }
  }

  /**
   * hostPort clashes before anything is made: with another pod's mapping (berth's own rows),
   * then with a socket bound on the host, which would otherwise shadow the mapping and leave
   * the pod running but unreachable.
   */
  private async checkPorts(spec: SandboxSpec): Promise<void> {
    if (spec.ports.length === 0) return;
    for (const other of this.state.listSandboxes()) {
      if (other.podKey === spec.podKey) continue;
      for (const q of JSON.parse(other.ports) as PortMapping[]) {
        for (const p of spec.ports) {
          if (p.protocol === q.protocol && p.hostPort === q.hostPort && hostIPsOverlap(p.hostIP, q.hostIP)) {
            throw new BerthError('ERR_CONFLICT', `pod ${spec.podKey}: hostPort ${p.hostPort}/${p.protocol} is already mapped by pod ${other.podKey}`, {
              details: { hostPort: p.hostPort, holder: other.podKey },
            });
          }
        }
      }
    }
    const bound = await boundHostPorts();
    for (const p of spec.ports) {
      const hit = bound.find((b) => b.protocol === p.protocol && b.port === p.hostPort && hostIPsOverlap(p.hostIP, b.address));
      if (hit !== undefined) {
        throw new BerthError('ERR_CONFLICT', `pod ${spec.podKey}: hostPort ${p.hostPort}/${p.protocol} is already bound on the host (${hit.address}:${hit.port}); free it or choose another hostPort`, {
          details: { hostPort: p.hostPort },
        });
      }
    }
  }
}

/** `<namespace>.<pod>._sandbox.<hash8>`: parses as a container id of the pod (exit files map back to it). */
export function sandboxId(podKey: string, hash: string): string {
  const [ns, pod] = podKey.split('/');
  return `${ns}.${pod}._sandbox.${hash.slice(0, 8)}`;
}

function target(r: SandboxRecord): CniTarget {
  const [namespace = '', name = ''] = r.podKey.split('/');
  return { id: r.id, netns: r.netns, namespace, name };
}

/** The pod's hostname as its sandbox wrote it (for HOSTNAME); empty if the file is gone. */
function readHostname(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    return '';
  }
}

/** The kubelet's managed hosts file: loopback names, then the pod's address with its FQDN and hostname. */
export function hostsFile(spec: Pick<SandboxSpec, 'hostname' | 'subdomain' | 'namespace'>, ip: string): string {
  const names = spec.subdomain !== undefined ? `${spec.hostname}.${spec.subdomain}.${spec.namespace}.svc.cluster.local\t${spec.hostname}` : spec.hostname;
  return [
    '# Kubernetes-managed hosts file (written by berth).',
    '127.0.0.1\tlocalhost',
    '::1\tlocalhost ip6-localhost ip6-loopback',
    'fe00::0\tip6-localnet',
    'fe00::0\tip6-mcastprefix',
    'fe00::1\tip6-allnodes',
    'fe00::2\tip6-allrouters',
    `${ip}\t${names}`,
    '',
  ].join('\n');
}

interface Resolv {
  nameservers: string[];
  searches: string[];
  options: Map<string, string | undefined>;
}

function parseResolv(text: string): Resolv {
  const r: Resolv = { nameservers: [], searches: [], options: new Map() };
  for (const raw of text.split('\n')) {
    const f = raw.replace(/[#;].*$/, '').trim().split(/\s+/);
    const [key, ...rest] = f;
    if (key === 'nameserver' && rest[0] !== undefined) r.nameservers.push(rest[0]);
    else if (key === 'search' || key === 'domain') r.searches = rest;
    else if (key === 'options') {
      for (const o of rest) {
        const [n, v] = o.split(':');
        if (n !== undefined && n !== '') r.options.set(n, v);
      }
    }
  }
  return r;
}

const isLoopbackServer = (s: string): boolean => s.startsWith('127.') || s === '::1';

/**
 * The pod's resolv.conf by dnsPolicy. Default and ClusterFirst (no cluster DNS on one host)
 * take the host's servers, skipping a loopback stub (systemd-resolved's 127.0.0.53), which a
 * pod in its own netns cannot reach; None starts empty. dnsConfig is merged on top: servers
 * and searches appended without duplicates, options by name.
 */
export async function resolvConf(dns: DnsSpec, log: Logger): Promise<string> {
  let base: Resolv = { nameservers: [], searches: [], options: new Map() };
  if (dns.policy !== 'None') {
    for (const file of HOST_RESOLV) {
      const text = await fsp.readFile(file, 'utf8').catch(() => undefined);
      if (text === undefined) continue;
      const r = parseResolv(text);
      base = r;
      if (r.nameservers.some((s) => !isLoopbackServer(s))) break;
    }
    const dropped = base.nameservers.filter(isLoopbackServer);
    if (dropped.length > 0) log.warn({ dropped }, 'host resolv.conf names loopback nameservers a pod cannot reach; left out');
    base.nameservers = base.nameservers.filter((s) => !isLoopbackServer(s));
  }
  const servers = [...new Set([...base.nameservers, ...(dns.nameservers ?? [])])].slice(0, MAX_NAMESERVERS);
  const searches = [...new Set([...base.searches, ...(dns.searches ?? [])])].slice(0, MAX_SEARCHES);
  for (const o of dns.options ?? []) base.options.set(o.name, o.value);
  const lines = servers.map((s) => `nameserver ${s}`);
  if (searches.length > 0) lines.push(`search ${searches.join(' ')}`);
  if (base.options.size > 0) lines.push(`options ${[...base.options].map(([n, v]) => (v === undefined ? n : `${n}:${v}`)).join(' ')}`);
  return `${lines.join('\n')}\n`;
}

import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { BerthError, errnoCode, messageOf } from '../../lib/errors.js';
import { runProcess, type ProcessExitError } from '../../lib/exec.js';

/**
 * Pod networking through the CNI plugins (containernetworking/cni SPEC 1.0), executed by
 * berth itself: one process per plugin, the network configuration on stdin, CNI_* in the
 * environment, the result (or a CNI error) on stdout. A configuration list is run in order
 * for ADD and CHECK and in reverse for DEL, each plugin getting the previous result as
 * `prevResult`. The list ADD ran with is kept by the caller (sandboxes.cni_config) and handed
 * back for DEL, as the spec requires, together with the cached result.
 *
 * The network: berth's own bridge (default `berth0`, 10.89.0.0/16) with `host-local` IPAM
 * whose data lives under berth's root, `portmap` for hostPort/hostIP, and `loopback` run on
 * its own (as containerd's CRI does). Masquerading and the FORWARD accept rules (so that a
 * host whose FORWARD policy is DROP still passes pod traffic) are berth's own, once per bridge
 * instead of once per pod (see bridge rules below): the bridge plugin's ipMasq and the
 * firewall plugin cost ~18 iptables processes per pod. Every plugin call has a deadline; a
 * wedged plugin is killed with its process group.
 */

export interface NetworkOptions {
  /** Linux bridge the pods attach to. */
  bridge: string;
  /** IPv4 subnet host-local allocates pod addresses from. */
  subnet: string;
  /** Directory holding the CNI plugin binaries. */
  pluginDir: string;
  /** host-local's allocation store. */
  dataDir: string;
  /** Deadline of one plugin call. */
  timeoutMs?: number;
}

export const DEFAULT_BRIDGE = 'berth0';
export const DEFAULT_SUBNET = '10.89.0.0/16';
export const DEFAULT_PLUGIN_DIR = '/usr/lib/cni';
const CNI_VERSION = '1.0.0';
const IFNAME = 'eth0';

export interface PortMapping {
  hostPort: number;
  containerPort: number;
  protocol: 'tcp' | 'udp' | 'sctp';
  hostIP?: string;
}

export interface CniAttachment {
  /** The pod's IPv4 address on the bridge. */
  ip: string;
  /** JSON of the ADD result (cached for DEL and CHECK). */
  result: string;
  /** JSON of the configuration list ADD ran with. */
  config: string;
}

interface ConfList {
  cniVersion: string;
  name: string;
  plugins: Record<string, unknown>[];
}

/** Who a CNI call is for: the sandbox id (CNI_CONTAINERID), its netns and the pod. */
export interface CniTarget {
  id: string;
  netns: string;
  namespace: string;
  name: string;
}

export class CniNetwork {
  private readonly timeoutMs: number;

  /** The subnet this network was configured with (the command line's). */
  get subnet(): string {
    return this.o.subnet;
  }

  /** The bridge and subnet a recorded configuration list (a sandbox's cniConfig) was made for, if it says. */
  static networkOf(conflist: string): { bridge?: string; subnet?: string } {
    try {
      const c = JSON.parse(conflist) as { plugins?: { type?: string; bridge?: string; ipam?: { ranges?: { subnet?: string }[][] } }[] };
      const b = c.plugins?.find((p) => p.type === 'bridge');
      const subnet = b?.ipam?.ranges?.[0]?.[0]?.subnet;
      return { ...(b?.bridge !== undefined ? { bridge: b.bridge } : {}), ...(subnet !== undefined ? { subnet } : {}) };
    } catch {
      return {};
    }
  }

  constructor(private readonly o: NetworkOptions) {
    this.timeoutMs = o.timeoutMs ?? 30_000;
    if (!/^[A-Za-z0-9_.-]{1,15}$/.test(o.bridge)) {
      throw new BerthError('ERR_INVALID_ARGUMENT', `pod network: bridge name ${JSON.stringify(o.bridge)} is not a Linux interface name (1–15 of A-Z a-z 0-9 _ . -)`);
    }
    if (parseCidr(o.subnet) === undefined) {
      throw new BerthError('ERR_INVALID_ARGUMENT', `pod network: subnet ${JSON.stringify(o.subnet)} is not an IPv4 CIDR between /8 and /30 (e.g. ${DEFAULT_SUBNET})`);
    }
  }

  get bridge(): string {
    return this.o.bridge;
  }

  private rulesReady = false;
  private ruleQueue: Promise<void> = Promise.resolve();

  /** One bridge-rules change at a time: an ensure and a release never interleave. */
  private serial(fn: () => Promise<void>): Promise<void> {
    const run = this.ruleQueue.then(fn, fn);
    this.ruleQueue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /**
   * Makes sure the bridge's masquerade and forward rules are in place before a pod is attached:
   * checked and (re)written once per process, then free. The caller records its sandbox row
   * first, so a release running at the same time sees it and keeps the rules.
   */
  ensureBridgeRules(): Promise<void> {
    if (this.rulesReady) return Promise.resolve();
    return this.serial(async () => {
      if (!this.rulesReady) await this.writeRules();
    });
  }

  /** Writes the bridge's rules (inside `serial`). */
  private async writeRules(): Promise<void> {
    await writeBridgeRules(this.o.bridge, this.o.subnet, this.timeoutMs);
    this.rulesReady = true;
  }

  /**
   * Removes the bridge's rules when `inUse()` (asked inside the lock, after the caller deleted
   * its sandbox row) says no pod is attached any more, as netavark drops a network's rules with
   * its last container: deleting every pod leaves no rule behind.
   */
  releaseBridgeRules(inUse: () => boolean): Promise<void> {
    return this.serial(async () => {
      if (inUse()) return;
      this.rulesReady = false;
      await removeBridgeRules(this.o.bridge, this.timeoutMs);
    });
  }

  /**
   * Finds rules an outside flush removed (a firewall reload, `iptables -F`, an `iptables-restore`
   * of a saved file), as `podman network reload` would be asked to: the bridge's jumps and chains
   * are written again at once when any is missing (with pods attached they must be there); the
   * sandbox ids of `pods` with host ports none of whose rules is left are returned, for
   * restorePortRules. One iptables-save. `inUse()` is asked again just before the bridge's rules are
   * written (inside the lock releaseBridgeRules takes): if the last pod went meanwhile, its release
   * removed them on purpose and they stay removed.
   */
  async checkRules(pods: readonly { id: string; ports: readonly PortMapping[] }[], inUse: () => boolean): Promise<{ bridge: boolean; portsMissing: string[] }> {
    const out = { bridge: false, portsMissing: [] as string[] };
    if (pods.length === 0) return out;
    const saved = await saveAll(this.timeoutMs, `check the network rules of bridge ${this.o.bridge}`);
    if (!bridgeRulesPresent(saved, this.o.bridge, this.o.subnet)) {
      await this.serial(async () => {
        if (!inUse()) return;
        await this.writeRules();
        out.bridge = true;
      });
    }
    const nat = saved.get('nat')?.rules ?? [];
    for (const p of pods) {
      if (p.ports.length > 0 && !nat.some((r) => r.includes(cniTag(p.id)))) out.portsMissing.push(p.id);
    }
    return out;
  }

  /** Runs the portmap ADD of a sandbox's list once more with its cached result (its host-port rules were removed). */
  async restorePortRules(t: CniTarget, config: string, result: string, ports: readonly PortMapping[]): Promise<boolean> {
    const list = JSON.parse(config) as ConfList;
    const portmap = list.plugins.find((x) => x['type'] === 'portmap');
    if (portmap === undefined) return false;
    await this.exec('ADD', portmap, list, t, JSON.parse(result) as unknown, runtimeConfig(portmap, ports));
    return true;
  }

  /**
   * The configuration list berth runs: bridge + host-local, and portmap only for a pod with host
   * ports (without mappings it has nothing to do, and each plugin is a fork of a Go binary
   * calling iptables). The list ADD ran with is kept for DEL (a sandbox made by an older berth
   * with ipMasq and firewall is torn down with those), and a change of host ports rebuilds the
   * sandbox (its hash), so a list without portmap never meets a mapping.
   */
  conflist(ports: readonly PortMapping[]): ConfList {
    return {
      cniVersion: CNI_VERSION,
      name: 'berth',
      plugins: [
        {
          type: 'bridge',
          bridge: this.o.bridge,
          isGateway: true,
          ipMasq: false,
          hairpinMode: true,
          ipam: { type: 'host-local', ranges: [[{ subnet: this.o.subnet }]], routes: [{ dst: '0.0.0.0/0' }], dataDir: this.o.dataDir },
        },
        ...(ports.length > 0 ? [{ type: 'portmap', capabilities: { portMappings: true }, snat: true }] : []),
      ],
    };
  }

  /**
   * ADD: loopback, then the list in order. A failure part-way runs DEL over the list before
   * the error is thrown (the spec asks the runtime to clean up after a failed ADD), so no IP
   * allocation, veth or rule is left behind.
   */
  async add(t: CniTarget, ports: readonly PortMapping[]): Promise<CniAttachment> {
    const list = this.conflist(ports);
    const config = JSON.stringify(list);
    await this.exec('ADD', { type: 'loopback' }, { cniVersion: CNI_VERSION, name: 'berth-loopback' }, t);
    let prev: unknown;
    try {
      for (const plugin of list.plugins) {
        prev = await this.exec('ADD', plugin, list, t, prev, runtimeConfig(plugin, ports));
      }
    } catch (err) {
      await this.del(t, config, prev === undefined ? null : JSON.stringify(prev), ports).catch(() => undefined);
      throw err;
    }
    const ip = firstIPv4(prev);
    if (ip === undefined) {
      await this.del(t, config, JSON.stringify(prev), ports).catch(() => undefined);
      throw new BerthError('ERR_RUNTIME', `network ADD for pod ${t.namespace}/${t.name}: the CNI result carries no IPv4 address`);
    }
    return { ip, result: JSON.stringify(prev), config };
  }

  /**
   * DEL: the list in reverse with the cached result, then loopback. Idempotent: plugins
   * treat a missing netns or allocation as done. Every plugin is asked even when one fails,
   * and the first failure is thrown afterwards.
   */
  async del(t: CniTarget, config: string | null, result: string | null, ports: readonly PortMapping[]): Promise<void> {
    const list = config !== null ? (JSON.parse(config) as ConfList) : this.conflist(ports);
    // No cached result (a crash between ADD and recording it): the addresses host-local holds for
    // this id stand in for it, so firewall and portmap can find their per-address rules.
    const prev = result !== null ? (JSON.parse(result) as unknown) : await this.resultFromAllocations(t.id, list);
    let first: unknown;
    for (const plugin of [...list.plugins].reverse()) {
      try {
        await this.exec('DEL', plugin, list, t, prev, runtimeConfig(plugin, ports));
      } catch (err) {
        first ??= err;
      }
    }
    if (first !== undefined) throw first;
  }

  /**
   * A minimal CNI result from host-local's store, whose files are named by address and hold the
   * container id on their first line; undefined when it holds none for `id`.
   */
  private async resultFromAllocations(id: string, list: ConfList): Promise<unknown> {
    const dir = path.join(this.o.dataDir, list.name);
    const ips: string[] = [];
    for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
      if (!/^\d+\.\d+\.\d+\.\d+$/.test(name)) continue;
      const owner = (await fsp.readFile(path.join(dir, name), 'utf8').catch(() => '')).split(/\r?\n/)[0]?.trim();
      if (owner === id) ips.push(name);
    }
    return ips.length === 0 ? undefined : { cniVersion: list.cniVersion, interfaces: [], ips: ips.map((ip) => ({ address: `${ip}/32` })) };
  }

  /** CHECK: the list in order with the cached result; throws what the first failing plugin says. */
  async check(t: CniTarget, config: string, result: string, ports: readonly PortMapping[]): Promise<void> {
    const list = JSON.parse(config) as ConfList;
    const prev = JSON.parse(result) as unknown;
    for (const plugin of list.plugins) await this.exec('CHECK', plugin, list, t, prev, runtimeConfig(plugin, ports));
  }

  private async exec(
    command: 'ADD' | 'DEL' | 'CHECK',
    plugin: Record<string, unknown>,
    net: { cniVersion: string; name: string },
    t: CniTarget,
    prevResult?: unknown,
    rc?: Record<string, unknown>,
  ): Promise<unknown> {
    const type = String(plugin['type']);
    if (!/^[a-z0-9-]+$/.test(type)) throw new BerthError('ERR_INVALID_ARGUMENT', `network ${command}: plugin type ${JSON.stringify(type)} is not a plugin name`);
    const conf: Record<string, unknown> = { cniVersion: net.cniVersion, name: net.name, ...plugin };
    if (prevResult !== undefined) conf['prevResult'] = prevResult;
    if (rc !== undefined) conf['runtimeConfig'] = rc;
    const env: NodeJS.ProcessEnv = {
      PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      CNI_COMMAND: command,
      CNI_CONTAINERID: t.id,
      CNI_NETNS: t.netns,
      CNI_IFNAME: IFNAME,
      CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${t.namespace};K8S_POD_NAME=${t.name};K8S_POD_INFRA_CONTAINER_ID=${t.id}`,
      CNI_PATH: this.o.pluginDir,
    };
    const what = `network ${command} for pod ${t.namespace}/${t.name}: CNI plugin ${type}`;
    try {
      const { stdout } = await runProcess(path.join(this.o.pluginDir, type), [], { timeoutMs: this.timeoutMs, what, env, input: JSON.stringify(conf) });
      return stdout.trim() === '' ? undefined : (JSON.parse(stdout) as unknown);
    } catch (err) {
      if (err instanceof BerthError) {
        if (err.code === 'ERR_PRECONDITION') {
          throw new BerthError('ERR_PRECONDITION', `${what}: not found in ${this.o.pluginDir} (install the Debian package containernetworking-plugins)`, { cause: err });
        }
        throw err;
      }
      const e = err as ProcessExitError;
      throw new BerthError('ERR_RUNTIME', `${what}: ${cniError(e.stdout, e.stderr) ?? messageOf(err)}`, { cause: err, details: { plugin: type, command } });
    }
  }
}

/** The capability arguments a plugin declares it takes (only those are passed, per the conventions). */
function runtimeConfig(plugin: Record<string, unknown>, ports: readonly PortMapping[]): Record<string, unknown> | undefined {
  const caps = plugin['capabilities'] as Record<string, unknown> | undefined;
  if (caps?.['portMappings'] !== true) return undefined;
  return { portMappings: ports.map((p) => ({ hostPort: p.hostPort, containerPort: p.containerPort, protocol: p.protocol, ...(p.hostIP !== undefined ? { hostIP: p.hostIP } : {}) })) };
}

/** A CNI error's `msg: details`, from stdout (the spec's place) or stderr. */
function cniError(stdout: string, stderr: string): string | undefined {
  try {
    const j = JSON.parse(stdout) as { code?: number; msg?: string; details?: string };
    if (typeof j.msg === 'string') return j.details !== undefined && j.details !== '' ? `${j.msg}: ${j.details}` : j.msg;
  } catch {
    // not a CNI error document
  }
  const s = stderr.trim();
  return s === '' ? undefined : s.split('\n').slice(-3).join(' ');
}

function firstIPv4(result: unknown): string | undefined {
  const ips = (result as { ips?: { address?: string }[] } | undefined)?.ips ?? [];
  for (const ip of ips) {
    const addr = ip.address?.split('/')[0];
    if (addr !== undefined && /^\d+\.\d+\.\d+\.\d+$/.test(addr)) return addr;
  }
  return undefined;
}

function parseCidr(s: string): { base: number; bits: number } | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(s);
  if (m === null) return undefined;
  const octets = m.slice(1, 5).map(Number);
  const bits = Number(m[5]);
  if (octets.some((o) => o > 255) || bits < 8 || bits > 30) return undefined;
  return { base: octets.reduce((a, o) => a * 256 + o, 0), bits };
}

// bridge rules ------------------------------------------------------------------------

/**
 * The two chains berth keeps per bridge, named from a hash of the bridge name (a chain name has
 * at most 28 characters), and the comment on the jumps into them.
 */
export function bridgeChains(bridge: string): { nat: string; filter: string; comment: string } {
  const h = createHash('sha256').update(bridge).digest('hex').slice(0, 12).toUpperCase();
  return { nat: `BERTH-MASQ-${h}`, filter: `BERTH-FWD-${h}`, comment: `berth-bridge:${bridge}` };
}

interface SavedTable {
  chains: Set<string>;
  rules: string[];
}

/** `iptables-save` output by table: the chains declared and the `-A` lines. */
function parseSave(text: string): Map<string, SavedTable> {
  const out = new Map<string, SavedTable>();
  let cur: SavedTable | undefined;
  for (const line of text.split('\n')) {
    if (line.startsWith('*')) {
      cur = { chains: new Set(), rules: [] };
      out.set(line.slice(1).trim(), cur);
    } else if (cur !== undefined && line.startsWith(':')) {
      cur.chains.add(line.slice(1).split(' ')[0] ?? '');
    } else if (cur !== undefined && line.startsWith('-A ')) {
      cur.rules.push(line);
    }
  }
  return out;
}

const unquoted = (s: string): string => s.replace(/"/g, '');

/**
 * The jumps into `chain` from built-in chains, as iptables-restore `-D` lines, except `keep`
 * (compared without quotes: iptables-save may quote a comment).
 */
function staleJumps(t: SavedTable | undefined, chain: string, keep: string | undefined): string[] {
  const out: string[] = [];
  for (const r of t?.rules ?? []) {
    if (!r.endsWith(` -j ${chain}`) || r.startsWith(`-A ${chain} `)) continue;
    if (keep !== undefined && unquoted(r) === unquoted(keep)) continue;
    out.push(`-D ${r.slice(3)}`);
  }
  return out;
}

async function saveAll(timeoutMs: number, what: string): Promise<Map<string, SavedTable>> {
  const { stdout } = await runProcess('iptables-save', [], { timeoutMs, what: `${what}: iptables-save` });
  return parseSave(stdout);
}

async function restore(lines: string[], timeoutMs: number, what: string): Promise<void> {
  if (lines.length === 0) return;
  try {
    await runProcess('iptables-restore', ['--noflush', '--wait'], { timeoutMs, what: `${what}: iptables-restore`, input: `${lines.join('\n')}\n` });
  } catch (err) {
    if (err instanceof BerthError) throw err;
    const e = err as ProcessExitError;
    throw new BerthError('ERR_RUNTIME', `${what}: iptables-restore: ${(e.stderr ?? '').trim() || messageOf(err)}`, { cause: err });
  }
}

/**
 * Writes the bridge's rules, replacing whatever berth's chains held (an iptables-restore
 * declaration of a user chain flushes it) and any jump into them that differs from today's
 * (another subnet): nat POSTROUTING `-s SUBNET → BERTH-MASQ-…` (traffic to the subnet itself is
 * left alone, multicast too; the rest is masqueraded, what the bridge plugin's ipMasq did per
 * pod), and filter FORWARD's first rule `→ BERTH-FWD-…` (accept what comes from the bridge and
 * what answers it, what the firewall plugin did per address). Two processes in all.
 */
export async function writeBridgeRules(bridge: string, subnet: string, timeoutMs = 30_000): Promise<void> {
  const c = bridgeChains(bridge);
  const what = `network rules of bridge ${bridge}`;
  const saved = await saveAll(timeoutMs, what);
  const natJump = `-A POSTROUTING -s ${subnet} -m comment --comment "${c.comment}" -j ${c.nat}`;
  const fwdJump = `-A FORWARD -m comment --comment "${c.comment}" -j ${c.filter}`;
  const has = (t: SavedTable | undefined, rule: string): boolean => (t?.rules ?? []).some((r) => unquoted(r) === unquoted(rule));
  const nat = saved.get('nat');
  const filter = saved.get('filter');
  const lines = [
    '*nat',
    `:${c.nat} - [0:0]`,
    ...staleJumps(nat, c.nat, natJump),
    `-A ${c.nat} -d ${subnet} -j ACCEPT`,
    `-A ${c.nat} ! -d 224.0.0.0/4 -j MASQUERADE`,
    ...(has(nat, natJump) ? [] : [natJump]),
    'COMMIT',
    '*filter',
    `:${c.filter} - [0:0]`,
    ...staleJumps(filter, c.filter, fwdJump),
    `-A ${c.filter} -o ${bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
    // A connection portmap DNATed to a pod (a hostPort reached from another machine) is new
    // when it crosses FORWARD: accepted too, or a DROP policy (docker, ufw) drops it
    // (regression hostport-forward-drop; netavark accepts it the same way).
    `-A ${c.filter} -o ${bridge} -m conntrack --ctstate DNAT -j ACCEPT`,
    `-A ${c.filter} -i ${bridge} -j ACCEPT`,
    ...(has(filter, fwdJump) ? [] : [`-I FORWARD 1 -m comment --comment "${c.comment}" -j ${c.filter}`]),
    'COMMIT',
  ];
  await restore(lines, timeoutMs, what);
}

/** Whether the jumps and the rules writeBridgeRules makes are all in `saved`. */
function bridgeRulesPresent(saved: Map<string, SavedTable>, bridge: string, subnet: string): boolean {
  const c = bridgeChains(bridge);
  const want: [string, string][] = [
    ['nat', `-A POSTROUTING -s ${subnet} -m comment --comment ${c.comment} -j ${c.nat}`],
    ['nat', `-A ${c.nat} -d ${subnet} -j ACCEPT`],
    ['nat', `-A ${c.nat} ! -d 224.0.0.0/4 -j MASQUERADE`],
    ['filter', `-A FORWARD -m comment --comment ${c.comment} -j ${c.filter}`],
    ['filter', `-A ${c.filter} -o ${bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`],
    ['filter', `-A ${c.filter} -o ${bridge} -m conntrack --ctstate DNAT -j ACCEPT`],
    ['filter', `-A ${c.filter} -i ${bridge} -j ACCEPT`],
  ];
  return want.every(([table, rule]) => (saved.get(table)?.rules ?? []).some((r) => unquoted(r) === rule));
}

/** Removes the bridge's jumps and chains; nothing there is success. Exported for clean-ups of tests and benches. */
export async function removeBridgeRules(bridge: string, timeoutMs = 30_000): Promise<void> {
  const c = bridgeChains(bridge);
  const what = `remove network rules of bridge ${bridge}`;
  const saved = await saveAll(timeoutMs, what);
  const lines: string[] = [];
  for (const [table, chain] of [['nat', c.nat], ['filter', c.filter]] as const) {
    const t = saved.get(table);
    const body = [...staleJumps(t, chain, undefined), ...(t?.chains.has(chain) === true ? [`:${chain} - [0:0]`, `-X ${chain}`] : [])];
    if (body.length > 0) lines.push(`*${table}`, ...body, 'COMMIT');
  }
  await restore(lines, timeoutMs, what);
}

// rules left behind ---------------------------------------------------------------

/** How the comment of a rule the CNI plugins made for sandbox `id` shows in iptables-save (`… id: \\"<id>\\"`). */
function cniTag(id: string): string {
  return `id: \\"${id}\\"`;
}

/**
 * Removes the iptables rules CNI tagged with this sandbox id (bridge's ipMasq and portmap
 * comment their rules `name: "berth" id: "<id>"`) and the per-sandbox chains they jump to.
 * Needed after a DEL whose netns was already gone: the bridge plugin then cannot read the
 * pod's addresses and skips its masquerade teardown, which would leak the rule (and make
 * the next DEL of the same id fail on a chain still in use). Only rules naming this exact
 * id are touched.
 */
export async function sweepTaggedRules(id: string): Promise<number> {
  const tag = cniTag(id);
  let removed = 0;
  for (const table of ['nat', 'filter']) {
    const { stdout } = await runProcess('iptables-save', ['-t', table], { timeoutMs: 10_000, what: `sweep rules of ${id}: iptables-save` });
    const chains = new Set<string>();
    for (const line of stdout.split('\n')) {
      if (!line.startsWith('-A ') || !line.includes(tag)) continue;
      const args = splitRule(line.slice(3));
      const chain = args.shift() ?? '';
      const target = /(?:^| )-j (CNI-[0-9a-f]{24})(?: |$)/.exec(line)?.[1];
      if (target !== undefined) chains.add(target);
      await runProcess('iptables', ['-t', table, '-D', chain, ...args, '--wait'], { timeoutMs: 10_000, what: `sweep rules of ${id}: iptables -D` }).catch(() => undefined);
      removed++;
    }
    for (const c of chains) {
      await runProcess('iptables', ['-t', table, '-F', c, '--wait'], { timeoutMs: 10_000, what: `sweep chain ${c}: iptables -F` }).catch(() => undefined);
      await runProcess('iptables', ['-t', table, '-X', c, '--wait'], { timeoutMs: 10_000, what: `sweep chain ${c}: iptables -X` }).catch(() => undefined);
    }
  }
  return removed;
}

/** iptables-save's rule text back into arguments; a quoted comment stays one argument, unescaped. */
export function splitRule(s: string): string[] {
  const out: string[] = [];
  for (const m of s.matchAll(/"((?:[^"\\]|\\.)*)"|(\S+)/g)) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : (m[2] ?? ''));
  return out;
}

// network namespaces --------------------------------------------------------------

const NETNS_DIR = '/run/netns';

/**
 * The pinned netns name of a pod: stable per berth root and pod key, so a rebuild after a reboot
 * reuses it, and two berth instances (two roots) declaring the same pod do not share one
 * (regression netns-name-collides-across-roots: the second CNI ADD found the first's eth0).
 * Sandboxes recorded before keep the path in their row.
 */
export function netnsName(root: string, podKey: string): string {
  return `berth-${createHash('sha256').update(`${root}\0${podKey}`).digest('hex').slice(0, 16)}`;
}

export function netnsPath(name: string): string {
  return path.join(NETNS_DIR, name);
}

/** `ip netns add`: a network namespace pinned by a bind mount at /run/netns/NAME. An existing one is kept. */
export async function createNetns(name: string): Promise<string> {
  const p = netnsPath(name);
  try {
    await runProcess('ip', ['netns', 'add', name], { timeoutMs: 10_000, what: `create network namespace ${name}: ip` });
  } catch (err) {
    if (err instanceof BerthError) throw err;
    if (!/exists/i.test((err as ProcessExitError).stderr ?? '')) {
      throw new BerthError('ERR_RUNTIME', `create network namespace ${name}: ${messageOf(err)}`, { cause: err });
    }
  }
  return p;
}

/** `ip netns delete`; a namespace that is already gone is success. */
export async function deleteNetns(name: string): Promise<void> {
  const exists = await fsp.access(netnsPath(name)).then(() => true, () => false);
  if (!exists) return;
  try {
    await runProcess('ip', ['netns', 'delete', name], { timeoutMs: 10_000, what: `delete network namespace ${name}: ip` });
  } catch (err) {
    if (err instanceof BerthError) throw err;
    if (/No such file/i.test((err as ProcessExitError).stderr ?? '')) return;
    throw new BerthError('ERR_RUNTIME', `delete network namespace ${name}: ${messageOf(err)}`, { cause: err });
  }
}

export async function netnsExists(p: string): Promise<boolean> {
  try {
    await fsp.access(p);
    return true;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return false;
    throw err;
  }
}

// host ports ----------------------------------------------------------------------

export interface BoundPort {
  protocol: 'tcp' | 'udp';
  address: string;
  port: number;
}

/**
 * Sockets bound on the host (this network namespace): TCP listeners and bound UDP sockets,
 * from /proc/net/{tcp,tcp6,udp,udp6}. A hostPort that one of them holds would be shadowed
 * by the DNAT rule for remote clients and fail for local ones, so it is refused up front.
 */
export async function boundHostPorts(): Promise<BoundPort[]> {
  const out: BoundPort[] = [];
  for (const [file, protocol, v6] of [['tcp', 'tcp', false], ['tcp6', 'tcp', true], ['udp', 'udp', false], ['udp6', 'udp', true]] as const) {
    const text = await fsp.readFile(`/proc/net/${file}`, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      const local = f[1];
      const st = f[3];
      if (local === undefined || st === undefined) continue;
      // TCP_LISTEN is 0A; a bound, unconnected UDP socket shows 07 (TCP_CLOSE).
      if ((protocol === 'tcp' && st !== '0A') || (protocol === 'udp' && st !== '07')) continue;
      const [hex, portHex] = local.split(':');
      if (hex === undefined || portHex === undefined) continue;
      out.push({ protocol, address: v6 ? ipv6FromProc(hex) : ipv4FromProc(hex), port: parseInt(portHex, 16) });
    }
  }
  return out;
}

function ipv4FromProc(hex: string): string {
  const n = parseInt(hex, 16);
  return [n & 255, (n >>> 8) & 255, (n >>> 16) & 255, (n >>> 24) & 255].join('.');
}

function ipv6FromProc(hex: string): string {
  // Four 32-bit words, each in host (little-endian) order.
  const bytes: number[] = [];
  for (let w = 0; w < 4; w++) {
    const word = hex.slice(w * 8, w * 8 + 8);
    for (let b = 3; b >= 0; b--) bytes.push(parseInt(word.slice(b * 2, b * 2 + 2), 16));
  }
  if (bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 255 && bytes[11] === 255) return bytes.slice(12).join('.');
  if (bytes.every((b) => b === 0)) return '::';
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0)).toString(16));
  return groups.join(':');
}

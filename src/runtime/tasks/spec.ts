import { containerArgv } from '../../lib/argv.js';
import { BerthError } from '../../lib/errors.js';
import { existsSync, lstatSync, readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { checkWorkingDir, quoteShort } from '../../lib/workdir.js';
import { runtimeDefaultSeccomp } from './seccomp.js';
import { checkRunAsNonRoot, imageUserForPolicy, resolveUser } from './users.js';
import type { ImageConfig } from '../images/documents.js';

export { checkWorkingDir } from '../../lib/workdir.js';

/**
 * OCI runtime spec (config.json) generation. Image config is untrusted input
 * (rule R1); defaults are explicit and safe (rule R2); the image config is never
 * mutated (rule R3).
 */

export interface ContainerRunSpec {
  id: string;
  /** Kubernetes semantics: command replaces Entrypoint, args replaces Cmd. */
  command?: readonly string[];
  args?: readonly string[];
  env?: readonly EnvEntry[];
  workingDir?: string;
  /** Where the container's namespaces come from: the host's network, or its pod's sandbox. */
  sandbox: SandboxRef;
  rootfs: string;
  /** Resource limits, already parsed to numbers. */
  memoryBytes?: number;
  cpuMillis?: number;
  /** cgroup CPU shares from the request (the kubelet's MilliCPUToShares; runc turns them into cpu.weight on v2). */
  cpuShares?: number;
  /** The kubelet's OOM score for the pod's QoS class. */
  oomScoreAdj?: number;
  pidsLimit?: number;
  annotations?: Record<string, string>;
  /** Pod volumes bind-mounted into the container (sources already resolved and confined). */
  /** `device`: a hostPath of type CharDevice or BlockDevice, bound without nodev (else it could not be opened). */
  mounts?: readonly { destination: string; source: string; readOnly: boolean; device?: boolean }[];
  security?: SecuritySpec;
}

/** The container's securityContext as the reconciler merged it (capabilities as CAP_X, ALL kept). */
export interface SecuritySpec {
  runAsUser?: number;
  runAsGroup?: number;
  runAsNonRoot?: boolean;
  supplementalGroups?: readonly number[];
  readOnlyRootFilesystem?: boolean;
  allowPrivilegeEscalation?: boolean;
  privileged?: boolean;
  capAdd?: readonly string[];
  capDrop?: readonly string[];
  seccomp?: 'RuntimeDefault' | 'Unconfined';
  sysctls?: readonly { name: string; value: string }[];
}

/** Every capability by number (capability.h); ALL is the ones up to the kernel's cap_last_cap. */
const CAPS_BY_NUMBER = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_DAC_READ_SEARCH', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL', 'CAP_SETGID', 'CAP_SETUID',
  'CAP_SETPCAP', 'CAP_LINUX_IMMUTABLE', 'CAP_NET_BIND_SERVICE', 'CAP_NET_BROADCAST', 'CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_IPC_LOCK',
  'CAP_IPC_OWNER', 'CAP_SYS_MODULE', 'CAP_SYS_RAWIO', 'CAP_SYS_CHROOT', 'CAP_SYS_PTRACE', 'CAP_SYS_PACCT', 'CAP_SYS_ADMIN',
  'CAP_SYS_BOOT', 'CAP_SYS_NICE', 'CAP_SYS_RESOURCE', 'CAP_SYS_TIME', 'CAP_SYS_TTY_CONFIG', 'CAP_MKNOD', 'CAP_LEASE',
  'CAP_AUDIT_WRITE', 'CAP_AUDIT_CONTROL', 'CAP_SETFCAP', 'CAP_MAC_OVERRIDE', 'CAP_MAC_ADMIN', 'CAP_SYSLOG', 'CAP_WAKE_ALARM',
  'CAP_BLOCK_SUSPEND', 'CAP_AUDIT_READ', 'CAP_PERFMON', 'CAP_BPF', 'CAP_CHECKPOINT_RESTORE',
];

let allCaps: string[] | undefined;
/**
 * ALL: every capability this process may hand on — its bounding set (/proc/self/status CapBnd),
 * as containerd does for privileged; a cap berth itself lacks would make runc fail.
 */
function allCapabilities(): string[] {
  if (allCaps !== undefined) return allCaps;
  // No /proc: every known one.
  const mask = ownCapabilities('CapBnd') ?? (1n << BigInt(CAPS_BY_NUMBER.length)) - 1n;
  return (allCaps = CAPS_BY_NUMBER.filter((_c, i) => ((mask >> BigInt(i)) & 1n) === 1n));
}

/** One of berth's own capability sets from /proc/self/status, as a bit mask; undefined if unreadable. */
function ownCapabilities(set: 'CapBnd' | 'CapEff'): bigint | undefined {
  try {
    const hex = new RegExp(`^${set}:\\s*([0-9a-f]+)$`, 'm').exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
    return hex === undefined ? undefined : BigInt(`0x${hex}`);
  } catch {
    return undefined;
  }
}

const ID_MAX = 2 ** 32 - 2;

/**
 * An image User checked before any file is read (rule R1): `user[:group]`, each part a number
 * in 0…2^32−2 (CVE-2024-40635) or a name that could be one in /etc/passwd (no '/', ':', NUL or
 * control characters, at most 256 bytes). Names are resolved at start, against the rootfs.
 */
export function checkUserSyntax(user: string | undefined, where: string): void {
  if (user === undefined || user === '') return;
  const parts = user.split(':');
  if (parts.length > 2) throw new BerthError('ERR_INVALID_IMAGE', `${where}: user ${quoteShort(user)} has more than one ':'`);
  for (const p of parts) {
    if (/^\d+$/.test(p)) {
      const n = Number(p);
      if (!Number.isSafeInteger(n) || n > ID_MAX) throw new BerthError('ERR_INVALID_IMAGE', `${where}: user ${quoteShort(user)} is outside 0..${ID_MAX}`);
    } else if (p === '' || Buffer.byteLength(p) > 256 || /[/\x00-\x1f\x7f]/.test(p)) {
      throw new BerthError('ERR_INVALID_IMAGE', `${where}: user ${quoteShort(user)} is not a user or group name (no '/', control characters or empty part; at most 256 bytes)`);
    }
  }
}

/**
 * containerd's WithCapabilities: the default set; add ALL, then drop ALL, then each added name,
 * then each dropped name — so {add: [ALL], drop: [CHOWN]} is all but CHOWN, and a name both added
 * and dropped is dropped (regression cap-add-beats-drop). Privileged: all.
 */
export function effectiveCaps(sec: SecuritySpec | undefined): string[] {
  if (sec?.privileged === true) return allCapabilities();
  let caps = new Set(DEFAULT_CAPS);
  if (sec?.capAdd?.includes('ALL') === true) caps = new Set(allCapabilities());
  if (sec?.capDrop?.includes('ALL') === true) caps = new Set();
  for (const a of sec?.capAdd ?? []) if (a !== 'ALL') caps.add(a);
  for (const d of sec?.capDrop ?? []) caps.delete(d);
  return [...caps];
}

/**
 * The namespaces and files a container gets from its pod. `host`: the host's network and UTS
 * namespaces (hostNetwork: true), private IPC/PID/mount. `pod`: it joins the sandbox's
 * namespaces by path — the pinned netns, and the infra container's IPC and UTS (and PID with
 * shareProcessNamespace) — so containers of one pod share localhost, hostname and IPC.
 * `files` are bind-mounted (/etc/hosts, /etc/resolv.conf, /etc/hostname): the host's read-only; a
 * pod's as the kubelet and containerd mount them — /etc/hosts writable, the other two read-only only
 * with readOnlyRootFilesystem. `hostname` becomes HOSTNAME in the environment, as containerd sets it.
 */
export type SandboxRef =
  | { kind: 'host'; hostname?: string; files: readonly { destination: string; source: string }[] }
  | { kind: 'pod'; hostname?: string; netns: string; ipc: string; uts: string; pid?: string; files: readonly { destination: string; source: string }[] };

/** containerd's default capability set. */
export const DEFAULT_CAPS = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
];

const MASKED_PATHS = [
  '/proc/acpi',
  '/proc/asound',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/proc/scsi',
  '/sys/firmware',
  '/sys/devices/virtual/powercap',
];
const READONLY_PATHS = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

export const DEFAULT_PIDS_LIMIT = 4096;

/** Directories of /dev containerd's HostDevices leaves out (mounts of their own, or not devices). */
const HOST_DEVICE_SKIP = new Set(['pts', 'shm', 'fd', 'mqueue', '.lxc', '.lxd-mounts', '.udev']);

/** Every device node under /dev, as runtime-spec linux.devices entries (major/minor from st_rdev). */
export function hostDevices(root = '/dev'): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  const walk = (dir: string): void => {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return;
    }
    for (const name of names) {
      const p = path.join(dir, name);
      let st;
      try {
        st = lstatSync(p, { bigint: true });
      } catch {
        continue;
      }
      if (st.isDirectory()) {
        if (!HOST_DEVICE_SKIP.has(name)) walk(p);
        continue;
      }
      if (!st.isCharacterDevice() && !st.isBlockDevice()) continue;
      if (p === '/dev/console') continue; // runc sets up the container's own console
      const rdev = st.rdev;
      const major = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
      const minor = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
      out.push({ path: p, type: st.isCharacterDevice() ? 'c' : 'b', major, minor, fileMode: Number(st.mode & 0o777n), uid: Number(st.uid), gid: Number(st.gid) });
    }
  };
  walk(root);
  return out;
}

let swap: boolean | undefined;
/**
 * Whether a swap limit may be set: on v2 always (runc skips a missing memory.swap.max when it
 * disables swap), on v1 when the memory controller accounts swap (memory.memsw.*).
 */
function swapAccounted(): boolean {
  return (swap ??= cgroupV2() || existsSync('/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes'));
}

let v2: boolean | undefined;
/** A unified (cgroup v2) host: /sys/fs/cgroup/cgroup.controllers exists. */
function cgroupV2(): boolean {
  return (v2 ??= existsSync('/sys/fs/cgroup/cgroup.controllers'));
}

let sysResource: boolean | undefined;
/** Whether berth holds CAP_SYS_RESOURCE (raise a hard limit, lower an OOM score); true if unknown. */
function hasSysResource(): boolean {
  if (sysResource !== undefined) return sysResource;
  const eff = ownCapabilities('CapEff');
  return (sysResource = eff === undefined || ((eff >> 24n) & 1n) === 1n);
}

/**
 * The OOM score a container gets: the kubelet's, but never below berth's own when berth may
 * not lower it (no CAP_SYS_RESOURCE: runc would fail), as containerd's restrictOOMScoreAdj.
 */
function effectiveOomScoreAdj(adj: number): number {
  if (hasSysResource()) return adj;
  try {
    const own = Number(readFileSync('/proc/self/oom_score_adj', 'utf8').trim());
    return Number.isInteger(own) ? Math.max(adj, own) : adj;
  } catch {
    return adj;
  }
}

let nofile: number | undefined;
/**
 * RLIMIT_NOFILE for containers: 1048576, or less when the kernel's fs.nr_open is lower or berth
 * may not raise its own hard limit (no CAP_SYS_RESOURCE: runc's prlimit could not either).
 */
function nofileLimit(): number {
  if (nofile !== undefined) return nofile;
  let max = 1_048_576;
  try {
    const n = Number(readFileSync('/proc/sys/fs/nr_open', 'utf8').trim());
    if (Number.isSafeInteger(n) && n > 0) max = Math.min(max, n);
    if (!hasSysResource()) {
      const hard = /^Max open files\s+\S+\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1];
      if (hard !== undefined && /^\d+$/.test(hard)) max = Math.min(max, Number(hard));
    }
  } catch {
    // no /proc: the default
  }
  return (nofile = max);
}

function checkEnv(entry: string, where: string): string {
  const eq = entry.indexOf('=');
  if (eq <= 0 || entry.includes('\0')) throw new BerthError('ERR_INVALID_IMAGE', `${where}: env entry ${JSON.stringify(entry.slice(0, 80))} is not KEY=VALUE`);
  return entry;
}

/** Image Env, then the manifest's env: a later name replaces an earlier one in place. */
function mergeEnv(image: readonly string[], extra: readonly { name: string; value: string }[], where: string, hostname?: string): string[] {
  const order: string[] = [];
  const values = new Map<string, string>();
  const set = (k: string, v: string): void => {
    if (!values.has(k)) order.push(k);
    values.set(k, v);
  };
  // containerd's CRI puts HOSTNAME first; the image's Env and the manifest's may replace it
  // (regression hostname-env-missing).
  if (hostname !== undefined && hostname !== '') set('HOSTNAME', hostname);
  for (const e of image) {
    const s = checkEnv(e, where);
    const eq = s.indexOf('=');
    set(s.slice(0, eq), s.slice(eq + 1));
  }
  for (const e of extra) set(e.name, e.value);
  if (!values.has('PATH')) set('PATH', '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin');
  return order.map((k) => `${k}=${values.get(k) ?? ''}`);
}

export function processArgs(image: ImageConfig, command: readonly string[] | undefined, args: readonly string[] | undefined): string[] {
  return containerArgv({ entrypoint: image.config.Entrypoint, cmd: image.config.Cmd }, command, args);
}

/**
 * Kubernetes variable references: `$(NAME)` becomes the value of NAME when `vars` has it and
 * stays as written when not; `$$` is an escaped `$` (so `$$(NAME)` gives `$(NAME)`).
 */
export function expandRefs(s: string, vars: ReadonlyMap<string, string>): string {
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const ch = s[i];
    if (ch !== '$' || i + 1 >= s.length) {
      out += ch;
      continue;
    }
    const next = s[i + 1];
    if (next === '$') {
      out += '$';
      i++;
    } else if (next === '(') {
      const end = s.indexOf(')', i + 2);
      if (end === -1) {
        // An unclosed reference stays as written and the scan goes on after it (`$$` further on is still unescaped), as the kubelet's expansion does.
        out += '$(';
        i++;
        continue;
      }
      const name = s.slice(i + 2, end);
      const value = vars.get(name);
      out += value ?? `$(${name})`;
      i = end;
    } else {
      out += ch;
    }
  }
  return out;
}

/** One env entry as the reconciler hands it over (reconciler/resolve.ts envSequence). */
export interface EnvEntry {
  name: string;
  value: string;
  /** From a ConfigMap, Secret or field: taken as it is, never expanded. */
  verbatim?: boolean;
  /** Replaced by a later entry of the same name: read by expansions before it, not in the result. */
  overridden?: boolean;
}

/**
 * The manifest's env, literal values expanded in order against what is defined so far (each
 * sees the ones before it, a replaced value until it is replaced), as the kubelet's
 * makeEnvironmentVariables does; values from references are never expanded.
 */
export function expandEnv(env: readonly EnvEntry[]): { name: string; value: string }[] {
  const vars = new Map<string, string>();
  for (const e of env) vars.set(e.name, e.verbatim === true ? e.value : expandRefs(e.value, vars));
  const out: { name: string; value: string }[] = [];
  for (const e of env) if (e.overridden !== true) out.push({ name: e.name, value: vars.get(e.name) ?? e.value });
  return out;
}

/**
 * `mode`: `run` resolves the image user against the mounted rootfs (names through its
 * /etc/passwd and /etc/group, confined); `check` (a spec checked before anything is stopped,
 * no rootfs yet) takes the ids known without files and root for a name.
 */
export function generateSpec(image: ImageConfig, c: ContainerRunSpec, mode: 'run' | 'check' = 'run'): Record<string, unknown> {
  const where = `container ${c.id}`;
  const manifestEnv = expandEnv(c.env ?? []);
  const vars = new Map(manifestEnv.map((e) => [e.name, e.value]));
  const expand = (list: readonly string[] | undefined): string[] | undefined => list?.map((a) => expandRefs(a, vars));
  const argv = processArgs(image, expand(c.command), expand(c.args));
  if (argv.length === 0) throw new BerthError('ERR_INVALID_MANIFEST', `${where}: no command: the image has no Entrypoint/Cmd and the manifest sets none`);
  const cwd = checkWorkingDir(c.workingDir ?? (image.config.WorkingDir !== undefined && image.config.WorkingDir !== '' ? image.config.WorkingDir : '/'), where);
  const sec = c.security;
  const imageUser = image.config.User === undefined || image.config.User === '' ? undefined : image.config.User;
  if (sec?.runAsNonRoot === true) {
    // The kubelet's check, before anything is read: a user it cannot verify is refused.
    if (sec.runAsUser !== undefined) checkRunAsNonRoot(sec.runAsUser, undefined, where);
    else {
      const known = imageUserForPolicy(imageUser);
      checkRunAsNonRoot(known.uid, known.name, where);
    }
  }
  checkUserSyntax(imageUser, where);
  const overrides = { runAsUser: sec?.runAsUser, runAsGroup: sec?.runAsGroup, supplementalGroups: sec?.supplementalGroups, where };
  const user =
    mode === 'run'
      ? resolveUser(c.rootfs, imageUser, overrides)
      : { uid: sec?.runAsUser ?? imageUserForPolicy(imageUser).uid ?? 0, gid: sec?.runAsGroup ?? 0, additionalGids: [sec?.runAsGroup ?? 0] };
  const env = mergeEnv(image.config.Env ?? [], manifestEnv, where, c.sandbox.hostname);
  const privileged = sec?.privileged === true;
  const caps = effectiveCaps(sec);

  const sb = c.sandbox;
  // With the host network the pod also keeps the host's UTS namespace, as the kubelet does.
  const namespaces: { type: string; path?: string }[] =
    sb.kind === 'host'
      ? [{ type: 'pid' }, { type: 'ipc' }, { type: 'mount' }]
      : [
          sb.pid !== undefined ? { type: 'pid', path: sb.pid } : { type: 'pid' },
          { type: 'ipc', path: sb.ipc },
          { type: 'uts', path: sb.uts },
          { type: 'mount' },
          { type: 'network', path: sb.netns },
        ];
  // containerd on a unified (v2) host: a private cgroup namespace unless privileged, so the
  // container's /sys/fs/cgroup is its own cgroup, not the host's tree (regression no-cgroup-namespace).
  if (!privileged && cgroupV2()) namespaces.push({ type: 'cgroup' });

  const mounts: Record<string, unknown>[] = [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'] },
    { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    // Privileged: /sys and the cgroup tree writable, as containerd's WithPrivileged (regression privileged-incomplete).
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', privileged ? 'rw' : 'ro'] },
    { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', privileged ? 'rw' : 'ro'] },
  ];
  // The pod's files and its volumes, as containerd's WithMounts orders them: by the depth of the
  // destination, so /data is mounted before /data/cache and does not hide it (regression
  // mounts-unordered). A volume at /etc/hosts (or the other two) replaces the pod's file. Volumes
  // get only rbind, rprivate and ro/rw, as containerd gives them (no nosuid/nodev: a setuid tool
  // or a device node in a hostPath works as on Kubernetes).
  const binds: { destination: string; source: string; options: string[] }[] = [];
  const volumeDests = new Set((c.mounts ?? []).map((m) => path.posix.normalize(m.destination)));
  const roRoot = sec?.readOnlyRootFilesystem === true;
  for (const f of sb.files) {
    if (volumeDests.has(f.destination)) continue;
    const ro = sb.kind === 'host' || (f.destination !== '/etc/hosts' && roRoot);
    binds.push({ destination: f.destination, source: f.source, options: ['rbind', 'rprivate', ro ? 'ro' : 'rw', 'nosuid', 'nodev', 'noexec'] });
  }
  for (const m of c.mounts ?? []) {
    binds.push({ destination: m.destination, source: m.source, options: ['rbind', 'rprivate', m.readOnly ? 'ro' : 'rw'] });
  }
  const depth = (d: string): number => path.posix.normalize(d).split('/').filter((x) => x !== '').length;
  binds.sort((a, b) => depth(a.destination) - depth(b.destination));
  for (const b of binds) mounts.push({ destination: b.destination, type: 'bind', source: b.source, options: b.options });

  const resources: Record<string, unknown> = {
    devices: [{ allow: privileged, access: 'rwm' }],
    pids: { limit: c.pidsLimit ?? DEFAULT_PIDS_LIMIT },
  };
  // Swap equal to the limit: no swap beyond it, as containerd's WithResources sets (regression
  // requests-ignored) — where the host accounts swap at all (runc fails on a missing file).
  if (c.memoryBytes !== undefined) resources['memory'] = { limit: c.memoryBytes, ...(swapAccounted() ? { swap: c.memoryBytes } : {}) };
  const cpu: Record<string, number> = {};
  if (c.cpuShares !== undefined) cpu['shares'] = c.cpuShares;
  if (c.cpuMillis !== undefined) {
    const period = 100_000;
    cpu['quota'] = Math.max(1000, Math.round((c.cpuMillis * period) / 1000));
    cpu['period'] = period;
  }
  if (Object.keys(cpu).length > 0) resources['cpu'] = cpu;

  const spec: Record<string, unknown> = {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: user.uid, gid: user.gid, additionalGids: [...user.additionalGids] },
      args: argv,
      env,
      cwd,
      capabilities: {
        bounding: [...caps],
        effective: [...caps],
        permitted: [...caps],
        inheritable: [],
        ambient: [],
      },
      // What containerd's unit gives every Kubernetes container (LimitNOFILE=infinity, which is
      // nr_open): 1024 broke databases and search engines that check for 65536 (regression nofile-1024).
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: nofileLimit(), soft: nofileLimit() }],
      // Safer than Kubernetes' default: no-new-privileges unless allowPrivilegeEscalation says otherwise.
      noNewPrivileges: !privileged && sec?.allowPrivilegeEscalation !== true,
      ...(c.oomScoreAdj !== undefined ? { oomScoreAdj: effectiveOomScoreAdj(c.oomScoreAdj) } : {}),
    },
    root: { path: c.rootfs, readonly: sec?.readOnlyRootFilesystem === true },
    mounts,
    annotations: { ...(c.annotations ?? {}) },
    linux: {
      cgroupsPath: `/berth/${c.id}`,
      resources,
      namespaces,
      // Privileged: the host's devices, as containerd's WithHostDevices adds them.
      ...(privileged ? { devices: hostDevices() } : {}),
      maskedPaths: privileged ? [] : [...MASKED_PATHS],
      readonlyPaths: privileged ? [] : [...READONLY_PATHS],
      ...(sec?.sysctls !== undefined && sec.sysctls.length > 0 ? { sysctl: Object.fromEntries(sec.sysctls.map((x) => [x.name, x.value])) } : {}),
      // RuntimeDefault unless asked otherwise (or privileged), built for the capabilities it runs with.
      ...(!privileged && sec?.seccomp !== 'Unconfined' ? { seccomp: runtimeDefaultSeccomp(caps) } : {}),
    },
  };
  return spec;
}

export interface SandboxRunSpec {
  id: string;
  /** An empty directory: the infra container's read-only root. */
  rootfs: string;
  /** The pinned network namespace it joins. */
  netns: string;
  hostname: string;
  /** The catatonit binary, bind-mounted read-only at /catatonit. */
  catatonit: string;
  annotations?: Record<string, string>;
}

/**
 * The infra ("pause") container of a pod sandbox: catatonit as PID 1 in pause mode, holding
 * the pod's IPC, UTS and PID namespaces and sitting in its pinned netns. No capabilities, no
 * new privileges, a read-only empty root, 16 pids: it runs nothing but waits.
 */
export function generateSandboxSpec(s: SandboxRunSpec): Record<string, unknown> {
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: ['/catatonit', '-P'],
      env: ['PATH=/'],
      cwd: '/',
      capabilities: { bounding: [], effective: [], permitted: [], inheritable: [], ambient: [] },
      // What containerd's unit gives every Kubernetes container (LimitNOFILE=infinity, which is
      // nr_open): 1024 broke databases and search engines that check for 65536 (regression nofile-1024).
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: nofileLimit(), soft: nofileLimit() }],
      noNewPrivileges: true,
    },
    root: { path: s.rootfs, readonly: true },
    hostname: s.hostname,
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=64k'] },
      { destination: '/catatonit', type: 'bind', source: s.catatonit, options: ['rbind', 'ro', 'nosuid', 'nodev'] },
    ],
    annotations: { ...(s.annotations ?? {}) },
    linux: {
      cgroupsPath: `/berth/${s.id}`,
      resources: { devices: [{ allow: false, access: 'rwm' }], pids: { limit: 16 } },
      namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network', path: s.netns }],
      maskedPaths: [...MASKED_PATHS],
      readonlyPaths: [...READONLY_PATHS],
      seccomp: runtimeDefaultSeccomp([]),
    },
  };
}

/** Stop signals an image may ask for (rule R1); anything else falls back to SIGTERM. */
const STOP_SIGNALS = new Set(['SIGTERM', 'SIGINT', 'SIGQUIT', 'SIGHUP', 'SIGUSR1', 'SIGUSR2', 'SIGWINCH', 'SIGPWR']);

export function stopSignal(image: ImageConfig | undefined): string {
  const raw = image?.config.StopSignal?.trim().toUpperCase();
  if (raw === undefined || raw === '') return 'SIGTERM';
  const name = raw.startsWith('SIG') ? raw : `SIG${raw}`;
  return STOP_SIGNALS.has(name) ? name : 'SIGTERM';
}

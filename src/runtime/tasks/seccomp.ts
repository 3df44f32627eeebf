import { closeSync, constants as fsc, fstatSync, openSync, readSync } from 'node:fs';
import * as os from 'node:os';
import { BerthError, errnoCode, messageOf } from '../../lib/errors.js';
import { x32Served } from '../../lib/sys.js';

/**
 * The RuntimeDefault seccomp profile (rule R2): the distribution's default profile, in the
 * moby/containers format, translated into an OCI runtime-spec `linux.seccomp` for one host
 * architecture and one container's capability set.
 *
 * Source format (what /usr/share/containers/seccomp.json holds): `defaultAction`,
 * `defaultErrnoRet` (or the name `defaultErrno`), `archMap` [{architecture, subArchitectures}],
 * `syscalls` [{names | name, action, errnoRet | errno, args, comment, includes, excludes}] where
 * `includes` = {caps, arches, minKernel} and `excludes` = {caps, arches}.
 *
 * Translation, as moby's and containers/common's setupSeccomp do it:
 * - architectures: the host's SCMP arch plus its sub-arches from `archMap` (so 32-bit entry points
 *   of an x86_64 kernel are filtered by the same rules, not left to the default action), less x32
 *   when the kernel does not run x32 calls: libseccomp then sends such a call to the bad-arch action
 *   instead of through the rules, where the kernel would have answered ENOSYS anyway. That one arch
 *   is ~12 ms of runc init's CPU per container start (libseccomp compiling the rules a third time);
 * - a rule is dropped when `includes.caps` are not all held, when `excludes.caps` meets the caps,
 *   when `includes.arches` is set and lacks the host arch, when `excludes.arches` has it, or when
 *   the running kernel is older than `includes.minKernel`;
 * - arches in includes/excludes are Go architecture names (`amd64`, `arm64`, `ppc64le`…).
 *
 * Strictness: an unknown key inside `includes`/`excludes` makes the profile malformed, since
 * ignoring a filter would apply a rule the profile meant to be conditional. An argument value that
 * JSON numbers cannot hold exactly (above 2^53) is malformed too, rather than silently rounded.
 */

export const DEFAULT_SECCOMP_PROFILE = '/usr/share/containers/seccomp.json';
/** The Debian package that installs DEFAULT_SECCOMP_PROFILE. */
export const SECCOMP_PROFILE_PACKAGE = 'golang-github-containers-common';
/** The distribution's file is ~20 KiB; anything near this is not a seccomp profile. */
export const MAX_SECCOMP_PROFILE_BYTES = 4 * 1024 * 1024;

/** A host architecture: Node's `process.arch` names, plus `ppc64le` (Node says `ppc64` for both endians). */
export type SeccompHostArch = 'x64' | 'ia32' | 'arm64' | 'arm' | 'ppc64' | 'ppc64le' | 'ppc' | 's390x' | 's390' | 'mips' | 'mipsel' | 'riscv64' | 'loong64';

export interface SeccompOptions {
  /** Default DEFAULT_SECCOMP_PROFILE. */
  profilePath?: string;
  /** Default: the running host's (`process.arch`, with `os.endianness()` for ppc64). */
  arch?: SeccompHostArch;
  /** A kernel release such as `6.1.0-18-amd64`; default `os.release()`. */
  kernel?: string;
  /**
   * Whether the kernel runs x32-ABI calls; false leaves SCMP_ARCH_X32 out. Default: asked of the
   * running kernel once per process (lib/sys x32Served), and true when it cannot tell.
   */
  x32?: boolean;
}

/** Node arch → the names profiles use for it in includes/excludes.arches (Go's GOARCH) and libseccomp's. */
const ARCHES: Readonly<Record<SeccompHostArch, { profile: readonly string[]; scmp: string }>> = {
  x64: { profile: ['amd64'], scmp: 'SCMP_ARCH_X86_64' },
  // Go calls it 386; the containers profile writes x86 (modify_ldt): accept both.
  ia32: { profile: ['386', 'x86'], scmp: 'SCMP_ARCH_X86' },
  arm64: { profile: ['arm64'], scmp: 'SCMP_ARCH_AARCH64' },
  arm: { profile: ['arm'], scmp: 'SCMP_ARCH_ARM' },
  ppc64: { profile: ['ppc64'], scmp: 'SCMP_ARCH_PPC64' },
  ppc64le: { profile: ['ppc64le'], scmp: 'SCMP_ARCH_PPC64LE' },
  ppc: { profile: ['ppc'], scmp: 'SCMP_ARCH_PPC' },
  s390x: { profile: ['s390x'], scmp: 'SCMP_ARCH_S390X' },
  s390: { profile: ['s390'], scmp: 'SCMP_ARCH_S390' },
  mips: { profile: ['mips'], scmp: 'SCMP_ARCH_MIPS' },
  mipsel: { profile: ['mipsle', 'mipsel'], scmp: 'SCMP_ARCH_MIPSEL' },
  riscv64: { profile: ['riscv64'], scmp: 'SCMP_ARCH_RISCV64' },
  loong64: { profile: ['loong64'], scmp: 'SCMP_ARCH_LOONGARCH64' },
};

/** runtime-spec SeccompAction and SeccompOperators (defs-linux.json). */
const ACTIONS = new Set(['SCMP_ACT_KILL', 'SCMP_ACT_KILL_PROCESS', 'SCMP_ACT_KILL_THREAD', 'SCMP_ACT_TRAP', 'SCMP_ACT_ERRNO', 'SCMP_ACT_TRACE', 'SCMP_ACT_ALLOW', 'SCMP_ACT_LOG', 'SCMP_ACT_NOTIFY']);
const OPERATORS = new Set(['SCMP_CMP_NE', 'SCMP_CMP_LT', 'SCMP_CMP_LE', 'SCMP_CMP_EQ', 'SCMP_CMP_GE', 'SCMP_CMP_GT', 'SCMP_CMP_MASKED_EQ']);
const FLAGS = new Set(['SECCOMP_FILTER_FLAG_TSYNC', 'SECCOMP_FILTER_FLAG_LOG', 'SECCOMP_FILTER_FLAG_SPEC_ALLOW', 'SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV']);
const UINT32_MAX = 2 ** 32 - 1;

interface SyscallArg {
  index: number;
  value: number;
  valueTwo?: number;
  op: string;
}

interface Rule {
  names: readonly string[];
  action: string;
  errnoRet?: number;
  args: readonly SyscallArg[];
  includeCaps: readonly string[];
  includeArches: readonly string[];
  minKernel?: readonly [number, number];
  excludeCaps: readonly string[];
  excludeArches: readonly string[];
}

/** A parsed, checked profile. Cached per path and never handed out: each call builds fresh objects (R3). */
interface Profile {
  defaultAction: string;
  defaultErrnoRet?: number;
  archMap: ReadonlyMap<string, readonly string[]>;
  /** The older format's flat list, used only when there is no archMap. */
  architectures?: readonly string[];
  flags?: readonly string[];
  rules: readonly Rule[];
}

const cache = new Map<string, Profile>();

/**
 * The RuntimeDefault profile as an OCI `linux.seccomp` object for a container whose capability
 * set is `caps` (the effective set; `CAP_` prefix optional, any case). The profile file is read
 * and parsed once per path and process; a failed read is not cached, so installing the package
 * later is picked up. Throws ERR_PRECONDITION naming the file and the Debian package when the
 * file is missing, unreadable or malformed; ERR_UNSUPPORTED for a host architecture it has no
 * mapping for.
 */
export function runtimeDefaultSeccomp(caps: readonly string[], opts: SeccompOptions = {}): Record<string, unknown> {
  const file = opts.profilePath ?? DEFAULT_SECCOMP_PROFILE;
  let profile = cache.get(file);
  if (profile === undefined) {
    profile = parseProfile(readProfile(file), file);
    cache.set(file, profile);
  }
  const archName = opts.arch ?? hostArch();
  const arch = ARCHES[archName] as (typeof ARCHES)[SeccompHostArch] | undefined;
  if (arch === undefined) throw new BerthError('ERR_UNSUPPORTED', `seccomp profile: no seccomp architecture known for host arch ${JSON.stringify(archName)}`);
  const kernel = parseKernel(opts.kernel ?? os.release());
  const held = new Set(caps.map(normalizeCap));

  const listed = profile.archMap.size > 0 ? [arch.scmp, ...(profile.archMap.get(arch.scmp) ?? [])] : [...(profile.architectures ?? [arch.scmp])];
  const x32 = opts.x32 ?? hostServesX32();
  const architectures = listed.filter((a) => x32 || a !== 'SCMP_ARCH_X32');
  const syscalls: Record<string, unknown>[] = [];
  for (const r of profile.rules) {
    if (!r.includeCaps.every((c) => held.has(c))) continue;
    if (r.excludeCaps.some((c) => held.has(c))) continue;
    if (r.includeArches.length > 0 && !r.includeArches.some((a) => arch.profile.includes(a))) continue;
    if (r.excludeArches.some((a) => arch.profile.includes(a))) continue;
    if (r.minKernel !== undefined && (kernel === undefined || compareKernel(kernel, r.minKernel) < 0)) continue;
    const out: Record<string, unknown> = { names: [...r.names], action: r.action };
    if (r.errnoRet !== undefined) out['errnoRet'] = r.errnoRet;
    if (r.args.length > 0) out['args'] = r.args.map((a) => ({ ...a }));
    syscalls.push(out);
  }
  const seccomp: Record<string, unknown> = { defaultAction: profile.defaultAction };
  if (profile.defaultErrnoRet !== undefined) seccomp['defaultErrnoRet'] = profile.defaultErrnoRet;
  seccomp['architectures'] = [...new Set(architectures)];
  if (profile.flags !== undefined && profile.flags.length > 0) seccomp['flags'] = [...profile.flags];
  seccomp['syscalls'] = syscalls;
  return seccomp;
}

let x32Answer: boolean | undefined;

/** The running kernel's answer, asked once; true (the profile as written) when it cannot be told. */
function hostServesX32(): boolean {
  if (x32Answer === undefined) {
    try {
      x32Answer = x32Served() ?? true;
    } catch {
      x32Answer = true; // no addon on this host: keep the profile as written
    }
  }
  return x32Answer;
}

function hostArch(): SeccompHostArch {
  const a = process.arch;
  if (a === 'ppc64' && os.endianness() === 'LE') return 'ppc64le';
  return a as SeccompHostArch;
}

function normalizeCap(c: string): string {
  const u = c.toUpperCase();
  return u.startsWith('CAP_') ? u : `CAP_${u}`;
}

/** `major.minor` of a kernel release (`6.1.0-18-amd64` → [6, 1]); undefined when it has none. */
function parseKernel(release: string): [number, number] | undefined {
  const m = /^(\d+)\.(\d+)/.exec(release);
  return m === null ? undefined : [Number(m[1]), Number(m[2])];
}

function compareKernel(a: readonly [number, number], b: readonly [number, number]): number {
  return a[0] !== b[0] ? a[0] - b[0] : a[1] - b[1];
}

function precondition(file: string, reason: string, cause?: unknown): BerthError {
  return new BerthError(
    'ERR_PRECONDITION',
    `seccomp profile ${file}: ${reason}; it comes with the Debian package ${SECCOMP_PROFILE_PACKAGE} (apt-get install ${SECCOMP_PROFILE_PACKAGE}, or run scripts/host-deps.sh)`,
    { details: { path: file, package: SECCOMP_PROFILE_PACKAGE }, ...(cause !== undefined ? { cause } : {}) },
  );
}

/** Synchronous like the rest of spec generation: one small host file, read once per process. */
function readProfile(file: string): string {
  let fd: number;
  try {
    fd = openSync(file, fsc.O_RDONLY | fsc.O_NONBLOCK);
  } catch (err) {
    throw precondition(file, errnoCode(err) === 'ENOENT' ? 'missing' : `cannot open: ${messageOf(err)}`, err);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw precondition(file, 'not a regular file');
    if (st.size > MAX_SECCOMP_PROFILE_BYTES) throw precondition(file, `${st.size} bytes, more than the ${MAX_SECCOMP_PROFILE_BYTES} a profile may have`);
    const buf = Buffer.alloc(Math.min(st.size + 1, MAX_SECCOMP_PROFILE_BYTES + 1));
    let n = 0;
    while (n < buf.length) {
      const got = readSync(fd, buf, n, buf.length - n, null);
      if (got === 0) break;
      n += got;
    }
    if (n > MAX_SECCOMP_PROFILE_BYTES) throw precondition(file, `more than the ${MAX_SECCOMP_PROFILE_BYTES} bytes a profile may have`);
    return buf.subarray(0, n).toString('utf8');
  } catch (err) {
    if (err instanceof BerthError) throw err;
    throw precondition(file, `cannot read: ${messageOf(err)}`, err);
  } finally {
    closeSync(fd);
  }
}

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const isUint = (v: unknown, max: number): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= max;

function parseProfile(text: string, file: string): Profile {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw precondition(file, `malformed: not JSON (${messageOf(err)})`, err);
  }
  const bad = (where: string, what: string): BerthError => precondition(file, `malformed: ${where}: ${what}`);
  if (!isObj(doc)) throw bad('/', 'not an object');

  const action = (v: unknown, where: string): string => {
    if (typeof v !== 'string' || !ACTIONS.has(v)) throw bad(where, `${JSON.stringify(v)} is not a seccomp action`);
    return v;
  };
  /** errnoRet wins over the errno name when both are given, as upstream does. */
  const errno = (ret: unknown, name: unknown, where: string): number | undefined => {
    if (ret !== undefined && ret !== null) {
      if (!isUint(ret, UINT32_MAX)) throw bad(where, `errnoRet ${JSON.stringify(ret)} is not a uint32`);
      return ret;
    }
    if (name === undefined || name === null || name === '') return undefined;
    const n = typeof name === 'string' ? (os.constants.errno as Record<string, number | undefined>)[name] : undefined;
    if (n === undefined) throw bad(where, `errno ${JSON.stringify(name)} is not a known errno name`);
    return n;
  };
  const strings = (v: unknown, where: string): string[] => {
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v) || !v.every((s) => typeof s === 'string' && s !== '')) throw bad(where, 'not a list of names');
    return v as string[];
  };
  const filter = (v: unknown, where: string, keys: readonly string[]): Obj => {
    if (v === undefined || v === null) return {};
    if (!isObj(v)) throw bad(where, 'not an object');
    const extra = Object.keys(v).filter((k) => !keys.includes(k));
    if (extra.length > 0) throw bad(where, `unknown key ${JSON.stringify(extra[0])} (a filter berth does not know would be ignored)`);
    return v;
  };

  const defaultAction = action(doc['defaultAction'], '/defaultAction');
  const defaultErrnoRet = errno(doc['defaultErrnoRet'], doc['defaultErrno'], '/defaultErrnoRet');

  const archMap = new Map<string, readonly string[]>();
  const scmpArch = (v: unknown, where: string): string => {
    if (typeof v !== 'string' || !/^SCMP_ARCH_[A-Z0-9_]+$/.test(v)) throw bad(where, `${JSON.stringify(v)} is not a seccomp architecture`);
    return v;
  };
  const rawMap = doc['archMap'];
  if (rawMap !== undefined && rawMap !== null) {
    if (!Array.isArray(rawMap)) throw bad('/archMap', 'not a list');
    rawMap.forEach((e: unknown, i) => {
      if (!isObj(e)) throw bad(`/archMap/${i}`, 'not an object');
      const main = scmpArch(e['architecture'], `/archMap/${i}/architecture`);
      const subs = strings(e['subArchitectures'], `/archMap/${i}/subArchitectures`).map((s, j) => scmpArch(s, `/archMap/${i}/subArchitectures/${j}`));
      archMap.set(main, subs);
    });
  }
  let architectures: string[] | undefined;
  if (doc['architectures'] !== undefined && doc['architectures'] !== null) {
    architectures = strings(doc['architectures'], '/architectures').map((a, i) => scmpArch(a, `/architectures/${i}`));
  }
  let flags: string[] | undefined;
  if (doc['flags'] !== undefined && doc['flags'] !== null) {
    flags = strings(doc['flags'], '/flags');
    const unknown = flags.find((f) => !FLAGS.has(f));
    if (unknown !== undefined) throw bad('/flags', `${JSON.stringify(unknown)} is not a seccomp filter flag`);
  }

  const rawCalls = doc['syscalls'];
  if (!Array.isArray(rawCalls)) throw bad('/syscalls', 'not a list');
  const rules = rawCalls.map((s: unknown, i): Rule => {
    const at = `/syscalls/${i}`;
    if (!isObj(s)) throw bad(at, 'not an object');
    const names = strings(s['names'], `${at}/names`);
    if (typeof s['name'] === 'string' && s['name'] !== '') names.push(s['name']);
    if (names.length === 0) throw bad(at, 'no syscall names');
    const rawArgs = s['args'];
    if (rawArgs !== undefined && rawArgs !== null && !Array.isArray(rawArgs)) throw bad(`${at}/args`, 'not a list');
    const args = ((rawArgs ?? []) as unknown[]).map((a, j): SyscallArg => {
      const aw = `${at}/args/${j}`;
      if (!isObj(a)) throw bad(aw, 'not an object');
      if (!isUint(a['index'], 5)) throw bad(`${aw}/index`, 'not a syscall argument index (0..5)');
      if (!isUint(a['value'], Number.MAX_SAFE_INTEGER)) throw bad(`${aw}/value`, 'not an unsigned integer JSON numbers hold exactly');
      const two = a['valueTwo'];
      if (two !== undefined && !isUint(two, Number.MAX_SAFE_INTEGER)) throw bad(`${aw}/valueTwo`, 'not an unsigned integer JSON numbers hold exactly');
      if (typeof a['op'] !== 'string' || !OPERATORS.has(a['op'])) throw bad(`${aw}/op`, `${JSON.stringify(a['op'])} is not a seccomp operator`);
      return { index: a['index'], value: a['value'], ...(two !== undefined && two !== 0 ? { valueTwo: two } : {}), op: a['op'] };
    });
    const inc = filter(s['includes'], `${at}/includes`, ['caps', 'arches', 'minKernel']);
    const exc = filter(s['excludes'], `${at}/excludes`, ['caps', 'arches']);
    let minKernel: [number, number] | undefined;
    if (inc['minKernel'] !== undefined && inc['minKernel'] !== null && inc['minKernel'] !== '') {
      const mk = inc['minKernel'];
      minKernel = typeof mk === 'string' && /^\d+\.\d+$/.test(mk) ? parseKernel(mk) : undefined;
      if (minKernel === undefined) throw bad(`${at}/includes/minKernel`, `${JSON.stringify(mk)} is not a kernel version major.minor`);
    }
    const errnoRet = errno(s['errnoRet'], s['errno'], at);
    return {
      names,
      action: action(s['action'], `${at}/action`),
      ...(errnoRet !== undefined ? { errnoRet } : {}),
      args,
      includeCaps: strings(inc['caps'], `${at}/includes/caps`).map(normalizeCap),
      includeArches: strings(inc['arches'], `${at}/includes/arches`),
      ...(minKernel !== undefined ? { minKernel } : {}),
      excludeCaps: strings(exc['caps'], `${at}/excludes/caps`).map(normalizeCap),
      excludeArches: strings(exc['arches'], `${at}/excludes/arches`),
    };
  });

  return {
    defaultAction,
    ...(defaultErrnoRet !== undefined ? { defaultErrnoRet } : {}),
    archMap,
    ...(architectures !== undefined ? { architectures } : {}),
    ...(flags !== undefined ? { flags } : {}),
    rules,
  };
}

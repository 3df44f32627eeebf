import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DEFAULT_SECCOMP_PROFILE, runtimeDefaultSeccomp, SECCOMP_PROFILE_PACKAGE, type SeccompOptions } from '../../src/runtime/tasks/seccomp.js';
import { DEFAULT_CAPS, generateSpec } from '../../src/runtime/tasks/spec.js';
import { isBerthError } from '../../src/lib/errors.js';
import { validateRuntimeConfig } from '../helpers/oci-schemas.js';

/** Issue 13 (Security): the RuntimeDefault seccomp profile, translated from the distribution's file. */

interface OutRule {
  names: string[];
  action: string;
  errnoRet?: number;
  args?: { index: number; value: number; valueTwo?: number; op: string }[];
}
interface Out {
  defaultAction: string;
  defaultErrnoRet?: number;
  architectures: string[];
  flags?: string[];
  syscalls: OutRule[];
}

const seccomp = (caps: readonly string[], opts?: SeccompOptions): Out => runtimeDefaultSeccomp(caps, opts) as unknown as Out;

/** The rules that mention `name`, in order. */
const rulesFor = (s: Out, name: string): OutRule[] => s.syscalls.filter((r) => r.names.includes(name));

/** A whole config.json as spec.ts generates it, with `linux.seccomp` set: what runc will be handed. */
function configWith(sec: Record<string, unknown>): Record<string, unknown> {
  const spec = generateSpec(
    { architecture: 'amd64', os: 'linux', config: { Env: ['PATH=/'], Cmd: ['/helper'] }, rootfs: { type: 'layers', diff_ids: [] } },
    { id: 'seccomp-unit', sandbox: { kind: 'host', files: [] }, rootfs: '/tmp/rootfs' },
    'check',
  );
  (spec['linux'] as Record<string, unknown>)['seccomp'] = sec;
  return spec;
}

let tmp: string | undefined;
let n = 0;
/** A fresh profile file per call: the module caches by path, so each test gets its own. */
function profileFile(doc: unknown): string {
  tmp ??= mkdtempSync(path.join(os.tmpdir(), 'berth-seccomp-unit-'));
  const file = path.join(tmp, `profile-${++n}.json`);
  writeFileSync(file, typeof doc === 'string' ? doc : JSON.stringify(doc));
  return file;
}

after(() => {
  if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true });
});

const X64 = { arch: 'x64', kernel: '6.1.0-18-amd64', x32: true } as const;

describe('issue-13 seccomp: the distribution profile', () => {
  test('the profile file is installed (Debian golang-github-containers-common)', () => {
    assert.ok(existsSync(DEFAULT_SECCOMP_PROFILE), `${DEFAULT_SECCOMP_PROFILE} missing: apt-get install ${SECCOMP_PROFILE_PACKAGE}`);
  });

  test('x86_64 with the default capabilities: arches from archMap, cap-gated rules resolved, validates', () => {
    const s = seccomp(DEFAULT_CAPS, X64);
    assert.equal(s.defaultAction, 'SCMP_ACT_ERRNO');
    assert.equal(s.defaultErrnoRet, 38, 'unlisted syscalls fail with ENOSYS, so programs fall back as on an old kernel');
    assert.deepEqual(s.architectures, ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32']);
    // Refused outright, with EPERM, whatever the caps.
    const vmsplice = rulesFor(s, 'vmsplice');
    assert.deepEqual(vmsplice.map((r) => [r.action, r.errnoRet]), [['SCMP_ACT_ERRNO', 1]]);
    // CAP_SYS_CHROOT is in the default set: the allow rule stays, the refusal for containers without it goes.
    assert.deepEqual(rulesFor(s, 'chroot').map((r) => r.action), ['SCMP_ACT_ALLOW']);
    // CAP_SYS_ADMIN is not: bpf is refused with EPERM.
    assert.deepEqual(rulesFor(s, 'bpf').map((r) => [r.action, r.errnoRet]), [['SCMP_ACT_ERRNO', 1]]);
    // Arch-specific rules: x86 only, never s390 or arm.
    assert.equal(rulesFor(s, 'arch_prctl').length, 1);
    assert.equal(rulesFor(s, 'modify_ldt').length, 1);
    assert.equal(rulesFor(s, 's390_runtime_instr').length, 0);
    assert.equal(rulesFor(s, 'arm_fadvise64_64').length, 0);
    // Argument filters survive: personality is allowed for a few personas only.
    const persona = rulesFor(s, 'personality');
    assert.ok(persona.length >= 2 && persona.every((r) => r.args !== undefined && r.args.length === 1 && r.args[0]?.op === 'SCMP_CMP_EQ'));
    assert.ok(persona.some((r) => r.args?.[0]?.value === 0xffffffff), 'the query persona 0xffffffff is allowed');
    for (const r of s.syscalls) assert.ok(r.names.length > 0);
    validateRuntimeConfig(configWith(s as unknown as Record<string, unknown>));
  });

  test('caps change the rules: CAP_SYS_ADMIN allows bpf, dropping CAP_SYS_CHROOT refuses chroot', () => {
    const admin = seccomp([...DEFAULT_CAPS, 'CAP_SYS_ADMIN'], X64);
    assert.deepEqual(rulesFor(admin, 'bpf').map((r) => r.action), ['SCMP_ACT_ALLOW']);
    const noChroot = seccomp(DEFAULT_CAPS.filter((c) => c !== 'CAP_SYS_CHROOT'), X64);
    assert.deepEqual(rulesFor(noChroot, 'chroot').map((r) => [r.action, r.errnoRet]), [['SCMP_ACT_ERRNO', 1]]);
    // Kubernetes writes capabilities without the prefix and any case goes: same result.
    assert.deepEqual(seccomp([...DEFAULT_CAPS, 'sys_admin'], X64), admin);
    validateRuntimeConfig(configWith(admin as unknown as Record<string, unknown>));
    validateRuntimeConfig(configWith(noChroot as unknown as Record<string, unknown>));
  });

  test('no capabilities at all (the sandbox container): every cap-gated syscall is refused, still validates', () => {
    const s = seccomp([], X64);
    for (const name of ['chroot', 'bpf', 'acct', 'settimeofday']) {
      assert.deepEqual(rulesFor(s, name).map((r) => r.action), ['SCMP_ACT_ERRNO'], name);
    }
    validateRuntimeConfig(configWith(s as unknown as Record<string, unknown>));
  });

  test('arm64: its own arches and rules, none of x86', () => {
    const s = seccomp(DEFAULT_CAPS, { arch: 'arm64', kernel: '6.1.0', x32: false });
    assert.deepEqual(s.architectures, ['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM']);
    assert.equal(rulesFor(s, 'arm_fadvise64_64').length, 1);
    assert.equal(rulesFor(s, 'arch_prctl').length, 0);
    assert.equal(rulesFor(s, 'modify_ldt').length, 0);
    validateRuntimeConfig(configWith(s as unknown as Record<string, unknown>));
  });

  test('a kernel that does not run x32 calls: SCMP_ARCH_X32 left out, the rules and the other arches as before', () => {
    const withX32 = seccomp(DEFAULT_CAPS, X64);
    const without = seccomp(DEFAULT_CAPS, { ...X64, x32: false });
    assert.deepEqual(without.architectures, ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86']);
    assert.deepEqual(without.syscalls, withX32.syscalls);
    validateRuntimeConfig(configWith(without as unknown as Record<string, unknown>));
    // The older flat `architectures` list is filtered the same way.
    const file = profileFile({ defaultAction: 'SCMP_ACT_ERRNO', architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X32', 'SCMP_ARCH_X86'], syscalls: [] });
    assert.deepEqual(seccomp([], { ...X64, x32: false, profilePath: file }).architectures, ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86']);
    assert.deepEqual(seccomp([], { ...X64, profilePath: file }).architectures, ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X32', 'SCMP_ARCH_X86']);
  });

  test('the default arch and kernel are the running host', () => {
    if (process.arch !== 'x64') return;
    assert.deepEqual(seccomp(DEFAULT_CAPS), seccomp(DEFAULT_CAPS, { arch: 'x64', kernel: os.release() }));
  });
});

/** Rules over a synthetic profile, so each translation rule is pinned on its own. */
const BASE = {
  defaultAction: 'SCMP_ACT_ERRNO',
  defaultErrnoRet: 38,
  archMap: [
    { architecture: 'SCMP_ARCH_X86_64', subArchitectures: ['SCMP_ARCH_X86', 'SCMP_ARCH_X32'] },
    { architecture: 'SCMP_ARCH_AARCH64', subArchitectures: ['SCMP_ARCH_ARM'] },
  ],
};
const rule = (names: string[], extra: Record<string, unknown> = {}): Record<string, unknown> => ({ names, action: 'SCMP_ACT_ALLOW', args: [], comment: '', includes: {}, excludes: {}, ...extra });
const kept = (s: Out): string[] => s.syscalls.flatMap((r) => r.names);

describe('issue-13 seccomp: translation rules', () => {
  test('includes.caps: all must be held', () => {
    const file = profileFile({ ...BASE, syscalls: [rule(['both'], { includes: { caps: ['CAP_SYS_ADMIN', 'CAP_NET_ADMIN'] } }), rule(['one'], { includes: { caps: ['CAP_NET_ADMIN'] } })] });
    assert.deepEqual(kept(seccomp(['CAP_NET_ADMIN'], { ...X64, profilePath: file })), ['one']);
    assert.deepEqual(kept(seccomp(['CAP_NET_ADMIN', 'CAP_SYS_ADMIN'], { ...X64, profilePath: file })), ['both', 'one']);
    assert.deepEqual(kept(seccomp([], { ...X64, profilePath: file })), []);
  });

  test('excludes.caps: any one held drops the rule', () => {
    const file = profileFile({ ...BASE, syscalls: [rule(['refuse'], { action: 'SCMP_ACT_ERRNO', errnoRet: 1, excludes: { caps: ['CAP_SYS_ADMIN', 'CAP_BPF'] } })] });
    assert.deepEqual(kept(seccomp([], { ...X64, profilePath: file })), ['refuse']);
    assert.deepEqual(kept(seccomp(['CAP_BPF'], { ...X64, profilePath: file })), []);
    assert.deepEqual(kept(seccomp(['cap_sys_admin'], { ...X64, profilePath: file })), []);
  });

  test('includes.arches and excludes.arches filter by the Go name of the host arch', () => {
    const file = profileFile({
      ...BASE,
      syscalls: [rule(['x86only'], { includes: { arches: ['amd64', 'x32'] } }), rule(['notarm'], { excludes: { arches: ['arm64'] } }), rule(['everywhere'])],
    });
    assert.deepEqual(kept(seccomp([], { ...X64, profilePath: file })), ['x86only', 'notarm', 'everywhere']);
    assert.deepEqual(kept(seccomp([], { arch: 'arm64', kernel: '6.1', profilePath: file })), ['everywhere']);
    // An arch absent from archMap filters on its own SCMP arch only.
    const s390 = seccomp([], { arch: 's390x', kernel: '6.1', profilePath: file });
    assert.deepEqual(s390.architectures, ['SCMP_ARCH_S390X']);
    assert.deepEqual(kept(s390), ['notarm', 'everywhere']);
  });

  test('includes.minKernel is compared with the running kernel (major.minor)', () => {
    const file = profileFile({ ...BASE, syscalls: [rule(['new'], { includes: { minKernel: '5.10' } }), rule(['old'])] });
    const at = (kernel: string): string[] => kept(seccomp([], { arch: 'x64', kernel, profilePath: file }));
    assert.deepEqual(at('5.9.16-generic'), ['old']);
    assert.deepEqual(at('5.10.0-18-amd64'), ['new', 'old']);
    assert.deepEqual(at('5.11'), ['new', 'old']);
    assert.deepEqual(at('6.0.1'), ['new', 'old']);
    assert.deepEqual(at('4.19.0'), ['old']);
    // A release we cannot read is not assumed new enough.
    assert.deepEqual(at('unknown'), ['old']);
  });

  test('errno names, legacy single `name`, null args and valueTwo are translated', () => {
    const file = profileFile({
      defaultAction: 'SCMP_ACT_ERRNO',
      defaultErrno: 'ENOSYS',
      archMap: BASE.archMap,
      syscalls: [
        { name: 'legacy', action: 'SCMP_ACT_ERRNO', errno: 'EPERM', args: null },
        rule(['masked'], { args: [{ index: 1, value: 0xf0, valueTwo: 0x10, op: 'SCMP_CMP_MASKED_EQ' }] }),
        rule(['both'], { action: 'SCMP_ACT_ERRNO', errnoRet: 22, errno: 'EPERM' }),
      ],
    });
    const s = seccomp([], { ...X64, profilePath: file });
    assert.deepEqual(s, {
      defaultAction: 'SCMP_ACT_ERRNO',
      defaultErrnoRet: 38,
      architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'],
      syscalls: [
        { names: ['legacy'], action: 'SCMP_ACT_ERRNO', errnoRet: 1 },
        { names: ['masked'], action: 'SCMP_ACT_ALLOW', args: [{ index: 1, value: 0xf0, valueTwo: 0x10, op: 'SCMP_CMP_MASKED_EQ' }] },
        { names: ['both'], action: 'SCMP_ACT_ERRNO', errnoRet: 22 },
      ],
    });
    validateRuntimeConfig(configWith(s as unknown as Record<string, unknown>));
  });

  test('the file is parsed once: a later change on disk is not read again', () => {
    const file = profileFile({ ...BASE, syscalls: [rule(['first'])] });
    assert.deepEqual(kept(seccomp([], { ...X64, profilePath: file })), ['first']);
    writeFileSync(file, 'not json at all');
    assert.deepEqual(kept(seccomp([], { ...X64, profilePath: file })), ['first']);
  });

  test('R3: a caller mutating the result cannot change the next one', () => {
    const file = profileFile({ ...BASE, syscalls: [rule(['a'], { args: [{ index: 0, value: 1, op: 'SCMP_CMP_EQ' }] })] });
    const first = seccomp([], { ...X64, profilePath: file });
    const again = structuredClone(first);
    first.architectures.push('SCMP_ARCH_PPC');
    first.syscalls[0]?.names.push('b');
    if (first.syscalls[0]?.args?.[0] !== undefined) first.syscalls[0].args[0].value = 99;
    first.syscalls.push({ names: ['c'], action: 'SCMP_ACT_ALLOW' });
    assert.deepEqual(seccomp([], { ...X64, profilePath: file }), again);
  });

  test('an unknown host arch is ERR_UNSUPPORTED', () => {
    const file = profileFile({ ...BASE, syscalls: [] });
    assert.throws(
      () => runtimeDefaultSeccomp([], { profilePath: file, arch: 'sparc' as unknown as 'x64' }),
      (err: unknown) => isBerthError(err, 'ERR_UNSUPPORTED') && /sparc/.test(err.message),
    );
  });
});

describe('issue-13 seccomp: a missing or malformed profile is a clear precondition error', () => {
  const preconditionFor = (file: string, reason: RegExp) => (err: unknown): boolean => {
    assert.ok(isBerthError(err, 'ERR_PRECONDITION'), String(err));
    assert.ok(err.message.includes(file), err.message);
    assert.ok(err.message.includes(SECCOMP_PROFILE_PACKAGE), err.message);
    assert.match(err.message, reason);
    return true;
  };

  test('missing file names the file and the Debian package; not cached, so installing it later works', () => {
    tmp ??= mkdtempSync(path.join(os.tmpdir(), 'berth-seccomp-unit-'));
    const file = path.join(tmp, 'later.json');
    assert.throws(() => runtimeDefaultSeccomp([], { ...X64, profilePath: file }), preconditionFor(file, /: missing;/));
    writeFileSync(file, JSON.stringify({ ...BASE, syscalls: [rule(['x'])] }));
    assert.deepEqual(kept(seccomp([], { ...X64, profilePath: file })), ['x']);
  });

  const malformed: [string, unknown, RegExp][] = [
    ['not JSON', '{"defaultAction": ', /not JSON/],
    ['not an object', '[]', /\/: not an object/],
    ['unknown default action', { ...BASE, defaultAction: 'SCMP_ACT_MAYBE', syscalls: [] }, /\/defaultAction/],
    ['no syscalls list', { ...BASE }, /\/syscalls: not a list/],
    ['rule without names', { ...BASE, syscalls: [rule([])] }, /\/syscalls\/0: no syscall names/],
    ['unknown rule action', { ...BASE, syscalls: [rule(['a'], { action: 'ALLOW' })] }, /\/syscalls\/0\/action/],
    ['errnoRet out of uint32', { ...BASE, syscalls: [rule(['a'], { action: 'SCMP_ACT_ERRNO', errnoRet: -1 })] }, /errnoRet/],
    ['unknown errno name', { ...BASE, syscalls: [rule(['a'], { action: 'SCMP_ACT_ERRNO', errno: 'ENOTANERRNO' })] }, /ENOTANERRNO/],
    ['unknown operator', { ...BASE, syscalls: [rule(['a'], { args: [{ index: 0, value: 1, op: 'SCMP_CMP_LIKE' }] })] }, /\/args\/0\/op/],
    ['argument index 6', { ...BASE, syscalls: [rule(['a'], { args: [{ index: 6, value: 1, op: 'SCMP_CMP_EQ' }] })] }, /\/args\/0\/index/],
    ['argument value beyond 2^53', { ...BASE, syscalls: [rule(['a'], { args: [{ index: 0, value: 2 ** 60, op: 'SCMP_CMP_EQ' }] })] }, /\/args\/0\/value/],
    ['unknown includes key', { ...BASE, syscalls: [rule(['a'], { includes: { caps: [], kernelFlavour: 'rt' } })] }, /kernelFlavour/],
    ['unknown excludes key', { ...BASE, syscalls: [rule(['a'], { excludes: { minKernel: '5.0' } })] }, /minKernel/],
    ['minKernel not major.minor', { ...BASE, syscalls: [rule(['a'], { includes: { minKernel: 'five' } })] }, /minKernel/],
    ['archMap entry not an SCMP arch', { ...BASE, archMap: [{ architecture: 'amd64', subArchitectures: [] }], syscalls: [] }, /\/archMap\/0\/architecture/],
    ['unknown filter flag', { ...BASE, flags: ['SECCOMP_FILTER_FLAG_YOLO'], syscalls: [] }, /\/flags/],
  ];
  for (const [what, doc, reason] of malformed) {
    test(`malformed: ${what}`, () => {
      const file = profileFile(doc);
      assert.throws(() => runtimeDefaultSeccomp([], { ...X64, profilePath: file }), preconditionFor(file, reason));
    });
  }

  test('a directory in place of the file', () => {
    tmp ??= mkdtempSync(path.join(os.tmpdir(), 'berth-seccomp-unit-'));
    assert.throws(() => runtimeDefaultSeccomp([], { ...X64, profilePath: tmp as string }), preconditionFor(tmp, /not a regular file|cannot/));
  });
});

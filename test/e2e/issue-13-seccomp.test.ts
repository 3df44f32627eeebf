import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runtimeDefaultSeccomp } from '../../src/runtime/tasks/seccomp.js';
import { DEFAULT_CAPS, generateSpec } from '../../src/runtime/tasks/spec.js';
import { buildSeccompProbe } from '../helpers/seccomp-probe.js';
import { requireE2E, requireTools } from '../helpers/prereq.js';
import { validateRuntimeConfig } from '../helpers/oci-schemas.js';

/**
 * Issue 13 acceptance: "the default seccomp profile blocks a syscall it lists (test with a tiny
 * static helper)". Real runc runs a static probe in a rootfs that holds nothing else, with the
 * config.json spec.ts generates, once with `linux.seccomp` = runtimeDefaultSeccomp(caps) and once
 * without it, so the only difference between the two runs is the filter.
 *
 * The syscall is vmsplice(2). The distribution profile lists it in its unconditional EPERM rule
 * (with kexec_load, userfaultfd, swapon…). Unlike the others on that list it needs no capability
 * and no optional kernel config: vmsplice of one byte into a pipe the process owns succeeds for any
 * user, root in a container included, so without the profile it must succeed and with it the
 * EPERM can only come from the filter. (swapon or kexec_load would fail with EPERM anyway for
 * lack of CAP_SYS_ADMIN/CAP_SYS_BOOT; userfaultfd and sysfs depend on kernel options and sysctls.)
 *
 * Two more probes pin the rest of the translation on the real kernel: personality(PER_BSD) is
 * not among the personas the profile allows by argument, so it falls to the default action
 * (ENOSYS, 38) while the query persona 0xffffffff passes; and chroot("/"), allowed only when the
 * profile was built for caps holding CAP_SYS_CHROOT, returns EPERM from the filter when the
 * profile was built without it even though the process still holds the capability.
 */



describe('issue-13 e2e: RuntimeDefault seccomp under real runc', { timeout: 120_000 }, () => {
  let ok = true;
  let base: string;
  let probe: string;
  let runcRoot: string;
  const ids: string[] = [];
  let seq = 0;

  before((t) => {
    ok = requireE2E(t) && requireTools(t, ['gcc']);
    if (!ok) return;
    base = mkdtempSync(path.join(os.tmpdir(), 'berth-seccomp-e2e-'));
    runcRoot = path.join(base, 'runc');
    probe = buildSeccompProbe(base);
  });

  after(() => {
    if (base === undefined) return;
    // runc run removes its container when the process exits; this covers a run killed at its timeout.
    for (const id of ids) spawnSync('runc', ['--root', runcRoot, 'delete', '--force', id], { stdio: 'ignore', timeout: 10_000 });
    rmSync(base, { recursive: true, force: true });
  });

  /**
   * Runs `/probe <which>` in a fresh bundle whose rootfs holds only the probe, with `seccomp` as
   * linux.seccomp (none when undefined). Returns runc's exit status (the container's) and stdout.
   */
  const run = (which: string, seccomp: Record<string, unknown> | undefined): { status: number | null; out: string; err: string } => {
    const id = `berth-seccomp-${process.pid}-${++seq}`;
    ids.push(id);
    const bundle = path.join(base, id);
    const rootfs = path.join(bundle, 'rootfs');
    mkdirSync(rootfs, { recursive: true });
    copyFileSync(probe, path.join(rootfs, 'probe'));
    const spec = generateSpec(
      { architecture: 'amd64', os: 'linux', config: { Env: ['PATH=/'] }, rootfs: { type: 'layers', diff_ids: [] } },
      // Without a profile of the test's own: Unconfined (generateSpec applies RuntimeDefault otherwise).
      { id, command: ['/probe', which], sandbox: { kind: 'host', files: [] }, rootfs, ...(seccomp === undefined ? { security: { seccomp: 'Unconfined' as const } } : {}) },
    );
    if (seccomp !== undefined) (spec['linux'] as Record<string, unknown>)['seccomp'] = seccomp;
    validateRuntimeConfig(spec);
    writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(spec));
    const r = spawnSync('runc', ['--root', runcRoot, 'run', '--bundle', bundle, id], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 });
    return { status: r.status, out: r.stdout.trim(), err: r.stderr.trim() };
  };

  const expect = (r: { status: number | null; out: string; err: string }, status: number, out: string): void => {
    assert.equal(r.out, out, `stdout; runc stderr: ${r.err}`);
    assert.equal(r.status, status, `exit status; runc stderr: ${r.err}`);
  };

  test('vmsplice: succeeds without a filter, EPERM under the RuntimeDefault profile', (t) => {
    if (!ok) return t.skip();
    expect(run('vmsplice', undefined), 0, 'vmsplice ok');
    expect(run('vmsplice', runtimeDefaultSeccomp(DEFAULT_CAPS)), 1, 'vmsplice errno=1');
  });

  test('personality: argument rules allow the query persona, any other falls to the default ENOSYS', (t) => {
    if (!ok) return t.skip();
    const profile = runtimeDefaultSeccomp(DEFAULT_CAPS);
    expect(run('personality-bsd', undefined), 0, 'personality-bsd ok');
    expect(run('personality-bsd', profile), 1, 'personality-bsd errno=38');
    expect(run('personality-query', profile), 0, 'personality-query ok');
  });

  test('x32: listed in the filter exactly when the host kernel runs x32 calls; an x32 call still never gets past a kernel that does not', (t) => {
    if (!ok) return t.skip();
    if (process.arch !== 'x64') return t.skip('x32 is an x86_64 ABI');
    // The kernel's own answer, from a process under no filter: the probe on the host.
    const host = spawnSync(probe, ['x32-getpid'], { encoding: 'utf8' });
    assert.ok(host.status === 0 || host.status === 1, `host probe: ${host.stdout}${host.stderr}`);
    const served = host.status === 0;
    if (!served) assert.equal(host.stdout.trim(), 'x32-getpid errno=38', 'a kernel without x32 answers ENOSYS');
    const profile = runtimeDefaultSeccomp(DEFAULT_CAPS);
    assert.equal((profile['architectures'] as string[]).includes('SCMP_ARCH_X32'), served, `architectures ${JSON.stringify(profile['architectures'])}, host x32 ${served}`);
    assert.ok((profile['architectures'] as string[]).includes('SCMP_ARCH_X86'), 'the 32-bit x86 entry stays filtered');
    expect(run('x32-getpid', undefined), served ? 0 : 1, served ? 'x32-getpid ok' : 'x32-getpid errno=38');
    const confined = run('x32-getpid', profile);
    if (served) expect(confined, 0, 'x32-getpid ok');
    else {
      // libseccomp sends a call of an arch the filter does not list to its bad-arch action (a kill):
      // never a success, whatever the runc and libseccomp versions answer with.
      assert.notEqual(confined.out, 'x32-getpid ok', `runc stderr: ${confined.err}`);
      assert.notEqual(confined.status, 0, `x32 call under the filter: ${confined.out} ${confined.err}`);
    }
  });

  test('chroot: the caps the profile is built for decide, not only the caps the process holds', (t) => {
    if (!ok) return t.skip();
    expect(run('chroot', runtimeDefaultSeccomp(DEFAULT_CAPS)), 0, 'chroot ok');
    expect(run('chroot', runtimeDefaultSeccomp(DEFAULT_CAPS.filter((c) => c !== 'CAP_SYS_CHROOT'))), 1, 'chroot errno=1');
  });
});

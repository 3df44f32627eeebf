import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import { runProcess } from '../../lib/exec.js';

/** A `--version` or dpkg query answers at once; one that does not is reported as missing, not waited on. */
const PROBE_TIMEOUT_MS = 5_000;

/** One line of `berth check`. `fail` means berth cannot work; `warn` means it works with a caveat. */
export interface Finding {
  level: 'ok' | 'warn' | 'fail';
  what: string;
  detail: string;
}

async function firstLine(cmd: string, args: string[]): Promise<string | undefined> {
  try {
    const { stdout } = await runProcess(cmd, args, { timeoutMs: PROBE_TIMEOUT_MS, what: `probe ${cmd}` });
    return stdout.split('\n')[0]?.trim();
  } catch {
    return undefined;
  }
}

async function debVersion(pkg: string): Promise<string | undefined> {
  const v = await firstLine('dpkg-query', ['-W', '-f=${Version}', pkg]);
  return v === '' ? undefined : v;
}

/**
 * Host prerequisites (DESIGN §3, rule R5): root, runc, conmon, overlayfs, cgroup layout,
 * kernel. runc releases before 1.2.8 / 1.3.3 / 1.4.0-rc.3 lack the upstream fixes for
 * CVE-2025-31133, CVE-2025-52565 and CVE-2025-52881; distribution packages may carry
 * backports, so the package version is reported for the operator to check.
 */
export async function checkHost(binaries: { runc: string; conmon: string } = { runc: 'runc', conmon: 'conmon' }): Promise<Finding[]> {
  const out: Finding[] = [];
  out.push(
    process.getuid?.() === 0
      ? { level: 'ok', what: 'root', detail: 'running as uid 0' }
      : { level: 'fail', what: 'root', detail: 'berth needs root for runc and overlay mounts' },
  );
  out.push({ level: 'ok', what: 'kernel', detail: `${os.type()} ${os.release()} ${os.arch()}` });

  const runcV = await firstLine(binaries.runc, ['--version']);
  if (runcV === undefined) {
    out.push({ level: 'fail', what: 'runc', detail: `${binaries.runc} not found (Debian package runc)` });
  } else {
    const m = /(\d+)\.(\d+)\.(\d+)/.exec(runcV);
    const [maj, min, patch] = m === null ? [0, 0, 0] : [Number(m[1]), Number(m[2]), Number(m[3])];
    const fixed = maj > 1 || (maj === 1 && (min >= 4 || (min === 3 && patch >= 3) || (min === 2 && patch >= 8)));
    const pkg = await debVersion('runc');
    out.push(
      fixed
        ? { level: 'ok', what: 'runc', detail: runcV }
        : {
            level: 'warn',
            what: 'runc',
            detail: `${runcV}${pkg !== undefined ? ` (Debian package runc ${pkg})` : ''}: predates upstream fixes for CVE-2025-31133, CVE-2025-52565, CVE-2025-52881; check the distribution's security tracker for backports`,
          },
    );
  }
  const conmonV = await firstLine(binaries.conmon, ['--version']);
  out.push(conmonV === undefined ? { level: 'fail', what: 'conmon', detail: `${binaries.conmon} not found (Debian package conmon)` } : { level: 'ok', what: 'conmon', detail: conmonV });

  const filesystems = await fsp.readFile('/proc/filesystems', 'utf8').catch(() => '');
  out.push(/\toverlay$/m.test(filesystems) ? { level: 'ok', what: 'overlayfs', detail: 'supported' } : { level: 'fail', what: 'overlayfs', detail: 'overlay is not in /proc/filesystems (modprobe overlay)' });

  const v2 = await fsp.access('/sys/fs/cgroup/cgroup.controllers').then(() => true, () => false);
  const unified = await fsp.access('/sys/fs/cgroup/unified/cgroup.controllers').then(() => true, () => false);
  out.push({ level: 'ok', what: 'cgroups', detail: v2 ? 'v2 (unified)' : unified ? 'hybrid (v1 controllers, v2 at /sys/fs/cgroup/unified)' : 'v1' });
  return out;
}

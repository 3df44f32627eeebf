import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { SuiteContext, TestContext } from 'node:test';

/**
 * e2e prerequisites. In CI (CI=true) a missing one is a failure, never a silent skip;
 * elsewhere the test is skipped with the reason printed.
 */
export function missingE2EPrereqs(): string[] {
  const missing: string[] = [];
  if (process.getuid?.() !== 0) missing.push('root');
  for (const bin of ['runc', 'conmon', 'docker-registry', 'mount', 'umount']) {
    try {
      execFileSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' });
    } catch {
      missing.push(bin);
    }
  }
  try {
    if (!/\toverlay$/m.test(readFileSync('/proc/filesystems', 'utf8'))) missing.push('overlayfs');
  } catch {
    missing.push('overlayfs (/proc/filesystems unreadable)');
  }
  return missing;
}

/** Returns true when the test may proceed; fails (CI) or skips (elsewhere) otherwise. */
export function requireE2E(t: TestContext | SuiteContext): boolean {
  return requireOrSkip(t, missingE2EPrereqs());
}

/**
 * The same rule for a test that needs only some host tools, e.g. `systemd-analyze` (Debian
 * package systemd, installed by scripts/host-deps.sh; it works without systemd running).
 */
export function requireTools(t: TestContext | SuiteContext, bins: readonly string[]): boolean {
  return requireOrSkip(t, bins.filter((bin) => {
    try {
      execFileSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' });
      return false;
    } catch {
      return true;
    }
  }));
}

function requireOrSkip(t: TestContext | SuiteContext, missing: readonly string[]): boolean {
  if (missing.length === 0) return true;
  const msg = `e2e prerequisites missing: ${missing.join(', ')} (run scripts/host-deps.sh as root)`;
  if (process.env['CI'] === 'true' || process.env['CI'] === '1') throw new Error(msg);
  process.stderr.write(`SKIP ${msg}\n`);
  // Hook contexts (before/after) have no skip(); their tests skip themselves on `false`.
  if ('skip' in t && typeof t.skip === 'function') t.skip(msg);
  return false;
}

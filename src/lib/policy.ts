import { promises as fsp } from 'node:fs';

/**
 * Operator policy a manifest cannot override, set once per process from the command line
 * (global options) before any manifest is read.
 *
 * hostPathAllow: host path prefixes a hostPath volume may name (`--allow-host-path PREFIX`,
 * repeatable). Empty by default: a manifest cannot reach into the host unless the operator
 * said where.
 */
let hostPathAllow: readonly string[] = [];

export function setHostPathAllowList(prefixes: readonly string[]): void {
  hostPathAllow = prefixes.map((p) => (p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p));
}

export function hostPathAllowList(): readonly string[] {
  return hostPathAllow;
}

export function hostPathAllowed(p: string): boolean {
  return hostPathAllow.some((a) => a === '/' || p === a || p.startsWith(`${a}/`));
}

/**
 * The check again on what the path is on the host now: `real` (the path with every symlink
 * resolved) must lie under an allowed prefix, itself resolved. A symlink inside an allowed
 * directory (one a container with that directory mounted can make) cannot lead a hostPath out
 * of it (regression hostpath-symlink-escapes-allow-list).
 */
export async function hostPathAllowedReal(real: string): Promise<boolean> {
  for (const a of hostPathAllow) {
    if (a === '/') return true;
    const ra = await fsp.realpath(a).catch(() => undefined);
    if (ra !== undefined && (real === ra || real.startsWith(`${ra}/`))) return true;
  }
  return false;
}

/** privileged: true is refused unless the operator opted in (`--allow-privileged`). */
let privilegedAllowed = false;

export function setPrivilegedAllowed(v: boolean): void {
  privilegedAllowed = v;
}

export function privilegedIsAllowed(): boolean {
  return privilegedAllowed;
}

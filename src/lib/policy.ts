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

/** privileged: true is refused unless the operator opted in (`--allow-privileged`). */
let privilegedAllowed = false;

export function setPrivilegedAllowed(v: boolean): void {
  privilegedAllowed = v;
}

export function privilegedIsAllowed(): boolean {
  return privilegedAllowed;
}

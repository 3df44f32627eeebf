import type { Runtime } from '../runtime/index.js';
import type { DesiredConfig } from './desired.js';
import type { ManifestProblem } from './problem.js';
import { inScope, type PruneScope } from './plan.js';
import { mergeConfigs } from './resolve.js';

/**
 * ConfigMaps and Secrets as applied: recorded rows (so a pod applied later, alone, still
 * resolves what an earlier apply declared, as kubectl users expect of a cluster), overlaid by
 * the ones being loaded now.
 */

export function recordedConfigs(rt: Runtime): DesiredConfig[] {
  const out: DesiredConfig[] = [];
  for (const row of rt.listConfigs()) {
    try {
      out.push(JSON.parse(row.object) as DesiredConfig);
    } catch {
      // an unreadable row is skipped; the next apply of its file rewrites it
    }
  }
  return out;
}

export function knownConfigs(rt: Runtime, loaded: readonly DesiredConfig[]): DesiredConfig[] {
  return mergeConfigs(recordedConfigs(rt), loaded);
}

/**
 * Records `loaded` and, within `prune` (the files or directories that were read whole),
 * forgets configs those sources no longer declare. Returns whether anything changed.
 */
export function recordConfigs(rt: Runtime, loaded: readonly DesiredConfig[], prune?: PruneScope): boolean {
  const rows = new Map(rt.listConfigs().map((r) => [r.key, r]));
  const put = loaded.map((c) => ({ key: c.key, source: c.source, object: JSON.stringify(c) })).filter((c) => rows.get(c.key)?.object !== c.object);
  const declared = new Set(loaded.map((c) => c.key));
  const remove = prune === undefined ? [] : [...rows.values()].filter((r) => !declared.has(r.key) && (inScope(r.source, prune) || prune.keys?.includes(r.key) === true)).map((r) => r.key);
  rt.updateConfigs(put, remove);
  return put.length + remove.length > 0;
}

/** A ConfigMap or Secret that an apply of `loaded` would create, change or (pruning) delete. */
export interface ConfigChange {
  op: 'create' | 'update' | 'delete';
  /** `configmap/<ns>/<name>` or `secret/<ns>/<name>`. */
  key: string;
  source: string;
  line?: number;
  /** update: the data keys added, removed or changed (names only: a Secret's values are never shown). */
  keys?: string[];
}

/**
 * What recording `loaded` (and, within `prune`, forgetting the others) changes, for `diff` and
 * `apply` to show as kubectl shows ConfigMaps and Secrets (regression config-changes-invisible).
 * Values are never part of it, only the names of the keys that differ.
 */
export function configChanges(rt: Runtime, loaded: readonly DesiredConfig[], prune?: PruneScope): ConfigChange[] {
  const rows = new Map(rt.listConfigs().map((r) => [r.key, r]));
  const out: ConfigChange[] = [];
  for (const c of loaded) {
    const row = rows.get(c.key);
    if (row === undefined) {
      out.push({ op: 'create', key: c.key, source: c.source, line: c.line });
      continue;
    }
    let before: DesiredConfig | undefined;
    try {
      before = JSON.parse(row.object) as DesiredConfig;
    } catch {
      before = undefined;
    }
    const a = before?.data ?? {};
    const keys = [...new Set([...Object.keys(a), ...Object.keys(c.data)])].filter((k) => a[k] !== c.data[k]).sort();
    const other = before === undefined || before.type !== c.type || JSON.stringify(before.binaryKeys ?? []) !== JSON.stringify(c.binaryKeys ?? []);
    if (keys.length > 0 || other) out.push({ op: 'update', key: c.key, source: c.source, line: c.line, keys });
  }
  if (prune !== undefined) {
    const declared = new Set(loaded.map((c) => c.key));
    for (const r of rows.values()) if (!declared.has(r.key) && (inScope(r.source, prune) || prune.keys?.includes(r.key) === true)) out.push({ op: 'delete', key: r.key, source: r.source });
  }
  return out;
}

/** One line per change, as the plan's lines read: `+ configmap default/app (file:line)`. */
export function renderConfigChanges(changes: readonly ConfigChange[]): string {
  return changes
    .map((c) => {
      const [kind, ns, name] = c.key.split('/');
      const what = `${kind ?? ''} ${ns ?? ''}/${name ?? ''}`;
      if (c.op === 'create') return `+ ${what} (${c.source}${c.line !== undefined ? `:${c.line}` : ''})\n`;
      if (c.op === 'delete') return `- ${what}: delete (no longer declared in ${c.source})\n`;
      return `~ ${what}: update${(c.keys ?? []).length > 0 ? ` (data: ${(c.keys ?? []).join(', ')})` : ''}\n`;
    })
    .join('');
}

/**
 * The API server's rule for `immutable: true`: a recorded immutable ConfigMap or Secret keeps
 * its data, type and immutability; a loaded one that changes them is a problem naming its file
 * and line, and the recorded one stays what pods read (regression immutable-ignored). Returns
 * the configs to use: the loaded ones, with each violating one replaced by its record.
 */
export function enforceImmutable(rt: Runtime, loaded: readonly DesiredConfig[]): { configs: DesiredConfig[]; problems: ManifestProblem[] } {
  const recorded = new Map(recordedConfigs(rt).map((c) => [c.key, c]));
  const problems: ManifestProblem[] = [];
  const configs = loaded.map((c) => {
    const before = recorded.get(c.key);
    if (before?.immutable !== true) return c;
    const same = c.immutable === true && c.type === before.type && JSON.stringify(Object.entries(c.data).sort()) === JSON.stringify(Object.entries(before.data).sort());
    if (same) return c;
    const [kind, ns, name] = c.key.split('/');
    problems.push({ file: c.source, line: c.line, col: 1, field: 'immutable', message: `${kind === 'secret' ? 'Secret' : 'ConfigMap'} ${ns ?? ''}/${name ?? ''} is immutable: its data cannot change (delete it, then apply it again)` });
    return { ...before, source: c.source, line: c.line };
  });
  return { configs, problems };
}

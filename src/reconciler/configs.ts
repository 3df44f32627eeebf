import type { Runtime } from '../runtime/index.js';
import type { DesiredConfig } from './desired.js';
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

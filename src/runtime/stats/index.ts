import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { BerthError, errnoCode } from '../../lib/errors.js';

/**
 * One reading of a container's cgroup counters (`berth stats`). berth gives runc the
 * absolute cgroupsPath `/berth/<id>` (tasks/spec.ts), so the directories are known without
 * asking runc: on a unified (v2) host `<root>/berth/<id>`, on v1 and hybrid hosts one
 * directory per controller, `<root>/<controller>/berth/<id>`. A host is unified when
 * `<root>/cgroup.controllers` exists (on hybrid hosts that file is under `<root>/unified`,
 * which holds no controllers berth reads).
 */
export interface CgroupSample {
  /** Which layout the counters were read from. */
  version: 1 | 2;
  /** CPU time the container's processes used, in nanoseconds, since the cgroup was made. */
  cpuNs: number;
  /**
   * Memory in use minus the inactive file cache, which the kernel reclaims first (the
   * working set `docker stats` and `kubectl top` show); bytes.
   */
  memoryBytes: number;
  /** The memory limit in bytes; null when none is set. */
  memoryLimitBytes: number | null;
  pids: number;
  /** The pids limit; null when none is set. */
  pidsLimit: number | null;
}

export const CGROUP_ROOT = '/sys/fs/cgroup';

/**
 * Reads the counters of cgroup `/berth/<id>`. Undefined when the cgroup does not exist (the
 * container is not running, or runc put it elsewhere); a counter file that is present but
 * unreadable or malformed is an error (ENOENT of one file on a half-removed cgroup counts as
 * gone). Read-only; touches nothing.
 */
export async function readCgroupSample(id: string, root = CGROUP_ROOT): Promise<CgroupSample | undefined> {
  const rel = path.join('berth', id);
  try {
    if (await exists(path.join(root, 'cgroup.controllers'))) {
      const dir = path.join(root, rel);
      if (!(await exists(dir))) return undefined;
      const cpu = keyed(await fsp.readFile(path.join(dir, 'cpu.stat'), 'utf8'));
      const mem = keyed(await fsp.readFile(path.join(dir, 'memory.stat'), 'utf8'));
      const current = int(await fsp.readFile(path.join(dir, 'memory.current'), 'utf8'), 'memory.current');
      return {
        version: 2,
        cpuNs: (cpu.get('usage_usec') ?? 0) * 1000,
        memoryBytes: Math.max(0, current - (mem.get('inactive_file') ?? 0)),
        memoryLimitBytes: limit(await fsp.readFile(path.join(dir, 'memory.max'), 'utf8'), 'memory.max'),
        pids: int(await fsp.readFile(path.join(dir, 'pids.current'), 'utf8'), 'pids.current'),
        pidsLimit: limit(await fsp.readFile(path.join(dir, 'pids.max'), 'utf8'), 'pids.max'),
      };
    }
    const memDir = path.join(root, 'memory', rel);
    if (!(await exists(memDir))) return undefined;
    const mem = keyed(await fsp.readFile(path.join(memDir, 'memory.stat'), 'utf8'));
    const usage = int(await fsp.readFile(path.join(memDir, 'memory.usage_in_bytes'), 'utf8'), 'memory.usage_in_bytes');
    // cpuacct is often co-mounted with cpu ("cpu,cpuacct"); either directory name may be the real one.
    const cpuacct = (await exists(path.join(root, 'cpuacct', rel))) ? path.join(root, 'cpuacct', rel) : path.join(root, 'cpu,cpuacct', rel);
    const pidsDir = path.join(root, 'pids', rel);
    return {
      version: 1,
      cpuNs: int(await fsp.readFile(path.join(cpuacct, 'cpuacct.usage'), 'utf8'), 'cpuacct.usage'),
      memoryBytes: Math.max(0, usage - (mem.get('total_inactive_file') ?? mem.get('inactive_file') ?? 0)),
      memoryLimitBytes: v1Limit(int(await fsp.readFile(path.join(memDir, 'memory.limit_in_bytes'), 'utf8'), 'memory.limit_in_bytes')),
      pids: int(await fsp.readFile(path.join(pidsDir, 'pids.current'), 'utf8'), 'pids.current'),
      pidsLimit: limit(await fsp.readFile(path.join(pidsDir, 'pids.max'), 'utf8'), 'pids.max'),
    };
  } catch (err) {
    // The container exited between the directory check and a read: its cgroup went away.
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENODEV') return undefined;
    throw err;
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await fsp.access(p);
    return true;
  } catch {
    return false;
  }
}

/** `key value` lines (memory.stat, cpu.stat). */
function keyed(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k !== undefined && v !== undefined && /^\d+$/.test(v)) out.set(k, Number(v));
  }
  return out;
}

function int(text: string, file: string): number {
  const t = text.trim();
  if (!/^\d+$/.test(t)) throw new BerthError('ERR_RUNTIME', `read cgroup ${file}: expected a number, read ${JSON.stringify(t.slice(0, 40))}`);
  return Number(t);
}

/** A v2 limit file, or v1 pids.max: "max" means none. */
function limit(text: string, file: string): number | null {
  return text.trim() === 'max' ? null : int(text, file);
}

/** v1 memory.limit_in_bytes says "none" with the largest page-aligned int64 (~2^63). */
function v1Limit(n: number): number | null {
  return n >= 2 ** 62 ? null : n;
}

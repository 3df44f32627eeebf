import { promises as fsp } from 'node:fs';

/**
 * Field 22 of /proc/<pid>/stat: the process start time in clock ticks since boot. Stored
 * with a pid, it tells a live process from a later one that reuses the pid.
 */
export async function startTime(pid: number): Promise<string> {
  const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (stat === undefined) return '';
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return rest[19] ?? '';
}

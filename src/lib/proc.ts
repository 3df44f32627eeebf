import { promises as fsp, readFileSync } from 'node:fs';

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

/**
 * The same, read synchronously ('' when the process is gone): a /proc read does no disk I/O,
 * and checking a few hundred pids this way costs less than one thread-pool round trip each.
 */
export function startTimeSync(pid: number): string {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return '';
  }
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // A zombie is not alive, whatever its start time says.
  if (rest[0] === 'Z') return '';
  return rest[19] ?? '';
}

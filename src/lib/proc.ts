import { readFileSync } from 'node:fs';

/**
 * Field 22 of /proc/<pid>/stat: the process start time in clock ticks since boot, '' when the
 * process is gone or a zombie. Stored with a pid, it tells a live process from a later one that
 * reuses the pid. Synchronous: a /proc read does no disk I/O, and checking a few hundred pids
 * this way costs less than one thread-pool round trip each.
 */
export function startTime(pid: number): string {
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

/**
 * Whether `pid` is still the process recorded with `recordedStart`: alive and not a later
 * process reusing the pid. An empty recorded start (the process was already gone when it was
 * read) never matches, so a container that died at once is not taken for a live one.
 */
export function isSameProcess(pid: number | null, recordedStart: string | null): boolean {
  if (pid === null || recordedStart === null || recordedStart === '') return false;
  return startTime(pid) === recordedStart;
}

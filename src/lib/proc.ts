import { readFileSync } from 'node:fs';
import { errnoCode } from './errors.js';

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

let bootMs: number | undefined;
/**
 * When a process started, in ms since the epoch, from its /proc stat start time (clock ticks
 * since boot, USER_HZ = 100 on Linux) and the boot time in /proc/stat; undefined if unknown.
 */
export function processStartedAt(start: string): number | undefined {
  const ticks = Number(start);
  if (start === '' || !Number.isSafeInteger(ticks)) return undefined;
  if (bootMs === undefined) {
    try {
      const btime = /^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'))?.[1];
      if (btime === undefined) return undefined;
      bootMs = Number(btime) * 1000;
    } catch {
      return undefined;
    }
  }
  return bootMs + ticks * 10;
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

/**
 * Whether the cgroup holding `pid` is frozen (`runc pause`), read the way runc decides between
 * running and paused: cgroup v1's freezer.state (FROZEN or FREEZING), or v2's cgroup.freeze.
 * False when the process or its cgroup files are gone.
 */
export function isFrozen(pid: number, cgroupRoot = '/sys/fs/cgroup'): boolean {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
  } catch {
    return false;
  }
  const read = (file: string): string | undefined => {
    try {
      return readFileSync(file, 'utf8').trim();
    } catch {
      return undefined;
    }
  };
  let unified: string | undefined;
  for (const line of text.split('\n')) {
    const a = line.indexOf(':');
    const b = line.indexOf(':', a + 1);
    if (a < 0 || b < 0) continue;
    const controllers = line.slice(a + 1, b);
    const where = line.slice(b + 1);
    if (controllers.split(',').includes('freezer')) {
      const s = read(`${cgroupRoot}/freezer${where}/freezer.state`);
      return s === 'FROZEN' || s === 'FREEZING';
    }
    if (line.slice(0, a) === '0' && controllers === '') unified = where;
  }
  // No v1 freezer: on a pure v2 host the freezer is cgroup.freeze in the unified tree.
  if (unified !== undefined) return read(`${cgroupRoot}${unified}/cgroup.freeze`) === '1';
  return false;
}

/**
 * The text of a /proc file of a process (a path, or an fd opened earlier), or undefined when the
 * process is gone: ENOENT at the open, or ESRCH at a read (it exited between the open and the
 * read, which a process ending just then makes likely). Synchronous, as above.
 */
export function readProcFile(file: string | number): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT' || code === 'ESRCH') return undefined;
    throw err;
  }
}

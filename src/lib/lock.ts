import { promises as fsp, constants as fsc } from 'node:fs';
import { BerthError, errnoCode } from './errors.js';
import { sleep } from './time.js';

/**
 * An exclusive lock file holding the owner's pid. A lock whose owner is dead is stale
 * and taken over (the owner was killed, e.g. with kill -9). Node has no flock(2), so
 * liveness is judged by `kill(pid, 0)` plus the process start time in the file.
 */
export class LockFile {
  private held = false;

  constructor(private readonly file: string) {}

  async acquire(opts: { waitMs: number; what: string }): Promise<void> {
    const until = Date.now() + opts.waitMs;
    const me = `${process.pid} ${await startTime(process.pid)}\n`;
    for (;;) {
      try {
        const fh = await fsp.open(this.file, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
        await fh.writeFile(me);
        await fh.close();
        this.held = true;
        return;
      } catch (err) {
        if (errnoCode(err) !== 'EEXIST') throw err;
      }
      const owner = await this.owner();
      if (owner === undefined || !(await alive(owner.pid, owner.start))) {
        // Stale: remove only if it still holds the same content (another waiter may have taken it).
        const again = await fsp.readFile(this.file, 'utf8').catch(() => undefined);
        if (again === undefined || owner === undefined || again === `${owner.pid} ${owner.start}\n` || again.trim() === '') {
          await fsp.rm(this.file, { force: true });
        }
        continue;
      }
      if (Date.now() >= until) {
        throw new BerthError('ERR_LOCKED', `${opts.what}: state is locked by pid ${owner.pid} (${this.file})`, { details: { pid: owner.pid } });
      }
      await sleep(50);
    }
  }

  async owner(): Promise<{ pid: number; start: string } | undefined> {
    const text = await fsp.readFile(this.file, 'utf8').catch(() => undefined);
    if (text === undefined) return undefined;
    const [pid, start] = text.trim().split(' ');
    const n = Number(pid);
    if (!Number.isInteger(n) || n <= 0) return undefined;
    return { pid: n, start: start ?? '' };
  }

  async release(): Promise<void> {
    if (!this.held) return;
    this.held = false;
    await fsp.rm(this.file, { force: true });
  }
}

/** Field 22 of /proc/<pid>/stat: start time in clock ticks since boot; guards against pid reuse. */
export async function startTime(pid: number): Promise<string> {
  const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (stat === undefined) return '';
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return rest[19] ?? '';
}

export async function alive(pid: number, start?: string): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if (errnoCode(err) === 'ESRCH') return false;
  }
  if (start === undefined || start === '') return true;
  return (await startTime(pid)) === start;
}

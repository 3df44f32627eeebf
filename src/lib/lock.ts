import { promises as fsp, constants as fsc } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { BerthError, errnoCode } from './errors.js';
import { tryLockExclusive } from './sys.js';
import { sleep } from './time.js';

/**
 * An exclusive lock on a file, held with flock(2) on an open file description. The kernel
 * drops it when the holder closes the file or dies (kill -9 included), so there is no
 * stale-lock guessing, and the file itself is never removed (removing it would let two
 * processes lock two different inodes). The holder's pid is written into the file for
 * error messages only.
 */
export class LockFile {
  private fh: FileHandle | undefined;

  constructor(private readonly file: string) {}

  async acquire(opts: { waitMs: number; what: string; onWait?: (holder: number | undefined) => void }): Promise<void> {
    if (this.fh !== undefined) throw new BerthError('ERR_INTERNAL', `${opts.what}: lock ${this.file} is already held by this process`);
    const until = Date.now() + opts.waitMs;
    // libuv opens with O_CLOEXEC, so conmon and runc (spawned while the lock is held) never
    // inherit the descriptor and never keep the lock alive after berth exits.
    const fh = await fsp.open(this.file, fsc.O_RDWR | fsc.O_CREAT | fsc.O_NOFOLLOW, 0o600);
    try {
      let delay = 10;
      let told = false;
      while (!tryLockExclusive(fh.fd)) {
        if (!told) {
          told = true;
          opts.onWait?.(await this.owner());
        }
        if (Date.now() >= until) {
          const owner = await this.owner();
          throw new BerthError('ERR_LOCKED', `${opts.what}: state is locked by ${owner !== undefined ? `pid ${owner}` : 'another berth'} (${this.file})`, {
            ...(owner !== undefined ? { details: { pid: owner } } : {}),
          });
        }
        await sleep(delay);
        delay = Math.min(delay * 2, 100);
      }
      await fh.truncate(0);
      await fh.write(`${process.pid}\n`, 0);
      this.fh = fh;
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /** The pid written by the current (or last) holder, for messages. */
  async owner(): Promise<number | undefined> {
    const text = await fsp.readFile(this.file, 'utf8').catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return undefined;
      throw err;
    });
    const n = Number(text?.trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  }

  async release(): Promise<void> {
    const fh = this.fh;
    if (fh === undefined) return;
    this.fh = undefined;
    await fh.close(); // closing the only descriptor releases the flock
  }
}

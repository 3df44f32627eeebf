import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { BerthError, errnoCode } from '../../lib/errors.js';
import { mount, umount2 } from '../../lib/sys.js';
import { digestHex, type Digest } from '../../lib/digest.js';
import { fsyncDir, mkdirp } from '../../lib/fsx.js';
import type { Logger } from '../../lib/log.js';
import type { StateStore } from '../state/index.js';

/** mount(2) copies at most one page of option data; keep a margin for the kernel's own. */
const MAX_MOUNT_DATA = 4000;

export interface SnapshotterOptions {
  /**
   * Each mount(2)/umount2(2) call; at expiry the call fails with ERR_TIMEOUT. Default 10 s. The
   * syscall runs on a thread of the native addon: a mount blocked in the kernel (a hung lower
   * filesystem) cannot be killed — neither could a mount(8) in uninterruptible sleep — so the
   * deadline stops the wait and that thread stays blocked until the kernel returns.
   */
  mountTimeoutMs?: number;
}

/**
 * Overlay snapshotter. Every layer is extracted into its own directory keyed by chainID
 * (`<root>/snapshots/<hex>/fs`), never into a mount. A container's rootfs is an overlay
 * of those directories (topmost first) plus its own upper/work directories under
 * `<root>/containers/<id>/`.
 *
 * Crash safety (rule E1): a layer is written into `snapshots/tmp-<random>/fs`, renamed to
 * its final name only when complete, and only then recorded in SQLite. Residue named
 * `tmp-*` is removed by `sweep()`.
 */
export class Snapshotter {
  private readonly base: string;
  private readonly containersDir: string;
  private readonly mountTimeoutMs: number;

  constructor(
    root: string,
    private readonly state: StateStore,
    options: SnapshotterOptions = {},
  ) {
    this.base = path.join(root, 'snapshots');
    this.containersDir = path.join(root, 'containers');
    this.mountTimeoutMs = options.mountTimeoutMs ?? 10_000;
  }

  async init(): Promise<void> {
    await mkdirp(this.base);
    await mkdirp(this.containersDir);
  }

  dir(chainId: Digest): string {
    return path.join(this.base, digestHex(chainId), 'fs');
  }

  isReady(chainId: Digest): boolean {
    return this.state.getSnapshot(chainId) !== undefined;
  }

  /**
   * Makes the snapshot for `chainId` exist. `extract(dir)` fills an empty directory and
   * reports whether the layer carried a root-level opaque marker. Idempotent: a ready
   * snapshot is left alone. On failure nothing is recorded and the temp dir is removed.
   */
  async commitLayer(
    opts: { chainId: Digest; parent: Digest | null; diffId: Digest },
    extract: (dir: string) => Promise<{ opaqueRoot: boolean; size: number }>,
  ): Promise<void> {
    if (this.isReady(opts.chainId)) return;
    const tmp = path.join(this.base, `tmp-${randomBytes(8).toString('hex')}`);
    const finalParent = path.dirname(this.dir(opts.chainId));
    await fsp.mkdir(tmp, { mode: 0o700 });
    try {
      await fsp.mkdir(path.join(tmp, 'fs'), { mode: 0o755 });
      const res = await extract(path.join(tmp, 'fs'));
      if (this.isReady(opts.chainId)) {
        // Another puller (a direct library caller outside the state lock) finished first.
        await fsp.rm(tmp, { recursive: true, force: true });
        return;
      }
      // A leftover final dir without a row is crash residue from before the row was written.
      await fsp.rm(finalParent, { recursive: true, force: true });
      await fsp.rename(tmp, finalParent);
      await fsyncDir(this.base);
      this.state.putSnapshot({
        chainId: opts.chainId,
        parent: opts.parent,
        diffId: opts.diffId,
        opaqueRoot: res.opaqueRoot,
        size: res.size,
        createdAt: Date.now(),
      });
    } catch (err) {
      await fsp.rm(tmp, { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * The overlay lowerdir stack for an image, topmost first. A layer with a root-level
   * opaque marker hides everything below it, so the stack is cut there.
   */
  lowerDirs(chainIds: readonly Digest[]): string[] {
    const dirs: string[] = [];
    for (let i = chainIds.length - 1; i >= 0; i--) {
      const id = chainIds[i] as Digest;
      const snap = this.state.getSnapshot(id);
      if (snap === undefined) throw new BerthError('ERR_NOT_FOUND', `snapshot ${id}: not ready`);
      dirs.push(this.dir(id));
      if (snap.opaqueRoot) break;
    }
    return dirs;
  }

  containerDir(id: string): string {
    return path.join(this.containersDir, id);
  }

  /**
   * Mounts the container rootfs at `target`. Idempotent: an existing mount at target is kept.
   */
  async mountRootfs(id: string, chainIds: readonly Digest[], target: string): Promise<void> {
    if (await isMountPoint(target)) return;
    const cdir = this.containerDir(id);
    const upper = path.join(cdir, 'upper');
    const work = path.join(cdir, 'work');
    await mkdirp(upper, 0o755);
    await mkdirp(work, 0o700);
    await mkdirp(target, 0o755);
    const lower = this.lowerDirs(chainIds);
    if (lower.length === 0) throw new BerthError('ERR_INVALID_IMAGE', `mount rootfs ${id}: image has no layers`);
    // mount(2) takes at most one page of options. Lower dirs are given relative to the
    // snapshots dir (the mount's thread works there), as containerd does, so ~55 layers fit, not ~40.
    const data = `lowerdir=${lower.map((d) => path.relative(this.base, d)).join(':')},upperdir=${upper},workdir=${work}`;
    if (Buffer.byteLength(data) > MAX_MOUNT_DATA || /[,:\\]/.test(upper)) {
      throw new BerthError('ERR_UNSUPPORTED', `mount rootfs ${id}: ${lower.length} layers exceed the overlay mount option size (or the root path holds , : or \\)`);
    }
    // mount(2) through the addon, not mount(8): no fork and exec on every container start.
    await this.withDeadline(mount({ source: 'overlay', target, fstype: 'overlay', data, cwd: this.base }), { op: `mount rootfs ${id}`, details: { id, target } });
  }

  /** How many layers an image may have and still be mountable under this root. */
  maxLayers(): number {
    const fixed = Buffer.byteLength(`lowerdir=,upperdir=${this.containerDir('x'.repeat(128))}/upper,workdir=${this.containerDir('x'.repeat(128))}/work`);
    return Math.floor((MAX_MOUNT_DATA - fixed) / (64 + '/fs:'.length));
  }

  /** Unmounts `target` if mounted. Missing target or no mount is success. */
  async unmount(target: string): Promise<void> {
    if (!(await isMountPoint(target))) return;
    await this.withDeadline(umount2(target), { op: `unmount ${target}`, details: { target } }).catch((err: unknown) => {
      // Unmounted by someone else since the check: the wanted outcome.
      if (errnoCode(err instanceof BerthError ? err.cause : err) !== 'EINVAL') throw err;
    });
  }

  /**
   * A mount syscall under the mount deadline (an overlay over a hung network or fuse lower
   * can block). Failures are ERR_RUNTIME with the errno's words; the deadline is ERR_TIMEOUT.
   */
  private async withDeadline(call: Promise<void>, o: { op: string; details: Record<string, string> }): Promise<void> {
    const { op, details } = o;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new BerthError('ERR_TIMEOUT', `${op}: the kernel did not answer within ${this.mountTimeoutMs / 1000}s`, { details: { ...details, timeoutMs: String(this.mountTimeoutMs) } })),
        this.mountTimeoutMs,
      );
    });
    try {
      await Promise.race([call, deadline]);
    } catch (err) {
      if (err instanceof BerthError) throw err;
      throw new BerthError('ERR_RUNTIME', `${op}: ${err instanceof Error ? err.message : String(err)}`, { cause: err, details });
    } finally {
      clearTimeout(timer);
    }
  }

  /** Removes a container's writable layer and bundle directory. It must be unmounted. */
  async removeContainer(id: string): Promise<void> {
    await fsp.rm(this.containerDir(id), { recursive: true, force: true });
  }

  /**
   * The entries of the snapshots directory (GC): `chainId` for a `<hex>` directory, `temp` for
   * `tmp-*` residue of an extraction. Other names are not berth's and are left out.
   */
  async listDirs(): Promise<{ name: string; chainId?: Digest }[]> {
    const names = await fsp.readdir(this.base).catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return [] as string[];
      throw err;
    });
    const out: { name: string; chainId?: Digest }[] = [];
    for (const name of names.sort()) {
      if (/^[a-f0-9]{64}$/.test(name)) out.push({ name, chainId: `sha256:${name}` as Digest });
      else if (name.startsWith('tmp-')) out.push({ name });
    }
    return out;
  }

  /** Bytes of the regular files under one entry of the snapshots directory (containerd's Usage, by walking). */
  async usage(name: string): Promise<number> {
    return duBytes(path.join(this.base, name));
  }

  /**
   * Removes one entry of the snapshots directory (a snapshot's or residue). Its row must be gone
   * first (GC deletes rows, then files): a crash halfway leaves a directory no row names, which
   * the next GC removes, never a row naming a missing directory. Idempotent.
   */
  async removeDir(name: string): Promise<void> {
    if (name === '' || name.includes('/') || name === '.' || name === '..') throw new BerthError('ERR_INTERNAL', `remove snapshot ${name}: not an entry name`);
    await fsp.rm(path.join(this.base, name), { recursive: true, force: true });
  }

  /**
   * The snapshots the overlay mounts of containers under this root stack (their `lowerdir`
   * options in /proc/self/mountinfo): a running rootfs must keep its layers even if no row
   * says so any more.
   */
  async mountedLayers(): Promise<Digest[]> {
    const text = await fsp.readFile('/proc/self/mountinfo', 'utf8');
    const out = new Set<Digest>();
    for (const line of text.split('\n')) {
      const [pre, post] = line.split(' - ');
      if (pre === undefined || post === undefined) continue;
      const mp = (pre.split(' ')[4] ?? '').replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
      const [fstype, , opts] = post.split(' ');
      if (fstype !== 'overlay' || !mp.startsWith(`${this.containersDir}/`)) continue;
      const lower = (opts ?? '').split(',').find((o) => o.startsWith('lowerdir='));
      for (const m of (lower ?? '').matchAll(/([a-f0-9]{64})\/fs/g)) out.add(`sha256:${m[1] ?? ''}` as Digest);
    }
    return [...out];
  }

  /** Removes temp residue of interrupted extractions and rows of vanished snapshots (rule S4). */
  async sweep(log?: Logger): Promise<number> {
    const names = await fsp.readdir(this.base).catch(() => [] as string[]);
    let n = 0;
    for (const name of names) {
      if (!name.startsWith('tmp-')) continue;
      await fsp.rm(path.join(this.base, name), { recursive: true, force: true });
      n++;
    }
    if (n > 0) log?.info({ removed: n }, 'swept interrupted snapshot extractions');
    // A row whose directory is gone (deleted by hand, lost disk) would make an image look
    // present and fail at mount time; forget it so the next pull extracts the layer again.
    for (const id of this.state.listSnapshots()) {
      if (!(await dirExists(this.dir(id)))) {
        log?.warn({ chainId: id }, 'snapshot directory missing, forgetting the snapshot');
        this.state.deleteSnapshot(id);
        n++;
      }
    }
    return n;
  }
}

/** True when `p` is a mount point, from /proc/self/mountinfo (octal escapes decoded). */
export async function isMountPoint(p: string): Promise<boolean> {
  const mounts = await listMounts();
  return mounts.includes(path.resolve(p));
}

export async function listMounts(): Promise<string[]> {
  const text = await fsp.readFile('/proc/self/mountinfo', 'utf8');
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    const mp = f[4];
    if (mp === undefined) continue;
    out.push(mp.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8))));
  }
  return out;
}

export async function dirExists(p: string): Promise<boolean> {
  try {
    return (await fsp.stat(p)).isDirectory();
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return false;
    throw err;
  }
}

/** Sum of the sizes of the regular files under `p` (not following symlinks); 0 when it is gone. */
async function duBytes(p: string): Promise<number> {
  const st = await fsp.lstat(p).catch(() => undefined);
  if (st === undefined) return 0;
  if (!st.isDirectory()) return st.isFile() ? st.size : 0;
  const names = await fsp.readdir(p).catch(() => [] as string[]);
  let n = 0;
  for (const name of names) n += await duBytes(path.join(p, name));
  return n;
}

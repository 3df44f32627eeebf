import os from 'node:os';
import { promises as fsp, constants as fsc } from 'node:fs';
import * as path from 'node:path';
import { BerthError, errnoCode, messageOf } from '../../lib/errors.js';
import { runProcess } from '../../lib/exec.js';
import { mkdirp } from '../../lib/fsx.js';
import { hostPathAllowList, hostPathAllowedReal } from '../../lib/policy.js';
import type { Logger } from '../../lib/log.js';
import { isMountPoint } from '../snapshots/index.js';

/**
 * Pod volumes under `<root>/pods/<namespace>_<name>/volumes/<volume>`, living as long as the
 * pod (container restarts keep them): emptyDir (a directory, or tmpfs with medium Memory),
 * configMap and secret projections written the way the kubelet's atomic writer does — the
 * files in a `..<hash>` directory, `..data` a symlink to it swapped with one rename, each
 * top-level name a symlink through `..data` — so a reader never sees half an update and an
 * edit reaches running containers without a restart; secrets sit on a tmpfs (never on disk).
 * hostPath volumes are the host's path itself, checked against their `type`.
 */

export type PodVolume =
  | { name: string; kind: 'emptyDir'; medium: '' | 'Memory'; sizeLimitBytes?: number; podMemoryLimitBytes?: number }
  | { name: string; kind: 'hostPath'; path: string; type: string }
  /** A named volume (persistentVolumeClaim): <root>/volumes/<claim>, kept when the pod goes. */
  | { name: string; kind: 'named'; claim: string; readOnly: boolean }
  /** `failed`: its required source is missing; files already written stay as they are. */
  | { name: string; kind: 'projected'; secret: boolean; files: { path: string; data: string; mode: number }[]; hash: string; failed?: boolean };

export interface MountRequest {
  volume: string;
  mountPath: string;
  readOnly: boolean;
  subPath?: string;
}

export interface BindMount {
  destination: string;
  source: string;
  readOnly: boolean;
  /** A hostPath of type CharDevice or BlockDevice: mounted without nodev (the devices cgroup still decides who may open it). */
  device?: boolean;
}

/**
 * The size of a Memory emptyDir's tmpfs, as the kubelet's calculateEmptyDirMemorySize: the node's
 * memory, else the pod's memory limit when every container has one, else the volume's sizeLimit,
 * whichever is least — not tmpfs's default of half the RAM (regression memory-emptydir-unsized).
 */
export function memoryVolumeBytes(v: { sizeLimitBytes?: number; podMemoryLimitBytes?: number }, nodeBytes = os.totalmem()): number {
  let size = nodeBytes;
  if (v.podMemoryLimitBytes !== undefined && v.podMemoryLimitBytes > 0 && v.podMemoryLimitBytes <= size) size = v.podMemoryLimitBytes;
  if (v.sizeLimitBytes !== undefined && v.sizeLimitBytes > 0 && v.sizeLimitBytes <= size) size = v.sizeLimitBytes;
  return size;
}

/** tmpfs size for a secret volume: secrets are at most 1 MiB each (Kubernetes' limit). */
const SECRET_TMPFS_BYTES = 4 * 1024 * 1024;

/** A named volume's name must be a DNS label (the claim names it): ERR_INVALID_ARGUMENT otherwise. */
export function checkVolumeName(name: string): void {
  if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(name) || name.length > 63) throw new BerthError('ERR_INVALID_ARGUMENT', `volume ${JSON.stringify(name)}: not a volume name (a DNS label)`);
}

export class VolumeManager {
  constructor(
    private readonly root: string,
    private readonly log: Logger,
    private readonly mountTimeoutMs = 10_000,
  ) {}

  podDir(podKey: string): string {
    return path.join(this.root, 'pods', podKey.replace('/', '_'));
  }

  /** A named volume's directory; `name` is a DNS label (checked at load). */
  namedDir(name: string): string {
    return path.join(this.root, 'volumes', name);
  }

  /** Named volumes with their size on disk (bytes of regular files) and the pods that mount them now. */
  async listNamed(): Promise<{ name: string; bytes: number }[]> {
    const names = await fsp.readdir(path.join(this.root, 'volumes')).catch(() => [] as string[]);
    const out: { name: string; bytes: number }[] = [];
    for (const name of names.sort()) out.push({ name, bytes: await du(this.namedDir(name)) });
    return out;
  }

  /** Removes a named volume (the caller checked that no pod uses it). Missing is ERR_NOT_FOUND. */
  async removeNamed(name: string): Promise<void> {
    checkVolumeName(name);
    const dir = this.namedDir(name);
    if (!(await fsp.stat(dir).then(() => true, () => false))) throw new BerthError('ERR_NOT_FOUND', `volume ${name}: no such volume`);
    await fsp.rm(dir, { recursive: true, force: true });
  }

  volumeDir(podKey: string, name: string): string {
    return path.join(this.podDir(podKey), 'volumes', name);
  }

  /**
   * Makes every volume of the pod present and current. Idempotent and cheap when nothing
   * changed (a projection whose `..data` already names its hash is not rewritten).
   */
  async sync(podKey: string, volumes: readonly PodVolume[]): Promise<void> {
    for (const v of volumes) {
      if (v.kind === 'hostPath') {
        await realHostPath(v);
        await checkHostPath(v);
        continue;
      }
      if (v.kind === 'named') {
        // Writable by any user, as a provisioner makes a claim's directory (local-path: 0777);
        // only when made: a mode the operator set later stays.
        const dir = this.namedDir(v.claim);
        if (!(await fsp.stat(dir).then(() => true, () => false))) {
          await mkdirp(dir, 0o755);
          await fsp.chmod(dir, 0o777);
        }
        continue;
      }
      const dir = this.volumeDir(podKey, v.name);
      await mkdirp(dir, 0o755);
      if ((v.kind === 'emptyDir' && v.medium === 'Memory') || (v.kind === 'projected' && v.secret)) {
        if (!(await isMountPoint(dir))) {
          const size = v.kind === 'emptyDir' ? memoryVolumeBytes(v) : SECRET_TMPFS_BYTES;
          // An emptyDir on tmpfs is the kubelet's: the tmpfs root's default 1777, so any user of the pod can write.
          const mode = v.kind === 'emptyDir' ? '1777' : '0755';
          await this.mount(['-t', 'tmpfs', '-o', `nosuid,nodev,mode=${mode}${size !== undefined ? `,size=${size}` : ''}`, 'tmpfs', dir], `mount tmpfs for volume ${v.name} of pod ${podKey}`);
        }
      } else if (v.kind === 'emptyDir' && ((await fsp.stat(dir)).mode & 0o7777) !== 0o777) {
        // The kubelet's setupDir: an emptyDir is 0777 (chmod: the umask cut the mkdir's mode), so a
        // container running as a non-root user can write to it (regression emptydir-root-only).
        await fsp.chmod(dir, 0o777);
      }
      // A source that went missing leaves what the containers read as it was, as the kubelet's
      // setup fails before its atomic writer runs (regression deleted-configmap-empties-volume).
      if (v.kind === 'projected' && !(v.failed === true && (await fsp.lstat(path.join(dir, '..data')).then(() => true, () => false)))) await writeProjection(dir, v);
    }
  }

  /** The bind mounts of one container: each volume (or its confined subPath) at its mountPath. */
  async mounts(podKey: string, volumes: readonly PodVolume[], requests: readonly MountRequest[]): Promise<BindMount[]> {
    const out: BindMount[] = [];
    for (const r of requests) {
      const v = volumes.find((x) => x.name === r.volume);
      if (v === undefined) throw new BerthError('ERR_INVALID_MANIFEST', `mount ${r.mountPath}: pod ${podKey} has no volume ${r.volume}`);
      // A hostPath is bound from what it is now, symlinks resolved and checked against the allow-list.
      const base = v.kind === 'hostPath' ? await realHostPath(v) : v.kind === 'named' ? this.namedDir(v.claim) : this.volumeDir(podKey, v.name);
      const source = r.subPath === undefined ? base : await confinedSubPath(base, r.subPath, `volume ${v.name} of pod ${podKey}`);
      // Projected volumes are read-only whatever the manifest says, as on Kubernetes.
      const device = v.kind === 'hostPath' && (v.type === 'CharDevice' || v.type === 'BlockDevice');
      out.push({ destination: r.mountPath, source, readOnly: r.readOnly || v.kind === 'projected' || (v.kind === 'named' && v.readOnly), ...(device ? { device: true } : {}) });
    }
    return out;
  }

  /**
   * Disk use of a disk emptyDir as du(1) counts it (allocated blocks; a file with several links
   * once), for the sizeLimit check. Bounded: the walk stops once the total passes `stopAtBytes`
   * (the verdict is known) or after `maxEntries` entries (then the count so far is returned and
   * `complete` is false). Never follows a symlink; entries vanishing mid-walk are skipped.
   */
  async usage(podKey: string, name: string, o: { stopAtBytes: number; maxEntries?: number }): Promise<{ bytes: number; complete: boolean }> {
    const seen = new Set<string>();
    let bytes = 0;
    let entries = 0;
    const max = o.maxEntries ?? 100_000;
    const stack = [this.volumeDir(podKey, name)];
    while (stack.length > 0) {
      const dir = stack.pop() ?? '';
      const names = await fsp.readdir(dir).catch(() => [] as string[]);
      for (const n of names) {
        if (bytes > o.stopAtBytes) return { bytes, complete: true };
        if (++entries > max) return { bytes, complete: false };
        const p = path.join(dir, n);
        const st = await fsp.lstat(p, { bigint: true }).catch(() => undefined);
        if (st === undefined) continue;
        if (st.isDirectory()) stack.push(p);
        const id = `${st.dev}:${st.ino}`;
        if (st.nlink > 1n) {
          if (seen.has(id)) continue;
          seen.add(id);
        }
        bytes += Number(st.blocks) * 512;
      }
    }
    return { bytes, complete: true };
  }

  /**
   * Empties a disk emptyDir in place (the directory stays: running containers' bind mounts
   * hold its inode). The children are first renamed into a trash directory beside the volumes
   * (one rename each, quick), then deleted, so the volume is empty as soon as possible.
   */
  async empty(podKey: string, name: string): Promise<void> {
    const dir = this.volumeDir(podKey, name);
    const trash = path.join(this.podDir(podKey), `.trash-${name}-${process.pid}-${Date.now()}`);
    await mkdirp(trash, 0o700);
    for (const n of await fsp.readdir(dir).catch(() => [] as string[])) {
      await fsp.rename(path.join(dir, n), path.join(trash, n)).catch((err: unknown) => {
        if (errnoCode(err) !== 'ENOENT') throw err;
      });
    }
    await fsp.rm(trash, { recursive: true, force: true });
  }

  /** Unmounts the pod's tmpfs volumes and removes its volume directories (never a hostPath). */
  async remove(podKey: string): Promise<void> {
    const base = path.join(this.podDir(podKey), 'volumes');
    for (const name of await fsp.readdir(base).catch(() => [] as string[])) {
      const dir = path.join(base, name);
      if (await isMountPoint(dir)) await this.mount([dir], `unmount volume ${name} of pod ${podKey}`, 'umount');
    }
    await fsp.rm(this.podDir(podKey), { recursive: true, force: true });
  }

  private async mount(args: string[], what: string, file: 'mount' | 'umount' = 'mount'): Promise<void> {
    try {
      await runProcess(file, args, { timeoutMs: this.mountTimeoutMs, what: `${what}: ${file}` });
    } catch (err) {
      if (err instanceof BerthError) throw err;
      throw new BerthError('ERR_RUNTIME', `${what}: ${messageOf(err)}`, { cause: err });
    }
    this.log.debug({ args }, what);
  }
}

/**
 * The kubelet's atomic writer: the payload in a new `..<hash>` directory, then `..data`
 * swapped to it by rename(2) of a fresh symlink, then top-level links, then the old
 * directory removed. Paths are relative without `..` (checked at load).
 */
async function writeProjection(dir: string, v: Extract<PodVolume, { kind: 'projected' }>): Promise<void> {
  const tsDir = `..${v.hash.slice(0, 16)}`;
  const dataLink = path.join(dir, '..data');
  const current = await fsp.readlink(dataLink).catch(() => undefined);
  if (current === tsDir) return;
  const target = path.join(dir, tsDir);
  await fsp.rm(target, { recursive: true, force: true });
  await fsp.mkdir(target, { mode: 0o755 });
  for (const f of v.files) {
    const file = path.join(target, f.path);
    if (!file.startsWith(`${target}/`)) throw new BerthError('ERR_UNSAFE_CONTENT', `volume ${v.name}: item path ${JSON.stringify(f.path)} leaves the volume`);
    await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o755 });
    const fh = await fsp.open(file, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, f.mode & 0o777);
    try {
      await fh.writeFile(Buffer.from(f.data, 'base64'));
      await fh.chmod(f.mode & 0o777);
      await fh.sync();
    } finally {
      await fh.close();
    }
  }
  const tmpLink = path.join(dir, '..data_tmp');
  await fsp.rm(tmpLink, { force: true });
  await fsp.symlink(tsDir, tmpLink);
  await fsp.rename(tmpLink, dataLink);
  const top = new Set(v.files.map((f) => f.path.split('/')[0] ?? ''));
  for (const name of top) {
    const link = path.join(dir, name);
    const want = path.join('..data', name);
    if ((await fsp.readlink(link).catch(() => undefined)) === want) continue;
    await fsp.rm(link, { force: true, recursive: true });
    await fsp.symlink(want, link);
  }
  for (const name of await fsp.readdir(dir)) {
    if (name === '..data' || name === tsDir) continue;
    if (name.startsWith('..') || !top.has(name)) await fsp.rm(path.join(dir, name), { recursive: true, force: true });
  }
}

/**
 * `subPath` inside a volume, refusing any path whose real location leaves the volume (a
 * symlink planted by a container pointing at / or ../..: CVE-2017-1002101). A missing subPath
 * is created as a directory, as the kubelet does. Returns the real path, which is what gets
 * bind-mounted.
 */
async function confinedSubPath(base: string, sub: string, what: string): Promise<string> {
  const realBase = await fsp.realpath(base);
  let cur = realBase;
  for (const comp of sub.split('/')) {
    if (comp === '' || comp === '.' || comp === '..') throw new BerthError('ERR_UNSAFE_CONTENT', `${what}: subPath ${JSON.stringify(sub)} must be relative without .. components`);
    const next = path.join(cur, comp);
    let st;
    try {
      st = await fsp.lstat(next);
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
      await fsp.mkdir(next, { mode: 0o755 });
      cur = next;
      continue;
    }
    const real = st.isSymbolicLink() ? await fsp.realpath(next).catch(() => undefined) : next;
    if (real === undefined || (real !== realBase && !real.startsWith(`${realBase}/`))) {
      throw new BerthError('ERR_UNSAFE_CONTENT', `${what}: subPath ${JSON.stringify(sub)} leaves the volume (${comp} is a symlink to ${real ?? 'nowhere'})`);
    }
    cur = real;
  }
  return cur;
}

/**
 * The host path with its symlinks resolved, refused (ERR_PRECONDITION) when that leaves the
 * operator's allowed prefixes; the manifest's check saw only the path as written.
 */
async function realHostPath(v: Extract<PodVolume, { kind: 'hostPath' }>): Promise<string> {
  // What exists of it resolved, the rest appended: also checked before a missing path is made,
  // so a symlinked parent cannot have it made outside the allowed prefixes.
  let existing = v.path;
  const rest: string[] = [];
  let real: string | undefined;
  for (;;) {
    real = await fsp.realpath(existing).catch((err: unknown) => {
      if (errnoCode(err) !== 'ENOENT' && errnoCode(err) !== 'ENOTDIR') throw new BerthError('ERR_PRECONDITION', `hostPath volume ${v.name}: ${v.path}: ${messageOf(err)}`);
      return undefined;
    });
    if (real !== undefined || existing === '/') break;
    rest.unshift(path.basename(existing));
    existing = path.dirname(existing);
  }
  real = path.join(real ?? '/', ...rest);
  if (!(await hostPathAllowedReal(real))) {
    throw new BerthError('ERR_PRECONDITION', `hostPath volume ${v.name}: ${v.path} resolves to ${real}, outside the allowed host paths (${hostPathAllowList().join(', ') || 'none'})`);
  }
  return real;
}

/** hostPath `type` checks (the kubelet's): *OrCreate makes it, the others must already be that kind. */
async function checkHostPath(v: Extract<PodVolume, { kind: 'hostPath' }>): Promise<void> {
  const st = await fsp.stat(v.path).catch((err: unknown) => {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  });
  const fail = (why: string): never => {
    throw new BerthError('ERR_PRECONDITION', `hostPath volume ${v.name}: ${v.path} ${why}`);
  };
  switch (v.type) {
    case '':
      // No check, as the kubelet; a missing path is made as a directory, as containerd's CRI
      // does for a bind source (regression hostpath-untyped-missing).
      if (st === undefined) await fsp.mkdir(v.path, { recursive: true, mode: 0o755 });
      return;
    case 'DirectoryOrCreate':
      if (st === undefined) await fsp.mkdir(v.path, { recursive: true, mode: 0o755 });
      else if (!st.isDirectory()) fail('is not a directory');
      return;
    case 'FileOrCreate':
      if (st === undefined) await (await fsp.open(v.path, 'a', 0o644)).close();
      else if (!st.isFile()) fail('is not a file');
      return;
    case 'Directory':
      if (st?.isDirectory() !== true) fail('is not an existing directory (type Directory)');
      return;
    case 'File':
      if (st?.isFile() !== true) fail('is not an existing file (type File)');
      return;
    case 'Socket':
      if (st?.isSocket() !== true) fail('is not a socket');
      return;
    case 'CharDevice':
      if (st?.isCharacterDevice() !== true) fail('is not a character device');
      return;
    case 'BlockDevice':
      if (st?.isBlockDevice() !== true) fail('is not a block device');
      return;
    default:
      fail(`has an unknown type ${JSON.stringify(v.type)}`);
  }
}

/** Bytes of the regular files under `dir` (no symlinks followed). */
async function du(dir: string): Promise<number> {
  let n = 0;
  for (const e of await fsp.readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) n += await du(p);
    else if (e.isFile()) n += (await fsp.lstat(p).catch(() => undefined))?.size ?? 0;
  }
  return n;
}

import * as fs from 'node:fs';
import { constants as fsc } from 'node:fs';
import { BerthError, errnoCode, messageOf } from '../../lib/errors.js';
import type { ErrorCode } from '../../lib/errors.js';
import type { Digest } from '../../lib/digest.js';
import type { Logger } from '../../lib/log.js';
import { closeFd, createBeneath, lsetxattr, makedev, mknod, MAX_DEV_MAJOR, MAX_DEV_MINOR } from '../../lib/sys.js';
import { displayName, EntryRejected, joinPath, parseEntryName, relativePath, resolveDirSync } from './resolve.js';
import type { EntrySink, PaxRecords, TarHeader } from './tarread.js';

/** The limits the writer enforces per entry (the stream-level ones live in index.ts). */
export interface EntryLimits {
  maxEntries: number;
  maxFileSize: number;
  maxPathBytes: number;
  maxDepth: number;
  maxXattrBytes: number;
}

export interface LayerWriterOptions {
  root: string;
  /** Parent layers' snapshot directories, topmost first: implied directories copy their metadata. */
  lowers?: readonly string[];
  layer: Digest;
  limits: EntryLimits;
  allowDevices: boolean;
  log: Logger | undefined;
  /**
   * The parent layers are not ready yet (layers unpacked in parallel): implied directories are made
   * with IMPLICIT_DIR_MODE and listed by `impliedDirs()`, for copyImpliedDirMeta once they are.
   */
  deferImplied?: boolean;
}

/** Entry metadata after validation (E5). Times are seconds since the epoch. */
interface Meta {
  uid: number;
  gid: number;
  mode: number;
  atime: number;
  mtime: number;
  xattrs: ReadonlyMap<string, Buffer>;
}

interface PendingDir {
  path: Buffer;
  depth: number;
  meta: Meta;
}

const WHITEOUT_PREFIX = Buffer.from('.wh.');
const WHITEOUT_META_PREFIX = Buffer.from('.wh..wh.');
const OPAQUE = Buffer.from('.wh..wh..opq');
export const OVERLAY_OPAQUE_XATTR = 'trusted.overlay.opaque';
/** uid/gid 2^32-1 is (uid_t)-1, "no change" to chown; anything above does not fit. */
const MAX_ID = 2 ** 32 - 2;
const CREATE_FLAGS = fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW;
const DIR_FLAGS = fsc.O_RDONLY | fsc.O_DIRECTORY | fsc.O_NOFOLLOW;
/** Most entries have no PAX records, hence no xattrs: one empty map for all of them. */
const NO_RECORDS: ReadonlyMap<string, Buffer> = new Map();
/** Not in node's fs.constants. */
const S_ISGID = 0o2000;

/**
 * Writes the entries of one layer tar into `root`, an empty directory private to this unpack.
 * One instance per layer; entries are fed strictly one at a time, in archive order (TarReader).
 *
 * Rules (INVARIANTS.md): every entry's parent is resolved confined, afresh, component by component
 * (E2: no caching across entries); an existing final component is removed and
 * recreated, never opened or followed (E3); hardlinks only to this layer (E4); lchown → chmod →
 * xattrs → times, directories last (E5; a chown or chmod that would change nothing on a node just
 * created is skipped); whiteouts in overlay format, never deleting anything (E6); entry types and
 * xattrs allowlisted (E7); limits before writing (E8).
 *
 * A failed entry throws a BerthError naming the layer and the entry; what was written stays in
 * `root` for the caller to delete.
 *
 * The filesystem calls are synchronous. Each is a short metadata syscall or a write into the page
 * cache of a directory nobody else uses yet; through fs.promises every one of them was a libuv
 * thread-pool round trip (futex wake-ups and an epoll wait on both sides), ~10 per entry, which
 * cost several times the syscalls themselves (bench/README.md, bench/pull). The event loop still
 * runs between the chunks of the tar (one inflated chunk, up to 256 KiB, is written at a time).
 */
export class LayerWriter {
  entries = 0;
  opaqueRoot = false;

  private readonly root: Buffer;
  private readonly isRoot = process.geteuid?.() === 0;
  // Directory metadata waits until every child is written; keyed by the path's latin1 string.
  private readonly dirs = new Map<string, PendingDir>();

  private readonly lowers: readonly Buffer[];
  // deferImplied: implied directories still standing, keyed like `dirs`, by their real components.
  private readonly implied = new Map<string, Buffer[]>();
  private readonly onImplied: ((real: readonly Buffer[]) => void) | undefined;
  // Who owns a node just created here (see ownedAsIs), when it is certain; else undefined.
  private readonly createdIds: { uid: number; gid: number } | undefined;
  // Permission bits a file gets from open(O_CREAT, mode) are mode & ~umask.
  private readonly umask = process.umask();

  // The root, open for the kernel walk of every entry's parent (resolveDirSync's rootFd); close() ends it.
  private rootFd: number | undefined;

  constructor(private readonly opts: LayerWriterOptions) {
    this.lowers = opts.deferImplied === true ? [] : (opts.lowers ?? []).map((d) => Buffer.from(d));
    this.root = Buffer.from(opts.root);
    this.rootFd = fs.openSync(this.root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW);
    this.onImplied = opts.deferImplied === true ? (real) => this.implied.set(joinPath(this.root, real).toString('latin1'), [...real]) : undefined;
    // A new node takes our euid and egid, unless a directory above it has S_ISGID (then it takes
    // that directory's group). While a layer is written only the root itself or an implied
    // directory copied from a lower layer can have S_ISGID (tar directories get their mode in
    // finish()), so the ids are certain when the root has none and there are no lowers.
    const euid = process.geteuid?.();
    const egid = process.getegid?.();
    this.createdIds =
      this.isRoot && euid !== undefined && egid !== undefined && this.lowers.length === 0 && (fs.statSync(this.root).mode & S_ISGID) === 0
        ? { uid: euid, gid: egid }
        : undefined;
  }

  /** Releases the root's fd. Call once no entry is being written any more, after a failure too; idempotent. */
  close(): void {
    if (this.rootFd === undefined) return;
    const fd = this.rootFd;
    this.rootFd = undefined;
    fs.closeSync(fd);
  }

  /** E5's lchown would change nothing on a node this writer just created: skip the syscall. */
  private ownedAsIs(meta: Meta): boolean {
    return this.createdIds !== undefined && this.createdIds.uid === meta.uid && this.createdIds.gid === meta.gid;
  }

  /** With deferImplied: the implied directories (components below the root) that no entry replaced. */
  impliedDirs(): Buffer[][] {
    return [...this.implied.values()];
  }

  /**
   * Writes one entry as its header arrives: everything but a regular file's data. Returns where that
   * data goes (the file stays open until the sink's end or abort), or undefined when the entry has
   * no data to keep (the reader skips it).
   */
  entry(header: TarHeader, pax: PaxRecords | undefined): EntrySink | undefined {
    const name = Buffer.from(header.name, 'latin1'); // the reader applied the PAX path and GNU long name
    try {
      return this.write(header, name, pax ?? NO_RECORDS);
    } catch (err) {
      throw this.wrap(err, `entry "${displayName(name)}"`);
    }
  }

  /** Applies directory metadata, deepest first. Call once, after the last entry succeeded. */
  async finish(): Promise<void> {
    const dirs = [...this.dirs.values()].sort((a, b) => b.depth - a.depth);
    this.dirs.clear();
    for (const d of dirs) {
      try {
        // O_NOFOLLOW|O_DIRECTORY: the final component must still be the directory we made; its
        // ancestors are real directories because every replacement goes through clear().
        const fd = fs.openSync(d.path, DIR_FLAGS);
        try {
          if (this.isRoot) fs.fchownSync(fd, d.meta.uid, d.meta.gid);
          fs.fchmodSync(fd, d.meta.mode);
          this.setXattrs(d.path, d.meta.xattrs);
          fs.futimesSync(fd, d.meta.atime, d.meta.mtime);
        } finally {
          fs.closeSync(fd);
        }
      } catch (err) {
        throw this.wrap(err, `directory "${displayName(d.path.subarray(this.root.length + 1))}"`);
      }
    }
  }

  private write(h: TarHeader, name: Buffer, pax: PaxRecords): EntrySink | undefined {
    const { limits, log } = this.opts;
    if (++this.entries > limits.maxEntries) {
      throw new EntryRejected('ERR_LIMIT_EXCEEDED', `more than ${limits.maxEntries} entries`, 'maxEntries');
    }
    for (const key of pax.keys()) {
      if (key.startsWith('GNU.sparse.')) throw new EntryRejected('ERR_UNSUPPORTED', 'GNU sparse files are not supported');
    }
    const type = h.type === 'contiguous-file' ? 'file' : h.type; // POSIX: treat '7' as a regular file
    switch (type) {
      case 'file':
      case 'directory':
      case 'symlink':
      case 'link':
      case 'fifo':
      case 'character-device':
      case 'block-device':
        break;
      default:
        throw new EntryRejected('ERR_UNSUPPORTED', `unsupported entry type ${String(type)}`);
    }
    const size = checkSize(h, type, limits.maxFileSize);
    const comps = parseEntryName(name, limits);
    const meta = parseMeta(h, pax, this.pickXattrs(pax, name));
    const base = comps[comps.length - 1];
    if (base === undefined) {
      log?.debug({ layer: this.opts.layer }, 'unpack: entry for the layer root skipped');
      return undefined;
    }
    const parentComps = comps.slice(0, -1);
    if (parentComps.some((c) => startsWith(c, WHITEOUT_PREFIX))) {
      throw new EntryRejected('ERR_INVALID_IMAGE', 'a whiteout name used as a directory');
    }

    if (startsWith(base, WHITEOUT_PREFIX)) {
      this.whiteout(parentComps, base, name);
      return undefined;
    }

    // A regular file under real directories only (most entries): made in one openat2 from the root.
    if (type === 'file' && this.rootFd !== undefined) {
      const fd = createBeneath(this.rootFd, relativePath(comps), this.createMode(meta));
      if (fd !== undefined) return this.fileSink(joinPath(this.root, comps), name, size, meta, fd);
    }

    const parent = this.resolveParent(parentComps);
    const real = [...parent, base];
    const path = joinPath(this.root, real);

    switch (type) {
      case 'directory': {
        // mkdir first (E3): it fails with EEXIST on anything at `path`, a dangling symlink
        // included, and never follows it; only then is it worth an lstat.
        try {
          fs.mkdirSync(path, 0o700);
        } catch (err) {
          if (errnoCode(err) !== 'EEXIST') throw err;
          if (lstatOrUndefined(path)?.isDirectory() !== true) {
            this.clear(path);
            fs.mkdirSync(path, 0o700);
          }
        }
        // A later entry for the same directory replaces the earlier metadata (dir over dir merges).
        this.dirs.set(path.toString('latin1'), { path, depth: real.length, meta });
        this.implied.delete(path.toString('latin1'));
        return undefined;
      }
      case 'file':
        return this.fileSink(path, name, size, meta);
      case 'symlink': {
        const target = Buffer.from(h.linkname ?? '', 'latin1');
        if (target.length === 0) throw new EntryRejected('ERR_INVALID_IMAGE', 'symlink with an empty target');
        if (target.includes(0)) throw new EntryRejected('ERR_UNSAFE_CONTENT', 'symlink target contains a NUL byte');
        if (target.length > limits.maxPathBytes) {
          throw new EntryRejected('ERR_LIMIT_EXCEEDED', `symlink target is ${target.length} bytes, limit is ${limits.maxPathBytes}`, 'maxPathBytes');
        }
        // The target is stored verbatim; it is confined when later entries resolve through it.
        this.replace(path, () => fs.symlinkSync(target, path));
        if (this.isRoot && !this.ownedAsIs(meta)) fs.lchownSync(path, meta.uid, meta.gid);
        this.dropXattrs(meta, 'symlink', name);
        fs.lutimesSync(path, meta.atime, meta.mtime);
        return undefined;
      }
      case 'link':
        this.hardlink(path, Buffer.from(h.linkname ?? '', 'latin1'));
        return undefined;
      case 'fifo':
        this.replace(path, () => mknod(path, fsc.S_IFIFO | 0o600, 0));
        this.special(path, meta, name);
        return undefined;
      case 'character-device':
      case 'block-device': {
        if (!this.opts.allowDevices || !this.isRoot) {
          log?.warn(
            { layer: this.opts.layer, entry: displayName(name), allowDevices: this.opts.allowDevices },
            'unpack: device node skipped',
          );
          return undefined;
        }
        const major = h.devmajor;
        const minor = h.devminor;
        if (!(Number.isInteger(major) && major >= 0 && major <= MAX_DEV_MAJOR && Number.isInteger(minor) && minor >= 0 && minor <= MAX_DEV_MINOR)) {
          throw new EntryRejected('ERR_INVALID_IMAGE', `device number ${major}:${minor} out of range`);
        }
        const dev = makedev(major, minor);
        this.replace(path, () => mknod(path, (type === 'block-device' ? fsc.S_IFBLK : fsc.S_IFCHR) | 0o600, dev));
        this.special(path, meta, name);
        return undefined;
      }
    }
  }

  /**
   * E3: `create` must fail with EEXIST when anything, even a dangling symlink, is at `path`
   * (O_CREAT|O_EXCL|O_NOFOLLOW, mknod, symlink, link). If it does, whatever is there is removed and
   * `create` runs once more. Trying first saves an lstat per entry in the common case.
   */
  private replace<T>(path: Buffer, create: () => T): T {
    try {
      return create();
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw err;
    }
    this.clear(path);
    return create();
  }

  /** E2: the parent directory `comps` inside the root, walked afresh, made if missing. */
  private resolveParent(comps: readonly Buffer[]): Buffer[] {
    const dir = resolveDirSync(this.root, comps, {
      create: true,
      lowers: this.lowers,
      ...(this.onImplied ? { onImplied: this.onImplied } : {}),
      ...(this.rootFd !== undefined ? { rootFd: this.rootFd } : {}),
    });
    if (dir === undefined) throw new EntryRejected('ERR_INTERNAL', 'parent vanished');
    return dir;
  }

  /** Removes whatever is at `path` (never following it), and forgets directories under it. */
  private clear(path: Buffer): void {
    const st = lstatOrUndefined(path);
    if (st === undefined) return;
    if (st.isDirectory()) {
      fs.rmSync(path, { recursive: true, force: true });
      const key = path.toString('latin1');
      for (const k of this.dirs.keys()) {
        if (k === key || k.startsWith(`${key}/`)) this.dirs.delete(k);
      }
      for (const k of this.implied.keys()) {
        if (k === key || k.startsWith(`${key}/`)) this.implied.delete(k);
      }
    } else {
      fs.unlinkSync(path);
    }
  }

  /**
   * The mode a file is created with: its final permission bits when open's umask leaves them whole
   * (most files), so the fchmod can go; else 0600, and the fchmod after the chown (setuid, setgid
   * and sticky bits always take that way). An fd from the creating open may write whatever the mode says.
   */
  private createMode(meta: Meta): number {
    return this.exactMode(meta) ? meta.mode : 0o600;
  }

  private exactMode(meta: Meta): boolean {
    return (meta.mode & ~0o777) === 0 && (meta.mode & this.umask) === 0;
  }

  /**
   * A regular file, open for its data: `created` is an fd of the file just made at `path`
   * (createBeneath); otherwise it is made here. The sink writes each chunk as it comes, and at the
   * end checks the size and applies the metadata; the fd is closed at end or abort, once.
   */
  private fileSink(path: Buffer, name: Buffer, size: number, meta: Meta, created?: number): EntrySink {
    const exact = this.exactMode(meta);
    let fd: number | undefined = created ?? this.replace(path, () => fs.openSync(path, CREATE_FLAGS, this.createMode(meta)));
    let written = 0;
    const close = (): void => {
      if (fd === undefined) return;
      const f = fd;
      fd = undefined;
      // An fd the addon made is closed by the addon (node warns when fs closes an fd it did not open).
      if (created !== undefined) closeFd(f);
      else fs.closeSync(f);
    };
    const fail = (err: unknown): never => {
      close();
      throw this.wrap(err, `entry "${displayName(name)}"`);
    };
    return {
      data: (chunk) => {
        if (fd === undefined) return;
        try {
          // Bytes are counted as the kernel took them: a short write is continued, never assumed.
          for (let off = 0; off < chunk.length; ) off += fs.writeSync(fd, chunk, off, chunk.length - off);
          written += chunk.length;
        } catch (err) {
          fail(err);
        }
      },
      end: () => {
        if (fd === undefined) return;
        try {
          if (written !== size) throw new EntryRejected('ERR_INVALID_IMAGE', `file data is ${written} bytes, header says ${size}`);
          // Data first: the kernel clears setuid/setgid and security.capability on write and chown.
          if (this.isRoot && !this.ownedAsIs(meta)) fs.fchownSync(fd, meta.uid, meta.gid);
          if (!exact) fs.fchmodSync(fd, meta.mode);
          this.setXattrs(path, meta.xattrs);
          fs.futimesSync(fd, meta.atime, meta.mtime);
        } catch (err) {
          fail(err);
        }
        close();
      },
      abort: close,
    };
  }

  /** Fifos and device nodes: no data, no xattrs (user.* is not allowed on special files). */
  private special(path: Buffer, meta: Meta, name: Buffer): void {
    if (this.isRoot) fs.lchownSync(path, meta.uid, meta.gid);
    fs.chmodSync(path, meta.mode); // the final component is the node just made, not a symlink
    this.dropXattrs(meta, 'special file', name);
    fs.lutimesSync(path, meta.atime, meta.mtime);
  }

  /** E4: the target must already exist in this layer; metadata is the target's. */
  private hardlink(path: Buffer, linkname: Buffer): void {
    const comps = parseEntryName(linkname, this.opts.limits, 'hardlink target');
    const base = comps[comps.length - 1];
    if (base === undefined) throw new EntryRejected('ERR_INVALID_IMAGE', 'hardlink to the layer root');
    const parent = resolveDirSync(this.root, comps.slice(0, -1), this.rootFd !== undefined ? { rootFd: this.rootFd } : {});
    const target = parent === undefined ? undefined : joinPath(this.root, [...parent, base]);
    const st = target === undefined ? undefined : lstatOrUndefined(target);
    // A 0:0 char device is a whiteout: the file it hides lives in a lower layer.
    if (target === undefined || st === undefined || (st.isCharacterDevice() && st.rdev === 0)) {
      throw new EntryRejected(
        'ERR_INVALID_IMAGE',
        `hardlink target "${displayName(linkname)}" is not in this layer (hardlink to a lower layer is not supported)`,
      );
    }
    if (st.isDirectory()) throw new EntryRejected('ERR_INVALID_IMAGE', `hardlink target "${displayName(linkname)}" is a directory`);
    if (target.equals(path)) throw new EntryRejected('ERR_INVALID_IMAGE', 'hardlink to itself');
    // Replacing a directory removes its content: a target under it would be gone before link(2).
    if (target.length > path.length && target[path.length] === 0x2f && target.subarray(0, path.length).equals(path)) {
      throw new EntryRejected('ERR_INVALID_IMAGE', `hardlink target "${displayName(linkname)}" is inside the directory the entry replaces`);
    }
    // link(2) does not follow a symlink target: it links the symlink itself.
    this.replace(path, () => fs.linkSync(target, path));
  }

  /**
   * E6, overlay format: `.wh.<name>` becomes a 0:0 char device at <name>, `.wh..wh..opq` the
   * trusted.overlay.opaque=y xattr on its directory (at the layer root: `opaqueRoot`, for the caller
   * to cut the lowerdir stack). A whiteout hides lower layers only: if <name> exists in this layer,
   * the whiteout is dropped rather than deleting it.
   */
  private whiteout(parentComps: Buffer[], base: Buffer, name: Buffer): void {
    const { log, layer } = this.opts;
    if (base.equals(OPAQUE)) {
      const dir = this.resolveParent(parentComps);
      if (dir.length === 0) {
        this.opaqueRoot = true;
        return;
      }
      lsetxattr(joinPath(this.root, dir), OVERLAY_OPAQUE_XATTR, Buffer.from('y'));
      return;
    }
    if (startsWith(base, WHITEOUT_META_PREFIX)) {
      log?.warn({ layer, entry: displayName(name) }, 'unpack: aufs metadata entry skipped');
      return;
    }
    const hidden = base.subarray(WHITEOUT_PREFIX.length);
    if (hidden.length === 0 || hidden.equals(Buffer.from('.')) || hidden.equals(Buffer.from('..'))) {
      throw new EntryRejected('ERR_UNSAFE_CONTENT', `whiteout for "${displayName(hidden)}"`);
    }
    const dir = this.resolveParent(parentComps);
    const path = joinPath(this.root, [...dir, hidden]);
    const st = lstatOrUndefined(path);
    if (st !== undefined) {
      if (!(st.isCharacterDevice() && st.rdev === 0)) {
        log?.warn({ layer, entry: displayName(name) }, 'unpack: whiteout for an entry of the same layer ignored');
      }
      return;
    }
    mknod(path, fsc.S_IFCHR, 0);
  }

  /** E7: keeps `user.*` and `security.capability` from SCHILY.xattr.*, within maxXattrBytes. */
  private pickXattrs(pax: PaxRecords, name: Buffer): ReadonlyMap<string, Buffer> {
    if (pax.size === 0) return NO_RECORDS;
    const kept = new Map<string, Buffer>();
    let bytes = 0;
    for (const [key, value] of pax) {
      if (!key.startsWith('SCHILY.xattr.')) continue;
      const attr = key.slice('SCHILY.xattr.'.length);
      if (!((attr.startsWith('user.') && attr.length > 'user.'.length) || attr === 'security.capability')) {
        this.opts.log?.debug({ layer: this.opts.layer, entry: displayName(name), xattr: displayName(Buffer.from(attr)) }, 'unpack: xattr dropped');
        continue;
      }
      bytes += Buffer.byteLength(attr) + value.length;
      if (bytes > this.opts.limits.maxXattrBytes) {
        throw new EntryRejected('ERR_LIMIT_EXCEEDED', `xattrs exceed ${this.opts.limits.maxXattrBytes} bytes`, 'maxXattrBytes');
      }
      kept.set(attr, value);
    }
    return kept;
  }

  private setXattrs(path: Buffer, xattrs: ReadonlyMap<string, Buffer>): void {
    for (const [attr, value] of xattrs) {
      try {
        lsetxattr(path, attr, value);
      } catch (err) {
        const code = errnoCode(err);
        if (attr.startsWith('user.') && (code === 'EOPNOTSUPP' || code === 'ENOTSUP')) {
          this.opts.log?.warn({ layer: this.opts.layer, xattr: attr }, 'unpack: filesystem does not support user xattrs, dropped');
          continue;
        }
        throw err;
      }
    }
  }

  private dropXattrs(meta: Meta, what: string, name: Buffer): void {
    if (meta.xattrs.size > 0) {
      this.opts.log?.debug({ layer: this.opts.layer, entry: displayName(name), what }, 'unpack: xattrs on a non-regular file dropped');
    }
  }

  private wrap(err: unknown, subject: string): BerthError {
    const prefix = `unpack layer ${this.opts.layer} ${subject}`;
    const details = { layer: this.opts.layer, subject };
    if (err instanceof EntryRejected) {
      return new BerthError(err.code, `${prefix}: ${err.message}`, { details: err.limit === undefined ? details : { ...details, limit: err.limit } });
    }
    if (err instanceof BerthError) {
      return new BerthError(err.code, `${prefix}: ${err.message}`, { cause: err, details: { ...err.details, ...details } });
    }
    return new BerthError(codeForErrno(errnoCode(err)), `${prefix}: ${messageOf(err)}`, { cause: err, details });
  }
}

/** Maps a failed syscall to the closest berth code. */
export function codeForErrno(code: string | undefined): ErrorCode {
  switch (code) {
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EMFILE':
    case 'ENFILE':
    case 'ENOMEM':
      return 'ERR_RESOURCE_EXHAUSTED';
    case 'EPERM':
    case 'EACCES':
    case 'EOPNOTSUPP':
    case 'ENOTSUP':
    case 'EROFS':
      return 'ERR_PRECONDITION'; // e.g. mknod or trusted.* xattrs without root
    case 'ENAMETOOLONG':
    case 'ENOTDIR':
    case 'EISDIR':
    case 'EEXIST':
    case 'ELOOP':
    case 'EMLINK':
    case 'E2BIG':
    case 'ERANGE':
    case 'EINVAL':
      return 'ERR_INVALID_IMAGE';
    default:
      return 'ERR_INTERNAL';
  }
}

/** E8: the data size (the reader applied a PAX size), checked before any byte is written. */
function checkSize(h: TarHeader, type: string, maxFileSize: number): number {
  const size = h.size;
  if (!Number.isSafeInteger(size) || size < 0) throw new EntryRejected('ERR_INVALID_IMAGE', `invalid size ${size}`);
  if (type === 'directory') return 0; // like Go, the reader skips no data after a directory header
  if (type !== 'file' && size !== 0) {
    // Go's archive/tar (and the reader) read no data for these types: a size there is refused as ambiguous.
    throw new EntryRejected('ERR_INVALID_IMAGE', `${type} entry with ${size} bytes of data`);
  }
  if (size > maxFileSize) throw new EntryRejected('ERR_LIMIT_EXCEEDED', `file is ${size} bytes, limit is ${maxFileSize}`, 'maxFileSize');
  return size;
}

/** E5: ids from PAX when present, in 0…2^32-2; PAX times keep their fraction. */
function parseMeta(h: TarHeader, pax: PaxRecords, xattrs: ReadonlyMap<string, Buffer>): Meta {
  const id = (key: 'uid' | 'gid', fallback: number): number => {
    const p = pax.get(key)?.toString('latin1');
    if (p !== undefined && !/^[0-9]{1,20}$/.test(p)) throw new EntryRejected('ERR_INVALID_IMAGE', `pax ${key} is malformed`);
    const v = p === undefined ? fallback : Number(p);
    if (!Number.isSafeInteger(v) || v < 0 || v > MAX_ID) {
      throw new EntryRejected('ERR_INVALID_IMAGE', `${key} ${String(v)} outside 0…${MAX_ID}`);
    }
    return v;
  };
  const time = (key: 'mtime' | 'atime', fallback: number): number => {
    const p = pax.get(key)?.toString('latin1');
    if (p !== undefined && !/^-?[0-9]{1,20}(\.[0-9]{0,9})?$/.test(p)) throw new EntryRejected('ERR_INVALID_IMAGE', `pax ${key} is malformed`);
    const v = p === undefined ? fallback : Number(p);
    if (!Number.isFinite(v)) throw new EntryRejected('ERR_INVALID_IMAGE', `invalid ${key}`);
    return v;
  };
  const { mode } = h;
  if (!Number.isInteger(mode) || mode < 0) throw new EntryRejected('ERR_INVALID_IMAGE', `invalid mode ${mode}`);
  const mtime = time('mtime', h.mtime);
  return {
    uid: id('uid', h.uid),
    gid: id('gid', h.gid),
    mode: mode & 0o7777,
    mtime,
    atime: time('atime', mtime),
    xattrs,
  };
}

function lstatOrUndefined(path: Buffer): fs.Stats | undefined {
  return fs.lstatSync(path, { throwIfNoEntry: false });
}

function startsWith(b: Buffer, prefix: Buffer): boolean {
  return b.length >= prefix.length && b.subarray(0, prefix.length).equals(prefix);
}

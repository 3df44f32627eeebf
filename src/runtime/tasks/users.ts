import { closeSync, constants as fsc, fstatSync, lstatSync, openSync, readlinkSync, readSync } from 'node:fs';
import { BerthError, errnoCode, messageOf } from '../../lib/errors.js';
import { isDotDot, MAX_SYMLINK_HOPS, splitPath } from '../unpack/resolve.js';

/**
 * The process user of a container, resolved as runc and containerd do (rule R1).
 *
 * The image's `User` takes the forms `name`, `uid`, `name:group`, `uid:gid`, `name:gid` and
 * `uid:group`; names are looked up in the rootfs's /etc/passwd and /etc/group. Those files are
 * image content (Class 2 input): they are read with chroot semantics, each path component opened
 * relative to the directory before it (openat through /proc/self/fd, O_NOFOLLOW), symlinks
 * re-rooted and `..` clamped at the root, so `/etc/passwd -> /etc/shadow` reads the image's
 * shadow file, never the host's (CVE-2024-9676 was podman reading them through the host). Only
 * regular files are read, at most MAX_ID_FILE_BYTES.
 *
 * Kubernetes overrides, as containerd's CRI plugin applies them: `runAsUser` replaces the image
 * user entirely (its group part too); the gid is then `runAsGroup`, else the passwd entry's
 * primary group, else 0. `additionalGids` is the primary gid, every /etc/group entry that lists
 * the user's name, then `supplementalGroups` — deduplicated, in that order (rule R2: the primary
 * gid is always among them). A numeric uid without a passwd entry runs with gid 0, as in runc and
 * containerd.
 *
 * Malformed lines (too few fields, non-numeric ids, NIS `+`/`-` entries, comments) are skipped,
 * never read as 0 (runc reads a bad number as 0). A matching entry whose id lies outside
 * 0…ID_MAX is an error (CVE-2024-40635), not skipped.
 */

/** The largest uid/gid: 2^32-1 is (uid_t)-1, "no change" to setresuid (CVE-2024-40635). */
export const ID_MAX = 2 ** 32 - 2;
/** /etc/passwd and /etc/group of real images are a few KiB; a larger file is refused. */
export const MAX_ID_FILE_BYTES = 4 * 1024 * 1024;

export interface ResolvedUser {
  uid: number;
  gid: number;
  /** The primary gid first. */
  additionalGids: number[];
  /** The passwd name of `uid`, when the image has an entry for it. */
  name?: string;
}

export interface UserOverrides {
  runAsUser?: number | undefined;
  runAsGroup?: number | undefined;
  supplementalGroups?: readonly number[] | undefined;
  /** Prefix for error messages, e.g. `container default.web.app`. */
  where?: string | undefined;
}

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
}

interface GroupEntry {
  name: string;
  gid: number;
  members: readonly string[];
}

/**
 * Resolves the image user `user` (undefined or '' is root) of the rootfs at `rootfs` with the
 * manifest's overrides. Reads the files only as needed; a missing /etc/passwd or /etc/group is
 * fine for numeric ids and an error for names.
 *
 * Errors: ERR_INVALID_IMAGE for an unknown user or group name (naming it and the file), an id
 * outside 0…ID_MAX, a `User` with more than one `:`, an id file that is not a regular file or has
 * more than MAX_SYMLINK_HOPS links on its path; ERR_LIMIT_EXCEEDED for an id file larger than
 * MAX_ID_FILE_BYTES; ERR_INVALID_MANIFEST for an override outside 0…ID_MAX. Reads only.
 */
export function resolveUser(rootfs: string, user: string | undefined, opts: UserOverrides = {}): ResolvedUser {
  const where = opts.where ?? 'resolve user';
  const files = new IdFiles(rootfs, where);
  const manifestId = (v: number, field: string): number => {
    if (!Number.isSafeInteger(v) || v < 0 || v > ID_MAX) throw new BerthError('ERR_INVALID_MANIFEST', `${where}: ${field} ${v} is outside 0..${ID_MAX}`);
    return v;
  };

  let uid: number;
  let entry: PasswdEntry | undefined;
  let groupPart = '';
  if (opts.runAsUser !== undefined) {
    uid = manifestId(opts.runAsUser, 'runAsUser');
    entry = files.passwd().find((p) => p.uid === uid);
  } else {
    const spec = user ?? '';
    const parts = spec.split(':');
    if (parts.length > 2) throw new BerthError('ERR_INVALID_IMAGE', `${where}: user ${quote(spec)} has more than one ':'`);
    const userPart = parts[0] ?? '';
    groupPart = parts[1] ?? '';
    if (userPart === '' || isNumeric(userPart)) {
      uid = userPart === '' ? 0 : imageId(userPart, `user ${quote(spec)}`, where);
      entry = files.passwd().find((p) => p.uid === uid);
    } else {
      entry = files.passwd().find((p) => p.name === userPart);
      if (entry === undefined) {
        throw new BerthError('ERR_INVALID_IMAGE', `${where}: user ${quote(userPart)} not found in the image's /etc/passwd${files.missing('etc/passwd') ? ' (the image has none)' : ''}`, { details: { user: userPart, file: '/etc/passwd' } });
      }
      uid = checkEntryId(entry.uid, `uid of user ${quote(entry.name)} in the image's /etc/passwd`, where);
    }
  }

  let gid: number;
  if (opts.runAsGroup !== undefined) {
    gid = manifestId(opts.runAsGroup, 'runAsGroup');
  } else if (groupPart !== '') {
    if (isNumeric(groupPart)) {
      gid = imageId(groupPart, `group ${quote(groupPart)} of user ${quote(user ?? '')}`, where);
    } else {
      const g = files.group().find((e) => e.name === groupPart);
      if (g === undefined) {
        throw new BerthError('ERR_INVALID_IMAGE', `${where}: group ${quote(groupPart)} not found in the image's /etc/group${files.missing('etc/group') ? ' (the image has none)' : ''}`, { details: { group: groupPart, file: '/etc/group' } });
      }
      gid = checkEntryId(g.gid, `gid of group ${quote(g.name)} in the image's /etc/group`, where);
    }
  } else {
    gid = entry === undefined ? 0 : checkEntryId(entry.gid, `primary gid of user ${quote(entry.name)} in the image's /etc/passwd`, where);
  }

  const gids = new Set<number>([gid]);
  if (entry !== undefined) {
    const name = entry.name;
    for (const g of files.group()) {
      if (g.members.includes(name)) gids.add(checkEntryId(g.gid, `gid of group ${quote(g.name)} in the image's /etc/group`, where));
    }
  }
  for (const g of opts.supplementalGroups ?? []) gids.add(manifestId(g, 'supplementalGroups entry'));
  return { uid, gid, additionalGids: [...gids], ...(entry !== undefined ? { name: entry.name } : {}) };
}

/**
 * The kubelet's runAsNonRoot check (verifyRunAsNonRoot). Pass the uid the container will run as
 * when it is known without reading the image's files — `runAsUser` when set, else the numeric
 * part of the image's User ('' or no User is uid 0) — and otherwise the image's user *name*: the
 * kubelet does not resolve names, so a named user cannot be verified and is refused. Call it only
 * when runAsNonRoot is true. Throws ERR_INVALID_MANIFEST (the pod's policy and its image
 * disagree: a manifest or image change is needed, retrying is pointless).
 */
export function checkRunAsNonRoot(uid: number | undefined, name: string | undefined, where: string): void {
  if (uid === 0 || (uid === undefined && (name === undefined || name === ''))) {
    throw new BerthError('ERR_INVALID_MANIFEST', `${where}: container has runAsNonRoot and image will run as root`);
  }
  if (uid === undefined) {
    throw new BerthError('ERR_INVALID_MANIFEST', `${where}: container has runAsNonRoot and image has non-numeric user (${quote(name ?? '')}), cannot verify user is non-root`);
  }
}

/**
 * What the kubelet knows of an image user without its files (containerd's getUserFromImage): the
 * uid when the user part is numeric, else the name; neither for an image without User (root).
 */
export function imageUserForPolicy(user: string | undefined): { uid?: number; name?: string } {
  const u = (user ?? '').split(':')[0] ?? '';
  if (u === '') return { uid: 0 };
  if (isNumeric(u)) {
    const n = Number(u);
    return Number.isSafeInteger(n) ? { uid: n } : { name: u };
  }
  return { name: u };
}

function isNumeric(s: string): boolean {
  return /^[0-9]+$/.test(s);
}

/** For messages: JSON-quoted (control characters escaped, so a hostile name cannot forge log lines), truncated. */
function quote(s: string): string {
  return JSON.stringify(s.length > 64 ? `${s.slice(0, 64)}…` : s).replace(/\x7f/g, '\\u007f');
}

function imageId(s: string, what: string, where: string): number {
  const n = Number(s);
  if (!Number.isSafeInteger(n) || n > ID_MAX) throw new BerthError('ERR_INVALID_IMAGE', `${where}: ${what} is outside 0..${ID_MAX}`);
  return n;
}

function checkEntryId(n: number, what: string, where: string): number {
  if (!Number.isSafeInteger(n) || n > ID_MAX) throw new BerthError('ERR_INVALID_IMAGE', `${where}: ${what} is outside 0..${ID_MAX}`);
  return n;
}

/** Lines of an id file that have at least `min` fields and a name that is not a NIS/comment marker. */
function records(text: string, min: number): string[][] {
  const out: string[][] = [];
  for (let line of text.split('\n')) {
    if (line.endsWith('\r')) line = line.slice(0, -1);
    if (line === '' || line.startsWith('#') || line.startsWith('+') || line.startsWith('-')) continue;
    const f = line.split(':');
    if (f.length < min || f[0] === '') continue;
    out.push(f);
  }
  return out;
}

/** A numeric field; NaN (matches nothing) when malformed, a number > ID_MAX when out of range. */
function idField(s: string | undefined): number {
  return s !== undefined && isNumeric(s) ? Number(s) : NaN;
}

function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const f of records(text, 4)) {
    const uid = idField(f[2]);
    const gid = idField(f[3]);
    if (Number.isNaN(uid) || Number.isNaN(gid)) continue;
    out.push({ name: f[0] as string, uid, gid });
  }
  return out;
}

function parseGroup(text: string): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const f of records(text, 3)) {
    const gid = idField(f[2]);
    if (Number.isNaN(gid)) continue;
    const members = (f[3] ?? '').split(',').filter((m) => m !== '');
    out.push({ name: f[0] as string, gid, members });
  }
  return out;
}

/** The two files of one resolution, each read at most once. */
class IdFiles {
  private pw: PasswdEntry[] | undefined;
  private gr: GroupEntry[] | undefined;
  private readonly absent = new Set<string>();

  constructor(
    private readonly rootfs: string,
    private readonly where: string,
  ) {}

  passwd(): PasswdEntry[] {
    this.pw ??= parsePasswd(this.read('etc/passwd'));
    return this.pw;
  }

  group(): GroupEntry[] {
    this.gr ??= parseGroup(this.read('etc/group'));
    return this.gr;
  }

  missing(rel: string): boolean {
    return this.absent.has(rel);
  }

  private read(rel: string): string {
    const buf = readInRoot(this.rootfs, rel, { maxBytes: MAX_ID_FILE_BYTES, where: this.where });
    if (buf === undefined) {
      this.absent.add(rel);
      return '';
    }
    return buf.toString('utf8');
  }
}

/** Components one resolution may visit, symlink expansions included (as the unpacker bounds it). */
const MAX_STEPS = 1024;

/**
 * Reads the regular file `rel` inside `root` with chroot semantics, without ever resolving a path
 * component outside it: each directory is opened relative to the previous one's descriptor
 * (`/proc/self/fd/N/name` with O_NOFOLLOW, an openat(2) Node lacks), so a directory swapped for a
 * symlink after it was checked cannot redirect the walk. Symlinks are followed by hand: absolute
 * targets restart at the root, `..` stops there, at most MAX_SYMLINK_HOPS hops. Undefined when a
 * component is missing or a non-final one is not a directory (the file does not exist in that
 * root). The final file is lstat'ed before it is opened (no open of a device or fifo), opened
 * O_NONBLOCK|O_NOFOLLOW and checked to be the same inode.
 */
export function readInRoot(root: string, rel: string, opts: { maxBytes: number; where: string }): Buffer | undefined {
  const shown = `/${rel}`;
  const fail = (reason: string): BerthError => new BerthError('ERR_INVALID_IMAGE', `${opts.where}: the image's ${shown} ${reason}`, { details: { file: shown } });
  const dirs: number[] = [openRoot(root, opts.where)];
  const todo = splitPath(Buffer.from(rel)).reverse();
  let hops = 0;
  let steps = 0;
  try {
    for (let c = todo.pop(); c !== undefined; c = todo.pop()) {
      if (++steps > MAX_STEPS) throw fail(`takes more than ${MAX_STEPS} path components to resolve`);
      if (isDotDot(c)) {
        if (dirs.length > 1) closeSync(dirs.pop() as number);
        continue;
      }
      const p = Buffer.concat([Buffer.from(`/proc/self/fd/${dirs[dirs.length - 1] as number}/`), c]);
      let st;
      try {
        st = lstatSync(p);
      } catch (err) {
        if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return undefined;
        throw fail(`cannot be read: ${messageOf(err)}`);
      }
      if (st.isSymbolicLink()) {
        if (++hops > MAX_SYMLINK_HOPS) throw fail(`has more than ${MAX_SYMLINK_HOPS} symlinks on its path`);
        const target = readlinkSync(p, { encoding: 'buffer' });
        if (target[0] === 0x2f) while (dirs.length > 1) closeSync(dirs.pop() as number);
        const more = splitPath(target);
        for (let i = more.length - 1; i >= 0; i--) todo.push(more[i] as Buffer);
        continue;
      }
      if (todo.length > 0) {
        if (!st.isDirectory()) return undefined;
        dirs.push(openChecked(p, fsc.O_RDONLY | fsc.O_DIRECTORY | fsc.O_NOFOLLOW, st, fail));
        continue;
      }
      if (!st.isFile()) throw fail('is not a regular file');
      if (st.size > opts.maxBytes) throw limit(opts.where, shown, opts.maxBytes);
      const fd = openChecked(p, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK, st, fail);
      try {
        return readBounded(fd, opts.maxBytes, opts.where, shown);
      } finally {
        closeSync(fd);
      }
    }
    // The path ended on a directory (the root itself, or a trailing `..`).
    throw fail('is not a regular file');
  } finally {
    for (const fd of dirs) closeSync(fd);
  }
}

function openRoot(root: string, where: string): number {
  let fd: number;
  try {
    fd = openSync(root, fsc.O_RDONLY | fsc.O_DIRECTORY);
  } catch (err) {
    throw new BerthError(errnoCode(err) === 'ENOENT' ? 'ERR_NOT_FOUND' : 'ERR_IO', `${where}: rootfs ${root}: ${messageOf(err)}`, { cause: err });
  }
  try {
    lstatSync(`/proc/self/fd/${fd}`);
  } catch (err) {
    closeSync(fd);
    // Without it every lookup would look like a missing file and names would fail as "not found".
    throw new BerthError('ERR_PRECONDITION', `${where}: /proc is not mounted; resolving image users inside the rootfs needs /proc/self/fd`, { cause: err });
  }
  return fd;
}

function limit(where: string, shown: string, max: number): BerthError {
  return new BerthError('ERR_LIMIT_EXCEEDED', `${where}: the image's ${shown} is larger than ${max} bytes`, { details: { file: shown, limit: max } });
}

/** Opens what was just lstat'ed and makes sure it still is that inode (it may have been swapped). */
function openChecked(p: Buffer, flags: number, st: { ino: number; dev: number }, fail: (reason: string) => BerthError): number {
  let fd: number;
  try {
    fd = openSync(p, flags);
  } catch (err) {
    throw fail(`changed while it was being resolved (${errnoCode(err) ?? messageOf(err)})`);
  }
  const now = fstatSync(fd);
  if (now.ino !== st.ino || now.dev !== st.dev) {
    closeSync(fd);
    throw fail('changed while it was being resolved');
  }
  return fd;
}

function readBounded(fd: number, max: number, where: string, shown: string): Buffer {
  const chunks: Buffer[] = [];
  let total = 0;
  for (;;) {
    const buf = Buffer.alloc(64 * 1024);
    const n = readSync(fd, buf, 0, buf.length, null);
    if (n === 0) break;
    total += n;
    if (total > max) throw limit(where, shown, max);
    chunks.push(buf.subarray(0, n));
  }
  return Buffer.concat(chunks, total);
}

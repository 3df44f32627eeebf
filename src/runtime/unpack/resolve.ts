import { isUtf8 } from 'node:buffer';
import * as fs from 'node:fs';
import type { ErrorCode } from '../../lib/errors.js';
import { printable } from '../../lib/log.js';
import { realDirBeneath } from '../../lib/sys.js';

/**
 * Confined path handling inside one layer directory (E2, E9).
 *
 * Names are byte strings (Buffers): tar names are latin1-decoded by TarReader, which maps bytes
 * 1:1, so `Buffer.from(name, 'latin1')` recovers them exactly; nothing is normalised.
 */

/** Linux's MAXSYMLINKS. */
export const MAX_SYMLINK_HOPS = 40;

/** Directories created implicitly for missing parents, as containerd and moby do. */
export const IMPLICIT_DIR_MODE = 0o755;

const SLASH = 0x2f;
const SEP = Buffer.from('/');

/** A problem with one entry; the unpacker adds the layer digest and entry name to the message. */
export class EntryRejected extends Error {
  readonly code: ErrorCode;
  /** For ERR_LIMIT_EXCEEDED: which UnpackLimits field was exceeded. */
  readonly limit: string | undefined;
  constructor(code: ErrorCode, message: string, limit?: string) {
    super(message);
    this.name = 'EntryRejected';
    this.code = code;
    this.limit = limit;
  }
}

/** Splits on '/', dropping empty and '.' components (so "./a//b" is a/b); keeps '..'. */
export function splitPath(p: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let start = 0;
  for (let i = 0; i <= p.length; i++) {
    if (i === p.length || p[i] === SLASH) {
      const c = p.subarray(start, i);
      if (!(c.length === 0 || (c.length === 1 && c[0] === 0x2e))) out.push(c);
      start = i + 1;
    }
  }
  return out;
}

export function isDotDot(c: Buffer): boolean {
  return c.length === 2 && c[0] === 0x2e && c[1] === 0x2e;
}

export interface NameLimits {
  maxPathBytes: number;
  maxDepth: number;
}

/**
 * Validates a tar entry name (or hardlink target) and returns its components.
 * Leading "./" and repeated slashes are accepted; absolute names and any `..` component are
 * rejected (berth decision: names never climb, only symlink targets are confined). An empty result
 * means the name is the layer root.
 */
export function parseEntryName(name: Buffer, limits: NameLimits, what = 'name'): Buffer[] {
  if (name.includes(0)) throw new EntryRejected('ERR_UNSAFE_CONTENT', `${what} contains a NUL byte`);
  if (name.length > limits.maxPathBytes) {
    throw new EntryRejected('ERR_LIMIT_EXCEEDED', `${what} is ${name.length} bytes, limit is ${limits.maxPathBytes}`, 'maxPathBytes');
  }
  if (name[0] === SLASH) throw new EntryRejected('ERR_UNSAFE_CONTENT', `absolute ${what}`);
  const comps = splitPath(name);
  if (comps.some(isDotDot)) throw new EntryRejected('ERR_UNSAFE_CONTENT', `${what} contains a '..' component`);
  if (comps.length > limits.maxDepth) {
    throw new EntryRejected('ERR_LIMIT_EXCEEDED', `${what} is ${comps.length} levels deep, limit is ${limits.maxDepth}`, 'maxDepth');
  }
  return comps;
}

/** Whether realDirBeneath can be asked (false once the kernel has said it has no openat2). */
let kernelWalk = true;
const EMPTY = Buffer.alloc(0);

/** Components one path resolution may visit, symlink expansions included. */
export const MAX_RESOLVE_STEPS = 1024;

export function joinPath(root: Buffer, comps: readonly Buffer[]): Buffer {
  const parts: Buffer[] = [root];
  for (const c of comps) parts.push(SEP, c);
  return Buffer.concat(parts);
}

/** `comps` as a path relative to the root (`a/b/c`), for the *at and openat2 calls that start from the root. */
export function relativePath(comps: readonly Buffer[]): Buffer {
  return joinPath(EMPTY, comps).subarray(1);
}

export interface ResolveDirOptions {
  /** Make missing directories (IMPLICIT_DIR_MODE, or the lowers' metadata). Default false. */
  create?: boolean;
  /** Parent layers' roots, topmost first: implied directories copy their metadata from there. */
  lowers?: readonly Buffer[];
  /** Called with the real components of each directory made. */
  onImplied?: (real: readonly Buffer[]) => void;
  /** An open fd of `root` itself, for the kernel walk (saves opening the root by path each time). */
  rootFd?: number;
}

/**
 * Resolves `comps` as a directory inside `root`, following symlinks with chroot semantics:
 * `..` stops at the root, absolute targets restart at the root, at most MAX_SYMLINK_HOPS hops.
 * Every component is looked at afresh (E2: no caching across entries — an earlier entry may have
 * replaced it): first by the kernel in one openat2 that accepts real directories only, and when that
 * says no, by an lstat per component here. Returns the real components (no symlinks among them) or, when a component is
 * missing and `create` is false, undefined. With `create`, missing directories are made. A
 * component that is neither a directory nor a symlink is an error.
 *
 * Synchronous: each step is one metadata syscall on a local directory the unpacker owns, and doing
 * them on the calling thread avoids a libuv thread-pool round trip (two futex wake-ups, an epoll
 * wait) per component, which cost more than the lstat itself (bench/README.md, bench/pull).
 */
export function resolveDirSync(root: Buffer, comps: readonly Buffer[], o: ResolveDirOptions = {}): Buffer[] | undefined {
  if (comps.length > 0 && kernelWalk && !comps.some(isDotDot)) {
    // The common case, every component already a real directory, checked by the kernel in one
    // openat2 that walks the same components afresh and fails on any symlink (see realDirBeneath).
    // Anything else (a symlink to follow, a directory to make, no openat2) takes the walk below.
    const ok = realDirBeneath(o.rootFd ?? root, relativePath(comps));
    if (ok === true) return comps.slice();
    if (ok === undefined) kernelWalk = false;
  }
  const real: Buffer[] = [];
  const todo = comps.slice().reverse(); // a stack: next component on top
  let hops = 0;
  let steps = 0;
  for (let c = todo.pop(); c !== undefined; c = todo.pop()) {
    // Symlink targets can each add ~2,000 components ("a/../a/.." …); 40 of them per entry
    // would cost tens of thousands of lstat calls. Legitimate paths need far fewer.
    if (++steps > MAX_RESOLVE_STEPS) {
      throw new EntryRejected('ERR_UNSAFE_CONTENT', `resolving the path takes more than ${MAX_RESOLVE_STEPS} components (symlink amplification)`);
    }
    if (isDotDot(c)) {
      real.pop();
    } else {
      const p = joinPath(root, [...real, c]);
      const st = fs.lstatSync(p, { throwIfNoEntry: false });
      if (st === undefined) {
        if (o.create !== true) return undefined;
        makeImplicitDir(p, [...real, c], o.lowers ?? []);
        real.push(c);
        o.onImplied?.(real.slice());
      } else if (st.isDirectory()) {
        real.push(c);
      } else if (st.isSymbolicLink()) {
        if (++hops > MAX_SYMLINK_HOPS) {
          throw new EntryRejected('ERR_UNSAFE_CONTENT', `more than ${MAX_SYMLINK_HOPS} symlinks in the path`);
        }
        const target = fs.readlinkSync(p, { encoding: 'buffer' });
        if (target[0] === SLASH) real.length = 0;
        const more = splitPath(target);
        for (let i = more.length - 1; i >= 0; i--) todo.push(more[i] as Buffer);
      } else {
        throw new EntryRejected('ERR_INVALID_IMAGE', `path component "${displayName(c)}" is not a directory`);
      }
    }
  }
  return real;
}

/**
 * Creates a directory the tar implies but does not list (`tmp/x` without `tmp/`). In the
 * overlay this upper directory hides the lower one's metadata, so it copies mode, owner and
 * times from the same path in the parent layers (topmost first, resolved with the same
 * confinement), as a copy-up would; IMPLICIT_DIR_MODE root:root only when no layer has it.
 */
function makeImplicitDir(p: Buffer, comps: readonly Buffer[], lowers: readonly Buffer[]): void {
  const st = lowerDir(comps, lowers);
  if (st !== undefined) {
    fs.mkdirSync(p, 0o700);
    if (process.getuid?.() === 0) fs.lchownSync(p, st.uid, st.gid);
    fs.chmodSync(p, st.mode & 0o7777); // after chown, which clears setgid; exact, unlike mkdir's umask
    fs.lutimesSync(p, st.atime, st.mtime);
    return;
  }
  fs.mkdirSync(p, IMPLICIT_DIR_MODE);
}

/** The directory at `comps` in the topmost of `lowers` that has one, resolved confined; else undefined. */
function lowerDir(comps: readonly Buffer[], lowers: readonly Buffer[]): fs.Stats | undefined {
  for (const lower of lowers) {
    let found: Buffer[] | undefined;
    try {
      found = resolveDirSync(lower, comps);
    } catch {
      found = undefined;
    }
    if (found === undefined) continue;
    const st = fs.lstatSync(joinPath(lower, found), { throwIfNoEntry: false });
    if (st?.isDirectory() === true) return st;
  }
  return undefined;
}

/**
 * Gives directories made by makeImplicitDir without lowers (a layer unpacked before its parents were
 * ready) the metadata they would have had: for each, in `root`, the mode, owner and times of the
 * same path in `lowers` (topmost first, resolved confined). A directory that was replaced since
 * (any component of it is no longer a real directory) is left alone, as is one no lower has.
 */
export function copyImpliedDirMeta(root: Buffer, dirs: readonly (readonly Buffer[])[], lowers: readonly Buffer[]): void {
  if (lowers.length === 0) return;
  for (const comps of dirs) {
    let real = true;
    for (let i = 1; i <= comps.length && real; i++) real = fs.lstatSync(joinPath(root, comps.slice(0, i)), { throwIfNoEntry: false })?.isDirectory() === true;
    if (!real) continue;
    const st = lowerDir(comps, lowers);
    if (st === undefined) continue;
    const p = joinPath(root, comps);
    if (process.getuid?.() === 0) fs.lchownSync(p, st.uid, st.gid);
    fs.chmodSync(p, st.mode & 0o7777); // after chown, which clears setgid
    fs.lutimesSync(p, st.atime, st.mtime);
  }
}

/** resolveDirSync as a promise, for callers that do not care which thread does the work. */
export async function resolveDir(root: Buffer, comps: readonly Buffer[], create: boolean, lowers: readonly Buffer[] = []): Promise<Buffer[] | undefined> {
  return resolveDirSync(root, comps, { create, lowers });
}

/**
 * A name for messages and logs: UTF-8 when the bytes are valid UTF-8, else latin1, with C0/C1
 * controls and bidi overrides escaped so a hostile name cannot forge or reorder log lines.
 * Truncated to 256 characters.
 */
export function displayName(name: Buffer): string {
  const s = isUtf8(name) ? name.toString('utf8') : name.toString('latin1');
  const shown = printable(s.length > 256 ? `${s.slice(0, 256)}…` : s);
  return shown.replace(/[\u0080-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

import { isUtf8 } from 'node:buffer';
import { promises as fsp } from 'node:fs';
import type { ErrorCode } from '../../lib/errors.js';
import { errnoCode } from '../../lib/errors.js';
import { printable } from '../../lib/log.js';

/**
 * Confined path handling inside one layer directory (E2, E9).
 *
 * Names are byte strings (Buffers): tar names are latin1-decoded by tar-stream, which maps bytes
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

/** Components one path resolution may visit, symlink expansions included. */
export const MAX_RESOLVE_STEPS = 1024;

export function joinPath(root: Buffer, comps: readonly Buffer[]): Buffer {
  const parts: Buffer[] = [root];
  for (const c of comps) parts.push(SEP, c);
  return Buffer.concat(parts);
}

/**
 * Resolves `comps` as a directory inside `root`, following symlinks with chroot semantics:
 * `..` stops at the root, absolute targets restart at the root, at most MAX_SYMLINK_HOPS hops.
 * Every component is lstat'ed afresh (no caching across entries: an earlier entry may have replaced
 * it). Returns the real components (no symlinks among them) or, when a component is missing and
 * `create` is false, undefined. With `create`, missing directories are made with IMPLICIT_DIR_MODE.
 * A component that is neither a directory nor a symlink is an error.
 */
export async function resolveDir(root: Buffer, comps: readonly Buffer[], create: boolean, lowers: readonly Buffer[] = []): Promise<Buffer[] | undefined> {
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
      continue;
    }
    const p = joinPath(root, [...real, c]);
    let st;
    try {
      st = await fsp.lstat(p);
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
      if (!create) return undefined;
      await makeImplicitDir(p, [...real, c], lowers);
      real.push(c);
      continue;
    }
    if (st.isDirectory()) {
      real.push(c);
    } else if (st.isSymbolicLink()) {
      if (++hops > MAX_SYMLINK_HOPS) {
        throw new EntryRejected('ERR_UNSAFE_CONTENT', `more than ${MAX_SYMLINK_HOPS} symlinks in the path`);
      }
      const target = await fsp.readlink(p, { encoding: 'buffer' });
      if (target[0] === SLASH) real.length = 0;
      const more = splitPath(target);
      for (let i = more.length - 1; i >= 0; i--) todo.push(more[i] as Buffer);
    } else {
      throw new EntryRejected('ERR_INVALID_IMAGE', `path component "${displayName(c)}" is not a directory`);
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
async function makeImplicitDir(p: Buffer, comps: readonly Buffer[], lowers: readonly Buffer[]): Promise<void> {
  for (const lower of lowers) {
    const found = await resolveDir(lower, comps, false).catch(() => undefined);
    if (found === undefined) continue;
    const st = await fsp.lstat(joinPath(lower, found)).catch(() => undefined);
    if (st === undefined || !st.isDirectory()) continue;
    await fsp.mkdir(p, 0o700);
    if (process.getuid?.() === 0) await fsp.lchown(p, st.uid, st.gid);
    await fsp.chmod(p, st.mode & 0o7777); // after chown, which clears setgid; exact, unlike mkdir's umask
    await fsp.lutimes(p, st.atime, st.mtime);
    return;
  }
  await fsp.mkdir(p, IMPLICIT_DIR_MODE);
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

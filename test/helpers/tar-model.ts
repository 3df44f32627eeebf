/**
 * A reference model of what berth's layer unpacker (src/runtime/unpack) must leave in a layer
 * directory, for the property tests in test/integration/property-layers.test.ts.
 *
 * The model is written from the rules, not from the unpacker's code: INVARIANTS.md E2–E9, the
 * decisions at the top of src/runtime/unpack/index.ts and docs/hostile-images.md. It works on an
 * in-memory tree and never touches the disk:
 *
 * - chroot semantics: symlinks in an entry's parent path are followed inside the layer root, `..`
 *   stops at the root, absolute targets restart at the root, at most 40 symlinks per resolution;
 *   missing parents are created (mode copied from the same directory in the lower layers, else
 *   0755 minus the umask, plus S_ISGID when mkdir(2) inherits it from a parent that has it);
 * - later entry wins: whatever is at the final component is replaced (never followed), except a
 *   directory over a directory, which keeps its content and takes the later mode;
 * - refusals, predicted as the error code: absolute names and `..` in names (ERR_UNSAFE_CONTENT),
 *   a parent path through a file (ERR_INVALID_IMAGE), a hardlink whose target is not in this layer,
 *   is a directory or is itself (ERR_INVALID_IMAGE), symlink loops (ERR_UNSAFE_CONTENT), whiteouts
 *   of '', '.' and '..' (ERR_UNSAFE_CONTENT), a whiteout name as a directory (ERR_INVALID_IMAGE),
 *   the configured limits (ERR_LIMIT_EXCEEDED);
 * - whiteouts in overlay format, applied against lower layers only: `.wh.x` becomes a 0:0 char
 *   device at x unless x exists in this layer (then it is ignored); `.wh..wh..opq` marks its
 *   directory opaque (at the root: the layer's `opaqueRoot`); other `.wh..wh.*` names are skipped;
 * - device nodes are skipped (the tests run with allowDevices false), after their parents exist.
 *
 * Names are byte strings carried in JS strings as latin1 (one char per byte).
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { ErrorCode } from '../../src/lib/errors.js';
import { lgetxattr } from '../../src/lib/sys.js';

export type EntryType = 'file' | 'directory' | 'symlink' | 'link' | 'fifo' | 'character-device';

/** One tar member as the test writes it; `name` and `target` are the bytes (latin1) berth will read. */
export interface EntrySpec {
  type: EntryType;
  name: string;
  mode: number;
  /** Symlink or hardlink target. */
  target?: string;
  /** File data (latin1). */
  data?: string;
}

export interface ModelLimits {
  maxEntries: number;
  maxFileSize: number;
  maxPathBytes: number;
  maxDepth: number;
}

export type Node = DirNode | FileNode | LinkNode | FifoNode | WhiteoutNode;
export interface DirNode {
  t: 'dir';
  mode: number;
  /**
   * Whether the directory has S_ISGID while the layer is being written (explicit directories get
   * their mode only at the end): mkdir(2) under such a directory inherits the bit.
   */
  setgidNow: boolean;
  opaque: boolean;
  children: Map<string, Node>;
}
/** Files, symlinks and fifos are objects: hardlinks share them (same inode). */
export interface FileNode {
  t: 'file';
  mode: number;
  data: string;
}
export interface LinkNode {
  t: 'symlink';
  target: string;
}
export interface FifoNode {
  t: 'fifo';
  mode: number;
}
export interface WhiteoutNode {
  t: 'whiteout';
}

export type LayerOutcome = { ok: true; root: DirNode; opaqueRoot: boolean } | { ok: false; code: ErrorCode; entry: number; why: string };

const MAX_HOPS = 40;
const WH = '.wh.';
const WH_META = '.wh..wh.';
const OPQ = '.wh..wh..opq';

class Refused extends Error {
  constructor(
    readonly code: ErrorCode,
    why: string,
  ) {
    super(why);
  }
}

/** Components of a slash-separated byte string, without empty and '.' ones. */
export function components(p: string): string[] {
  return p.split('/').filter((c) => c !== '' && c !== '.');
}

export function newDir(mode: number, setgidNow = false): DirNode {
  return { t: 'dir', mode, setgidNow, opaque: false, children: new Map() };
}

/**
 * Where `comps` leads as a directory inside `root`, following symlinks (chroot semantics).
 * Returns the real path (directory names only); with `create`, missing directories are made by
 * `mkImplicit`; without it a missing one gives undefined. A file on the way is ERR_INVALID_IMAGE.
 */
function walkDir(root: DirNode, comps: readonly string[], create: ((real: string[], parent: DirNode) => DirNode) | undefined): string[] | undefined {
  const real: string[] = [];
  const stack: DirNode[] = [root];
  const pending = [...comps];
  let hops = 0;
  while (pending.length > 0) {
    const c = pending.shift() as string;
    if (c === '..') {
      if (real.length > 0) {
        real.pop();
        stack.pop();
      }
      continue;
    }
    const here = stack[stack.length - 1] as DirNode;
    const node = here.children.get(c);
    if (node === undefined) {
      if (create === undefined) return undefined;
      const d = create([...real, c], here);
      here.children.set(c, d);
      real.push(c);
      stack.push(d);
    } else if (node.t === 'dir') {
      real.push(c);
      stack.push(node);
    } else if (node.t === 'symlink') {
      if (++hops > MAX_HOPS) throw new Refused('ERR_UNSAFE_CONTENT', 'too many symlinks');
      if (node.target.startsWith('/')) {
        real.length = 0;
        stack.length = 1;
      }
      pending.unshift(...components(node.target));
    } else {
      throw new Refused('ERR_INVALID_IMAGE', 'a path component is not a directory');
    }
  }
  return real;
}

function dirAt(root: DirNode, real: readonly string[]): DirNode {
  let d = root;
  for (const c of real) d = d.children.get(c) as DirNode;
  return d;
}

/** The checks berth makes on an entry name or hardlink target before anything else (E2, E8, E9). */
function checkName(name: string, limits: ModelLimits): string[] {
  if (name.includes('\0')) throw new Refused('ERR_UNSAFE_CONTENT', 'NUL in a name');
  if (name.length > limits.maxPathBytes) throw new Refused('ERR_LIMIT_EXCEEDED', 'name too long');
  if (name.startsWith('/')) throw new Refused('ERR_UNSAFE_CONTENT', 'absolute name');
  const comps = components(name);
  if (comps.includes('..')) throw new Refused('ERR_UNSAFE_CONTENT', '.. in a name');
  if (comps.length > limits.maxDepth) throw new Refused('ERR_LIMIT_EXCEEDED', 'name too deep');
  return comps;
}

/**
 * The predicted outcome of unpacking `entries` as one layer into an empty directory, over
 * `lowers` (the predicted trees of the parent layers, topmost first). `rootMode` is the mode of the
 * (empty) directory the layer is unpacked into.
 */
export function modelLayer(entries: readonly EntrySpec[], lowers: readonly DirNode[], limits: ModelLimits, umask: number, rootMode: number): LayerOutcome {
  // The layer directory is the caller's; its mode matters when a later layer's implicit directory
  // resolves to it (a lower symlink to '..' or '/'), since that directory copies it.
  const root = newDir(rootMode, false);
  let opaqueRoot = false;
  // A directory the tar implies: it copies the mode of the same directory in a lower layer (as
  // an overlay copy-up would), resolved there with the same confinement.
  const mkImplicit = (real: string[], parent: DirNode): DirNode => {
    for (const lower of lowers) {
      let found: string[] | undefined;
      try {
        found = walkDir(lower, real, undefined);
      } catch {
        found = undefined;
      }
      if (found !== undefined) {
        const m = dirAt(lower, found).mode;
        return newDir(m, (m & 0o2000) !== 0);
      }
    }
    // mkdir(2) under a directory that has S_ISGID at that moment inherits it (Linux).
    return newDir((0o755 & ~umask) | (parent.setgidNow ? 0o2000 : 0), parent.setgidNow);
  };

  for (const [i, e] of entries.entries()) {
    try {
      if (i + 1 > limits.maxEntries) throw new Refused('ERR_LIMIT_EXCEEDED', 'too many entries');
      if (e.type === 'file' && (e.data ?? '').length > limits.maxFileSize) throw new Refused('ERR_LIMIT_EXCEEDED', 'file too large');
      const comps = checkName(e.name, limits);
      const base = comps[comps.length - 1];
      if (base === undefined) continue; // the layer root itself: skipped
      const parentComps = comps.slice(0, -1);
      if (parentComps.some((c) => c.startsWith(WH))) throw new Refused('ERR_INVALID_IMAGE', 'whiteout name as a directory');

      if (base.startsWith(WH)) {
        // Whatever the entry's type, a .wh. name is a whiteout.
        if (base === OPQ) {
          const real = walkDir(root, parentComps, mkImplicit) as string[];
          if (real.length === 0) opaqueRoot = true;
          else dirAt(root, real).opaque = true;
          continue;
        }
        if (base.startsWith(WH_META)) continue; // aufs metadata: skipped
        const hidden = base.slice(WH.length);
        if (hidden === '' || hidden === '.' || hidden === '..') throw new Refused('ERR_UNSAFE_CONTENT', 'whiteout of . or ..');
        const dir = dirAt(root, walkDir(root, parentComps, mkImplicit) as string[]);
        if (!dir.children.has(hidden)) dir.children.set(hidden, { t: 'whiteout' });
        continue;
      }

      const parentReal = walkDir(root, parentComps, mkImplicit) as string[];
      const parent = dirAt(root, parentReal);
      const existing = parent.children.get(base);
      switch (e.type) {
        case 'directory':
          if (existing?.t === 'dir') existing.mode = e.mode; // on disk it keeps its mode until the end
          else parent.children.set(base, newDir(e.mode, parent.setgidNow));
          break;
        case 'file':
          parent.children.set(base, { t: 'file', mode: e.mode, data: e.data ?? '' });
          break;
        case 'fifo':
          parent.children.set(base, { t: 'fifo', mode: e.mode });
          break;
        case 'character-device':
          break; // skipped without allowDevices
        case 'symlink': {
          const target = e.target ?? '';
          if (target === '') throw new Refused('ERR_INVALID_IMAGE', 'empty symlink target');
          if (target.includes('\0')) throw new Refused('ERR_UNSAFE_CONTENT', 'NUL in a symlink target');
          if (target.length > limits.maxPathBytes) throw new Refused('ERR_LIMIT_EXCEEDED', 'symlink target too long');
          parent.children.set(base, { t: 'symlink', target });
          break;
        }
        case 'link': {
          const tcomps = checkName(e.target ?? '', limits);
          const tbase = tcomps[tcomps.length - 1];
          if (tbase === undefined) throw new Refused('ERR_INVALID_IMAGE', 'hardlink to the root');
          const treal = walkDir(root, tcomps.slice(0, -1), undefined);
          const tnode = treal === undefined ? undefined : dirAt(root, treal).children.get(tbase);
          if (tnode === undefined || tnode.t === 'whiteout') throw new Refused('ERR_INVALID_IMAGE', 'hardlink target not in this layer');
          if (tnode.t === 'dir') throw new Refused('ERR_INVALID_IMAGE', 'hardlink to a directory');
          const tpath = [...(treal as string[]), tbase];
          const epath = [...parentReal, base];
          if (tpath.join('/') === epath.join('/')) throw new Refused('ERR_INVALID_IMAGE', 'hardlink to itself');
          // Replacing a directory removes what is under it: a target below it (by path; another
          // name of the same inode elsewhere keeps it alive) would be gone.
          if (tpath.length > epath.length && epath.every((c, k) => tpath[k] === c)) {
            throw new Refused('ERR_INVALID_IMAGE', 'hardlink target inside the directory it replaces');
          }
          parent.children.set(base, tnode);
          break;
        }
      }
    } catch (err) {
      if (err instanceof Refused) return { ok: false, code: err.code, entry: i, why: err.message };
      throw err;
    }
  }
  return { ok: true, root, opaqueRoot };
}

// ── the overlay view ────────────────────────────────────────────────────────────────────────────

/**
 * What an overlay mount of layer directories shows (lowerdir only, topmost first), from the
 * predicted layer trees: overlayfs's lookup rules, written from its documentation. For each name
 * the topmost layer that has it decides: a whiteout hides it, a non-directory is shown as is, a
 * directory is merged with the directories of the same name below it, down to the first layer
 * where the name is not a directory, or after a directory marked opaque. A layer whose root
 * carried `.wh..wh..opq` ends the stack (berth's Snapshotter.lowerDirs does the cut).
 */
export function mergeModel(layers: readonly { root: DirNode; opaqueRoot: boolean }[]): DirNode {
  const stack: DirNode[] = [];
  for (const l of layers) {
    stack.push(l.root);
    if (l.opaqueRoot) break;
  }
  return mergeDirs(stack, stack[0]?.mode ?? 0o755);
}

function mergeDirs(dirs: readonly DirNode[], mode: number): DirNode {
  const out = newDir(mode);
  const names = new Set<string>();
  for (const d of dirs) for (const n of d.children.keys()) names.add(n);
  for (const name of names) {
    const below: DirNode[] = [];
    let shown: Node | undefined;
    for (const d of dirs) {
      const n = d.children.get(name);
      if (n === undefined) continue;
      if (below.length === 0) {
        if (n.t !== 'dir') {
          shown = n.t === 'whiteout' ? undefined : n;
          break;
        }
        below.push(n);
        if (n.opaque) break;
        continue;
      }
      if (n.t !== 'dir') break; // a whiteout or a non-directory under a directory ends the merge
      below.push(n);
      if (n.opaque) break;
    }
    if (below.length > 0) out.children.set(name, mergeDirs(below, (below[0] as DirNode).mode));
    else if (shown !== undefined) out.children.set(name, shown);
  }
  return out;
}

// ── comparison ──────────────────────────────────────────────────────────────────────────────────

/** One line per path, `path type mode detail`, sorted; plus the hardlink groups (paths sharing an inode). */
export interface Listing {
  lines: string[];
  links: string[];
}

const esc = (s: string): string => JSON.stringify(s);

export function listModel(root: DirNode): Listing {
  const lines: string[] = [];
  const ids = new Map<Node, string[]>();
  const walk = (d: DirNode, prefix: string): void => {
    for (const [name, n] of d.children) {
      const p = prefix === '' ? name : `${prefix}/${name}`;
      if (n.t === 'dir') {
        lines.push(`${esc(p)} d ${mode(n.mode)}${n.opaque ? ' opaque' : ''}`);
        walk(n, p);
        continue;
      }
      if (n.t === 'file') lines.push(`${esc(p)} f ${mode(n.mode)} ${esc(n.data)}`);
      else if (n.t === 'symlink') lines.push(`${esc(p)} l ${esc(n.target)}`);
      else if (n.t === 'fifo') lines.push(`${esc(p)} p ${mode(n.mode)}`);
      else lines.push(`${esc(p)} whiteout`);
      if (n.t !== 'whiteout') ids.set(n, [...(ids.get(n) ?? []), p]);
    }
  };
  walk(root, '');
  return { lines: lines.sort(), links: groups(ids.values()) };
}

/** The same listing for a real directory: lstat only, names as latin1 bytes. */
export async function listDisk(root: string, opts: { xattrs?: boolean } = {}): Promise<Listing> {
  const lines: string[] = [];
  const ids = new Map<bigint, string[]>();
  const walk = async (dir: Buffer, prefix: string): Promise<void> => {
    for (const nameBuf of await fsp.readdir(dir, { encoding: 'buffer' })) {
      const name = nameBuf.toString('latin1');
      const abs = Buffer.concat([dir, Buffer.from('/'), nameBuf]);
      const p = prefix === '' ? name : `${prefix}/${name}`;
      let st;
      try {
        st = await fsp.lstat(abs, { bigint: true });
      } catch (err) {
        // overlayfs lists a whiteout in a directory only one layer has (readdir passes that
        // layer's directory through) but a lookup of it finds nothing: the name is not there.
        if (opts.xattrs === false && (err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      const m = Number(st.mode & 0o7777n);
      if (st.isDirectory()) {
        // Through an overlay mount the trusted.overlay.* attributes of the layers are not visible.
        const opaque = opts.xattrs !== false && lgetxattr(abs, 'trusted.overlay.opaque')?.toString('latin1') === 'y';
        lines.push(`${esc(p)} d ${mode(m)}${opaque ? ' opaque' : ''}`);
        await walk(abs, p);
        continue;
      }
      if (st.isFile()) lines.push(`${esc(p)} f ${mode(m)} ${esc((await fsp.readFile(abs)).toString('latin1'))}`);
      else if (st.isSymbolicLink()) lines.push(`${esc(p)} l ${esc((await fsp.readlink(abs, { encoding: 'buffer' })).toString('latin1'))}`);
      else if (st.isFIFO()) lines.push(`${esc(p)} p ${mode(m)}`);
      else if (st.isCharacterDevice() && st.rdev === 0n) lines.push(`${esc(p)} whiteout`);
      else lines.push(`${esc(p)} ? ${mode(m)}`);
      if (!(st.isCharacterDevice() && st.rdev === 0n)) ids.set(st.ino, [...(ids.get(st.ino) ?? []), p]);
    }
  };
  await walk(Buffer.from(path.resolve(root)), '');
  return { lines: lines.sort(), links: groups(ids.values()) };
}

function groups(all: Iterable<string[]>): string[] {
  return [...all]
    .filter((g) => g.length > 1)
    .map((g) => g.sort().map(esc).join(' = '))
    .sort();
}

function mode(m: number): string {
  return m.toString(8).padStart(4, '0');
}

import { promises as fsp, type Stats } from 'node:fs';
import * as path from 'node:path';
import { codeOf, messageOf } from '../lib/errors.js';
import { writeFileAtomic } from '../lib/fsx.js';
import type { Logger } from '../lib/log.js';
import type { ManifestProblem } from './manifest.js';

/**
 * The `images/` folder beside the manifests (issue 14, air-gapped edge): every image archive
 * dropped there — a `docker save` tar, an OCI archive tar (plain or gzip), an OCI layout
 * directory — is imported through `images import` before the pods that name its images are
 * planned, so a pod with imagePullPolicy IfNotPresent never asks a registry for it. The manifest
 * loader does not read anything under `<dir>/images/` (listManifestFiles).
 *
 * Each entry is imported once: a ledger (`<berth root>/image-folder.json`) records, per
 * absolute path, the entry's signature (size and mtime; for a directory their sum and newest
 * over its files) and the images it held, or the error it failed with. An entry whose signature
 * is in the ledger is not read again; a changed one (re-copied, rewritten) is imported again. A
 * failed entry stays a problem (coded, naming the file) until it changes or goes; nothing else
 * is affected and the file is never touched.
 *
 * Names are moved only by a change of the folder (regression images-folder-flips-tag):
 * - an unchanged entry is read again only when one of its names is gone (images rm, prune,
 *   image GC), and then records only the names that are gone or still name its image: a name
 *   something else re-pointed since (images pull, tag, import) is left as it is;
 * - a new or changed entry records its names, except a name another present entry of the folder
 *   holds for other content: the first holder keeps it, and the conflict is reported (a warning
 *   naming both files, `onConflict`) once per change of the entry, instead of the two archives
 *   taking the name from each other at every reload.
 *
 * Half-written files: with `requireStable` (the watcher's reloads), an entry modified less
 * than a second ago is left for later and `wake` is called once it may be complete; a copy that
 * stalls longer than that and fails to import is retried when it changes again. Names starting
 * with `.` or ending in `.tmp`, `.part`, `.partial` or `~` are ignored, so writing under such a
 * name and renaming into place is the atomic way in.
 *
 * Concurrency: calls are serialized within the process (the daemon's reloads and applies share
 * the ledger).
 */
export interface ImageImporter {
  /** `names` decides, per name of the archive, whether it is recorded (runtime ImportOptions.names). */
  importImages(source: string, opts: { names: (ref: string, digest: string) => boolean }): Promise<readonly { ref: string; digest: string; skipped?: true }[]>;
  /** The images recorded now (an archive whose image was removed since is imported again). */
  listImages(): readonly { ref: string; digest: string }[];
}

export interface ImageFolderOptions {
  importer: ImageImporter;
  /** The ledger file (kept under berth's root). */
  ledger: string;
  log: Logger;
  /** Called (once per pending burst) when an entry still being written may be ready. */
  wake?: () => void;
  /** Called once per conflict found (see the module comment), after it is logged. */
  onConflict?: (c: ImageConflict) => void;
  now?: () => number;
}

/** Two entries of the folder name one reference for different images; `heldBy` keeps it. */
export interface ImageConflict {
  ref: string;
  file: string;
  digest: string;
  heldBy: string;
  heldDigest: string;
}

export interface ImageFolderResult {
  imported: { file: string; images: { ref: string; digest: string }[] }[];
  problems: ManifestProblem[];
  /** Entries left for a later call (still being written). */
  pending: string[];
  /** Conflicts found by this call (only entries read by it). */
  conflicts: ImageConflict[];
}

interface LedgerEntry {
  sig: string;
  at: string;
  /** The images the entry holds, by each name it gives them. */
  images?: { ref: string; digest: string }[];
  /** Names of `images` left to another entry of the folder that holds them (a conflict). */
  yielded?: string[];
  error?: { code: string; message: string };
}

/** Folder name, fixed as the issue names it. */
export const IMAGES_DIR = 'images';
const STABLE_MS = 1000;
const IGNORED = /^\.|~$|\.(tmp|part|partial)$/;
/** A directory signature looks at this many entries at most (an OCI layout holds a few blobs). */
const MAX_DIR_ENTRIES = 10_000;

let chain: Promise<unknown> = Promise.resolve();

export class ImageFolder {
  private wakeTimer: NodeJS.Timeout | undefined;
  private held: { ref: string; digest: string }[] = [];

  constructor(
    readonly manifestRoot: string,
    private readonly o: ImageFolderOptions,
  ) {}

  get dir(): string {
    return path.join(this.manifestRoot, IMAGES_DIR);
  }

  /** Imports what is new in the folder; see the module comment. Never throws for an archive's fault. */
  sync(opts: { requireStable: boolean }): Promise<ImageFolderResult> {
    const run = chain.then(() => this.syncNow(opts));
    chain = run.catch(() => undefined);
    return run;
  }

  private async syncNow(opts: { requireStable: boolean }): Promise<ImageFolderResult> {
    const out: ImageFolderResult = { imported: [], problems: [], pending: [], conflicts: [] };
    const names = await fsp.readdir(this.dir).catch(() => undefined);
    if (names === undefined) return out;
    const ledger = await this.readLedger();
    let changed = false;
    const now = this.o.now?.() ?? Date.now();
    const entries = names
      .filter((n) => !IGNORED.test(n))
      .sort()
      .map((n) => path.join(this.dir, n));
    const present = new Set(entries);
    const local = new Map(this.o.importer.listImages().map((i) => [i.ref, i.digest]));
    // The present entry (other than `file`) that holds `ref` for another image, per the ledger.
    const holder = (file: string, ref: string, digest: string): { file: string; digest: string } | undefined => {
      for (const other of entries) {
        const e = other === file ? undefined : ledger[other];
        const held = e?.images?.find((i) => i.ref === ref && !(e.yielded ?? []).includes(ref));
        if (held !== undefined && held.digest !== digest) return { file: other, digest: held.digest };
      }
      return undefined;
    };
    for (const file of entries) {
      const st = await fsp.lstat(file).catch(() => undefined);
      if (st === undefined) continue;
      const problem = (code: string, message: string): void => {
        out.problems.push({ file, line: 1, col: 1, field: '', message: `image archive not imported: ${code}: ${message}` });
      };
      if (!st.isFile() && !st.isDirectory()) {
        problem('ERR_INVALID_IMAGE', 'not a regular file or an OCI layout directory (symlinks are not followed)');
        continue;
      }
      const sig = st.isFile() ? { text: `f:${st.size}:${st.mtimeMs}`, newest: st.mtimeMs } : await dirSignature(file, st);
      const known = ledger[file];
      const unchanged = known?.sig === sig.text;
      if (unchanged && known.error !== undefined) {
        problem(known.error.code, known.error.message);
        continue;
      }
      // An entry already imported is read again only when one of its names went (images rm,
      // prune, image GC): the folder is the image's source, so it comes back. A name that names
      // another image now was re-pointed on purpose and is no reason to read it.
      if (unchanged && (known.images ?? []).every((i) => local.has(i.ref))) continue;
      if (opts.requireStable && now - sig.newest < STABLE_MS) {
        out.pending.push(file);
        continue;
      }
      const conflicts: ImageConflict[] = [];
      const names = (ref: string, digest: string): boolean => {
        const other = holder(file, ref, digest);
        if (other !== undefined) {
          conflicts.push({ ref, file, digest, heldBy: other.file, heldDigest: other.digest });
          return false;
        }
        // Read again for a name that went: the names re-pointed since stay as they are.
        const current = local.get(ref);
        return !unchanged || current === undefined || current === digest;
      };
      try {
        const all = await this.o.importer.importImages(file, { names });
        const images = all.map((i) => ({ ref: i.ref, digest: i.digest }));
        const yielded = conflicts.map((c) => c.ref);
        ledger[file] = { sig: sig.text, at: new Date(now).toISOString(), images, ...(yielded.length > 0 ? { yielded } : {}) };
        const recorded = all.filter((i) => i.skipped !== true);
        out.imported.push({ file, images: recorded.map((i) => ({ ref: i.ref, digest: i.digest })) });
        for (const i of recorded) local.set(i.ref, i.digest);
        this.o.log.info({ file, images: recorded.map((i) => i.ref) }, 'image archive imported');
      } catch (err) {
        const e = { code: codeOf(err), message: messageOf(err) };
        ledger[file] = { sig: sig.text, at: new Date(now).toISOString(), error: e };
        problem(e.code, e.message);
        this.o.log.warn({ file, code: e.code, err: e.message }, 'image archive not imported');
      }
      for (const c of conflicts) {
        this.o.log.warn({ ref: c.ref, file: c.file, digest: c.digest, heldBy: c.heldBy, heldDigest: c.heldDigest }, `image archives conflict: ${conflictMessage(c)}`);
        this.o.onConflict?.(c);
      }
      out.conflicts.push(...conflicts);
      changed = true;
    }
    for (const file of Object.keys(ledger)) {
      if (path.dirname(file) === this.dir && !present.has(file)) {
        delete ledger[file];
        changed = true;
      }
    }
    if (changed) await writeFileAtomic(this.o.ledger, `${JSON.stringify(ledger, null, 2)}\n`);
    this.held = [...present].flatMap((f) => ledger[f]?.images ?? []);
    if (out.pending.length > 0 && this.o.wake !== undefined && this.wakeTimer === undefined) {
      this.wakeTimer = setTimeout(() => {
        this.wakeTimer = undefined;
        this.o.wake?.();
      }, STABLE_MS + 100);
      this.wakeTimer.unref();
    }
    return out;
  }

  /** The images the folder's present archives hold (image GC keeps them, as it keeps what manifests name). */
  images(): readonly { ref: string; digest: string }[] {
    return this.held;
  }

  private async readLedger(): Promise<Record<string, LedgerEntry>> {
    const text = await fsp.readFile(this.o.ledger, 'utf8').catch(() => undefined);
    if (text === undefined) return {};
    try {
      const v = JSON.parse(text) as unknown;
      return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, LedgerEntry>) : {};
    } catch {
      // A damaged ledger costs one more import of each archive (idempotent), nothing else.
      this.o.log.warn({ file: this.o.ledger }, 'image folder ledger unreadable; archives are imported again');
      return {};
    }
  }
}

/** One line for a conflict: both files, both digests, who keeps the name. */
export function conflictMessage(c: ImageConflict): string {
  return `${c.file} names ${c.ref} for ${c.digest}, but ${c.heldBy} names it for ${c.heldDigest}; ${c.ref} stays ${c.heldDigest} (remove or rename one of the two archives)`;
}

/** A directory's signature: file count, total size and newest mtime of its files (bounded walk, no links followed). */
async function dirSignature(dir: string, st: Stats): Promise<{ text: string; newest: number }> {
  let files = 0;
  let bytes = 0;
  let newest = st.mtimeMs;
  const stack = [dir];
  let seen = 0;
  while (stack.length > 0 && seen < MAX_DIR_ENTRIES) {
    const d = stack.pop() ?? '';
    for (const e of await fsp.readdir(d, { withFileTypes: true }).catch(() => [])) {
      if (++seen > MAX_DIR_ENTRIES) break;
      const p = path.join(d, e.name);
      const s = await fsp.lstat(p).catch(() => undefined);
      if (s === undefined) continue;
      newest = Math.max(newest, s.mtimeMs);
      if (s.isDirectory()) stack.push(p);
      else if (s.isFile()) {
        files++;
        bytes += s.size;
      }
    }
  }
  return { text: `d:${files}:${bytes}:${newest}`, newest };
}

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
  importImages(source: string): Promise<readonly { ref: string; digest: string }[]>;
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
  now?: () => number;
}

export interface ImageFolderResult {
  imported: { file: string; images: { ref: string; digest: string }[] }[];
  problems: ManifestProblem[];
  /** Entries left for a later call (still being written). */
  pending: string[];
}

interface LedgerEntry {
  sig: string;
  at: string;
  images?: { ref: string; digest: string }[];
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
    const out: ImageFolderResult = { imported: [], problems: [], pending: [] };
    const names = await fsp.readdir(this.dir).catch(() => undefined);
    if (names === undefined) return out;
    const ledger = await this.readLedger();
    let changed = false;
    const now = this.o.now?.() ?? Date.now();
    const present = new Set<string>();
    const local = new Set(this.o.importer.listImages().map((i) => `${i.ref}@${i.digest}`));
    for (const name of names.sort()) {
      if (IGNORED.test(name)) continue;
      const file = path.join(this.dir, name);
      present.add(file);
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
      // An entry already imported is read again only when one of its images went (images rm,
      // prune, image GC): the folder is the image's source, so it comes back.
      if (known?.sig === sig.text && (known.images ?? []).every((i) => local.has(`${i.ref}@${i.digest}`))) {
        if (known.error !== undefined) problem(known.error.code, known.error.message);
        continue;
      }
      if (opts.requireStable && now - sig.newest < STABLE_MS) {
        out.pending.push(file);
        continue;
      }
      try {
        const images = (await this.o.importer.importImages(file)).map((i) => ({ ref: i.ref, digest: i.digest }));
        ledger[file] = { sig: sig.text, at: new Date(now).toISOString(), images };
        out.imported.push({ file, images });
        this.o.log.info({ file, images: images.map((i) => i.ref) }, 'image archive imported');
      } catch (err) {
        const e = { code: codeOf(err), message: messageOf(err) };
        ledger[file] = { sig: sig.text, at: new Date(now).toISOString(), error: e };
        problem(e.code, e.message);
        this.o.log.warn({ file, code: e.code, err: e.message }, 'image archive not imported');
      }
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

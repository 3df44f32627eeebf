import type { Digest } from '../../lib/digest.js';
import { BerthError } from '../../lib/errors.js';
import type { Logger } from '../../lib/log.js';
import { crashPoint } from '../../lib/crashpoint.js';
import type { ContentStore } from '../content/index.js';
import type { Snapshotter } from '../snapshots/index.js';
import type { ImageRecord, LeaseRecord, ManifestRecord, SnapshotRecord, StateStore } from '../state/index.js';
import type { LeaseManager } from './leases.js';

export { LeaseManager, LEASE_TTL_MS, type Lease } from './leases.js';

/**
 * Garbage collection of images (containerd's `core/metadata/gc.go`, by rows instead of labels).
 *
 * What references what:
 *   images row ─ref→ manifests row (digest) ─→ blobs: the manifest, its config, its layers
 *             └→ blob: the index it was resolved through (index_digest)
 *   manifests row ─layers[i].chainId→ snapshots row ─parent→ snapshots row …
 *   containers row ─image_digest→ manifests row (its rootfs is an overlay of that chain)
 *   pods row (last-applied spec) ─containers[].image / initContainers[].image→ images row (by ref)
 *
 * Roots: every images row (an image is kept until `images rm`/`prune` removes its row), the
 * manifest of every container row, the image each recorded pod's last-applied spec names, the
 * blobs and snapshots of every unexpired lease (a pull in flight, or one killed less than the
 * lease's TTL ago), and the layers overlay mounts of containers under the root stack (read from
 * mountinfo, so a running rootfs keeps its layers whatever the rows say).
 *
 * Sweep: rows first (manifests, snapshots, expired leases: one transaction), then files (blobs,
 * snapshot directories, extraction residue). A kill -9 in between leaves files no row names,
 * which the next GC removes; never a row naming a missing file.
 *
 * Pulls write files before rows; their leases (gc/leases.ts) make a GC that runs meanwhile keep
 * those files, so pulls and GC run side by side. Imports and exports still share `PullGate`
 * with GC (they write without a lease).
 */

/** The rows GC marks from (a consistent read of the state, plus the mounted layers). */
export interface GcGraph {
  images: readonly ImageRecord[];
  manifests: readonly ManifestRecord[];
  snapshots: readonly SnapshotRecord[];
  containers: readonly { id: string; imageRef: string; imageDigest: Digest }[];
  /** Canonical references the recorded pods' last-applied specs name. */
  podRefs: readonly string[];
  /** Snapshots stacked by a container's overlay mount (mountinfo). */
  mountedLayers: readonly Digest[];
  /** Unexpired leases (their resources are roots). */
  leases?: readonly LeaseRecord[];
}

/** What is reachable from the roots. */
export interface Marked {
  manifests: Set<Digest>;
  blobs: Set<Digest>;
  snapshots: Set<Digest>;
}

/** Marks everything reachable from the roots of `g` (pure). */
export function mark(g: GcGraph): Marked {
  const manifests = new Map(g.manifests.map((m) => [m.digest, m]));
  const byRef = new Map(g.images.map((i) => [i.ref, i]));
  const out: Marked = { manifests: new Set(), blobs: new Set(), snapshots: new Set() };
  const roots: Digest[] = [];
  for (const i of g.images) {
    roots.push(i.digest);
    if (i.indexDigest !== null) out.blobs.add(i.indexDigest);
  }
  for (const c of g.containers) roots.push(c.imageDigest);
  for (const ref of g.podRefs) {
    const i = byRef.get(ref);
    if (i !== undefined) roots.push(i.digest);
  }
  for (const d of roots) {
    const m = manifests.get(d);
    if (m === undefined || out.manifests.has(d)) continue;
    out.manifests.add(d);
    out.blobs.add(m.digest);
    out.blobs.add(m.configDigest);
    for (const l of m.layers) {
      out.blobs.add(l.digest);
      out.snapshots.add(l.chainId);
    }
  }
  for (const id of g.mountedLayers) out.snapshots.add(id);
  for (const l of g.leases ?? []) {
    for (const r of l.resources) {
      if (r.kind === 'blob') out.blobs.add(r.id as Digest);
      else if (r.kind === 'snapshot') out.snapshots.add(r.id as Digest);
    }
  }
  // A kept snapshot keeps its parents (the chain is the manifest's anyway; this holds for a
  // mounted layer whose manifest is gone too).
  const parents = new Map(g.snapshots.map((s) => [s.chainId, s.parent]));
  for (const id of [...out.snapshots]) {
    let p = parents.get(id) ?? null;
    while (p !== null && !out.snapshots.has(p)) {
      out.snapshots.add(p);
      p = parents.get(p) ?? null;
    }
  }
  return out;
}

/** The canonical image references a pod's last-applied spec (JSON of the desired pod) names. */
export function podImageRefs(spec: string): string[] {
  let pod: unknown;
  try {
    pod = JSON.parse(spec);
  } catch {
    return [];
  }
  const refs: string[] = [];
  if (typeof pod !== 'object' || pod === null) return refs;
  for (const field of ['initContainers', 'containers'] as const) {
    const list = (pod as Record<string, unknown>)[field];
    if (!Array.isArray(list)) continue;
    for (const c of list as unknown[]) {
      const image = typeof c === 'object' && c !== null ? (c as Record<string, unknown>)['image'] : undefined;
      if (typeof image === 'string' && image !== '') refs.push(image);
    }
  }
  return refs;
}

/** One thing GC removed (or, dry run, would remove). */
export interface GcRemoved {
  /** `manifest`: a row; `snapshot`: a row and its directory, or a directory no row names; `blob`: a content file; `residue`: an interrupted extraction; `lease`: an expired lease's row. */
  kind: 'manifest' | 'snapshot' | 'blob' | 'residue' | 'lease';
  id: string;
  /** Bytes of the files removed (0 for a manifest row: its bytes are its blob's). */
  bytes: number;
}

export interface GcReport {
  dryRun: boolean;
  removed: GcRemoved[];
  bytes: number;
}

/**
 * Orders imports and exports against GC, and GCs against each other: any number of imports
 * (which write blobs and snapshot directories before their rows, without a lease) share the
 * gate; a GC takes it alone, after those in flight, and those that arrive meanwhile wait for it
 * (no starvation of GC). Pulls do not take it: their leases protect what they write.
 */
export class PullGate {
  private active = 0;
  private blocked: Promise<void> | undefined;
  private drained: (() => void) | undefined;

  async shared<T>(fn: () => Promise<T>): Promise<T> {
    while (this.blocked !== undefined) await this.blocked;
    this.active++;
    try {
      return await fn();
    } finally {
      this.active--;
      if (this.active === 0) this.drained?.();
    }
  }

  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    while (this.blocked !== undefined) await this.blocked;
    let release: () => void = () => undefined;
    this.blocked = new Promise<void>((r) => (release = r));
    try {
      if (this.active > 0) await new Promise<void>((r) => (this.drained = r));
      this.drained = undefined;
      return await fn();
    } finally {
      this.blocked = undefined;
      release();
    }
  }
}

/**
 * The collector: reads the graph, marks, deletes unreachable rows in one transaction, then the
 * files nothing kept names. The caller holds the state lock and the PullGate exclusively (one
 * GC at a time; pulls run alongside under their leases).
 */
export class GarbageCollector {
  constructor(
    private readonly state: StateStore,
    private readonly content: ContentStore,
    private readonly snapshots: Snapshotter,
    private readonly log: Logger,
    private readonly leases: LeaseManager,
  ) {}

  /**
   * `forget`: image refs to treat as gone (dry runs only: what `images prune` would reclaim, for
   * `berth df`).
   */
  async collect(opts: { dryRun: boolean; now?: number; forget?: readonly string[] }): Promise<GcReport> {
    const now = opts.now ?? Date.now();
    const mountedLayers = await this.snapshots.mountedLayers();
    // From the read of the rows to their deletion nothing awaits: no other step of this process
    // can write a row in between (rule 6: transactions are synchronous). The lease manager starts
    // watching new leases in the same step, so nothing leased after this read is removed below.
    const full = this.graph(mountedLayers, now);
    const forget = new Set(opts.dryRun ? (opts.forget ?? []) : []);
    const g = forget.size === 0 ? full : { ...full, images: full.images.filter((i) => !forget.has(i.ref)) };
    const marked = mark(g);
    const leased = new Set((g.leases ?? []).flatMap((l) => l.resources.map((r) => `${r.kind} ${r.id}`)));
    const expired = this.state.listLeases().filter((l) => l.expiresAt <= now).map((l) => l.id);
    const deadManifests = g.manifests.filter((m) => !marked.manifests.has(m.digest)).map((m) => m.digest);
    const deadSnapshots = g.snapshots.filter((s) => !marked.snapshots.has(s.chainId)).map((s) => s.chainId);
    if (!opts.dryRun && (deadManifests.length > 0 || deadSnapshots.length > 0 || expired.length > 0)) {
      this.state.transaction(() => {
        this.state.deleteManifests(deadManifests);
        crashPoint('state.in-transaction');
        for (const id of deadSnapshots) this.state.deleteSnapshot(id);
        this.state.deleteExpiredLeases(now);
      });
    }
    if (!opts.dryRun) this.leases.beginSweep();
    try {
      crashPoint('state.after-row-before-files');
      const removed: GcRemoved[] = [...expired.map((id): GcRemoved => ({ kind: 'lease', id, bytes: 0 })), ...deadManifests.map((d): GcRemoved => ({ kind: 'manifest', id: d, bytes: 0 }))];
      // Files: what no kept row names.
      for (const b of await this.content.listBlobs()) {
        if (marked.blobs.has(b.digest)) continue;
        if (!opts.dryRun && !(await this.leases.remove('blob', b.digest, () => this.content.remove(b.digest)))) continue;
        removed.push({ kind: 'blob', id: b.digest, bytes: b.size });
        crashPoint('gc.after-file');
      }
      const rows = new Set(g.snapshots.map((s) => s.chainId));
      const mounted = new Set(mountedLayers);
      // A pull of this process may be extracting into a `tmp-` directory: residue waits for a GC
      // with no pull in flight (or the startup sweep).
      const pulling = this.leases.held() > 0;
      for (const e of await this.snapshots.listDirs()) {
        // Kept: a marked snapshot with its row, a leased one (a pull renamed it into place and
        // writes its row next), or a mounted one (its row lost: the container needs it still).
        // A marked chain with no row and no lease is not a snapshot to the puller, which extracts it anew.
        if (e.chainId !== undefined && (mounted.has(e.chainId) || leased.has(`snapshot ${e.chainId}`) || (rows.has(e.chainId) && marked.snapshots.has(e.chainId)))) continue;
        if (e.chainId === undefined && pulling) continue;
        const bytes = await this.snapshots.usage(e.name);
        if (!opts.dryRun) {
          const run = (): Promise<void> => this.snapshots.removeDir(e.name);
          if (e.chainId !== undefined && !(await this.leases.remove('snapshot', e.chainId, run))) continue;
          if (e.chainId === undefined) await run();
        }
        removed.push({ kind: e.chainId !== undefined ? 'snapshot' : 'residue', id: e.chainId ?? e.name, bytes });
        crashPoint('gc.after-file');
      }
      // A row whose directory was already gone is forgotten too (reported with 0 bytes).
      const dirs = new Set(removed.filter((r) => r.kind === 'snapshot').map((r) => r.id));
      for (const id of deadSnapshots) if (!dirs.has(id)) removed.push({ kind: 'snapshot', id, bytes: 0 });
      const bytes = removed.reduce((n, r) => n + r.bytes, 0);
      if (!opts.dryRun && removed.length > 0) this.log.info({ removed: removed.length, bytes }, 'garbage collected');
      return { dryRun: opts.dryRun, removed, bytes };
    } finally {
      if (!opts.dryRun) this.leases.endSweep();
    }
  }

  private graph(mountedLayers: readonly Digest[], now: number): GcGraph {
    const containers = this.state.listContainers();
    return {
      images: this.state.listImages(),
      manifests: this.state.listManifests(),
      snapshots: this.state.listSnapshotRecords(),
      containers: containers.map((c) => ({ id: c.id, imageRef: c.imageRef, imageDigest: c.imageDigest })),
      podRefs: this.state.listPods().flatMap((p) => podImageRefs(p.spec)),
      mountedLayers,
      leases: this.state.listLeases().filter((l) => l.expiresAt > now),
    };
  }
}

/**
 * The image rows `images prune` forgets: those no recorded pod's spec names and no container row
 * runs; with `all`, every one no container row runs.
 */
export function pruneCandidates(
  images: readonly ImageRecord[],
  pods: readonly { key: string; spec: string }[],
  containers: readonly { podKey: string; imageRef: string }[],
  all: boolean,
): ImageRecord[] {
  const kept = all ? new Set(containers.map((c) => c.imageRef)) : namedRefs(pods, containers);
  return images.filter((i) => !kept.has(i.ref));
}

/**
 * Every image reference a recorded pod's spec names or a container row runs (the refs for which
 * imageUsers is not empty), each pod spec parsed once.
 */
export function namedRefs(pods: readonly { spec: string }[], containers: readonly { imageRef: string }[]): Set<string> {
  return new Set([...pods.flatMap((p) => podImageRefs(p.spec)), ...containers.map((c) => c.imageRef)]);
}

/** Who uses an image reference: the pods whose spec names it or whose container rows run it. */
export function imageUsers(ref: string, pods: readonly { key: string; spec: string }[], containers: readonly { podKey: string; imageRef: string }[]): string[] {
  const users = new Set<string>();
  for (const p of pods) if (podImageRefs(p.spec).includes(ref)) users.add(p.key);
  for (const c of containers) if (c.imageRef === ref) users.add(c.podKey);
  return [...users].sort();
}

/** The refusal of `images rm` for an image in use, naming the pods. */
export function imageInUse(ref: string, users: readonly string[]): BerthError {
  return new BerthError('ERR_CONFLICT', `remove image ${ref}: in use by pod${users.length > 1 ? 's' : ''} ${users.join(', ')} (delete ${users.length > 1 ? 'them' : 'it'} or change ${users.length > 1 ? 'their' : 'its'} image first)`, {
    details: { ref, pods: users.join(',') },
  });
}

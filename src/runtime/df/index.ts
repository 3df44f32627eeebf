import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Digest } from '../../lib/digest.js';
import type { GcReport } from '../gc/index.js';
import type { ContainerRecord, ImageRecord, ManifestRecord, SnapshotRecord } from '../state/index.js';

/**
 * `berth df` (docker/podman `system df`): where berth's disk goes. Images are counted from the
 * rows (unpacked layer sizes as recorded at unpack, compressed sizes as the blob files are);
 * containers, logs and volumes by walking their directories (apparent bytes of regular files,
 * a hard-linked file once); what `images prune`, `images prune --all` and `gc` would reclaim is
 * what a dry run of GC reports, with the image rows those commands would forget taken away.
 */

/** Capacity and use of the file system holding a directory (the kubelet's image GC reads the same). */
export interface FsUsage {
  capacityBytes: number;
  availableBytes: number;
  /** capacity − available (blocks reserved for root count as used, as the kubelet counts them). */
  usedBytes: number;
  usedPercent: number;
}

export async function fsUsage(dir: string): Promise<FsUsage> {
  const st = await fsp.statfs(dir);
  const capacityBytes = st.blocks * st.bsize;
  const availableBytes = st.bavail * st.bsize;
  const usedBytes = Math.max(0, capacityBytes - availableBytes);
  return { capacityBytes, availableBytes, usedBytes, usedPercent: capacityBytes === 0 ? 0 : Math.round((usedBytes / capacityBytes) * 10_000) / 100 };
}

/** Apparent bytes of the regular files under `p` (symlinks not followed, each inode once); 0 when absent. */
export async function treeBytes(p: string, seen = new Set<string>()): Promise<number> {
  const st = await fsp.lstat(p).catch(() => undefined);
  if (st === undefined) return 0;
  if (st.isFile()) {
    const id = `${st.dev}:${st.ino}`;
    if (st.nlink > 1) {
      if (seen.has(id)) return 0;
      seen.add(id);
    }
    return st.size;
  }
  if (!st.isDirectory()) return 0;
  let n = 0;
  for (const name of await fsp.readdir(p).catch(() => [] as string[])) n += await treeBytes(path.join(p, name), seen);
  return n;
}

export interface DfImage {
  ref: string;
  digest: string;
  layers: number;
  /** Unpacked bytes of its layers (recorded at unpack). */
  sizeBytes: number;
  /** Of those, bytes of layers another image (another manifest) uses too. */
  sharedBytes: number;
  uniqueBytes: number;
  /** Compressed bytes of its layer blobs (as pulled). */
  compressedBytes: number;
  /** Container rows running or recorded from it. */
  containers: number;
  /** Named by a recorded pod or run by a container. */
  inUse: boolean;
  lastUsed: string | null;
}

export interface DfVolume {
  kind: 'named' | 'pod';
  name: string;
  /** The pod a pod volume belongs to (namespace/name). */
  pod: string | null;
  bytes: number;
  /** Pods whose spec names it (named volumes; the owner for a pod volume). */
  usedBy: string[];
}

export interface DiskUsage {
  root: string;
  filesystem: FsUsage;
  images: {
    count: number;
    active: number;
    /** Unpacked bytes of every recorded layer, each once. */
    layerBytes: number;
    /** Of those, bytes of layers two or more images use. */
    sharedLayerBytes: number;
    /** Of those, bytes of layers only one image uses. */
    uniqueLayerBytes: number;
    /** Bytes of the content store's blob files (compressed layers, configs, manifests, indexes). */
    blobBytes: number;
    /** What `images prune --all` would reclaim. */
    reclaimableBytes: number;
    items: DfImage[];
  };
  containers: { count: number; running: number; /** Bytes of their writable layers (upper dirs). */ bytes: number };
  logs: { bytes: number };
  volumes: { count: number; bytes: number; /** Named volumes no recorded pod names. */ reclaimableBytes: number; items: DfVolume[] };
  /** Bytes each command would free now. */
  reclaim: { imagesPrune: number; imagesPruneAll: number; gc: number };
}

export interface DfInputs {
  root: string;
  images: readonly ImageRecord[];
  manifests: readonly ManifestRecord[];
  snapshots: readonly SnapshotRecord[];
  containers: readonly ContainerRecord[];
  blobs: readonly { digest: Digest; size: number }[];
  /** Image refs `images prune` / `images prune --all` would forget, and whether each is in use. */
  pruneRefs: readonly string[];
  pruneAllRefs: readonly string[];
  inUse: (ref: string) => boolean;
  named: readonly { name: string; bytes: number; usedBy: string[] }[];
  /** GC dry run with these image rows taken away. */
  gcDryRun: (forget: readonly string[]) => Promise<GcReport>;
}

export async function diskUsage(i: DfInputs): Promise<DiskUsage> {
  const size = new Map(i.snapshots.map((s) => [s.chainId, s.size]));
  const manifests = new Map(i.manifests.map((m) => [m.digest, m]));
  // Which manifests use each layer (an image tagged twice is one image).
  const users = new Map<Digest, Set<Digest>>();
  for (const img of i.images) {
    for (const l of manifests.get(img.digest)?.layers ?? []) {
      const u = users.get(l.chainId) ?? new Set<Digest>();
      u.add(img.digest);
      users.set(l.chainId, u);
    }
  }
  const items: DfImage[] = i.images.map((img) => {
    const m = manifests.get(img.digest);
    const layers = m?.layers ?? [];
    let sizeBytes = 0;
    let sharedBytes = 0;
    for (const l of layers) {
      const n = size.get(l.chainId) ?? 0;
      sizeBytes += n;
      if ((users.get(l.chainId)?.size ?? 0) > 1) sharedBytes += n;
    }
    return {
      ref: img.ref,
      digest: img.digest,
      layers: layers.length,
      sizeBytes,
      sharedBytes,
      uniqueBytes: sizeBytes - sharedBytes,
      compressedBytes: layers.reduce((n, l) => n + l.size, 0),
      containers: i.containers.filter((c) => c.imageDigest === img.digest).length,
      inUse: i.inUse(img.ref),
      lastUsed: img.lastUsed !== undefined && img.lastUsed > 0 ? new Date(img.lastUsed).toISOString() : null,
    };
  });
  const layerBytes = i.snapshots.reduce((n, s) => n + s.size, 0);
  const sharedLayerBytes = i.snapshots.filter((s) => (users.get(s.chainId)?.size ?? 0) > 1).reduce((n, s) => n + s.size, 0);

  const containersDir = path.join(i.root, 'containers');
  let cbytes = 0;
  for (const c of i.containers) cbytes += await treeBytes(path.join(containersDir, c.id, 'upper'));

  const volumes: DfVolume[] = i.named.map((v) => ({ kind: 'named', name: v.name, pod: null, bytes: v.bytes, usedBy: [...v.usedBy] }));
  const podsDir = path.join(i.root, 'pods');
  for (const podDir of (await fsp.readdir(podsDir).catch(() => [] as string[])).sort()) {
    const key = podDir.replace('_', '/');
    for (const name of (await fsp.readdir(path.join(podsDir, podDir, 'volumes')).catch(() => [] as string[])).sort()) {
      volumes.push({ kind: 'pod', name, pod: key, bytes: await treeBytes(path.join(podsDir, podDir, 'volumes', name)), usedBy: [key] });
    }
  }

  const [gc, prune, pruneAll] = [await i.gcDryRun([]), await i.gcDryRun(i.pruneRefs), await i.gcDryRun(i.pruneAllRefs)];
  return {
    root: i.root,
    filesystem: await fsUsage(i.root),
    images: {
      count: i.images.length,
      active: items.filter((x) => x.inUse).length,
      layerBytes,
      sharedLayerBytes,
      uniqueLayerBytes: layerBytes - sharedLayerBytes,
      blobBytes: i.blobs.reduce((n, b) => n + b.size, 0),
      reclaimableBytes: pruneAll.bytes,
      items,
    },
    containers: { count: i.containers.length, running: i.containers.filter((c) => c.state === 'running').length, bytes: cbytes },
    logs: { bytes: await treeBytes(path.join(i.root, 'logs')) },
    volumes: {
      count: volumes.length,
      bytes: volumes.reduce((n, v) => n + v.bytes, 0),
      reclaimableBytes: volumes.filter((v) => v.kind === 'named' && v.usedBy.length === 0).reduce((n, v) => n + v.bytes, 0),
      items: volumes,
    },
    reclaim: { imagesPrune: prune.bytes, imagesPruneAll: pruneAll.bytes, gc: gc.bytes },
  };
}

import Database from 'better-sqlite3';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';

/**
 * What the content store and the snapshotter hold on disk and in rows, read directly (no berth
 * code), to check GC's invariant: no blob or snapshot directory that no row references, and no
 * row that references a missing file.
 */
export interface StoreListing {
  /** sha256 digests of the files under content/blobs/sha256. */
  blobs: string[];
  /** Entries of snapshots/ (chainId hex dirs as `sha256:<hex>`, other names as they are). */
  snapshotDirs: string[];
  images: { ref: string; digest: string; indexDigest: string | null }[];
  manifests: { digest: string; configDigest: string; layers: { digest: string; chainId: string }[] }[];
  snapshots: { chainId: string; parent: string | null }[];
  containers: { id: string; imageDigest: string }[];
}

export async function listStore(root: string): Promise<StoreListing> {
  const blobs = (await fsp.readdir(path.join(root, 'content', 'blobs', 'sha256')).catch(() => [] as string[])).map((n) => `sha256:${n}`).sort();
  const snapshotDirs = (await fsp.readdir(path.join(root, 'snapshots')).catch(() => [] as string[]))
    .map((n) => (/^[a-f0-9]{64}$/.test(n) ? `sha256:${n}` : n))
    .sort();
  const db = new Database(path.join(root, 'berth.db'), { readonly: true, fileMustExist: true });
  try {
    const images = (db.prepare('SELECT ref, digest, index_digest FROM images ORDER BY ref').all() as { ref: string; digest: string; index_digest: string | null }[]).map((r) => ({
      ref: r.ref,
      digest: r.digest,
      indexDigest: r.index_digest,
    }));
    const manifests = (db.prepare('SELECT digest, config_digest, layers FROM manifests ORDER BY digest').all() as { digest: string; config_digest: string; layers: string }[]).map((r) => ({
      digest: r.digest,
      configDigest: r.config_digest,
      layers: (JSON.parse(r.layers) as { digest: string; chainId: string }[]).map((l) => ({ digest: l.digest, chainId: l.chainId })),
    }));
    const snapshots = (db.prepare('SELECT chain_id, parent FROM snapshots ORDER BY chain_id').all() as { chain_id: string; parent: string | null }[]).map((r) => ({ chainId: r.chain_id, parent: r.parent }));
    const containers = (db.prepare('SELECT id, image_digest FROM containers ORDER BY id').all() as { id: string; image_digest: string }[]).map((r) => ({ id: r.id, imageDigest: r.image_digest }));
    return { blobs, snapshotDirs, images, manifests, snapshots, containers };
  } finally {
    db.close();
  }
}

/**
 * Every way the rows and the files disagree, as sentences (empty: consistent): a blob or a
 * snapshot directory no row references, a row that references a missing blob, directory or row.
 */
export function storeProblems(s: StoreListing): string[] {
  const problems: string[] = [];
  const blobs = new Set(s.blobs);
  const dirs = new Set(s.snapshotDirs);
  const snapshotRows = new Set(s.snapshots.map((x) => x.chainId));
  const manifests = new Set(s.manifests.map((m) => m.digest));
  const referenced = new Set<string>();
  for (const i of s.images) {
    if (!manifests.has(i.digest)) problems.push(`image ${i.ref} names manifest ${i.digest}, which has no row`);
    if (i.indexDigest !== null) {
      referenced.add(i.indexDigest);
      if (!blobs.has(i.indexDigest)) problems.push(`image ${i.ref} names index blob ${i.indexDigest}, which is missing`);
    }
  }
  for (const m of s.manifests) {
    for (const b of [m.digest, m.configDigest, ...m.layers.map((l) => l.digest)]) {
      referenced.add(b);
      if (!blobs.has(b)) problems.push(`manifest ${m.digest} names blob ${b}, which is missing`);
    }
  }
  for (const c of s.containers) if (!manifests.has(c.imageDigest)) problems.push(`container ${c.id} runs manifest ${c.imageDigest}, which has no row`);
  for (const b of s.blobs) if (!referenced.has(b)) problems.push(`blob ${b} is referenced by no row`);
  for (const x of s.snapshots) {
    if (!dirs.has(x.chainId)) problems.push(`snapshot row ${x.chainId} has no directory`);
    if (x.parent !== null && !snapshotRows.has(x.parent)) problems.push(`snapshot ${x.chainId} has parent ${x.parent}, which has no row`);
  }
  for (const d of s.snapshotDirs) if (!snapshotRows.has(d)) problems.push(`snapshot directory ${d} has no row`);
  return problems;
}

import Database from 'better-sqlite3';
import type { Database as Db } from 'better-sqlite3';
import * as path from 'node:path';
import { BerthError } from '../../lib/errors.js';
import type { Digest } from '../../lib/digest.js';

/**
 * Embedded state at `<root>/berth.db` (rule S5): WAL, synchronous=FULL, foreign keys,
 * busy_timeout, migrations by user_version inside one transaction each. Methods are
 * synchronous: no await may happen inside a transaction (STYLE rule 6).
 */

export type ContainerState = 'creating' | 'created' | 'running' | 'exited' | 'removing';

export interface ImageRecord {
  ref: string;
  digest: Digest; // manifest digest (platform-specific manifest)
  indexDigest: Digest | null; // when the ref resolved to an index
  updatedAt: number;
}

export interface LayerRecord {
  digest: Digest;
  size: number;
  mediaType: string;
  diffId: Digest;
  chainId: Digest;
}

export interface ManifestRecord {
  digest: Digest;
  configDigest: Digest;
  config: string; // raw image config JSON (verified bytes)
  layers: LayerRecord[];
}

export interface SnapshotRecord {
  chainId: Digest;
  parent: Digest | null;
  diffId: Digest;
  opaqueRoot: boolean;
  size: number;
  createdAt: number;
}

export interface PodRecord {
  key: string; // namespace/name
  namespace: string;
  name: string;
  source: string;
  podHash: string;
  spec: string; // JSON of the desired pod as applied
  createdAt: number;
}

export interface ContainerRecord {
  id: string;
  podKey: string;
  name: string;
  specHash: string;
  imageRef: string;
  imageDigest: Digest;
  state: ContainerState;
  pid: number | null;
  pidStart: string | null; // /proc/<pid>/stat starttime, guards against pid reuse
  exitCode: number | null;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
}

export interface EventRecord {
  id: number;
  ts: number;
  key: string;
  reason: string;
  message: string;
}

const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE manifests (
    digest TEXT PRIMARY KEY,
    config_digest TEXT NOT NULL,
    config TEXT NOT NULL,
    layers TEXT NOT NULL
  ) STRICT;
  CREATE TABLE images (
    ref TEXT PRIMARY KEY,
    digest TEXT NOT NULL REFERENCES manifests(digest),
    index_digest TEXT,
    updated_at INTEGER NOT NULL
  ) STRICT;
  CREATE TABLE snapshots (
    chain_id TEXT PRIMARY KEY,
    parent TEXT,
    diff_id TEXT NOT NULL,
    opaque_root INTEGER NOT NULL,
    size INTEGER NOT NULL,
    created_at INTEGER NOT NULL
  ) STRICT;
  CREATE TABLE pods (
    key TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    source TEXT NOT NULL,
    pod_hash TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_at INTEGER NOT NULL
  ) STRICT;
  CREATE TABLE containers (
    id TEXT PRIMARY KEY,
    pod_key TEXT NOT NULL REFERENCES pods(key),
    name TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    image_ref TEXT NOT NULL,
    image_digest TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('creating','created','running','exited','removing')),
    pid INTEGER,
    pid_start TEXT,
    exit_code INTEGER,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER
  ) STRICT;
  CREATE INDEX containers_pod ON containers(pod_key);
  CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts INTEGER NOT NULL,
    key TEXT NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL
  ) STRICT;
  `,
];

const EVENTS_KEPT = 10_000;

interface ContainerRow {
  id: string;
  pod_key: string;
  name: string;
  spec_hash: string;
  image_ref: string;
  image_digest: string;
  state: ContainerState;
  pid: number | null;
  pid_start: string | null;
  exit_code: number | null;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
}

function containerFromRow(r: ContainerRow): ContainerRecord {
  return {
    id: r.id,
    podKey: r.pod_key,
    name: r.name,
    specHash: r.spec_hash,
    imageRef: r.image_ref,
    imageDigest: r.image_digest as Digest,
    state: r.state,
    pid: r.pid,
    pidStart: r.pid_start,
    exitCode: r.exit_code,
    createdAt: r.created_at,
    startedAt: r.started_at,
    finishedAt: r.finished_at,
  };
}

export class StateStore {
  private readonly db: Db;

  constructor(root: string) {
    const file = path.join(root, 'berth.db');
    try {
      this.db = new Database(file);
      // busy_timeout first: switching to WAL and migrating may meet another berth opening the same file.
      this.db.pragma('busy_timeout = 10000');
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = FULL');
      this.db.pragma('foreign_keys = ON');
      this.migrate();
    } catch (err) {
      throw new BerthError('ERR_INTERNAL', `open state ${file}: ${(err as Error).message}`, { cause: err });
    }
  }

  /**
   * Runs pending migrations. The version is read inside an IMMEDIATE transaction (which
   * takes the write lock first), so two processes opening a new database at once cannot
   * both run the same migration.
   */
  private migrate(): void {
    const run = this.db.transaction(() => {
      const version = this.db.pragma('user_version', { simple: true }) as number;
      if (version > MIGRATIONS.length) {
        throw new BerthError('ERR_PRECONDITION', `state schema version ${version} is newer than this berth (${MIGRATIONS.length})`);
      }
      for (let v = version; v < MIGRATIONS.length; v++) {
        this.db.exec(MIGRATIONS[v] as string);
      }
      if (version < MIGRATIONS.length) this.db.pragma(`user_version = ${MIGRATIONS.length}`);
    });
    run.immediate();
  }

  close(): void {
    this.db.close();
  }

  // images -------------------------------------------------------------------

  putManifest(m: ManifestRecord): void {
    this.db
      .prepare('INSERT OR IGNORE INTO manifests(digest, config_digest, config, layers) VALUES (?, ?, ?, ?)')
      .run(m.digest, m.configDigest, m.config, JSON.stringify(m.layers));
  }

  getManifest(digest: Digest): ManifestRecord | undefined {
    const r = this.db.prepare('SELECT * FROM manifests WHERE digest = ?').get(digest) as
      | { digest: string; config_digest: string; config: string; layers: string }
      | undefined;
    if (r === undefined) return undefined;
    return {
      digest: r.digest as Digest,
      configDigest: r.config_digest as Digest,
      config: r.config,
      layers: JSON.parse(r.layers) as LayerRecord[],
    };
  }

  putImage(img: ImageRecord): void {
    this.db
      .prepare(
        `INSERT INTO images(ref, digest, index_digest, updated_at) VALUES (?, ?, ?, ?)
         ON CONFLICT(ref) DO UPDATE SET digest = excluded.digest, index_digest = excluded.index_digest, updated_at = excluded.updated_at`,
      )
      .run(img.ref, img.digest, img.indexDigest, img.updatedAt);
  }

  getImage(ref: string): ImageRecord | undefined {
    const r = this.db.prepare('SELECT * FROM images WHERE ref = ?').get(ref) as
      | { ref: string; digest: string; index_digest: string | null; updated_at: number }
      | undefined;
    if (r === undefined) return undefined;
    return { ref: r.ref, digest: r.digest as Digest, indexDigest: r.index_digest as Digest | null, updatedAt: r.updated_at };
  }

  listImages(): ImageRecord[] {
    const rows = this.db.prepare('SELECT * FROM images ORDER BY ref').all() as {
      ref: string;
      digest: string;
      index_digest: string | null;
      updated_at: number;
    }[];
    return rows.map((r) => ({ ref: r.ref, digest: r.digest as Digest, indexDigest: r.index_digest as Digest | null, updatedAt: r.updated_at }));
  }

  // snapshots ----------------------------------------------------------------

  putSnapshot(s: SnapshotRecord): void {
    this.db
      .prepare('INSERT OR IGNORE INTO snapshots(chain_id, parent, diff_id, opaque_root, size, created_at) VALUES (?, ?, ?, ?, ?, ?)')
      .run(s.chainId, s.parent, s.diffId, s.opaqueRoot ? 1 : 0, s.size, s.createdAt);
  }

  listSnapshots(): Digest[] {
    return (this.db.prepare('SELECT chain_id FROM snapshots ORDER BY chain_id').all() as { chain_id: string }[]).map((r) => r.chain_id as Digest);
  }

  deleteSnapshot(chainId: Digest): void {
    this.db.prepare('DELETE FROM snapshots WHERE chain_id = ?').run(chainId);
  }

  getSnapshot(chainId: Digest): SnapshotRecord | undefined {
    const r = this.db.prepare('SELECT * FROM snapshots WHERE chain_id = ?').get(chainId) as
      | { chain_id: string; parent: string | null; diff_id: string; opaque_root: number; size: number; created_at: number }
      | undefined;
    if (r === undefined) return undefined;
    return {
      chainId: r.chain_id as Digest,
      parent: r.parent as Digest | null,
      diffId: r.diff_id as Digest,
      opaqueRoot: r.opaque_root === 1,
      size: r.size,
      createdAt: r.created_at,
    };
  }

  // pods and containers --------------------------------------------------------

  upsertPod(p: PodRecord): void {
    this.db
      .prepare(
        `INSERT INTO pods(key, namespace, name, source, pod_hash, spec, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(key) DO UPDATE SET source = excluded.source, pod_hash = excluded.pod_hash, spec = excluded.spec`,
      )
      .run(p.key, p.namespace, p.name, p.source, p.podHash, p.spec, p.createdAt);
  }

  listPods(): PodRecord[] {
    const rows = this.db.prepare('SELECT * FROM pods ORDER BY key').all() as {
      key: string;
      namespace: string;
      name: string;
      source: string;
      pod_hash: string;
      spec: string;
      created_at: number;
    }[];
    return rows.map((r) => ({
      key: r.key,
      namespace: r.namespace,
      name: r.name,
      source: r.source,
      podHash: r.pod_hash,
      spec: r.spec,
      createdAt: r.created_at,
    }));
  }

  /** Deletes the pod row; its container rows must be gone first (foreign key). */
  deletePod(key: string): void {
    this.db.prepare('DELETE FROM pods WHERE key = ?').run(key);
  }

  /** Intent row: written before conmon/runc are touched (rule S3). */
  insertContainer(c: ContainerRecord): void {
    this.db
      .prepare(
        `INSERT INTO containers(id, pod_key, name, spec_hash, image_ref, image_digest, state, pid, pid_start, exit_code, created_at, started_at, finished_at)
         VALUES (@id, @podKey, @name, @specHash, @imageRef, @imageDigest, @state, @pid, @pidStart, @exitCode, @createdAt, @startedAt, @finishedAt)`,
      )
      .run(c);
  }

  updateContainer(id: string, patch: Partial<Pick<ContainerRecord, 'state' | 'pid' | 'pidStart' | 'exitCode' | 'startedAt' | 'finishedAt'>>): void {
    const cols: Record<string, string> = {
      state: 'state',
      pid: 'pid',
      pidStart: 'pid_start',
      exitCode: 'exit_code',
      startedAt: 'started_at',
      finishedAt: 'finished_at',
    };
    const sets: string[] = [];
    const values: unknown[] = [];
    for (const [k, v] of Object.entries(patch)) {
      const col = cols[k];
      if (col === undefined || v === undefined) continue;
      sets.push(`${col} = ?`);
      values.push(v);
    }
    if (sets.length === 0) return;
    this.db.prepare(`UPDATE containers SET ${sets.join(', ')} WHERE id = ?`).run(...values, id);
  }

  deleteContainer(id: string): void {
    this.db.prepare('DELETE FROM containers WHERE id = ?').run(id);
  }

  getContainer(id: string): ContainerRecord | undefined {
    const r = this.db.prepare('SELECT * FROM containers WHERE id = ?').get(id) as ContainerRow | undefined;
    return r === undefined ? undefined : containerFromRow(r);
  }

  listContainers(podKey?: string): ContainerRecord[] {
    const rows = (
      podKey === undefined
        ? this.db.prepare('SELECT * FROM containers ORDER BY pod_key, name, created_at').all()
        : this.db.prepare('SELECT * FROM containers WHERE pod_key = ? ORDER BY name, created_at').all(podKey)
    ) as ContainerRow[];
    return rows.map(containerFromRow);
  }

  // events -------------------------------------------------------------------

  addEvent(key: string, reason: string, message: string, ts = Date.now()): void {
    const tx = this.db.transaction(() => {
      const r = this.db.prepare('INSERT INTO events(ts, key, reason, message) VALUES (?, ?, ?, ?)').run(ts, key, reason, message);
      const id = Number(r.lastInsertRowid);
      if (id % 100 === 0) this.db.prepare('DELETE FROM events WHERE id <= ?').run(id - EVENTS_KEPT);
    });
    tx();
  }

  listEvents(limit = 100): EventRecord[] {
    const rows = this.db.prepare('SELECT * FROM events ORDER BY id DESC LIMIT ?').all(limit) as EventRecord[];
    return rows.reverse();
  }

  /** `PRAGMA integrity_check`: "ok" or the first problems SQLite reports. */
  integrityCheck(): string {
    const rows = this.db.pragma('integrity_check') as { integrity_check: string }[];
    return rows.map((r) => r.integrity_check).join('; ');
  }

  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }
}

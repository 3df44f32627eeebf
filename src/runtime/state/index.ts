import Database from 'better-sqlite3';
import type { Database as Db } from 'better-sqlite3';
import * as path from 'node:path';
import { BerthError, type ErrorCode } from '../../lib/errors.js';
import type { Digest } from '../../lib/digest.js';

/**
 * Embedded state at `<root>/berth.db` (rule S5): WAL, synchronous=NORMAL, foreign keys,
 * busy_timeout, migrations by user_version inside one transaction each. Methods are
 * synchronous: no await may happen inside a transaction (STYLE rule 6).
 *
 * synchronous=NORMAL (S5 allows it where losing the last transaction is tolerable): in WAL mode
 * a commit is durable against a crash of berth (kill -9: the crash suite) and the database is
 * never corrupted; only a power loss or kernel crash can roll back the last commits, and those
 * leave nothing the next start does not repair — files are written and fsynced before the rows
 * naming them (a file without a row is GC's), intent rows are reconciled with what is observed,
 * and after a reboot the containers and netns the rows described are gone anyway. The WAL is
 * fsynced at each checkpoint. It saves an fsync per commit: a `run --rm` makes about eleven.
 */

export type ContainerState = 'creating' | 'created' | 'running' | 'exited' | 'removing';

export interface ImageRecord {
  ref: string;
  digest: Digest; // manifest digest (platform-specific manifest)
  indexDigest: Digest | null; // when the ref resolved to an index
  updatedAt: number;
  /** Last pull or container create with this image (ms); automatic GC removes the least recent first. Ignored on put (set to updatedAt). */
  lastUsed?: number;
}

/** What a lease protects: a blob (content store), a snapshot (chain ID), or an ingest (partial download, by digest). */
export type LeaseResourceKind = 'blob' | 'snapshot' | 'ingest';

export interface LeaseRecord {
  id: string;
  createdAt: number;
  expiresAt: number;
  resources: { kind: LeaseResourceKind; id: string }[];
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
  /** Bumped each time the applied spec changes (metadata.generation); ignored on upsert. */
  generation?: number;
  /**
   * Set while the pod is being deleted: when its grace period ends (Kubernetes' deletionTimestamp).
   * Written by markPodDeleting only; an upsert (the pod applied again) clears it.
   */
  deletionTimestamp?: number | null;
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
  /** Restart attempt this container is (0 = first run); part of its id. */
  attempt: number;
  /** Why it exited: Completed, Error, OOMKilled, or the signal name. */
  reason: string | null;
}

/**
 * A pod sandbox (rule S3 intent row): the infra container holding the pod's network, IPC and
 * UTS namespaces, its pinned network namespace and what CNI gave it. Written `creating` before
 * the netns exists, `ready` once the infra container runs, `removing` before teardown starts.
 */
export interface SandboxRecord {
  podKey: string;
  /** The infra container's id (also the CNI container id). */
  id: string;
  /** Hash of what shapes the sandbox (hostname, DNS, ports…): a change rebuilds it. */
  hash: string;
  state: 'creating' | 'ready' | 'removing';
  /** Path of the pinned network namespace (/run/netns/…). */
  netns: string;
  ip: string | null;
  pid: number | null;
  pidStart: string | null;
  /** Host ports as mapped (JSON list of { hostPort, containerPort, protocol, hostIP? }). */
  ports: string;
  /** The network configuration list ADD ran with: DEL must see the same (CNI spec). */
  cniConfig: string | null;
  /** The cached ADD result, handed to DEL and CHECK as prevResult. */
  cniResult: string | null;
  createdAt: number;
}

export interface EventRecord {
  id: number;
  ts: number;
  key: string;
  /** Normal for expected transitions, Warning for failures (as Kubernetes events). */
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
  /** The berth error code of a Warning about a failure (README, Error codes), else null. */
  code: string | null;
}

/**
 * What survives a container attempt, per (pod, container name): restart count, the last
 * exit, and the crash-loop backoff (rule S6). It outlives the container rows, so a daemon
 * restart continues the backoff where it was.
 */
export interface RestartRecord {
  podKey: string;
  name: string;
  restarts: number;
  /** The attempt number the next container of this name gets (its id suffix). */
  nextAttempt: number;
  /** Delay before the next policy restart, counted from lastFinishedAt; 0 = at once. */
  backoffMs: number;
  lastId: string | null;
  lastExitCode: number | null;
  lastReason: string | null;
  lastStartedAt: number | null;
  lastFinishedAt: number | null;
}

export interface ConditionRecord {
  key: string;
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  /** The berth error code of the failure the condition reports, if it reports one. */
  code?: string | null;
  observedGeneration: number;
  lastTransitionTime: number;
}

/**
 * Whether an event's key is `prefix` or lies under it (`prefix/…`): the rule listEvents's query
 * applies, for filters that see events one at a time (the daemon's followed stream). An empty
 * prefix matches every key.
 */
export function eventKeyMatches(key: string, prefix: string): boolean {
  return prefix === '' || key === prefix || key.startsWith(`${prefix}/`);
}

/** Schema migrations, append-only: the database's user_version is how many ran. */
export const MIGRATIONS: readonly string[] = [
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
  `
  ALTER TABLE containers ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE containers ADD COLUMN reason TEXT;
  ALTER TABLE pods ADD COLUMN generation INTEGER NOT NULL DEFAULT 1;
  ALTER TABLE events ADD COLUMN type TEXT NOT NULL DEFAULT 'Normal';
  CREATE INDEX events_key ON events(key, id);
  CREATE TABLE restarts (
    pod_key TEXT NOT NULL,
    name TEXT NOT NULL,
    restarts INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL DEFAULT 0,
    backoff_ms INTEGER NOT NULL DEFAULT 0,
    last_id TEXT,
    last_exit_code INTEGER,
    last_reason TEXT,
    last_started_at INTEGER,
    last_finished_at INTEGER,
    PRIMARY KEY (pod_key, name)
  ) STRICT;
  CREATE TABLE conditions (
    key TEXT NOT NULL,
    type TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('True','False','Unknown')),
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    observed_generation INTEGER NOT NULL,
    last_transition_time INTEGER NOT NULL,
    PRIMARY KEY (key, type)
  ) STRICT;
  `,
  `
  CREATE TABLE sandboxes (
    pod_key TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    hash TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('creating','ready','removing')),
    netns TEXT NOT NULL,
    ip TEXT,
    pid INTEGER,
    pid_start TEXT,
    ports TEXT NOT NULL DEFAULT '[]',
    cni_config TEXT,
    cni_result TEXT,
    created_at INTEGER NOT NULL
  ) STRICT;
  `,
  `
  CREATE TABLE configs (
    key TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    object TEXT NOT NULL
  ) STRICT;
  `,
  // Issue 14: leases (containerd's), GC roots while a pull writes files before their rows; and
  // each image's last use, the order automatic GC removes unused images in (least recent first).
  `
  CREATE TABLE leases (
    id TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
  ) STRICT;
  CREATE TABLE lease_resources (
    lease_id TEXT NOT NULL REFERENCES leases(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('blob','snapshot','ingest')),
    id TEXT NOT NULL,
    PRIMARY KEY (lease_id, kind, id)
  ) STRICT;
  ALTER TABLE images ADD COLUMN last_used INTEGER NOT NULL DEFAULT 0;
  UPDATE images SET last_used = updated_at;
  `,
  // Issue 15: the error code of a failure a condition or a Warning event reports (status and
  // events -o json carry it beside the message; NULL for rows written before and for successes).
  `
  ALTER TABLE conditions ADD COLUMN code TEXT;
  ALTER TABLE events ADD COLUMN code TEXT;
  `,
  // Kubernetes' deletionTimestamp: set when the pod's deletion starts (an intent written before its
  // containers are stopped), the time its grace period ends; status and describe read it as Terminating.
  `
  ALTER TABLE pods ADD COLUMN deletion_timestamp INTEGER;
  `,
];

const EVENTS_KEPT = 10_000;

/** The number of migrations this berth knows (the database's user_version once opened). */
export const SCHEMA_VERSION = MIGRATIONS.length;

interface ImageRow {
  ref: string;
  digest: string;
  index_digest: string | null;
  updated_at: number;
  last_used: number;
}

function imageFromRow(r: ImageRow): ImageRecord {
  return { ref: r.ref, digest: r.digest as Digest, indexDigest: r.index_digest as Digest | null, updatedAt: r.updated_at, lastUsed: r.last_used };
}

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
  attempt: number;
  reason: string | null;
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
    attempt: r.attempt,
    reason: r.reason,
  };
}

/** The code of a failure to open or migrate the database, from SQLite's result code. */
function openFailureCode(err: unknown): ErrorCode {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code !== 'string') return 'ERR_INTERNAL';
  if (code === 'SQLITE_FULL') return 'ERR_RESOURCE_EXHAUSTED';
  if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') return 'ERR_LOCKED';
  if (/^SQLITE_(IOERR|CANTOPEN|READONLY|CORRUPT|NOTADB|PERM)/.test(code)) return 'ERR_IO';
  return 'ERR_INTERNAL';
}

/**
 * Runs one write; SQLite's failures of the disk under the database (full, I/O error, read-only,
 * busy) become BerthErrors with their codes, named by `what` (regression
 * lease-write-on-full-disk-is-raw-sqlite-error). Other errors pass through unchanged.
 */
function diskWrite<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof BerthError) throw err;
    const code = openFailureCode(err);
    if (code === 'ERR_INTERNAL') throw err;
    throw new BerthError(code, `state database: ${what}: ${(err as Error).message}`, { cause: err });
  }
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
      this.db.pragma('synchronous = NORMAL');
      this.db.pragma('foreign_keys = ON');
      this.migrate();
    } catch (err) {
      // A full or failing disk is the host's, not a bug: the code says which (regression open-state-full-disk-is-internal).
      throw new BerthError(openFailureCode(err), `open state ${file}: ${(err as Error).message}`, { cause: err });
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

  /** Every manifest row (GC marks from them). */
  listManifests(): ManifestRecord[] {
    const rows = this.db.prepare('SELECT digest FROM manifests ORDER BY digest').all() as { digest: string }[];
    return rows.map((r) => this.getManifest(r.digest as Digest)).filter((m): m is ManifestRecord => m !== undefined);
  }

  /** Deletes manifest rows; an image row still naming one makes it fail (foreign key): remove those first. */
  deleteManifests(digests: readonly Digest[]): void {
    this.transaction(() => {
      const del = this.db.prepare('DELETE FROM manifests WHERE digest = ?');
      for (const d of digests) del.run(d);
    });
  }

  /** Deletes image rows (references only; their manifests stay until GC). */
  deleteImages(refs: readonly string[]): void {
    this.transaction(() => {
      const del = this.db.prepare('DELETE FROM images WHERE ref = ?');
      for (const r of refs) del.run(r);
    });
  }

  putImage(img: ImageRecord): void {
    this.db
      .prepare(
        `INSERT INTO images(ref, digest, index_digest, updated_at, last_used) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT(ref) DO UPDATE SET digest = excluded.digest, index_digest = excluded.index_digest, updated_at = excluded.updated_at,
           last_used = max(images.last_used, excluded.last_used)`,
      )
      .run(img.ref, img.digest, img.indexDigest, img.updatedAt, img.lastUsed ?? img.updatedAt);
  }

  /** Records a use of the image rows naming `digest` (a container created from it). */
  touchImage(digest: Digest, now = Date.now()): void {
    this.db.prepare('UPDATE images SET last_used = max(last_used, ?) WHERE digest = ?').run(now, digest);
  }

  getImage(ref: string): ImageRecord | undefined {
    const r = this.db.prepare('SELECT * FROM images WHERE ref = ?').get(ref) as ImageRow | undefined;
    return r === undefined ? undefined : imageFromRow(r);
  }

  listImages(): ImageRecord[] {
    return (this.db.prepare('SELECT * FROM images ORDER BY ref').all() as ImageRow[]).map(imageFromRow);
  }

  // leases -------------------------------------------------------------------

  /** A new lease, protecting nothing yet, until `expiresAt` (ms). */
  createLease(id: string, now: number, expiresAt: number): void {
    diskWrite(`lease ${id}: create`, () => this.db.prepare('INSERT INTO leases(id, created_at, expires_at) VALUES (?, ?, ?)').run(id, now, expiresAt));
  }

  /** Moves a lease's expiry (a pull that still runs); false when the lease is gone (GC deleted it expired). */
  extendLease(id: string, expiresAt: number): boolean {
    return diskWrite(`lease ${id}: extend`, () => this.db.prepare('UPDATE leases SET expires_at = max(expires_at, ?) WHERE id = ?').run(expiresAt, id).changes > 0);
  }

  /** Adds resources to a lease (idempotent); ERR_NOT_FOUND when the lease is gone. */
  addLeaseResources(id: string, resources: readonly { kind: LeaseResourceKind; id: string }[]): void {
    diskWrite(`lease ${id}: add resources`, () => this.transaction(() => {
      if (this.db.prepare('SELECT 1 FROM leases WHERE id = ?').get(id) === undefined) {
        throw new BerthError('ERR_NOT_FOUND', `lease ${id}: no such lease (expired and collected)`, { details: { lease: id } });
      }
      const ins = this.db.prepare('INSERT OR IGNORE INTO lease_resources(lease_id, kind, id) VALUES (?, ?, ?)');
      for (const r of resources) ins.run(id, r.kind, r.id);
    }));
  }

  /** Deletes a lease and its resource rows (idempotent). */
  deleteLease(id: string): void {
    diskWrite(`lease ${id}: delete`, () => this.db.prepare('DELETE FROM leases WHERE id = ?').run(id));
  }

  /** Every lease with its resources, expired ones included. */
  listLeases(): LeaseRecord[] {
    const leases = this.db.prepare('SELECT id, created_at, expires_at FROM leases ORDER BY created_at, id').all() as { id: string; created_at: number; expires_at: number }[];
    const res = this.db.prepare('SELECT lease_id, kind, id FROM lease_resources ORDER BY lease_id, kind, id').all() as { lease_id: string; kind: LeaseResourceKind; id: string }[];
    const by = new Map<string, LeaseRecord>(leases.map((l) => [l.id, { id: l.id, createdAt: l.created_at, expiresAt: l.expires_at, resources: [] }]));
    for (const r of res) by.get(r.lease_id)?.resources.push({ kind: r.kind, id: r.id });
    return [...by.values()];
  }

  /** Deletes the leases expired at `now`; returns their ids. */
  deleteExpiredLeases(now: number): string[] {
    return this.transaction(() => {
      const ids = (this.db.prepare('SELECT id FROM leases WHERE expires_at <= ? ORDER BY id').all(now) as { id: string }[]).map((r) => r.id);
      this.db.prepare('DELETE FROM leases WHERE expires_at <= ?').run(now);
      return ids;
    });
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

  /** Every snapshot row with its parent link (GC marks the chains). */
  listSnapshotRecords(): SnapshotRecord[] {
    return this.listSnapshots()
      .map((id) => this.getSnapshot(id))
      .filter((r): r is SnapshotRecord => r !== undefined);
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
         ON CONFLICT(key) DO UPDATE SET source = excluded.source, pod_hash = excluded.pod_hash, spec = excluded.spec,
           generation = CASE WHEN pods.spec = excluded.spec THEN pods.generation ELSE pods.generation + 1 END,
           deletion_timestamp = NULL`,
      )
      .run(p.key, p.namespace, p.name, p.source, p.podHash, p.spec, p.createdAt);
  }

  listPods(): PodRecord[] {
    return this.listPodsWhere('1 ORDER BY key');
  }

  getPod(key: string): PodRecord | undefined {
    return this.listPodsWhere('key = ?', key)[0];
  }

  /** Records that the pod's deletion started and when its grace period ends. No-op for an unknown key. */
  markPodDeleting(key: string, deletionTimestamp: number): void {
    this.db.prepare('UPDATE pods SET deletion_timestamp = ? WHERE key = ?').run(deletionTimestamp, key);
  }

  private listPodsWhere(where: string, ...args: unknown[]): PodRecord[] {
    const rows = this.db.prepare(`SELECT * FROM pods WHERE ${where}`).all(...args) as {
      key: string;
      namespace: string;
      name: string;
      source: string;
      pod_hash: string;
      spec: string;
      created_at: number;
      generation: number;
      deletion_timestamp: number | null;
    }[];
    return rows.map((r) => ({
      key: r.key,
      namespace: r.namespace,
      name: r.name,
      source: r.source,
      podHash: r.pod_hash,
      spec: r.spec,
      createdAt: r.created_at,
      generation: r.generation,
      deletionTimestamp: r.deletion_timestamp,
    }));
  }

  /** Deletes the pod row with its restart and condition rows; its container rows must be gone first (foreign key). */
  deletePod(key: string): void {
    this.transaction(() => {
      this.db.prepare('DELETE FROM restarts WHERE pod_key = ?').run(key);
      this.db.prepare('DELETE FROM conditions WHERE key = ?').run(`pod/${key}`);
      this.db.prepare('DELETE FROM pods WHERE key = ?').run(key);
    });
  }

  // restarts -------------------------------------------------------------------

  listRestarts(podKey?: string): RestartRecord[] {
    const rows = (
      podKey === undefined
        ? this.db.prepare('SELECT * FROM restarts ORDER BY pod_key, name').all()
        : this.db.prepare('SELECT * FROM restarts WHERE pod_key = ? ORDER BY name').all(podKey)
    ) as {
      pod_key: string;
      name: string;
      restarts: number;
      next_attempt: number;
      backoff_ms: number;
      last_id: string | null;
      last_exit_code: number | null;
      last_reason: string | null;
      last_started_at: number | null;
      last_finished_at: number | null;
    }[];
    return rows.map((r) => ({
      podKey: r.pod_key,
      name: r.name,
      restarts: r.restarts,
      nextAttempt: r.next_attempt,
      backoffMs: r.backoff_ms,
      lastId: r.last_id,
      lastExitCode: r.last_exit_code,
      lastReason: r.last_reason,
      lastStartedAt: r.last_started_at,
      lastFinishedAt: r.last_finished_at,
    }));
  }

  getRestart(podKey: string, name: string): RestartRecord | undefined {
    return this.listRestarts(podKey).find((r) => r.name === name);
  }

  putRestart(r: RestartRecord): void {
    this.db
      .prepare(
        `INSERT INTO restarts(pod_key, name, restarts, next_attempt, backoff_ms, last_id, last_exit_code, last_reason, last_started_at, last_finished_at)
         VALUES (@podKey, @name, @restarts, @nextAttempt, @backoffMs, @lastId, @lastExitCode, @lastReason, @lastStartedAt, @lastFinishedAt)
         ON CONFLICT(pod_key, name) DO UPDATE SET restarts = excluded.restarts, next_attempt = excluded.next_attempt,
           backoff_ms = excluded.backoff_ms, last_id = excluded.last_id, last_exit_code = excluded.last_exit_code,
           last_reason = excluded.last_reason, last_started_at = excluded.last_started_at, last_finished_at = excluded.last_finished_at`,
      )
      .run(r);
  }

  // conditions -----------------------------------------------------------------

  listConditions(key?: string): ConditionRecord[] {
    const rows = (
      key === undefined
        ? this.db.prepare('SELECT * FROM conditions ORDER BY key, type').all()
        : this.db.prepare('SELECT * FROM conditions WHERE key = ? ORDER BY type').all(key)
    ) as { key: string; type: string; status: ConditionRecord['status']; reason: string; message: string; code: string | null; observed_generation: number; last_transition_time: number }[];
    return rows.map((r) => ({
      key: r.key,
      type: r.type,
      status: r.status,
      reason: r.reason,
      message: r.message,
      code: r.code,
      observedGeneration: r.observed_generation,
      lastTransitionTime: r.last_transition_time,
    }));
  }

  /**
   * Replaces the conditions of one object. lastTransitionTime is kept for a condition
   * whose status did not change (Kubernetes semantics). Returns the types whose status or reason changed.
   */
  setConditions(key: string, conds: readonly Omit<ConditionRecord, 'key' | 'lastTransitionTime'>[], now = Date.now()): string[] {
    return this.transaction(() => {
      const before = new Map(this.listConditions(key).map((c) => [c.type, c]));
      // Most runs of a key change nothing: no write then (a write is a WAL append).
      const unchanged =
        before.size === conds.length &&
        conds.every((c) => {
          const p = before.get(c.type);
          return p !== undefined && p.status === c.status && p.reason === c.reason && p.message === c.message && p.code === (c.code ?? null) && p.observedGeneration === c.observedGeneration;
        });
      if (unchanged) return [];
      const changed: string[] = [];
      this.db.prepare('DELETE FROM conditions WHERE key = ?').run(key);
      const ins = this.db.prepare(
        'INSERT INTO conditions(key, type, status, reason, message, code, observed_generation, last_transition_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
      );
      for (const c of conds) {
        const prev = before.get(c.type);
        const same = prev !== undefined && prev.status === c.status;
        if (!same || prev.reason !== c.reason) changed.push(c.type);
        ins.run(key, c.type, c.status, c.reason, c.message, c.code ?? null, c.observedGeneration, same ? prev.lastTransitionTime : now);
      }
      return changed;
    });
  }

  deleteConditions(key: string): void {
    this.db.prepare('DELETE FROM conditions WHERE key = ?').run(key);
  }

  /** Intent row: written before conmon/runc are touched (rule S3). */
  insertContainer(c: ContainerRecord): void {
    this.db
      .prepare(
        `INSERT INTO containers(id, pod_key, name, spec_hash, image_ref, image_digest, state, pid, pid_start, exit_code, created_at, started_at, finished_at, attempt, reason)
         VALUES (@id, @podKey, @name, @specHash, @imageRef, @imageDigest, @state, @pid, @pidStart, @exitCode, @createdAt, @startedAt, @finishedAt, @attempt, @reason)`,
      )
      .run(c);
  }

  updateContainer(id: string, patch: Partial<Pick<ContainerRecord, 'state' | 'pid' | 'pidStart' | 'exitCode' | 'startedAt' | 'finishedAt' | 'reason'>>): void {
    const cols: Record<string, string> = {
      reason: 'reason',
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

  // configs (ConfigMaps and Secrets as applied) -------------------------------

  /** The applied ConfigMaps and Secrets, as the JSON the reconciler recorded (key, source, object). */
  listConfigs(): { key: string; source: string; object: string }[] {
    return this.db.prepare('SELECT key, source, object FROM configs ORDER BY key').all() as { key: string; source: string; object: string }[];
  }

  /** Writes and deletes config rows in one transaction. */
  updateConfigs(put: readonly { key: string; source: string; object: string }[], remove: readonly string[]): void {
    this.transaction(() => {
      const ins = this.db.prepare('INSERT INTO configs(key, source, object) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET source = excluded.source, object = excluded.object');
      for (const c of put) ins.run(c.key, c.source, c.object);
      const del = this.db.prepare('DELETE FROM configs WHERE key = ?');
      for (const k of remove) del.run(k);
    });
  }

  // sandboxes ----------------------------------------------------------------

  putSandbox(s: SandboxRecord): void {
    this.db
      .prepare(
        `INSERT INTO sandboxes(pod_key, id, hash, state, netns, ip, pid, pid_start, ports, cni_config, cni_result, created_at)
         VALUES (@podKey, @id, @hash, @state, @netns, @ip, @pid, @pidStart, @ports, @cniConfig, @cniResult, @createdAt)
         ON CONFLICT(pod_key) DO UPDATE SET id = excluded.id, hash = excluded.hash, state = excluded.state, netns = excluded.netns,
           ip = excluded.ip, pid = excluded.pid, pid_start = excluded.pid_start, ports = excluded.ports,
           cni_config = excluded.cni_config, cni_result = excluded.cni_result, created_at = excluded.created_at`,
      )
      .run(s);
  }

  getSandbox(podKey: string): SandboxRecord | undefined {
    return this.sandboxesWhere('pod_key = ?', podKey)[0];
  }

  listSandboxes(): SandboxRecord[] {
    return this.sandboxesWhere('1 ORDER BY pod_key');
  }

  deleteSandbox(podKey: string): void {
    this.db.prepare('DELETE FROM sandboxes WHERE pod_key = ?').run(podKey);
  }

  private sandboxesWhere(where: string, ...args: unknown[]): SandboxRecord[] {
    const rows = this.db.prepare(`SELECT * FROM sandboxes WHERE ${where}`).all(...args) as {
      pod_key: string;
      id: string;
      hash: string;
      state: SandboxRecord['state'];
      netns: string;
      ip: string | null;
      pid: number | null;
      pid_start: string | null;
      ports: string;
      cni_config: string | null;
      cni_result: string | null;
      created_at: number;
    }[];
    return rows.map((r) => ({
      podKey: r.pod_key,
      id: r.id,
      hash: r.hash,
      state: r.state,
      netns: r.netns,
      ip: r.ip,
      pid: r.pid,
      pidStart: r.pid_start,
      ports: r.ports,
      cniConfig: r.cni_config,
      cniResult: r.cni_result,
      createdAt: r.created_at,
    }));
  }

  // events -------------------------------------------------------------------

  /** Appends one event; retention keeps the newest EVENTS_KEPT. Returns the event. */
  addEvent(key: string, reason: string, message: string, opts: { type?: EventRecord['type']; ts?: number; code?: string } = {}): EventRecord {
    const ts = opts.ts ?? Date.now();
    const type = opts.type ?? 'Normal';
    const code = opts.code ?? null;
    return this.transaction(() => {
      const r = this.db.prepare('INSERT INTO events(ts, key, reason, message, type, code) VALUES (?, ?, ?, ?, ?, ?)').run(ts, key, reason, message, type, code);
      const id = Number(r.lastInsertRowid);
      if (id % 100 === 0) this.db.prepare('DELETE FROM events WHERE id <= ?').run(id - EVENTS_KEPT);
      return { id, ts, key, type, reason, message, code };
    });
  }

  /**
   * Events in order: the newest `limit` (default 100) after `afterId`, since `sinceTs`,
   * optionally only those of the key `keyPrefix` and the keys under it (`keyPrefix/…`): the
   * events of pod/default/web, not those of pod/default/web2 (regression events-for-prefix).
   */
  /** `keyPrefix`: the events of that key and of keys under it (`pod/ns/web` and `pod/ns/web/…`, not `pod/ns/web2`), as eventKeyMatches. */
  listEvents(o: { limit?: number; afterId?: number; sinceTs?: number; keyPrefix?: string } = {}): EventRecord[] {
    const k = o.keyPrefix ?? '';
    const rows = (
      k === ''
        ? this.db.prepare('SELECT * FROM events WHERE id > ? AND ts >= ? ORDER BY id DESC LIMIT ?').all(o.afterId ?? 0, o.sinceTs ?? 0, o.limit ?? 100)
        : this.db
            .prepare('SELECT * FROM events WHERE id > ? AND ts >= ? AND (key = ? OR substr(key, 1, ?) = ?) ORDER BY id DESC LIMIT ?')
            .all(o.afterId ?? 0, o.sinceTs ?? 0, k, k.length + 1, `${k}/`, o.limit ?? 100)
    ) as EventRecord[];
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

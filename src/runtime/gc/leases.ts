import { randomBytes } from 'node:crypto';
import type { Logger } from '../../lib/log.js';
import type { LeaseResourceKind, StateStore } from '../state/index.js';

/**
 * Leases (containerd's `core/leases`): a pull writes blobs and snapshot directories before the
 * rows that name them, so between the two nothing but a lease says they are wanted. A lease is a
 * row with an expiry and the resources it protects; GC treats the resources of unexpired leases
 * as roots and deletes expired leases. A pull takes one at its start, adds each resource before
 * it looks at or writes it, and releases the lease once its rows are recorded. The lease is kept
 * alive (its expiry moved) while the pull runs; a berth killed mid-pull leaves it in SQLite, so
 * a GC in the next process keeps what the pull had written until the lease expires (1 h), and a
 * pull again resumes instead of fetching everything anew.
 *
 * Within one process GC and pulls now run side by side (no gate), which leaves two windows the
 * rows alone do not close, both handled here in memory:
 *  - a resource leased after GC read the leases but before GC removes its file: GC asks
 *    `mayRemove` just before each removal, which sees every resource leased since that GC began
 *    (`beginSweep` … `endSweep`), even by a lease already released;
 *  - a pull that leases a resource while GC is removing its file: the removal is registered
 *    (`removing`) in the same synchronous step as the check, and `Lease.add` waits for it to
 *    settle before returning, so the pull then sees the file gone and writes it again.
 */

/** How long a lease lives unless it is extended (a pull extends it while it runs). */
export const LEASE_TTL_MS = 60 * 60 * 1000;

/** A held lease (see LeaseManager). */
export interface Lease {
  readonly id: string;
  /**
   * Protects resources from GC; call before looking at or writing them. Resolves once no GC
   * removal of any of them is in flight. Idempotent.
   */
  add(resources: readonly { kind: LeaseResourceKind; id: string }[]): Promise<void>;
  /** Deletes the lease (its rows must name what it protected by now). Idempotent; never throws. */
  release(): void;
}

export class LeaseManager {
  /** Resources leased since the current sweep began (undefined: no sweep runs). */
  private sweepSeen: Set<string> | undefined;
  /** Removals in flight by GC, by resource key. */
  private readonly removals = new Map<string, Promise<unknown>>();
  /** Leases this process holds. */
  private readonly live = new Set<string>();

  constructor(
    private readonly state: StateStore,
    private readonly log: Logger,
    private readonly ttlMs = LEASE_TTL_MS,
  ) {}

  /** Takes a lease (a row, expiring after the TTL, extended every TTL/4 until released). */
  create(what: string): Lease {
    const id = `${what}/${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
    const now = Date.now();
    this.state.createLease(id, now, now + this.ttlMs);
    this.live.add(id);
    const timer = setInterval(() => {
      try {
        if (!this.state.extendLease(id, Date.now() + this.ttlMs)) this.log.warn({ lease: id }, 'lease vanished while held');
      } catch (err) {
        this.log.warn({ lease: id, err: (err as Error).message }, 'extending a lease failed');
      }
    }, Math.max(1000, Math.floor(this.ttlMs / 4)));
    timer.unref();
    let released = false;
    return {
      id,
      add: async (resources) => {
        if (released) return;
        this.state.addLeaseResources(id, resources);
        for (const r of resources) this.sweepSeen?.add(key(r.kind, r.id));
        for (const r of resources) {
          const p = this.removals.get(key(r.kind, r.id));
          if (p !== undefined) await p.catch(() => undefined);
        }
      },
      release: () => {
        if (released) return;
        released = true;
        clearInterval(timer);
        this.live.delete(id);
        try {
          this.state.deleteLease(id);
        } catch (err) {
          // Left to expire: GC deletes it then.
          this.log.warn({ lease: id, err: (err as Error).message }, 'releasing a lease failed');
        }
      },
    };
  }

  /** How many leases this process holds now (a pull in flight may be extracting into `tmp-` dirs). */
  held(): number {
    return this.live.size;
  }

  /** Called by GC right after it read the leases and marked (synchronously). */
  beginSweep(): void {
    this.sweepSeen = new Set();
  }

  endSweep(): void {
    this.sweepSeen = undefined;
  }

  /**
   * GC is about to remove a resource's file: false (nothing done) if a lease took it since the
   * sweep began. Otherwise the removal `run` starts now, in the same synchronous step as the
   * check, and a lease that adds the resource meanwhile waits for it; true once it is done.
   */
  async remove(kind: LeaseResourceKind, id: string, run: () => Promise<void>): Promise<boolean> {
    const k = key(kind, id);
    if (this.sweepSeen?.has(k) === true) return false;
    const p = run();
    this.removals.set(k, p);
    try {
      await p;
    } finally {
      if (this.removals.get(k) === p) this.removals.delete(k);
    }
    return true;
  }
}

function key(kind: LeaseResourceKind, id: string): string {
  return `${kind} ${id}`;
}

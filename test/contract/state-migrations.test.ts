import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MIGRATIONS, SCHEMA_VERSION, StateStore } from '../../src/runtime/state/index.js';
import type { Digest } from '../../src/lib/digest.js';

/**
 * The state schema's migrations (rule S5): append-only, each run once inside the opening
 * transaction. Issue 14's migration (leases, images.last_used) upgrades a database written by
 * the berth before it without losing a row, and the lease rows behave as GC relies on.
 */

const D1 = `sha256:${'1'.repeat(64)}` as Digest;

function tempRoot(): string {
  return mkdtempSync(path.join(os.tmpdir(), 'berth-state-'));
}

describe('state migrations', () => {
  test('a database at the schema before leases opens upgraded: rows kept, last_used taken from updated_at', () => {
    const root = tempRoot();
    try {
      const db = new Database(path.join(root, 'berth.db'));
      const before = MIGRATIONS.findIndex((m) => m.includes('CREATE TABLE leases'));
      assert.ok(before > 0, 'the leases migration exists and is not the first');
      for (const m of MIGRATIONS.slice(0, before)) db.exec(m);
      db.pragma(`user_version = ${before}`);
      db.prepare("INSERT INTO manifests(digest, config_digest, config, layers) VALUES (?, ?, '{}', '[]')").run(D1, D1);
      db.prepare('INSERT INTO images(ref, digest, index_digest, updated_at) VALUES (?, ?, NULL, 1234)').run('r/x:1', D1);
      db.close();

      const s = new StateStore(root);
      try {
        assert.deepEqual(s.getImage('r/x:1'), { ref: 'r/x:1', digest: D1, indexDigest: null, updatedAt: 1234, lastUsed: 1234 });
        const v = new Database(path.join(root, 'berth.db'), { readonly: true });
        assert.equal(v.pragma('user_version', { simple: true }), SCHEMA_VERSION);
        v.close();
        // A container created later moves last_used; an older time never moves it back.
        s.touchImage(D1, 5000);
        s.touchImage(D1, 4000);
        assert.equal(s.getImage('r/x:1')?.lastUsed, 5000);
        // A pull of the same ref again sets it to the pull's time if later.
        s.putImage({ ref: 'r/x:1', digest: D1, indexDigest: null, updatedAt: 6000 });
        assert.equal(s.getImage('r/x:1')?.lastUsed, 6000);
      } finally {
        s.close();
      }
      // Opening again runs nothing more.
      new StateStore(root).close();
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  test('a database newer than this berth is refused with ERR_PRECONDITION naming both versions', () => {
    const root = tempRoot();
    try {
      const db = new Database(path.join(root, 'berth.db'));
      db.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
      db.close();
      assert.throws(() => new StateStore(root), (err: Error) => {
        assert.match(err.message, new RegExp(`state schema version ${SCHEMA_VERSION + 1} is newer than this berth \\(${SCHEMA_VERSION}\\)`));
        return true;
      });
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  test('leases: resources, extension, release with its rows, expired ones deleted, adding to a gone lease refused', () => {
    const root = tempRoot();
    const s = new StateStore(root);
    try {
      s.createLease('pull/a', 100, 1000);
      s.createLease('pull/b', 100, 500);
      s.addLeaseResources('pull/a', [
        { kind: 'blob', id: D1 },
        { kind: 'snapshot', id: D1 },
      ]);
      s.addLeaseResources('pull/a', [{ kind: 'blob', id: D1 }]);
      assert.deepEqual(s.listLeases(), [
        { id: 'pull/a', createdAt: 100, expiresAt: 1000, resources: [{ kind: 'blob', id: D1 }, { kind: 'snapshot', id: D1 }] },
        { id: 'pull/b', createdAt: 100, expiresAt: 500, resources: [] },
      ]);
      assert.equal(s.extendLease('pull/b', 2000), true);
      assert.equal(s.extendLease('pull/b', 10), true, 'an extension never shortens');
      assert.equal(s.listLeases().find((l) => l.id === 'pull/b')?.expiresAt, 2000);
      assert.deepEqual(s.deleteExpiredLeases(1000), ['pull/a']);
      assert.deepEqual(s.listLeases().map((l) => l.id), ['pull/b']);
      assert.equal(s.extendLease('pull/a', 5000), false);
      assert.throws(() => s.addLeaseResources('pull/a', [{ kind: 'blob', id: D1 }]), /lease pull\/a: no such lease/);
      s.addLeaseResources('pull/b', [{ kind: 'ingest', id: D1 }]);
      s.deleteLease('pull/b');
      assert.deepEqual(s.listLeases(), []);
      s.deleteLease('pull/b');
    } finally {
      s.close();
      rmSync(root, { recursive: true, force: true });
    }
  });
});

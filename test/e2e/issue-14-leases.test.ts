import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { buildBusyboxImage, pushImage, type BuiltImage } from '../../scripts/fixture-image.js';
import { chainIds, digestHex, type Digest } from '../../src/lib/digest.js';
import { createLogger } from '../../src/lib/log.js';
import { Runtime, type GcReport } from '../../src/runtime/index.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { gatingProxy, imageWithData, type GatingProxy } from '../helpers/gc-images.js';
import { listStore, storeProblems } from '../helpers/gc-check.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, cleanupEnv, makeEnv, type BerthEnv } from '../helpers/berth.js';

/**
 * Issue 14, leases: a pull takes a lease (a SQLite row with an expiry) and adds every blob and
 * snapshot it will write or reuse before touching it, so GC, which treats unexpired leases as
 * roots, can run while a pull is between its file writes and its row write:
 *  - in one process, with no gate between them: a GC run to completion while the pull waits for
 *    its last layer keeps the layer the pull already wrote and the layers it reuses (whose image
 *    row was removed just before), removes the real garbage, and the pull then completes;
 *  - across processes: a pull killed after its files and before its rows (crash point
 *    `pull.before-record`) leaves its lease; `berth gc` keeps its files and the pull again
 *    fetches no layer; once the lease has expired, GC deletes it and then the files.
 */

interface GcOut extends GcReport {}

function leaseRows(root: string): { id: string; expiresAt: number; resources: string[] }[] {
  const db = new Database(path.join(root, 'berth.db'), { readonly: true, fileMustExist: true });
  try {
    const leases = db.prepare('SELECT id, expires_at FROM leases ORDER BY id').all() as { id: string; expires_at: number }[];
    return leases.map((l) => ({
      id: l.id,
      expiresAt: l.expires_at,
      resources: (db.prepare('SELECT kind, id FROM lease_resources WHERE lease_id = ? ORDER BY kind, id').all(l.id) as { kind: string; id: string }[]).map((r) => `${r.kind} ${r.id}`),
    }));
  } finally {
    db.close();
  }
}

describe('e2e: leases keep what a pull wrote from a GC running meanwhile (issue 14)', { timeout: 300_000 }, () => {
  let ok = true;
  let env: BerthEnv;
  let registry: TestRegistry | undefined;
  let proxy: GatingProxy | undefined;
  let base: BuiltImage;

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv('berth-leases-');
    registry = await startRegistry();
    base = await buildBusyboxImage();
    proxy = await gatingProxy(registry.url);
  });

  after(async () => {
    if (!ok) return;
    proxy?.close();
    await cleanupEnv(env);
    await registry?.stop();
  });

  test('gc-during-pull-keeps-leased-files: a GC between a pull\'s file writes and its rows keeps them; the pull completes', async (t) => {
    if (!ok || registry === undefined || proxy === undefined) return t.skip();
    const garbage = await imageWithData(base, { seed: 2, files: 20, fileBytes: 4096 });
    const a = await imageWithData(await imageWithData(base, { seed: 1, files: 20, fileBytes: 4096 }), { seed: 3, files: 20, fileBytes: 4096 });
    await pushImage(registry.url, 'berth/lease', 'garbage', garbage);
    await pushImage(registry.url, 'berth/lease', 'a', a);
    const refG = `${proxy.host}/berth/lease:garbage`;
    const refA = `${proxy.host}/berth/lease:a`;
    const [shared0, shared1, written, held] = a.layers;
    const uniqueG = garbage.layers[2];
    assert.ok(shared0 !== undefined && shared1 !== undefined && written !== undefined && held !== undefined && uniqueG !== undefined);

    const rt = await Runtime.open({ root: env.root, state: env.state, log: createLogger('silent') });
    try {
      await rt.pullImage(refG);
      // The busybox layers' only image row goes: they are garbage unless the pull of A leases them.
      rt.removeImages([refG]);
      const release = proxy.hold(held.digest);
      const pull = rt.pullImage(refA);
      let pulled = false;
      void pull.then(() => (pulled = true), () => undefined);
      await proxy.requested(held.digest);
      const blob = (d: string): string => path.join(env.root, 'content/blobs/sha256', digestHex(d as Digest));
      for (let i = 0; i < 200 && !existsSync(blob(written.digest)); i++) await new Promise((r) => setTimeout(r, 50));
      assert.ok(existsSync(blob(written.digest)), 'the pull wrote its first own layer');
      const leases = leaseRows(env.root);
      assert.equal(leases.length, 1, 'the pull holds one lease');
      for (const l of a.layers) assert.ok(leases[0]?.resources.includes(`blob ${l.digest}`), `lease names layer ${l.digest}`);
      assert.ok(leases[0]?.resources.includes(`blob ${a.configDigest}`) && leases[0]?.resources.includes(`blob ${a.manifestDigest}`));

      // GC now, to completion, while the pull waits for its last layer (no gate between them).
      const report = await rt.collectGarbage({ dryRun: false });
      assert.equal(pulled, false, 'the GC ran while the pull was between its files and its rows');
      const removed = report.removed.map((r) => `${r.kind} ${r.id}`);
      for (const want of [`blob ${uniqueG.digest}`, `blob ${garbage.configDigest}`, `blob ${garbage.manifestDigest}`, `manifest ${garbage.manifestDigest}`]) {
        assert.ok(removed.includes(want), `GC removed the garbage ${want}: ${removed.join(', ')}`);
      }
      for (const l of a.layers) assert.ok(!removed.includes(`blob ${l.digest}`), `GC kept leased ${l.digest}`);
      for (const l of [shared0, shared1, written]) assert.ok(existsSync(blob(l.digest)), `${l.digest} is still on disk`);

      release();
      const img = await pull;
      assert.equal(img.digest, a.manifestDigest);
      assert.ok(rt.localImage(refA) !== undefined, 'the image is complete: every snapshot ready');
      assert.deepEqual(leaseRows(env.root), [], 'the lease is released once the rows are recorded');
      const s = await listStore(env.root);
      for (const l of a.layers) assert.ok(s.blobs.includes(l.digest), `${l.digest} kept`);
      await rt.collectGarbage({ dryRun: false });
      assert.deepEqual(storeProblems(await listStore(env.root)), []);
    } finally {
      await rt.close();
    }
  });

  test('pull-killed-before-record-keeps-lease: its files survive berth gc until the lease expires; the pull again fetches no layer', async (t) => {
    if (!ok || registry === undefined || proxy === undefined) return t.skip();
    const c = await imageWithData(base, { seed: 5, files: 20, fileBytes: 4096 });
    const d = await imageWithData(base, { seed: 6, files: 20, fileBytes: 4096 });
    await pushImage(registry.url, 'berth/lease', 'c', c);
    await pushImage(registry.url, 'berth/lease', 'd', d);
    const refC = `${proxy.host}/berth/lease:c`;
    const refD = `${proxy.host}/berth/lease:d`;
    const crash = { ...process.env, BERTH_CRASH_AT: 'pull.before-record' };

    const killed = await berth(env, ['images', 'pull', '-q', refC], { env: crash });
    assert.equal(killed.signal, 'SIGKILL', `killed at the crash point: ${killed.stderr}`);
    const leases = leaseRows(env.root);
    assert.equal(leases.length, 1, 'the killed pull left its lease');
    assert.ok((leases[0]?.expiresAt ?? 0) > Date.now());
    const s0 = await listStore(env.root);
    assert.ok(!s0.images.some((i) => i.ref === refC), 'no image row yet');
    for (const l of c.layers) assert.ok(s0.blobs.includes(l.digest), `${l.digest} written`);

    const gc = await berth(env, ['gc', '-o', 'json']);
    assert.equal(gc.code, 0, gc.stderr);
    const removed = (JSON.parse(gc.stdout) as GcOut).removed.map((r) => `${r.kind} ${r.id}`);
    for (const l of c.layers) assert.ok(!removed.includes(`blob ${l.digest}`), `gc kept ${l.digest} (leased)`);
    const s1 = await listStore(env.root);
    for (const l of c.layers) assert.ok(s1.blobs.includes(l.digest), `${l.digest} still there`);

    const mark = proxy.seen.length;
    const again = await berth(env, ['images', 'pull', '-q', refC]);
    assert.equal(again.code, 0, again.stderr);
    const fetched = proxy.seen.slice(mark);
    for (const l of c.layers) assert.ok(!fetched.includes(l.digest), `${l.digest} was not fetched again`);
    assert.deepEqual(leaseRows(env.root).map((l) => l.id).length, 1, 'the killed pull\'s lease stays until it expires (the new pull released its own)');
    assert.deepEqual(storeProblems(await listStore(env.root)), []);

    // Expiry: a second killed pull; its lease's time is moved into the past (the clock is the only fake).
    const killed2 = await berth(env, ['images', 'pull', '-q', refD], { env: crash });
    assert.equal(killed2.signal, 'SIGKILL');
    const db = new Database(path.join(env.root, 'berth.db'));
    db.prepare('UPDATE leases SET expires_at = ?').run(Date.now() - 1);
    db.close();
    const gc2 = await berth(env, ['gc', '-o', 'json']);
    assert.equal(gc2.code, 0, gc2.stderr);
    const removed2 = (JSON.parse(gc2.stdout) as GcOut).removed.map((r) => `${r.kind} ${r.id}`);
    assert.equal(removed2.filter((r) => r.startsWith('lease ')).length, 2, `both expired leases deleted: ${removed2.join(', ')}`);
    const uniqueD = d.layers[2];
    assert.ok(uniqueD !== undefined);
    assert.ok(removed2.includes(`blob ${uniqueD.digest}`), 'the expired pull\'s own layer is garbage now');
    const chainD = chainIds(d.layers.map((l) => l.diffId))[2];
    assert.ok(removed2.includes(`snapshot ${chainD}`), 'and its own snapshot');
    assert.deepEqual(leaseRows(env.root), []);
    const s2 = await listStore(env.root);
    assert.deepEqual(storeProblems(s2), []);
    for (const l of c.layers) assert.ok(s2.blobs.includes(l.digest), `the recorded image keeps ${l.digest}`);
  });
});

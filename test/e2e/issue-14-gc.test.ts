import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { buildBusyboxImage, pushImage } from '../../scripts/fixture-image.js';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { listStore, storeProblems, type StoreListing } from '../helpers/gc-check.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, cleanupEnv, makeEnv, waitFor, type BerthEnv } from '../helpers/berth.js';

/**
 * Issue 14, GC: `images rm` refuses an image a pod uses and names the pod; `images rm` of an
 * unused image and `gc` remove its manifest, config, unique layer blob and unique snapshot but
 * keep the layer it shares with the running pod's image; the container keeps running and a
 * restart of it mounts its rootfs again; afterwards no file lacks a row and no row lacks a file;
 * `gc --dry-run` changes nothing. Real docker-registry, runc and overlay mounts.
 */

interface GcOut {
  dryRun: boolean;
  removed: { kind: string; id: string; bytes: number }[];
  bytes: number;
}

interface PsPod {
  key: string;
  containers: { id: string; name: string; state: string; pid: number | null; attempt: number }[];
}

describe('e2e: images rm, images prune and gc (issue 14)', { timeout: 600_000 }, () => {
  let ok = true;
  let env: BerthEnv;
  let demo: DemoFixture | undefined;
  let file = '';
  let used = '';
  let unused = '';

  const ps = async (): Promise<PsPod[]> => {
    const r = await berth(env, ['ps', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as PsPod[];
  };
  const webContainer = async (): Promise<PsPod['containers'][number] | undefined> => (await ps()).find((p) => p.key === 'default/gc-web')?.containers.at(-1);
  const gc = async (args: string[] = []): Promise<GcOut> => {
    const r = await berth(env, ['gc', ...args, '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as GcOut;
  };
  const manifestOf = (s: StoreListing, ref: string): StoreListing['manifests'][number] => {
    const img = s.images.find((i) => i.ref === ref);
    const m = s.manifests.find((x) => x.digest === img?.digest);
    assert.ok(m !== undefined, `${ref} has its manifest row`);
    return m;
  };

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv('berth-gc-');
    demo = await startDemoFixture();
    used = `${demo.registry.host}/berth/demo:1.0`;
    await pushImage(demo.registry.url, 'berth/demo', 'other', await buildBusyboxImage({ page: '<h1>another page, another layer</h1>\n' }));
    unused = `${demo.registry.host}/berth/demo:other`;
    file = path.join(env.dir, 'gc-web.yaml');
    await fsp.writeFile(
      file,
      `apiVersion: v1
kind: Pod
metadata: {name: gc-web}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
    - name: main
      image: ${used}
      command: ["sh", "-c", "while true; do sleep 1; done"]
`,
    );
  });

  after(async () => {
    if (!ok) return;
    await berth(env, ['delete', '-f', file]).catch(() => undefined);
    await cleanupEnv(env);
    await demo?.stop();
  });

  test('two images sharing a layer, one in use: rm refuses the used one, rm + gc reclaim only the other', async (t) => {
    if (!ok) return t.skip('e2e prerequisites missing');
    for (const ref of [used, unused]) {
      const r = await berth(env, ['images', 'pull', '-q', ref]);
      assert.equal(r.code, 0, r.stderr);
    }
    const a = await berth(env, ['apply', '-f', file]);
    assert.equal(a.code, 0, a.stderr);
    const first = await waitFor('gc-web running', async () => {
      const c = await webContainer();
      return c?.state === 'running' ? c : undefined;
    }, 60_000);

    const before = await listStore(env.root);
    assert.deepEqual(storeProblems(before), [], 'consistent after the pulls');
    const mUsed = manifestOf(before, used);
    const mUnused = manifestOf(before, unused);
    const shared = mUsed.layers[0];
    const uniqueUsed = mUsed.layers[1];
    const uniqueUnused = mUnused.layers[1];
    assert.ok(shared !== undefined && uniqueUsed !== undefined && uniqueUnused !== undefined);
    assert.equal(mUnused.layers[0]?.digest, shared.digest, 'the fixture images share the busybox layer');
    assert.notEqual(uniqueUnused.digest, uniqueUsed.digest);

    // Nothing is garbage while both images are recorded.
    assert.deepEqual((await gc(['--dry-run'])).removed, []);

    const refused = await berth(env, ['images', 'rm', used]);
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /^error ERR_CONFLICT: remove image .*demo:1\.0: in use by pod default\/gc-web/m);
    // All or nothing: a refused reference keeps the other one named with it.
    const both = await berth(env, ['images', 'rm', unused, used]);
    assert.equal(both.code, 1, both.stderr);
    assert.equal((await listStore(env.root)).images.length, 2, 'nothing was removed by a refused rm');

    const rm = await berth(env, ['images', 'rm', unused]);
    assert.equal(rm.code, 0, rm.stderr);
    assert.match(rm.stdout, new RegExp(`removed ${unused.replace(/[.:/]/g, '\\$&')} ${mUnused.digest}`));
    const ls = await berth(env, ['images', 'ls']);
    assert.doesNotMatch(ls.stdout, /demo:other/);
    assert.match(ls.stdout, /demo:1\.0/);

    // The dry run names exactly what gc then removes, and changes nothing.
    const afterRm = await listStore(env.root);
    const dry = await gc(['--dry-run']);
    assert.equal(dry.dryRun, true);
    assert.deepEqual(await listStore(env.root), afterRm, 'gc --dry-run changed nothing');
    const expected = [
      `manifest ${mUnused.digest}`,
      `blob ${mUnused.digest}`,
      `blob ${mUnused.configDigest}`,
      `blob ${uniqueUnused.digest}`,
      `snapshot ${uniqueUnused.chainId}`,
    ].sort();
    assert.deepEqual(dry.removed.map((x) => `${x.kind} ${x.id}`).sort(), expected);
    assert.ok(dry.bytes > 0 && dry.bytes === dry.removed.reduce((n, x) => n + x.bytes, 0));

    const text = await berth(env, ['gc', '--dry-run']);
    assert.match(text.stdout, /^would remove blob sha256:[a-f0-9]{64} \(/m);
    assert.match(text.stdout, /^would reclaim .* \(5 objects\)$/m);

    const real = await gc();
    assert.equal(real.dryRun, false);
    assert.deepEqual(real.removed.map((x) => `${x.kind} ${x.id}`).sort(), expected);
    assert.equal(real.bytes, dry.bytes);

    const s = await listStore(env.root);
    assert.deepEqual(storeProblems(s), [], 'no file without a row, no row without a file');
    for (const b of [mUnused.digest, mUnused.configDigest, uniqueUnused.digest]) assert.ok(!s.blobs.includes(b), `${b} removed`);
    assert.ok(!s.snapshotDirs.includes(uniqueUnused.chainId), 'the unique snapshot is removed');
    for (const b of [mUsed.digest, mUsed.configDigest, shared.digest, uniqueUsed.digest]) assert.ok(s.blobs.includes(b), `${b} kept`);
    for (const id of [shared.chainId, uniqueUsed.chainId]) assert.ok(s.snapshotDirs.includes(id) && s.snapshots.some((x) => x.chainId === id), `snapshot ${id} kept`);

    // A second gc has nothing left to do.
    assert.deepEqual((await gc()).removed, []);

    // The container kept running; a restart mounts its rootfs from the kept snapshots again.
    const still = await webContainer();
    assert.equal(still?.state, 'running');
    assert.equal(still?.pid, first.pid);
    assert.ok(first.pid !== null);
    process.kill(first.pid, 'SIGKILL');
    await waitFor('gc-web exited', async () => ((await webContainer())?.state === 'exited' ? true : undefined), 30_000);
    const again = await berth(env, ['apply', '-f', file]);
    assert.equal(again.code, 0, again.stderr);
    const restarted = await waitFor('gc-web restarted', async () => {
      const c = await webContainer();
      return c?.state === 'running' && c.id !== first.id ? c : undefined;
    }, 60_000);
    assert.equal(restarted.attempt, first.attempt + 1);
    assert.deepEqual(storeProblems(await listStore(env.root)), []);
  });

  test('images prune forgets what no pod declares; prune --all keeps what a container runs', async (t) => {
    if (!ok) return t.skip('e2e prerequisites missing');
    const pull = await berth(env, ['images', 'pull', '-q', unused]);
    assert.equal(pull.code, 0, pull.stderr);
    const before = await listStore(env.root);
    const mUnused = manifestOf(before, unused);
    const r = await berth(env, ['images', 'prune', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { images: { ref: string }[]; gc: GcOut };
    assert.deepEqual(out.images.map((i) => i.ref), [unused]);
    assert.ok(out.gc.removed.some((x) => x.kind === 'manifest' && x.id === mUnused.digest));
    const s = await listStore(env.root);
    assert.deepEqual(s.images.map((i) => i.ref), [used]);
    assert.deepEqual(storeProblems(s), []);

    const all = await berth(env, ['images', 'prune', '--all']);
    assert.equal(all.code, 0, all.stderr);
    assert.deepEqual((await listStore(env.root)).images.map((i) => i.ref), [used], 'a running container keeps its image through --all');
    assert.equal((await webContainer())?.state, 'running');
  });
});

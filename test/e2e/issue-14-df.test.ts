import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { Ajv } from 'ajv';
import { buildBusyboxImage, pushImage, type BuiltImage } from '../../scripts/fixture-image.js';
import { chainIds } from '../../src/lib/digest.js';
import type { DiskUsage, GcReport } from '../../src/runtime/index.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { imageWithData } from '../helpers/gc-images.js';
import { listStore } from '../helpers/gc-check.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, berthUp, cleanupEnv, makeEnv, REPO, waitFor, type BerthEnv } from '../helpers/berth.js';

/**
 * Issue 14, `berth df`: with two images sharing the busybox layers (one run by a pod that writes
 * into its rootfs, a named volume and an emptyDir, and logs a line), `df -o json` validates
 * against schemas/df.json and its figures are the store's: layers shared and unique per image
 * from the snapshot rows, compressed bytes from the blob files, containers' upper directories,
 * volumes, logs; what `images prune` would reclaim is what `gc --dry-run` reports once the unused
 * image is forgotten, and what `gc` then reclaims. The daemon answers `df` through its socket with
 * the same figures. Real registry, runc and overlay.
 */

function dfValidator(): (d: unknown) => string[] {
  const ajv = new Ajv({ strict: true, allErrors: true });
  ajv.addFormat('date-time', { type: 'string', validate: (s: string) => /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/.test(s) });
  const v = ajv.compile(JSON.parse(readFileSync(path.join(REPO, 'schemas', 'df.json'), 'utf8')) as object);
  return (d) => (v(d) ? [] : (v.errors ?? []).map((e) => `${e.instancePath} ${e.message ?? ''}`));
}

describe('e2e: berth df (issue 14)', { timeout: 300_000 }, () => {
  let ok = true;
  let env: BerthEnv;
  let registry: TestRegistry | undefined;
  let used: BuiltImage;
  let unused: BuiltImage;
  let file = '';

  const df = async (): Promise<DiskUsage> => {
    const r = await berth(env, ['df', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as DiskUsage;
  };

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv('berth-df-');
    registry = await startRegistry();
    const base = await buildBusyboxImage();
    used = await imageWithData(base, { seed: 700, files: 10, fileBytes: 8192 });
    unused = await imageWithData(base, { seed: 701, files: 30, fileBytes: 8192 });
    await pushImage(registry.url, 'berth/df', 'used', used);
    await pushImage(registry.url, 'berth/df', 'unused', unused);
    file = path.join(env.dir, 'manifests', 'df-web.yaml');
    await fsp.mkdir(path.dirname(file), { recursive: true });
    await fsp.writeFile(
      file,
      `apiVersion: v1
kind: Pod
metadata: {name: df-web}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
    - name: main
      image: ${registry.host}/berth/df:used
      command: ["sh", "-c", "head -c 65536 /dev/zero > /vol/f; head -c 32768 /dev/zero > /scratch/f; head -c 16384 /dev/zero > /tmp/x; echo hello-df; touch /tmp/ready; while true; do sleep 1; done"]
      volumeMounts:
        - {name: vol, mountPath: /vol}
        - {name: scratch, mountPath: /scratch}
  volumes:
    - name: vol
      persistentVolumeClaim: {claimName: dfvol}
    - name: scratch
      emptyDir: {}
`,
    );
  });

  after(async () => {
    if (!ok) return;
    await berth(env, ['delete', '-f', file]).catch(() => undefined);
    await berth(env, ['volumes', 'rm', 'dfvol']).catch(() => undefined);
    await cleanupEnv(env);
    await registry?.stop();
  });

  test('df-figures-match-the-store: images shared/unique, blobs, containers, logs, volumes, reclaimable = gc dry run', async (t) => {
    if (!ok || registry === undefined) return t.skip();
    const refUsed = `${registry.host}/berth/df:used`;
    const refUnused = `${registry.host}/berth/df:unused`;
    const pull = await berth(env, ['images', 'pull', '-q', refUnused]);
    assert.equal(pull.code, 0, pull.stderr);
    const a = await berth(env, ['apply', '-f', file]);
    assert.equal(a.code, 0, a.stderr);
    await waitFor('the pod wrote its files', async () => {
      const ps = JSON.parse((await berth(env, ['ps', '-o', 'json'])).stdout) as { key: string; containers: { id: string; state: string }[] }[];
      const c = ps.find((p) => p.key === 'default/df-web')?.containers.at(-1);
      if (c?.state !== 'running') return undefined;
      return statSync(path.join(env.root, 'containers', c.id, 'upper', 'tmp', 'ready'), { throwIfNoEntry: false }) !== undefined ? true : undefined;
    }, 60_000);

    const d = await df();
    assert.deepEqual(dfValidator()(d), [], 'df -o json validates against schemas/df.json');
    const store = await listStore(env.root);
    const rows = new Map((await import('better-sqlite3')).default(path.join(env.root, 'berth.db'), { readonly: true }).prepare('SELECT chain_id, size FROM snapshots').all().map((r) => {
      const x = r as { chain_id: string; size: number };
      return [x.chain_id, x.size] as const;
    }));
    const ids = (img: BuiltImage): string[] => chainIds(img.layers.map((l) => l.diffId));
    const [s0, s1, uUsed] = ids(used);
    const uUnused = ids(unused)[2];
    const size = (id: string | undefined): number => rows.get(id ?? '') ?? -1;
    const shared = size(s0) + size(s1);

    assert.equal(d.images.count, 2);
    assert.equal(d.images.active, 1);
    assert.equal(d.images.layerBytes, shared + size(uUsed) + size(uUnused));
    assert.equal(d.images.sharedLayerBytes, shared);
    assert.equal(d.images.uniqueLayerBytes, size(uUsed) + size(uUnused));
    let blobBytes = 0;
    for (const b of store.blobs) blobBytes += statSync(path.join(env.root, 'content/blobs/sha256', b.slice(7))).size;
    assert.equal(d.images.blobBytes, blobBytes);
    const iu = d.images.items.find((i) => i.ref === refUsed);
    const iv = d.images.items.find((i) => i.ref === refUnused);
    assert.ok(iu !== undefined && iv !== undefined);
    assert.deepEqual([iu.layers, iu.sizeBytes, iu.sharedBytes, iu.uniqueBytes, iu.containers, iu.inUse], [3, shared + size(uUsed), shared, size(uUsed), 1, true]);
    assert.deepEqual([iv.sharedBytes, iv.uniqueBytes, iv.containers, iv.inUse], [shared, size(uUnused), 0, false]);
    assert.equal(iu.compressedBytes, used.layers.reduce((n, l) => n + l.size, 0));
    assert.ok(iu.lastUsed !== null && iv.lastUsed !== null && Date.parse(iu.lastUsed) >= Date.parse(iv.lastUsed), 'the container create made the used image the most recently used');

    assert.deepEqual([d.containers.count, d.containers.running], [1, 1]);
    assert.ok(d.containers.bytes >= 16384 && d.containers.bytes < 16384 + 4096, `upper dir bytes: ${d.containers.bytes}`);
    assert.ok(d.logs.bytes > 0, 'the log line is counted');
    const named = d.volumes.items.find((v) => v.kind === 'named' && v.name === 'dfvol');
    const scratch = d.volumes.items.find((v) => v.kind === 'pod' && v.name === 'scratch');
    assert.deepEqual(named, { kind: 'named', name: 'dfvol', pod: null, bytes: 65536, usedBy: ['default/df-web'] });
    assert.deepEqual(scratch, { kind: 'pod', name: 'scratch', pod: 'default/df-web', bytes: 32768, usedBy: ['default/df-web'] });
    assert.equal(d.volumes.bytes, d.volumes.items.reduce((n, v) => n + v.bytes, 0));
    assert.equal(d.volumes.reclaimableBytes, 0, 'the named volume is in use');
    assert.ok(d.filesystem.capacityBytes > 0 && d.filesystem.usedPercent > 0 && d.filesystem.usedPercent <= 100);

    // Reclaimable: nothing for gc now; images prune frees the unused image's own files.
    assert.equal(d.reclaim.gc, 0);
    assert.ok(d.reclaim.imagesPrune > 0);
    assert.equal(d.reclaim.imagesPruneAll, d.reclaim.imagesPrune, 'the only image no container runs is the unused one');
    assert.equal(d.images.reclaimableBytes, d.reclaim.imagesPruneAll);

    // The text forms.
    const text = await berth(env, ['df']);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^TYPE\s+TOTAL\s+ACTIVE\s+SIZE\s+RECLAIMABLE$/m);
    assert.match(text.stdout, /^Images\s+2\s+1\s+/m);
    assert.match(text.stdout, /^Volumes\s+2\s+2\s+/m);
    assert.match(text.stdout, /^reclaimable: images prune .*, images prune --all .*, gc 0 B$/m);
    const verbose = await berth(env, ['df', '-v']);
    assert.match(verbose.stdout, new RegExp(`^${refUsed.replace(/[.:/]/g, '\\$&')}\\s+sha256:\\S+\\s+3\\s+`, 'm'));
    assert.match(verbose.stdout, /^named\s+dfvol\s+-\s+65\.5 kB\s+default\/df-web$/m);
    assert.match(verbose.stdout, /^pod\s+scratch\s+default\/df-web\s+32\.8 kB\s+default\/df-web$/m);

    // The daemon answers df through its socket with the same figures.
    const watched = path.join(env.dir, 'watched');
    await fsp.mkdir(watched);
    const up = berthUp(env, watched);
    try {
      await waitFor('daemon socket', async () => (statSync(path.join(env.state, 'berth.sock'), { throwIfNoEntry: false }) !== undefined ? true : undefined), 30_000);
      const through = await df();
      assert.deepEqual(dfValidator()(through), []);
      const strip = (x: DiskUsage): unknown => ({ ...x, filesystem: null, logs: null });
      assert.deepEqual(strip(through), strip(await df()));
      assert.deepEqual(strip(through), strip(d));
    } finally {
      up.child.kill('SIGTERM');
      await new Promise((r) => up.child.once('exit', r));
    }

    // images rm of the unused image: gc --dry-run and df agree on what gc will reclaim, and gc does.
    const rm = await berth(env, ['images', 'rm', refUnused]);
    assert.equal(rm.code, 0, rm.stderr);
    const dry = JSON.parse((await berth(env, ['gc', '--dry-run', '-o', 'json'])).stdout) as GcReport;
    const d2 = await df();
    assert.equal(d2.reclaim.gc, dry.bytes);
    assert.equal(dry.bytes, d.reclaim.imagesPrune, 'what df said images prune would reclaim');
    const real = JSON.parse((await berth(env, ['gc', '-o', 'json'])).stdout) as GcReport;
    assert.equal(real.bytes, d.reclaim.imagesPrune);
    const d3 = await df();
    assert.deepEqual([d3.images.count, d3.reclaim.gc, d3.reclaim.imagesPrune], [1, 0, 0]);
  });
});

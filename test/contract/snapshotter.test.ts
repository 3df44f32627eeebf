import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Snapshotter, isMountPoint } from '../../src/runtime/snapshots/index.js';
import { StateStore } from '../../src/runtime/state/index.js';
import { sha256, type Digest } from '../../src/lib/digest.js';
import { requireE2E } from '../helpers/prereq.js';

/** Contract of the overlay snapshotter on a real overlay mount. */
const base = mkdtempSync(path.join(os.tmpdir(), 'berth-snap-'));
const state = new StateStore(base);
after(async () => {
  state.close();
  await fsp.rm(base, { recursive: true, force: true });
});

async function layers(snaps: Snapshotter, n: number, tag: string): Promise<Digest[]> {
  const ids: Digest[] = [];
  for (let i = 0; i < n; i++) {
    const id = sha256(`${tag}-${i}`);
    await snaps.commitLayer({ chainId: id, parent: ids[i - 1] ?? null, diffId: id }, async (dir) => {
      await fsp.writeFile(path.join(dir, `layer-${i}`), String(i));
      await fsp.writeFile(path.join(dir, 'top'), String(i));
      return { opaqueRoot: false, size: 1 };
    });
    ids.push(id);
  }
  return ids;
}

test('regression: many-layers-unmountable — as many layers as maxLayers() mount, with the top layer winning', async (t) => {
  if (!requireE2E(t)) return;
  const snaps = new Snapshotter(base, state);
  await snaps.init();
  const n = snaps.maxLayers();
  assert.ok(n >= 50, `at least 50 layers fit (got ${n})`);
  const ids = await layers(snaps, n, 'many');
  const target = path.join(base, 'rootfs');
  await snaps.mountRootfs('c1', ids, target);
  try {
    assert.equal(await isMountPoint(target), true);
    assert.equal(await fsp.readFile(path.join(target, 'layer-0'), 'utf8'), '0');
    assert.equal(await fsp.readFile(path.join(target, `layer-${n - 1}`), 'utf8'), String(n - 1));
    assert.equal(await fsp.readFile(path.join(target, 'top'), 'utf8'), String(n - 1));
    // Idempotent: mounting again keeps the one mount.
    await snaps.mountRootfs('c1', ids, target);
  } finally {
    await snaps.unmount(target);
  }
  assert.equal(await isMountPoint(target), false);
  await snaps.unmount(target);
  await snaps.removeContainer('c1');
});

test('snapshotter: a failed extraction leaves no snapshot and no temp directory', async () => {
  const snaps = new Snapshotter(base, state);
  await snaps.init();
  const id = sha256('broken');
  await assert.rejects(
    snaps.commitLayer({ chainId: id, parent: null, diffId: id }, async (dir) => {
      await fsp.writeFile(path.join(dir, 'partial'), 'x');
      throw new Error('boom');
    }),
    /boom/,
  );
  assert.equal(snaps.isReady(id), false);
  assert.deepEqual((await fsp.readdir(path.join(base, 'snapshots'))).filter((x) => x.startsWith('tmp-')), []);
});

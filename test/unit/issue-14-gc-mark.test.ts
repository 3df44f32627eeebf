import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chainIds, sha256, type Digest } from '../../src/lib/digest.js';
import { imageUsers, mark, podImageRefs, PullGate, type GcGraph } from '../../src/runtime/gc/index.js';
import type { ManifestRecord, SnapshotRecord } from '../../src/runtime/state/index.js';

/**
 * Issue 14, GC: the mark from the roots (image rows, containers' manifests, the images recorded
 * pods name, mounted layers) is a pure function of the rows; the gate orders pulls against GC.
 */

const d = (s: string): Digest => sha256(s);

/** An image of `layers` (names of the layer contents); the first layers of two images may be shared. */
function image(name: string, layers: string[]): { manifest: ManifestRecord; snapshots: SnapshotRecord[] } {
  const diffIds = layers.map((l) => d(`diff ${l}`));
  const ids = chainIds(diffIds);
  const manifest: ManifestRecord = {
    digest: d(`manifest ${name}`),
    configDigest: d(`config ${name}`),
    config: '{}',
    layers: layers.map((l, i) => ({ digest: d(`blob ${l}`), size: 1, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', diffId: diffIds[i] as Digest, chainId: ids[i] as Digest })),
  };
  const snapshots = ids.map((chainId, i) => ({ chainId, parent: i === 0 ? null : (ids[i - 1] as Digest), diffId: diffIds[i] as Digest, opaqueRoot: false, size: 1, createdAt: 0 }));
  return { manifest, snapshots };
}

const a = image('a', ['busybox', 'page-a']);
const b = image('b', ['busybox', 'page-b']);
const c = image('c', ['other']);

function graph(o: Partial<GcGraph>): GcGraph {
  return {
    images: [],
    manifests: [a.manifest, b.manifest, c.manifest],
    snapshots: [...a.snapshots, ...b.snapshots.slice(1), ...c.snapshots],
    containers: [],
    podRefs: [],
    mountedLayers: [],
    ...o,
  };
}

const img = (ref: string, m: ManifestRecord, indexDigest: Digest | null = null) => ({ ref, digest: m.digest, indexDigest, updatedAt: 0 });

test('gc mark: an image row keeps its manifest, config, layer blobs, index and every snapshot of its chain', () => {
  const idx = d('index a');
  const m = mark(graph({ images: [img('r/a:1', a.manifest, idx)] }));
  assert.deepEqual([...m.manifests], [a.manifest.digest]);
  assert.deepEqual(new Set(m.blobs), new Set([idx, a.manifest.digest, a.manifest.configDigest, ...a.manifest.layers.map((l) => l.digest)]));
  assert.deepEqual(new Set(m.snapshots), new Set(a.snapshots.map((s) => s.chainId)));
});

test('gc mark: removing one of two images that share a layer keeps the shared layer and drops only the unique parts', () => {
  const m = mark(graph({ images: [img('r/a:1', a.manifest)] }));
  const shared = a.manifest.layers[0];
  const uniqueB = b.manifest.layers[1];
  assert.ok(shared !== undefined && uniqueB !== undefined);
  assert.equal(shared.digest, b.manifest.layers[0]?.digest, 'the fixture shares the first layer');
  assert.ok(m.blobs.has(shared.digest));
  assert.ok(m.snapshots.has(shared.chainId));
  assert.ok(!m.blobs.has(uniqueB.digest));
  assert.ok(!m.snapshots.has(uniqueB.chainId));
  assert.ok(!m.manifests.has(b.manifest.digest));
  assert.ok(!m.blobs.has(b.manifest.configDigest));
  assert.ok(!m.manifests.has(c.manifest.digest));
});

test('gc mark: a container keeps the manifest it runs even when no image row names it any more', () => {
  const m = mark(graph({ containers: [{ id: 'default.p.c.12345678-0', imageRef: 'r/b:1', imageDigest: b.manifest.digest }] }));
  assert.deepEqual([...m.manifests], [b.manifest.digest]);
  assert.ok(b.snapshots.every((s) => m.snapshots.has(s.chainId)));
});

test('gc mark: a pod spec keeps the image its reference names; a reference with no image row keeps nothing', () => {
  const m = mark(graph({ images: [], podRefs: ['r/c:1'] }));
  assert.equal(m.manifests.size, 0);
  const withRow = mark(graph({ images: [img('r/c:1', c.manifest)], podRefs: ['r/c:1', 'r/missing:1'] }));
  assert.deepEqual([...withRow.manifests], [c.manifest.digest]);
});

test('gc mark: a mounted layer keeps itself and its parents even with no manifest', () => {
  const top = b.snapshots[1]?.chainId;
  assert.ok(top !== undefined);
  const m = mark(graph({ mountedLayers: [top] }));
  assert.deepEqual(new Set(m.snapshots), new Set(b.snapshots.map((s) => s.chainId)));
  assert.equal(m.manifests.size, 0);
  assert.equal(m.blobs.size, 0);
});

test('gc: podImageRefs reads containers and init containers, and survives a spec that does not parse', () => {
  assert.deepEqual(podImageRefs(JSON.stringify({ initContainers: [{ image: 'r/i:1' }], containers: [{ image: 'r/a:1' }, { name: 'x' }] })), ['r/i:1', 'r/a:1']);
  assert.deepEqual(podImageRefs('{not json'), []);
  assert.deepEqual(podImageRefs('null'), []);
});

test('gc: imageUsers names the pods that declare or run a reference', () => {
  const pods = [
    { key: 'default/web', spec: JSON.stringify({ containers: [{ image: 'r/a:1' }] }) },
    { key: 'default/other', spec: JSON.stringify({ containers: [{ image: 'r/b:1' }] }) },
  ];
  assert.deepEqual(imageUsers('r/a:1', pods, [{ podKey: 'default/old', imageRef: 'r/a:1' }]), ['default/old', 'default/web']);
  assert.deepEqual(imageUsers('r/c:1', pods, []), []);
});

test('gc: PullGate runs GC after the pulls in flight, and pulls that arrive meanwhile after it', async () => {
  const gate = new PullGate();
  const order: string[] = [];
  let finishPull: () => void = () => undefined;
  const pull1 = gate.shared(async () => {
    order.push('pull1 start');
    await new Promise<void>((r) => (finishPull = r));
    order.push('pull1 end');
  });
  await Promise.resolve();
  const gc = gate.exclusive(async () => {
    order.push('gc');
  });
  const pull2 = gate.shared(async () => {
    order.push('pull2');
  });
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(order, ['pull1 start'], 'gc and the later pull wait for the pull in flight');
  finishPull();
  await Promise.all([pull1, gc, pull2]);
  assert.deepEqual(order, ['pull1 start', 'pull1 end', 'gc', 'pull2']);
  // Two GCs never overlap.
  const seen: string[] = [];
  await Promise.all([
    gate.exclusive(async () => {
      seen.push('a+');
      await new Promise((r) => setTimeout(r, 10));
      seen.push('a-');
    }),
    gate.exclusive(async () => {
      seen.push('b+');
      seen.push('b-');
    }),
  ]);
  assert.deepEqual(seen, ['a+', 'a-', 'b+', 'b-']);
});

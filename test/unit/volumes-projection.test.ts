import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, promises as fsp, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { VolumeManager, type PodVolume } from '../../src/runtime/volumes/index.js';
import { createLogger } from '../../src/lib/log.js';

const b64 = (s: string): string => Buffer.from(s).toString('base64');
const conf = (files: { path: string; data: string; mode: number }[], failed?: boolean): PodVolume => ({ name: 'conf', kind: 'projected', secret: false, files, hash: createHash('sha256').update(JSON.stringify(files)).digest('hex'), ...(failed === true ? { failed: true } : {}) });

test('regression deleted-configmap-empties-volume: a projection whose required source is gone keeps the files it has', async () => {
  const root = mkdtempSync(path.join(os.tmpdir(), 'berth-vol-'));
  try {
    const vm = new VolumeManager(root, createLogger('silent'));
    const dir = vm.volumeDir('default/p', 'conf');
    await vm.sync('default/p', [conf([{ path: 'app.conf', data: b64('a=1'), mode: 0o644 }])]);
    assert.equal(await fsp.readFile(path.join(dir, 'app.conf'), 'utf8'), 'a=1');
    // The ConfigMap was deleted (not optional): resolution says failed, with no files.
    await vm.sync('default/p', [conf([], true)]);
    assert.equal(await fsp.readFile(path.join(dir, 'app.conf'), 'utf8'), 'a=1', 'the running container still reads its last content');
    // It comes back with new data: written as usual.
    await vm.sync('default/p', [conf([{ path: 'app.conf', data: b64('a=2'), mode: 0o644 }])]);
    assert.equal(await fsp.readFile(path.join(dir, 'app.conf'), 'utf8'), 'a=2');
    // optional: true and gone: not failed, the volume is emptied, as the kubelet does.
    await vm.sync('default/p', [conf([])]);
    await assert.rejects(fsp.readFile(path.join(dir, 'app.conf'), 'utf8'), /ENOENT/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('regression device-hostpath-nodev: a hostPath of type CharDevice is mounted as a device; a directory one is not', async () => {
  const { setHostPathAllowList } = await import('../../src/lib/policy.js');
  const root = mkdtempSync(path.join(os.tmpdir(), 'berth-vol-'));
  setHostPathAllowList(['/dev', root]);
  try {
    const vm = new VolumeManager(root, createLogger('silent'));
    const vols: PodVolume[] = [
      { name: 'null', kind: 'hostPath', path: '/dev/null', type: 'CharDevice' },
      { name: 'dir', kind: 'hostPath', path: root, type: 'Directory' },
    ];
    await vm.sync('default/p', vols);
    const m = await vm.mounts('default/p', vols, [{ volume: 'null', mountPath: '/dev/x', readOnly: false }, { volume: 'dir', mountPath: '/d', readOnly: false }]);
    assert.deepEqual(m.map((x) => x.device === true), [true, false]);
  } finally {
    setHostPathAllowList([]);
    rmSync(root, { recursive: true, force: true });
  }
});

test('regression memory-emptydir-unsized: a Memory emptyDir is sized as the kubelet sizes it — the least of node memory, pod limit and sizeLimit', async () => {
  const { memoryVolumeBytes } = await import('../../src/runtime/volumes/index.js');
  const { podMemoryLimit } = await import('../../src/reconciler/reconcile.js');
  const GiB = 1024 ** 3;
  assert.equal(memoryVolumeBytes({}, 8 * GiB), 8 * GiB);
  assert.equal(memoryVolumeBytes({ podMemoryLimitBytes: GiB }, 8 * GiB), GiB);
  assert.equal(memoryVolumeBytes({ podMemoryLimitBytes: GiB, sizeLimitBytes: 2 * GiB }, 8 * GiB), GiB);
  assert.equal(memoryVolumeBytes({ podMemoryLimitBytes: GiB, sizeLimitBytes: GiB / 2 }, 8 * GiB), GiB / 2);
  assert.equal(memoryVolumeBytes({ sizeLimitBytes: 16 * GiB }, 8 * GiB), 8 * GiB);
  const c = (memoryBytes?: number) => ({ name: 'c', image: 'x', env: [], ports: [], ...(memoryBytes !== undefined ? { memoryBytes } : {}) });
  const pod = (apps: (number | undefined)[], inits: (number | undefined)[] = []) =>
    ({ containers: apps.map(c), initContainers: inits.map(c) }) as unknown as Parameters<typeof podMemoryLimit>[0];
  assert.equal(podMemoryLimit(pod([100, 200])), 300);
  assert.equal(podMemoryLimit(pod([100, undefined])), undefined);
  assert.equal(podMemoryLimit(pod([100, 200], [500])), 500);
  assert.equal(podMemoryLimit(pod([100], [undefined])), undefined);
});

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, promises as fsp, statSync } from 'node:fs';
import * as path from 'node:path';
import { buildBusyboxImage, pushImage, type BuiltImage } from '../../scripts/fixture-image.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { imageWithData } from '../helpers/gc-images.js';
import { listStore, storeProblems } from '../helpers/gc-check.js';
import { validateEvents } from '../helpers/berth-schemas.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, berthUp, cleanupEnv, makeEnv, mountsUnder, waitFor, type BerthEnv } from '../helpers/berth.js';

/**
 * Issue 14, automatic image GC by disk use (the kubelet's high/low thresholds): berth's root is a
 * 320 MiB tmpfs holding a pod's image (its container running) and unused images of the same size.
 * The thresholds are set from the measured use: below high at first (the checks at start and at
 * resyncs remove nothing), passed by one more pull through the daemon, after which image GC
 * removes the least recently used unused images first — x2 before x1, though x1 was pulled
 * first, because `berth run` created a container from x1 later (container create sets last-used)
 * — and stops below low; the pod's image stays and its container keeps its pid. A second
 * `berth up` with a low threshold no removal can reach removes the last unused image at start,
 * never the used one, and reports ImageGCFailed.
 */

interface Ev {
  id: number;
  key: string;
  reason: string;
  type: string;
  message: string;
}

async function used(dir: string): Promise<{ used: number; cap: number }> {
  const st = await fsp.statfs(dir);
  return { used: (st.blocks - st.bavail) * st.bsize, cap: st.blocks * st.bsize };
}

describe('e2e: automatic image GC by disk use (issue 14)', { timeout: 300_000 }, () => {
  let ok = true;
  let env: BerthEnv;
  let registry: TestRegistry | undefined;
  let watched = '';
  const imgs: BuiltImage[] = [];

  const events = async (): Promise<Ev[]> => {
    const r = await berth(env, ['events', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as Ev[];
  };
  const refs = async (): Promise<string[]> => (JSON.parse((await berth(env, ['images', 'ls', '-o', 'json'])).stdout) as { ref: string }[]).map((i) => i.ref).sort();
  const web = async (): Promise<{ id: string; state: string; pid: number | null } | undefined> =>
    (JSON.parse((await berth(env, ['ps', '-o', 'json'])).stdout) as { key: string; containers: { id: string; state: string; pid: number | null }[] }[]).find((p) => p.key === 'default/agc-web')?.containers.at(-1);

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv('berth-autogc-');
    registry = await startRegistry();
    const base = await buildBusyboxImage();
    for (let i = 0; i < 4; i++) {
      const img = await imageWithData(base, { seed: 500 + i, files: 4, fileBytes: 1024 * 1024 });
      imgs.push(img);
      await pushImage(registry.url, 'berth/agc', i === 0 ? 'used' : `x${i}`, img);
    }
    // 320 MiB: the unpack keeps 256 MiB free, so every pull fits while the images use ~40 MiB.
    mkdirSync(env.root, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=320m,mode=0700', 'tmpfs', env.root]);
    watched = path.join(env.dir, 'watched');
    await fsp.mkdir(watched);
    await fsp.writeFile(
      path.join(watched, 'agc-web.yaml'),
      `apiVersion: v1
kind: Pod
metadata: {name: agc-web}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
    - name: main
      image: ${registry.host}/berth/agc:used
      command: ["sh", "-c", "while true; do sleep 1; done"]
`,
    );
  });

  after(async () => {
    if (!ok) return;
    await berth(env, ['delete', '-f', watched]).catch(() => undefined);
    await cleanupEnv(env);
    assert.deepEqual(await mountsUnder(env.dir), [], 'no mount left');
    await registry?.stop();
  });

  test('image-gc-removes-unused-lru-first: above the high threshold unused images go least recently used first, until below low; the used one stays running', async (t) => {
    if (!ok || registry === undefined) return t.skip();
    const host = registry.host;
    const ref = (tag: string): string => `${host}/berth/agc:${tag}`;
    const a = await berth(env, ['apply', '-f', watched]);
    assert.equal(a.code, 0, a.stderr);
    const first = await waitFor('agc-web running', async () => {
      const c = await web();
      return c?.state === 'running' ? c : undefined;
    }, 60_000);
    const pull = async (tag: string): Promise<void> => {
      const r = await berth(env, ['images', 'pull', '-q', ref(tag)]);
      assert.equal(r.code, 0, `pull ${tag}: ${r.stderr}`);
    };
    await pull('x1');
    const before2 = await used(env.root);
    await pull('x2');
    const d = (await used(env.root)).used - before2.used;
    assert.ok(d > 6 * 2 ** 20, `one image takes its blob and its snapshot: ${d} bytes`);
    // x1 was pulled first, but a container created from it makes it more recently used than x2.
    const run = await berth(env, ['run', '--rm', '--net', 'host', ref('x1'), '--', 'true']);
    assert.equal(run.code, 0, `${run.stdout}${run.stderr}`);

    // Above the high threshold with the default --minimum-image-ttl-duration (2m, the kubelet's):
    // x1 and x2 were recorded moments ago, so nothing is removed and the failure says why.
    const u0 = await used(env.root);
    const up0 = berthUp(env, watched, ['--image-gc-high-threshold', ((Math.max(0, u0.used - 2 ** 20) / u0.cap) * 100).toFixed(2), '--image-gc-low-threshold', '1']);
    try {
      await waitFor('ImageGCFailed for young images', async () => ((await events()).some((e) => e.reason === 'ImageGCFailed') ? true : undefined), 60_000);
    } finally {
      up0.child.kill('SIGTERM');
      await new Promise((r) => up0.child.once('exit', r));
    }
    const young = (await events()).filter((e) => e.reason.startsWith('Image'));
    assert.deepEqual(young.map((e) => `${e.reason} ${e.type}`), ['ImageGCStarted Normal', 'ImageGCFailed Warning'], up0.output());
    assert.match(young.at(-1)?.message ?? '', /2 unused image\(s\) recorded less than 2m ago are kept: --minimum-image-ttl-duration/);
    assert.deepEqual(await refs(), [ref('used'), ref('x1'), ref('x2')].sort());
    const mark0 = young.at(-1)?.id ?? 0;
    const sinceMark0 = async (): Promise<Ev[]> => (await events()).filter((e) => e.id > mark0);

    // Thresholds from the measured use: below high now; one more image (x3) passes it; removing
    // two images brings use below low. From here on images may go as soon as they are unused.
    const now = await used(env.root);
    const pct = (b: number): string => ((b / now.cap) * 100).toFixed(2);
    const high = pct(now.used + 0.5 * d);
    const low = pct(now.used - 0.5 * d);
    const up = berthUp(env, watched, ['--resync', '2', '--image-gc-high-threshold', high, '--image-gc-low-threshold', low, '--minimum-image-ttl-duration', '0s']);
    let evs: Ev[];
    try {
      await waitFor('daemon socket', async () => (statSync(path.join(env.state, 'berth.sock'), { throwIfNoEntry: false }) !== undefined ? true : undefined), 30_000);
      // Below the high threshold: the checks at start and at resyncs remove nothing.
      await new Promise((r) => setTimeout(r, 4500));
      assert.deepEqual((await sinceMark0()).filter((e) => e.reason.startsWith('Image')), [], 'no image GC below the high threshold');
      // A pull through the daemon passes it: the check after the pull runs image GC.
      await pull('x3');
      await waitFor('two images removed by image GC', async () => ((await sinceMark0()).filter((e) => e.reason === 'ImageRemoved').length >= 2 ? true : undefined), 60_000);
      await waitFor('daemon reports the run', async () => (/image GC: disk/.test(up.output()) ? true : undefined), 10_000);
      evs = await sinceMark0();
    } finally {
      up.child.kill('SIGTERM');
      await new Promise((r) => up.child.once('exit', r));
    }
    assert.deepEqual(validateEvents(evs), []);
    const gcEvents = evs.filter((e) => e.reason.startsWith('Image'));
    assert.deepEqual(gcEvents.map((e) => `${e.reason} ${e.key}`), ['ImageGCStarted image/gc', `ImageRemoved image/${ref('x2')}`, `ImageRemoved image/${ref('x1')}`], up.output());
    assert.deepEqual(await refs(), [ref('used'), ref('x3')].sort());
    const c = await web();
    assert.equal(c?.state, 'running');
    assert.equal(c?.pid, first.pid, 'the container of the used image kept running');
    assert.ok((await used(env.root)).used < now.used - 0.5 * d, 'use is below the low threshold');
    assert.deepEqual(storeProblems(await listStore(env.root)), []);
    assert.match(up.output(), new RegExp(`image GC: disk [0-9.]+% ≥ ${high.replace('.', '\\.')}%: removed 2 unused image`));

    // Low threshold out of reach: the last unused image goes, the used one stays, ImageGCFailed.
    const mark = evs.at(-1)?.id ?? 0;
    const cur = await used(env.root);
    const up2 = berthUp(env, watched, ['--image-gc-high-threshold', pct(cur.used - 2 ** 20), '--image-gc-low-threshold', '1', '--minimum-image-ttl-duration', '0s']);
    try {
      await waitFor('ImageGCFailed', async () => ((await events()).some((e) => e.id > mark && e.reason === 'ImageGCFailed') ? true : undefined), 60_000);
    } finally {
      up2.child.kill('SIGTERM');
      await new Promise((r) => up2.child.once('exit', r));
    }
    const later = (await events()).filter((e) => e.id > mark && e.reason.startsWith('Image'));
    assert.deepEqual(later.map((e) => `${e.reason} ${e.key} ${e.type}`), ['ImageGCStarted image/gc Normal', `ImageRemoved image/${ref('x3')} Normal`, 'ImageGCFailed image/gc Warning']);
    assert.match(later.at(-1)?.message ?? '', /no unused image is left and the low threshold is 1%/);
    assert.deepEqual(await refs(), [ref('used')]);
    assert.equal((await web())?.pid, first.pid);
    assert.deepEqual(storeProblems(await listStore(env.root)), []);
    assert.ok(statSync(path.join(env.root, 'berth.db')).size > 0);
  });

  test('image-gc-thresholds-checked: low not below high is exit 2 naming both flags', async (t) => {
    if (!ok) return t.skip();
    const r = await berth(env, ['up', watched, '--image-gc-high-threshold', '70', '--image-gc-low-threshold', '75']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--image-gc-low-threshold 75 must be below --image-gc-high-threshold 70/);
    const r2 = await berth(env, ['up', watched, '--image-gc-high-threshold', '85%']);
    assert.equal(r2.code, 2, r2.stderr);
    assert.match(r2.stderr, /--image-gc-high-threshold "85%": must be a percentage from 0 to 100/);
    const r3 = await berth(env, ['up', watched, '--minimum-image-ttl-duration', '2 minutes']);
    assert.equal(r3.code, 2, r3.stderr);
    assert.match(r3.stderr, /--minimum-image-ttl-duration "2 minutes": must be a duration such as 2m/);
  });
});

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import type { EventRecord } from '../../src/runtime/index.js';
import { buildBusyboxImage, pushImage } from '../../scripts/fixture-image.js';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { requireE2E, requireTools } from '../helpers/prereq.js';
import { berth, cleanupEnv, makeEnv, startDaemon, stopDaemon, waitFor, type BerthEnv } from '../helpers/berth.js';
import { ociArchiveOf } from '../helpers/oci-archive.js';
import { hostPod, podStatuses, waitRunning } from '../helpers/pod-suite.js';

const run = promisify(execFile);

/**
 * Issue 14, air-gapped edge: image archives dropped into `<DIR>/images/` are imported before the
 * pods that need them start, for `berth up DIR` (also when a tar arrives later, written in two
 * parts: imported once complete) and `apply -f DIR`; an IfNotPresent pod then runs with no
 * registry at all (the one the images came from is stopped, so any pull would fail). An OCI
 * layout directory there is not read as manifests (its index.json); a bad tar is a coded problem
 * naming the file and changes nothing else; an imported archive is not imported again after a
 * daemon restart (the ledger).
 */

const pod = (name: string, image: string): string => hostPod(name, image, ['sh', '-c', 'while true; do sleep 1; done'], ['imagePullPolicy: IfNotPresent']);

describe('e2e: the images/ folder is imported automatically (issue 14)', { timeout: 600_000 }, () => {
  let ok = true;
  let src: BerthEnv;
  let demo: DemoFixture | undefined;
  let image1 = '';
  let image2 = '';
  let archive1: Buffer = Buffer.alloc(0);
  let archive2: Buffer = Buffer.alloc(0);
  const envs: BerthEnv[] = [];

  before(async (t) => {
    ok = requireE2E(t) && requireTools(t, ['tar']);
    if (!ok) return;
    src = makeEnv('berth-imgdir-src-');
    demo = await startDemoFixture();
    image1 = `${demo.registry.host}/berth/demo:1.0`;
    image2 = `${demo.registry.host}/berth/other:2.0`;
    await pushImage(demo.registry.url, 'berth/other', '2.0', await buildBusyboxImage());
    for (const img of [image1, image2]) {
      const p = await berth(src, ['images', 'pull', '-q', img]);
      assert.equal(p.code, 0, p.stderr);
    }
    const a1 = path.join(src.dir, 'a1.tar');
    const a2 = path.join(src.dir, 'a2.tar');
    assert.equal((await berth(src, ['images', 'export', image1, '-o', a1])).code, 0);
    assert.equal((await berth(src, ['images', 'export', image2, '-o', a2])).code, 0);
    archive1 = await fsp.readFile(a1);
    archive2 = await fsp.readFile(a2);
    // From here on no registry exists: a pull of either image fails.
    await demo.stop();
    demo = undefined;
  });

  after(async () => {
    if (!ok) return;
    for (const e of envs) {
      await berth(e, ['delete', '-f', path.join(e.dir, 'manifests')]).catch(() => undefined);
      await cleanupEnv(e);
    }
    await cleanupEnv(src);
    await demo?.stop();
  });

  const running = (env: BerthEnv, name: string): Promise<true> => waitRunning(env, name, 60_000, 250);

  test('berth up: archives present at start and written later are imported; a bad tar is a coded problem; no re-import after restart', async (t) => {
    if (!ok) return t.skip();
    const env = makeEnv('berth-imgdir-up-');
    envs.push(env);
    const dir = path.join(env.dir, 'manifests');
    await fsp.mkdir(path.join(dir, 'images'), { recursive: true });
    await fsp.writeFile(path.join(dir, 'images', 'demo.tar'), archive1);
    await fsp.writeFile(path.join(dir, 'one.yaml'), pod('one', image1));
    let daemon = await startDaemon(env, dir);
    try {
      await running(env, 'one');
      const events = JSON.parse((await berth(env, ['events', '-o', 'json'])).stdout) as EventRecord[];
      assert.ok(!events.some((e) => /pull/i.test(e.reason) && e.type === 'Warning'), `no pull was attempted: ${JSON.stringify(events)}`);

      // A tar written in two parts, 400 ms apart: imported once, when complete.
      const fh = await fsp.open(path.join(dir, 'images', 'other.tar'), 'w');
      await fh.write(archive2.subarray(0, archive2.length >> 1));
      await new Promise((r) => setTimeout(r, 400));
      await fh.write(archive2.subarray(archive2.length >> 1));
      await fh.close();
      await waitFor('other image imported', async () => ((await berth(env, ['images', 'ls'])).stdout.includes('berth/other') ? true : undefined), 30_000, 250);
      assert.doesNotMatch(daemon.output(), /other\.tar[^\n]*not imported|not imported[^\n]*other\.tar/, 'the half-written tar was never tried');
      await fsp.writeFile(path.join(dir, 'two.yaml'), pod('two', image2));
      await running(env, 'two');

      // A bad tar: a coded problem naming the file; pods keep running; the file stays.
      const bad = path.join(dir, 'images', 'bad.tar');
      await fsp.writeFile(bad, Buffer.from('this is not a tar archive\n'.repeat(100)));
      await waitFor('bad tar reported', async () => (/bad\.tar.*image archive not imported: ERR_[A-Z_]+/.test(daemon.output()) ? true : undefined), 30_000, 250);
      const ev = JSON.parse((await berth(env, ['events', '-o', 'json'])).stdout) as EventRecord[];
      assert.ok(ev.some((e) => e.key === `source/${bad}` && /image archive not imported: ERR_/.test(e.message)), 'an event names the bad archive');
      await fsp.access(bad);
      const st = await podStatuses(env);
      assert.equal(st.get('one')?.status, 'Running');
      assert.equal(st.get('two')?.status, 'Running');

      // Restart: the ledger says both archives were imported; nothing is imported again.
      assert.match(daemon.output(), /"image archive imported"/, 'the first daemon logged its imports');
      await stopDaemon(daemon, 'SIGTERM');
      const ledger = JSON.parse(await fsp.readFile(path.join(env.root, 'image-folder.json'), 'utf8')) as Record<string, { images?: { ref: string }[]; error?: { code: string } }>;
      assert.deepEqual(ledger[path.join(dir, 'images', 'demo.tar')]?.images?.map((i) => i.ref), [image1]);
      assert.match(ledger[bad]?.error?.code ?? '', /^ERR_/);
      daemon = await startDaemon(env, dir);
      await running(env, 'one');
      await new Promise((r) => setTimeout(r, 1500));
      assert.doesNotMatch(daemon.output(), /"image archive imported"/, 'nothing imported again');
    } finally {
      await stopDaemon(daemon);
    }
  });

  test('regression images-folder-flips-tag: two archives naming one tag do not take it from each other; a tag re-pointed since is not undone', async (t) => {
    if (!ok) return t.skip();
    const ref = 'example.com/app:latest';
    // Two archives naming example.com/app:latest, for two different images (v1, v2).
    const annotations = { 'io.containerd.image.name': ref, 'org.opencontainers.image.ref.name': 'latest' };
    const img1 = await buildBusyboxImage({ page: 'app v1\n' });
    const img2 = await buildBusyboxImage({ page: 'app v2\n' });
    const [d1, d2] = [img1.manifestDigest, img2.manifestDigest];
    const v1 = path.join(src.dir, 'app-v1.tar');
    const v2 = path.join(src.dir, 'app-v2.tar');
    await fsp.writeFile(v1, await ociArchiveOf(img1, annotations));
    await fsp.writeFile(v2, await ociArchiveOf(img2, annotations));

    const env = makeEnv('berth-imgdir-flip-');
    envs.push(env);
    const dir = path.join(env.dir, 'manifests');
    await fsp.mkdir(path.join(dir, 'images'), { recursive: true });
    const a = path.join(dir, 'images', 'a-v1.tar');
    const b = path.join(dir, 'images', 'b-v2.tar');
    await fsp.copyFile(v1, a);
    await fsp.copyFile(v2, b);
    // Something to apply that needs no image.
    await fsp.writeFile(path.join(dir, 'cm.yaml'), 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: flip}\ndata: {k: v}\n');
    const tagged = async (): Promise<string | undefined> => {
      const r = await berth(env, ['images', 'ls', '-o', 'json']);
      assert.equal(r.code, 0, r.stderr);
      return (JSON.parse(r.stdout) as { ref: string; digest: string }[]).find((i) => i.ref === ref)?.digest;
    };
    const ledgerFile = path.join(env.root, 'image-folder.json');

    const first = await berth(env, ['apply', '-f', dir]);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(await tagged(), d1, 'the first archive keeps the tag');
    // The conflict is reported, naming both files.
    assert.ok(first.stderr.split('\n').some((l) => l.includes('image archives conflict') && l.includes(a) && l.includes(b)), first.stderr);
    const ledger = await fsp.readFile(ledgerFile, 'utf8');
    for (let i = 0; i < 2; i++) {
      const again = await berth(env, ['apply', '-f', dir]);
      assert.equal(again.code, 0, again.stderr);
      assert.equal(await tagged(), d1, `apply ${i + 2} keeps the tag`);
      assert.equal(await fsp.readFile(ledgerFile, 'utf8'), ledger, `apply ${i + 2} imported nothing again`);
    }

    // The tag re-pointed by something else (an import, as a pull of a newer image would): the
    // folder's archive does not take it back.
    await fsp.rm(b);
    const pulled = await berth(env, ['images', 'import', v2]);
    assert.equal(pulled.code, 0, pulled.stderr);
    assert.equal(await tagged(), d2);
    const after = await berth(env, ['apply', '-f', dir]);
    assert.equal(after.code, 0, after.stderr);
    assert.equal(await tagged(), d2, 'the re-pointed tag stays');

    // The archive changes (a new copy): its tag is imported again.
    await fsp.copyFile(v1, `${a}.part`);
    await fsp.rename(`${a}.part`, a);
    await fsp.utimes(a, new Date(), new Date(Date.now() + 5000));
    const changed = await berth(env, ['apply', '-f', dir]);
    assert.equal(changed.code, 0, changed.stderr);
    assert.equal(await tagged(), d1, 'a changed archive names its image again');
  });

  test('apply -f DIR: an OCI layout directory in images/ is imported, not parsed; a bad archive refuses the apply with exit 2', async (t) => {
    if (!ok) return t.skip();
    const env = makeEnv('berth-imgdir-apply-');
    envs.push(env);
    const dir = path.join(env.dir, 'manifests');
    const layout = path.join(dir, 'images', 'demo-layout');
    await fsp.mkdir(layout, { recursive: true });
    const tarFile = path.join(env.dir, 'a1.tar');
    await fsp.writeFile(tarFile, archive1);
    await run('tar', ['-xf', tarFile, '-C', layout]);
    await fsp.access(path.join(layout, 'index.json'));
    await fsp.writeFile(path.join(dir, 'one.yaml'), pod('one', image1));
    const v = await berth(env, ['validate', '-f', dir]);
    assert.equal(v.code, 0, `images/ is not read as manifests: ${v.stdout}${v.stderr}`);
    const r = await berth(env, ['apply', '-f', dir]);
    assert.equal(r.code, 0, r.stderr);
    await running(env, 'one');

    // Regression folder-image-removed-never-returns: an image removed after its archive was
    // imported (images rm, prune, image GC) is imported again from the folder at the next apply.
    const rmPod = await berth(env, ['delete', '-f', dir]);
    assert.equal(rmPod.code, 0, rmPod.stderr);
    const rm = await berth(env, ['images', 'rm', image1]);
    assert.equal(rm.code, 0, rm.stderr);
    assert.notEqual((await berth(env, ['images', 'inspect', image1])).code, 0, 'the image is gone before the apply');
    const again = await berth(env, ['apply', '-f', dir]);
    assert.equal(again.code, 0, again.stderr);
    await running(env, 'one');

    await fsp.writeFile(path.join(dir, 'images', 'broken.tar'), archive1.subarray(0, 3000));
    const bad = await berth(env, ['apply', '-f', dir]);
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /broken\.tar.*image archive not imported: ERR_[A-Z_]+/);
    assert.equal((await podStatuses(env)).get('one')?.status, 'Running');
  });
});

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, cleanupEnv, makeEnv, type BerthEnv } from '../helpers/berth.js';

/**
 * Issue 14, image CLI: `images ls` with platform, compressed and unpacked sizes and age (-o json
 * too), `images inspect` with layers and config, `images tag` (no registry: the registry is
 * stopped first), and GC keeping a tagged image.
 */
describe('e2e: images ls, inspect, tag (issue 14)', { timeout: 300_000 }, () => {
  let ok = true;
  let env: BerthEnv;
  let demo: DemoFixture | undefined;
  let image = '';

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv('berth-images-');
    demo = await startDemoFixture();
    image = `${demo.registry.host}/berth/demo:1.0`;
    const r = await berth(env, ['images', 'pull', '-q', image]);
    assert.equal(r.code, 0, r.stderr);
    await demo.stop();
    demo = undefined;
  });

  after(async () => {
    if (!ok) return;
    await cleanupEnv(env);
    await demo?.stop();
  });

  test('ls shows sizes, platform and age; inspect the layers and config; tag works offline and survives gc', async (t) => {
    if (!ok) return t.skip();
    const list = JSON.parse((await berth(env, ['images', 'ls', '-o', 'json'])).stdout) as { ref: string; digest: string; platform: string; created: string | null; layers: number; compressedBytes: number; unpackedBytes: number }[];
    assert.equal(list.length, 1);
    const img = list[0];
    assert.equal(img?.ref, image);
    assert.equal(img?.layers, 2);
    assert.ok((img?.compressedBytes ?? 0) > 100_000 && (img?.unpackedBytes ?? 0) > (img?.compressedBytes ?? 0), JSON.stringify(img));
    assert.match(img?.platform ?? '', /^linux\/\w+/);
    assert.ok(img?.created !== null);
    const table = (await berth(env, ['images', 'ls'])).stdout;
    assert.match(table, /^REF\s+DIGEST\s+PLATFORM\s+SIZE\s+UNPACKED\s+CREATED$/m);
    const inspect = JSON.parse((await berth(env, ['images', 'inspect', image])).stdout) as { summary: { digest: string }; manifest: { layers: { digest: string; diffId: string }[] }; config: { config: { Cmd: string[] } } };
    assert.equal(inspect.summary.digest, img?.digest);
    assert.equal(inspect.manifest.layers.length, 2);
    assert.deepEqual(inspect.config.config.Cmd, ['sh']);
    const tag = await berth(env, ['images', 'tag', image, 'example.test/mine:v1']);
    assert.equal(tag.code, 0, tag.stderr);
    assert.equal(tag.stdout.trim(), `example.test/mine:v1 ${img?.digest ?? ''}`);
    // Regression tag-to-digest-name: a digest name is that content's, never a name to give away.
    const pinned = await berth(env, ['images', 'tag', image, `example.test/other@sha256:${'a'.repeat(64)}`]);
    assert.equal(pinned.code, 2, pinned.stderr);
    assert.match(pinned.stderr, /refusing to tag with a digest reference/);
    assert.equal((JSON.parse((await berth(env, ['images', 'ls', '-o', 'json'])).stdout) as { ref: string }[]).some((x) => x.ref.includes('@')), false);
    const rm = await berth(env, ['images', 'rm', image]);
    assert.equal(rm.code, 0, rm.stderr);
    assert.equal((await berth(env, ['gc'])).code, 0);
    const after = JSON.parse((await berth(env, ['images', 'ls', '-o', 'json'])).stdout) as { ref: string; unpackedBytes: number }[];
    assert.deepEqual(after.map((a) => a.ref), ['example.test/mine:v1']);
    assert.equal(after[0]?.unpackedBytes, img?.unpackedBytes, 'the tag kept every layer through gc');
    assert.equal((await berth(env, ['images', 'inspect', 'nope/none:1'])).code, 1);
  });
});

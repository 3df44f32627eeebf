import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync, gzipSync } from 'node:zlib';
import { pack as tarPack, type Header } from 'tar-stream';
import { buildBusyboxImage, ociArchitecture, ociImageOf } from '../../scripts/fixture-image.js';
import { imageBlobs, indexOf, ociArchiveOf, ociLayoutTar } from '../helpers/oci-archive.js';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { requireE2E, requireTools } from '../helpers/prereq.js';
import { berth, cleanupEnv, makeEnv, waitFor, type BerthEnv } from '../helpers/berth.js';
import { Runtime } from '../../src/runtime/index.js';
import { createLogger } from '../../src/lib/log.js';
import { isBerthError } from '../../src/lib/errors.js';
import { file as hostileFile, tarHeader as hostileHeader } from '../helpers/hostile.js';

const run = promisify(execFile);

/**
 * Issue 14, air-gapped edge: `images export` writes an OCI archive that skopeo and umoci read,
 * with the local image's manifest digest; `images import` of that archive (and of the OCI layout
 * directory skopeo makes from it, and of a `docker save` tar built here) into a fresh root with no
 * registry running gives a runnable image, digest-equal for the OCI forms. Hostile archives (a
 * changed layer byte, `../x`, a symlink member, an oversize document) are refused with a coded
 * error and record nothing.
 */

interface Member {
  name: string;
  data?: Buffer;
  type?: Header['type'];
  linkname?: string;
}

async function tarOf(members: readonly Member[]): Promise<Buffer> {
  const p = tarPack();
  const chunks: Buffer[] = [];
  p.on('data', (c) => chunks.push(c as Buffer));
  const done = new Promise<void>((resolve, reject) => {
    p.on('end', resolve);
    p.on('error', reject);
  });
  for (const m of members) {
    await new Promise<void>((resolve, reject) => {
      const h = { name: m.name, mode: 0o644, mtime: new Date(0), type: m.type ?? 'file', ...(m.linkname !== undefined ? { linkname: m.linkname } : {}) } as Header;
      if (m.data !== undefined) h.size = m.data.length;
      p.entry(h, m.data ?? Buffer.alloc(0), (err) => (err ? reject(err) : resolve()));
    });
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

describe('e2e: images import and export (issue 14, air-gapped edge)', { timeout: 600_000 }, () => {
  let ok = true;
  let src: BerthEnv;
  let dst: BerthEnv;
  let demo: DemoFixture | undefined;
  let image = '';
  let digest = '';
  let layers: string[] = [];
  let archive = '';
  let dockerSave: { members: Member[]; layerTars: Buffer[] } | undefined;

  const lsRefs = async (env: BerthEnv): Promise<{ ref: string; digest: string }[]> => {
    const r = await berth(env, ['images', 'ls', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as { ref: string; digest: string }[]).map((i) => ({ ref: i.ref, digest: i.digest }));
  };

  /** Applies a pod that prints from the image and exits; returns its log. */
  const runPod = async (env: BerthEnv, name: string, img: string): Promise<string> => {
    const file = path.join(env.dir, `${name}.yaml`);
    await fsp.writeFile(
      file,
      `apiVersion: v1
kind: Pod
metadata: {name: ${name}}
spec:
  hostNetwork: true
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
    - name: c
      image: ${img}
      imagePullPolicy: Never
      command: ["sh", "-c", "cat /var/www/index.html; echo user=$(id -u)"]
`,
    );
    const a = await berth(env, ['apply', '-f', file]);
    assert.equal(a.code, 0, a.stderr);
    await waitFor(
      `${name} exited`,
      async () => {
        const pods = JSON.parse((await berth(env, ['status', '-o', 'json'])).stdout) as { pods: { key: string; containers: { state: string; exitCode: number | null }[] }[] };
        const c = pods.pods.find((p) => p.key === `default/${name}`)?.containers[0];
        return c?.state === 'exited' ? c : undefined;
      },
      60_000,
    );
    const out = (await berth(env, ['logs', `${name}/c`])).stdout;
    await berth(env, ['delete', '-f', file]);
    return out;
  };

  before(async (t) => {
    ok = requireE2E(t) && requireTools(t, ['skopeo', 'umoci']);
    if (!ok) return;
    src = makeEnv('berth-export-');
    dst = makeEnv('berth-import-');
    demo = await startDemoFixture();
    image = `${demo.registry.host}/berth/demo:1.0`;
    const p = await berth(src, ['images', 'pull', '-q', image]);
    assert.equal(p.code, 0, p.stderr);
    digest = p.stdout.trim().split(' ')[1] ?? '';
    const inspect = JSON.parse((await berth(src, ['images', 'inspect', image])).stdout) as { manifest: { layers: { digest: string }[] } };
    layers = inspect.manifest.layers.map((l) => l.digest);
    // Air-gapped from here on: no registry answers.
    await demo.stop();
    demo = undefined;
    archive = path.join(src.dir, 'demo.oci.tar');

    // A docker save archive (the pre-25 layout: <id>/layer.tar, <config hex>.json) of the fixture image.
    const img = await buildBusyboxImage({ page: 'saved by docker\n' });
    const layerTars = img.layers.map((l) => gunzipSync(l.data));
    const configName = `${img.configDigest.slice('sha256:'.length)}.json`;
    const ids = layerTars.map((_, i) => createHash('sha256').update(`layer ${i}`).digest('hex'));
    const manifest = Buffer.from(JSON.stringify([{ Config: configName, RepoTags: ['example.test/saved:1'], Layers: ids.map((id) => `${id}/layer.tar`) }]));
    dockerSave = {
      layerTars,
      members: [
        { name: configName, data: img.config },
        ...ids.flatMap((id, i) => [
          { name: `${id}/`, type: 'directory' as const },
          { name: `${id}/VERSION`, data: Buffer.from('1.0') },
          { name: `${id}/layer.tar`, data: layerTars[i] as Buffer },
        ]),
        { name: 'manifest.json', data: manifest },
        { name: 'repositories', data: Buffer.from(JSON.stringify({ 'example.test/saved': { '1': ids[ids.length - 1] } })) },
      ],
    };
  });

  after(async () => {
    if (!ok) return;
    await cleanupEnv(src);
    await cleanupEnv(dst);
    await demo?.stop();
  });

  test('export: skopeo inspects the same manifest digest and layers; skopeo copy and umoci unpack accept it', async (t) => {
    if (!ok) return t.skip();
    const e = await berth(src, ['images', 'export', image, '-o', archive]);
    assert.equal(e.code, 0, e.stderr);
    assert.equal(e.stdout.trim(), `${image} ${digest}`);
    const { stdout } = await run('skopeo', ['inspect', `oci-archive:${archive}`]);
    const info = JSON.parse(stdout) as { Digest: string; Layers: string[] };
    assert.equal(info.Digest, digest);
    assert.deepEqual(info.Layers, layers);
    const layout = path.join(src.dir, 'layout');
    await run('skopeo', ['copy', `oci-archive:${archive}`, `oci:${layout}:demo`]);
    const bundle = path.join(src.dir, 'bundle');
    await run('umoci', ['unpack', '--image', `${layout}:demo`, bundle]);
    assert.match(await fsp.readFile(path.join(bundle, 'rootfs/var/www/index.html'), 'utf8'), /berth demo/);
    assert.ok((await fsp.lstat(path.join(bundle, 'rootfs/bin/busybox'))).isFile());
    // The blobs are the store's bytes: skopeo's copy of the layout kept the manifest digest.
    const index = JSON.parse(await fsp.readFile(path.join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
    assert.equal(index.manifests[0]?.digest, digest);
  });

  test('import of the exported archive into a fresh root, no registry: digest-equal and runnable', async (t) => {
    if (!ok) return t.skip();
    const i = await berth(dst, ['images', 'import', archive]);
    assert.equal(i.code, 0, i.stderr);
    assert.equal(i.stdout.trim(), `${image} ${digest}`);
    assert.deepEqual(await lsRefs(dst), [{ ref: image, digest }]);
    const inspect = JSON.parse((await berth(dst, ['images', 'inspect', image])).stdout) as { manifest: { layers: { digest: string }[] } };
    assert.deepEqual(inspect.manifest.layers.map((l) => l.digest), layers);
    assert.match(await runPod(dst, 'imported', image), /berth demo[\s\S]*user=0/);
    // Again: idempotent, same rows.
    const again = await berth(dst, ['images', 'import', archive]);
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(await lsRefs(dst), [{ ref: image, digest }]);
  });

  test('regression archive-tar-framing-as-go: a member Go reads as file data is not imported as a member of its own', async (t) => {
    if (!ok) return t.skip();
    let tar = await fsp.readFile(archive);
    const gz = tar[0] === 0x1f && tar[1] === 0x8b;
    if (gz) tar = gunzipSync(tar);
    // A member notes.txt whose size field is "\0 0000002000": 1024 for Go (docker load, skopeo,
    // umoci, scanners: NULs and spaces trimmed), so its data is a member "index.json" that nothing
    // imports; 0 for tar-stream, which read that member as the archive's own index.json (and then
    // refused the real one as a duplicate).
    const bogus = Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${'0'.repeat(64)}`, size: 2 }] }));
    const hidden = hostileFile('index.json', bogus);
    assert.equal(hidden.length, 1024);
    const smuggling = Buffer.concat([hostileHeader({ name: 'notes.txt', type: '0', sizeField: Buffer.from('\0 0000002000', 'latin1') }, 0), hidden]);
    const crafted = path.join(src.dir, 'smuggling.oci.tar');
    const body = Buffer.concat([smuggling, tar]);
    await fsp.writeFile(crafted, gz ? gzipSync(body) : body);
    const fresh = makeEnv('berth-import-smuggle-');
    try {
      const i = await berth(fresh, ['images', 'import', crafted]);
      assert.equal(i.code, 0, i.stderr);
      assert.equal(i.stdout.trim(), `${image} ${digest}`);
    } finally {
      await cleanupEnv(fresh);
    }
  });

  test('import of an OCI layout directory: a tag-only ref.name needs --ref; digest-equal', async (t) => {
    if (!ok) return t.skip();
    const layout = path.join(src.dir, 'layout'); // written by skopeo in the export test
    const unnamed = await berth(dst, ['images', 'import', layout]);
    assert.notEqual(unnamed.code, 0);
    assert.match(unnamed.stderr, /ERR_INVALID_IMAGE|carries no name/);
    const named = await berth(dst, ['images', 'import', layout, '--ref', 'example.test/layout:dir']);
    assert.equal(named.code, 0, named.stderr);
    assert.equal(named.stdout.trim(), `example.test/layout:dir ${digest}`);
  });

  test('import of a docker save tar (uncompressed layer.tar): a berth-made manifest, runnable', async (t) => {
    if (!ok || dockerSave === undefined) return t.skip();
    const file = path.join(dst.dir, 'saved.tar');
    await fsp.writeFile(file, await tarOf(dockerSave.members));
    const i = await berth(dst, ['images', 'import', file]);
    assert.equal(i.code, 0, i.stderr);
    const [ref, d] = i.stdout.trim().split(' ');
    assert.equal(ref, 'example.test/saved:1');
    const inspect = JSON.parse((await berth(dst, ['images', 'inspect', 'example.test/saved:1'])).stdout) as { summary: { digest: string }; manifest: { layers: { digest: string; diffId: string; mediaType: string }[] } };
    assert.equal(inspect.summary.digest, d);
    // An uncompressed layer's digest is the sha256 of its tar, which is the config's diff_id.
    for (const [n, l] of inspect.manifest.layers.entries()) {
      assert.equal(l.digest, sha(dockerSave.layerTars[n] as Buffer));
      assert.equal(l.digest, l.diffId);
      assert.equal(l.mediaType, 'application/vnd.oci.image.layer.v1.tar');
    }
    assert.match(await runPod(dst, 'saved', 'example.test/saved:1'), /saved by docker/);
    // The same archive again: the same (deterministic) manifest digest.
    const again = await berth(dst, ['images', 'import', file, '--ref', 'example.test/saved:again']);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stdout.trim(), `example.test/saved:again ${d ?? ''}`);
    // The docker 25 names (blobs/sha256/<hex> for config and layers, no oci-layout), gzip-compressed as a whole: the same image.
    const byName = new Map(dockerSave.members.map((m) => [m.name, m]));
    const saved = JSON.parse((byName.get('manifest.json')?.data as Buffer).toString()) as { Config: string; Layers: string[] }[];
    const blobName = (b: Buffer): string => `blobs/sha256/${sha(b).slice('sha256:'.length)}`;
    const config = byName.get(saved[0]?.Config ?? '')?.data as Buffer;
    const layerBlobs = (saved[0]?.Layers ?? []).map((l) => byName.get(l)?.data as Buffer);
    const modern = await tarOf([
      { name: blobName(config), data: config },
      ...layerBlobs.map((b) => ({ name: blobName(b), data: b })),
      { name: 'manifest.json', data: Buffer.from(JSON.stringify([{ Config: blobName(config), RepoTags: ['example.test/saved:modern'], Layers: layerBlobs.map(blobName) }])) },
    ]);
    const gz = path.join(dst.dir, 'saved-modern.tar.gz');
    await fsp.writeFile(gz, gzipSync(modern));
    const m = await berth(dst, ['images', 'import', gz]);
    assert.equal(m.code, 0, m.stderr);
    assert.equal(m.stdout.trim(), `example.test/saved:modern ${d ?? ''}`);
  });

  test('regression docker-save-symlinked-layer: a layer.tar that is a symlink to another member (docker save ≤ 24) is followed; links leaving the archive, to no member, or in a loop are refused', async (t) => {
    if (!ok) return t.skip();
    // Two images sharing their first layer, saved as moby's tarexport writes it: the second
    // image's <id>/layer.tar is a symlink to ../<first id>/layer.tar.
    const a = await buildBusyboxImage({ page: 'image a\n' });
    const b = await buildBusyboxImage({ page: 'image b\n' });
    assert.equal(a.layers[0]?.diffId, b.layers[0]?.diffId);
    const tarsOf = (img: typeof a): Buffer[] => img.layers.map((l) => gunzipSync(l.data));
    const id = (s: string): string => createHash('sha256').update(s).digest('hex');
    const [a0, a1, b0, b1] = ['a0', 'a1', 'b0', 'b1'].map(id) as [string, string, string, string];
    const cfgName = (img: typeof a): string => `${img.configDigest.slice('sha256:'.length)}.json`;
    const members = (link: string): Member[] => [
      { name: cfgName(a), data: a.config },
      { name: cfgName(b), data: b.config },
      { name: `${a0}/`, type: 'directory' },
      { name: `${a0}/layer.tar`, data: tarsOf(a)[0] as Buffer },
      { name: `${a1}/layer.tar`, data: tarsOf(a)[1] as Buffer },
      { name: `${b0}/`, type: 'directory' },
      { name: `${b0}/layer.tar`, type: 'symlink', linkname: link },
      { name: `${b1}/layer.tar`, data: tarsOf(b)[1] as Buffer },
      {
        name: 'manifest.json',
        data: Buffer.from(
          JSON.stringify([
            { Config: cfgName(a), RepoTags: ['example.test/shared:a'], Layers: [`${a0}/layer.tar`, `${a1}/layer.tar`] },
            { Config: cfgName(b), RepoTags: ['example.test/shared:b'], Layers: [`${b0}/layer.tar`, `${b1}/layer.tar`] },
          ]),
        ),
      },
    ];
    const env = makeEnv('berth-import-symlink-');
    try {
      const file = path.join(env.dir, 'shared.tar');
      await fsp.writeFile(file, await tarOf(members(`../${a0}/layer.tar`)));
      const i = await berth(env, ['images', 'import', file]);
      assert.equal(i.code, 0, i.stderr);
      const refs = await lsRefs(env);
      assert.deepEqual(refs.map((r) => r.ref), ['example.test/shared:a', 'example.test/shared:b']);
      const inspect = JSON.parse((await berth(env, ['images', 'inspect', 'example.test/shared:b'])).stdout) as { manifest: { layers: { digest: string }[] } };
      assert.deepEqual(inspect.manifest.layers.map((l) => l.digest), tarsOf(b).map(sha));
      // A target with inner ".." and "." components, and a link through another link, are followed too.
      for (const [name, m] of [
        ['inner-dots.tar', members(`../${b1}/../${a0}/./layer.tar`)],
        ['chained.tar', [...members('via'), { name: `${b0}/via`, type: 'symlink' as const, linkname: `../${a0}/layer.tar` }]],
      ] as const) {
        const f = path.join(env.dir, name);
        await fsp.writeFile(f, await tarOf(m));
        const r = await berth(env, ['images', 'import', f]);
        assert.equal(r.code, 0, `${name}: ${r.stderr}`);
      }

      const refused = async (name: string, link: string, message: RegExp, extra: Member[] = []): Promise<void> => {
        const f = path.join(env.dir, name);
        await fsp.writeFile(f, await tarOf([...members(link), ...extra]));
        const r = await berth(env, ['images', 'import', f, '--ref', 'example.test/hostile:1']);
        assert.notEqual(r.code, 0, `${name} was imported: ${r.stdout}`);
        assert.match(r.stderr, /ERR_UNSAFE_CONTENT/, name);
        assert.match(r.stderr, message, name);
        assert.ok(r.stderr.includes(`${b0}/layer.tar`), `${name}: the error names the member: ${r.stderr}`);
      };
      await refused('escape.tar', '../../etc/passwd', /is a symlink to "\.\.\/\.\.\/etc\/passwd", which leaves the archive/);
      await refused('absolute.tar', `/${a0}/layer.tar`, /an absolute path/);
      await refused('missing.tar', `../${id('nothing')}/layer.tar`, /which is not a file of the archive/);
      await refused('directory.tar', `../${a0}`, /which is not a file of the archive/);
      await refused('loop.tar', 'loop', /a loop/, [{ name: `${b0}/loop`, type: 'symlink', linkname: `layer.tar` }]);
      assert.deepEqual((await lsRefs(env)).map((r) => r.ref), ['example.test/shared:a', 'example.test/shared:b']);
    } finally {
      await cleanupEnv(env);
    }
  });

  test('regression import-skips-other-platforms: entries for another platform and artifacts in an OCI layout are skipped and said so; nothing for this host is an error naming what was found', async (t) => {
    if (!ok) return t.skip();
    const host = ociArchitecture();
    const otherArch = host === 'arm64' ? 'amd64' : 'arm64';
    const mine = await buildBusyboxImage({ page: 'multi host\n' });
    const base = await buildBusyboxImage({ page: 'multi other\n' });
    const other = ociImageOf(Buffer.from(JSON.stringify({ ...(JSON.parse(base.config.toString()) as object), architecture: otherArch })), base.layers);
    const MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
    // A cosign signature manifest: an image config, a layer that is no filesystem.
    const payload = Buffer.from('{"critical":{"type":"cosign container image signature"}}');
    const sigConfig = Buffer.from('{"architecture":"","os":"","rootfs":{"type":"layers","diff_ids":[]}}');
    const sig = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MANIFEST,
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(sigConfig), size: sigConfig.length },
        layers: [{ mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json', digest: sha(payload), size: payload.length }],
      }),
    );
    const name = { 'io.containerd.image.name': 'example.test/multi:1' };
    const otherEntry = { mediaType: MANIFEST, data: other.manifest, annotations: name, platform: { os: 'linux', architecture: otherArch } };
    const sigEntry = { mediaType: MANIFEST, data: sig, annotations: { 'io.containerd.image.name': 'example.test/multi:sha256-x.sig' } };
    // An index listing only the other platform.
    const otherIndex = indexOf([{ mediaType: MANIFEST, data: other.manifest, platform: { os: 'linux', architecture: otherArch } }]);
    const otherIndexEntry = { mediaType: 'application/vnd.oci.image.index.v1+json', data: otherIndex, annotations: { 'io.containerd.image.name': 'example.test/multi:other' } };
    const blobs = [...imageBlobs(mine), ...imageBlobs(other), sigConfig, payload];
    const env = makeEnv('berth-import-multi-');
    try {
      const file = path.join(env.dir, 'multi.tar');
      await fsp.writeFile(file, await ociLayoutTar([otherEntry, { mediaType: MANIFEST, data: mine.manifest, annotations: name, platform: { os: 'linux', architecture: host } }, sigEntry, otherIndexEntry], blobs));
      const i = await berth(env, ['images', 'import', file]);
      assert.equal(i.code, 0, i.stderr);
      assert.equal(i.stdout.trim(), `example.test/multi:1 ${mine.manifestDigest}`);
      assert.deepEqual(await lsRefs(env), [{ ref: 'example.test/multi:1', digest: mine.manifestDigest }]);
      // Each skipped entry is said, with why.
      assert.match(i.stderr, new RegExp(`skipped index.json manifests\\[0\\] \\(${other.manifestDigest}\\): for linux/${otherArch}, not linux/${host}`));
      assert.match(i.stderr, /skipped index.json manifests\[2\] [^\n]*not a container image \(layer type application\/vnd.dev.cosign.simplesigning.v1\+json\)/);
      assert.match(i.stderr, new RegExp(`skipped index.json manifests\\[3\\] [^\\n]*an index with no manifest for linux/${host} \\(has linux/${otherArch}\\)`));

      // A manifest entry without a platform, whose config is for the other architecture: skipped too.
      // Nothing for this host: refused, naming what was found; nothing recorded.
      const none = path.join(env.dir, 'none.tar');
      await fsp.writeFile(none, await ociLayoutTar([{ mediaType: MANIFEST, data: other.manifest, annotations: name }, sigEntry], blobs));
      const n = await berth(env, ['images', 'import', none]);
      assert.notEqual(n.code, 0, n.stderr);
      assert.match(n.stderr, /ERR_INVALID_IMAGE/);
      assert.match(n.stderr, new RegExp(`no image for linux/${host} in the archive: index.json manifests\\[0\\] \\(${other.manifestDigest}\\) is an image for linux/${otherArch}[^\\n]*; index.json manifests\\[1\\] [^\\n]*is not a container image`));
      assert.deepEqual(await lsRefs(env), [{ ref: 'example.test/multi:1', digest: mine.manifestDigest }]);
    } finally {
      await cleanupEnv(env);
    }
  });

  test('regression export-loses-index-digest: an image picked from an index keeps its index digest through export and import, so a pin by that digest finds it', async (t) => {
    if (!ok) return t.skip();
    const host = ociArchitecture();
    const otherArch = host === 'arm64' ? 'amd64' : 'arm64';
    const mine = await buildBusyboxImage({ page: 'pinned host\n' });
    const base = await buildBusyboxImage({ page: 'pinned other\n' });
    const other = ociImageOf(Buffer.from(JSON.stringify({ ...(JSON.parse(base.config.toString()) as object), architecture: otherArch })), base.layers);
    const MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
    const index = indexOf([
      { mediaType: MANIFEST, data: other.manifest, platform: { os: 'linux', architecture: otherArch } },
      { mediaType: MANIFEST, data: mine.manifest, platform: { os: 'linux', architecture: host } },
    ]);
    const indexDigest = sha(index);
    const entry = { mediaType: 'application/vnd.oci.image.index.v1+json', data: index, annotations: { 'io.containerd.image.name': 'example.test/pinned:1' } };
    const a = makeEnv('berth-pin-a-');
    const b = makeEnv('berth-pin-b-');
    try {
      const file = path.join(a.dir, 'in.tar');
      await fsp.writeFile(file, await ociLayoutTar([entry], [...imageBlobs(mine), ...imageBlobs(other)]));
      assert.equal((await berth(a, ['images', 'import', file])).code, 0);
      const pinned = `example.test/pinned:1@${indexDigest}`;
      assert.equal((await berth(a, ['images', 'inspect', pinned])).code, 0, 'the pin by index digest finds the imported image');
      const out = path.join(a.dir, 'out.tar');
      const e = await berth(a, ['images', 'export', 'example.test/pinned:1', '-o', out]);
      assert.equal(e.code, 0, e.stderr);
      // Other tools still read a plain manifest entry.
      const idx = JSON.parse(execFileSync('tar', ['-xOf', out, 'index.json']).toString()) as { manifests: { digest: string; mediaType: string }[] };
      assert.equal(idx.manifests[0]?.digest, mine.manifestDigest);
      const i = await berth(b, ['images', 'import', out]);
      assert.equal(i.code, 0, i.stderr);
      const insp = await berth(b, ['images', 'inspect', pinned]);
      assert.equal(insp.code, 0, `after export and import the pin still finds it: ${insp.stderr}`);
    } finally {
      await cleanupEnv(a);
      await cleanupEnv(b);
    }
  });

  test('regression ref-name-with-tag-is-a-name: a ref.name "myapp:1.0" (skopeo oci-archive:x.tar:myapp:1.0) names docker.io/library/myapp:1.0; an unusable one is refused showing its value', async (t) => {
    if (!ok) return t.skip();
    const img = await buildBusyboxImage({ page: 'short name\n' });
    const env = makeEnv('berth-import-refname-');
    try {
      const plain = path.join(env.dir, 'plain.tar');
      await fsp.writeFile(plain, await ociArchiveOf(img, {}));
      const named = path.join(env.dir, 'named.tar');
      await run('skopeo', ['copy', `oci-archive:${plain}`, `oci-archive:${named}:myapp:1.0`]);
      const i = await berth(env, ['images', 'import', named]);
      assert.equal(i.code, 0, i.stderr);
      const [ref, d] = i.stdout.trim().split(' ');
      assert.equal(ref, 'docker.io/library/myapp:1.0');
      assert.equal((await berth(env, ['images', 'inspect', 'myapp:1.0'])).code, 0);
      assert.deepEqual(await lsRefs(env), [{ ref: 'docker.io/library/myapp:1.0', digest: d }]);
      // A tag alone is no name: the error says which value it found.
      const tagOnly = path.join(env.dir, 'tag-only.tar');
      await fsp.writeFile(tagOnly, await ociArchiveOf(img, { 'org.opencontainers.image.ref.name': '1.0' }));
      const t1 = await berth(env, ['images', 'import', tagOnly]);
      assert.notEqual(t1.code, 0);
      assert.match(t1.stderr, /ERR_INVALID_IMAGE: .*carries no name \(its org\.opencontainers\.image\.ref\.name "1\.0" is a tag alone, with no repository\); give one with --ref/);
      // Not a reference (upper case): refused, showing the value.
      const bad = path.join(env.dir, 'bad.tar');
      await fsp.writeFile(bad, await ociArchiveOf(img, { 'org.opencontainers.image.ref.name': 'MyApp:1.0' }));
      const b = await berth(env, ['images', 'import', bad]);
      assert.notEqual(b.code, 0);
      assert.match(b.stderr, /ERR_INVALID_IMAGE: .*image name "MyApp:1\.0" is not a reference/);
      assert.deepEqual(await lsRefs(env), [{ ref: 'docker.io/library/myapp:1.0', digest: d }]);
    } finally {
      await cleanupEnv(env);
    }
  });

  test('regression images-rm-by-digest: rm, inspect, tag and export take a digest, a hex prefix as images ls prints it, and name@digest', async (t) => {
    if (!ok) return t.skip();
    const img = await buildBusyboxImage({ page: 'by digest\n' });
    const d = img.manifestDigest;
    const hex = d.slice('sha256:'.length);
    const env = makeEnv('berth-images-by-digest-');
    try {
      const file = path.join(env.dir, 'img.tar');
      await fsp.writeFile(file, await ociArchiveOf(img, { 'io.containerd.image.name': 'example.test/byid:1' }));
      assert.equal((await berth(env, ['images', 'import', file])).code, 0);
      // The DIGEST column of images ls is the prefix users copy.
      const ls = await berth(env, ['images', 'ls']);
      const shown = ls.stdout.split('\n').find((l) => l.startsWith('example.test/byid:1'))?.split(/\s+/)[1] ?? '';
      assert.equal(shown, d.slice(0, 19));
      // tag and inspect by digest, prefix and name@digest.
      const tag = await berth(env, ['images', 'tag', shown, 'example.test/byid:2']);
      assert.equal(tag.code, 0, tag.stderr);
      assert.equal(tag.stdout.trim(), `example.test/byid:2 ${d}`);
      assert.equal((await berth(env, ['images', 'tag', d, 'example.test/other:1'])).code, 0);
      for (const arg of [d, hex, hex.slice(0, 4), shown, `example.test/byid@${d}`]) {
        const r = await berth(env, ['images', 'inspect', arg]);
        assert.equal(r.code, 0, `inspect ${arg}: ${r.stderr}`);
        assert.equal((JSON.parse(r.stdout) as { summary: { digest: string } }).summary.digest, d);
      }
      // export by digest: every name of the image.
      const out = path.join(env.dir, 'out.tar');
      const e = await berth(env, ['images', 'export', shown, '-o', out]);
      assert.equal(e.code, 0, e.stderr);
      assert.deepEqual(e.stdout.trim().split('\n').sort(), [`example.test/byid:1 ${d}`, `example.test/byid:2 ${d}`, `example.test/other:1 ${d}`]);
      // rm by digest of an image with several names: refused without --force, naming them; nothing removed.
      const refused = await berth(env, ['images', 'rm', shown]);
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, /ERR_CONFLICT: .*3 names \(example.test\/byid:1, example.test\/byid:2, example.test\/other:1\); remove them by name, or all with --force/);
      assert.equal((await lsRefs(env)).length, 3);
      // name@digest: that repository's names at that digest.
      const byName = await berth(env, ['images', 'rm', `example.test/byid@${d}`]);
      assert.equal(byName.code, 0, byName.stderr);
      assert.deepEqual((await lsRefs(env)).map((i) => i.ref), ['example.test/other:1']);
      // Unknown digests and names stay ERR_NOT_FOUND.
      const unknown = await berth(env, ['images', 'rm', `sha256:${'0'.repeat(64)}`]);
      assert.match(unknown.stderr, /ERR_NOT_FOUND/);
      // The full digest of an image with one name left removes it.
      const full = await berth(env, ['images', 'rm', d]);
      assert.equal(full.code, 0, full.stderr);
      assert.match(full.stdout, new RegExp(`removed example.test/other:1 ${d}`));
      assert.deepEqual(await lsRefs(env), []);
      // --force removes every name.
      assert.equal((await berth(env, ['images', 'import', file])).code, 0);
      assert.equal((await berth(env, ['images', 'tag', d, 'example.test/byid:3'])).code, 0);
      const forced = await berth(env, ['images', 'rm', '--force', hex.slice(0, 12)]);
      assert.equal(forced.code, 0, forced.stderr);
      assert.deepEqual(await lsRefs(env), []);
    } finally {
      await cleanupEnv(env);
    }
  });

  test('hostile archives: a changed layer byte, ../x, a symlink, an oversize manifest.json → coded errors, nothing recorded', async (t) => {
    if (!ok || dockerSave === undefined) return t.skip();
    // The CLI prints the message; the code is asserted on the runtime the CLI calls.
    const rt = await Runtime.open({ root: path.join(dst.dir, 'hostile-root'), state: path.join(dst.dir, 'hostile-state'), log: createLogger('silent') });
    t.after(() => rt.close());
    const before = await lsRefs(dst);
    const refused = async (name: string, bytes: Buffer, code: string, message: RegExp): Promise<void> => {
      const file = path.join(dst.dir, name);
      await fsp.writeFile(file, bytes);
      await assert.rejects(rt.importImages(file, { ref: 'example.test/hostile:1' }), (err: unknown) => {
        assert.ok(isBerthError(err), String(err));
        assert.equal(err.code, code, `${name}: ${err.message}`);
        assert.match(err.message, message, name);
        return true;
      });
      assert.deepEqual(rt.listImages(), [], `${name} recorded an image`);
      assert.deepEqual(await fsp.readdir(path.join(dst.dir, 'hostile-root', 'content', 'ingest')), [], `${name} left scratch files`);
      const cli = await berth(dst, ['images', 'import', file, '--ref', 'example.test/hostile:1']);
      assert.notEqual(cli.code, 0, `${name} was imported: ${cli.stdout}`);
      assert.match(cli.stderr, message, name);
      assert.deepEqual(await lsRefs(dst), before, `${name} recorded an image`);
    };
    // docker save with one byte of a layer.tar changed (inside the file data, so the tar still parses).
    const members = dockerSave.members.map((m) => ({ ...m }));
    const last = [...members].reverse().find((m) => m.name.endsWith('/layer.tar')) as Member;
    const tampered = Buffer.from(last.data as Buffer);
    const at = tampered.indexOf('saved by docker');
    assert.ok(at > 0);
    tampered[at] = 'S'.charCodeAt(0);
    last.data = tampered;
    await refused('tampered-docker.tar', await tarOf(members), 'ERR_DIGEST_MISMATCH', /hashes to sha256:\w+, but the config's diff_id is/);
    // The OCI archive with one byte of a gzip layer blob changed in place.
    const oci = Buffer.from(await fsp.readFile(archive));
    const gz = oci.indexOf(Buffer.from([0x1f, 0x8b, 0x08]));
    assert.ok(gz > 0);
    oci[gz + 200] = (oci[gz + 200] ?? 0) ^ 0xff;
    await refused('tampered-oci.tar', oci, 'ERR_DIGEST_MISMATCH', /layer blobs\/sha256\/\w+ hashes to sha256:\w+, not sha256:/);
    // Member names and types.
    await refused('dotdot.tar', await tarOf([...dockerSave.members, { name: '../x', data: Buffer.from('x') }]), 'ERR_UNSAFE_CONTENT', /"\.\.\/x" has a "\.\." component/);
    await refused('nested-dotdot.tar', await tarOf([{ name: 'blobs/../../x', data: Buffer.from('x') }, ...dockerSave.members]), 'ERR_UNSAFE_CONTENT', /has a "\.\." component/);
    await refused('absolute.tar', await tarOf([{ name: '/etc/x', data: Buffer.from('x') }, ...dockerSave.members]), 'ERR_UNSAFE_CONTENT', /has an absolute path/);
    await refused('symlink.tar', await tarOf([{ name: 'manifest.json', type: 'symlink', linkname: '/etc/passwd' }]), 'ERR_UNSAFE_CONTENT', /is a symlink to "\/etc\/passwd"/);
    await refused('hardlink.tar', await tarOf([{ name: 'a', data: Buffer.from('x') }, { name: 'manifest.json', type: 'link', linkname: 'a' }]), 'ERR_UNSAFE_CONTENT', /is a hardlink/);
    await refused('oversize.tar', await tarOf([{ name: 'manifest.json', data: Buffer.alloc(4 * 2 ** 20 + 1, 0x20) }]), 'ERR_LIMIT_EXCEEDED', /over the 4194304 byte limit for a document/);
    await refused('not-an-image.tar', await tarOf([{ name: 'hello.txt', data: Buffer.from('hi') }]), 'ERR_INVALID_IMAGE', /neither an OCI image layout/);
    // At the limit, a document is read (and then fails as JSON, not as a size).
    await assert.rejects(rt.importImages(path.join(dst.dir, 'oversize.tar'), { ref: 'example.test/hostile:1', limits: { maxDocumentBytes: 4 * 2 ** 20 + 1 } }), /manifest.json is not JSON/);
  });
});

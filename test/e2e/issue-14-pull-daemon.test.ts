import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { request } from 'undici';
import { fastPullThroughDaemon, parseFastPull, type FastPull } from '../../src/lib/fast-pull.js';
import { buildBusyboxImage, ociArchitecture, ociImageOf, pushImage, MEDIA_TYPE_MANIFEST, type BuiltImage } from '../../scripts/fixture-image.js';
import { berth, berthUp, CLI, cleanupEnv, makeEnv, stopDaemon, waitFor, type BerthEnv, type RunResult } from '../helpers/berth.js';
import { listStore, storeProblems } from '../helpers/gc-check.js';
import { gatingProxy, imageWithData, type GatingProxy } from '../helpers/gc-images.js';
import { requireE2E } from '../helpers/prereq.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';

/**
 * Issue 14, "≤ 0.8 × podman for a one-layer busybox": with `berth up` running, `berth images
 * pull` is one request on the daemon's socket (lib/fast-pull → daemon/pull.ts), sent before
 * commander loads; the daemon pulls through the runtime façade (its lease) and streams the
 * progress the CLI renders exactly as an in-process pull does. Real docker-registry on loopback,
 * real overlay snapshots. Which path a command took is read from the CLI process itself: a
 * preload script records the CommonJS modules it loaded (commander, undici and better-sqlite3
 * are all CommonJS), so a fast pull that fell back, or loaded the runtime, fails these tests.
 */
describe('e2e: berth images pull through the daemon (issue 14 fast path)', { timeout: 300_000 }, () => {
  let ok = true;
  /** Where `berth up` runs. */
  let env: BerthEnv;
  /** Never a daemon: the in-process reference output. */
  let solo: BerthEnv;
  let registry: TestRegistry | undefined;
  let proxy: GatingProxy | undefined;
  let up: ReturnType<typeof berthUp> | undefined;
  let base: BuiltImage;
  let preload = '';
  let repo = '';
  const other = ociArchitecture() === 'arm64' ? 'amd64' : 'arm64';

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv('berth-pulld-');
    solo = makeEnv('berth-pulld-solo-');
    registry = await startRegistry();
    repo = `${registry.host}/berth/pulld`;
    base = await buildBusyboxImage();
    for (const tag of ['1', '2', '3', '4', '5']) await pushImage(registry.url, 'berth/pulld', tag, base);
    // A two-platform index: this machine's image and the same layers under another architecture.
    const cfg = JSON.parse(base.config.toString('utf8')) as Record<string, unknown>;
    const foreign = ociImageOf(Buffer.from(JSON.stringify({ ...cfg, architecture: other })), base.layers);
    await pushImage(registry.url, 'berth/pulld', `only-${other}`, foreign);
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.index.v1+json',
        manifests: [
          { mediaType: MEDIA_TYPE_MANIFEST, digest: base.manifestDigest, size: base.manifest.length, platform: { os: 'linux', architecture: ociArchitecture() } },
          { mediaType: MEDIA_TYPE_MANIFEST, digest: foreign.manifestDigest, size: foreign.manifest.length, platform: { os: 'linux', architecture: other } },
        ],
      }),
    );
    const put = await request(`${registry.url}/v2/berth/pulld/manifests/multi`, { method: 'PUT', headers: { 'content-type': 'application/vnd.oci.image.index.v1+json' }, body: index });
    await put.body.dump();
    assert.equal(put.statusCode, 201);
    // An image with a 24 MiB layer of its own, served through a proxy that can hold that layer.
    const big = await imageWithData(base, { seed: 14, files: 6, fileBytes: 4 * 1024 * 1024 });
    await pushImage(registry.url, 'berth/pulld', 'big', big);
    proxy = await gatingProxy(registry.url);
    preload = path.join(env.dir, 'record-modules.cjs');
    await writeFile(preload, "process.on('exit', () => require('fs').writeFileSync(process.env.BERTH_TEST_MODULES, Object.keys(require.cache).join('\\n')));\n");
  });

  after(async () => {
    if (!ok) return;
    if (up !== undefined) await stopDaemon(up, 'SIGTERM');
    proxy?.close();
    await cleanupEnv(env);
    await cleanupEnv(solo);
    await registry?.stop();
  });

  /** Starts `berth up` on `env` (watching an empty directory: the pulls come through its socket) unless it runs. */
  const daemon = async (): Promise<void> => {
    if (up !== undefined) return;
    const watched = path.join(env.dir, 'watched');
    await mkdir(watched, { recursive: true });
    const u = berthUp(env, watched, ['--resync', '30']);
    up = u;
    await waitFor('berth up answers', async () => ((await berth(env, ['status', '-o', 'json'])).stdout.includes('"daemon": {') ? true : undefined), 60_000).catch(async (err: unknown) => {
      up = undefined;
      await stopDaemon(u);
      throw new Error(`${String(err)}\nberth up said:\n${u.output().slice(-3000)}`);
    });
  };
  let traces = 0;
  /** Runs the CLI and says which CommonJS modules it loaded. */
  const traced = async (e: BerthEnv, args: string[]): Promise<RunResult & { modules: string[] }> => {
    const out = path.join(e.dir, `modules-${++traces}.txt`);
    const res = await berth(e, args, { env: { ...process.env, NODE_OPTIONS: `--require ${preload}`, BERTH_TEST_MODULES: out } });
    const modules = (await readFile(out, 'utf8')).split('\n').filter((m) => m !== '');
    return { ...res, modules };
  };
  const loaded = (modules: string[], pkg: string): boolean => modules.some((m) => m.includes(`/node_modules/${pkg}/`));
  const assertLean = (r: { modules: string[] }, what: string): void => {
    for (const pkg of ['commander', 'undici', 'better-sqlite3']) assert.equal(loaded(r.modules, pkg), false, `${what}: the CLI loaded ${pkg} (the fast path was not taken)`);
  };
  /** Progress lines without what differs from run to run (durations, rates: none when a layer took 0 ms), in a stable order (layers finish in any order). */
  const shape = (s: string): string[] =>
    s
      .split('\n')
      .map((l) => l.replace(/\d+\.\d+s\b/g, 'Ns').replace(/ \([\d.]+ [kMGT]?B\/s\)/g, ''))
      .sort();
  const capture = (): { out: { stdout: { write: (s: string) => boolean }; stderr: (s: string) => void }; text: () => string } => {
    let t = '';
    return { out: { stdout: { write: (s) => ((t += s), true) }, stderr: (s) => (t += s) }, text: () => t };
  };
  const parsed = (args: string[]): FastPull => {
    const p = parseFastPull(['--root', env.root, '--state', env.state, 'images', 'pull', ...args]);
    assert.ok(p !== undefined, args.join(' '));
    return p;
  };

  test('no daemon: the fast path takes nothing and prints nothing; the normal path pulls in-process', async (t) => {
    if (!ok) return t.skip();
    const c = capture();
    assert.deepEqual(await fastPullThroughDaemon(parsed([`${repo}:1`]), c.out), { taken: false, exitCode: 1 });
    assert.equal(c.text(), '');
    const r = await traced(solo, ['images', 'pull', `${repo}:1`]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(loaded(r.modules, 'better-sqlite3'), 'the in-process pull opened the state database');
  });

  test('with berth up, images pull is one request to the daemon: the in-process lines, no commander, undici or SQLite in the CLI', async (t) => {
    if (!ok) return t.skip();
    const inProcess = await berth(makeEnvLike(solo, 'a'), ['images', 'pull', `${repo}:1`]);
    assert.equal(inProcess.code, 0, inProcess.stderr);
    await daemon();
    const r = await traced(env, ['images', 'pull', `${repo}:1`]);
    assert.equal(r.code, 0, r.stderr);
    assertLean(r, 'images pull');
    assert.equal(r.stderr, '');
    // Not a TTY: a start line, one line per layer written, an end line with the duration, the result.
    const lines = r.stdout.trimEnd().split('\n');
    assert.equal(lines[0], `~ image ${repo}:1: pull (requested) ...`);
    assert.equal(lines.filter((l) => /^ {2}\S+: layer [0-9a-f]{12} [\d.]+ [kM]?B in \d+\.\ds/.test(l)).length, base.layers.length, r.stdout);
    assert.match(lines.at(-2) ?? '', new RegExp(`^~ image ${repo}:1: pull \\(requested\\) \\(\\d+\\.\\ds\\)$`));
    assert.equal(lines.at(-1), `${repo}:1 ${base.manifestDigest}`);
    assert.deepEqual(shape(r.stdout), shape(inProcess.stdout));
    // The daemon pulled it: listed, and its event recorded.
    const ls = await berth(env, ['images', 'ls', '-o', 'json']);
    assert.equal(ls.code, 0, ls.stderr);
    assert.ok((JSON.parse(ls.stdout) as { ref: string; digest: string }[]).some((i) => i.ref === `${repo}:1` && i.digest === base.manifestDigest), ls.stdout);
    const ev = await berth(env, ['events', '-o', 'json']);
    assert.ok((JSON.parse(ev.stdout) as { key: string; reason: string }[]).some((e) => e.key === `image/${repo}:1` && e.reason === 'Pulled'), ev.stdout);
  });

  test('-q prints only the result line', async (t) => {
    if (!ok) return t.skip();
    await daemon();
    const r = await traced(env, ['images', 'pull', '-q', `${repo}:2`]);
    assert.equal(r.code, 0, r.stderr);
    assertLean(r, 'images pull -q');
    assert.equal(r.stdout, `${repo}:2 ${base.manifestDigest}\n`);
    assert.equal(r.stderr, '');
  });

  test('an unknown image: the coded error line and exit code of the in-process path', async (t) => {
    if (!ok) return t.skip();
    await daemon();
    const ref = `${repo}:absent`;
    const inProcess = await berth(solo, ['images', 'pull', ref]);
    const r = await traced(env, ['images', 'pull', ref]);
    assertLean(r, 'images pull of an unknown image');
    assert.notEqual(inProcess.code, 0);
    assert.equal(r.code, inProcess.code);
    assert.match(r.stderr, /^error ERR_NOT_FOUND: /m);
    const errorLines = (s: string): string[] => s.split('\n').filter((l) => l.startsWith('error '));
    assert.deepEqual(errorLines(r.stderr), errorLines(inProcess.stderr));
    assert.deepEqual(shape(r.stdout), shape(inProcess.stdout));
  });

  test('--platform is forwarded: the other platform of an index is picked; a bad one is the in-process refusal', async (t) => {
    if (!ok) return t.skip();
    await daemon();
    const r = await traced(env, ['images', 'pull', '--platform', `linux/${other}`, '-q', `${repo}:multi`]);
    assert.equal(r.code, 0, r.stderr);
    assertLean(r, 'images pull --platform');
    const ls = JSON.parse((await berth(env, ['images', 'ls', '-o', 'json'])).stdout) as { ref: string; platform: string }[];
    assert.equal(ls.find((i) => i.ref === `${repo}:multi`)?.platform, `linux/${other}`);
    const bad = await traced(env, ['images', 'pull', '--platform=linux/x86_64', `${repo}:3`]);
    const inProcess = await berth(solo, ['images', 'pull', '--platform=linux/x86_64', `${repo}:3`]);
    assertLean(bad, 'images pull --platform=bad');
    assert.equal(bad.code, 2, bad.stderr);
    assert.equal(inProcess.code, 2, inProcess.stderr);
    assert.match(bad.stderr, /^error ERR_INVALID_ARGUMENT: images pull --platform: architecture "x86_64" .*did you mean linux\/amd64/m);
    assert.equal(bad.stderr, inProcess.stderr);
  });

  test('flags the fast path does not take go the normal way: through the same daemon, or refused when the daemon cannot honour them', async (t) => {
    if (!ok) return t.skip();
    await daemon();
    // A global flag the fast path does not parse: commander runs, the daemon pulls.
    const viaCommander = await traced(env, ['--pod-subnet', '10.89.0.0/16', 'images', 'pull', '-q', `${repo}:3`]);
    assert.equal(viaCommander.code, 0, viaCommander.stderr);
    assert.ok(loaded(viaCommander.modules, 'commander'), 'the normal path ran');
    assert.equal(loaded(viaCommander.modules, 'better-sqlite3'), false, 'the normal path asked the daemon');
    assert.equal(viaCommander.stdout, `${repo}:3 ${base.manifestDigest}\n`);
    // A registry flag the daemon was not started with: never silently ignored.
    const hosts = path.join(env.dir, 'certs.d');
    await mkdir(hosts, { recursive: true });
    const refused = await berth(env, ['--registry-hosts-dir', hosts, 'images', 'pull', `${repo}:4`]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, new RegExp(`^error ERR_CONFLICT: images pull --registry-hosts-dir ${hosts}: berth up \\(pid \\d+\\) uses /etc/berth/certs\\.d \\(its default\\); drop the flag, or stop berth up`, 'm'));
    // The same flag with no daemon works in-process.
    const alone = await berth(solo, ['--registry-hosts-dir', hosts, 'images', 'pull', '-q', `${repo}:4`]);
    assert.equal(alone.code, 0, alone.stderr);
    // Another --root on the daemon's --state: the daemon refuses the fast request and the normal path says why.
    const otherRoot = path.join(env.dir, 'other-root');
    const wrongRoot = await traced(env, ['--root', otherRoot, 'images', 'pull', `${repo}:4`]);
    assert.ok(loaded(wrongRoot.modules, 'commander'), 'the fast path declined another root');
    assert.equal(wrongRoot.code, 1);
    assert.match(wrongRoot.stderr, /^error ERR_CONFLICT: images pull: berth up \(pid \d+\) serves --root /m);
    const ls = JSON.parse((await berth(env, ['images', 'ls', '-o', 'json'])).stdout) as { ref: string }[];
    assert.equal(ls.some((i) => i.ref === `${repo}:4`), false, 'a refused pull pulled nothing');
  });

  test('a client that goes away mid-pull: the daemon finishes the pull and the store stays consistent', async (t) => {
    if (!ok) return t.skip();
    await daemon();
    assert.ok(proxy !== undefined);
    const ref = `${proxy.host}/berth/pulld:big`;
    const big = await imageWithData(base, { seed: 14, files: 6, fileBytes: 4 * 1024 * 1024 });
    const layer = big.layers.at(-1);
    assert.ok(layer !== undefined);
    const release = proxy.hold(layer.digest);
    // The CLI is killed once the layer was asked for: the pull is in flight, its lease taken, some blobs written.
    const cli = spawn(process.execPath, [CLI, '--root', env.root, '--state', env.state, 'images', 'pull', ref], { stdio: ['ignore', 'pipe', 'pipe'] });
    let printed = '';
    cli.stdout.on('data', (b: Buffer) => (printed += b.toString()));
    const exited = new Promise((r) => cli.once('exit', r));
    await proxy.requested(layer.digest);
    await waitFor('the CLI shows the pull started', async () => (/pull \(requested\) \.\.\./.test(printed) ? true : undefined), 10_000);
    cli.kill('SIGKILL');
    await exited;
    release();
    await waitFor('the daemon records the pull the client left', async () => {
      const ls = JSON.parse((await berth(env, ['images', 'ls', '-o', 'json'])).stdout) as { ref: string; digest: string }[];
      return ls.some((i) => i.ref === ref && i.digest === big.manifestDigest) ? true : undefined;
    });
    assert.deepEqual(storeProblems(await listStore(env.root)), []);
    // And the image is whole: a pull again downloads no layer.
    const seen = proxy.seen.length;
    const again = await traced(env, ['images', 'pull', '-q', ref]);
    assert.equal(again.code, 0, again.stderr);
    // (A pull always asks for the config, as it asks for the manifest; the layers it has are not fetched.)
    assert.deepEqual(proxy.seen.slice(seen).filter((d) => d !== big.configDigest), [], 'a second pull fetched layers again');
  });
});

/** A fresh root and state beside `e` (the in-process reference pull of a test starts from nothing). */
function makeEnvLike(e: BerthEnv, suffix: string): BerthEnv {
  return { ...e, root: path.join(e.dir, `root-${suffix}`), state: path.join(e.dir, `state-${suffix}`) };
}

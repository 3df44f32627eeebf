import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { checkPullRequest, pullConflict } from '../../src/daemon/pull.js';
import { parseFastPull } from '../../src/lib/fast-pull.js';

/**
 * Issue 14, `berth images pull` handed to the daemon before commander loads (lib/fast-pull):
 * which command lines the fast path takes, and when the daemon refuses what a client asks for
 * (daemon/pull.ts), which sends the CLI to its normal path.
 */

test('the plain forms of images pull are taken, with the global --root/--state/--log-level before the command', () => {
  const p = parseFastPull(['--root', '/r', '--state=/s', '--log-level', 'warn', 'images', 'pull', '-q', 'reg.example/a/b:1', '--platform', 'linux/arm64']);
  assert.deepEqual(p, {
    socket: '/s/berth.sock',
    request: { ref: 'reg.example/a/b:1', platform: 'linux/arm64', quiet: true, client: { root: '/r', registryConfig: null, registryHostsDir: null } },
  });
  assert.deepEqual(parseFastPull(['images', 'pull', 'busybox']), {
    socket: '/run/berth/berth.sock',
    request: { ref: 'busybox', quiet: false, client: { root: null, registryConfig: null, registryHostsDir: null } },
  });
  assert.equal(parseFastPull(['images', 'pull', '--platform=linux/arm/v7', '--quiet', 'x'])?.request.platform, 'linux/arm/v7');
  assert.equal(parseFastPull(['--root', 'rel', 'images', 'pull', 'x'])?.request.client.root, path.resolve('rel'));
});

test('anything else is left to the normal path', () => {
  for (const args of [
    ['images', 'ls'],
    ['pull', 'x'], // no such alias: commander says so
    ['images', 'pull'],
    ['images', 'pull', 'a', 'b'],
    ['images', 'pull', '-q', '-q', 'x'],
    ['images', 'pull', '--platform', 'linux/amd64', '--platform', 'linux/arm64', 'x'],
    ['images', 'pull', '--platform', 'x'], // the value is missing: the ref was taken for it
    ['images', 'pull', '--platform=', 'x'],
    ['images', 'pull', '--', 'x'],
    ['images', 'pull', '--help'],
    ['images', 'pull', '-qx', 'x'],
    ['--registry-config', '/c.json', 'images', 'pull', 'x'], // registry flags: the normal path
    ['--registry-hosts-dir', '/d', 'images', 'pull', 'x'],
    ['--bridge', 'b0', 'images', 'pull', 'x'],
    ['--root', '/a', '--root', '/b', 'images', 'pull', 'x'],
    ['--log-level', 'loud', 'images', 'pull', 'x'],
    ['--root', '--state', 'images', 'pull', 'x'],
    ['run', 'images', 'pull', 'x'],
  ]) {
    assert.equal(parseFastPull(args), undefined, args.join(' '));
  }
});

test('the daemon refuses a client naming another root or registry flags it was not started with', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-pull-conflict-'));
  try {
    const root = path.join(dir, 'root');
    symlinkSync(dir, path.join(dir, 'link'));
    const daemon = { root: dir, pid: 7, registryConfig: { path: '/home/u/.docker/config.json', required: false }, registryHostsDir: { path: '/etc/berth/certs.d', required: false } };
    const client = { root: dir, registryConfig: null, registryHostsDir: null };
    assert.equal(pullConflict(daemon, client), undefined);
    // The daemon's root is a real path; the client's is compared as one.
    assert.equal(pullConflict(daemon, { ...client, root: path.join(dir, 'link') }), undefined);
    assert.match(pullConflict(daemon, { ...client, root }) ?? '', /^images pull: berth up \(pid 7\) serves --root .* this command names --root .*; drop the flag, or stop berth up/);
    assert.equal(pullConflict(daemon, { ...client, registryConfig: '/home/u/.docker/config.json' }), undefined);
    assert.match(pullConflict(daemon, { ...client, registryConfig: '/etc/auth.json' }) ?? '', /^images pull --registry-config \/etc\/auth\.json: berth up \(pid 7\) reads registry credentials from \/home\/u\/\.docker\/config\.json \(its default\)/);
    assert.equal(pullConflict(daemon, { ...client, registryHostsDir: '/etc/berth/certs.d' }), undefined);
    assert.match(pullConflict(daemon, { ...client, registryHostsDir: '/other' }) ?? '', /^images pull --registry-hosts-dir \/other: berth up \(pid 7\) uses \/etc\/berth\/certs\.d \(its default\)/);
    // Flags not given are not compared: the daemon pulls into its root with its own options.
    assert.equal(pullConflict({ ...daemon, registryConfig: { path: '/etc/auth.json', required: true } }, client), undefined);
    assert.equal(pullConflict(daemon, { ...client, root: null }), undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a pull request that is not one is refused with a coded error (the CLI then takes its normal path)', () => {
  const client = { root: '/r', registryConfig: null, registryHostsDir: null };
  assert.deepEqual(checkPullRequest({ ref: 'x', quiet: false, client }), { ref: 'x', quiet: false, client });
  for (const body of [undefined, {}, { ref: 'x', quiet: false }, { ref: 1, quiet: false, client }, { ref: 'x', quiet: 'no', client }, { ref: 'x', quiet: true, platform: 3, client }, { ref: 'x', quiet: true, client: { root: '/r' } }]) {
    assert.throws(() => checkPullRequest(body), (e: unknown) => (e as { code?: string }).code === 'ERR_INVALID_ARGUMENT', JSON.stringify(body));
  }
});

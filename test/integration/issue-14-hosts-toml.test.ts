import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { promises as fsp } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { BerthError, messageOf, type ErrorCode } from '../../src/lib/errors.js';
import { createLogger } from '../../src/lib/log.js';
import { Runtime } from '../../src/runtime/index.js';
import { dir, file, imageOf, layerOf, pushImageParts, tarOf, type ImageParts } from '../helpers/hostile.js';
import { CLI, berth, cleanupEnv, makeEnv } from '../helpers/berth.js';
import { requireE2E, requireTools } from '../helpers/prereq.js';
import { freePort, startRegistry, type TestRegistry } from '../helpers/registry.js';

/**
 * Issue 14, per-registry configuration in containerd's certs.d layout (runtime/registry/hosts.ts),
 * against real docker-registry instances on loopback:
 * - the upstream registry named by the reference is down (a free port nobody listens on) and a
 *   mirror on another loopback port holds the image: the pull goes through the mirror;
 * - a mirror with only `pull` may serve the image by digest but is never asked to resolve a tag;
 * - a registry with TLS from a CA the test makes with openssl is trusted only through hosts.toml
 *   (`ca`, or `skip_verify`), and client certificates (`client`) are presented when it asks;
 * - rule P3 holds for mirrors: credentials are looked up by the mirror's own host, the upstream's
 *   are never sent to it, and a redirect from the mirror to another loopback port carries no
 *   Authorization.
 */

const b64 = (s: string): string => Buffer.from(s).toString('base64');

describe('issue 14: registry hosts.toml (mirrors, CAs, client certificates)', { timeout: 300_000 }, () => {
  let ok = true;
  let work = '';
  let mirror: TestRegistry | undefined;
  let plainForTls: TestRegistry | undefined;
  let tlsRegistry: TestRegistry | undefined;
  let mtlsRegistry: TestRegistry | undefined;
  let img: ImageParts;
  /** A loopback port with nothing listening: the upstream registry is down. */
  let upstream = '';
  const runtimes: Runtime[] = [];
  let seq = 0;

  before(async (t) => {
    ok = requireE2E(t) && requireTools(t, ['openssl']);
    if (!ok) return;
    work = await fsp.mkdtemp('/tmp/berth-issue14-hosts-');
    mirror = await startRegistry();
    img = imageOf([layerOf(tarOf(dir('etc'), file('etc/mirrored', 'served by the mirror\n')))]);
    await pushImageParts(mirror.url, 'berth/mirrored', '1', img);
    upstream = `127.0.0.1:${await freePort()}`;

    // A CA, a server certificate for 127.0.0.1 and a client certificate, all from openssl.
    const pki = path.join(work, 'pki');
    await fsp.mkdir(pki);
    const ossl = (...args: string[]): void => {
      execFileSync('openssl', args, { cwd: pki, stdio: ['ignore', 'ignore', 'pipe'] });
    };
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    ossl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=berth test CA');
    await fsp.writeFile(path.join(pki, 'server.ext'), 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n');
    ossl('req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1');
    ossl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'server.ext');
    await fsp.writeFile(path.join(pki, 'client.ext'), 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n');
    ossl('req', ...ec, '-keyout', 'client.key', '-out', 'client.csr', '-subj', '/CN=berth client');
    ossl('x509', '-req', '-in', 'client.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'client.cert', '-days', '2', '-extfile', 'client.ext');

    // The TLS registries serve the storage of a plain one the test pushes to.
    plainForTls = await startRegistry();
    await pushImageParts(plainForTls.url, 'berth/tls', '1', img);
    const tls = { certificate: path.join(pki, 'server.pem'), key: path.join(pki, 'server.key') };
    tlsRegistry = await startRegistry({ storageDir: plainForTls.storageDir, tls });
    mtlsRegistry = await startRegistry({
      storageDir: plainForTls.storageDir,
      tls: { ...tls, clientCas: [path.join(pki, 'ca.pem')], clientCert: path.join(pki, 'client.cert'), clientKey: path.join(pki, 'client.key') },
    });
  });

  after(async () => {
    for (const rt of runtimes) await rt.close();
    await tlsRegistry?.stop();
    await mtlsRegistry?.stop();
    await plainForTls?.stop();
    await mirror?.stop();
    if (work !== '') await fsp.rm(work, { recursive: true, force: true });
  });

  /** A fresh hosts dir with `files` (paths relative to it), and a runtime of its own using it. */
  async function runtimeWith(files: Record<string, string>, opts: { registryConfig?: object } = {}): Promise<Runtime> {
    const base = path.join(work, `case-${++seq}`);
    const hostsDir = path.join(base, 'certs.d');
    for (const [name, text] of Object.entries(files)) {
      await fsp.mkdir(path.dirname(path.join(hostsDir, name)), { recursive: true });
      await fsp.writeFile(path.join(hostsDir, name), text);
    }
    await fsp.mkdir(hostsDir, { recursive: true });
    const configFile = path.join(base, 'config.json');
    await fsp.writeFile(configFile, JSON.stringify(opts.registryConfig ?? { auths: {} }));
    const rt = await Runtime.open({
      root: path.join(base, 'root'),
      state: path.join(base, 'state'),
      log: createLogger('silent'),
      registryHostsDir: { path: hostsDir, required: true },
      registryConfig: { path: configFile, required: true },
    });
    runtimes.push(rt);
    return rt;
  }

  async function pullFails(rt: Runtime, ref: string, code: ErrorCode, re?: RegExp): Promise<BerthError> {
    let caught: unknown;
    try {
      await rt.pullImage(ref);
    } catch (err) {
      caught = err;
    }
    assert.ok(caught instanceof BerthError, `expected ${code}, got ${caught === undefined ? 'success' : messageOf(caught)}`);
    assert.equal(caught.code, code, caught.message);
    if (re !== undefined) assert.match(caught.message, re);
    return caught;
  }

  const pki = (name: string): string => path.join(work, 'pki', name);
  const portDir = (host: string): string => host.replace(/:(\d+)$/, '_$1_');

  test('a mirror with pull and resolve serves the pull while the upstream registry is down', async (t) => {
    if (!ok) return t.skip();
    const m = mirror as TestRegistry;
    const rt = await runtimeWith({ [`${portDir(upstream)}/hosts.toml`]: `[host."http://${m.host}"]\n  capabilities = ["pull", "resolve"]\n` });
    const local = await rt.pullImage(`${upstream}/berth/mirrored:1`);
    assert.equal(local.digest, img.manifestDigest);
    assert.equal(local.ref, `${upstream}/berth/mirrored:1`, 'the image keeps the name the reference gave it');
    // Without the hosts.toml the same pull fails: the upstream is really down.
    const bare = await runtimeWith({});
    await pullFails(bare, `${upstream}/berth/other:1`, 'ERR_NETWORK', new RegExp(upstream.replace(/\./g, '\\.')));
  });

  test('mirrors are tried in file order (a failing one first gets one attempt per request, no retries), and an edit of hosts.toml is read without a restart', async (t) => {
    if (!ok) return t.skip();
    const m = mirror as TestRegistry;
    const other = await startRegistry();
    // The first mirror answers 503 to everything (retried 3 times were it the last host).
    const asked: string[] = [];
    const failing = await serve(async (req, res) => {
      asked.push(new URL(req.url ?? '/', 'http://x').pathname);
      res.writeHead(503).end('down for maintenance');
    });
    try {
      const otherImg = imageOf([layerOf(tarOf(file('other', 'another image under the same name\n')))]);
      await pushImageParts(other.url, 'berth/mirrored', '1', otherImg);
      const dead = `127.0.0.1:${port(failing)}`;
      const toml = (first: string, second: string): string =>
        `[host."http://${dead}"]\n[host."http://${first}"]\n  capabilities = ["pull", "resolve"]\n[host."http://${second}"]\n  capabilities = ["pull", "resolve"]\n`;
      const rt = await runtimeWith({ [`${portDir(upstream)}/hosts.toml`]: toml(m.host, other.host) });
      assert.equal((await rt.pullImage(`${upstream}/berth/mirrored:1`)).digest, img.manifestDigest, 'the first live mirror answers');
      assert.ok(asked.includes('/v2/berth/mirrored/manifests/1'), `the failing mirror was asked first: ${asked.join(' ')}`);
      assert.equal(new Set(asked).size, asked.length, `each request once, not retried: ${asked.join(' ')}`);
      const tomlFile = path.join(work, `case-${seq}`, 'certs.d', portDir(upstream), 'hosts.toml');
      await fsp.writeFile(tomlFile, toml(other.host, m.host));
      await fsp.utimes(tomlFile, new Date(), new Date(Date.now() + 5000));
      assert.equal((await rt.pullImage(`${upstream}/berth/mirrored:1`)).digest, otherImg.manifestDigest, 'the new order, same runtime');
    } finally {
      failing.close();
      await other.stop();
    }
  });

  test('the CLI flag: berth --registry-hosts-dir DIR images pull goes through the mirror; a missing DIR is a clear error', async (t) => {
    if (!ok) return t.skip();
    const m = mirror as TestRegistry;
    const env = makeEnv('berth-issue14-hosts-cli-');
    try {
      const hostsDir = path.join(env.dir, 'certs.d');
      await fsp.mkdir(path.join(hostsDir, upstream), { recursive: true });
      await fsp.writeFile(path.join(hostsDir, upstream, 'hosts.toml'), `[host."http://${m.host}"]\n`);
      const pulled = await berth(env, ['--registry-hosts-dir', hostsDir, 'images', 'pull', `${upstream}/berth/mirrored:1`]);
      assert.equal(pulled.code, 0, pulled.stderr);
      assert.match(pulled.stdout, new RegExp(img.manifestDigest));
      const missing = await berth(env, ['--registry-hosts-dir', path.join(env.dir, 'nope'), 'images', 'pull', `${upstream}/berth/mirrored:2`]);
      assert.equal(missing.code, 2, missing.stderr);
      assert.match(missing.stderr, /ERR_INVALID_ARGUMENT.*nope: no such directory \(--registry-hosts-dir\)/);
    } finally {
      await cleanupEnv(env);
    }
  });

  test('a mirror with only pull is never asked to resolve a tag, and serves a pinned digest', async (t) => {
    if (!ok) return t.skip();
    const m = mirror as TestRegistry;
    // The host:port directory name (the one containerd reads second) this time.
    const rt = await runtimeWith({ [`${upstream}/hosts.toml`]: `[host."http://${m.host}"]\n  capabilities = ["pull"]\n` });
    const err = await pullFails(rt, `${upstream}/berth/mirrored:1`, 'ERR_NETWORK', new RegExp(`fetch manifest ${upstream.replace(/\./g, '\\.')}/berth/mirrored:1`));
    assert.ok(!err.message.includes(m.host), `the mirror was not asked: ${err.message}`);
    const pinned = await rt.pullImage(`${upstream}/berth/mirrored@${img.manifestDigest}`);
    assert.equal(pinned.digest, img.manifestDigest);
    // A hosts.toml that leaves no host able to resolve says so.
    const none = await runtimeWith({ [`${portDir(upstream)}/hosts.toml`]: `capabilities = ["pull"]\n[host."http://${m.host}"]\n  capabilities = ["pull"]\n` });
    await pullFails(none, `${upstream}/berth/mirrored:1`, 'ERR_INVALID_ARGUMENT', /no host configured for .* may resolve .*hosts\.toml/);
  });

  test('a TLS registry with a private CA is trusted only through hosts.toml (ca, skip_verify), never by default', async (t) => {
    if (!ok) return t.skip();
    const r = tlsRegistry as TestRegistry;
    const ref = `${r.host}/berth/tls:1`;
    const untrusted = await runtimeWith({ [`${portDir(r.host)}/hosts.toml`]: `server = "https://${r.host}"\n` });
    await pullFails(untrusted, ref, 'ERR_NETWORK', /certificate/i);
    const withCa = await runtimeWith({ [`${portDir(r.host)}/hosts.toml`]: `server = "https://${r.host}"\nca = "${pki('ca.pem')}"\n` });
    assert.equal((await withCa.pullImage(ref)).digest, img.manifestDigest);
    // The CA is relative to hosts.toml, and serves a mirror as well (upstream down).
    const caMirror = await runtimeWith({
      [`${portDir(upstream)}/ca.pem`]: await fsp.readFile(pki('ca.pem'), 'utf8'),
      [`${portDir(upstream)}/hosts.toml`]: `[host."https://${r.host}"]\n  ca = "ca.pem"\n`,
    });
    assert.equal((await caMirror.pullImage(`${upstream}/berth/tls:1`)).digest, img.manifestDigest);
    const skip = await runtimeWith({ [`${portDir(r.host)}/hosts.toml`]: `server = "https://${r.host}"\nskip_verify = true\n` });
    assert.equal((await skip.pullImage(ref)).digest, img.manifestDigest);
  });

  test('NODE_EXTRA_CA_CERTS is honoured for registries, though bin/berth keeps node from parsing it at start (regression extra-ca-certs-parsed-at-every-start)', async (t) => {
    if (!ok) return t.skip();
    const r = tlsRegistry as TestRegistry;
    const ref = `${r.host}/berth/tls:1`;
    const launcher = path.resolve(path.dirname(CLI), '../../bin/berth');
    const base: NodeJS.ProcessEnv = { ...process.env };
    delete base['NODE_EXTRA_CA_CERTS'];
    delete base['BERTH_EXTRA_CA_CERTS'];
    /** `args` run as `bin/berth` or `node dist/src/cli.js`, in a fresh root (a present image would not be pulled again). */
    const run = async (how: 'launcher' | 'node', extra: NodeJS.ProcessEnv, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> => {
      const env = makeEnv('berth-issue14-extra-ca-');
      try {
        const hostsDir = path.join(env.dir, 'certs.d');
        await fsp.mkdir(path.join(hostsDir, portDir(r.host)), { recursive: true });
        await fsp.writeFile(path.join(hostsDir, portDir(r.host), 'hosts.toml'), `server = "https://${r.host}"\n`);
        const argv = ['--root', env.root, '--state', env.state, '--registry-hosts-dir', hostsDir, ...args];
        const [cmd, cmdArgs] = how === 'launcher' ? [launcher, argv] : [process.execPath, [CLI, ...argv]];
        const out = spawnSync(cmd, cmdArgs, { encoding: 'utf8', env: { ...base, ...extra }, timeout: 60_000 });
        return { code: out.status, stdout: out.stdout, stderr: out.stderr };
      } finally {
        await cleanupEnv(env);
      }
    };
    const pull = ['images', 'pull', ref];
    const ca = { NODE_EXTRA_CA_CERTS: pki('ca.pem') };
    for (const how of ['launcher', 'node'] as const) {
      const pulled = await run(how, ca, pull);
      assert.equal(pulled.code, 0, `${how}: ${pulled.stderr}`);
      assert.match(pulled.stdout, new RegExp(img.manifestDigest), how);
    }
    const untrusted = await run('launcher', {}, pull);
    assert.notEqual(untrusted.code, 0, 'without the extra CA the registry is not trusted');
    assert.match(untrusted.stderr, /certificate/i);
    // berth's own name for it works without the launcher too.
    const own = await run('node', { BERTH_EXTRA_CA_CERTS: pki('ca.pem') }, pull);
    assert.equal(own.code, 0, own.stderr);
    // Where the file is read shows in the warning for one that cannot be: node warns at its start,
    // berth (through the launcher) only once a registry connection needs it, and the pull is refused.
    const missing = { NODE_EXTRA_CA_CERTS: path.join(work, 'no-such-ca.pem') };
    const nodeStart = await run('node', missing, ['--version']);
    assert.match(nodeStart.stderr, /Ignoring extra certs from/, 'node itself parses the variable at start');
    const launcherStart = await run('launcher', missing, ['--version']);
    assert.equal(launcherStart.code, 0, launcherStart.stderr);
    assert.equal(launcherStart.stderr, '', 'through bin/berth node never reads the file');
    const launcherPull = await run('launcher', missing, pull);
    assert.notEqual(launcherPull.code, 0);
    assert.match(launcherPull.stderr, /Ignoring extra certs from `[^`]*no-such-ca\.pem` \(BERTH_EXTRA_CA_CERTS\), load failed/);
    assert.match(launcherPull.stderr, /certificate/i);
  });

  test('client certificates from hosts.toml are presented to a registry that requires them', async (t) => {
    if (!ok) return t.skip();
    const r = mtlsRegistry as TestRegistry;
    const ref = `${r.host}/berth/tls:1`;
    const noClient = await runtimeWith({ [`${portDir(r.host)}/hosts.toml`]: `server = "https://${r.host}"\nca = "${pki('ca.pem')}"\n` });
    await pullFails(noClient, ref, 'ERR_NETWORK');
    const withClient = await runtimeWith({
      [`${portDir(r.host)}/hosts.toml`]: `server = "https://${r.host}"\nca = "${pki('ca.pem')}"\nclient = [["${pki('client.cert')}", "${pki('client.key')}"]]\n`,
    });
    assert.equal((await withClient.pullImage(ref)).digest, img.manifestDigest);
  });

  test('P3 for mirrors: credentials by the mirror host only, never the upstream ones, and none on a redirect to another port', async (t) => {
    if (!ok) return t.skip();
    const m = mirror as TestRegistry;
    // "storage": where the mirror redirects blobs; records what it is sent and serves from the registry.
    const storageSeen: (string | undefined)[] = [];
    const storage = await serve(async (req, res) => {
      storageSeen.push(req.headers.authorization);
      await proxy(`${m.url}${req.url ?? ''}`, res);
    });
    // The mirror: basic auth, manifests proxied, blobs redirected to storage.
    const mirrorSeen: (string | undefined)[] = [];
    const good = `Basic ${b64('mirror-user:mirror-secret')}`;
    const authMirror = await serve(async (req, res) => {
      mirrorSeen.push(req.headers.authorization);
      if (req.headers.authorization !== good) {
        res.writeHead(401, { 'www-authenticate': 'Basic realm="mirror"' }).end();
        return;
      }
      const u = new URL(req.url ?? '/', 'http://x');
      if (u.pathname.includes('/blobs/')) {
        res.writeHead(307, { location: `http://127.0.0.1:${port(storage)}${u.pathname}` }).end();
        return;
      }
      await proxy(`${m.url}${u.pathname}`, res, req.headers.accept);
    });
    try {
      const mirrorHost = `127.0.0.1:${port(authMirror)}`;
      const hosts = { [`${portDir(upstream)}/hosts.toml`]: `[host."http://${mirrorHost}"]\n  capabilities = ["pull", "resolve"]\n` };
      const upstreamCred = { auth: b64('upstream-user:upstream-secret') };
      // Only the upstream has credentials: the mirror never sees them.
      const upstreamOnly = await runtimeWith(hosts, { registryConfig: { auths: { [upstream]: upstreamCred } } });
      await pullFails(upstreamOnly, `${upstream}/berth/mirrored:1`, 'ERR_NETWORK', new RegExp(`after http://${mirrorHost.replace(/\./g, '\\.')}: ERR_REGISTRY 401`));
      assert.ok(mirrorSeen.length > 0, 'the mirror was asked');
      assert.deepEqual(mirrorSeen.filter((a) => a !== undefined), [], 'no credential reached the mirror');
      // With credentials for the mirror host: sent to the mirror, not to the storage it redirects to.
      mirrorSeen.length = 0;
      const both = await runtimeWith(hosts, { registryConfig: { auths: { [upstream]: upstreamCred, [mirrorHost]: { auth: b64('mirror-user:mirror-secret') } } } });
      const local = await both.pullImage(`${upstream}/berth/mirrored:1`);
      assert.equal(local.digest, img.manifestDigest);
      assert.ok(mirrorSeen.includes(good), 'the mirror got its own credentials');
      assert.ok(mirrorSeen.every((a) => a === undefined || a === good), 'and never the upstream ones');
      assert.ok(storageSeen.length >= 2, `the blobs came through the redirect (${storageSeen.length})`);
      assert.deepEqual(storageSeen.filter((a) => a !== undefined), [], 'the redirect hop got no Authorization');
    } finally {
      storage.close();
      authMirror.close();
    }
  });
});

async function serve(handler: (req: IncomingMessage, res: ServerResponse) => Promise<void>): Promise<Server> {
  const srv = createServer((req, res) => {
    handler(req, res).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500);
      res.end(String(err));
    });
  });
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  return srv;
}

function port(srv: Server): number {
  return (srv.address() as AddressInfo).port;
}

/** GETs `url` (a loopback registry) and sends its answer on. */
async function proxy(url: string, res: ServerResponse, accept?: string): Promise<void> {
  const up = await request(url, { method: 'GET', headers: accept !== undefined ? { accept } : {} });
  const headers: Record<string, string> = {};
  for (const h of ['content-type', 'content-length', 'docker-content-digest', 'etag']) {
    const v = up.headers[h];
    if (typeof v === 'string') headers[h] = v;
  }
  res.writeHead(up.statusCode, headers);
  for await (const c of up.body) res.write(c);
  res.end();
}

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { X509Certificate, createPrivateKey, generateKeyPairSync, randomUUID, sign, type KeyObject } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, promises as fsp, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { buildBusyboxImage, pushImage, type BuiltImage } from '../../scripts/fixture-image.js';
import { htpasswdEntry, startRegistry, type TestRegistry } from '../helpers/registry.js';
import { requireE2E, requireTools } from '../helpers/prereq.js';
import { HOSTS_FILE, NETNS_ADDRESSES } from '../helpers/registry-guard-netns.js';
import { NETNS_SECRET, REALM_CASES, type RealmReport } from '../helpers/registry-auth-netns.js';
import {
  MEDIA,
  RegistryClient,
  credentialsFromDockerConfig,
  dockerConfigFile,
  parseReference,
  type CredentialSource,
  type ImageReference,
  type RegistryOptions,
} from '../../src/runtime/registry/index.js';
import { BerthError, type ErrorCode } from '../../src/lib/errors.js';
import { FakeClock } from '../../src/lib/clock.js';
import { createLogger } from '../../src/lib/log.js';
import { Runtime } from '../../src/runtime/index.js';
import { sha256 } from '../../src/lib/digest.js';

/**
 * Issue 14, registry authentication, against real parts on loopback:
 * - the real docker-registry with htpasswd basic auth (bcrypt entries made by the test);
 * - the real docker-registry with `auth: token`, its realm a token server in this file that mints
 *   RS256 JWTs signed by a key whose self-signed certificate (openssl) is the registry's
 *   rootcertbundle; the server counts requests, so caching, expiry and refresh are observable;
 * - loopback fronts that redirect to other loopback ports and record the headers they get:
 *   `Authorization` never leaves the registry's host:port;
 * - token realms rule P3 refuses, inside a network namespace of their own
 *   (test/helpers/registry-auth-netns.ts).
 * The image is the busybox fixture, pushed once to an open registry whose storage the
 * authenticated registries then serve.
 */

const USER = 'alice';
const PASSWORD = 'pw-SECRET-7f3a';
const SERVICE = 'berth-test-registry';
const ISSUER = 'berth-test-issuer';
const REPO = 'berth/demo';
const TAG = '1.0';
const CLIENT_OPTS: RegistryOptions = { retries: 1, headersTimeoutMs: 10_000, bodyTimeoutMs: 10_000 };

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');

async function readAll(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(Buffer.from(c as Uint8Array));
  return Buffer.concat(chunks);
}

async function rejectsWith(p: Promise<unknown>, code: ErrorCode, message?: RegExp): Promise<BerthError> {
  let caught: unknown;
  await assert.rejects(p, (err: unknown) => {
    caught = err;
    return true;
  });
  assert.ok(caught instanceof BerthError, `expected a BerthError, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  if (message !== undefined) assert.match(caught.message, message);
  return caught;
}

/** No secret, encoded secret or registry body in an error the user sees. */
function assertNoSecrets(err: BerthError, ...secrets: string[]): void {
  const text = `${err.message} ${JSON.stringify(err.details)}`;
  for (const s of [PASSWORD, b64(`${USER}:${PASSWORD}`), NETNS_SECRET, ...secrets]) assert.ok(!text.includes(s), `leaks ${s}: ${text}`);
  assert.ok(!/UNAUTHORIZED|"errors"/.test(text), `quotes the registry's body: ${text}`);
}

/** Fetches the manifest, the config and every layer, verifying each digest. */
async function pullAll(client: RegistryClient, ref: ImageReference, img: BuiltImage): Promise<void> {
  const m = await client.fetchManifest(ref, TAG);
  assert.equal(m.digest, img.manifestDigest);
  assert.deepEqual(await client.fetchSmallBlob(ref, { digest: img.configDigest, size: img.config.length }), img.config);
  for (const l of img.layers) assert.equal(sha256(await readAll(await client.fetchBlob(ref, l.digest))), l.digest);
}

function writeConfig(dir: string, name: string, doc: unknown): string {
  const file = join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify(doc), { mode: 0o600 });
  return file;
}

// ---------------------------------------------------------------------------------------------
// A token server (distribution's token auth spec) on loopback.

interface Signer {
  key: KeyObject;
  certPath: string;
  certDer: string;
}

/** An RSA key and its self-signed certificate, made with the openssl CLI (node:crypto cannot issue certificates). */
function makeSigner(dir: string): Signer {
  const keyPath = join(dir, 'token.key');
  const certPath = join(dir, 'token.crt');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyPath, '-out', certPath, '-days', '2', '-subj', '/CN=berth test token issuer'], {
    stdio: 'ignore',
  });
  const pem = readFileSync(certPath);
  return { key: createPrivateKey(readFileSync(keyPath)), certPath, certDer: new X509Certificate(pem).raw.toString('base64') };
}

/** A compact RS256 JWT whose header carries the signing certificate (x5c), as distribution 2.8 verifies it. */
function mintJwt(signer: Signer, claims: Record<string, unknown>): string {
  const enc = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');
  const input = `${enc({ typ: 'JWT', alg: 'RS256', x5c: [signer.certDer] })}.${enc(claims)}`;
  return `${input}.${sign('sha256', Buffer.from(input), signer.key).toString('base64url')}`;
}

interface TokenRequest {
  method: string;
  service: string | null;
  scopes: string[];
  authorization: string | undefined;
  form: Record<string, string> | undefined;
}

interface TokenPolicy {
  /** Required basic credentials; undefined: anonymous tokens are handed out. */
  basic?: { user: string; password: string };
  /** The refresh token a POST (OAuth2 refresh_token grant) must carry. */
  refreshToken?: string;
  /** `expires_in` in the answer; undefined leaves it out (the client then assumes 60 s). */
  expiresIn?: number;
  /** The JWT's `exp` is now + this (docker-registry adds 60 s of leeway). */
  jwtLifetimeS: number;
}

interface TokenServer {
  readonly url: string;
  readonly requests: TokenRequest[];
  /** Every token handed out. */
  readonly issued: Set<string>;
  policy: TokenPolicy;
  close(): Promise<void>;
}

async function startTokenServer(signer: Signer, policy: TokenPolicy): Promise<TokenServer> {
  const requests: TokenRequest[] = [];
  const issued = new Set<string>();
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://x');
      const form = req.method === 'POST' ? Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString('utf8'))) : undefined;
      const scopes = form !== undefined ? (form['scope'] ?? '').split(' ').filter((s) => s !== '') : url.searchParams.getAll('scope');
      requests.push({ method: req.method ?? '', service: form?.['service'] ?? url.searchParams.get('service'), scopes, authorization: req.headers.authorization, form });
      const p = s.policy;
      const deny = (): void => {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: `bad credentials ${PASSWORD}` }] }));
      };
      if (form !== undefined) {
        if (form['grant_type'] !== 'refresh_token' || p.refreshToken === undefined || form['refresh_token'] !== p.refreshToken) return deny();
      } else if (p.basic !== undefined && req.headers.authorization !== `Basic ${b64(`${p.basic.user}:${p.basic.password}`)}`) {
        return deny();
      }
      const now = Math.floor(Date.now() / 1000);
      const access = scopes.map((sc) => {
        const first = sc.indexOf(':');
        const last = sc.lastIndexOf(':');
        return { type: sc.slice(0, first), name: sc.slice(first + 1, last), actions: sc.slice(last + 1).split(',').filter((a) => a === 'pull') };
      });
      const token = mintJwt(signer, {
        iss: ISSUER,
        sub: p.basic?.user ?? '',
        aud: SERVICE,
        exp: now + p.jwtLifetimeS,
        nbf: now - 10,
        iat: now,
        jti: randomUUID(),
        access,
      });
      issued.add(token);
      const body: Record<string, unknown> = form !== undefined ? { access_token: token } : { token };
      if (p.expiresIn !== undefined) body['expires_in'] = p.expiresIn;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const s: TokenServer = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/token`,
    requests,
    issued,
    policy,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return s;
}

// ---------------------------------------------------------------------------------------------

describe('integration: registry authentication against docker-registry', { timeout: 300_000 }, () => {
  let ok = true;
  let dir: string;
  let storageDir: string;
  let img: BuiltImage;
  let signer: Signer;
  const anonymousFile = (): CredentialSource => dockerConfigFile(join(dir, 'no-such-dir', 'config.json'));

  before(async (t) => {
    ok = requireTools(t, ['docker-registry', 'openssl', 'busybox']) && requireTools(t, [commandOneOf(['htpasswd', 'perl'])]);
    if (!ok) return;
    dir = mkdtempSync(join(tmpdir(), 'berth-auth-'));
    storageDir = join(dir, 'storage');
    const open = await startRegistry({ storageDir });
    try {
      img = await buildBusyboxImage();
      await pushImage(open.url, REPO, TAG, img);
    } finally {
      await open.stop();
    }
    signer = makeSigner(dir);
  });

  after(() => {
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  describe('htpasswd basic auth', () => {
    let registry: TestRegistry | undefined;
    const ref = (): ImageReference => parseReference(`${registry?.host ?? ''}/${REPO}:${TAG}`);

    before(async () => {
      if (!ok) return;
      const htpasswd = join(dir, 'htpasswd');
      writeFileSync(htpasswd, `${await htpasswdEntry(USER, PASSWORD)}\n`);
      registry = await startRegistry({ storageDir, auth: { htpasswd: { path: htpasswd } } });
    });
    after(async () => {
      await registry?.stop();
    });

    test('without credentials: "authentication required for HOST", naming the file to fill in', async (t) => {
      if (!ok || registry === undefined) return t.skip();
      const client = new RegistryClient({ ...CLIENT_OPTS, credentials: anonymousFile() });
      t.after(() => client.close());
      const host = registry.host.replace(/\./g, '\\.');
      const err = await rejectsWith(
        client.fetchManifest(ref(), TAG),
        'ERR_REGISTRY',
        new RegExp(`^fetch manifest ${host}/berth/demo:1\\.0: authentication required for ${host}: no credentials for ${host} in ${join(dir, 'no-such-dir', 'config.json').replace(/\./g, '\\.')}; `),
      );
      assert.match(err.message, /docker login/);
      assert.match(err.message, /--registry-config/);
      assert.equal(err.details['auth'], 'required');
      assert.equal(err.details['status'], 401);
      assertNoSecrets(err);
    });

    test('a config.json "auth" entry pulls the whole image; username/password fields do too', async (t) => {
      if (!ok || registry === undefined) return t.skip();
      for (const entry of [{ auth: b64(`${USER}:${PASSWORD}`) }, { username: USER, password: PASSWORD }]) {
        const file = writeConfig(dir, 'basic-ok', { auths: { [registry.host]: entry } });
        const client = new RegistryClient({ ...CLIENT_OPTS, credentials: dockerConfigFile(file, { required: true }) });
        try {
          await pullAll(client, ref(), img);
        } finally {
          await client.close();
        }
      }
    });

    test('a wrong password: "authentication failed for HOST", naming where the credential came from, no secret', async (t) => {
      if (!ok || registry === undefined) return t.skip();
      const file = writeConfig(dir, 'basic-wrong', { auths: { [registry.host]: { auth: b64(`${USER}:wrong-SECRET`) } } });
      const client = new RegistryClient({ ...CLIENT_OPTS, credentials: dockerConfigFile(file) });
      t.after(() => client.close());
      const err = await rejectsWith(
        client.fetchBlob(ref(), img.configDigest),
        'ERR_REGISTRY',
        new RegExp(`authentication failed for ${registry.host.replace(/\./g, '\\.')}: the registry refused the credentials for \\S+ from ${file.replace(/\./g, '\\.')}; check`),
      );
      assert.equal(err.details['auth'], 'failed');
      assertNoSecrets(err, 'wrong-SECRET', b64(`${USER}:wrong-SECRET`));
    });

    test('credentials are keyed by exact host:port: an entry for another port of 127.0.0.1 is not sent', async (t) => {
      if (!ok || registry === undefined) return t.skip();
      const [h, port] = registry.host.split(':');
      const file = writeConfig(dir, 'basic-other-port', { auths: { [`${h ?? ''}:${Number(port) + 1}`]: { auth: b64(`${USER}:${PASSWORD}`) }, [h ?? '']: { auth: b64(`${USER}:${PASSWORD}`) } } });
      const client = new RegistryClient({ ...CLIENT_OPTS, credentials: dockerConfigFile(file) });
      t.after(() => client.close());
      await rejectsWith(client.fetchManifest(ref(), TAG), 'ERR_REGISTRY', /authentication required for/);
    });

    test('imagePullSecrets: a view with a secret pulls; the client without it still cannot, after sharing pools and state', async (t) => {
      if (!ok || registry === undefined) return t.skip();
      const client = new RegistryClient({ ...CLIENT_OPTS, credentials: anonymousFile() });
      t.after(() => client.close());
      const secret = credentialsFromDockerConfig(JSON.stringify({ auths: { [registry.host]: { auth: b64(`${USER}:${PASSWORD}`) } } }), 'imagePullSecret default/regcred');
      const withSecret = client.withCredentials(secret);
      await pullAll(withSecret, ref(), img);
      await withSecret.close(); // a view's close leaves the client's pools alone
      const err = await rejectsWith(client.fetchManifest(ref(), TAG), 'ERR_REGISTRY', /authentication required for \S+: no credentials for \S+ in \S+no-such-dir\/config\.json;/);
      assertNoSecrets(err);
      // A bad secret fails naming the secret, not the node's file.
      const bad = credentialsFromDockerConfig(JSON.stringify({ auths: { [registry.host]: { auth: b64(`${USER}:nope`) } } }), 'imagePullSecret default/stale');
      await rejectsWith(client.withCredentials(bad).fetchManifest(ref(), TAG), 'ERR_REGISTRY', /authentication failed for .* from imagePullSecret default\/stale;/);
    });
    test('through the runtime: the default $DOCKER_CONFIG/config.json is read on the 401 and the image is pulled', async (t) => {
      if (!ok || registry === undefined || !requireE2E(t)) return t.skip();
      const work = mkdtempSync(join(tmpdir(), 'berth-auth-rt-'));
      const saved = process.env['DOCKER_CONFIG'];
      const docker = join(work, 'docker');
      process.env['DOCKER_CONFIG'] = docker;
      let rt: Runtime | undefined;
      t.after(async () => {
        await rt?.close();
        if (saved === undefined) delete process.env['DOCKER_CONFIG'];
        else process.env['DOCKER_CONFIG'] = saved;
        rmSync(work, { recursive: true, force: true });
      });
      rt = await Runtime.open({ root: join(work, 'root'), state: join(work, 'state'), log: createLogger('silent') });
      const refText = `${registry.host}/${REPO}:${TAG}`;
      const err = await rejectsWith(rt.pullImage(refText), 'ERR_REGISTRY', new RegExp(`authentication required for .* in ${docker.replace(/\./g, '\\.')}/config\\.json;`));
      assertNoSecrets(err);
      // `docker login` meanwhile: the same runtime sees the file on the next pull.
      await fsp.mkdir(docker, { recursive: true });
      writeConfig(docker, 'config', { auths: { [registry.host]: { auth: b64(`${USER}:${PASSWORD}`) } } });
      const local = await rt.pullImage(refText);
      assert.equal(local.digest, img.manifestDigest);
    });
  });

  describe('token auth (Bearer) with a loopback token server', () => {
    let registry: TestRegistry | undefined;
    let tokens: TokenServer;
    const ref = (): ImageReference => parseReference(`${registry?.host ?? ''}/${REPO}:${TAG}`);
    const SCOPE = `repository:${REPO}:pull`;

    before(async () => {
      if (!ok) return;
      tokens = await startTokenServer(signer, { jwtLifetimeS: 300, expiresIn: 300 });
      registry = await startRegistry({
        storageDir,
        auth: { token: { realm: tokens.url, service: SERVICE, issuer: ISSUER, rootCertBundle: signer.certPath } },
      });
    });
    after(async () => {
      await registry?.stop();
      await tokens?.close();
    });
    const reset = (policy: TokenPolicy): void => {
      tokens.policy = policy;
      tokens.requests.length = 0;
    };

    test('anonymous: one token, asked with service and scope, serves the manifest and every blob', async (t) => {
      if (!ok || registry === undefined) return t.skip();
      reset({ jwtLifetimeS: 300, expiresIn: 300 });
      const client = new RegistryClient({ ...CLIENT_OPTS, credentials: anonymousFile() });
      t.after(() => client.close());
      await pullAll(client, ref(), img);
      assert.equal(tokens.requests.length, 1, JSON.stringify(tokens.requests));
      assert.deepEqual(tokens.requests[0], { method: 'GET', service: SERVICE, scopes: [SCOPE], authorization: undefined, form: undefined });
    });

    test('the cached token is reused for another blob, and refreshed once it expired (default 60 s without expires_in)', async (t) => {
      if (!ok || registry === undefined) return t.skip();
      reset({ jwtLifetimeS: 300 }); // no expires_in: the client assumes 60 s
      const clock = new FakeClock(Date.now());
      const client = new RegistryClient({ ...CLIENT_OPTS, credentials: anonymousFile(), clock });
      t.after(() => client.close());
      await client.fetchManifest(ref(), TAG);
      assert.equal(tokens.requests.length, 1);
      const [first, second] = img.layers;
      assert.ok(first !== undefined && second !== undefined);
      await readAll(await client.fetchBlob(ref(), first.digest));
      assert.equal(tokens.requests.length, 1, 'a second request reuses the token');
      clock.advance(50_000);
      await readAll(await client.fetchBlob(ref(), second.digest));
      assert.equal(tokens.requests.length, 1, 'still fresh 50 s in');
      clock.advance(11_000);
      await readAll(await client.fetchBlob(ref(), second.digest));
      assert.equal(tokens.requests.length, 2, 'expired after 60 s (less the margin): a new token, asked before the request');
      await client.fetchSmallBlob(ref(), { digest: img.configDigest, size: img.config.length });
      assert.equal(tokens.requests.length, 2);
    });

    test('a cached token the registry stops accepting is replaced once, on its 401', async (t) => {
      if (!ok || registry === undefined) return t.skip();
      // The JWT dies (exp + 60 s leeway) ~2 s from now although the answer promises 300 s.
      reset({ jwtLifetimeS: -58, expiresIn: 300 });
      const client = new RegistryClient({ ...CLIENT_OPTS, credentials: anonymousFile() });
      t.after(() => client.close());
      await client.fetchManifest(ref(), TAG);
      assert.equal(tokens.requests.length, 1);
      await new Promise((r) => setTimeout(r, 3_200));
      tokens.policy = { jwtLifetimeS: 300, expiresIn: 300 };
      await readAll(await client.fetchBlob(ref(), img.configDigest));
      assert.equal(tokens.requests.length, 2, 'the refused token was replaced');
    });

    test('a token the registry refuses as soon as it is issued: one token request, then a clear error', async (t) => {
      if (!ok || registry === undefined) return t.skip();
      reset({ jwtLifetimeS: -300, expiresIn: 300 });
      const client = new RegistryClient({ ...CLIENT_OPTS, credentials: anonymousFile() });
      t.after(() => client.close());
      const err = await rejectsWith(client.fetchManifest(ref(), TAG), 'ERR_REGISTRY', /authentication required for 127\.0\.0\.1:\d+: no credentials for/);
      assert.equal(tokens.requests.length, 1, 'no loop of token requests');
      for (const tok of tokens.issued) assertNoSecrets(err, tok);
    });

    test('a token server that wants credentials: anonymous is "required", config.json basic works, a wrong one "failed"', async (t) => {
      if (!ok || registry === undefined) return t.skip();
      reset({ jwtLifetimeS: 300, expiresIn: 300, basic: { user: USER, password: PASSWORD } });
      const anon = new RegistryClient({ ...CLIENT_OPTS, credentials: anonymousFile() });
      t.after(() => anon.close());
      const err = await rejectsWith(
        anon.fetchManifest(ref(), TAG),
        'ERR_REGISTRY',
        new RegExp(`authentication required for \\S+ \\(the token realm ${tokens.url.replace(/\./g, '\\.')} answered 401\\): no credentials`),
      );
      assertNoSecrets(err);

      const file = writeConfig(dir, 'token-basic', { auths: { [registry.host]: { auth: b64(`${USER}:${PASSWORD}`) } } });
      const client = new RegistryClient({ ...CLIENT_OPTS, credentials: dockerConfigFile(file) });
      t.after(() => client.close());
      tokens.requests.length = 0;
      await pullAll(client, ref(), img);
      assert.equal(tokens.requests.length, 1);
      assert.equal(tokens.requests[0]?.authorization, `Basic ${b64(`${USER}:${PASSWORD}`)}`, 'the realm got the basic credentials');

      const wrongFile = writeConfig(dir, 'token-wrong', { auths: { [registry.host]: { username: USER, password: 'wrong-SECRET' } } });
      const wrong = new RegistryClient({ ...CLIENT_OPTS, credentials: dockerConfigFile(wrongFile) });
      t.after(() => wrong.close());
      const failed = await rejectsWith(wrong.fetchManifest(ref(), TAG), 'ERR_REGISTRY', /authentication failed for \S+ \(the token realm \S+ answered 401\): the registry refused the credentials/);
      assertNoSecrets(failed, 'wrong-SECRET');
    });

    test('an identitytoken is exchanged with an OAuth2 refresh_token POST', async (t) => {
      if (!ok || registry === undefined) return t.skip();
      reset({ jwtLifetimeS: 300, expiresIn: 300, refreshToken: 'refresh-SECRET-1' });
      const file = writeConfig(dir, 'identity', { auths: { [registry.host]: { auth: b64('<token>:'), identitytoken: 'refresh-SECRET-1' } } });
      const client = new RegistryClient({ ...CLIENT_OPTS, credentials: dockerConfigFile(file) });
      t.after(() => client.close());
      await pullAll(client, ref(), img);
      assert.equal(tokens.requests.length, 1);
      const r = tokens.requests[0];
      assert.equal(r?.method, 'POST');
      assert.equal(r?.authorization, undefined);
      assert.deepEqual(r?.form, { grant_type: 'refresh_token', refresh_token: 'refresh-SECRET-1', client_id: 'berth', service: SERVICE, scope: SCOPE });

      writeConfig(dir, 'identity', { auths: { [registry.host]: { identitytoken: 'revoked-SECRET' } } });
      const revoked = new RegistryClient({ ...CLIENT_OPTS, credentials: dockerConfigFile(file) });
      t.after(() => revoked.close());
      const err = await rejectsWith(revoked.fetchManifest(ref(), TAG), 'ERR_REGISTRY', /authentication failed for/);
      assertNoSecrets(err, 'revoked-SECRET', 'refresh-SECRET-1');
    });
  });
});

// ---------------------------------------------------------------------------------------------

interface Seen {
  server: string;
  url: string;
  authorization: string | undefined;
}

async function listen(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ server: Server; port: number }> {
  const server = createServer(handler);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port };
}

const FRONT_MANIFEST = Buffer.from(
  JSON.stringify({ schemaVersion: 2, mediaType: MEDIA.ociManifest, config: { mediaType: MEDIA.ociConfig, digest: sha256('config'), size: 6 }, layers: [] }),
);
const BLOB_A = Buffer.from('blob A, served by storage on another port');
const BLOB_B = Buffer.from('blob B, served by the front under the name localhost');
const BLOB_C = Buffer.from('blob C, storage answering 401 with its own challenge');

for (const scheme of ['bearer', 'basic'] as const) {
  describe(`integration: redirects with ${scheme} auth keep Authorization on the registry's host:port only`, { timeout: 60_000 }, () => {
    const seen: Seen[] = [];
    let front: { server: Server; port: number };
    let storage: { server: Server; port: number };
    let tokens: TokenServer | undefined;
    let cfgDir: string;
    let client: RegistryClient;
    const ref = (): ImageReference => parseReference(`127.0.0.1:${front.port}/repo/x:tag`);

    before(async () => {
      cfgDir = mkdtempSync(join(tmpdir(), 'berth-auth-front-'));
      if (scheme === 'bearer') {
        // Tokens are opaque to the front; it accepts exactly the ones its token server issued.
        const fakeSigner: Signer = { key: generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey, certPath: '', certDer: '' };
        tokens = await startTokenServer(fakeSigner, { jwtLifetimeS: 300, expiresIn: 300, basic: { user: USER, password: PASSWORD } });
      }
      const authorized = (req: IncomingMessage): boolean => {
        const a = req.headers.authorization;
        if (scheme === 'basic') return a === `Basic ${b64(`${USER}:${PASSWORD}`)}`;
        return a !== undefined && a.startsWith('Bearer ') && (tokens?.issued.has(a.slice(7)) ?? false);
      };
      storage = await listen((req, res) => {
        seen.push({ server: 'storage', url: req.url ?? '', authorization: req.headers.authorization });
        if (req.url?.startsWith('/c/') === true) {
          res.writeHead(401, { 'www-authenticate': `Bearer realm="${tokens?.url ?? `http://127.0.0.1:${storage.port}/token`}",service="storage"`, 'content-length': '0' });
          res.end();
          return;
        }
        res.writeHead(200, { 'content-length': String(BLOB_A.length) });
        res.end(BLOB_A);
      });
      front = await listen((req, res) => {
        const url = req.url ?? '';
        seen.push({ server: 'front', url, authorization: req.headers.authorization });
        if (url.startsWith('/open/')) {
          res.writeHead(200, { 'content-length': String(BLOB_B.length) });
          res.end(BLOB_B);
          return;
        }
        if (!authorized(req)) {
          const challenge = scheme === 'basic' ? 'Basic realm="front"' : `Bearer realm="${tokens?.url ?? ''}",service="front",scope="repository:repo/x:pull"`;
          res.writeHead(401, { 'www-authenticate': challenge, 'content-type': 'application/json' });
          res.end('{"errors":[{"code":"UNAUTHORIZED"}]}');
          return;
        }
        const redirect = (location: string): void => {
          res.writeHead(307, { location, 'content-length': '0' });
          res.end();
        };
        if (url === '/v2/repo/x/manifests/tag') return redirect('/v2/repo/x/same-origin/manifest');
        if (url === '/v2/repo/x/same-origin/manifest') {
          res.writeHead(200, { 'content-type': MEDIA.ociManifest, 'content-length': String(FRONT_MANIFEST.length) });
          res.end(FRONT_MANIFEST);
          return;
        }
        if (url === `/v2/repo/x/blobs/${sha256(BLOB_A)}`) return redirect(`http://127.0.0.1:${storage.port}/a/blob?sig=s`);
        if (url === `/v2/repo/x/blobs/${sha256(BLOB_B)}`) return redirect(`http://localhost:${front.port}/open/b`);
        if (url === `/v2/repo/x/blobs/${sha256(BLOB_C)}`) return redirect(`http://127.0.0.1:${storage.port}/c/blob`);
        res.writeHead(404, { 'content-length': '0' });
        res.end();
      });
      const file = writeConfig(cfgDir, 'config', { auths: { [`127.0.0.1:${front.port}`]: { auth: b64(`${USER}:${PASSWORD}`) } } });
      client = new RegistryClient({ ...CLIENT_OPTS, credentials: dockerConfigFile(file) });
    });

    after(async () => {
      await client.close();
      for (const s of [front.server, storage.server]) {
        s.closeAllConnections();
        s.close();
      }
      await tokens?.close();
      rmSync(cfgDir, { recursive: true, force: true });
    });

    test('same-origin hops keep it; another port and another host name for the same port get none', async () => {
      const m = await client.fetchManifest(ref(), 'tag');
      assert.deepEqual(m.bytes, FRONT_MANIFEST);
      assert.deepEqual(await readAll(await client.fetchBlob(ref(), sha256(BLOB_A))), BLOB_A);
      assert.deepEqual(await readAll(await client.fetchBlob(ref(), sha256(BLOB_B))), BLOB_B);
      const sameOrigin = seen.filter((s) => s.url === '/v2/repo/x/same-origin/manifest');
      assert.equal(sameOrigin.length, 1);
      assert.match(sameOrigin[0]?.authorization ?? '', scheme === 'basic' ? /^Basic / : /^Bearer /, 'kept on the same host:port');
      const elsewhere = seen.filter((s) => s.server === 'storage' || s.url.startsWith('/open/'));
      assert.deepEqual(elsewhere.map((s) => s.url), ['/a/blob?sig=s', '/open/b']);
      for (const s of elsewhere) assert.equal(s.authorization, undefined, `${s.server} ${s.url} got Authorization`);
      if (tokens !== undefined) {
        assert.equal(tokens.requests.length, 1, 'one token for the manifest and both blobs');
        assert.equal(tokens.requests[0]?.authorization, `Basic ${b64(`${USER}:${PASSWORD}`)}`);
      }
    });

    test('a 401 from a redirect hop is not a challenge: no token request, no credential, a plain error', async () => {
      const before = tokens?.requests.length ?? 0;
      const err = await rejectsWith(client.fetchBlob(ref(), sha256(BLOB_C)), 'ERR_REGISTRY', new RegExp(`401 from http://127\\.0\\.0\\.1:${storage.port}/c/blob$`));
      assertNoSecrets(err);
      assert.equal(tokens?.requests.length ?? 0, before);
      for (const s of seen.filter((x) => x.url.startsWith('/c/'))) assert.equal(s.authorization, undefined);
    });
  });
}

describe('integration: token realm answers berth refuses', { timeout: 60_000 }, () => {
  test('an unparseable realm, a redirecting realm and a realm answering garbage are ERR_REGISTRY naming the realm, not retried', async (t) => {
    let realm = '';
    let realmRequests = 0;
    let registryRequests = 0;
    const realmServer = await listen((req, res) => {
      realmRequests++;
      if (req.url?.startsWith('/redirect') === true) {
        res.writeHead(302, { location: 'http://127.0.0.1:1/elsewhere', 'content-length': '0' });
        res.end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(`{"token": "${PASSWORD}`);
    });
    const registry = await listen((_req, res) => {
      registryRequests++;
      res.writeHead(401, { 'www-authenticate': `Bearer realm="${realm}",service="s"`, 'content-length': '0' });
      res.end();
    });
    const cfg = mkdtempSync(join(tmpdir(), 'berth-auth-realm-'));
    t.after(() => {
      for (const s of [realmServer.server, registry.server]) {
        s.closeAllConnections();
        s.close();
      }
      rmSync(cfg, { recursive: true, force: true });
    });
    const cases: [string, RegExp][] = [
      ['http://[zz/token', /names an unparseable token realm$/],
      [`http://127.0.0.1:${realmServer.port}/redirect?sig=SECRET`, new RegExp(`token realm http://127\\.0\\.0\\.1:${realmServer.port}/redirect\\?\\[redacted\\] answered 302 \\(a redirect; berth does not follow`)],
      [`http://127.0.0.1:${realmServer.port}/garbage`, /token realm \S+\/garbage: answer is not JSON$/],
    ];
    for (const [r, re] of cases) {
      realm = r;
      realmRequests = 0;
      registryRequests = 0;
      const client = new RegistryClient({ ...CLIENT_OPTS, retries: 2, credentials: dockerConfigFile(join(cfg, 'none.json')) });
      try {
        const err = await rejectsWith(client.fetchManifest(parseReference(`127.0.0.1:${registry.port}/repo/x:tag`), 'tag'), 'ERR_REGISTRY', re);
        assertNoSecrets(err);
      } finally {
        await client.close();
      }
      assert.equal(registryRequests, 1, r);
      assert.ok(realmRequests <= 1, r);
    }
  });

  test('a token realm that fails with 503 is retried with the GET, then the pull succeeds', async (t) => {
    let realmCalls = 0;
    const realmServer = await listen((_req, res) => {
      realmCalls++;
      if (realmCalls === 1) {
        res.writeHead(503, { 'content-length': '0' });
        res.end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ token: 'good-token', expires_in: 300 }));
    });
    const registry = await listen((req, res) => {
      if (req.headers.authorization !== 'Bearer good-token') {
        res.writeHead(401, { 'www-authenticate': `Bearer realm="http://127.0.0.1:${realmServer.port}/token",service="s"`, 'content-length': '0' });
        res.end();
        return;
      }
      res.writeHead(200, { 'content-type': MEDIA.ociManifest, 'content-length': String(FRONT_MANIFEST.length) });
      res.end(FRONT_MANIFEST);
    });
    const cfg = mkdtempSync(join(tmpdir(), 'berth-auth-realm-'));
    const client = new RegistryClient({ ...CLIENT_OPTS, retries: 2, credentials: dockerConfigFile(join(cfg, 'none.json')) });
    t.after(async () => {
      await client.close();
      for (const s of [realmServer.server, registry.server]) {
        s.closeAllConnections();
        s.close();
      }
      rmSync(cfg, { recursive: true, force: true });
    });
    const m = await client.fetchManifest(parseReference(`127.0.0.1:${registry.port}/repo/x:tag`), 'tag');
    assert.deepEqual(m.bytes, FRONT_MANIFEST);
    assert.equal(realmCalls, 2);
  });
  test('a registry that moved its realm: the expired token is asked at the old realm, the 401 names the new one, which is asked once', async (t) => {
    const calls = { a: 0, b: 0 };
    const realmOf = (name: 'a' | 'b'): Promise<{ server: Server; port: number }> =>
      listen((_req, res) => {
        calls[name]++;
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ token: `${name}-token-${calls[name]}`, expires_in: 60 }));
      });
    const a = await realmOf('a');
    const b = await realmOf('b');
    let current: 'a' | 'b' = 'a';
    const registry = await listen((req, res) => {
      const port = current === 'a' ? a.port : b.port;
      if (!(req.headers.authorization ?? '').startsWith(`Bearer ${current}-token-`)) {
        res.writeHead(401, { 'www-authenticate': `Bearer realm="http://127.0.0.1:${port}/token",service="s",scope="repository:repo/x:pull"`, 'content-length': '0' });
        res.end();
        return;
      }
      res.writeHead(200, { 'content-type': MEDIA.ociManifest, 'content-length': String(FRONT_MANIFEST.length) });
      res.end(FRONT_MANIFEST);
    });
    const cfg = mkdtempSync(join(tmpdir(), 'berth-auth-realm-'));
    const clock = new FakeClock(Date.now());
    const client = new RegistryClient({ ...CLIENT_OPTS, clock, credentials: dockerConfigFile(join(cfg, 'none.json')) });
    t.after(async () => {
      await client.close();
      for (const s of [a.server, b.server, registry.server]) {
        s.closeAllConnections();
        s.close();
      }
      rmSync(cfg, { recursive: true, force: true });
    });
    const ref = parseReference(`127.0.0.1:${registry.port}/repo/x:tag`);
    await client.fetchManifest(ref, 'tag');
    assert.deepEqual(calls, { a: 1, b: 0 });
    clock.advance(61_000);
    current = 'b';
    await client.fetchManifest(ref, 'tag');
    assert.deepEqual(calls, { a: 2, b: 1 }, 'old realm asked before the request (expired token), new realm after its 401');
    await client.fetchManifest(ref, 'tag');
    assert.deepEqual(calls, { a: 2, b: 1 }, 'the new token is cached');
  });
});

describe('integration: token realms rule P3 refuses, inside a network namespace of their own', { timeout: 120_000 }, () => {
  test('every forbidden realm is refused with its reason, not retried, and nothing connects', async (t) => {
    if (process.getuid?.() !== 0) {
      if (process.env['CI'] === 'true' || process.env['CI'] === '1') assert.fail('needs root for unshare -n -m');
      t.skip('needs root for unshare -n -m');
      return;
    }
    if (!requireTools(t, ['unshare', 'ip', 'mount'])) return;
    const dir = mkdtempSync(join(tmpdir(), 'berth-p3-realm-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const hosts = join(dir, 'hosts');
    await fsp.writeFile(hosts, HOSTS_FILE);
    const script = fileURLToPath(new URL('../helpers/registry-auth-netns.js', import.meta.url));
    const setup = ['set -e', 'ip link set lo up', ...NETNS_ADDRESSES.map((a) => `ip addr add ${a} dev lo`), 'mount --bind "$1" /etc/hosts', 'exec "$2" "$3"'].join('\n');
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile('unshare', ['-n', '-m', '--propagation', 'private', 'sh', '-c', setup, 'sh', hosts, process.execPath, script], { timeout: 100_000, maxBuffer: 4 << 20 }, (err, out, errOut) => {
        if (err !== null) reject(new Error(`netns child failed: ${err.message}\n${errOut}`));
        else resolve(out);
      });
    });
    const report = JSON.parse(stdout) as RealmReport;
    assert.deepEqual(report.interfaces, ['lo'], 'the child ran with loopback only');
    assert.equal(report.outcomes.length, REALM_CASES.length);
    for (const c of REALM_CASES) {
      const o = report.outcomes.find((x) => x.name === c.name);
      assert.ok(o !== undefined, c.name);
      const seen = JSON.stringify(o);
      assert.equal(o.fetched, false, seen);
      assert.equal(o.registryRequests, 1, `the registry is asked once: ${seen}`);
      assert.ok(!(o.message ?? '').includes(NETNS_SECRET) && !(o.message ?? '').includes('SECRET'), `no secret in the message: ${seen}`);
      if (c.expect === 'refused') {
        assert.equal(o.code, 'ERR_FORBIDDEN', seen);
        assert.match(o.message ?? '', /^fetch blob \S+: refusing token realm .*\(rule P3\)$/, seen);
        assert.match(o.message ?? '', new RegExp(c.reason ?? '.'), seen);
        assert.deepEqual(o.connects, [], `nothing may connect: ${seen}`);
      } else {
        // The trap hangs up: a network error, retried (retries: 2) against the remembered realm.
        assert.equal(o.code, 'ERR_NETWORK', seen);
        assert.match(o.message ?? '', /token realm/, seen);
        assert.equal(o.connects.length, 3, `three attempts reached the realm: ${seen}`);
        const to = c.connectsTo ?? [];
        assert.ok(o.connects.every((a) => to.some((x) => a.startsWith(`${x}:`))), `connected only to ${to.join(' or ')}: ${seen}`);
      }
    }
  });
});

/** The first of `names` on the PATH, for requireTools' message (htpasswd, else perl's crypt). */
function commandOneOf(names: readonly string[]): string {
  for (const n of names) {
    try {
      execFileSync('sh', ['-c', `command -v ${n}`], { stdio: 'ignore' });
      return n;
    } catch {
      // next
    }
  }
  return names.join(' or ');
}

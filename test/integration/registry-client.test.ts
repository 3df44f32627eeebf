import { after, afterEach, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { request } from 'undici';
import { MAX_MANIFEST_BYTES, MEDIA, RegistryClient, credentialsFromDockerConfig, parseReference, type RegistryOptions } from '../../src/runtime/registry/index.js';
import { BerthError, type ErrorCode } from '../../src/lib/errors.js';
import { sha256 } from '../../src/lib/digest.js';

/**
 * RegistryClient against an in-process HTTP server on 127.0.0.1 that each test scripts
 * response by response (rule P4 retries, P1 limits, P2 schema1/digests, P3 redirects).
 *
 * Network rule: only loopback is ever contacted. A guard wraps net.connect/tls.connect
 * (the functions undici's connector calls) for the whole file: it records every host
 * asked for and throws, before any packet leaves, for anything that is not loopback.
 * It also maps the reserved name `registry.test` (RFC 6761) to 127.0.0.1, which gives
 * the tests a registry that is *not* loopback by name without touching DNS.
 */

const require = createRequire(import.meta.url);
type ConnectFn = (...args: unknown[]) => unknown;
const netModule = require('node:net') as { connect: ConnectFn };
const tlsModule = require('node:tls') as { connect: ConnectFn };
const realNetConnect = netModule.connect;
const realTlsConnect = tlsModule.connect;
const FAKE_REMOTE = 'registry.test';
const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);
/** Every host undici asked to connect to, in order. */
const connectHosts: string[] = [];

function guard(real: ConnectFn): ConnectFn {
  return function guarded(this: unknown, ...args: unknown[]): unknown {
    const opts = args[0];
    if (typeof opts === 'object' && opts !== null && 'host' in opts) {
      const host = String((opts as { host: unknown }).host);
      connectHosts.push(host);
      if (host === FAKE_REMOTE) {
        args[0] = { ...opts, host: '127.0.0.1' };
      } else if (!LOOPBACK.has(host)) {
        throw new Error(`network guard: test tried to connect to ${host}`);
      }
    } else {
      throw new Error('network guard: connect without a host option');
    }
    return real.apply(this, args);
  };
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
}

/** A loopback HTTP server answering from a per-test script, then with `fallback`. */
interface ScriptedServer {
  /** `127.0.0.1:PORT` */
  readonly host: string;
  readonly port: number;
  readonly seen: SeenRequest[];
  /** Queues handlers, one per request, in order. */
  script(...handlers: Handler[]): void;
  /** Answers every request once the script is used up. */
  fallback: Handler;
  close(): Promise<void>;
}

function reply(status: number, body: string | Buffer = '', headers: Record<string, string> = {}): Handler {
  return (_req, res) => {
    res.writeHead(status, { 'content-length': String(Buffer.byteLength(body)), ...headers });
    res.end(body);
  };
}

const unscripted: Handler = reply(418, 'unscripted request');

async function startScripted(): Promise<ScriptedServer> {
  const queue: Handler[] = [];
  const seen: SeenRequest[] = [];
  const server: Server = createServer((req, res) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    res.on('error', () => undefined);
    (queue.shift() ?? s.fallback)(req, res);
  });
  // Clients that give up mid-body (the 4 MiB limit) reset the socket; that is expected.
  server.on('clientError', (_err, socket) => socket.destroy());
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  const s: ScriptedServer = {
    host: `127.0.0.1:${port}`,
    port,
    seen,
    script: (...handlers) => void queue.push(...handlers),
    fallback: unscripted,
    close: async () => {
      server.closeAllConnections();
      if (server.listening) await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return s;
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

async function readAll(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(Buffer.from(c as Uint8Array));
  return Buffer.concat(chunks);
}

const MANIFEST = Buffer.from(
  JSON.stringify({
    schemaVersion: 2,
    mediaType: MEDIA.ociManifest,
    config: { mediaType: MEDIA.ociConfig, digest: sha256('config'), size: 6 },
    layers: [],
  }),
);
const MANIFEST_DIGEST = sha256(MANIFEST);
const ok = (body: Buffer = MANIFEST, headers: Record<string, string> = {}): Handler =>
  reply(200, body, { 'content-type': MEDIA.ociManifest, ...headers });

/** Small timeouts and `retries: 2` (3 attempts, at most ~1.8 s of backoff) keep every case short. */
const CLIENT_OPTS: RegistryOptions = { retries: 2, headersTimeoutMs: 5_000, bodyTimeoutMs: 5_000 };

describe('integration: registry client against a fault-injecting loopback server', { timeout: 60_000 }, () => {
  let srv: ScriptedServer;
  let client: RegistryClient;
  const extraServers: ScriptedServer[] = [];
  const extraClients: RegistryClient[] = [];
  const ref = (): ReturnType<typeof parseReference> => parseReference(`${srv.host}/repo/x:tag`);

  before(() => {
    netModule.connect = guard(realNetConnect);
    tlsModule.connect = guard(realTlsConnect);
  });

  after(() => {
    netModule.connect = realNetConnect;
    tlsModule.connect = realTlsConnect;
    const foreign = connectHosts.filter((h) => !LOOPBACK.has(h) && h !== FAKE_REMOTE);
    assert.deepEqual(foreign, [], 'only loopback may ever be contacted');
  });

  beforeEach(async () => {
    srv = await startScripted();
    client = new RegistryClient(CLIENT_OPTS);
  });

  afterEach(async () => {
    await client.close();
    for (const c of extraClients.splice(0)) await c.close();
    await srv.close();
    for (const s of extraServers.splice(0)) await s.close();
  });

  test('the network guard sees undici connects and stops non-loopback ones before they start', { timeout: 10_000 }, async () => {
    const t0 = Date.now();
    await assert.rejects(request('http://203.0.113.5/v2/'), /network guard: test tried to connect to 203\.0\.113\.5/);
    assert.ok(Date.now() - t0 < 2_000, 'refused synchronously, no connect timeout');
    assert.equal(connectHosts.at(-1), '203.0.113.5');
    connectHosts.pop(); // this one was deliberate; the after hook checks that no other test tried
  });

  test('the reference maps to /v2/<path>/manifests/<tag> with the four supported media types accepted', { timeout: 10_000 }, async () => {
    srv.script(ok());
    const m = await client.fetchManifest(ref(), 'tag');
    assert.equal(m.digest, MANIFEST_DIGEST);
    assert.equal(m.mediaType, MEDIA.ociManifest);
    assert.deepEqual(m.bytes, MANIFEST);
    assert.equal(srv.seen.length, 1);
    assert.equal(srv.seen[0]?.method, 'GET');
    assert.equal(srv.seen[0]?.url, '/v2/repo/x/manifests/tag');
    const accept = String(srv.seen[0]?.headers.accept);
    for (const t of [MEDIA.ociIndex, MEDIA.ociManifest, MEDIA.dockerList, MEDIA.dockerManifest]) assert.ok(accept.includes(t), accept);
    assert.ok(!accept.includes(MEDIA.dockerSchema1), 'schema1 must not be asked for');
  });

  test('503 twice then 200: retried, succeeds, and the server saw 3 requests', { timeout: 10_000 }, async () => {
    srv.script(reply(503, 'busy'), reply(503, 'busy'), ok());
    const m = await client.fetchManifest(ref(), 'tag');
    assert.equal(m.digest, MANIFEST_DIGEST);
    assert.equal(srv.seen.length, 3);
  });

  test('regression tag-check-downloads-manifest: resolving a tag is one HEAD read by its Docker-Content-Digest; GET only without it or when HEAD is refused', { timeout: 10_000 }, async () => {
    srv.script(reply(200, '', { 'docker-content-digest': MANIFEST_DIGEST, 'content-type': MEDIA.ociManifest }));
    assert.equal(await client.resolveDigest(ref(), 'tag'), MANIFEST_DIGEST);
    assert.deepEqual(srv.seen.map((r) => r.method), ['HEAD']);
    srv.seen.length = 0;
    srv.script(reply(200, ''), ok());
    assert.equal(await client.resolveDigest(ref(), 'tag'), MANIFEST_DIGEST);
    assert.deepEqual(srv.seen.map((r) => r.method), ['HEAD', 'GET']);
    srv.seen.length = 0;
    srv.script(reply(405, ''), ok());
    assert.equal(await client.resolveDigest(ref(), 'tag'), MANIFEST_DIGEST);
    assert.deepEqual(srv.seen.map((r) => r.method), ['HEAD', 'GET']);
  });

  test('429 then 200: retried and succeeds', { timeout: 10_000 }, async () => {
    srv.script(reply(429, 'slow down', { 'retry-after': '0' }), ok());
    const m = await client.fetchManifest(ref(), 'tag');
    assert.equal(m.digest, MANIFEST_DIGEST);
    assert.equal(srv.seen.length, 2);
  });

  test('regression retry-after-cut-short: a 429 asking for an hour is not retried within the call; the error says so', { timeout: 10_000 }, async () => {
    srv.script(reply(429, 'slow down', { 'retry-after': '3600' }), ok());
    const err = await rejectsWith(client.fetchManifest(ref(), 'tag'), 'ERR_REGISTRY', /Retry-After 3600 s/);
    assert.equal(err.details['retryAfterMs'], 3_600_000);
    assert.equal(srv.seen.length, 1);
  });

  test('a permanent 500 is ERR_REGISTRY after the retry budget (retries: 2 = 3 requests)', { timeout: 10_000 }, async () => {
    srv.fallback = reply(500, 'internal error');
    const err = await rejectsWith(client.fetchManifest(ref(), 'tag'), 'ERR_REGISTRY', /500/);
    assert.equal(err.details['status'], 500);
    assert.equal(srv.seen.length, 3);
  });

  test('404 is ERR_NOT_FOUND naming the reference, and is not retried', { timeout: 10_000 }, async () => {
    srv.script(reply(404, '{"errors":[{"code":"MANIFEST_UNKNOWN"}]}'));
    const err = await rejectsWith(client.fetchManifest(ref(), 'tag'), 'ERR_NOT_FOUND');
    assert.ok(err.message.includes(`${srv.host}/repo/x:tag`), err.message);
    assert.equal(srv.seen.length, 1);
  });

  test('regression: an endless error body is not read to the end (bounded memory)', { timeout: 10_000 }, async () => {
    let sent = 0;
    srv.script((_req, res) => {
      res.writeHead(404, { 'content-type': 'text/plain' });
      const chunk = Buffer.alloc(64 * 1024, 0x41);
      const pump = (): void => {
        // Stops once the client hangs up; a full read would be 256 MiB.
        while (sent < 256 * 1024 * 1024 && !res.destroyed) {
          sent += chunk.length;
          if (!res.write(chunk)) {
            res.once('drain', pump);
            return;
          }
        }
        res.end();
      };
      res.on('close', () => undefined);
      pump();
    });
    const err = await rejectsWith(client.fetchManifest(ref(), 'tag'), 'ERR_NOT_FOUND');
    assert.ok(err.message.length < 2048, `message is bounded (${err.message.length} chars)`);
    assert.ok(sent < 64 * 1024 * 1024, `client stopped reading early (server sent ${sent} bytes)`);
  });

  test('401 without credentials is ERR_REGISTRY "authentication required", without the body, not retried', { timeout: 10_000 }, async () => {
    const c = new RegistryClient({ ...CLIENT_OPTS, credentials: credentialsFromDockerConfig('{}', 'test config.json') });
    extraClients.push(c);
    srv.script(reply(401, '{"errors":[{"code":"UNAUTHORIZED"}]}', { 'www-authenticate': 'Basic realm="r"' }));
    const err = await rejectsWith(c.fetchManifest(ref(), 'tag'), 'ERR_REGISTRY', /authentication required for 127\.0\.0\.1:\d+: no credentials for .* in test config\.json/);
    assert.equal(err.details['status'], 401);
    assert.ok(!err.message.includes('UNAUTHORIZED'));
    assert.equal(srv.seen.length, 1);
  });

  test('a manifest fetched by digest whose bytes hash differently is ERR_DIGEST_MISMATCH', { timeout: 10_000 }, async () => {
    const other = Buffer.from(MANIFEST.toString('utf8').replace('"layers":[]', '"layers": []'));
    srv.script(ok(other));
    const err = await rejectsWith(client.fetchManifest(ref(), MANIFEST_DIGEST), 'ERR_DIGEST_MISMATCH', new RegExp(sha256(other)));
    assert.equal(err.details['digest'], MANIFEST_DIGEST);
    assert.equal(srv.seen[0]?.url, `/v2/repo/x/manifests/${MANIFEST_DIGEST}`);
    // Control: the right bytes under the same digest are accepted.
    srv.script(ok());
    assert.equal((await client.fetchManifest(ref(), MANIFEST_DIGEST)).digest, MANIFEST_DIGEST);
  });

  test('a Docker-Content-Digest header that disagrees with the bytes is ERR_DIGEST_MISMATCH', { timeout: 10_000 }, async () => {
    srv.script(ok(MANIFEST, { 'docker-content-digest': sha256('something else') }));
    await rejectsWith(client.fetchManifest(ref(), 'tag'), 'ERR_DIGEST_MISMATCH', /Docker-Content-Digest/);
    srv.script(ok(MANIFEST, { 'docker-content-digest': MANIFEST_DIGEST }));
    assert.equal((await client.fetchManifest(ref(), 'tag')).digest, MANIFEST_DIGEST);
  });

  test('schema1 Content-Types are ERR_UNSUPPORTED', { timeout: 10_000 }, async () => {
    const schema1 = Buffer.from(JSON.stringify({ schemaVersion: 1, name: 'repo/x', tag: 'tag', fsLayers: [] }));
    for (const ct of [MEDIA.dockerSchema1, MEDIA.dockerSchema1Signed, `${MEDIA.dockerSchema1Signed}; charset=utf-8`]) {
      srv.script(reply(200, schema1, { 'content-type': ct }));
      await rejectsWith(client.fetchManifest(ref(), 'tag'), 'ERR_UNSUPPORTED', /schema1/);
    }
  });

  test('a manifest body of 4 MiB + 1 is ERR_INVALID_IMAGE; exactly 4 MiB is read', { timeout: 15_000 }, async () => {
    srv.script(ok(Buffer.alloc(MAX_MANIFEST_BYTES + 1, 0x20)));
    await rejectsWith(client.fetchManifest(ref(), 'tag'), 'ERR_INVALID_IMAGE', /limit/);
    assert.equal(srv.seen.length, 1, 'an oversized document is terminal, not retried');
    const exact = Buffer.alloc(MAX_MANIFEST_BYTES, 0x20);
    srv.script(ok(exact));
    const m = await client.fetchManifest(ref(), 'tag');
    assert.equal(m.bytes.length, MAX_MANIFEST_BYTES);
    assert.equal(m.digest, sha256(exact));
  });

  test('a 307 to a second loopback server is followed and the blob arrives', { timeout: 10_000 }, async () => {
    const storage = await startScripted();
    extraServers.push(storage);
    const blob = Buffer.from('layer bytes from the storage backend');
    const d = sha256(blob);
    srv.script(reply(307, '', { location: `http://${storage.host}/store/${d.slice(7)}?sig=secret` }));
    storage.script(reply(200, blob, { 'content-type': 'application/octet-stream' }));
    const body = await client.fetchBlob(ref(), d);
    assert.deepEqual(await readAll(body), blob);
    assert.equal(srv.seen[0]?.url, `/v2/repo/x/blobs/${d}`);
    assert.equal(storage.seen.length, 1);
    assert.equal(storage.seen[0]?.url, `/store/${d.slice(7)}?sig=secret`);
  });

  test('a redirect to http://203.0.113.5 is refused before connecting (ERR_FORBIDDEN "refusing redirect", terminal)', { timeout: 10_000 }, async () => {
    const before = connectHosts.length;
    const d = sha256('blob');
    srv.script(reply(307, '', { location: 'http://203.0.113.5/store/blob?X-Amz-Signature=secret' }));
    const err = await rejectsWith(client.fetchBlob(ref(), d), 'ERR_FORBIDDEN', /refusing redirect/);
    assert.ok(!err.message.includes('secret'), `query strings are redacted: ${err.message}`);
    assert.equal(srv.seen.length, 1, 'a refused redirect is terminal, not retried');
    assert.ok(!connectHosts.slice(before).includes('203.0.113.5'), 'the client must not even try to connect');
  });

  test('fetchSmallBlob verifies size and digest (ERR_DIGEST_MISMATCH)', { timeout: 10_000 }, async () => {
    const blob = Buffer.from('{"rootfs":{"type":"layers","diff_ids":[]}}');
    const desc = { digest: sha256(blob), size: blob.length };
    srv.script(reply(200, blob));
    assert.deepEqual(await client.fetchSmallBlob(ref(), desc), blob);
    assert.equal(srv.seen[0]?.url, `/v2/repo/x/blobs/${desc.digest}`);

    // Same size, different bytes.
    srv.script(reply(200, Buffer.from(blob.toString('utf8').replace('layers', 'LAYERS'))));
    await rejectsWith(client.fetchSmallBlob(ref(), desc), 'ERR_DIGEST_MISMATCH');
    // Right bytes, wrong declared size (the body is short for the descriptor).
    srv.script(reply(200, blob));
    await rejectsWith(client.fetchSmallBlob(ref(), { digest: desc.digest, size: blob.length + 1 }), 'ERR_DIGEST_MISMATCH');
    // A descriptor over the document limit is refused before any request.
    const n = srv.seen.length;
    await rejectsWith(client.fetchSmallBlob(ref(), { digest: desc.digest, size: MAX_MANIFEST_BYTES + 1 }), 'ERR_INVALID_IMAGE');
    assert.equal(srv.seen.length, n);
  });

  test('regression: fetchSmallBlob reports a body longer than the descriptor as ERR_DIGEST_MISMATCH', { timeout: 10_000 }, async () => {
    // It used to surface readLimited's ERR_INVALID_IMAGE (terminal), while the content
    // store reports the same fault, more bytes than the descriptor, as ERR_DIGEST_MISMATCH.
    const blob = Buffer.from('{"rootfs":{"type":"layers","diff_ids":[]}}');
    srv.script(reply(200, Buffer.concat([blob, Buffer.from('trailing')])));
    await rejectsWith(client.fetchSmallBlob(ref(), { digest: sha256(blob), size: blob.length }), 'ERR_DIGEST_MISMATCH');
  });

  test('a socket closed mid-headers is retried (ERR_NETWORK path) and the next attempt succeeds', { timeout: 10_000 }, async () => {
    const cut: Handler = (req) => {
      req.socket.write('HTTP/1.1 200 OK\r\nContent-Ty');
      req.socket.destroy();
    };
    srv.script(cut, ok());
    const m = await client.fetchManifest(ref(), 'tag');
    assert.equal(m.digest, MANIFEST_DIGEST);
    assert.equal(srv.seen.length, 2);
  });

  test('a socket that always closes mid-headers is ERR_NETWORK after the retry budget', { timeout: 10_000 }, async () => {
    srv.fallback = (req) => {
      req.socket.write('HTTP/1.1 200 OK\r\nContent-Ty');
      req.socket.destroy();
    };
    const err = await rejectsWith(client.fetchManifest(ref(), 'tag'), 'ERR_NETWORK');
    assert.ok(err.cause !== undefined, 'the undici error is kept as the cause');
    assert.equal(srv.seen.length, 3);
  });

  test('regression: a redirect from a non-loopback registry to a loopback host is refused', { timeout: 10_000 }, async () => {
    // Rule P3: redirect hops must not reach loopback unless the registry itself is loopback.
    // This used to be allowed for plain http, so any registry could make berth GET
    // http://127.0.0.1:<anything>/ (SSRF). `registry.test` is mapped to 127.0.0.1 by the guard.
    const internal = await startScripted();
    extraServers.push(internal);
    internal.fallback = reply(200, 'internal service');
    const remote = `${FAKE_REMOTE}:${srv.port}`;
    const c = new RegistryClient({ ...CLIENT_OPTS, insecureHosts: [remote] });
    extraClients.push(c);
    const r = parseReference(`${remote}/repo/x:tag`);
    const d = sha256('blob');
    // Control: the same registry's own (non-redirect) answers are fine.
    srv.script(reply(200, 'blob'));
    assert.equal((await readAll(await c.fetchBlob(r, d))).toString(), 'blob');

    srv.script(reply(307, '', { location: `http://${internal.host}/admin` }));
    await rejectsWith(c.fetchBlob(r, d), 'ERR_FORBIDDEN', /refusing redirect/);
    srv.script(reply(302, '', { location: `https://${internal.host}/admin` }));
    await rejectsWith(c.fetchBlob(r, d), 'ERR_FORBIDDEN', /refusing redirect/);
    srv.script(reply(307, '', { location: `http://localhost:${internal.port}/admin` }));
    await rejectsWith(c.fetchBlob(r, d), 'ERR_FORBIDDEN', /refusing redirect/);
    assert.equal(internal.seen.length, 0, 'the loopback service was never contacted');
  });

  test('regression: fetchManifest honours its abort signal', { timeout: 10_000 }, async () => {
    // The signal argument used to be ignored (`void signal`), so cancelling a pull left the
    // manifest fetch waiting for the headers timeout on every retry.
    srv.fallback = () => undefined; // hold every request open
    const ac = new AbortController();
    const t0 = Date.now();
    setTimeout(() => ac.abort(new Error('pull cancelled')), 100);
    await assert.rejects(client.fetchManifest(ref(), 'tag', ac.signal), (err: unknown) => {
      assert.ok(!(err instanceof BerthError && err.code === 'ERR_NETWORK'), `an abort is not a network fault to retry: ${String(err)}`);
      return true;
    });
    assert.ok(Date.now() - t0 < 3_000, `aborted promptly (${Date.now() - t0} ms)`);
    assert.equal(srv.seen.length, 1, 'an aborted fetch is not retried');
    // An already aborted signal sends nothing.
    await assert.rejects(client.fetchManifest(ref(), 'tag', AbortSignal.abort()));
    assert.equal(srv.seen.length, 1);
  });
});

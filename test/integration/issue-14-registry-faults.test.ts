import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdtempSync, promises as fsp } from 'node:fs';
import { createServer, request as httpRequest, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildBusyboxImage, ociImageOf, pushImage, type BuiltImage, type BuiltLayer } from '../../scripts/fixture-image.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, CLI, type BerthEnv } from '../helpers/berth.js';
import { file, layerOf, tarOf } from '../helpers/hostile.js';
import { Runtime } from '../../src/runtime/index.js';
import { ContentStore, PARTIAL_KEEP_MS } from '../../src/runtime/content/index.js';
import { RegistryClient, parseReference } from '../../src/runtime/registry/index.js';
import { createLogger, type Logger } from '../../src/lib/log.js';
import { pino } from 'pino';
import { digestHex, sha256, type Digest } from '../../src/lib/digest.js';
import { isCode } from '../helpers/codes.js';

/**
 * Issue 14 / 15 "registry faults": a loopback fault proxy (node http) in front of the real
 * docker-registry, faulting blob GETs request by request. Each case's outcome is documented in
 * docs/registry-faults.md: resumed with Range, retried, or a coded error — never a bad blob
 * committed.
 */

/** What the proxy does with one blob GET. */
type Fault =
  | { kind: 'cut'; at: number } // headers and `at` of the body, then the socket is closed
  | { kind: 'stall'; at: number } // headers and `at` of the body, then nothing (the socket stays open)
  | { kind: 'hold'; at: number; until: Promise<void> } // headers and `at` of the body, the rest once `until` settles
  | { kind: 'status'; status: number; headers?: Record<string, string> } // an error answer, upstream never asked
  | { kind: 'hang' } // no headers, ever
  | { kind: 'corrupt' } // the right length, one byte flipped in the middle
  | { kind: 'lie-long' } // Content-Length says 4 KiB more than the body; the socket closes after the body
  | { kind: 'lie-short'; at: number } // Content-Length says `at` of the body and only that is sent (a complete response), then close
  | { kind: 'no-range' } // upstream is asked without Range/If-Range: a server that ignores Range (200)
  | { kind: 'shift-range'; by: number }; // upstream is asked for `by` bytes earlier than the client asked: a 206 for another range

interface Seen {
  digest: string;
  /** 1 for the first GET of this digest, then 2, … */
  nth: number;
  range: string | undefined;
  ifRange: string | undefined;
  at: number;
  status: number;
  /** Body bytes the proxy sent. */
  sent: number;
}

interface FaultProxy {
  readonly host: string;
  readonly seen: Seen[];
  /** Forgets what was seen and faults the nth GET of a blob as `plan` says (undefined: pass through). */
  arm(plan: (digest: string, nth: number) => Fault | undefined): void;
  of(digest: string): Seen[];
  close(): Promise<void>;
}

async function faultProxy(upstream: { host: string; port: number }): Promise<FaultProxy> {
  const seen: Seen[] = [];
  const counts = new Map<string, number>();
  let plan: (digest: string, nth: number) => Fault | undefined = () => undefined;
  const proxy: FaultProxy = {
    host: '',
    seen,
    arm(p) {
      seen.length = 0;
      counts.clear();
      plan = p;
    },
    of: (d) => seen.filter((s) => s.digest === d),
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close').catch(() => undefined);
    },
  };
  const forward = (req: IncomingMessage, headers: Record<string, string>): Promise<{ status: number; headers: Record<string, string>; body: Buffer }> =>
    new Promise((resolve, reject) => {
      const up = httpRequest({ host: upstream.host, port: upstream.port, method: req.method ?? 'GET', path: req.url ?? '/', headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const h: Record<string, string> = {};
          for (const [k, v] of Object.entries(res.headers)) if (typeof v === 'string' && !['connection', 'keep-alive', 'transfer-encoding'].includes(k)) h[k] = v;
          resolve({ status: res.statusCode ?? 502, headers: h, body: Buffer.concat(chunks) });
        });
        res.on('error', reject);
      });
      up.on('error', reject);
      up.end();
    });
  const server = createServer((req, res) => {
    void (async () => {
      const digest = /\/blobs\/(sha256:[a-f0-9]{64})$/.exec(req.url ?? '')?.[1];
      const headers: Record<string, string> = {};
      for (const k of ['accept', 'range', 'if-range', 'authorization']) {
        const v = req.headers[k];
        if (typeof v === 'string') headers[k] = v;
      }
      if (digest === undefined) {
        const up = await forward(req, headers);
        res.writeHead(up.status, up.headers);
        res.end(up.body);
        return;
      }
      const nth = (counts.get(digest) ?? 0) + 1;
      counts.set(digest, nth);
      const s: Seen = { digest, nth, range: headers['range'], ifRange: headers['if-range'], at: Date.now(), status: 0, sent: 0 };
      seen.push(s);
      const fault = plan(digest, nth);
      if (fault?.kind === 'hang') return;
      if (fault?.kind === 'status') {
        s.status = fault.status;
        res.writeHead(fault.status, { 'content-type': 'application/json', ...fault.headers });
        res.end('{"errors":[{"code":"UNAVAILABLE"}]}');
        return;
      }
      if (fault?.kind === 'no-range') {
        delete headers['range'];
        delete headers['if-range'];
      }
      if (fault?.kind === 'shift-range') {
        const from = Number(/^bytes=(\d+)-$/.exec(headers['range'] ?? '')?.[1] ?? 'NaN');
        assert.ok(Number.isFinite(from) && from >= fault.by, `shift-range needs a Range request, got ${String(headers['range'])}`);
        headers['range'] = `bytes=${from - fault.by}-`;
        delete headers['if-range'];
      }
      const up = await forward(req, headers);
      s.status = up.status;
      let body = up.body;
      const h = { ...up.headers, 'content-length': String(body.length) };
      switch (fault?.kind) {
        case 'cut':
        case 'stall': {
          const part = body.subarray(0, Math.floor(body.length * fault.at));
          res.writeHead(up.status, h);
          res.write(part, () => {
            s.sent = part.length;
            // The bytes are in the kernel's hands; closing a moment later lets them all arrive.
            if (fault.kind === 'cut') setTimeout(() => res.destroy(), 50);
          });
          return;
        }
        case 'hold': {
          const cut = Math.floor(body.length * fault.at);
          res.writeHead(up.status, h);
          res.write(body.subarray(0, cut));
          await fault.until;
          res.end(body.subarray(cut));
          s.sent = body.length;
          return;
        }
        case 'lie-long':
          res.writeHead(up.status, { ...h, 'content-length': String(body.length + 4096) });
          res.write(body, () => {
            s.sent = body.length;
            setTimeout(() => res.destroy(), 50);
          });
          return;
        case 'lie-short': {
          const part = body.subarray(0, Math.floor(body.length * fault.at));
          // No `Connection: close`: undici 7 throws an uncatchable assertion when a connection-close
          // response ends while its body is paused by backpressure (nodejs/undici#5360, fixed in 8).
          res.writeHead(up.status, { ...h, 'content-length': String(part.length) });
          res.end(part, () => {
            s.sent = part.length;
            setTimeout(() => res.socket?.destroy(), 50);
          });
          return;
        }
        case 'corrupt':
          body = Buffer.from(body);
          body[body.length >> 1] = (body[body.length >> 1] ?? 0) ^ 0xff;
          break;
        default:
          break;
      }
      res.writeHead(up.status, h);
      res.end(body);
      s.sent = body.length;
    })().catch((err: unknown) => {
      res.destroy(err instanceof Error ? err : new Error(String(err)));
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  (proxy as { host: string }).host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return proxy;
}

/** A hostile.ts layer as fixture-image's BuiltLayer. */
const built = (l: ReturnType<typeof layerOf>): BuiltLayer => ({ digest: l.digest, size: l.size, diffId: l.diffId, data: l.blob, mediaType: l.mediaType });

/** busybox (two small layers) with `extra` layers on top, its config's diff_ids (and history, when given) extended. */
async function busyboxWith(extra: readonly BuiltLayer[], history?: string): Promise<BuiltImage> {
  const base = await buildBusyboxImage();
  const cfg = JSON.parse(base.config.toString()) as { rootfs: { diff_ids: string[] }; history?: unknown[] };
  cfg.rootfs.diff_ids.push(...extra.map((l) => l.diffId));
  if (history !== undefined) cfg.history?.push({ created: '2024-01-01T00:00:00Z', created_by: history });
  return ociImageOf(Buffer.from(JSON.stringify(cfg)), [...base.layers, ...extra]);
}

/** busybox (two small layers) plus a 12 MiB layer of random bytes (gzip cannot shrink it): a cut is mid-body. */
async function buildBigImage(): Promise<{ img: BuiltImage; big: BuiltLayer }> {
  const big = built(layerOf(tarOf(file('data/random.bin', randomBytes(12 * 1024 * 1024)))));
  return { img: await busyboxWith([big], 'issue-14 fault suite: 12 MiB of random bytes'), big };
}


describe('issue 14: registry faults through a loopback proxy in front of docker-registry', { timeout: 600_000 }, () => {
  let registry: TestRegistry | undefined;
  let proxy: FaultProxy | undefined;
  let img: BuiltImage;
  let big: BuiltLayer;
  let work: string;
  let ok = true;
  let n = 0;
  const ref = (): string => `${proxy?.host ?? ''}/berth/big:1.0`;
  const blobPath = (root: string, d: Digest): string => path.join(root, 'content/blobs/sha256', digestHex(d));
  const partialPath = (root: string, d: Digest): string => path.join(root, 'content/ingest', digestHex(d));

  /** A fresh runtime (own root and state) for one case; closed when the test ends. */
  async function fresh(t: { after: (fn: () => Promise<void>) => void }, log?: Logger): Promise<{ rt: Runtime; root: string }> {
    const root = path.join(work, `root-${++n}`);
    const rt = await Runtime.open({ root, state: path.join(work, `state-${n}`), log: log ?? createLogger('silent') });
    t.after(() => rt.close());
    return { rt, root };
  }

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    work = mkdtempSync(path.join(os.tmpdir(), 'berth-faults-'));
    registry = await startRegistry();
    ({ img, big } = await buildBigImage());
    await pushImage(registry.url, 'berth/big', '1.0', img);
    const [host, port] = registry.host.split(':');
    proxy = await faultProxy({ host: host ?? '127.0.0.1', port: Number(port) });
  });

  after(async () => {
    await proxy?.close();
    await registry?.stop();
    if (work !== undefined) await fsp.rm(work, { recursive: true, force: true });
  });

  test('a body cut at 60 % is resumed with Range: only the missing bytes are sent, and the blob verifies', async (t) => {
    if (!ok || proxy === undefined) return t.skip();
    const p = proxy;
    p.arm((d, nth) => (d === big.digest && nth === 1 ? { kind: 'cut', at: 0.6 } : undefined));
    const { rt, root } = await fresh(t);
    const local = await rt.pullImage(ref());
    assert.equal(local.digest, img.manifestDigest);
    const [first, second, ...rest] = p.of(big.digest);
    assert.ok(first !== undefined && second !== undefined, 'two requests for the big layer');
    assert.equal(rest.length, 0);
    assert.equal(first.range, undefined);
    const cut = Math.floor(big.size * 0.6);
    assert.equal(first.sent, cut);
    // Everything the proxy sent before the cut was written, so the resume point is the cut.
    assert.equal(second.range, `bytes=${cut}-`);
    assert.equal(second.status, 206);
    assert.equal(second.sent, big.size - cut, 'only the missing bytes were sent');
    // docker-registry gives an ETag: the second request of the same pull carries it as If-Range.
    assert.match(second.ifRange ?? '', /^"sha256:[a-f0-9]{64}"$/);
    assert.ok((await fsp.readFile(blobPath(root, big.digest))).equals(big.data), 'the stored blob is byte for byte the layer');
    assert.deepEqual(await fsp.readdir(path.join(root, 'content/ingest')), [], 'nothing left in ingest');
  });

  test('a layer is extracted while it downloads: with its body held at 50 %, the first half is already unpacked', async (t) => {
    if (!ok || proxy === undefined) return t.skip();
    const p = proxy;
    let release!: () => void;
    const until = new Promise<void>((r) => (release = r));
    t.after(() => release());
    p.arm((d, nth) => (d === big.digest && nth === 1 ? { kind: 'hold', at: 0.5, until } : undefined));
    const { rt, root } = await fresh(t);
    const pull = rt.pullImage(ref());
    pull.catch(() => undefined);
    // The layer's one file (12 MiB of random bytes) grows in the snapshot's temp directory while
    // the registry still holds back half of the blob.
    const snapshots = path.join(root, 'snapshots');
    let unpacked = 0;
    for (let i = 0; i < 200 && unpacked < 4 * 1024 * 1024; i++) {
      await sleep(50);
      for (const d of await fsp.readdir(snapshots).catch(() => [] as string[])) {
        if (!d.startsWith('tmp-')) continue;
        const st = await fsp.stat(path.join(snapshots, d, 'fs/data/random.bin')).catch(() => undefined);
        if (st !== undefined) unpacked = Math.max(unpacked, st.size);
      }
    }
    assert.equal(existsSync(blobPath(root, big.digest)), false, 'the blob is not committed yet');
    assert.ok(unpacked >= 4 * 1024 * 1024, `${unpacked} bytes of the layer's file were written before its blob was complete`);
    release();
    const local = await pull;
    assert.equal(local.digest, img.manifestDigest);
    assert.ok((await fsp.readFile(blobPath(root, big.digest))).equals(big.data), 'the stored blob is byte for byte the layer');
    assert.equal(p.of(big.digest).length, 1, 'one request: nothing fetched twice');
  });

  test('regression: unstarted-layer-hangs-pull — a layer that fails while later layers have not started downloading ends the pull', async (t) => {
    // Five layers, three downloads at a time: the first fails at once (404), the next two never
    // answer, the last two never start. Their unpacks waited for a download that never came.
    if (!ok || proxy === undefined || registry === undefined) return t.skip();
    const p = proxy;
    const five = await busyboxWith([1, 2, 3].map((n) => built(layerOf(tarOf(file(`extra/${n}.bin`, randomBytes(4096)))))));
    await pushImage(registry.url, 'berth/five', '1.0', five);
    const { layers } = five;
    const [first, second, third] = layers;
    assert.ok(first !== undefined && second !== undefined && third !== undefined && layers.length === 5);
    p.arm((d) => (d === first.digest ? { kind: 'status', status: 404 } : d === second.digest || d === third.digest ? { kind: 'hang' } : undefined));
    const { rt } = await fresh(t);
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      rt.pullImage(`${p.host}/berth/five:1.0`).then(
        () => 'pulled',
        (err: Error & { code?: string }) => `${err.code ?? ''}: ${err.message}`,
      ),
      new Promise<string>((r) => (timer = setTimeout(() => r('still pulling after 20 s'), 20_000))),
    ]);
    clearTimeout(timer);
    assert.match(outcome, /^ERR_NOT_FOUND: /);
    assert.ok(outcome.includes(first.digest), outcome);
    assert.equal(p.of(layers[3]?.digest ?? '').length + p.of(layers[4]?.digest ?? '').length, 0, 'the last two layers were never asked for');
  });

  test('regression sibling-failure-drops-partials: a layer that uses up its retries keeps the partial downloads of the others, and the next pull resumes them', async (t) => {
    if (!ok || proxy === undefined) return t.skip();
    const p = proxy;
    let release!: () => void;
    const until = new Promise<void>((r) => (release = r));
    t.after(() => release());
    const failing = img.layers[0];
    assert.ok(failing !== undefined && failing.digest !== big.digest);
    // The big layer is held at half its body; the first layer is cut at every attempt.
    p.arm((d, nth) => (d === big.digest && nth === 1 ? { kind: 'hold', at: 0.5, until } : d === failing.digest ? { kind: 'cut', at: 0 } : undefined));
    const { rt, root } = await fresh(t);
    await assert.rejects(rt.pullImage(ref()), (err: Error & { code?: string }) => err.code === 'ERR_NETWORK' && err.message.includes(failing.digest));
    assert.equal(p.of(failing.digest).length, 3, 'the failing layer used up its attempts');
    const half = Math.floor(big.size * 0.5);
    const kept = await fsp.stat(partialPath(root, big.digest)).catch(() => undefined);
    assert.ok(kept !== undefined && kept.size >= half, `the big layer's partial is kept (${kept?.size ?? 'gone'})`);
    release();
    p.arm(() => undefined);
    const local = await rt.pullImage(ref());
    assert.equal(local.digest, img.manifestDigest);
    const again = p.of(big.digest);
    assert.equal(again.length, 1);
    assert.equal(again[0]?.range, `bytes=${kept.size}-`, 'the next pull resumed it');
    assert.ok((await fsp.readFile(blobPath(root, big.digest))).equals(big.data));
  });

  test('kill -9 of `berth images pull` mid-download, then a new pull: it asks for the rest with Range', async (t) => {
    if (!ok || proxy === undefined) return t.skip();
    const p = proxy;
    // The first GET of the big layer sends half the body and then nothing: a download in progress.
    p.arm((d, nth) => (d === big.digest && nth === 1 ? { kind: 'stall', at: 0.5 } : undefined));
    const env: BerthEnv = { root: path.join(work, 'root-kill'), state: path.join(work, 'state-kill'), dir: work };
    const child = spawn(process.execPath, [CLI, '--root', env.root, '--state', env.state, 'images', 'pull', '-q', ref()], { stdio: 'ignore' });
    const exited = once(child, 'exit');
    const partial = partialPath(env.root, big.digest);
    const deadline = Date.now() + 60_000;
    let have = 0;
    while (Date.now() < deadline) {
      have = (await fsp.stat(partial).catch(() => undefined))?.size ?? 0;
      const sent = p.of(big.digest)[0]?.sent ?? 0;
      if (sent >= big.size * 0.3 && have >= big.size * 0.3) break;
      await sleep(20);
    }
    assert.ok(have >= big.size * 0.3, `berth wrote ${have} of ${big.size} bytes before the kill`);
    child.kill('SIGKILL');
    await exited;
    assert.equal(child.signalCode, 'SIGKILL');
    const kept = (await fsp.stat(partial)).size;
    assert.ok(kept >= big.size * 0.3 && kept < big.size, `the partial file survives the kill (${kept} bytes)`);

    p.arm(() => undefined);
    const r = await berth(env, ['images', 'pull', '-q', ref()]);
    assert.equal(r.code, 0, r.stderr);
    const [again, ...rest] = p.of(big.digest);
    assert.ok(again !== undefined, 'the new pull asked for the big layer');
    assert.equal(rest.length, 0);
    assert.equal(again.range, `bytes=${kept}-`, 'the new process resumed from the bytes the killed one had written');
    assert.equal(again.status, 206);
    assert.equal(again.sent, big.size - kept);
    assert.ok((await fsp.readFile(blobPath(env.root, big.digest))).equals(big.data));
    assert.equal(existsSync(partial), false);
  });

  test('503 once, then success: retried, the pull succeeds', async (t) => {
    if (!ok || proxy === undefined) return t.skip();
    const p = proxy;
    p.arm((d, nth) => (d === big.digest && nth === 1 ? { kind: 'status', status: 503 } : undefined));
    const { rt, root } = await fresh(t);
    assert.equal((await rt.pullImage(ref())).digest, img.manifestDigest);
    assert.deepEqual(p.of(big.digest).map((s) => s.status), [503, 200]);
    assert.ok((await fsp.readFile(blobPath(root, big.digest))).equals(big.data));
  });

  test('429 with Retry-After: 1 once: the next request waits about a second, the pull succeeds', async (t) => {
    if (!ok || proxy === undefined) return t.skip();
    const p = proxy;
    p.arm((d, nth) => (d === big.digest && nth === 1 ? { kind: 'status', status: 429, headers: { 'retry-after': '1' } } : undefined));
    const { rt } = await fresh(t);
    assert.equal((await rt.pullImage(ref())).digest, img.manifestDigest);
    const [first, second] = p.of(big.digest);
    assert.ok(first !== undefined && second !== undefined);
    assert.deepEqual([first.status, second.status], [429, 200]);
    assert.ok(second.at - first.at >= 900, `waited ${second.at - first.at} ms after Retry-After: 1`);
  });

  test('headers that never come: ERR_NETWORK naming the header timeout, within the configured bound', async (t) => {
    if (!ok || proxy === undefined) return t.skip();
    const p = proxy;
    p.arm((d) => (d === big.digest ? { kind: 'hang' } : undefined));
    // The façade keeps the 30 s default; the client takes a short one (RegistryOptions).
    const client = new RegistryClient({ headersTimeoutMs: 300, retries: 1 });
    t.after(() => client.close());
    const started = Date.now();
    await assert.rejects(client.fetchBlobFrom(parseReference(ref()), big), isCode('ERR_NETWORK', /no response headers within 300 ms/, new RegExp(big.digest)));
    const took = Date.now() - started;
    assert.equal(p.of(big.digest).length, 2, 'one retry');
    // Two header timeouts and one backoff (at most 600 ms): well under 3 s.
    assert.ok(took >= 600 && took < 3000, `took ${took} ms`);
  });

  test('a body that does not hash to its digest: ERR_DIGEST_MISMATCH, nothing committed, no partial kept', async (t) => {
    if (!ok || proxy === undefined) return t.skip();
    const p = proxy;
    p.arm((d) => (d === big.digest ? { kind: 'corrupt' } : undefined));
    const { rt, root } = await fresh(t);
    await assert.rejects(rt.pullImage(ref()), isCode('ERR_DIGEST_MISMATCH', new RegExp(big.digest)));
    assert.equal(p.of(big.digest).length, 1, 'wrong bytes are not fetched again within the pull');
    assert.equal(existsSync(blobPath(root, big.digest)), false, 'nothing under the digest');
    assert.equal(existsSync(partialPath(root, big.digest)), false, 'the partial is removed');
    assert.equal(rt.localImage(ref()), undefined);
    // The registry heals: the same store pulls the image.
    p.arm(() => undefined);
    assert.equal((await rt.pullImage(ref())).digest, img.manifestDigest);
    assert.ok((await fsp.readFile(blobPath(root, big.digest))).equals(big.data));
  });

  test('a resumed body that does not verify: fetched once more from zero, and the pull succeeds', async (t) => {
    if (!ok || proxy === undefined) return t.skip();
    const p = proxy;
    p.arm((d, nth) => (d !== big.digest ? undefined : nth === 1 ? { kind: 'cut', at: 0.6 } : nth === 2 ? { kind: 'corrupt' } : undefined));
    const { rt, root } = await fresh(t);
    assert.equal((await rt.pullImage(ref())).digest, img.manifestDigest);
    const seen = p.of(big.digest);
    assert.deepEqual(seen.map((s) => s.range), [undefined, `bytes=${Math.floor(big.size * 0.6)}-`, undefined]);
    assert.ok((await fsp.readFile(blobPath(root, big.digest))).equals(big.data));
  });

  test('Content-Length larger than the body (socket closed after it): treated as a cut, the blob verifies', async (t) => {
    if (!ok || proxy === undefined) return t.skip();
    const p = proxy;
    p.arm((d, nth) => (d === big.digest && nth === 1 ? { kind: 'lie-long' } : undefined));
    const { rt, root } = await fresh(t);
    assert.equal((await rt.pullImage(ref())).digest, img.manifestDigest);
    // Every byte of the blob had arrived: the retry verifies what is on disk and fetches nothing.
    assert.equal(p.of(big.digest).length, 1);
    assert.ok((await fsp.readFile(blobPath(root, big.digest))).equals(big.data));
  });

  test('Content-Length smaller than the blob (the body ends early, cleanly): resumed from where it ended', async (t) => {
    if (!ok || proxy === undefined) return t.skip();
    const p = proxy;
    p.arm((d, nth) => (d === big.digest && nth === 1 ? { kind: 'lie-short', at: 0.4 } : undefined));
    const { rt, root } = await fresh(t);
    assert.equal((await rt.pullImage(ref())).digest, img.manifestDigest);
    const cut = Math.floor(big.size * 0.4);
    assert.deepEqual(p.of(big.digest).map((s) => [s.range, s.status, s.sent]), [
      [undefined, 200, cut],
      [`bytes=${cut}-`, 206, big.size - cut],
    ]);
    assert.ok((await fsp.readFile(blobPath(root, big.digest))).equals(big.data));
  });

  const restarts: [string, Fault][] = [
    ['a 200 (the server ignores Range)', { kind: 'no-range' }],
    ['a 416', { kind: 'status', status: 416 }],
    ['a 206 whose Content-Range starts elsewhere', { kind: 'shift-range', by: 1000 }],
  ];
  for (const [what, fault] of restarts) {
    test(`a resume answered with ${what} restarts from zero cleanly`, async (t) => {
      if (!ok || proxy === undefined) return t.skip();
      const p = proxy;
      p.arm((d, nth) => (d !== big.digest ? undefined : nth === 1 ? { kind: 'cut', at: 0.6 } : nth === 2 ? fault : undefined));
      const lines: string[] = [];
      const { rt, root } = await fresh(t, pino({ level: 'debug' }, { write: (l: string) => void lines.push(l) }) as unknown as Logger);
      assert.equal((await rt.pullImage(ref())).digest, img.manifestDigest);
      // The layer was being extracted from the partial file when it was emptied: that unpack
      // stopped and the layer was unpacked again from the committed blob.
      assert.ok(lines.some((l) => l.includes('layer download restarted during its unpack')), 'the unpack started again from the blob');
      const seen = p.of(big.digest);
      const cut = `bytes=${Math.floor(big.size * 0.6)}-`;
      if (fault.kind === 'no-range') {
        // The 200 itself is the restart: the whole body, written from offset 0.
        assert.deepEqual(seen.map((s) => [s.range, s.status]), [[undefined, 200], [cut, 200]]);
      } else {
        assert.deepEqual(seen.map((s) => [s.range, s.status]), [[undefined, 200], [cut, fault.kind === 'status' ? 416 : 206], [undefined, 200]]);
      }
      assert.ok((await fsp.readFile(blobPath(root, big.digest))).equals(big.data));
    });
  }

  test('the ingest sweep keeps recent partials named by digest and removes true residue', async (t) => {
    if (!ok) return t.skip();
    const store = new ContentStore(mkdtempSync(path.join(work, 'sweep-')));
    await store.init();
    const ingest = path.join(store.root, 'ingest');
    const young = 'a'.repeat(64);
    const old = 'b'.repeat(64);
    const committed = sha256(Buffer.from('here'));
    await fsp.writeFile(path.join(ingest, young), 'partial');
    await fsp.writeFile(path.join(ingest, old), 'partial');
    const past = new Date(Date.now() - PARTIAL_KEEP_MS - 60_000);
    await fsp.utimes(path.join(ingest, old), past, past);
    await fsp.writeFile(path.join(ingest, `${young}.0123456789ab`), 'a put() cut short');
    await fsp.writeFile(path.join(ingest, 'not-berths'), 'x');
    await store.put({ digest: committed, size: 4 }, Buffer.from('here'));
    await fsp.writeFile(path.join(ingest, digestHex(committed)), 'he');
    assert.equal(await store.sweepIngest(), 4);
    assert.deepEqual(await fsp.readdir(ingest), [young]);
  });

  test('a kept partial larger than the descriptor is discarded; a kept prefix is hashed again and resumed', async (t) => {
    if (!ok) return t.skip();
    const store = new ContentStore(mkdtempSync(path.join(work, 'partial-')));
    await store.init();
    const data = randomBytes(64 * 1024);
    const d = sha256(data);
    const file = path.join(store.root, 'ingest', digestHex(d));
    await fsp.writeFile(file, Buffer.concat([data, Buffer.from('tail')]));
    const w = await store.partial({ digest: d, size: data.length });
    assert.equal(w.written, 0, 'too large to be a prefix');
    assert.equal((await fsp.stat(file)).size, 0);
    await w.write(data.subarray(0, 1000));
    await w.keep();
    const again = await store.partial({ digest: d, size: data.length });
    assert.equal(again.written, 1000);
    await again.write(data.subarray(1000));
    await again.commit();
    assert.ok((await store.readSmall(d)).equals(data));
    assert.equal(existsSync(file), false);
    // A prefix that is not the blob's is caught at commit, and nothing is stored.
    const other = randomBytes(4096);
    const od = sha256(other);
    await fsp.writeFile(path.join(store.root, 'ingest', digestHex(od)), randomBytes(100));
    const bad = await store.partial({ digest: od, size: other.length });
    await bad.write(other.subarray(100));
    await assert.rejects(bad.commit(), isCode('ERR_DIGEST_MISMATCH'));
    await bad.abort();
    assert.equal(await store.has(od), false);
  });
});

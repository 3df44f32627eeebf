import { createServer, request as httpRequest, type Server } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import { gzip as gzipCb } from 'node:zlib';
import { pack as tarPack } from 'tar-stream';
import { sha256, type Digest } from '../../src/lib/digest.js';
import { MEDIA_TYPE_LAYER_GZIP, ociImageOf, type BuiltImage, type BuiltLayer } from '../../scripts/fixture-image.js';

/**
 * Images for the GC tests (issue 14): the busybox fixture plus one layer of `files` files of
 * pseudo-random bytes (seeded: the same seed gives the same layer, another seed another one), so
 * images share the busybox layers and differ by a layer whose size and file count the test picks
 * (random bytes do not compress: the layer's size on disk is what the test asks for).
 */

const gzip = promisify(gzipCb);
const EPOCH = new Date('2024-01-01T00:00:00Z');

/** A seeded PRNG (mulberry32): uniform in [0, 1). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomBytesSeeded(rand: () => number, n: number): Buffer {
  const b = Buffer.alloc(n);
  let i = 0;
  for (; i + 4 <= n; i += 4) b.writeUInt32LE(Math.floor(rand() * 4294967296), i);
  for (; i < n; i++) b[i] = Math.floor(rand() * 256);
  return b;
}

async function dataLayer(seed: number, files: number, fileBytes: number): Promise<BuiltLayer> {
  const rand = prng(seed);
  const pack = tarPack();
  const chunks: Buffer[] = [];
  const drained = (async () => {
    for await (const c of pack) chunks.push(c as Buffer);
  })();
  const entry = (h: Parameters<typeof pack.entry>[0], data?: Buffer): Promise<void> =>
    new Promise((resolve, reject) => {
      const done = (err?: Error | null): void => (err ? reject(err) : resolve());
      if (data === undefined) pack.entry(h, done);
      else pack.entry(h, data, done);
    });
  const base = { uid: 0, gid: 0, mtime: EPOCH };
  await entry({ ...base, name: 'data', type: 'directory', mode: 0o755 });
  for (let i = 0; i < files; i++) {
    const data = randomBytesSeeded(rand, fileBytes);
    await entry({ ...base, name: `data/f${String(i).padStart(5, '0')}`, type: 'file', mode: 0o644, size: data.length }, data);
  }
  pack.finalize();
  await drained;
  const tar = Buffer.concat(chunks);
  const data = await gzip(tar, { level: 1 });
  return { digest: sha256(data), size: data.length, diffId: sha256(tar), data, mediaType: MEDIA_TYPE_LAYER_GZIP };
}

/** `base` (the busybox fixture) with one more layer: `files` files of `fileBytes` random bytes from `seed`. */
export async function imageWithData(base: BuiltImage, o: { seed: number; files: number; fileBytes: number }): Promise<BuiltImage> {
  const extra = await dataLayer(o.seed, o.files, o.fileBytes);
  const layers = [...base.layers, extra];
  const cfg = JSON.parse(base.config.toString('utf8')) as { rootfs: { diff_ids: string[] }; history?: unknown[] };
  cfg.rootfs.diff_ids = layers.map((l) => l.diffId);
  cfg.history = [...(cfg.history ?? []), { created: EPOCH.toISOString(), created_by: `gc test data layer seed ${o.seed}` }];
  return ociImageOf(Buffer.from(JSON.stringify(cfg)), layers);
}

/**
 * A pass-through proxy in front of a loopback registry that counts blob requests and can hold a
 * blob's response until released (a pull then waits with its other files written).
 */
export interface GatingProxy {
  host: string;
  /** Blob digests requested, in order. */
  seen: string[];
  /** Holds the responses for `digest` until the returned function is called. */
  hold(digest: Digest): () => void;
  /** Resolves when a request for `digest` arrived (held or not). */
  requested(digest: Digest): Promise<void>;
  close(): void;
}

export async function gatingProxy(upstream: string): Promise<GatingProxy> {
  const u = new URL(upstream);
  const seen: string[] = [];
  const holds = new Map<string, Promise<void>>();
  const waiters = new Map<string, (() => void)[]>();
  const server: Server = createServer((req, res) => {
    const digest = /\/blobs\/(sha256:[a-f0-9]{64})$/.exec(req.url ?? '')?.[1];
    if (digest !== undefined) {
      seen.push(digest);
      for (const w of waiters.get(digest) ?? []) w();
      waiters.delete(digest);
    }
    const go = (): void => {
      const headers: Record<string, string> = {};
      for (const k of ['accept', 'range', 'if-range', 'authorization']) {
        const v = req.headers[k];
        if (typeof v === 'string') headers[k] = v;
      }
      const up = httpRequest({ host: u.hostname, port: Number(u.port), method: req.method ?? 'GET', path: req.url ?? '/', headers }, (ur) => {
        const h: Record<string, string> = {};
        for (const [k, v] of Object.entries(ur.headers)) if (typeof v === 'string' && !['connection', 'keep-alive'].includes(k)) h[k] = v;
        res.writeHead(ur.statusCode ?? 502, h);
        ur.pipe(res);
      });
      up.on('error', () => res.destroy());
      res.on('close', () => up.destroy());
      up.end();
    };
    const held = digest !== undefined ? holds.get(digest) : undefined;
    if (held !== undefined) void held.then(go);
    else go();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    host: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    hold(digest) {
      let release: () => void = () => undefined;
      holds.set(digest, new Promise<void>((r) => (release = r)));
      return () => {
        holds.delete(digest);
        release();
      };
    },
    requested(digest) {
      if (seen.includes(digest)) return Promise.resolve();
      return new Promise<void>((r) => waiters.set(digest, [...(waiters.get(digest) ?? []), r]));
    },
    close() {
      server.closeAllConnections();
      server.close();
    },
  };
}

import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { BerthError, messageOf } from '../../lib/errors.js';
import { redactUrl } from '../../lib/log.js';
import { parseDigest, type Digest } from '../../lib/digest.js';
import { sleep } from '../../lib/time.js';
import { isLoopbackHost, type ImageReference } from './reference.js';
import { checkedLookup, hopHeaders, hopRefusal, vetHop, type HopContext, type HopPolicy } from './guard.js';

export { parseReference, isLoopbackHost, type ImageReference } from './reference.js';

export const MEDIA = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  dockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
} as const;

interface Http {
  request: typeof import('undici').request;
  Agent: typeof import('undici').Agent;
  /** The registry's own pool. */
  dispatcher: Dispatcher;
}

const MANIFEST_ACCEPT = [MEDIA.ociIndex, MEDIA.ociManifest, MEDIA.dockerList, MEDIA.dockerManifest].join(', ');

/** Manifests and indexes above this size are refused (rule P1). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export interface FetchedManifest {
  digest: Digest;
  mediaType: string;
  bytes: Buffer;
}

export interface RegistryOptions {
  /** Hosts (host[:port]) allowed over plain HTTP besides loopback ones. */
  insecureHosts?: readonly string[];
  headersTimeoutMs?: number;
  bodyTimeoutMs?: number;
  retries?: number;
  signal?: AbortSignal;
}

/**
 * Distribution v2 client: resolve tags, fetch manifests and blobs by digest.
 * Anonymous access only in this slice; a 401 is reported as ERR_REGISTRY naming the
 * host. Redirects are followed by this code (never by undici) and each hop is vetted by
 * ./guard.ts (rule P3): https only, no loopback, private, link-local, unspecified or
 * reserved address unless the registry itself is configured at one, checked again at
 * connect time for names. A refused hop is ERR_REGISTRY and is not retried. GETs are
 * retried with backoff on 5xx, 429 and network errors (rule P4).
 */
export class RegistryClient {
  private http: Promise<Http> | undefined;
  /** Connection pools for redirect hops, one per P3 policy (their lookup enforces it). */
  private readonly hopDispatchers = new Map<string, Dispatcher>();
  private readonly opts: RegistryOptions;

  constructor(opts: RegistryOptions = {}) {
    this.opts = opts;
  }

  /**
   * undici and its connection pool, loaded on the first request: most commands (diff, ps,
   * status, an apply whose images are present) never talk to a registry, and loading undici
   * was a sixth of their start-up.
   */
  private client(): Promise<Http> {
    this.http ??= import('undici').then((u) => ({
      request: u.request,
      Agent: u.Agent,
      dispatcher: new u.Agent(this.agentOptions()),
    }));
    return this.http;
  }

  private agentOptions(): { headersTimeout: number; bodyTimeout: number; connections: number } {
    return { headersTimeout: this.opts.headersTimeoutMs ?? 30_000, bodyTimeout: this.opts.bodyTimeoutMs ?? 60_000, connections: 8 };
  }

  /**
   * The pool for hops under `policy`. Kept apart from the registry's own pool so that a socket
   * checked under one policy is never reused under another, and a hop never reuses a socket
   * whose address nobody checked.
   */
  private hopDispatcher(http: Http, policy: HopPolicy): Dispatcher {
    let d = this.hopDispatchers.get(policy.key);
    if (d === undefined) {
      d = new http.Agent({ ...this.agentOptions(), connect: { lookup: checkedLookup(policy.allowed) } });
      this.hopDispatchers.set(policy.key, d);
    }
    return d;
  }

  async close(): Promise<void> {
    if (this.http !== undefined) await (await this.http).dispatcher.close();
    const hops = [...this.hopDispatchers.values()];
    this.hopDispatchers.clear();
    await Promise.all(hops.map((d) => d.close()));
  }

  private baseUrl(ref: ImageReference): string {
    const plain = isLoopbackHost(ref.domain) || (this.opts.insecureHosts ?? []).includes(ref.domain);
    const host = ref.domain === 'docker.io' ? 'registry-1.docker.io' : ref.domain;
    return `${plain ? 'http' : 'https'}://${host}/v2/${ref.path}`;
  }

  /**
   * GET `url`, following up to 5 redirects, retrying transient failures.
   * Returns the final response with an unread body; the caller must consume or dump it.
   */
  private async get(
    url: string,
    headers: Record<string, string>,
    what: string,
    callSignal?: AbortSignal,
  ): Promise<Dispatcher.ResponseData<unknown>> {
    const signal =
      callSignal !== undefined && this.opts.signal !== undefined ? AbortSignal.any([this.opts.signal, callSignal]) : (callSignal ?? this.opts.signal);
    const registry = new URL(url);
    const ctx: HopContext = { what, kind: 'redirect to' };
    const attempts = (this.opts.retries ?? 3) + 1;
    let lastErr: unknown;
    for (let attempt = 0; attempt < attempts; attempt++) {
      if (attempt > 0) await sleep(Math.min(200 * 2 ** attempt, 5_000) * (0.5 + Math.random()), signal);
      let current = registry;
      // undefined while on the registry's own origin: its own pool, no P3 lookup.
      let policy: HopPolicy | undefined;
      try {
        for (let hop = 0; ; hop++) {
          const http = await this.client();
          let res: Dispatcher.ResponseData<unknown>;
          try {
            res = await http.request(current.toString(), {
              method: 'GET',
              headers: hopHeaders(headers, current, registry.host),
              dispatcher: policy === undefined ? http.dispatcher : this.hopDispatcher(http, policy),
              maxRedirections: 0,
              ...(signal !== undefined ? { signal } : {}),
            } as Parameters<typeof http.request>[1]);
          } catch (err) {
            throw hopRefusal(err, current, ctx) ?? err;
          }
          if (res.statusCode >= 300 && res.statusCode < 400 && res.statusCode !== 304) {
            await res.body.dump();
            const loc = res.headers['location'];
            if (typeof loc !== 'string' || hop >= 5) {
              throw new BerthError('ERR_REGISTRY', `${what}: redirect without location or too many redirects at ${redactUrl(current.toString())}`);
            }
            let next: URL;
            try {
              next = new URL(loc, current);
            } catch {
              throw new BerthError('ERR_REGISTRY', `${what}: unparseable redirect location from ${redactUrl(current.toString())}`);
            }
            policy = vetHop(next, registry, ctx);
            current = next;
            continue;
          }
          if (res.statusCode === 429 || res.statusCode >= 500) {
            const body = await errorBody(res.body);
            lastErr = new BerthError('ERR_REGISTRY', `${what}: ${res.statusCode} from ${redactUrl(current.toString())}: ${body.slice(0, 200)}`, {
              details: { status: res.statusCode, body: body.slice(0, 200) },
            });
            break;
          }
          if (res.statusCode !== 200) {
            const body = await errorBody(res.body);
            const code = res.statusCode === 404 ? 'ERR_NOT_FOUND' : 'ERR_REGISTRY';
            const hint = res.statusCode === 401 ? ' (registry authentication is not supported yet)' : '';
            throw new BerthError(code, `${what}: ${res.statusCode} from ${redactUrl(current.toString())}${hint}: ${body.slice(0, 200)}`, {
              details: { status: res.statusCode, body: body.slice(0, 200) },
            });
          }
          return res;
        }
      } catch (err) {
        if (err instanceof BerthError) throw err;
        if (signal?.aborted) throw err;
        lastErr = new BerthError('ERR_NETWORK', `${what}: ${messageOf(err)}`, { cause: err });
      }
    }
    throw lastErr;
  }

  /**
   * Fetches a manifest or index by tag or digest. The bytes are read with the P1 limit,
   * hashed, and (when addressed by digest) verified. Schema1 is refused (P2).
   */
  async fetchManifest(ref: ImageReference, reference: string, signal?: AbortSignal): Promise<FetchedManifest> {
    const what = `fetch manifest ${ref.domain}/${ref.path}:${reference}`;
    const res = await this.get(`${this.baseUrl(ref)}/manifests/${reference}`, { accept: MANIFEST_ACCEPT }, what, signal);
    const bytes = await readLimited(res.body, what, { limit: MAX_MANIFEST_BYTES });
    const contentType = String(res.headers['content-type'] ?? '').split(';')[0]?.trim() ?? '';
    if (contentType === MEDIA.dockerSchema1 || contentType === MEDIA.dockerSchema1Signed) {
      throw new BerthError('ERR_UNSUPPORTED', `${what}: docker schema1 manifests are not supported; push the image with a current client`);
    }
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}` as Digest;
    if (reference.startsWith('sha256:') && digest !== reference) {
      throw new BerthError('ERR_DIGEST_MISMATCH', `${what}: content hashes to ${digest}`, { details: { digest: reference, actual: digest } });
    }
    const header = res.headers['docker-content-digest'];
    if (typeof header === 'string' && header.startsWith('sha256:') && parseDigest(header, 'Docker-Content-Digest') !== digest) {
      throw new BerthError('ERR_DIGEST_MISMATCH', `${what}: Docker-Content-Digest ${header} differs from the content's ${digest}`);
    }
    return { digest, mediaType: contentType, bytes };
  }

  /** Streams a blob; the caller verifies size and digest while consuming (content store). */
  async fetchBlob(ref: ImageReference, digest: Digest): Promise<Readable> {
    const res = await this.get(`${this.baseUrl(ref)}/blobs/${digest}`, {}, `fetch blob ${ref.domain}/${ref.path}@${digest}`);
    return res.body as unknown as Readable;
  }

  /** Fetches a small blob (config) fully, verified against its descriptor. */
  async fetchSmallBlob(ref: ImageReference, desc: { digest: Digest; size: number }): Promise<Buffer> {
    const what = `fetch blob ${ref.domain}/${ref.path}@${desc.digest}`;
    if (desc.size > MAX_MANIFEST_BYTES) throw new BerthError('ERR_INVALID_IMAGE', `${what}: ${desc.size} bytes is over the limit`);
    const res = await this.get(`${this.baseUrl(ref)}/blobs/${desc.digest}`, {}, what);
    // More bytes than the descriptor is a content mismatch, as in the content store (C2).
    const bytes = await readLimited(res.body, what, { limit: desc.size, code: 'ERR_DIGEST_MISMATCH' });
    const actual = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    if (bytes.length !== desc.size || actual !== desc.digest) {
      throw new BerthError('ERR_DIGEST_MISMATCH', `${what}: got ${bytes.length} bytes hashing to ${actual}`, {
        details: { digest: desc.digest, actual },
      });
    }
    return bytes;
  }
}

async function readLimited(
  body: AsyncIterable<Uint8Array> & { destroy?: () => void },
  what: string,
  opts: { limit: number; code?: 'ERR_INVALID_IMAGE' | 'ERR_DIGEST_MISMATCH' },
): Promise<Buffer> {
  const { limit, code = 'ERR_INVALID_IMAGE' } = opts;
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of body) {
    n += c.length;
    if (n > limit) {
      body.destroy?.();
      throw new BerthError(code, `${what}: response exceeds the ${limit} byte limit`);
    }
    chunks.push(Buffer.from(c));
  }
  return Buffer.concat(chunks);
}


/** At most 1 KiB of an error response, for the message; the rest is discarded unread (a hostile body can be endless). */
async function errorBody(body: AsyncIterable<Uint8Array> & { destroy?: () => void }): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  try {
    for await (const c of body) {
      chunks.push(Buffer.from(c));
      n += c.length;
      if (n >= 1024) break;
    }
  } catch {
    // the body is only decoration for an error that is already decided
  } finally {
    body.destroy?.();
  }
  return Buffer.concat(chunks).subarray(0, 1024).toString('utf8').replace(/[\x00-\x1f\x7f]+/g, ' ');
}

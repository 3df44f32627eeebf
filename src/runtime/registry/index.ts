import { createHash } from 'node:crypto';
import { Module, createRequire } from 'node:module';
import { homedir } from 'node:os';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { BerthError, messageOf } from '../../lib/errors.js';
import { redactUrl } from '../../lib/log.js';
import { parseDigest, type Digest } from '../../lib/digest.js';
import { sleep } from '../../lib/time.js';
import { systemClock, type Clock } from '../../lib/clock.js';
import type { ImageReference } from './reference.js';
import { checkedLookup, hopHeaders, hopRefusal, vetHop, type HopContext, type HopPolicy } from './guard.js';
import {
  basicAuthorization,
  chainCredentials,
  credentialKey,
  defaultDockerConfigPath,
  dockerConfigFile,
  parseWwwAuthenticate,
  type CredentialSource,
  type FoundCredential,
} from './auth.js';
import { MAX_TOKEN_RESPONSE_BYTES, TokenCache, parseTokenResponse } from './token.js';
import { RegistryHosts, type HostCapability, type RegistryEndpoint } from './hosts.js';
import { defaultCaList, defaultTlsConnect } from '../../lib/extra-ca.js';

export { parseReference, isLoopbackHost, type ImageReference } from './reference.js';
export { RegistryHosts, type RegistryEndpoint, type HostCapability } from './hosts.js';
export {
  chainCredentials,
  credentialsFromDockerConfig,
  defaultDockerConfigPath,
  dockerConfigFile,
  type CredentialSource,
  type FoundCredential,
  type RegistryCredential,
} from './auth.js';

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
  buildConnector: typeof import('undici').buildConnector;
  /** The registry's own pool. */
  dispatcher: Dispatcher;
}

/**
 * A connector that builds the TLS side (with the extra CAs' secure context, lib/extra-ca) on the
 * first https connection only: a registry on plain HTTP never reads or parses a certificate.
 */
function lazyTlsConnector(build: Http['buildConnector'], base: import('undici').buildConnector.BuildOptions): import('undici').buildConnector.connector {
  let plain: import('undici').buildConnector.connector | undefined;
  let tls: import('undici').buildConnector.connector | undefined;
  return (opts, callback) => {
    const c = opts.protocol === 'https:' ? (tls ??= build({ ...base, ...defaultTlsConnect() })) : (plain ??= build(base));
    return c(opts, callback);
  };
}

/**
 * The two parts of undici the client uses — its Agent (connection pools) and the request API —
 * loaded from their own modules rather than undici's index, which also loads fetch, WebSocket,
 * EventSource, the cache stores and the mocks: half the load time and about 9 MB less memory in
 * a daemon (measured with undici 7.30: 22 ms and 10 MB against 67 ms and 19 MB). `request` is
 * what undici's index makes of the API: the URL split into origin and path for the dispatcher.
 * undici declares no `exports` map, so these paths are public to require; a test loads them.
 */
export function loadUndici(): Pick<Http, 'request' | 'Agent' | 'buildConnector'> {
  const req = createRequire(import.meta.url);
  deferModule(req, 'undici/lib/dispatcher/client-h2.js');
  const Agent = req('undici/lib/dispatcher/agent') as typeof import('undici').Agent;
  const buildConnector = req('undici/lib/core/connect') as typeof import('undici').buildConnector;
  const apiRequest = req('undici/lib/api/api-request') as (this: Dispatcher, opts: Record<string, unknown>) => Promise<Dispatcher.ResponseData<unknown>>;
  if (typeof Agent !== 'function' || typeof apiRequest !== 'function' || typeof buildConnector !== 'function') {
    throw new BerthError('ERR_INTERNAL', 'registry client: undici/lib/dispatcher/agent, lib/api/api-request or lib/core/connect is not what undici 7 has (npm ci)');
  }
  const request = ((url: string, opts: Record<string, unknown> & { dispatcher: Dispatcher }) => {
    const u = new URL(url);
    const { dispatcher, ...rest } = opts;
    return apiRequest.call(dispatcher, { ...rest, origin: u.origin, path: `${u.pathname}${u.search}`, method: rest['method'] ?? 'GET' });
  }) as unknown as typeof import('undici').request;
  return { Agent, request, buildConnector };
}

/**
 * Puts a stand-in for the CommonJS module `id` (a module exporting one function) into `req`'s
 * cache: a function that loads the real module on its first call and hands every call to it.
 * undici's client loads its HTTP/2 side (client-h2.js, and with it node:http2 and node:tls:
 * ~10–15 ms and ~1.3 MB of a daemon's first pull) at its own load, though it runs only on a
 * connection that negotiated h2, which berth's pools never offer (undici's `allowH2` is off).
 * Returns the stand-in, or undefined when the module was already loaded (nothing to defer).
 */
export function deferModule(req: NodeJS.Require, id: string): ((...args: unknown[]) => unknown) | undefined {
  const file = req.resolve(id);
  if (req.cache[file] !== undefined) return undefined;
  let real: ((...args: unknown[]) => unknown) | undefined;
  const load = (): ((...args: unknown[]) => unknown) => {
    if (real !== undefined) return real;
    delete req.cache[file];
    const m = req(file) as unknown;
    if (typeof m !== 'function') throw new BerthError('ERR_INTERNAL', `${id} does not export a function (npm ci)`);
    real = m as (...args: unknown[]) => unknown;
    req.cache[file] = stand;
    return real;
  };
  const fn = function deferred(this: unknown, ...args: unknown[]): unknown {
    return load().apply(this, args);
  };
  const stand = new Module(file);
  stand.filename = file;
  stand.loaded = true;
  stand.exports = fn;
  req.cache[file] = stand;
  return fn;
}

const MANIFEST_ACCEPT = [MEDIA.ociIndex, MEDIA.ociManifest, MEDIA.dockerList, MEDIA.dockerManifest].join(', ');

/** Manifests and indexes above this size are refused (rule P1). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export interface FetchedManifest {
  digest: Digest;
  mediaType: string;
  bytes: Buffer;
}

/** A blob body as the registry sent it (see `fetchBlobFrom`). */
export interface BlobBody {
  body: Readable;
  /** Where in the blob the body's first byte is: the offset asked for when the registry resumed (206), else 0. */
  offset: number;
  /** The response's strong ETag, the `If-Range` validator for resuming this blob later in this process. */
  etag: string | undefined;
}

/** Retry-After values above this are not waited out within one GET (the caller's backoff takes over). */
const MAX_RETRY_AFTER_MS = 60_000;

export interface RegistryOptions {
  /** Hosts (host[:port]) allowed over plain HTTP besides loopback ones. */
  insecureHosts?: readonly string[];
  headersTimeoutMs?: number;
  bodyTimeoutMs?: number;
  retries?: number;
  signal?: AbortSignal;
  /**
   * Where credentials come from when a registry asks (a 401). Default: the Docker config file
   * at `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`, read on the first 401 only.
   * cli.ts passes `dockerConfigFile(--registry-config …)`; per-pull secrets go through
   * `withCredentials`.
   */
  credentials?: CredentialSource;
  /** Token expiry is measured on this clock (tests use a FakeClock). */
  clock?: Clock;
  /**
   * containerd's certs.d layout (./hosts.ts): mirrors, servers, CAs and client certificates per
   * registry. `required`: a missing directory is an error (it was named explicitly).
   */
  hostsDir?: { path: string; required: boolean };
}

/** How a registry host asked to be authenticated the last time it answered 401. */
type HostAuth = { scheme: 'basic' } | { scheme: 'bearer'; realm: string; service: string | undefined };

/** What one client and its `withCredentials` views share: pools and what the registries told us. */
interface Shared {
  http: Promise<Http> | undefined;
  /** Connection pools for redirect hops and token realms, one per P3 policy (their lookup enforces it). */
  readonly hopDispatchers: Map<string, Dispatcher>;
  readonly tokens: TokenCache;
  /** By registry host (as the reference names it). */
  readonly hostAuth: Map<string, HostAuth>;
  /** The scope a registry named in its last challenge for `host/repository`. */
  readonly scopes: Map<string, string>;
  /** Connection pools of endpoints with their own TLS setup (hosts.toml ca, client, skip_verify), by its id. */
  readonly tlsDispatchers: Map<string, Dispatcher>;
  readonly hosts: RegistryHosts;
}

/** What one `get` call is fetching, for the credentials and the token scope. */
interface Target {
  url: string;
  /** The endpoint's host (the registry's, or a mirror's): credentials and tokens are keyed by it. */
  host: string;
  repository: string;
  endpoint: RegistryEndpoint;
}

/** One `get` call's authentication state: what it sent, so that a refused credential is never sent twice. */
interface CallAuth {
  readonly host: string;
  readonly endpoint: RegistryEndpoint;
  readonly repository: string;
  readonly registry: URL;
  readonly what: string;
  readonly signal: AbortSignal | undefined;
  found: FoundCredential | undefined;
  looked: boolean;
  /** The Authorization sent on the registry's own origin by the last request. */
  sent: string | undefined;
  /**
   * The challenge (realm, service, scope) a bearer token was fetched for during this call: a
   * 401 naming the same challenge again is final; one naming another (the registry moved its
   * realm) gets one more token.
   */
  freshFor: string | undefined;
}

/** Errors worth another attempt of the same GET (a token realm's 5xx, a network error on the way to it). */
const TRANSIENT = new WeakSet<BerthError>();

/**
 * Distribution v2 client: resolve tags, fetch manifests and blobs by digest.
 *
 * Authentication (rule P3): anonymous until a registry answers 401 on its own origin. Then
 * - `Bearer realm=…,service=…,scope=…`: a token is fetched from the realm (GET with `service` and
 *   `scope`, with basic credentials when the host has some, anonymously otherwise; an
 *   `identitytoken` is exchanged by an OAuth2 `refresh_token` POST), cached per (credential, host,
 *   scope) until `expires_in` and sent on the next requests for that repository; an expired one
 *   is fetched again before use, and a cached one the registry refuses is replaced once;
 * - `Basic realm=…`: the host's credentials are sent, on this and later requests.
 * A 401 that remains (a token fetched for this very request refused, basic credentials refused)
 * or a 403 is ERR_REGISTRY "authentication required for HOST" (nothing to send) or
 * "authentication failed for HOST" naming where the credential came from; never the body,
 * never a secret. The token realm is a URL the registry chose: it is vetted like a redirect
 * (https, no loopback, private, link-local, unspecified address unless the registry is at one;
 * plain http only loopback to loopback) and its redirects are not followed. Only the realm and
 * the registry's own host ever see a credential. Basic credentials go over plain http only to
 * a registry that is loopback or configured insecure (as docker does).
 *
 * Redirects are followed by this code (never by undici) and each hop is vetted by ./guard.ts
 * (rule P3), checked again at connect time for names; `Authorization` is dropped on any hop to
 * another host:port. A refused hop is ERR_FORBIDDEN and is not retried. GETs are retried with
 * backoff on 5xx, 429 and network errors (rule P4).
 */
export class RegistryClient {
  private readonly opts: RegistryOptions;
  private readonly shared: Shared;
  private readonly credentials: CredentialSource;
  /** False for a `withCredentials` view: the pools belong to the client it came from. */
  private readonly ownsPools: boolean;

  constructor(opts: RegistryOptions = {}, view?: { shared: Shared }) {
    this.opts = opts;
    this.credentials = opts.credentials ?? dockerConfigFile(defaultDockerConfigPath(process.env, homedir()));
    this.ownsPools = view === undefined;
    this.shared = view?.shared ?? {
      http: undefined,
      hopDispatchers: new Map(),
      tokens: new TokenCache(opts.clock ?? systemClock),
      hostAuth: new Map(),
      scopes: new Map(),
      tlsDispatchers: new Map(),
      hosts: new RegistryHosts({ dir: opts.hostsDir?.path, required: opts.hostsDir?.required ?? false, insecureHosts: opts.insecureHosts ?? [] }),
    };
  }

  /**
   * The same client (pools, tokens) asking `source` first, then this client's own credentials:
   * a pod's imagePullSecrets before the node's config.json. Tokens are keyed by credential, so
   * a token a secret obtained never serves a pull without it. `close()` on the view does nothing.
   */
  withCredentials(source: CredentialSource): RegistryClient {
    return new RegistryClient({ ...this.opts, credentials: chainCredentials(source, this.credentials) }, { shared: this.shared });
  }

  /**
   * Loads undici and makes the pool now rather than on the first request. `berth up` calls this
   * before it serves its socket: a daemon's first pull then starts at once (loading undici's ~25
   * files cost ~30 ms of CPU, ~60 ms with a cold page cache), for ~0.6 MB of resident memory.
   */
  warm(): void {
    // A failure to load stays in the promise for the first request to report.
    this.client().catch(() => undefined);
  }

  /**
   * undici and its connection pool, loaded on the first request: most commands (diff, ps,
   * status, an apply whose images are present) never talk to a registry, and loading undici
   * was a sixth of their start-up.
   */
  private client(): Promise<Http> {
    this.shared.http ??= Promise.resolve().then(() => {
      const u = loadUndici();
      return { ...u, dispatcher: new u.Agent({ ...this.agentOptions(), connect: lazyTlsConnector(u.buildConnector, {}) }) };
    });
    return this.shared.http;
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
    let d = this.shared.hopDispatchers.get(policy.key);
    if (d === undefined) {
      d = new http.Agent({ ...this.agentOptions(), connect: lazyTlsConnector(http.buildConnector, { lookup: checkedLookup(policy.allowed) }) });
      this.shared.hopDispatchers.set(policy.key, d);
    }
    return d;
  }

  /** The pool for an endpoint's own origin: the shared one, or one with the endpoint's TLS setup. */
  private originDispatcher(http: Http, endpoint: RegistryEndpoint): Dispatcher {
    const tls = endpoint.tls;
    if (tls === undefined) return http.dispatcher;
    let d = this.shared.tlsDispatchers.get(tls.id);
    if (d === undefined) {
      const ca = tls.ca ?? defaultCaList();
      d = new http.Agent({
        ...this.agentOptions(),
        connect: { rejectUnauthorized: tls.rejectUnauthorized, ...(ca !== undefined ? { ca } : {}), ...(tls.cert !== undefined ? { cert: tls.cert, key: tls.key } : {}) },
      });
      this.shared.tlsDispatchers.set(tls.id, d);
    }
    return d;
  }

  async close(): Promise<void> {
    if (!this.ownsPools) return;
    const http = this.shared.http;
    this.shared.http = undefined;
    if (http !== undefined) await (await http).dispatcher.close();
    const hops = [...this.shared.hopDispatchers.values(), ...this.shared.tlsDispatchers.values()];
    this.shared.hopDispatchers.clear();
    this.shared.tlsDispatchers.clear();
    await Promise.all(hops.map((d) => d.close()));
  }

  /**
   * Where to ask for `suffix` (`manifests/<tag|digest>`, `blobs/<digest>`), in order: the
   * endpoints of ./hosts.ts that have `capability` (mirrors first, then the server).
   */
  private async targets(ref: ImageReference, suffix: string, capability: HostCapability, what: string): Promise<Target[]> {
    const all = await this.shared.hosts.endpoints(ref.domain);
    const usable = all.filter((e) => e.capabilities.has(capability));
    if (usable.length === 0) {
      throw new BerthError('ERR_INVALID_ARGUMENT', `${what}: no host configured for ${ref.domain} may ${capability} (${all[0]?.source ?? 'default'})`, {
        details: { host: ref.domain, capability },
      });
    }
    return usable.map((endpoint) => {
      const ns = endpoint.mirror ? `?ns=${encodeURIComponent(ref.domain)}` : '';
      return { url: `${endpoint.origin}${endpoint.apiRoot}/${ref.path}/${suffix}${ns}`, host: endpoint.host, repository: ref.path, endpoint };
    });
  }

  /**
   * Runs `fn` against each target in turn until one succeeds (containerd's order: mirrors, then
   * the server). Every endpoint but the last gets one attempt without retries, so a mirror that
   * is down costs one connection attempt; the last gets the usual retries. The error is the last
   * endpoint's, naming what the others answered.
   */
  private async eachTarget<T>(targets: readonly Target[], signal: AbortSignal | undefined, fn: (t: Target, retries: number | undefined) => Promise<T>): Promise<T> {
    const failed: string[] = [];
    for (const [i, t] of targets.entries()) {
      const last = i === targets.length - 1;
      try {
        return await fn(t, last ? undefined : 0);
      } catch (err) {
        if (signal?.aborted === true || this.opts.signal?.aborted === true || !(err instanceof BerthError)) throw err;
        if (last) {
          if (failed.length === 0) throw err;
          throw new BerthError(err.code, `${err.message} (after ${failed.join('; ')})`, { cause: err, details: { ...err.details, tried: failed.join('; ') } });
        }
        failed.push(`${t.endpoint.origin}: ${err.code}${typeof err.details['status'] === 'number' ? ` ${err.details['status']}` : ''}`);
      }
    }
    throw new BerthError('ERR_INTERNAL', 'registry: no target');
  }

  /**
   * GET `target`, following up to 5 redirects, authenticating when the registry asks,
   * retrying transient failures. Returns the final response with an unread body; the caller
   * must consume or dump it.
   */
  private async get(
    target: Target,
    headers: Record<string, string>,
    what: string,
    opts: { signal?: AbortSignal | undefined; pass?: readonly number[]; retries?: number | undefined; method?: 'GET' | 'HEAD' } = {},
  ): Promise<Dispatcher.ResponseData<unknown>> {
    const callSignal = opts.signal;
    const signal =
      callSignal !== undefined && this.opts.signal !== undefined ? AbortSignal.any([this.opts.signal, callSignal]) : (callSignal ?? this.opts.signal);
    const registry = new URL(target.url);
    const ctx: HopContext = { what, kind: 'redirect to' };
    const call: CallAuth = {
      host: target.host,
      endpoint: target.endpoint,
      repository: target.repository,
      registry,
      what,
      signal,
      found: undefined,
      looked: false,
      sent: undefined,
      freshFor: undefined,
    };
    const attempts = (opts.retries ?? this.opts.retries ?? 3) + 1;
    let lastErr: unknown;
    // What the last 429/503 asked for in Retry-After: waited out (at least) before the next attempt.
    let retryAfterMs = 0;
    for (let attempt = 0; attempt < attempts; attempt++) {
      if (attempt > 0) await sleep(Math.max(Math.min(200 * 2 ** attempt, 5_000) * (0.5 + Math.random()), retryAfterMs), signal);
      retryAfterMs = 0;
      let current = registry;
      // undefined while on the registry's own origin: its own pool, no P3 lookup.
      let policy: HopPolicy | undefined;
      try {
        let authorization = await this.preemptiveAuthorization(call);
        for (let hop = 0, challenges = 0; ; hop++) {
          const http = await this.client();
          call.sent = authorization;
          const own = current.origin === registry.origin ? { ...target.endpoint.headers, ...headers } : headers;
          const sendHeaders = authorization !== undefined ? { ...own, authorization } : own;
          let res: Dispatcher.ResponseData<unknown>;
          try {
            res = await http.request(current.toString(), {
              method: opts.method ?? 'GET',
              headers: hopHeaders(sendHeaders, current, registry.host),
              dispatcher: policy === undefined ? this.originDispatcher(http, target.endpoint) : this.hopDispatcher(http, policy),
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
          // Only the registry's own origin may ask for credentials: a storage hop that answers
          // 401 is an error like any other, and never learns anything.
          if ((res.statusCode === 401 || res.statusCode === 403) && current.origin === registry.origin) {
            const challenge = res.headers['www-authenticate'];
            await res.body.dump();
            if (res.statusCode === 403) throw await this.authError(call, 403);
            // Bounded by answerChallenge (each credential is sent at most twice); this is a backstop.
            if (++challenges > 3) throw await this.authError(call, 401);
            authorization = await this.answerChallenge(call, challenge);
            current = registry;
            policy = undefined;
            hop = -1;
            continue;
          }
          if (res.statusCode === 429 || res.statusCode >= 500) {
            const asked = parseRetryAfter(res.headers['retry-after'], Date.now()) ?? 0;
            const body = await errorBody(res.body);
            const err = new BerthError('ERR_REGISTRY', `${what}: ${res.statusCode} from ${redactUrl(current.toString())}: ${body.slice(0, 200)}${asked > MAX_RETRY_AFTER_MS ? ` (Retry-After ${Math.round(asked / 1000)} s)` : ''}`, {
              details: { status: res.statusCode, body: body.slice(0, 200), ...(asked > 0 ? { retryAfterMs: asked } : {}) },
            });
            // Longer than this call waits: no retry before the time the registry asked for (RFC 9110
            // 10.2.3); the caller's back-off takes over (regression retry-after-cut-short).
            if (asked > MAX_RETRY_AFTER_MS) throw err;
            retryAfterMs = asked;
            lastErr = err;
            break;
          }
          if (res.statusCode !== 200 && !(opts.pass ?? []).includes(res.statusCode)) {
            // An authentication answer's body is not shown: it may echo what was sent.
            const body = res.statusCode === 401 || res.statusCode === 403 ? (await res.body.dump(), '') : await errorBody(res.body);
            const code = res.statusCode === 404 ? 'ERR_NOT_FOUND' : 'ERR_REGISTRY';
            throw new BerthError(code, `${what}: ${res.statusCode} from ${redactUrl(current.toString())}${body !== '' ? `: ${body.slice(0, 200)}` : ''}`, {
              details: { status: res.statusCode, ...(body !== '' ? { body: body.slice(0, 200) } : {}) },
            });
          }
          return res;
        }
      } catch (err) {
        if (err instanceof BerthError) {
          if (!TRANSIENT.has(err)) throw err;
          lastErr = err;
          continue;
        }
        if (signal?.aborted) throw err;
        lastErr = new BerthError('ERR_NETWORK', `${what}: ${networkReason(err, this.agentOptions().headersTimeout)}`, { cause: err });
      }
    }
    throw lastErr;
  }

  /** The call's credential, looked up once per call (a file source stats its file). */
  private async credentialFor(call: CallAuth): Promise<FoundCredential | undefined> {
    if (!call.looked) {
      call.found = await this.credentials.lookup(call.host);
      call.looked = true;
    }
    return call.found;
  }

  /** Before any 401: what the host asked for last time, so a known registry costs no extra round trip. */
  private async preemptiveAuthorization(call: CallAuth): Promise<string | undefined> {
    const known = this.shared.hostAuth.get(call.host);
    if (known === undefined) return undefined;
    const found = await this.credentialFor(call);
    if (known.scheme === 'basic') return found?.credential.kind === 'basic' ? basicAuthorization(found.credential) : undefined;
    const scope = this.shared.scopes.get(`${call.host}/${call.repository}`) ?? `repository:${call.repository}:pull`;
    const key = tokenKey(found, call.host, scope);
    const cached = this.shared.tokens.get(key);
    if (cached !== undefined) return cached.authorization;
    // Expired (or never asked for this repository): ask the realm now rather than meet a 401.
    const fresh = await this.shared.tokens.refresh(key, () => this.fetchToken(call, { ...known, scope }, found));
    call.freshFor = challengeKey(known.realm, known.service, scope);
    return fresh.authorization;
  }

  /** The Authorization to retry with after a 401 carrying `header`, or the final error. */
  private async answerChallenge(call: CallAuth, header: string | string[] | undefined): Promise<string> {
    const challenges = parseWwwAuthenticate(header);
    const bearer = challenges.find((c) => c.scheme === 'bearer' && (c.params['realm'] ?? '') !== '');
    const basic = challenges.find((c) => c.scheme === 'basic');
    const found = await this.credentialFor(call);
    if (bearer !== undefined) {
      const realm = bearer.params['realm'] ?? '';
      const service = bearer.params['service'];
      const scope = bearer.params['scope'] ?? `repository:${call.repository}:pull`;
      // Remembered even when this call gives up: the next one asks where the registry says now.
      this.shared.hostAuth.set(call.host, { scheme: 'bearer', realm, service });
      this.shared.scopes.set(`${call.host}/${call.repository}`, scope);
      // A token fetched for this very request and challenge was refused: another would be too.
      if (call.freshFor === challengeKey(realm, service, scope)) throw await this.authError(call, 401);
      const key = tokenKey(found, call.host, scope);
      if (call.sent !== undefined) this.shared.tokens.invalidate(key, call.sent);
      const fresh = await this.shared.tokens.refresh(key, () => this.fetchToken(call, { realm, service, scope }, found));
      call.freshFor = challengeKey(realm, service, scope);
      return fresh.authorization;
    }
    if (basic !== undefined) {
      if (found === undefined || (call.sent !== undefined && call.sent.startsWith('Basic '))) throw await this.authError(call, 401);
      if (found.credential.kind !== 'basic') {
        throw new BerthError(
          'ERR_REGISTRY',
          `${call.what}: authentication failed for ${call.host}: it asks for a username and password, and ${found.origin} has only an identity token for it`,
          { details: { status: 401, host: call.host, auth: 'failed', origin: found.origin } },
        );
      }
      this.shared.hostAuth.set(call.host, { scheme: 'basic' });
      return basicAuthorization(found.credential);
    }
    const schemes = challenges.map((c) => c.scheme).join(', ');
    throw await this.authError(call, 401, schemes === '' ? 'the 401 carries no WWW-Authenticate challenge' : `it offers only ${schemes}, which berth does not speak`);
  }

  /**
   * A bearer token from the realm the registry named, vetted by rule P3 like a redirect.
   * Throws ERR_FORBIDDEN for a refused realm, the auth errors for a 401/403 of the realm,
   * ERR_REGISTRY (retried within the GET) for its 5xx/429, ERR_NETWORK likewise.
   */
  private async fetchToken(
    call: CallAuth,
    challenge: { realm: string; service: string | undefined; scope: string },
    found: FoundCredential | undefined,
  ): Promise<{ token: string; expiresInS: number }> {
    const what = call.what;
    let realm: URL;
    try {
      realm = new URL(challenge.realm);
    } catch {
      throw new BerthError('ERR_REGISTRY', `${what}: ${call.host} names an unparseable token realm`, { details: { host: call.host } });
    }
    const shown = redactUrl(realm.toString());
    const policy = vetHop(realm, call.registry, { what, kind: 'token realm' });
    const http = await this.client();
    const scopes = challenge.scope.split(' ').filter((s) => s !== '');
    const cred = found?.credential;
    const url = new URL(realm);
    let init: { method: 'GET' | 'POST'; headers: Record<string, string>; body?: string };
    if (cred?.kind === 'identity-token') {
      // OAuth2 refresh-token grant (distribution's token auth, "oauth" flavour).
      const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: cred.refreshToken, client_id: 'berth' });
      if (challenge.service !== undefined) form.set('service', challenge.service);
      if (scopes.length > 0) form.set('scope', scopes.join(' '));
      init = { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form.toString() };
    } else {
      if (challenge.service !== undefined) url.searchParams.append('service', challenge.service);
      for (const s of scopes) url.searchParams.append('scope', s);
      init = { method: 'GET', headers: cred?.kind === 'basic' ? { authorization: basicAuthorization(cred) } : {} };
    }
    let res: Dispatcher.ResponseData<unknown>;
    try {
      res = await http.request(url.toString(), {
        ...init,
        dispatcher: policy === undefined ? this.originDispatcher(http, call.endpoint) : this.hopDispatcher(http, policy),
        maxRedirections: 0,
        ...(call.signal !== undefined ? { signal: call.signal } : {}),
      } as Parameters<typeof http.request>[1]);
    } catch (err) {
      const refused = hopRefusal(err, realm, { what, kind: 'token realm' });
      if (refused !== undefined) throw refused;
      if (call.signal?.aborted) throw err;
      const e = new BerthError('ERR_NETWORK', `${what}: token realm ${shown}: ${messageOf(err)}`, { cause: err });
      TRANSIENT.add(e);
      throw e;
    }
    if (res.statusCode === 200) {
      const bytes = await readLimited(res.body, `${what}: token realm ${shown}`, { limit: MAX_TOKEN_RESPONSE_BYTES, code: 'ERR_REGISTRY' });
      return parseTokenResponse(bytes, shown, what);
    }
    await res.body.dump();
    if (res.statusCode === 401 || res.statusCode === 403) {
      throw await this.authError(call, res.statusCode, `the token realm ${shown} answered ${res.statusCode}`);
    }
    const e = new BerthError(
      'ERR_REGISTRY',
      `${what}: token realm ${shown} answered ${res.statusCode}${res.statusCode >= 300 && res.statusCode < 400 ? ' (a redirect; berth does not follow a token realm elsewhere)' : ''}`,
      { details: { status: res.statusCode, realm: shown } },
    );
    if (res.statusCode === 429 || res.statusCode >= 500) TRANSIENT.add(e);
    throw e;
  }

  /**
   * "authentication required for HOST" when nothing was sent (no credential for the host),
   * "authentication failed for HOST" when a credential was refused; both say where to look.
   * ERR_REGISTRY (retried by `berth up`: a `docker login` fixes it without a manifest change).
   */
  private async authError(call: CallAuth, status: number, why?: string): Promise<BerthError> {
    const found = await this.credentialFor(call).catch(() => undefined);
    const h = call.host;
    const reason = why !== undefined ? ` (${why})` : '';
    const message =
      found === undefined
        ? `${call.what}: authentication required for ${h}${reason}: no credentials for ${h} in ${this.credentials.origin}; ` +
          `add them there (docker login ${h}, or auths."${h}" with "auth": base64 of user:password) or name another file with --registry-config`
        : `${call.what}: authentication failed for ${h}${reason}: ` +
          (status === 403 ? `the credentials for ${h} from ${found.origin} may not pull ${call.repository} (403)` : `the registry refused the credentials for ${h} from ${found.origin}`) +
          `; check the username and password (or token) there`;
    return new BerthError('ERR_REGISTRY', message, {
      details: { status, host: h, auth: found === undefined ? 'required' : 'failed', origin: found?.origin ?? this.credentials.origin },
    });
  }

  /**
   * Fetches a manifest or index by tag or digest. The bytes are read with the P1 limit,
   * hashed, and (when addressed by digest) verified. Schema1 is refused (P2). A tag is asked only
   * of endpoints that may `resolve`; a digest of those that may `pull` (./hosts.ts).
   */
  async fetchManifest(ref: ImageReference, reference: string, signal?: AbortSignal): Promise<FetchedManifest> {
    const what = `fetch manifest ${ref.domain}/${ref.path}:${reference}`;
    const targets = await this.targets(ref, `manifests/${reference}`, reference.startsWith('sha256:') ? 'pull' : 'resolve', what);
    return this.eachTarget(targets, signal, (t, retries) => this.fetchManifestFrom(t, reference, what, { signal, retries }));
  }

  /**
   * The digest a tag names now, as containerd's resolver asks: HEAD with the manifest Accept
   * headers, the answer's Docker-Content-Digest; GET (and hash) only when a registry sends no such
   * header. A HEAD is not counted as a pull by Docker Hub's rate limit, and no document is
   * downloaded to learn that nothing changed (regression tag-check-downloads-manifest).
   */
  async resolveDigest(ref: ImageReference, tag: string, signal?: AbortSignal): Promise<Digest> {
    const what = `resolve ${ref.domain}/${ref.path}:${tag}`;
    const targets = await this.targets(ref, `manifests/${tag}`, 'resolve', what);
    return this.eachTarget(targets, signal, async (t, retries) => {
      // A registry that does not take HEAD on manifests (405, 400, 501) is asked with GET.
      const res = await this.get(t, { accept: MANIFEST_ACCEPT }, what, { signal, retries, method: 'HEAD', pass: [400, 405, 501] });
      await (res.body as { dump?: () => Promise<void> }).dump?.().catch(() => undefined);
      const header = res.headers['docker-content-digest'];
      if (res.statusCode === 200 && typeof header === 'string' && /^sha256:[a-f0-9]{64}$/.test(header)) return header as Digest;
      return (await this.fetchManifestFrom(t, tag, what, { signal, retries })).digest;
    });
  }

  private async fetchManifestFrom(
    target: Target,
    reference: string,
    what: string,
    opts: { signal: AbortSignal | undefined; retries: number | undefined },
  ): Promise<FetchedManifest> {
    const res = await this.get(target, { accept: MANIFEST_ACCEPT }, what, opts);
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
    const what = `fetch blob ${ref.domain}/${ref.path}@${digest}`;
    const targets = await this.targets(ref, `blobs/${digest}`, 'pull', what);
    const res = await this.eachTarget(targets, undefined, (t, retries) => this.get(t, {}, what, { retries }));
    return res.body as unknown as Readable;
  }

  /**
   * Streams a blob from byte `from` on (rule P4: Range resume). With `from` > 0 it asks for
   * `Range: bytes=<from>-` (with `If-Range: <ifRange>` when the caller has the ETag of the response
   * its kept bytes came from) and takes a 206 only when its Content-Range starts exactly at `from`
   * and ends at the descriptor's last byte. Otherwise the whole blob comes from offset 0: a 200
   * (no Range support, or the validator no longer matches) as it is; a 416 or a 206 for another
   * range is dropped and the blob asked for again without Range. `offset` says which one it was;
   * the caller (content store) restarts its file when it is 0. The digest is verified by the
   * caller over the whole blob, so a server that mixes two contents is caught there.
   */
  async fetchBlobFrom(
    ref: ImageReference,
    desc: { digest: Digest; size: number },
    opts: { from?: number; ifRange?: string | undefined; signal?: AbortSignal } = {},
  ): Promise<BlobBody> {
    const what = `fetch blob ${ref.domain}/${ref.path}@${desc.digest}`;
    const targets = await this.targets(ref, `blobs/${desc.digest}`, 'pull', what);
    return this.eachTarget(targets, opts.signal, (t, retries) => this.fetchBlobRange(t, desc, what, { ...opts, retries }));
  }

  private async fetchBlobRange(
    target: Target,
    desc: { digest: Digest; size: number },
    what: string,
    opts: { from?: number; ifRange?: string | undefined; signal?: AbortSignal; retries: number | undefined },
  ): Promise<BlobBody> {
    const from = opts.from ?? 0;
    const answer = (res: Dispatcher.ResponseData<unknown>, offset: number): BlobBody => {
      const etag = res.headers['etag'];
      return { body: res.body as unknown as Readable, offset, etag: typeof etag === 'string' && !etag.startsWith('W/') ? etag : undefined };
    };
    if (from > 0 && from < desc.size) {
      const headers: Record<string, string> = { range: `bytes=${from}-` };
      if (opts.ifRange !== undefined) headers['if-range'] = opts.ifRange;
      const res = await this.get(target, headers, what, { signal: opts.signal, pass: [206, 416], retries: opts.retries });
      if (res.statusCode === 200) return answer(res, 0);
      if (res.statusCode === 206) {
        const range = parseContentRange(res.headers['content-range']);
        if (range !== undefined && range.start === from && range.end === desc.size - 1 && (range.total === undefined || range.total === desc.size)) {
          return answer(res, from);
        }
      }
      await res.body.dump();
    }
    return answer(await this.get(target, {}, what, { signal: opts.signal, retries: opts.retries }), 0);
  }

  /** Fetches a small blob (config) fully, verified against its descriptor. */
  async fetchSmallBlob(ref: ImageReference, desc: { digest: Digest; size: number }): Promise<Buffer> {
    const what = `fetch blob ${ref.domain}/${ref.path}@${desc.digest}`;
    if (desc.size > MAX_MANIFEST_BYTES) throw new BerthError('ERR_INVALID_IMAGE', `${what}: ${desc.size} bytes is over the limit`);
    const targets = await this.targets(ref, `blobs/${desc.digest}`, 'pull', what);
    return this.eachTarget(targets, undefined, (t, retries) => this.fetchSmallBlobFrom(t, desc, what, retries));
  }

  private async fetchSmallBlobFrom(target: Target, desc: { digest: Digest; size: number }, what: string, retries: number | undefined): Promise<Buffer> {
    const res = await this.get(target, {}, what, { retries });
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

/** `bytes <start>-<end>/<total|*>` of a 206, or undefined for anything else (multipart, garbage). */
export function parseContentRange(header: string | string[] | undefined): { start: number; end: number; total: number | undefined } | undefined {
  if (typeof header !== 'string') return undefined;
  const m = /^bytes (\d{1,15})-(\d{1,15})\/(\d{1,15}|\*)$/.exec(header.trim());
  if (m === null) return undefined;
  const start = Number(m[1]);
  const end = Number(m[2]);
  const total = m[3] === '*' ? undefined : Number(m[3]);
  if (end < start || (total !== undefined && end >= total)) return undefined;
  return { start, end, total };
}

/** Retry-After (RFC 9110 §10.2.3): delay-seconds or an HTTP-date, in ms from `now`; undefined when absent or unparseable. */
export function parseRetryAfter(header: string | string[] | undefined, now: number): number | undefined {
  if (typeof header !== 'string') return undefined;
  const v = header.trim();
  if (/^\d{1,9}$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** A transport failure in words: undici's timeout errors say which timeout and how long it was. */
function networkReason(err: unknown, headersTimeoutMs: number): string {
  const code = (err as { code?: unknown } | null)?.code;
  if (code === 'UND_ERR_HEADERS_TIMEOUT') return `no response headers within ${headersTimeoutMs} ms`;
  return messageOf(err);
}

/** One bearer challenge, to tell whether a 401 repeats the one a fresh token answered. */
function challengeKey(realm: string, service: string | undefined, scope: string): string {
  return JSON.stringify([realm, service ?? null, scope]);
}

/** Tokens are cached per credential, registry host and scope. */
function tokenKey(found: FoundCredential | undefined, host: string, scope: string): string {
  return `${credentialKey(found)} ${host} ${scope}`;
}

async function readLimited(
  body: AsyncIterable<Uint8Array> & { destroy?: () => void },
  what: string,
  opts: { limit: number; code?: 'ERR_INVALID_IMAGE' | 'ERR_DIGEST_MISMATCH' | 'ERR_REGISTRY' },
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

import { BerthError } from '../../lib/errors.js';
import type { Clock } from '../../lib/clock.js';

/**
 * Bearer tokens from a registry's token realm (distribution's token auth spec), cached per
 * (credential, registry host, scope) until `expires_in` (default 60 s) runs out, less a margin
 * so a token never expires on the wire. A cache key includes the credential's identity: a token
 * obtained with one credential (a pull secret) never serves a pull made without it.
 *
 * Concurrent requests for one key share one token request (layers are fetched in parallel,
 * and each would otherwise meet the same 401 and ask the realm at once).
 */

export interface BearerToken {
  /** The header value to send: `Bearer …`. */
  readonly authorization: string;
  /** Clock time after which the token is not used. */
  readonly expiresAt: number;
}

/** Token responses larger than this are refused (a JWT is a few KiB). */
export const MAX_TOKEN_RESPONSE_BYTES = 1024 * 1024;
const DEFAULT_EXPIRES_IN_S = 60;
const MAX_ENTRIES = 512;

export class TokenCache {
  private readonly tokens = new Map<string, BearerToken>();
  private readonly inflight = new Map<string, Promise<BearerToken>>();

  constructor(private readonly clock: Clock) {}

  /** A token for `key` that has not expired, or undefined. */
  get(key: string): BearerToken | undefined {
    const t = this.tokens.get(key);
    if (t === undefined) return undefined;
    if (this.clock.now() >= t.expiresAt) {
      this.tokens.delete(key);
      return undefined;
    }
    return t;
  }

  /** Forgets `key` if it still holds `stale` (another caller may have refreshed it meanwhile). */
  invalidate(key: string, stale: string): void {
    if (this.tokens.get(key)?.authorization === stale) this.tokens.delete(key);
  }

  /**
   * A fresh token from `fetch`, shared with every concurrent caller of the same key, then
   * cached. A failed fetch is not cached.
   */
  refresh(key: string, fetch: () => Promise<{ token: string; expiresInS: number }>): Promise<BearerToken> {
    let p = this.inflight.get(key);
    if (p === undefined) {
      const started = this.clock.now();
      p = fetch()
        .then(({ token, expiresInS }) => {
          // Counted from when we asked: never later than the server's own clock started it.
          const lifeMs = expiresInS * 1000;
          const t: BearerToken = { authorization: `Bearer ${token}`, expiresAt: started + lifeMs - Math.min(10_000, lifeMs / 10) };
          this.store(key, t);
          return t;
        })
        .finally(() => this.inflight.delete(key));
      this.inflight.set(key, p);
    }
    return p;
  }

  private store(key: string, t: BearerToken): void {
    this.tokens.delete(key);
    this.tokens.set(key, t);
    if (this.tokens.size <= MAX_ENTRIES) return;
    const now = this.clock.now();
    for (const [k, v] of this.tokens) if (v.expiresAt <= now) this.tokens.delete(k);
    // Still full: drop the oldest insertions (Map keeps insertion order).
    for (const k of this.tokens.keys()) {
      if (this.tokens.size <= MAX_ENTRIES) break;
      this.tokens.delete(k);
    }
  }
}

/**
 * The token in a realm's 200 answer: `token` or `access_token` (OAuth2 form), `expires_in`
 * seconds (default 60). The token must be printable ASCII without spaces: it goes into a header.
 * Throws ERR_REGISTRY naming `realm` (already redacted) and never quoting the body.
 */
export function parseTokenResponse(bytes: Buffer, realm: string, what: string): { token: string; expiresInS: number } {
  const bad = (why: string): BerthError => new BerthError('ERR_REGISTRY', `${what}: token realm ${realm}: ${why}`, { details: { realm } });
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw bad('answer is not JSON');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw bad('answer is not a JSON object');
  const o = doc as Record<string, unknown>;
  const token = typeof o['token'] === 'string' && o['token'] !== '' ? o['token'] : o['access_token'];
  if (typeof token !== 'string' || token === '') throw bad('answer has no "token" or "access_token"');
  if (!/^[\x21-\x7e]+$/.test(token)) throw bad('the token holds characters a header cannot carry');
  const e = o['expires_in'];
  const expiresInS = typeof e === 'number' && Number.isFinite(e) && e > 0 ? e : DEFAULT_EXPIRES_IN_S;
  return { token, expiresInS };
}

import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import type { LookupFunction } from 'node:net';
import { BerthError } from '../../lib/errors.js';
import { redactUrl } from '../../lib/log.js';
import { classifyAddress, describeAddress, type AddressClass } from '../../lib/netaddr.js';

/**
 * Rule P3 for every URL a registry chooses for us: redirect `Location`s now, token realms
 * when auth lands. A registry is untrusted input; without this it could make berth GET
 * `http://127.0.0.1:<port>/admin`, a cloud metadata address or anything on the LAN (SSRF).
 *
 * A hop must be https and every address it reaches must be public, unless the registry
 * itself is configured by an address of that class: a registry at `127.0.0.1:5000` may send
 * us to other loopback ports (the test registry serves blobs that way), one at `10.0.0.5`
 * to other private addresses. A registry configured by name gets no such allowance: its
 * name's addresses are the registry's to change, so they cannot vouch for anything. Plain
 * http is allowed only from a loopback registry to loopback.
 *
 * Two halves, because a name can resolve differently on every lookup (DNS rebinding):
 * - `vetHop` decides what the URL alone decides (scheme, address literals, `localhost`)
 *   before any request, and returns the classes a name in it may resolve to;
 * - `checkedLookup` is the `lookup` of the connections made for hops: it resolves all of a
 *   name's addresses, refuses the connection if any is outside the policy, and hands the
 *   checked addresses to connect. The addresses checked are the addresses connected to.
 * A refusal from the lookup surfaces from the request; `hopRefusal` turns it into the same
 * error `vetHop` throws.
 */

export type HopKind = 'redirect to' | 'token realm';

export interface HopPolicy {
  /** Every address a hop's name resolves to must be in one of these classes. */
  readonly allowed: ReadonlySet<AddressClass>;
  /** One connection pool per distinct policy; pooled sockets were checked under this key. */
  readonly key: string;
}

export interface HopContext {
  /** The operation, for the message: `fetch blob host/path@sha256:…`. */
  what: string;
  kind: HopKind;
}

/** The classes the registry's own configured host grants its hops, besides public. */
export function registryScope(registry: URL): ReadonlySet<AddressClass> {
  if (registry.hostname === 'localhost') return new Set(['loopback']);
  const a = classifyAddress(registry.hostname);
  return new Set(a === undefined || a.class === 'public' ? [] : [a.class]);
}

/**
 * Checks `target` against rule P3 for a registry at `registry`. Returns undefined when the
 * target is the registry itself (same origin: nothing new is reached), else the policy the
 * connection's lookup must enforce. Throws ERR_FORBIDDEN (terminal: never retried) naming
 * the redacted target and the reason.
 */
export function vetHop(target: URL, registry: URL, ctx: HopContext): HopPolicy | undefined {
  if (target.origin === registry.origin) return undefined;
  const scope = registryScope(registry);
  let allowed: Set<AddressClass>;
  if (target.protocol === 'https:') {
    allowed = new Set(['public', ...scope]);
  } else if (target.protocol === 'http:') {
    if (!scope.has('loopback')) throw hopError(target, ctx, 'plain http (allowed only from a loopback registry to loopback)');
    allowed = new Set(['loopback']);
  } else {
    throw hopError(target, ctx, `scheme ${target.protocol.replace(/:$/, '')} is not https`);
  }
  const literal = classifyAddress(target.hostname);
  if (literal !== undefined && !allowed.has(literal.class)) {
    throw hopError(target, ctx, `${describeAddress(literal)}${target.protocol === 'http:' ? ' over plain http' : ''}`);
  }
  if (literal === undefined && isLocalhostName(target.hostname) && !allowed.has('loopback')) {
    throw hopError(target, ctx, `loopback name ${target.hostname}`);
  }
  return { allowed, key: [...allowed].sort().join(',') };
}

/**
 * A `lookup` for net/tls.connect that resolves every address of `hostname`, refuses the
 * connection (ERR_FORBIDDEN, details.rule = 'P3') if ANY is outside `allowed`, and otherwise
 * connects to exactly the addresses it checked. Address literals never reach a lookup (node
 * connects to them directly); `vetHop` has checked those.
 */
export function checkedLookup(allowed: ReadonlySet<AddressClass>): LookupFunction {
  return (hostname, options, callback) => {
    dnsLookup(hostname, { all: true, verbatim: true }, (err, addresses: LookupAddress[]) => {
      if (err !== null) {
        callback(err, '');
        return;
      }
      for (const a of addresses) {
        const c = classifyAddress(a.address);
        if (c === undefined || !allowed.has(c.class)) {
          const why = c === undefined ? `unparseable address ${a.address}` : describeAddress(c);
          callback(new BerthError('ERR_FORBIDDEN', `${hostname} resolves to ${why}`, { details: { rule: 'P3', reason: why } }), '');
          return;
        }
      }
      const family = options.family === 'IPv4' ? 4 : options.family === 'IPv6' ? 6 : (options.family ?? 0);
      const usable = family === 0 ? addresses : addresses.filter((a) => a.family === family);
      const first = usable[0];
      if (first === undefined) {
        callback(Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND', hostname }), '');
      } else if (options.all === true) {
        callback(null, usable);
      } else {
        callback(null, first.address, first.family);
      }
    });
  };
}

/** The P3 error for a hop refused by `checkedLookup`, or undefined when `err` is something else. */
export function hopRefusal(err: unknown, target: URL, ctx: HopContext): BerthError | undefined {
  if (!(err instanceof BerthError) || err.details['rule'] !== 'P3') return undefined;
  return hopError(target, ctx, err.message, err);
}

/** Drops `Authorization` unless the hop goes to the host the credential belongs to (rule P3). */
export function hopHeaders(headers: Readonly<Record<string, string>>, target: URL, credentialHost: string): Record<string, string> {
  if (target.host === credentialHost) return { ...headers };
  return Object.fromEntries(Object.entries(headers).filter(([k]) => k.toLowerCase() !== 'authorization'));
}

function hopError(target: URL, ctx: HopContext, reason: string, cause?: unknown): BerthError {
  return new BerthError('ERR_FORBIDDEN', `${ctx.what}: refusing ${ctx.kind} ${redactUrl(target.toString())}: ${reason} (rule P3)`, {
    details: { rule: 'P3', target: redactUrl(target.toString()) },
    ...(cause !== undefined ? { cause } : {}),
  });
}

/** `localhost` and `*.localhost` are loopback by definition (RFC 6761), whatever a resolver says. */
function isLocalhostName(hostname: string): boolean {
  const h = hostname.toLowerCase().replace(/\.$/, '');
  return h === 'localhost' || h.endsWith('.localhost');
}

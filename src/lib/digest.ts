import { createHash } from 'node:crypto';
import { BerthError } from './errors.js';

/** A validated `sha256:<64 hex>` string. Only `parseDigest` makes one (rule C1). */
export type Digest = string & { readonly __brand: 'Digest' };

const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;

export function parseDigest(s: unknown, what = 'digest'): Digest {
  if (typeof s !== 'string' || !DIGEST_RE.test(s)) {
    throw new BerthError('ERR_INVALID_IMAGE', `parse ${what} ${JSON.stringify(String(s).slice(0, 100))}: not a sha256 digest`);
  }
  return s as Digest;
}

export function isDigest(s: unknown): s is Digest {
  return typeof s === 'string' && DIGEST_RE.test(s);
}

export function digestHex(d: Digest): string {
  return d.slice('sha256:'.length);
}

export function sha256(data: string | Uint8Array): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}` as Digest;
}

/**
 * chainID per the OCI image spec: ChainID(L0) = DiffID(L0);
 * ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(Ln)).
 */
export function chainIds(diffIds: readonly Digest[]): Digest[] {
  const out: Digest[] = [];
  let prev: Digest | undefined;
  for (const d of diffIds) {
    prev = prev === undefined ? d : sha256(`${prev} ${d}`);
    out.push(prev);
  }
  return out;
}

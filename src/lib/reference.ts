import { BerthError } from './errors.js';
import { isDigest, type Digest } from './digest.js';

/**
 * The image reference grammar (distribution/reference), pure: no registry, no network.
 * It lives in lib so that loading manifests (which canonicalises every image a manifest
 * names) does not load the runtime that pulls them.
 */

/** A parsed image reference, normalised the way docker/containerd do. */
export interface ImageReference {
  /** Registry host[:port], e.g. "docker.io" or "127.0.0.1:5000". */
  domain: string;
  /** Repository path, e.g. "library/busybox". */
  path: string;
  tag: string | undefined;
  digest: Digest | undefined;
  /** Canonical string: domain/path[:tag][@digest]. */
  canonical: string;
}

// distribution/reference grammar, simplified to the parts a reference may hold.
const PATH_COMPONENT = '[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*';
const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const DOMAIN = `(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[0-9a-fA-F:]+\\])(?::[0-9]+)?`;
const TAG = '[\\w][\\w.-]{0,127}';
const REFERENCE_RE = new RegExp(
  `^(?:(${DOMAIN})/)?(${PATH_COMPONENT}(?:/${PATH_COMPONENT})*)(?::(${TAG}))?(?:@(sha256:[a-f0-9]{64}))?$`,
);
const REPO_PATH_RE = new RegExp(`^${PATH_COMPONENT}(?:/${PATH_COMPONENT})*$`);

export const DEFAULT_DOMAIN = 'docker.io';

/** Throws ERR_INVALID_ARGUMENT for anything outside the grammar. */
export function parseReference(s: string): ImageReference {
  if (s.length > 255 + 128 + 72) throw new BerthError('ERR_INVALID_ARGUMENT', `parse image reference: too long (${s.length} bytes)`);
  const m = REFERENCE_RE.exec(s);
  if (m === null) {
    throw new BerthError('ERR_INVALID_ARGUMENT', `parse image reference ${JSON.stringify(s)}: does not match the distribution reference grammar`);
  }
  let domain = m[1];
  let repoPath = m[2] as string;
  // "foo/bar": "foo" is a domain only if it looks like one (has . or :, or is localhost).
  if (domain !== undefined && !domain.includes('.') && !domain.includes(':') && domain !== 'localhost' && !domain.startsWith('[')) {
    repoPath = `${domain}/${repoPath}`;
    domain = undefined;
    if (!REPO_PATH_RE.test(repoPath)) {
      throw new BerthError('ERR_INVALID_ARGUMENT', `parse image reference ${JSON.stringify(s)}: repository names must be lowercase`);
    }
  }
  // Docker's legacy name for its hub is the hub (distribution/reference splitDockerDomain), so
  // index.docker.io/busybox is docker.io/library/busybox (regression index-docker-io-not-normalised).
  if (domain === undefined || domain === 'index.docker.io') {
    domain = DEFAULT_DOMAIN;
  }
  if (domain === DEFAULT_DOMAIN && !repoPath.includes('/')) repoPath = `library/${repoPath}`;
  if (repoPath.length > 255) throw new BerthError('ERR_INVALID_ARGUMENT', `parse image reference ${JSON.stringify(s)}: repository name too long`);
  const digest = m[4] !== undefined && isDigest(m[4]) ? m[4] : undefined;
  let tag = m[3];
  if (tag === undefined && digest === undefined) tag = 'latest';
  const canonical = `${domain}/${repoPath}${tag !== undefined ? `:${tag}` : ''}${digest !== undefined ? `@${digest}` : ''}`;
  return { domain, path: repoPath, tag, digest, canonical };
}

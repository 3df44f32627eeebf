import { BerthError } from '../../lib/errors.js';
import { parseDigest, type Digest } from '../../lib/digest.js';
import { MEDIA } from '../registry/index.js';

/** Parsed, checked image documents. Parse functions validate shape and rules P1/P2. */

export interface Descriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  platform?: Platform;
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface ImageManifest {
  kind: 'manifest';
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
}

export interface ImageIndex {
  kind: 'index';
  mediaType: string;
  manifests: Descriptor[];
}

export interface ImageConfig {
  architecture: string;
  os: string;
  config: {
    User?: string;
    Env?: string[];
    Entrypoint?: string[] | null;
    Cmd?: string[] | null;
    WorkingDir?: string;
    StopSignal?: string;
    Labels?: Record<string, string> | null;
  };
  rootfs: { type: string; diff_ids: Digest[] };
}

export const MAX_LAYERS = 128;

const LAYER_TYPES = new Set([
  'application/vnd.oci.image.layer.v1.tar',
  'application/vnd.oci.image.layer.v1.tar+gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd',
  'application/vnd.docker.image.rootfs.diff.tar.gzip',
  'application/vnd.docker.image.rootfs.diff.tar.zstd',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
  'application/vnd.oci.image.layer.nondistributable.v1.tar',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
]);

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parses the exact verified bytes as one JSON object (P2), or fails naming the document. */
function parseJsonObject(bytes: Buffer, what: string): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new BerthError('ERR_INVALID_IMAGE', `${what}: not JSON: ${(err as Error).message}`);
  }
  if (!isObject(doc)) throw new BerthError('ERR_INVALID_IMAGE', `${what}: not a JSON object`);
  return doc;
}

function descriptor(v: unknown, where: string): Descriptor {
  if (!isObject(v)) throw new BerthError('ERR_INVALID_IMAGE', `${where}: descriptor is not an object`);
  const { mediaType, digest, size, urls, platform } = v;
  if (typeof mediaType !== 'string' || mediaType === '') throw new BerthError('ERR_INVALID_IMAGE', `${where}: descriptor has no mediaType`);
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
    throw new BerthError('ERR_INVALID_IMAGE', `${where}: descriptor size ${String(size)} is not a non-negative integer`);
  }
  if (urls !== undefined) {
    // Foreign layers (rule P3): berth never contacts hosts named by an image.
    throw new BerthError('ERR_UNSUPPORTED', `${where}: descriptor ${String(digest)} has foreign urls, which berth does not fetch`);
  }
  const d: Descriptor = { mediaType, digest: parseDigest(digest, `${where} digest`), size };
  if (isObject(platform) && typeof platform['os'] === 'string' && typeof platform['architecture'] === 'string') {
    d.platform = { os: platform['os'], architecture: platform['architecture'] };
    if (typeof platform['variant'] === 'string') d.platform.variant = platform['variant'];
  }
  return d;
}

/**
 * Parses the exact bytes that were hashed (P2). `declared` is the media type from the
 * descriptor or Content-Type; it must agree with the document's own `mediaType`.
 */
export function parseManifestOrIndex(bytes: Buffer, declared: string, what: string): ImageManifest | ImageIndex {
  const doc = parseJsonObject(bytes, what);
  if (doc['schemaVersion'] !== 2) throw new BerthError('ERR_UNSUPPORTED', `${what}: schemaVersion ${String(doc['schemaVersion'])} is not supported (only 2)`);
  const embedded = typeof doc['mediaType'] === 'string' ? doc['mediaType'] : undefined;
  const hasManifests = 'manifests' in doc;
  const hasLayers = 'layers' in doc || 'config' in doc;
  if (hasManifests && hasLayers) throw new BerthError('ERR_INVALID_IMAGE', `${what}: ambiguous document with both manifests and layers`);
  let mediaType = embedded ?? (declared !== '' && declared !== 'application/json' ? declared : undefined);
  if (mediaType === undefined) mediaType = hasManifests ? MEDIA.ociIndex : MEDIA.ociManifest;
  if (embedded !== undefined && declared !== '' && declared !== 'application/json' && declared !== embedded) {
    throw new BerthError('ERR_INVALID_IMAGE', `${what}: declared media type ${declared} differs from the document's ${embedded}`);
  }
  if (mediaType === MEDIA.ociIndex || mediaType === MEDIA.dockerList) {
    if (!hasManifests || !Array.isArray(doc['manifests'])) throw new BerthError('ERR_INVALID_IMAGE', `${what}: index without a manifests array`);
    const manifests = doc['manifests'].map((m, i) => descriptor(m, `${what} manifests[${i}]`));
    return { kind: 'index', mediaType, manifests };
  }
  if (mediaType === MEDIA.ociManifest || mediaType === MEDIA.dockerManifest) {
    if (hasManifests) throw new BerthError('ERR_INVALID_IMAGE', `${what}: manifest media type but the document has manifests`);
    const config = descriptor(doc['config'], `${what} config`);
    if (!Array.isArray(doc['layers'])) throw new BerthError('ERR_INVALID_IMAGE', `${what}: manifest without a layers array`);
    if (doc['layers'].length > MAX_LAYERS) throw new BerthError('ERR_INVALID_IMAGE', `${what}: ${doc['layers'].length} layers exceed the limit of ${MAX_LAYERS}`);
    const layers = doc['layers'].map((l, i) => descriptor(l, `${what} layers[${i}]`));
    for (const [i, l] of layers.entries()) {
      if (!LAYER_TYPES.has(l.mediaType)) throw new BerthError('ERR_UNSUPPORTED', `${what} layers[${i}]: media type ${l.mediaType} is not a supported layer type`);
    }
    if (config.mediaType !== MEDIA.ociConfig && config.mediaType !== MEDIA.dockerConfig) {
      throw new BerthError('ERR_UNSUPPORTED', `${what}: config media type ${config.mediaType} is not an image config`);
    }
    return { kind: 'manifest', mediaType, config, layers };
  }
  throw new BerthError('ERR_UNSUPPORTED', `${what}: media type ${mediaType} is not a manifest or index`);
}

function stringArray(v: unknown, where: string): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) throw new BerthError('ERR_INVALID_IMAGE', `${where}: not an array of strings`);
  return v as string[];
}

export function parseImageConfig(bytes: Buffer, what: string): ImageConfig {
  const doc = parseJsonObject(bytes, what);
  const rootfs = doc['rootfs'];
  if (!isObject(rootfs) || rootfs['type'] !== 'layers' || !Array.isArray(rootfs['diff_ids'])) {
    throw new BerthError('ERR_INVALID_IMAGE', `${what}: rootfs.type must be "layers" with diff_ids`);
  }
  const diffIds = rootfs['diff_ids'].map((d, i) => parseDigest(d, `${what} rootfs.diff_ids[${i}]`));
  const c = isObject(doc['config']) ? doc['config'] : {};
  const config: ImageConfig['config'] = {};
  if (typeof c['User'] === 'string') config.User = c['User'];
  const env = stringArray(c['Env'], `${what} config.Env`);
  if (env !== undefined) config.Env = env;
  const ep = stringArray(c['Entrypoint'], `${what} config.Entrypoint`);
  if (ep !== undefined) config.Entrypoint = ep;
  const cmd = stringArray(c['Cmd'], `${what} config.Cmd`);
  if (cmd !== undefined) config.Cmd = cmd;
  if (typeof c['WorkingDir'] === 'string') config.WorkingDir = c['WorkingDir'];
  if (typeof c['StopSignal'] === 'string') config.StopSignal = c['StopSignal'];
  return {
    architecture: typeof doc['architecture'] === 'string' ? doc['architecture'] : '',
    os: typeof doc['os'] === 'string' ? doc['os'] : '',
    config,
    rootfs: { type: 'layers', diff_ids: diffIds },
  };
}

export function hostPlatform(): Platform {
  const arch: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };
  return { os: 'linux', architecture: arch[process.arch] ?? process.arch };
}

/**
 * Picks the manifest for `want` from an index: exact os/arch (and variant when both name one).
 * Entries that are indexes themselves are skipped (P1: berth reads one index level). When only such
 * entries match, the image is refused as nested (ERR_INVALID_IMAGE, as a manifest entry that turns
 * out to be an index is) rather than reported as missing a platform that the index does list.
 */
export function selectPlatform(index: ImageIndex, want: Platform, what: string): Descriptor {
  const matches = index.manifests.filter(
    (m) =>
      m.platform !== undefined &&
      m.platform.os === want.os &&
      m.platform.architecture === want.architecture &&
      (want.variant === undefined || m.platform.variant === undefined || m.platform.variant === want.variant),
  );
  const candidates = matches.filter((m) => m.mediaType === MEDIA.ociManifest || m.mediaType === MEDIA.dockerManifest);
  const pick = candidates[0];
  const nested = matches.find((m) => m.mediaType === MEDIA.ociIndex || m.mediaType === MEDIA.dockerList);
  if (pick === undefined && nested !== undefined) {
    throw new BerthError('ERR_INVALID_IMAGE', `${what}: the entry for ${want.os}/${want.architecture} is another index ${nested.digest} (nested indexes are not supported)`);
  }
  if (pick === undefined) {
    const have = index.manifests.map((m) => (m.platform ? `${m.platform.os}/${m.platform.architecture}` : 'unknown')).join(', ');
    throw new BerthError('ERR_NOT_FOUND', `${what}: no manifest for ${want.os}/${want.architecture} in the index (has ${have || 'none'})`);
  }
  return pick;
}

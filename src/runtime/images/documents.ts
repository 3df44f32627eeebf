import { readFileSync } from 'node:fs';
import { BerthError } from '../../lib/errors.js';
import { goField } from '../../lib/gojson.js';
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
  const f = (name: string): unknown => goField(v, name, where);
  const mediaType = f('mediaType');
  const digest = f('digest');
  const size = f('size');
  const urls = f('urls');
  const platform = f('platform');
  if (typeof mediaType !== 'string' || mediaType === '') throw new BerthError('ERR_INVALID_IMAGE', `${where}: descriptor has no mediaType`);
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
    throw new BerthError('ERR_INVALID_IMAGE', `${where}: descriptor size ${String(size)} is not a non-negative integer`);
  }
  if (urls !== undefined && urls !== null) {
    // Foreign layers (rule P3): berth never contacts hosts named by an image.
    throw new BerthError('ERR_UNSUPPORTED', `${where}: descriptor ${String(digest)} has foreign urls, which berth does not fetch`);
  }
  const d: Descriptor = { mediaType, digest: parseDigest(digest, `${where} digest`), size };
  if (isObject(platform)) {
    const os = goField(platform, 'os', `${where} platform`);
    const architecture = goField(platform, 'architecture', `${where} platform`);
    const variant = goField(platform, 'variant', `${where} platform`);
    if (typeof os === 'string' && typeof architecture === 'string') {
      d.platform = { os, architecture };
      if (typeof variant === 'string') d.platform.variant = variant;
    }
  }
  return d;
}

/**
 * Parses the exact bytes that were hashed (P2). `declared` is the media type from the
 * descriptor or Content-Type; it must agree with the document's own `mediaType`. Fields are read
 * as Go reads them (lib/gojson): keys that differ only in case are one field.
 */
export function parseManifestOrIndex(bytes: Buffer, declared: string, what: string): ImageManifest | ImageIndex {
  const doc = parseJsonObject(bytes, what);
  const f = (name: string): unknown => goField(doc, name, what);
  const schemaVersion = f('schemaVersion');
  if (schemaVersion !== 2) throw new BerthError('ERR_UNSUPPORTED', `${what}: schemaVersion ${String(schemaVersion)} is not supported (only 2)`);
  const embeddedRaw = f('mediaType');
  const embedded = typeof embeddedRaw === 'string' ? embeddedRaw : undefined;
  const manifestsRaw = f('manifests');
  const layersRaw = f('layers');
  const configRaw = f('config');
  const hasManifests = manifestsRaw !== undefined;
  const hasLayers = layersRaw !== undefined || configRaw !== undefined;
  if (hasManifests && hasLayers) throw new BerthError('ERR_INVALID_IMAGE', `${what}: ambiguous document with both manifests and layers`);
  let mediaType = embedded ?? (declared !== '' && declared !== 'application/json' ? declared : undefined);
  if (mediaType === undefined) mediaType = hasManifests ? MEDIA.ociIndex : MEDIA.ociManifest;
  if (embedded !== undefined && declared !== '' && declared !== 'application/json' && declared !== embedded) {
    throw new BerthError('ERR_INVALID_IMAGE', `${what}: declared media type ${declared} differs from the document's ${embedded}`);
  }
  if (mediaType === MEDIA.ociIndex || mediaType === MEDIA.dockerList) {
    if (!hasManifests || !Array.isArray(manifestsRaw)) throw new BerthError('ERR_INVALID_IMAGE', `${what}: index without a manifests array`);
    const manifests = manifestsRaw.map((m, i) => descriptor(m, `${what} manifests[${i}]`));
    return { kind: 'index', mediaType, manifests };
  }
  if (mediaType === MEDIA.ociManifest || mediaType === MEDIA.dockerManifest) {
    if (hasManifests) throw new BerthError('ERR_INVALID_IMAGE', `${what}: manifest media type but the document has manifests`);
    const config = descriptor(configRaw, `${what} config`);
    if (!Array.isArray(layersRaw)) throw new BerthError('ERR_INVALID_IMAGE', `${what}: manifest without a layers array`);
    if (layersRaw.length > MAX_LAYERS) throw new BerthError('ERR_INVALID_IMAGE', `${what}: ${layersRaw.length} layers exceed the limit of ${MAX_LAYERS}`);
    const layers = layersRaw.map((l, i) => descriptor(l, `${what} layers[${i}]`));
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

/**
 * What a manifest is when it is not a container image but an artifact stored beside one (a
 * cosign signature, an SBOM, a buildx attestation): its `artifactType`, a config that is not an
 * image config, or a layer that is no filesystem layer. Undefined for an image manifest (and for
 * bytes that are no manifest at all: parseManifestOrIndex says what is wrong with those).
 */
export function artifactKind(bytes: Buffer): string | undefined {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch {
    return undefined;
  }
  if (!isObject(doc)) return undefined;
  const artifactType = goField(doc, 'artifactType', 'manifest');
  if (typeof artifactType === 'string' && artifactType !== '') return `artifact type ${artifactType}`;
  const config = goField(doc, 'config', 'manifest');
  const configType = isObject(config) ? goField(config, 'mediaType', 'manifest config') : undefined;
  if (typeof configType === 'string' && configType !== MEDIA.ociConfig && configType !== MEDIA.dockerConfig) return `config type ${configType}`;
  const layers = goField(doc, 'layers', 'manifest');
  for (const l of Array.isArray(layers) ? layers : []) {
    const t = isObject(l) ? goField(l, 'mediaType', 'manifest layer') : undefined;
    if (typeof t === 'string' && !LAYER_TYPES.has(t)) return `layer type ${t}`;
  }
  return undefined;
}

/** Whether an image for `p` is one for `want` (os and architecture, each normalised; as ImageService.prepare checks the config). */
export function samePlatform(p: Platform, want: Platform): boolean {
  const a = normalizePlatform(p);
  const b = normalizePlatform(want);
  return a.os === b.os && a.architecture === b.architecture;
}

/** `os/architecture[/variant]`. */
export function platformName(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant !== undefined && p.variant !== '' ? `/${p.variant}` : ''}`;
}

function stringArray(v: unknown, where: string): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) throw new BerthError('ERR_INVALID_IMAGE', `${where}: not an array of strings`);
  return v as string[];
}

/** The image config, its fields read as Go reads them (lib/gojson). */
export function parseImageConfig(bytes: Buffer, what: string): ImageConfig {
  const doc = parseJsonObject(bytes, what);
  const rootfs = goField(doc, 'rootfs', what);
  const type = isObject(rootfs) ? goField(rootfs, 'type', `${what} rootfs`) : undefined;
  const rawDiffIds = isObject(rootfs) ? goField(rootfs, 'diff_ids', `${what} rootfs`) : undefined;
  if (type !== 'layers' || !Array.isArray(rawDiffIds)) {
    throw new BerthError('ERR_INVALID_IMAGE', `${what}: rootfs.type must be "layers" with diff_ids`);
  }
  const diffIds = rawDiffIds.map((d, i) => parseDigest(d, `${what} rootfs.diff_ids[${i}]`));
  const rawConfig = goField(doc, 'config', what);
  const c = isObject(rawConfig) ? rawConfig : {};
  const cf = (name: string): unknown => goField(c, name, `${what} config`);
  const config: ImageConfig['config'] = {};
  const user = cf('User');
  if (typeof user === 'string') config.User = user;
  const env = stringArray(cf('Env'), `${what} config.Env`);
  if (env !== undefined) config.Env = env;
  const ep = stringArray(cf('Entrypoint'), `${what} config.Entrypoint`);
  if (ep !== undefined) config.Entrypoint = ep;
  const cmd = stringArray(cf('Cmd'), `${what} config.Cmd`);
  if (cmd !== undefined) config.Cmd = cmd;
  const workdir = cf('WorkingDir');
  if (typeof workdir === 'string') config.WorkingDir = workdir;
  const stop = cf('StopSignal');
  if (typeof stop === 'string') config.StopSignal = stop;
  const architecture = goField(doc, 'architecture', what);
  const os = goField(doc, 'os', what);
  return {
    architecture: typeof architecture === 'string' ? architecture : '',
    os: typeof os === 'string' ? os : '',
    config,
    rootfs: { type: 'layers', diff_ids: diffIds },
  };
}

export function hostPlatform(): Platform {
  const arch: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };
  const architecture = arch[process.arch] ?? process.arch;
  // As containerd's cpuVariant: only a 32-bit ARM host names its variant (from /proc/cpuinfo);
  // others leave it empty, which matches only an image's baseline (never amd64/v3 on a host that
  // may not have those instructions).
  if (architecture === 'arm') {
    const v = armCpuVariant();
    if (v !== undefined) return { os: 'linux', architecture, variant: v };
  }
  return { os: 'linux', architecture };
}

function armCpuVariant(): string | undefined {
  try {
    const m = /^CPU architecture\s*:\s*(\d+)/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    const n = Number(m?.[1] ?? NaN);
    if (n >= 8) return 'v8';
    if (n >= 5 && n <= 7) return `v${n}`;
  } catch {
    // not Linux, or no /proc: the default (arm/v7) applies
  }
  return undefined;
}

/**
 * containerd's normalisation (platforms.Normalize): architecture aliases, and each
 * architecture's default variant written one way — amd64 v1 and arm64 v8 are no variant, arm
 * without one is v7 — so that equal platforms compare equal.
 */
export function normalizePlatform(p: Platform): Platform {
  let arch = p.architecture.toLowerCase();
  let variant = (p.variant ?? '').toLowerCase();
  switch (arch) {
    case 'i386':
      arch = '386';
      variant = '';
      break;
    case 'x86_64':
    case 'x86-64':
    case 'amd64':
      arch = 'amd64';
      if (variant === 'v1') variant = '';
      break;
    case 'aarch64':
    case 'arm64':
      arch = 'arm64';
      if (variant === '8' || variant === 'v8' || variant === 'v8.0') variant = '';
      break;
    case 'armhf':
      arch = 'arm';
      variant = 'v7';
      break;
    case 'armel':
      arch = 'arm';
      variant = 'v6';
      break;
    case 'arm':
      if (variant === '') variant = 'v7';
      else if (/^[5-8]$/.test(variant)) variant = `v${variant}`;
      break;
    default:
      break;
  }
  return { os: p.os.toLowerCase(), architecture: arch, ...(variant !== '' ? { variant } : {}) };
}

/**
 * The platforms a host of `want` runs, best first (containerd's platformVector): its own, then
 * the older variants of its architecture, then the 32-bit ones it also runs — amd64/v3 → v2 →
 * amd64 → 386; arm/v7 → v6 → v5; arm64 → arm/v8 → arm/v7 → v6 → v5.
 */
function platformVector(want: Platform): Platform[] {
  const w = normalizePlatform(want);
  const out: Platform[] = [w];
  const num = (v: string | undefined, dflt: number): number => (v === undefined ? dflt : Number(/^v(\d+)/.exec(v)?.[1] ?? NaN));
  if (w.architecture === 'amd64') {
    for (let n = num(w.variant, 1) - 1; n >= 1; n--) out.push({ os: w.os, architecture: 'amd64', ...(n > 1 ? { variant: `v${n}` } : {}) });
    out.push({ os: w.os, architecture: '386' });
  } else if (w.architecture === 'arm') {
    for (let n = num(w.variant, 7) - 1; n >= 5; n--) out.push({ os: w.os, architecture: 'arm', variant: `v${n}` });
  } else if (w.architecture === 'arm64') {
    if (w.variant !== undefined) out.push({ os: w.os, architecture: 'arm64' });
    for (let n = 8; n >= 5; n--) out.push({ os: w.os, architecture: 'arm', variant: `v${n}` });
  }
  return out;
}

/**
 * Picks the manifest for `want` from an index as containerd does: both sides normalised, the
 * platforms `want` runs tried best first (platformVector), the first entry of the best one taken.
 * An entry for a newer variant than the host's is never taken (amd64/v3 for a plain amd64 host:
 * SIGILL on a CPU without those instructions). Entries that are indexes themselves are skipped
 * (P1: berth reads one index level). When only such entries match, the image is refused as
 * nested (ERR_INVALID_IMAGE, as a manifest entry that turns out to be an index is) rather than
 * reported as missing a platform that the index does list.
 */
export function selectPlatform(index: ImageIndex, want: Platform, what: string): Descriptor {
  const same = (a: Platform, b: Platform): boolean => a.os === b.os && a.architecture === b.architecture && (a.variant ?? '') === (b.variant ?? '');
  const entries = index.manifests.filter((m) => m.platform !== undefined).map((m) => ({ m, p: normalizePlatform(m.platform as Platform) }));
  let nested: Descriptor | undefined;
  for (const p of platformVector(want)) {
    const matches = entries.filter((e) => same(e.p, p)).map((e) => e.m);
    const pick = matches.find((m) => m.mediaType === MEDIA.ociManifest || m.mediaType === MEDIA.dockerManifest);
    if (pick !== undefined) return pick;
    nested ??= matches.find((m) => m.mediaType === MEDIA.ociIndex || m.mediaType === MEDIA.dockerList);
  }
  if (nested !== undefined) {
    throw new BerthError('ERR_INVALID_IMAGE', `${what}: the entry for ${want.os}/${want.architecture} is another index ${nested.digest} (nested indexes are not supported)`);
  }
  const name = (p: Platform): string => `${p.os}/${p.architecture}${p.variant !== undefined ? `/${p.variant}` : ''}`;
  const have = index.manifests.map((m) => (m.platform ? name(m.platform) : 'unknown')).join(', ');
  throw new BerthError('ERR_NOT_FOUND', `${what}: no manifest for ${name(want)} in the index (has ${have || 'none'})`);
}

import { createHash } from 'node:crypto';
import type { BuiltImage } from '../../scripts/fixture-image.js';
import { packTar, type PackHeader } from './tar-pack.js';

/**
 * Image archives written here, as other tools write them, for `images import` tests: an OCI
 * image layout tar (skopeo's oci-archive, containerd's export) and a `docker save` tar of the
 * pre-25 layout (`<v1 id>/layer.tar`, `<config hex>.json`, manifest.json).
 */

const hexOf = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** An index.json entry: a descriptor of a blob given in `blobs`, with its annotations and platform. */
export interface LayoutEntry {
  mediaType: string;
  data: Buffer;
  annotations?: Record<string, string>;
  platform?: { os: string; architecture: string; variant?: string };
}

/** The blobs of an image: manifest, config and layers. */
export function imageBlobs(img: BuiltImage): Buffer[] {
  return [img.manifest, img.config, ...img.layers.map((l) => l.data)];
}

/** An OCI image index (the document) listing `manifests`. */
export function indexOf(manifests: readonly LayoutEntry[]): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: manifests.map(descriptorOf),
    }),
  );
}

function descriptorOf(e: LayoutEntry): Record<string, unknown> {
  return {
    mediaType: e.mediaType,
    digest: `sha256:${hexOf(e.data)}`,
    size: e.data.length,
    ...(e.platform !== undefined ? { platform: e.platform } : {}),
    ...(e.annotations !== undefined ? { annotations: e.annotations } : {}),
  };
}

/** An OCI layout tar: oci-layout, index.json listing `entries`, and every blob (deduplicated). */
export async function ociLayoutTar(entries: readonly LayoutEntry[], blobs: readonly Buffer[]): Promise<Buffer> {
  const seen = new Set<string>();
  const members: { header: PackHeader; data?: Buffer }[] = [
    { header: { name: 'blobs/', type: 'directory', mode: 0o755, mtime: new Date(0) } },
    { header: { name: 'blobs/sha256/', type: 'directory', mode: 0o755, mtime: new Date(0) } },
  ];
  for (const b of [...entries.map((e) => e.data), ...blobs]) {
    const hex = hexOf(b);
    if (seen.has(hex)) continue;
    seen.add(hex);
    members.push({ header: { name: `blobs/sha256/${hex}`, size: b.length, mode: 0o644, mtime: new Date(0) }, data: b });
  }
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: entries.map(descriptorOf) }));
  members.push({ header: { name: 'oci-layout', size: 30, mode: 0o644, mtime: new Date(0) }, data: Buffer.from('{"imageLayoutVersion":"1.0.0"}') });
  members.push({ header: { name: 'index.json', size: index.length, mode: 0o644, mtime: new Date(0) }, data: index });
  return packTar(members);
}

/** An OCI layout tar of one image, its index.json entry annotated with `annotations`. */
export function ociArchiveOf(img: BuiltImage, annotations: Record<string, string>): Promise<Buffer> {
  return ociLayoutTar([{ mediaType: 'application/vnd.oci.image.manifest.v1+json', data: img.manifest, annotations }], imageBlobs(img));
}

/**
 * Builds berth's fixture image from files on this machine (busybox-static) and pushes it with the distribution
 * push API. No docker, skopeo or umoci: the bytes are ours, so tests know exactly what a pull must reproduce.
 *
 *   node dist/scripts/fixture-image.js push --registry 127.0.0.1:5000 --repo berth/demo --tag 1.0 [--page-file F]
 */
import { execFile } from 'node:child_process';
import { promises as fsp, realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { gzip as gzipCb, constants as zc } from 'node:zlib';
import { pack as tarPack, type Header as TarHeader } from 'tar-stream';
import { Agent, request, type Dispatcher } from 'undici';
import { sha256, type Digest } from '../src/lib/digest.js';
import { BerthError, messageOf } from '../src/lib/errors.js';

const execFileP = promisify(execFile);
const gzip = promisify(gzipCb);

export const MEDIA_TYPE_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const MEDIA_TYPE_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const MEDIA_TYPE_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';

export interface BuiltLayer {
  /** Digest of the compressed bytes (what the manifest and the registry name). */
  readonly digest: Digest;
  readonly size: number;
  /** Digest of the uncompressed tar (what the config's rootfs.diff_ids name). */
  readonly diffId: Digest;
  readonly data: Buffer;
  readonly mediaType: string;
}

export interface BuiltImage {
  readonly manifest: Buffer;
  readonly manifestDigest: Digest;
  readonly config: Buffer;
  readonly configDigest: Digest;
  readonly layers: readonly BuiltLayer[];
}

export const DEFAULT_PAGE =
  '<!doctype html>\n<html><head><title>berth demo</title></head>\n' +
  '<body><h1>berth demo</h1><p>Served by busybox httpd in a berth container.</p></body></html>\n';

const BUSYBOX = '/bin/busybox';
// Fixed time and gzip level make the digests a function of the inputs only (busybox binary + page).
const EPOCH = new Date('2024-01-01T00:00:00Z');
const CREATED = EPOCH.toISOString().replace('.000Z', 'Z');
const GZIP_LEVEL = 9;

/** Node's process.arch → the OCI/Go GOARCH name. */
export function ociArchitecture(arch: string = process.arch): string {
  const map: Readonly<Record<string, string>> = {
    x64: 'amd64',
    arm64: 'arm64',
    arm: 'arm',
    ia32: '386',
    ppc64: 'ppc64le', // Node reports ppc64 for the little-endian Linux port as well
    s390x: 's390x',
    riscv64: 'riscv64',
  };
  const oci = map[arch];
  if (oci === undefined) throw new BerthError('ERR_UNSUPPORTED', `map architecture ${arch}: no oci name known`);
  return oci;
}

type FixtureEntry =
  | { readonly kind: 'dir'; readonly name: string; readonly mode: number }
  | { readonly kind: 'file'; readonly name: string; readonly mode: number; readonly data: Buffer }
  | { readonly kind: 'symlink'; readonly name: string; readonly target: string };

/** A tar of `entries` in byte order of their names, every header fixed except name, type, mode and size. */
async function tarOf(entries: readonly FixtureEntry[]): Promise<Buffer> {
  const sorted = [...entries].sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)));
  const pack = tarPack();
  const chunks: Buffer[] = [];
  const drained = (async () => {
    for await (const chunk of pack) chunks.push(chunk as Buffer);
  })();
  for (const e of sorted) {
    const base: Partial<TarHeader> & { name: string } = { name: e.name, uid: 0, gid: 0, uname: 'root', gname: 'root', mtime: EPOCH };
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error | null): void => (err ? reject(err) : resolve());
      switch (e.kind) {
        case 'dir':
          pack.entry({ ...base, type: 'directory', mode: e.mode }, done);
          break;
        case 'file':
          pack.entry({ ...base, type: 'file', mode: e.mode, size: e.data.length }, e.data, done);
          break;
        case 'symlink':
          pack.entry({ ...base, type: 'symlink', mode: 0o777, linkname: e.target }, done);
          break;
      }
    });
  }
  pack.finalize();
  await drained;
  return Buffer.concat(chunks);
}

async function layerOf(entries: readonly FixtureEntry[]): Promise<BuiltLayer> {
  const tar = await tarOf(entries);
  const data = await gzip(tar, { level: GZIP_LEVEL, strategy: zc.Z_DEFAULT_STRATEGY });
  return { digest: sha256(data), size: data.length, diffId: sha256(tar), data, mediaType: MEDIA_TYPE_LAYER_GZIP };
}

let appletsOnce: Promise<string[]> | undefined;

/** `busybox --list`, run once per process; the answer only changes if the host's busybox does. */
function busyboxApplets(): Promise<string[]> {
  appletsOnce ??= execFileP(BUSYBOX, ['--list']).then(
    ({ stdout }) =>
      stdout
        .split('\n')
        .map((s) => s.trim())
        .filter((s) => s !== '' && s !== 'busybox' && !s.includes('/')),
    (err: unknown) => {
      appletsOnce = undefined;
      throw new BerthError('ERR_PRECONDITION', `list busybox applets ${BUSYBOX}: ${messageOf(err)} (install busybox-static)`, {
        cause: err,
      });
    },
  );
  return appletsOnce;
}

/**
 * Builds the two-layer busybox image: layer 1 is the filesystem skeleton, busybox and one symlink per applet;
 * layer 2 is /etc/passwd, /etc/group and /var/www/index.html (`page`, default {@link DEFAULT_PAGE}).
 * Same host busybox + same page → same manifest digest. `user`: the config's User (by name or id).
 */
export async function buildBusyboxImage(opts: { page?: string; user?: string } = {}): Promise<BuiltImage> {
  const [busybox, applets] = await Promise.all([fsp.readFile(BUSYBOX), busyboxApplets()]);

  const base: FixtureEntry[] = [
    ...['bin', 'etc', 'var', 'var/www', 'proc', 'sys', 'dev'].map((name) => ({ kind: 'dir' as const, name, mode: 0o755 })),
    { kind: 'dir', name: 'root', mode: 0o700 },
    { kind: 'dir', name: 'tmp', mode: 0o1777 },
    { kind: 'file', name: 'bin/busybox', mode: 0o755, data: busybox },
    ...applets.map((a) => ({ kind: 'symlink' as const, name: `bin/${a}`, target: 'busybox' })),
  ];
  const etc: FixtureEntry[] = [
    {
      kind: 'file',
      name: 'etc/passwd',
      mode: 0o644,
      data: Buffer.from('root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n'),
    },
    { kind: 'file', name: 'etc/group', mode: 0o644, data: Buffer.from('root:x:0:\nnogroup:x:65534:\n') },
    { kind: 'file', name: 'var/www/index.html', mode: 0o644, data: Buffer.from(opts.page ?? DEFAULT_PAGE) },
  ];
  const layers = [await layerOf(base), await layerOf(etc)];

  const config = Buffer.from(
    JSON.stringify({
      created: CREATED,
      architecture: ociArchitecture(),
      os: 'linux',
      config: {
        Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
        Cmd: ['sh'],
        WorkingDir: '/',
        ...(opts.user !== undefined ? { User: opts.user } : {}),
      },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      history: [
        { created: CREATED, created_by: `berth fixture-image: busybox and ${applets.length} applet links` },
        { created: CREATED, created_by: 'berth fixture-image: /etc/passwd, /etc/group, /var/www/index.html' },
      ],
    }),
  );
  return ociImageOf(config, layers);
}

/** The OCI image manifest naming `config` and `layers` (in order), with the digests of both documents. */
export function ociImageOf(config: Buffer, layers: readonly BuiltLayer[]): BuiltImage {
  const configDigest = sha256(config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA_TYPE_MANIFEST,
      config: { mediaType: MEDIA_TYPE_CONFIG, digest: configDigest, size: config.length },
      layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
    }),
  );
  return { manifest, manifestDigest: sha256(manifest), config, configDigest, layers };
}

// Distribution's reference grammar for repository paths and tags.
const REPO_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const TAG_RE = /^\w[\w.-]{0,127}$/;

interface Reply {
  readonly status: number;
  readonly headers: Dispatcher.ResponseData['headers'];
  readonly body: string;
}

/** One request, body read in full. Throws ERR_NETWORK naming `step`, or ERR_REGISTRY if status is not `expect`. */
async function send(
  step: string,
  url: string,
  opts: { method: Dispatcher.HttpMethod; dispatcher: Dispatcher; headers?: Record<string, string>; body?: Buffer },
  expect: readonly number[],
): Promise<Reply> {
  let res: Dispatcher.ResponseData;
  try {
    res = await request(url, opts);
  } catch (err) {
    throw new BerthError('ERR_NETWORK', `${step}: ${opts.method} ${url}: ${messageOf(err)}`, { cause: err });
  }
  const body = await res.body.text();
  if (!expect.includes(res.statusCode)) {
    throw new BerthError(
      'ERR_REGISTRY',
      `${step}: ${opts.method} ${url}: registry answered ${res.statusCode}: ${body.slice(0, 2000).trim() || '(empty body)'}`,
      { details: { status: res.statusCode } },
    );
  }
  return { status: res.statusCode, headers: res.headers, body };
}

function headerValue(reply: Reply, name: string): string | undefined {
  const v = reply.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

interface PushTarget {
  readonly base: string;
  readonly repo: string;
  readonly dispatcher: Dispatcher;
}

async function pushBlob(t: PushTarget, digest: Digest, data: Buffer): Promise<'exists' | 'uploaded'> {
  const step = `push blob ${digest} to ${t.repo}`;
  const { dispatcher } = t;
  const head = await send(`${step}: check`, `${t.base}/v2/${t.repo}/blobs/${digest}`, { method: 'HEAD', dispatcher }, [200, 404]);
  if (head.status === 200) return 'exists';

  const startUrl = `${t.base}/v2/${t.repo}/blobs/uploads/`;
  const start = await send(`${step}: start upload`, startUrl, { method: 'POST', dispatcher }, [202]);
  const location = headerValue(start, 'location');
  if (location === undefined) throw new BerthError('ERR_REGISTRY', `${step}: start upload: 202 without Location`);
  // Location may be relative (the spec allows it); append rather than rebuild the query so `_state` stays byte-exact.
  const uploadUrl = new URL(location, startUrl).href;
  const putUrl = `${uploadUrl}${uploadUrl.includes('?') ? '&' : '?'}digest=${encodeURIComponent(digest)}`;
  const put = await send(
    `${step}: monolithic upload`,
    putUrl,
    { method: 'PUT', dispatcher, headers: { 'content-type': 'application/octet-stream' }, body: data },
    [201],
  );
  const stored = headerValue(put, 'docker-content-digest');
  if (stored !== undefined && stored !== digest) {
    throw new BerthError('ERR_DIGEST_MISMATCH', `${step}: registry stored ${stored}`);
  }
  return 'uploaded';
}

/**
 * Pushes config, layers (skipping blobs the registry already has) and then the manifest under `tag`.
 * Idempotent: pushing the same image again uploads nothing and re-PUTs the same manifest.
 * Throws ERR_INVALID_ARGUMENT for a bad repo or tag; ERR_NETWORK / ERR_REGISTRY naming the step, method, URL,
 * status and body; ERR_DIGEST_MISMATCH if the registry's Docker-Content-Digest differs from ours.
 * A failure may leave some blobs pushed, which is harmless (blobs are content-addressed).
 */
export async function pushImage(registryUrl: string, repo: string, tag: string, img: BuiltImage): Promise<void> {
  if (!REPO_RE.test(repo)) throw new BerthError('ERR_INVALID_ARGUMENT', `push image ${repo}: invalid repository name`);
  if (!TAG_RE.test(tag)) throw new BerthError('ERR_INVALID_ARGUMENT', `push image ${repo}:${tag}: invalid tag`);
  const dispatcher = new Agent({ connections: 4 });
  const t: PushTarget = { base: registryUrl.replace(/\/+$/, ''), repo, dispatcher };
  try {
    await pushBlob(t, img.configDigest, img.config);
    for (const layer of img.layers) await pushBlob(t, layer.digest, layer.data);

    const step = `push manifest ${repo}:${tag}`;
    const put = await send(
      step,
      `${t.base}/v2/${repo}/manifests/${tag}`,
      { method: 'PUT', dispatcher, headers: { 'content-type': MEDIA_TYPE_MANIFEST }, body: img.manifest },
      [201],
    );
    const stored = headerValue(put, 'docker-content-digest');
    if (stored !== img.manifestDigest) {
      throw new BerthError('ERR_DIGEST_MISMATCH', `${step}: registry reports ${String(stored)}, expected ${img.manifestDigest}`);
    }
  } finally {
    await dispatcher.close();
  }
}

async function main(argv: readonly string[]): Promise<number> {
  const usage =
    'usage: fixture-image push --registry HOST:PORT --repo REPO --tag TAG [--page-file FILE]\n' +
    '       (--registry may also be a http:// URL)';
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      options: {
        registry: { type: 'string' },
        repo: { type: 'string' },
        tag: { type: 'string' },
        'page-file': { type: 'string' },
      },
    });
  } catch (err) {
    process.stderr.write(`${messageOf(err)}\n${usage}\n`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 1 || positionals[0] !== 'push' || !values.registry || !values.repo || !values.tag) {
    process.stderr.write(`${usage}\n`);
    return 2;
  }
  const registryUrl = /^https?:\/\//.test(values.registry) ? values.registry : `http://${values.registry}`;
  const pageFile = values['page-file'];
  const page = pageFile === undefined ? undefined : await fsp.readFile(pageFile, 'utf8');
  const img = await buildBusyboxImage(page === undefined ? {} : { page });
  await pushImage(registryUrl, values.repo, values.tag, img);
  process.stdout.write(`${img.manifestDigest}\n`);
  return 0;
}

function isDirectRun(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return import.meta.url === pathToFileURL(realpathSync(script)).href;
  } catch {
    return false;
  }
}

if (isDirectRun()) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`fixture-image: ${messageOf(err)}\n`);
      process.exitCode = 1;
    },
  );
}

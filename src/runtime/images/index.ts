import { availableParallelism } from 'node:os';
import type { Readable } from 'node:stream';
import { BerthError, messageOf } from '../../lib/errors.js';
import { sleep } from '../../lib/time.js';
import { eachBounded } from '../../lib/bounded.js';
import { chainIds, type Digest } from '../../lib/digest.js';
import type { Logger } from '../../lib/log.js';
import { PULL_REPORT_MS, type LayerProgress } from '../../lib/progress.js';
import type { ContentStore } from '../content/index.js';
import { parseReference, type CredentialSource, type RegistryClient, type ImageReference } from '../registry/index.js';
import type { Snapshotter } from '../snapshots/index.js';
import type { LayerRecord, StateStore } from '../state/index.js';
import type { Lease } from '../gc/leases.js';
import { crashPoint } from '../../lib/crashpoint.js';
import { unpackLayer } from '../unpack/index.js';
import { BlobFeed, feedSource, finishLayer, UnpackThreads } from '../unpack/thread.js';
import { hostPlatform, parseImageConfig, parseManifestOrIndex, selectPlatform, type ImageConfig, type ImageManifest, type Platform } from './documents.js';

export { hostPlatform, type ImageConfig, type Platform } from './documents.js';

/** An image ready to run: every layer is a ready snapshot. */
export interface LocalImage {
  ref: string; // canonical reference
  digest: Digest; // platform manifest digest
  indexDigest: Digest | null;
  config: ImageConfig;
  layers: LayerRecord[];
  chainIds: Digest[];
}

/** A platform manifest checked against its config (ImageService.prepare): what unpack and record need. */
export interface PreparedImage {
  manifest: ImageManifest;
  manifestDigest: Digest;
  /** The exact bytes that hash to manifestDigest. */
  manifestBytes: Buffer;
  configBytes: Buffer;
  config: ImageConfig;
  layers: LayerRecord[];
  chainIds: Digest[];
  /** The index the manifest was picked from, stored beside it. */
  index: { digest: Digest; bytes: Buffer } | null;
}

export interface PullOptions {
  platform?: Platform;
  signal?: AbortSignal;
  /** Asked before the node's config.json: a pod's imagePullSecrets. */
  credentials?: CredentialSource;
  /** Protects what the pull writes from GC until its rows are recorded (gc/leases); the caller releases it. */
  lease?: Lease;
}

/** The layers a pull downloads, with their bytes written so far; `image` is the reference as given to `pull`. */
export interface PullProgress {
  image: string;
  layers: LayerProgress[];
}

/**
 * Images: pull = resolve → platform → fetch config and layers into the content store →
 * unpack each layer into its chainID snapshot → record the image in one row.
 * Bytes first, then rows (STYLE rule 5).
 */
export class ImageService {
  private readonly progressListeners = new Set<(p: PullProgress) => void>();

  constructor(
    private readonly state: StateStore,
    private readonly content: ContentStore,
    private readonly snapshots: Snapshotter,
    private readonly registry: RegistryClient,
    private readonly log: Logger,
  ) {}

  /**
   * Calls `fn` while pulls download layers: at most every PULL_REPORT_MS per pull, and at once
   * when a layer is complete (live progress; nothing is reported for layers already here).
   */
  onPullProgress(fn: (p: PullProgress) => void): () => void {
    this.progressListeners.add(fn);
    return () => this.progressListeners.delete(fn);
  }

  /** The local image for `ref` if it is fully present, else undefined. */
  get(refString: string): LocalImage | undefined {
    const ref = parseReference(refString);
    const rec = this.state.getImage(ref.canonical);
    if (rec === undefined) return undefined;
    // A pinned name is only ever the content it pins: a row that says otherwise (written by an
    // older `images tag` to a digest name) is not that image (regression tag-to-digest-name).
    if (ref.digest !== undefined && rec.digest !== ref.digest && rec.indexDigest !== ref.digest) return undefined;
    const m = this.state.getManifest(rec.digest);
    if (m === undefined) return undefined;
    const ids = m.layers.map((l) => l.chainId);
    if (!ids.every((id) => this.snapshots.isReady(id))) return undefined;
    return {
      ref: ref.canonical,
      digest: rec.digest,
      indexDigest: rec.indexDigest,
      config: parseImageConfig(Buffer.from(m.config), `image ${ref.canonical} config`),
      layers: m.layers,
      chainIds: ids,
    };
  }

  /** Asks the registry which digest `ref` names now (the top-level document: index or manifest). */
  async resolve(refString: string, signal?: AbortSignal, credentials?: CredentialSource): Promise<Digest> {
    const ref = parseReference(refString);
    if (ref.digest !== undefined) return ref.digest;
    const registry: RegistryClient = credentials !== undefined ? this.registry.withCredentials(credentials) : this.registry;
    return registry.resolveDigest(ref, ref.tag ?? 'latest', signal);
  }

  async pull(refString: string, opts: PullOptions = {}): Promise<LocalImage> {
    const ref = parseReference(refString);
    const registry: RegistryClient = opts.credentials !== undefined ? this.registry.withCredentials(opts.credentials) : this.registry;
    const want = opts.platform ?? hostPlatform();
    const what = `pull ${ref.canonical}`;
    const top = await registry.fetchManifest(ref, ref.digest ?? ref.tag ?? 'latest', opts.signal);
    let doc = parseManifestOrIndex(top.bytes, top.mediaType, `${what} manifest ${top.digest}`);
    let manifestDigest = top.digest;
    let manifestBytes = top.bytes;
    let indexDigest: Digest | null = null;
    if (doc.kind === 'index') {
      indexDigest = top.digest;
      const desc = selectPlatform(doc, want, `${what} index ${top.digest}`);
      const m = await registry.fetchManifest(ref, desc.digest, opts.signal);
      if (m.mediaType !== '' && m.mediaType !== 'application/json' && m.mediaType !== desc.mediaType) {
        throw new BerthError('ERR_INVALID_IMAGE', `${what}: manifest ${desc.digest} is served as ${m.mediaType}, the index says ${desc.mediaType}`);
      }
      if (m.bytes.length !== desc.size) {
        throw new BerthError('ERR_DIGEST_MISMATCH', `${what}: manifest ${desc.digest} is ${m.bytes.length} bytes, index says ${desc.size}`);
      }
      doc = parseManifestOrIndex(m.bytes, desc.mediaType, `${what} manifest ${desc.digest}`);
      if (doc.kind !== 'manifest') throw new BerthError('ERR_INVALID_IMAGE', `${what}: index ${top.digest} points to another index (nested indexes are not supported)`);
      manifestDigest = m.digest;
      manifestBytes = m.bytes;
    }
    const manifest = doc;
    const configBytes = await registry.fetchSmallBlob(ref, manifest.config);
    const img = this.prepare(what, { manifest, digest: manifestDigest, bytes: manifestBytes }, configBytes, want, indexDigest === null ? null : { digest: indexDigest, bytes: top.bytes });
    const { layers } = img;
    // Leased before anything is looked at or written: a GC from here on keeps them (issue 14).
    await opts.lease?.add([
      ...[manifest.config.digest, manifestDigest, ...(indexDigest !== null ? [indexDigest] : [])].map((id) => ({ kind: 'blob' as const, id })),
      ...layers.flatMap((l) => [
        { kind: 'blob' as const, id: l.digest },
        { kind: 'ingest' as const, id: l.digest },
        { kind: 'snapshot' as const, id: l.chainId },
      ]),
    ]);

    // Layers download in parallel (bounded), and each is extracted from its partial file while it
    // downloads (`feeds`, see unpack). The first failure — a download or
    // an unpack — stops the rest, and the pull settles only once everything has stopped: the
    // caller releases the state lock after us.
    const report = this.progressReporter(refString);
    const stop = new AbortController();
    const signal = opts.signal !== undefined ? AbortSignal.any([opts.signal, stop.signal]) : stop.signal;
    const fetched = layers.map(() => settleable());
    const feeds = layers.map((l) => new BlobFeed(l.size));
    const downloads = eachBounded(
      layers.map((l, i) => ({ l, i })),
      3,
      async ({ l, i }, layerSignal) => {
        try {
          if (!(this.snapshots.isReady(l.chainId) || (await this.content.has(l.digest)))) await this.fetchLayer(registry, ref, l, { signal: layerSignal, ...(opts.signal !== undefined ? { callerSignal: opts.signal } : {}), ...(report !== undefined ? { report } : {}), ...(feeds[i] !== undefined ? { feed: feeds[i] } : {}) });
          fetched[i]?.settle();
        } catch (err) {
          fetched[i]?.settle(err);
          throw err;
        } finally {
          feeds[i]?.close();
        }
      },
      { signal },
    );
    // A failure stops the downloads not yet started too: their layers' unpacks, waiting for a
    // blob or a partial file that will never come, are told so (regression unstarted-layer-hangs-pull).
    void downloads.catch((err: unknown) => {
      for (const f of fetched) f.settle(err);
      for (const f of feeds) f.close();
    });
    const unpacks = this.unpack(img, signal, fetched.map((f) => f.p), feeds);
    const [d, u] = await Promise.allSettled([downloads.catch((err: unknown) => (stop.abort(err), Promise.reject(err))), unpacks.catch((err: unknown) => (stop.abort(err), Promise.reject(err)))]);
    if (d.status === 'rejected') throw d.reason;
    if (u.status === 'rejected') throw u.reason;
    await this.storeDocuments(img);
    crashPoint('pull.before-record');
    this.record([{ image: img, refs: [ref.canonical] }]);
    this.log.info({ ref: ref.canonical, digest: manifestDigest, layers: layers.length }, 'image pulled');
    return { ref: ref.canonical, digest: manifestDigest, indexDigest, config: img.config, layers, chainIds: img.chainIds };
  }

  /**
   * Checks a platform manifest and its config (verified bytes) against each other, the snapshotter
   * and the platform `want`, and derives each layer's diff ID and chain ID. Pure: nothing is read
   * or written. Errors: ERR_INVALID_IMAGE (diff_ids and layers disagree, no layers, another
   * platform), ERR_UNSUPPORTED (more layers than overlay can stack).
   */
  prepare(
    what: string,
    manifest: { manifest: ImageManifest; digest: Digest; bytes: Buffer },
    configBytes: Buffer,
    want: Platform,
    index: { digest: Digest; bytes: Buffer } | null,
  ): PreparedImage {
    const m = manifest.manifest;
    const config = parseImageConfig(configBytes, `${what} config ${m.config.digest}`);
    if (config.rootfs.diff_ids.length !== m.layers.length) {
      throw new BerthError('ERR_INVALID_IMAGE', `${what}: config ${m.config.digest} lists ${config.rootfs.diff_ids.length} diff_ids for ${m.layers.length} layers`);
    }
    if (m.layers.length > this.snapshots.maxLayers()) {
      throw new BerthError('ERR_UNSUPPORTED', `${what}: ${m.layers.length} layers are more than an overlay mount can stack here (${this.snapshots.maxLayers()})`);
    }
    if (m.layers.length === 0) {
      throw new BerthError('ERR_INVALID_IMAGE', `${what}: the image has no layers, so there is no root filesystem to run`);
    }
    if ((config.os !== '' && config.os !== want.os) || (config.architecture !== '' && config.architecture !== want.architecture)) {
      throw new BerthError('ERR_INVALID_IMAGE', `${what}: image is for ${config.os}/${config.architecture}, not ${want.os}/${want.architecture}`);
    }
    const ids = chainIds(config.rootfs.diff_ids);
    const layers: LayerRecord[] = m.layers.map((l, i) => ({
      digest: l.digest,
      size: l.size,
      mediaType: l.mediaType,
      diffId: config.rootfs.diff_ids[i] as Digest,
      chainId: ids[i] as Digest,
    }));
    return { manifest: m, manifestDigest: manifest.digest, manifestBytes: manifest.bytes, configBytes, config, layers, chainIds: ids, index };
  }

  /**
   * Unpacks each layer of `img`, whose blobs are in the content store, into its chain ID snapshot
   * (recorded with its parent; a ready snapshot is left alone). Errors: those of unpackLayer; a
   * failed layer leaves nothing of itself, and the layers it stopped (see below) nothing of theirs.
   *
   * Several missing layers are unpacked at once, each on a worker thread (unpack/thread.ts), at
   * most UNPACK_THREADS at a time: the writes of one layer wait for the disk on a cold cache, and
   * the machine has more than one core. With `feeds` (pull), a layer whose download has begun is
   * read from its partial file as it grows (BlobFeed) and its snapshot waits for `blobReady`;
   * without, each layer waits for its blob. Each layer's snapshot is still committed (renamed and
   * recorded) only after its parent's, and the metadata of directories its tar implies is copied
   * from the parents just before. The first failure stops the others; the call settles once every
   * started layer has stopped.
   */
  async unpack(img: PreparedImage, signal?: AbortSignal, blobReady?: readonly Promise<void>[], feeds?: readonly BlobFeed[]): Promise<void> {
    const ids = img.chainIds;
    const missing = img.layers.filter((l) => !this.snapshots.isReady(l.chainId)).length;
    if (missing <= 1) {
      // One layer to make (a one-layer image, or an update of the top one): on this thread, no
      // worker to start, and like the threads' layers extracted from the partial file while it
      // downloads when there is one.
      for (const [i, l] of img.layers.entries()) {
        const parent = i === 0 ? null : (ids[i - 1] as Digest);
        if (this.snapshots.isReady(l.chainId)) continue;
        await this.fromFeedOrBlob(l, feeds?.[i], blobReady?.[i], signal, (feed) =>
          this.snapshots.commitLayer({ chainId: l.chainId, parent, diffId: l.diffId }, async (dir) => {
            // The partial file while it grows; else (none, or committed meanwhile) the committed blob.
            let source = feed !== undefined ? feedSource(feed, l.digest) : undefined;
            if (source === undefined) {
              await blobReady?.[i];
              source = this.content.open(l.digest);
            }
            const res = await unpackLayer({
              source,
              mediaType: l.mediaType,
              expected: { digest: l.digest, size: l.size, diffId: l.diffId },
              dest: dir,
              lowerDirs: i === 0 ? [] : this.snapshots.lowerDirs(ids.slice(0, i)),
              log: this.log,
              ...(signal !== undefined ? { signal } : {}),
            });
            // Read while it downloaded: the snapshot waits for the blob's own commit (C2).
            await blobReady?.[i];
            return { opaqueRoot: res.opaqueRoot, size: res.uncompressedSize };
          }),
        );
      }
      return;
    }
    // ready[i] settles when layer i's snapshot is committed (or failed); layer i+1 waits for it.
    const ready = img.layers.map(() => settleable());
    const threads = new UnpackThreads(Math.min(UNPACK_THREADS, missing));
    try {
      await eachBounded(
        img.layers.map((l, i) => ({ l, i })),
        img.layers.length, // every layer starts; the threads bound the work, a layer waiting for its parent holds none
        async ({ l, i }, layerSignal) => {
          const parent = i === 0 ? null : (ids[i - 1] as Digest);
          const commit = (feed: BlobFeed | undefined): Promise<void> =>
            this.snapshots.commitLayer({ chainId: l.chainId, parent, diffId: l.diffId }, async (dir) => {
              const res = await threads.unpack({
                blobPath: this.content.path(l.digest),
                ...(feed !== undefined ? { feed } : {}),
                mediaType: l.mediaType,
                expected: { digest: l.digest, size: l.size, diffId: l.diffId },
                dest: dir,
                log: this.log,
                signal: layerSignal,
              });
              // Read while it downloaded: the snapshot waits for the blob's own commit (C2).
              if (feed !== undefined) await blobReady?.[i];
              if (i > 0) await ready[i - 1]?.p;
              await finishLayer(dir, res, i === 0 ? [] : this.snapshots.lowerDirs(ids.slice(0, i)));
              return { opaqueRoot: res.opaqueRoot, size: res.uncompressedSize };
            });
          try {
            if (!this.snapshots.isReady(l.chainId)) await this.fromFeedOrBlob(l, feeds?.[i], blobReady?.[i], layerSignal, commit);
            ready[i]?.settle();
          } catch (err) {
            ready[i]?.settle(err);
            throw err;
          }
        },
        signal !== undefined ? { signal } : {},
      );
    } finally {
      await threads.close();
    }
  }

  /**
   * Runs `commit` for one layer: with its download's feed when the download wrote a partial file
   * (extracted while it grows), else once the blob is committed (already here, or no download said
   * where it writes). If the download started again from zero under that unpack, once more from the
   * committed blob. The one policy for the layers unpacked here and on the threads.
   */
  private async fromFeedOrBlob(
    l: LayerRecord,
    feed: BlobFeed | undefined,
    blobReady: Promise<void> | undefined,
    signal: AbortSignal | undefined,
    commit: (feed: BlobFeed | undefined) => Promise<void>,
  ): Promise<void> {
    const streaming = feed !== undefined && (await feed.opened);
    if (!streaming) await blobReady;
    try {
      await commit(streaming ? feed : undefined);
    } catch (err) {
      if (!streaming || feed?.wasReset !== true || signal?.aborted === true) throw err;
      this.log.debug({ layer: l.digest }, 'layer download restarted during its unpack, unpacking the committed blob');
      await blobReady;
      await commit(undefined);
    }
  }

  /** Stores the config, the manifest and the index (if any) of `img` in the content store, verified. */
  async storeDocuments(img: PreparedImage): Promise<void> {
    await this.content.put({ digest: img.manifest.config.digest, size: img.manifest.config.size }, img.configBytes);
    await this.content.put({ digest: img.manifestDigest, size: img.manifestBytes.length }, img.manifestBytes);
    if (img.index !== null) await this.content.put({ digest: img.index.digest, size: img.index.bytes.length }, img.index.bytes);
  }

  /**
   * Records the manifest rows and the image rows (one per canonical ref) of unpacked images whose
   * documents are stored, in one transaction: all or none.
   */
  record(images: readonly { image: PreparedImage; refs: readonly string[] }[]): void {
    const now = Date.now();
    this.state.transaction(() => {
      for (const { image: img, refs } of images) {
        this.state.putManifest({ digest: img.manifestDigest, configDigest: img.manifest.config.digest, config: img.configBytes.toString('utf8'), layers: img.layers });
        for (const ref of refs) this.state.putImage({ ref, digest: img.manifestDigest, indexDigest: img.index?.digest ?? null, updatedAt: now });
      }
    });
  }

  /**
   * Downloads one layer into the content store, resuming with Range (rule P4). The partial file
   * `ingest/<hex>` of the content store holds the bytes written so far, across attempts and across
   * berth processes (kill -9, a reboot): each attempt asks the registry for the rest
   * (`fetchBlobFrom`, with the ETag of this process's earlier answer as If-Range) and appends;
   * a registry that sends the whole blob instead restarts the file. The digest is verified over
   * the whole file before the rename.
   *
   * A body that breaks off (reset, body timeout, a clean end before the descriptor's size) is
   * ERR_NETWORK: the partial is kept and the next attempt resumes, a bounded number of times;
   * when they are used up the partial stays for the next pull. A digest mismatch after a resumed
   * attempt starts once more from zero (the kept prefix may be what is wrong); otherwise it is
   * final and the partial is removed, as after ERR_IO and an abort by the caller (`callerSignal`).
   * A full disk (ERR_RESOURCE_EXHAUSTED) is not retried (it would fill the same disk) but keeps
   * the partial: once space is freed the next pull resumes it with Range (issue 14; the sweep
   * keeps partials < 24 h). So does a download stopped because the pull failed elsewhere (a
   * sibling used up its retries, filled the disk, an unpack failed): its bytes are good, and the
   * next pull resumes them (regression sibling-failure-drops-partials).
   */
  private async fetchLayer(
    registry: RegistryClient,
    ref: ImageReference,
    l: LayerRecord,
    o: { signal: AbortSignal; callerSignal?: AbortSignal; report?: LayerReporter; feed?: BlobFeed },
  ): Promise<void> {
    const { signal, report, feed } = o;
    const attempts = 3;
    const w = await this.content.partial({ digest: l.digest, size: l.size });
    let keep = false;
    try {
      // A concurrent pull of the same blob may have committed it while we waited for its file.
      if (await this.content.has(l.digest)) return;
      feed?.open(w.tempPath, w.written);
      const reset = async (): Promise<void> => {
        feed?.reset();
        await w.reset();
      };
      let etag: string | undefined;
      let fromZeroAgain = false;
      for (let attempt = 1; ; attempt++) {
        const from = w.written;
        try {
          signal.throwIfAborted();
          if (from < l.size) {
            const blob = await registry.fetchBlobFrom(ref, l, { from, ifRange: etag, signal });
            if (blob.offset !== from) await reset();
            etag = blob.etag;
            const progress = report?.(l, w.written);
            const written = (bytes: number, done: boolean): void => {
              progress?.(bytes, done);
              feed?.advance(w.written);
            };
            await this.content.append(w, countWritten(blob.body, written), { signal });
            if (w.written < l.size) {
              throw new BerthError('ERR_NETWORK', `fetch blob ${ref.domain}/${ref.path}@${l.digest}: the body ended after ${w.written} of ${l.size} bytes`);
            }
            progress?.(0, true);
          }
          await w.commit();
          this.log.debug({ digest: l.digest, size: l.size, resumedAt: from }, 'layer fetched');
          return;
        } catch (err) {
          const e = err instanceof BerthError ? err : new BerthError('ERR_NETWORK', `fetch blob ${ref.domain}/${ref.path}@${l.digest}: ${messageOf(err)}`, { cause: err });
          if (signal.aborted) throw signal.reason;
          if (e.code === 'ERR_DIGEST_MISMATCH' && from > 0 && !fromZeroAgain) {
            fromZeroAgain = true;
            this.log.warn({ digest: l.digest, resumedAt: from, err: e.message }, 'resumed layer does not verify, fetching it from the start');
            await reset();
            continue;
          }
          keep = e.code === 'ERR_NETWORK' || e.code === 'ERR_RESOURCE_EXHAUSTED';
          if (e.code !== 'ERR_NETWORK' || attempt >= attempts) throw e;
          this.log.warn({ digest: l.digest, attempt, written: w.written, err: e.message }, 'layer download broke off, resuming');
          await sleep(200 * 2 ** attempt, signal);
        }
      }
    } finally {
      // A network failure or a full disk keeps the bytes for the next pull, and so does a
      // download stopped by the failure of another part of the pull (`signal` aborted while the
      // caller's is not): a retry must not lose them. This download's own final failure
      // (a digest mismatch, ERR_IO) and the caller's abort leave nothing behind.
      const fullDisk = signal.aborted && (signal.reason as { code?: unknown } | undefined)?.code === 'ERR_RESOURCE_EXHAUSTED';
      const stoppedBySibling = signal.aborted && o.callerSignal?.aborted !== true;
      if ((keep && !signal.aborted) || fullDisk || stoppedBySibling) await w.keep();
      else await w.abort();
    }
  }

  /**
   * The progress of one pull: each layer's attempt gets a callback for the bytes written; all the
   * pull's layers are reported together, throttled, and at once when one is complete.
   * Undefined when nobody listens.
   */
  private progressReporter(image: string): LayerReporter | undefined {
    if (this.progressListeners.size === 0) return undefined;
    const layers = new Map<string, { p: LayerProgress; began: number }>();
    let last = 0;
    const emit = (force: boolean): void => {
      const now = Date.now();
      if (!force && now - last < PULL_REPORT_MS) return;
      last = now;
      const snapshot = [...layers.values()].map(({ p, began }) => ({ ...p, ms: now - began }));
      for (const fn of this.progressListeners) fn({ image, layers: snapshot });
    };
    return (l, written) => {
      // A new attempt starts from the bytes already on disk (a resumed body) or from 0.
      const entry = { p: { digest: l.digest, size: l.size, written, ms: 0, done: false }, began: Date.now() };
      layers.set(l.digest, entry);
      emit(true);
      return (n, done) => {
        entry.p.written += n;
        entry.p.done = done;
        emit(done);
      };
    };
  }

  list(): { ref: string; digest: Digest }[] {
    return this.state.listImages().map((i) => ({ ref: i.ref, digest: i.digest }));
  }
}

/** A promise settled from outside; a rejection nobody awaits is not reported (the one who failed reports it). */
function settleable(): { p: Promise<void>; settle: (err?: unknown) => void } {
  let settle!: (err?: unknown) => void;
  const p = new Promise<void>((resolve, reject) => {
    settle = (err) => (err === undefined ? resolve() : reject(err));
  });
  p.catch(() => undefined);
  return { p, settle };
}

/**
 * Layers unpacked at once, each on its own worker thread: one per core, at least two (one layer's
 * writes can wait for the disk while another's run) and at most four. A thread more than the cores
 * costs more than it overlaps: each is a V8 isolate that compiles the unpacker's code again, and on
 * two cores three threads took ~10 % more CPU and ~5 % more wall time per cold pull of bench/pull's
 * large image than two (bench/README.md).
 */
const UNPACK_THREADS = Math.max(2, Math.min(4, availableParallelism()));

/** A layer's download starting at `written` bytes; the returned function is told each chunk written and when it is done. */
type LayerReporter = (l: LayerRecord, written: number) => (bytes: number, done: boolean) => void;

/**
 * `body` for the content store's append. Each chunk is counted (when `written` is given) once
 * append asks for the next one, i.e. after its write has returned: the bytes reported are on
 * disk, not merely received. `destroy` is passed through so that an abort still closes the
 * download.
 *
 * When the body fails (a reset, a cut), the chunks it had already received are handed on before
 * the error, so they are written and the resume starts after them. A plain `for await` over the
 * stream drops them: once destroyed, its iterator reads nothing more, and how much that is depends
 * on how far the disk writes lag behind the socket (regression cut-body-drops-received-bytes: with
 * layers unpacked during the download, the resume point fell short of what the registry had sent).
 */
function countWritten(body: Readable, written?: (bytes: number, done: boolean) => void): AsyncIterable<Uint8Array> & { destroy(err?: Error): void } {
  return {
    async *[Symbol.asyncIterator]() {
      const kept: Uint8Array[] = [];
      let failure: { err: unknown } | undefined;
      const onError = (err: unknown): void => {
        failure ??= { err };
        // Synchronously, while the stream still holds what it received: it is emptied after this.
        for (let c = body.read() as Uint8Array | null; c !== null; c = body.read() as Uint8Array | null) kept.push(c);
      };
      body.on('error', onError);
      let finished = false;
      try {
        for (;;) {
          const chunk = kept.shift() ?? (failure === undefined ? (body.read() as Uint8Array | null) : null);
          if (chunk !== null) {
            yield chunk;
            written?.(chunk.length, false);
            continue;
          }
          if (failure !== undefined) throw failure.err;
          if (body.readableEnded || body.destroyed) {
            finished = body.readableEnded;
            if (!finished) throw (body.errored as Error | null) ?? new Error('the body was closed before its end');
            return;
          }
          await new Promise<void>((resolve) => {
            const wake = (): void => {
              body.off('readable', wake);
              body.off('end', wake);
              body.off('error', wake);
              body.off('close', wake);
              resolve();
            };
            body.on('readable', wake);
            body.on('end', wake);
            body.on('error', wake);
            body.on('close', wake);
          });
        }
      } finally {
        body.off('error', onError);
        // undici's body reports its own destruction ('Request aborted') as an error event: once we
        // stop reading, nobody else listens, and an unheard 'error' would crash the process.
        body.on('error', () => undefined);
        if (!finished && !body.destroyed) body.destroy();
      }
    },
    destroy: (err?: Error) => body.destroy(err),
  };
}

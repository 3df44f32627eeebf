import { existsSync, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BerthError, errnoCode, messageOf } from '../lib/errors.js';
import type { Digest } from '../lib/digest.js';
import { mkdirp } from '../lib/fsx.js';
import { LockFile } from '../lib/lock.js';
import { isFrozen, isSameProcess, processStartedAt, startTime } from '../lib/proc.js';
import type { Logger } from '../lib/log.js';
import type { StepWait } from '../lib/progress.js';
import { ContentStore } from './content/index.js';
import { ImageService, type LocalImage } from './images/index.js';
import { exportArchive, importArchive, type ImportedImage, type ImportOptions } from './images/archive.js';
import { chainCredentials, credentialsFromDockerConfig, dockerConfigFile, parseReference, RegistryClient, type CredentialSource } from './registry/index.js';
import { Snapshotter } from './snapshots/index.js';
import { StateStore, type ConditionRecord, type ContainerRecord, type EventRecord, type ImageRecord, type PodRecord, type RestartRecord } from './state/index.js';
import { httpCheck } from '../lib/httpprobe.js';
import { generateSpec, stopSignal, type ContainerRunSpec, type SandboxRef } from './tasks/spec.js';
import { CniNetwork, DEFAULT_BRIDGE, DEFAULT_PLUGIN_DIR, DEFAULT_SUBNET } from './network/index.js';
import { SandboxManager, type SandboxSpec, type SandboxView } from './pods/index.js';
import { checkVolumeName, VolumeManager, type MountRequest, type PodVolume } from './volumes/index.js';
import { parseImageConfig, type ImageConfig } from './images/documents.js';
import { TaskDriver, type TaskStatus } from './tasks/index.js';
import type { Finding } from './check/index.js';
import { listMounts } from './snapshots/index.js';
import { GarbageCollector, imageInUse, imageUsers, LeaseManager, namedRefs, pruneCandidates, PullGate, type GcReport } from './gc/index.js';
import { diskUsage, fsUsage, type DiskUsage } from './df/index.js';
import { runImageGc, type ImageGcResult, type ImageGcThresholds } from './gc/auto.js';
import { readCgroupSample, type CgroupSample } from './stats/index.js';
import { crashPoint } from '../lib/crashpoint.js';

export type { LocalImage } from './images/index.js';
export type { ImportedImage } from './images/archive.js';
export type { ContainerRecord, PodRecord, EventRecord, ContainerState, RestartRecord, ConditionRecord, ImageRecord } from './state/index.js';
export { eventKeyMatches } from './state/index.js';
export { parseReference, defaultDockerConfigPath, credentialsFromDockerConfig, type CredentialSource } from './registry/index.js';
export type { ContainerRunSpec, EnvEntry } from './tasks/spec.js';
export type { CgroupSample } from './stats/index.js';
export type { SandboxSpec, SandboxView, DnsSpec } from './pods/index.js';
export type { PortMapping } from './network/index.js';
export type { PodVolume, MountRequest } from './volumes/index.js';
export { checkWorkingDir } from './tasks/spec.js';
export { criDecoder } from '../lib/crilog.js';
export { checkHost, type Finding } from './check/index.js';
export type { GcReport, GcRemoved } from './gc/index.js';
export type { DiskUsage, DfImage, DfVolume, FsUsage } from './df/index.js';
export { thresholdProblem, type ImageGcResult, type ImageGcThresholds } from './gc/auto.js';

/** How long a postStart hook may take before it counts as failed. */
const POST_START_TIMEOUT_MS = 30_000;
/** How long an observation waits for conmon to write the exit file of a container whose init it saw gone. */
const EXIT_RECORD_WAIT_MS = 2_000;
/** How long a live conmon may take to write the exit file of a container that ended before its exit is recorded as 137. */
const EXIT_FILE_PATIENCE_MS = 60_000;
/** The kubelet's minimumGracePeriodInSeconds: what a container still gets after its preStop hook. */
const MIN_GRACE_AFTER_PRESTOP_MS = 2_000;

/** What a stop of a pod's container takes from its pod: the preStop hook and the kubelet's minimal window. */
export interface StopHooks {
  preStop?: Handler;
  hostNetwork?: boolean;
  /** The least time between the stop signal and SIGKILL (the kubelet's 2 s); 0 when unset (berth's own clean-ups). */
  minWindowMs?: number;
}

/** OCI annotations that mark a runc container as berth's (and say whose). */
export const ANNOTATION_POD = 'dev.berth.pod';
export const ANNOTATION_CONTAINER = 'dev.berth.container';

/**
 * The runtime façade: the only runtime entry the reconciler sees (DESIGN §2).
 */

export interface RuntimeConfig {
  root: string; // db, content, snapshots, containers, logs
  state: string; // runc root, conmon files, locks
  log: Logger;
  runc?: string;
  conmon?: string;
  insecureRegistries?: readonly string[];
  /** Docker config.json with registry credentials, read on a registry's first 401 (`required`: a missing file is an error). */
  registryConfig?: { path: string; required: boolean };
  /** containerd-style certs.d directory: per-registry mirrors, CAs, client certificates (`required`: must exist). */
  registryHostsDir?: { path: string; required: boolean };
  /** Pod network: berth's bridge, its subnet and where the CNI plugins are. */
  network?: { bridge?: string; subnet?: string; pluginDir?: string };
  /** A container log is rotated (one previous file kept) past this size; default 10 MiB. See rotateLogs. */
  containerLogMaxBytes?: number;
}

/** A probe or hook action (the reconciler's DesiredHandler). */
export type Handler =
  | { exec: { command: readonly string[] } }
  | { httpGet: { path: string; port: number; host?: string; headers?: readonly { name: string; value: string }[] } }
  | { tcpSocket: { port: number; host?: string } };

export interface ImageSummary {
  ref: string;
  digest: string;
  indexDigest: string | null;
  configDigest: string | null;
  /** os/architecture[/variant] from the config. */
  platform: string;
  created: string | null;
  layers: number;
  compressedBytes: number;
  unpackedBytes: number;
}

/** How a container's pod is networked: the host's namespaces, or the pod's sandbox. */
export interface PodNetworking {
  hostNetwork: boolean;
  shareProcessNamespace: boolean;
}

/** What is actually there for a recorded container, after asking runc and conmon. */
export interface ObservedContainer extends Omit<ContainerRecord, 'state'> {
  /** `paused`: frozen by `runc pause` behind berth's back; observed only, never recorded. */
  state: ContainerRecord['state'] | 'paused';
  /** conmon's exit file or 137 when the container vanished (reboot, runc delete behind our back). */
  live: boolean;
}

export interface ObservedPod extends PodRecord {
  containers: ObservedContainer[];
  /** The pod's sandbox (pods without hostNetwork), when one is recorded. */
  sandbox?: SandboxView;
}

export interface RunContainerOptions {
  podKey: string;
  name: string;
  specHash: string;
  /** Restart attempt (0 = first run): part of the id, so each attempt has its own log. */
  attempt: number;
  /** Run once the container started; a failure kills it (FailedPostStartHook) as `stop` says. */
  postStart?: Handler;
  /** How the container is stopped when its postStart hook fails: the pod's grace period and the container's preStop hook. */
  stop?: { graceMs: number; preStop?: Handler; minWindowMs?: number };
  /** Created (mounted, `runc create`) at once, started only when this settles; a rejection rolls the new container back. */
  startAfter?: Promise<void>;
  image: LocalImage;
  run: RunSpec;
}

/** What the reconciler says about a container to run: the spec without id, rootfs and sandbox paths. */
export type RunSpec = Omit<ContainerRunSpec, 'id' | 'rootfs' | 'sandbox' | 'mounts'> & {
  pod: PodNetworking;
  /** The pod's volumes (made present by syncVolumes) and what this container mounts of them. */
  volumes?: { pod: PodVolume[]; mounts: MountRequest[] };
};

export class Runtime {
  private readonly images: ImageService;
  private readonly lock: LockFile;
  private readonly eventListeners = new Set<(e: EventRecord) => void>();
  /** Containers found ended whose live conmon has not written the exit file yet: since when (observeContainer). */
  private readonly exitPending = new Map<string, number>();
  private readonly sandboxes: SandboxManager;
  private readonly volumes: VolumeManager;
  /** Imports and exports share it, GC takes it alone (one GC at a time); pulls run beside GC under leases. */
  private readonly pullGate = new PullGate();
  /** Leases of the pulls in flight (runtime/gc/leases): GC keeps what they wrote before their rows. */
  private readonly leases: LeaseManager;

  private constructor(
    private readonly cfg: RuntimeConfig,
    private readonly state: StateStore,
    private readonly content: ContentStore,
    private readonly snapshots: Snapshotter,
    private readonly tasks: TaskDriver,
    private readonly registry: RegistryClient,
  ) {
    this.images = new ImageService(state, content, snapshots, registry, cfg.log);
    this.leases = new LeaseManager(state, cfg.log);
    this.lock = new LockFile(path.join(cfg.state, 'berth.lock'));
    const net = new CniNetwork({
      bridge: cfg.network?.bridge ?? DEFAULT_BRIDGE,
      subnet: cfg.network?.subnet ?? DEFAULT_SUBNET,
      pluginDir: cfg.network?.pluginDir ?? DEFAULT_PLUGIN_DIR,
      dataDir: path.join(cfg.root, 'cni', 'networks'),
    });
    this.sandboxes = new SandboxManager(cfg.root, state, tasks, net, cfg.log);
    this.volumes = new VolumeManager(cfg.root, cfg.log);
  }

  /** Creates the roots (0700, rule R5), opens SQLite, prepares stores. */
  static async open(cfg: RuntimeConfig): Promise<Runtime> {
    if (process.getuid?.() !== 0) {
      throw new BerthError('ERR_PRECONDITION', 'open runtime: berth must run as root (runc, overlay mounts)');
    }
    for (const [flag, dir] of [['--root', cfg.root], ['--state', cfg.state]] as const) {
      try {
        await mkdirp(dir);
      } catch (err) {
        throw new BerthError('ERR_INVALID_ARGUMENT', `open runtime: ${flag} ${dir}: ${errnoCode(err) === 'EEXIST' || errnoCode(err) === 'ENOTDIR' ? 'not a directory' : messageOf(err)}`, { cause: err });
      }
    }
    await fsp.chmod(cfg.root, 0o700);
    await fsp.chmod(cfg.state, 0o700);
    // Real paths: runc refuses a rootfs reached through a symlink, and mount points are
    // compared against /proc/self/mountinfo, which only knows real paths.
    cfg = { ...cfg, root: await fsp.realpath(cfg.root), state: await fsp.realpath(cfg.state) };
    const state = new StateStore(cfg.root);
    const content = new ContentStore(cfg.root);
    await content.init();
    const snapshots = new Snapshotter(cfg.root, state);
    await snapshots.init();
    const tasks = new TaskDriver(
      { runcRoot: path.join(cfg.state, 'runc'), exitDir: path.join(cfg.state, 'exits'), stateDir: cfg.state },
      cfg.log,
      { runc: cfg.runc ?? 'runc', conmon: cfg.conmon ?? 'conmon' },
    );
    await tasks.init();
    const registry = new RegistryClient({
      insecureHosts: cfg.insecureRegistries ?? [],
      ...(cfg.registryConfig !== undefined ? { credentials: dockerConfigFile(cfg.registryConfig.path, { required: cfg.registryConfig.required }) } : {}),
      ...(cfg.registryHostsDir !== undefined ? { hostsDir: cfg.registryHostsDir } : {}),
    });
    return new Runtime(cfg, state, content, snapshots, tasks, registry);
  }

  /** Readies the registry client (undici and its pool) ahead of the first pull; see RegistryClient.warm. */
  warmRegistry(): void {
    this.registry.warm();
  }

  async close(): Promise<void> {
    await this.lock.release();
    await this.registry.close();
    this.state.close();
  }

  /**
   * Takes the state lock until the returned function is called: `berth up` holds it for its
   * whole life, as the single writer (CLI commands then go through its socket).
   */
  async holdLock(what: string, waitMs = 60_000): Promise<() => Promise<void>> {
    await this.lock.acquire({
      waitMs,
      what,
      onWait: (pid) => this.cfg.log.warn({ holder: pid, what }, `waiting for the state lock held by ${pid !== undefined ? `pid ${pid}` : 'another berth'}`),
    });
    return () => this.lock.release();
  }

  /** Takes the state lock if it is free now; false when another process holds it. */
  async tryLock(what: string): Promise<boolean> {
    try {
      await this.lock.acquire({ waitMs: 0, what });
      return true;
    } catch (err) {
      if (err instanceof BerthError && err.code === 'ERR_LOCKED') return false;
      throw err;
    }
  }

  /**
   * Puts back network rules something outside berth removed (a firewall reload): the pod bridge's
   * masquerade and forward rules, and each pod's host-port rules (runtime/pods repairRules). Events:
   * NetworkRulesRestored (Warning) on `network/<bridge>` and on each pod repaired. The daemon calls
   * it at each resync; nothing runs but one iptables-save when all is in place, nothing at all
   * without pods on the bridge.
   */
  async repairNetwork(): Promise<{ bridge: boolean; pods: string[] }> {
    const r = await this.sandboxes.repairRules();
    const bridge = this.cfg.network?.bridge ?? DEFAULT_BRIDGE;
    if (r.bridge) {
      this.cfg.log.warn({ bridge }, 'network rules of the pod bridge were missing, written again');
      this.addEvent(`network/${bridge}`, 'NetworkRulesRestored', `the masquerade and forward rules of bridge ${bridge} were missing (removed outside berth) and were written again`, { type: 'Warning' });
    }
    for (const key of r.pods) {
      this.cfg.log.warn({ pod: key }, 'host-port rules of the pod were missing, written again');
      this.addEvent(`pod/${key}`, 'NetworkRulesRestored', `the host-port rules of pod ${key} were missing (removed outside berth) and were written again`, { type: 'Warning' });
    }
    return r;
  }

  /** Sweeps crash residue: ingest temp files and interrupted extractions (rule S4). */
  async sweep(): Promise<void> {
    await this.content.sweepIngest();
    await this.snapshots.sweep(this.cfg.log);
    await this.sweepOrphanContainers();
    await this.sandboxes.releaseIdleRules();
  }

  /**
   * Rule S2: a runc container carrying berth's annotation but unknown to SQLite (the row
   * was lost, e.g. the database was restored from a backup) is removed deterministically,
   * with its mount and directories. Containers without the annotation — started by hand
   * in the same runc root — are never touched. Container directories that have neither a
   * row nor a runc container are crash residue and are removed too.
   */
  async sweepOrphanContainers(): Promise<string[]> {
    const known = new Set([...this.state.listContainers().map((c) => c.id), ...this.sandboxes.ids()]);
    const removed: string[] = [];
    const runcIds = new Set<string>();
    for (const t of await this.tasks.list()) {
      runcIds.add(t.id);
      if (known.has(t.id) || t.annotations?.[ANNOTATION_POD] === undefined) continue;
      this.cfg.log.warn({ id: t.id, pod: t.annotations[ANNOTATION_POD] }, 'removing berth container unknown to the state database');
      await this.removeContainerFiles(t.id, 0);
      removed.push(t.id);
    }
    const dirs = await fsp.readdir(path.join(this.cfg.root, 'containers')).catch(() => [] as string[]);
    for (const id of dirs) {
      if (known.has(id) || runcIds.has(id)) continue;
      await this.removeContainerFiles(id, 0);
      removed.push(id);
    }
    return removed;
  }

  private async removeContainerFiles(id: string, graceMs: number): Promise<number | undefined> {
    const code = await this.tasks.stop(id, graceMs, this.stopSignalOf(id));
    await this.tasks.delete(id);
    await this.snapshots.unmount(this.bundleOf(id).rootfs);
    await this.snapshots.removeContainer(id);
    return code;
  }

  // images ---------------------------------------------------------------------

  localImage(ref: string): LocalImage | undefined {
    return this.images.get(ref);
  }

  /**
   * `pullSecrets`: config.json texts (a pod's imagePullSecrets, with where they came from for
   * messages), asked before the node's own credentials.
   */
  // async: a failure before the pull starts (bad pull secret, no room for the lease row) is a
  // rejection, never a synchronous throw (regression pull-image-throws-synchronously).
  async pullImage(
    ref: string,
    signal?: AbortSignal,
    platform?: { os: string; architecture: string; variant?: string },
    pullSecrets: readonly { secret: string; configJson: string }[] = [],
  ): Promise<LocalImage> {
    const credentials = secretCredentials(pullSecrets);
    // No PullGate: the lease protects what the pull writes from a GC running meanwhile (issue 14).
    const lease = this.leases.create('pull');
    return this.images
      .pull(ref, { lease, ...(signal !== undefined ? { signal } : {}), ...(platform !== undefined ? { platform } : {}), ...(credentials !== undefined ? { credentials } : {}) })
      .finally(() => lease.release());
  }

  /**
   * Waits inside steps as they happen, for live progress: a stop waiting out its grace period
   * (container `namespace/pod/name`), a pull's layers with their bytes written.
   */
  onProgress(fn: (w: StepWait) => void): () => void {
    const offPull = this.images.onPullProgress((p) => fn({ kind: 'pull', ...p }));
    const offGrace = this.tasks.onGraceWait(({ id, ...g }) => {
      const c = parseContainerId(id);
      if (c !== undefined) fn({ kind: 'grace', container: `${c.podKey}/${c.name}`, ...g });
    });
    return () => {
      offPull();
      offGrace();
    };
  }

  /**
   * Local images with their sizes (compressed: the layer blobs; unpacked: their snapshots),
   * creation time and platform from the config, for `images ls` and `inspect`.
   */
  imageSummaries(): ImageSummary[] {
    return this.state.listImages().map((img) => {
      const m = this.state.getManifest(img.digest);
      let created: string | null = null;
      let platform = '';
      try {
        const c = m === undefined ? undefined : (JSON.parse(m.config) as { created?: string; os?: string; architecture?: string; variant?: string });
        created = c?.created ?? null;
        platform = c === undefined ? '' : [c.os, c.architecture, c.variant].filter((x) => x !== undefined && x !== '').join('/');
      } catch {
        // an unreadable config shows no date
      }
      const layers = m?.layers ?? [];
      return {
        ref: img.ref,
        digest: img.digest,
        indexDigest: img.indexDigest,
        configDigest: m?.configDigest ?? null,
        platform,
        created,
        layers: layers.length,
        compressedBytes: layers.reduce((n, l) => n + l.size, 0),
        unpackedBytes: layers.reduce((n, l) => n + (this.state.getSnapshot(l.chainId)?.size ?? 0), 0),
      };
    });
  }

  /** The manifest and config of a local image, as stored (verified bytes), for `images inspect`. */
  inspectImage(ref: string): { summary: ImageSummary; manifest: { layers: unknown[] }; config: unknown } {
    const canonical = this.findImages(ref, 'inspect').rows[0]?.ref ?? ref;
    const summary = this.imageSummaries().find((s) => s.ref === canonical);
    const m = summary === undefined ? undefined : this.state.getManifest(summary.digest as Digest);
    if (summary === undefined || m === undefined) throw new BerthError('ERR_NOT_FOUND', `inspect ${canonical}: no such local image (berth images ls)`);
    return { summary, manifest: { layers: m.layers }, config: JSON.parse(m.config) as unknown };
  }

  /** `images tag SRC DST`: DST names the same local image as SRC (a new images row). */
  tagImage(src: string, dst: string): { ref: string; digest: string } {
    const target = parseReference(dst);
    // As docker and podman: a name with a digest names that content, it cannot be given to other
    // content (regression tag-to-digest-name: a pod pinned to it would run something else).
    if (target.digest !== undefined) throw new BerthError('ERR_INVALID_ARGUMENT', `tag ${dst}: refusing to tag with a digest reference; give a name or name:tag`);
    const to = target.canonical;
    const img = this.findImages(src, 'tag').rows[0];
    if (img === undefined) throw new BerthError('ERR_NOT_FOUND', `tag ${src}: no such local image (berth images ls)`);
    this.state.putImage({ ref: to, digest: img.digest, indexDigest: img.indexDigest, updatedAt: Date.now() });
    return { ref: to, digest: img.digest };
  }

  /**
   * `images import PATH`: a docker save tar or an OCI image layout (directory or tar), verified,
   * unpacked and recorded as a pull records it (runtime/images/archive). Shares the pull gate: GC
   * waits, since blobs and snapshots are written before the rows that name them.
   */
  importImages(source: string, opts: ImportOptions = {}): Promise<ImportedImage[]> {
    return this.pullGate.shared(() => importArchive({ images: this.images, content: this.content, log: this.cfg.log }, source, opts));
  }

  /** `images export REF... -o FILE`: an OCI image layout tar of the local images (runtime/images/archive). */
  async exportImages(refs: readonly string[], file: string): Promise<{ ref: string; digest: Digest }[]> {
    // An image named by its digest is written with every name it has.
    const names = refs.flatMap((r) => this.findImages(r, `export ${file}:`).rows.map((i) => i.ref));
    return await this.pullGate.shared(() => exportArchive({ content: this.content, state: this.state }, names, file));
  }

  /**
   * The digest the registry gives `ref` now, asked with the pods' pull secrets before the node's
   * credentials, as the pull itself is (regression always-check-without-pull-secrets).
   */
  resolveImage(ref: string, signal?: AbortSignal, pullSecrets: readonly { secret: string; configJson: string }[] = []): Promise<Digest> {
    const credentials = secretCredentials(pullSecrets);
    return this.images.resolve(ref, signal, credentials);
  }

  /**
   * The image rows an image argument names, as docker and podman read one: a reference (its row;
   * tried first, so a name that looks like hex is a name); `name@digest` (the rows of that
   * repository at that manifest or index digest); a digest or a hex prefix of one, with or without
   * `sha256:`, of at least 4 digits (every name of that image; the DIGEST column of `images ls`
   * is such a prefix). ERR_NOT_FOUND when nothing matches; ERR_INVALID_ARGUMENT naming the
   * candidates when a prefix fits more than one image. `byDigest`: the argument named content,
   * not a name.
   */
  private findImages(arg: string, what: string): { rows: ImageRecord[]; byDigest: boolean } {
    const notFound = (): BerthError => new BerthError('ERR_NOT_FOUND', `${what} ${arg}: no such local image (berth images ls lists them)`, { details: { ref: arg } });
    let ref: ReturnType<typeof parseReference> | undefined;
    let refError: unknown;
    try {
      ref = parseReference(arg);
    } catch (err) {
      refError = err;
    }
    const row = ref === undefined ? undefined : this.state.getImage(ref.canonical);
    if (row !== undefined) return { rows: [row], byDigest: false };
    const all = this.state.listImages();
    if (ref?.digest !== undefined) {
      const repo = `${ref.domain}/${ref.path}`;
      const rows = all.filter((i) => parseReference(i.ref).domain === ref.domain && parseReference(i.ref).path === ref.path && (i.digest === ref.digest || i.indexDigest === ref.digest));
      if (rows.length === 0) throw new BerthError('ERR_NOT_FOUND', `${what} ${arg}: no local image of ${repo} has digest ${ref.digest} (berth images ls lists them)`, { details: { ref: arg } });
      return { rows, byDigest: false };
    }
    const id = /^(?:sha256:)?([a-f0-9]{4,64})$/.exec(arg)?.[1];
    if (id === undefined) {
      if (refError !== undefined) throw refError;
      throw notFound();
    }
    const digests = new Set<string>();
    for (const i of all) for (const d of [i.digest, i.indexDigest]) if (d !== null && d.slice('sha256:'.length).startsWith(id)) digests.add(d);
    if (digests.size === 0) throw notFound();
    if (digests.size > 1) {
      throw new BerthError('ERR_INVALID_ARGUMENT', `${what} ${arg}: the prefix fits ${digests.size} images (${[...digests].sort().join(', ')}); give more digits`, { details: { ref: arg } });
    }
    const [d] = digests;
    return { rows: all.filter((i) => i.digest === d || i.indexDigest === d), byDigest: true };
  }

  /**
   * `images rm`: forgets the image rows `refs` name (findImages; their manifests, blobs and
   * snapshots go at the next GC). An image named by its digest loses every name; with more than
   * one that needs `force` (as docker rmi of an image id with several tags), else ERR_CONFLICT
   * listing them. All or nothing: an unknown reference is ERR_NOT_FOUND, a reference a recorded
   * pod's spec names or one of its containers runs is ERR_CONFLICT naming the pods (`force`
   * or not), and then nothing is removed. Call with the state lock held.
   */
  removeImages(refs: readonly string[], opts: { force?: boolean } = {}): { ref: string; digest: Digest }[] {
    const pods = this.state.listPods();
    const containers = this.state.listContainers();
    const found = new Map<string, { ref: string; digest: Digest }>();
    for (const r of refs) {
      const { rows, byDigest } = this.findImages(r, 'remove image');
      if (byDigest && rows.length > 1 && opts.force !== true) {
        throw new BerthError('ERR_CONFLICT', `remove image ${r}: the image has ${rows.length} names (${rows.map((i) => i.ref).join(', ')}); remove them by name, or all with --force`, { details: { ref: r } });
      }
      for (const img of rows) {
        const users = imageUsers(img.ref, pods, containers);
        if (users.length > 0) throw imageInUse(img.ref, users);
        found.set(img.ref, { ref: img.ref, digest: img.digest });
      }
    }
    this.state.deleteImages([...found.keys()]);
    for (const f of found.values()) this.cfg.log.info({ ref: f.ref, digest: f.digest }, 'image removed');
    return [...found.values()];
  }

  /**
   * `images prune`: forgets the image rows nothing declares — no recorded pod's spec names the
   * reference and no container row runs it — or, with `all`, every image no container row runs
   * (a pod whose containers are gone pulls its image again); then collects garbage.
   */
  async pruneImages(opts: { all: boolean }): Promise<{ images: { ref: string; digest: Digest }[]; gc: GcReport }> {
    return this.pullGate.exclusive(async () => {
      const pods = this.state.listPods();
      const containers = this.state.listContainers();
      const gone = pruneCandidates(this.state.listImages(), pods, containers, opts.all).map((i) => ({ ref: i.ref, digest: i.digest }));
      this.state.deleteImages(gone.map((i) => i.ref));
      const gc = await this.collector().collect({ dryRun: false });
      return { images: gone, gc };
    });
  }

  /**
   * `berth gc`: marks from the image rows, the containers' images, the images recorded pods
   * name and the layers mounted rootfs stack; removes the rest, rows first, then files
   * (runtime/gc). Waits for pulls in flight; pulls wait for it. Call with the state lock held.
   */
  collectGarbage(opts: { dryRun: boolean }): Promise<GcReport> {
    return this.pullGate.exclusive(() => this.collector().collect(opts));
  }

  /**
   * `berth df`: disk use by images (unpacked layers, shared and unique; compressed blobs),
   * containers' writable layers, logs and volumes, and what `images prune [--all]` and `gc` would
   * reclaim (GC dry runs). Read-only.
   */
  async diskUsage(): Promise<DiskUsage> {
    const pods = this.state.listPods();
    const containers = this.state.listContainers();
    const images = this.state.listImages();
    const named = namedRefs(pods, containers);
    return diskUsage({
      root: this.cfg.root,
      images,
      manifests: this.state.listManifests(),
      snapshots: this.state.listSnapshotRecords(),
      containers,
      blobs: await this.content.listBlobs(),
      pruneRefs: pruneCandidates(images, pods, containers, false).map((i) => i.ref),
      pruneAllRefs: pruneCandidates(images, pods, containers, true).map((i) => i.ref),
      inUse: (ref) => named.has(ref),
      named: await this.listVolumes(),
      gcDryRun: (forget) => this.collector().collect({ dryRun: true, forget }),
    });
  }

  /**
   * Automatic image GC by disk use (runtime/gc/auto, the kubelet's high/low thresholds): above
   * `highPercent` of the root's file system, forgets unused images least recently used first,
   * collecting after each, until below `lowPercent`. Never an image a recorded pod names, a
   * container runs, `keep` names (the daemon's manifests) or a pull holds a lease on. One GC at a
   * time (the PullGate); pulls go on beside it. Call with the state lock held.
   */
  imageGc(t: ImageGcThresholds & { keep?: readonly string[] }): Promise<ImageGcResult> {
    return this.pullGate.exclusive(() => {
      const keep = new Set(t.keep ?? []);
      return runImageGc(
        {
          usage: () => fsUsage(this.cfg.root),
          unused: () => {
            // One read of pods, containers and leases per round, not per image.
            const containers = this.state.listContainers();
            const named = namedRefs(this.state.listPods(), containers);
            const runDigests = new Set(containers.map((c) => c.imageDigest));
            const now = Date.now();
            const leased = new Set(this.state.listLeases().flatMap((l) => (l.expiresAt > now ? l.resources.filter((r) => r.kind === 'blob').map((r) => r.id) : [])));
            return this.state.listImages().filter((img) => !keep.has(img.ref) && !named.has(img.ref) && !runDigests.has(img.digest) && !leased.has(img.digest));
          },
          forget: (ref) => this.state.deleteImages([ref]),
          collect: () => this.collector().collect({ dryRun: false }),
          event: (key, reason, message, type) => void this.addEvent(key, reason, message, { type }),
          log: this.cfg.log,
        },
        t,
      );
    });
  }

  private collector(): GarbageCollector {
    return new GarbageCollector(this.state, this.content, this.snapshots, this.cfg.log, this.leases);
  }

  /**
   * The config (Entrypoint, Cmd, WorkingDir, User…) of a local image by its manifest digest,
   * read-only, for `describe`; undefined when that manifest is not here or its config does
   * not parse any more.
   */
  imageConfig(digest: string): ImageConfig | undefined {
    const m = this.state.getManifest(digest as Digest);
    if (m === undefined) return undefined;
    try {
      return parseImageConfig(Buffer.from(m.config), `image ${digest} config`);
    } catch {
      return undefined;
    }
  }

  // pods and containers --------------------------------------------------------

  logPath(podKey: string, name: string, id: string): string {
    return path.join(this.cfg.root, 'logs', podKey.replace('/', '_'), name, `${id}.log`);
  }

  /**
   * Reads recorded pods and containers and brings each container's state in line with
   * runc and conmon (S2): running stays running (adopted as is), stopped gets its exit
   * code, vanished gets 137. Leftover `creating`/`removing` intent rows are rolled back
   * when `repair` is set (apply, up); read-only callers (diff, ps) skip them and write
   * nothing at all (ps runs without the state lock).
   */
  async observe(opts: { repair: boolean } = { repair: true }): Promise<ObservedPod[]> {
    if (!opts.repair) return this.observeReadOnly();
    // One `runc list` for all containers instead of one `runc state` each (200 pods: one process, not 200).
    const tasks = new Map((await this.tasks.list()).map((t) => [t.id, t]));
    const out: ObservedPod[] = [];
    for (const p of this.state.listPods()) out.push(await this.observeRecord(p, opts.repair, tasks));
    return out;
  }

  /**
   * The read-only view (ps, status, diff without a daemon), with no process started: rows,
   * where a container recorded running is checked against /proc (its pid alive with the
   * recorded start time) and, when gone, given conmon's exit code (else 137). Interrupted
   * intent rows read as absent. A container frozen by `runc pause` reads as running here;
   * the daemon and every repairing observation ask runc.
   */
  private async observeReadOnly(): Promise<ObservedPod[]> {
    const seen: ObservedContainer[] = [];
    for (const c of this.state.listContainers()) {
      if (c.state === 'creating' || c.state === 'removing') continue;
      if (c.state === 'running' && !isSameProcess(c.pid, c.pidStart)) {
        const exit = await this.exitOf(c.id);
        // Its conmon is still to write the exit file: shown as recorded, not as 137 (regression
        // exit-recorded-137-while-conmon-writes).
        if (exit === undefined && (await this.tasks.conmonAlive(c.id))) {
          seen.push({ ...c, live: true });
          continue;
        }
        seen.push({ ...c, state: 'exited', exitCode: exit?.code ?? 137, finishedAt: exit?.at ?? Date.now(), reason: exitReason(exit?.code ?? 137, exit?.oom === true), live: false });
      } else {
        seen.push({ ...c, live: c.state !== 'exited' });
      }
    }
    return this.withContainers(seen);
  }

  /** Every pod row with its containers (in row order), from a flat list of containers. */
  private withContainers(containers: readonly ObservedContainer[]): ObservedPod[] {
    const byPod = new Map<string, ObservedContainer[]>();
    for (const c of containers) {
      const list = byPod.get(c.podKey) ?? [];
      list.push(c);
      byPod.set(c.podKey, list);
    }
    return this.state.listPods().map((p) => this.withSandbox({ ...p, containers: byPod.get(p.key) ?? [] }));
  }

  private withSandbox(p: ObservedPod): ObservedPod {
    const sb = this.sandboxes.view(p.key);
    return sb === undefined ? p : { ...p, sandbox: sb };
  }

  /** One pod's observation (see observe); undefined when no pod row exists. */
  async observePod(key: string, opts: { repair: boolean }): Promise<ObservedPod | undefined> {
    const p = this.state.getPod(key);
    return p === undefined ? undefined : this.observeRecord(p, opts.repair);
  }

  /**
   * Pods whose rows may no longer be true, found without running anything: a container
   * recorded running whose pid is gone or reused (checked against the recorded start time
   * in /proc), or a row left in an intent state. The resync safety net enqueues these.
   */
  driftedPods(): string[] {
    const out = new Set<string>();
    for (const c of this.state.listContainers()) {
      if (c.state === 'creating' || c.state === 'removing' || c.state === 'created') out.add(c.podKey);
      else if (c.state === 'running' && !isSameProcess(c.pid, c.pidStart)) out.add(c.podKey);
    }
    return [...out];
  }

  /** Rows only, no runc calls: what the recorded state says (the daemon keeps it current). */
  recordedPods(): ObservedPod[] {
    return this.withContainers(this.state.listContainers().map((c) => ({ ...c, live: c.state !== 'exited' })));
  }

  private async observeRecord(p: PodRecord, repair: boolean, tasks?: ReadonlyMap<string, TaskStatus>): Promise<ObservedPod> {
    const containers: ObservedContainer[] = [];
    for (const c of this.state.listContainers(p.key)) {
      const o = await this.observeContainer(c, repair, tasks !== undefined ? { known: tasks.get(c.id) } : undefined);
      if (o !== undefined) containers.push(o);
    }
    if (repair) await this.sandboxes.repair(p.key);
    return this.withSandbox({ ...p, containers });
  }

  private async observeContainer(c: ContainerRecord, repair: boolean, listed?: { known: TaskStatus | undefined }): Promise<ObservedContainer | undefined> {
    const st = listed !== undefined ? listed.known : await this.taskState(c);
    if (c.state === 'creating' || c.state === 'removing') {
      // Read-only observers (diff, ps) see the interrupted container as absent; apply/up repair.
      if (!repair) return undefined;
      // A crash interrupted create or remove: finish removing; the planner creates it anew.
      this.cfg.log.info({ id: c.id, state: c.state }, 'rolling back interrupted container operation');
      await this.destroyContainer(c.id, 0);
      return undefined;
    }
    if (st !== undefined && (st.status === 'running' || st.status === 'paused')) {
      // Synchronous /proc read: hundreds of containers in one observe, no thread-pool hop each.
      const start = startTime(st.pid);
      if (repair && (c.state !== 'running' || c.pid !== st.pid || c.pidStart !== start || c.startedAt === null)) {
        // Adopted after a crash between `runc start` and the row's update: its start time is the
        // process's, so the 10-minute back-off reset and `status` AGE still hold (regression
        // adopted-without-started-at).
        const startedAt = c.startedAt ?? processStartedAt(start) ?? Date.now();
        this.state.updateContainer(c.id, { state: 'running', pid: st.pid, pidStart: start, startedAt });
      }
      if (c.startedAt === null) c = { ...c, startedAt: this.state.getContainer(c.id)?.startedAt ?? null };
      // A container frozen by `runc pause` is alive: reported as paused, never replaced.
      return { ...c, state: st.status, pid: st.pid, pidStart: start, live: true };
    }
    if (st !== undefined && st.status === 'created') {
      return { ...c, state: 'created', live: true };
    }
    if (c.state === 'exited') return { ...c, live: st !== undefined };
    // Recorded running (or created), now stopped or gone: the exit code and time are
    // conmon's (its exit file and when it was written), else 137 and now (vanished). A conmon
    // still alive without its exit file is draining and syncing the log first (a slow disk can
    // take seconds): the row waits for the file (the exit watcher looks again when it lands),
    // up to EXIT_FILE_PATIENCE_MS for a conmon that never writes one (regression
    // exit-recorded-137-while-conmon-writes).
    if (repair && !(await this.tasks.exitRecorded(c.id, EXIT_RECORD_WAIT_MS)) && (await this.tasks.conmonAlive(c.id))) {
      const since = this.exitPending.get(c.id) ?? Date.now();
      this.exitPending.set(c.id, since);
      if (Date.now() - since < EXIT_FILE_PATIENCE_MS) return { ...c, live: true };
    }
    this.exitPending.delete(c.id);
    const exit = await this.exitOf(c.id);
    const code = exit?.code ?? 137;
    const finishedAt = exit?.at ?? Date.now();
    const reason = exitReason(code, exit?.oom === true);
    // Read-only observers report what they see; only the state-lock holder records it.
    // The exit, its restart record and its event: one commit.
    if (repair) this.state.transaction(() => {
      this.state.updateContainer(c.id, { state: 'exited', exitCode: code, finishedAt, reason });
      this.patchRestart(c.podKey, c.name, (prev) => ({
        nextAttempt: Math.max(prev.nextAttempt, c.attempt + 1),
        lastId: c.id,
        lastExitCode: code,
        lastReason: reason,
        lastStartedAt: c.startedAt,
        lastFinishedAt: finishedAt,
      }));
      this.addEvent(`pod/${c.podKey}`, 'Exited', `container ${c.name} (${c.id}) exited with code ${code} (${reason})${exit === undefined ? ', vanished' : ''}`, {
        type: code === 0 ? 'Normal' : 'Warning',
      });
    });
    // In the pod's shared PID namespace what the init started outlives it: ended with it, as
    // containerd's shim does, not at the container's removal (regression shared-pid-leftovers).
    if (repair && st !== undefined && (await this.tasks.sharesPidNamespace(this.bundleOf(c.id).bundle))) {
      await this.tasks.killAll(c.id, 'KILL').catch((err: unknown) => this.cfg.log.warn({ id: c.id, err: messageOf(err) }, 'killing what the container left running failed'));
    }
    return { ...c, state: 'exited', exitCode: code, finishedAt, reason, live: st !== undefined };
  }

  /**
   * runc's view of one container, without a runc process when conmon's exit file already says
   * it ended (ids are never reused and create removes a stale exit file): a stopped container
   * that runc keeps until delete. Saves a fork per pod run after an exit and per removal.
   */
  private async taskState(c: ContainerRecord): Promise<TaskStatus | undefined> {
    if (c.state !== 'creating' && c.state !== 'removing' && (await this.tasks.exitCode(c.id)) !== undefined) {
      return { id: c.id, status: 'stopped', pid: 0, bundle: this.bundleOf(c.id).bundle };
    }
    // Recorded running, no exit file, and the recorded init still alive (same start time, not a
    // zombie): what runc state would compute from the same facts (its pid check, then the
    // freezer), without forking runc — once per container each time a pod is reconciled,
    // e.g. right after its start. containerd's shim answers from memory likewise.
    if (c.state === 'running' && c.pid !== null) {
      if (isSameProcess(c.pid, c.pidStart)) return { id: c.id, status: isFrozen(c.pid) ? 'paused' : 'running', pid: c.pid, bundle: this.bundleOf(c.id).bundle };
      // The init is gone and conmon has not written its exit file yet (it does once it has reaped
      // the init): wait for that rather than read no code and record the exit as 137, vanished
      // (regression observe-between-init-exit-and-exit-file). A /bin/true ends that close to
      // its start. A conmon that is gone too leaves it to runc.
      if (await this.tasks.exitRecorded(c.id, EXIT_RECORD_WAIT_MS)) return { id: c.id, status: 'stopped', pid: 0, bundle: this.bundleOf(c.id).bundle };
    }
    return this.tasks.state(c.id);
  }

  /** conmon's exit file: code, when it was written, and whether the kernel OOM-killed the container. */
  private async exitOf(id: string): Promise<{ code: number; at: number; oom: boolean } | undefined> {
    const code = await this.tasks.exitCode(id);
    if (code === undefined) return undefined;
    const st = await fsp.stat(this.tasks.exitFile(id)).catch(() => undefined);
    const oom = await fsp.access(path.join(this.tasks.persistDir(id), 'oom')).then(() => true, () => false);
    return { code, at: st !== undefined ? Math.floor(st.mtimeMs) : Date.now(), oom };
  }

  recordPod(p: PodRecord): void {
    this.state.upsertPod(p);
  }

  /** Marks the pod as being deleted, its grace period ending `graceMs` from now (status: Terminating). */
  markPodDeleting(key: string, graceMs: number): void {
    this.state.markPodDeleting(key, Date.now() + graceMs);
  }

  /** Deletes the pod row, its logs and volumes (emptyDir, projections; never a hostPath); its containers must be removed first. */
  async forgetPod(key: string): Promise<void> {
    await this.volumes.remove(key);
    this.state.deletePod(key);
    await fsp.rm(path.join(this.cfg.root, 'logs', key.replace('/', '_')), { recursive: true, force: true });
  }

  /**
   * Generates the container's config.json without running anything, so a replace can
   * fail before the old container is stopped (the image config may break rule R1).
   */
  checkRunSpec(image: LocalImage, run: RunContainerOptions['run']): void {
    const sandbox: SandboxRef = run.pod.hostNetwork ? { kind: 'host', files: [] } : { kind: 'pod', netns: '/', ipc: '/', uts: '/', files: [] };
    const { volumes: _v, ...rest } = run;
    generateSpec(image.config, { ...rest, id: 'check', rootfs: '/', sandbox }, 'check');
  }

  /** The namespaces and files a container of the pod gets (host ones with hostNetwork). */
  private sandboxRef(podKey: string, pod: PodNetworking): SandboxRef {
    if (pod.hostNetwork) {
      // With the host network the pod sees the host's names and resolvers, as on Kubernetes.
      return { kind: 'host', hostname: os.hostname(), files: ['/etc/hosts', '/etc/resolv.conf', '/etc/hostname'].filter((f) => existsSync(f)).map((f) => ({ destination: f, source: f })) };
    }
    return this.sandboxes.ref(podKey, pod.shareProcessNamespace);
  }

  /** Named volumes (persistentVolumeClaim) with their size and the recorded pods whose spec names them. */
  async listVolumes(): Promise<{ name: string; bytes: number; usedBy: string[] }[]> {
    const named = await this.volumes.listNamed();
    return named.map((v) => ({
      ...v,
      usedBy: this.state
        .listPods()
        .filter((p) => p.spec.includes(`"claimName":${JSON.stringify(v.name)}`))
        .map((p) => p.key),
    }));
  }

  /** Removes named volumes; one a recorded pod names is refused (ERR_PRECONDITION, naming the pod). */
  async removeVolumes(names: readonly string[]): Promise<void> {
    const used = await this.listVolumes();
    // All or nothing, as images rm: every name is checked before anything is removed, so a typo
    // in the list does not leave the others half done (regression volumes-rm-partial).
    for (const n of names) {
      checkVolumeName(n);
      const u = used.find((v) => v.name === n);
      if (u === undefined) throw new BerthError('ERR_NOT_FOUND', `volume ${n}: no such volume (berth volumes ls); nothing was removed`);
      if (u.usedBy.length > 0) throw new BerthError('ERR_PRECONDITION', `volume ${n}: used by pod ${u.usedBy.join(', ')} (delete the pod first)`);
    }
    for (const n of names) await this.volumes.removeNamed(n);
  }

  /** Makes the pod's volumes present and its configMap/secret projections current (no restart). */
  async syncVolumes(podKey: string, volumes: readonly PodVolume[]): Promise<void> {
    await this.volumes.sync(podKey, volumes);
  }

  // configs --------------------------------------------------------------------

  /** ConfigMaps and Secrets recorded by earlier applies, as JSON objects (the reconciler's DesiredConfig). */
  listConfigs(): { key: string; source: string; object: string }[] {
    return this.state.listConfigs();
  }

  updateConfigs(put: readonly { key: string; source: string; object: string }[], remove: readonly string[]): void {
    if (put.length === 0 && remove.length === 0) return;
    this.state.updateConfigs(put, remove);
  }

  // sandboxes ------------------------------------------------------------------

  /**
   * Creates the pod's sandbox (netns, CNI, infra container), tearing down one that exists.
   * The caller removes the pod's containers first: they live in the old namespaces.
   */
  async createSandbox(spec: SandboxSpec, shareProcessNamespace: boolean): Promise<{ ip: string | null }> {
    const r = await this.sandboxes.create(spec, shareProcessNamespace);
    this.addEvent(`pod/${spec.podKey}`, 'SandboxReady', `sandbox ${r.id} ready, IP ${r.ip ?? '?'}`);
    return { ip: r.ip };
  }

  /** The pod's IP on berth's bridge, when its sandbox is ready. */
  podIP(podKey: string): string | null {
    const v = this.sandboxes.view(podKey);
    return v?.ready === true ? v.ip : null;
  }

  /**
   * Runs a probe or hook against a running container: exec through runc (exit 0 is success),
   * httpGet (2xx/3xx) or tcpSocket (connects) to the pod's IP — 127.0.0.1 with hostNetwork —
   * unless the handler names a host. Never throws: a failure is `ok: false` with why.
   */
  async runHandler(podKey: string, id: string, h: Handler, timeoutMs: number, hostNetwork: boolean): Promise<{ ok: boolean; message: string }> {
    try {
      if ('exec' in h) {
        const r = await this.tasks.exec(id, h.exec.command, timeoutMs);
        const out = `${r.stdout}${r.stderr}`.trim().split('\n').slice(-1)[0] ?? '';
        return { ok: r.code === 0, message: r.code === 0 ? 'exit code 0' : `exit code ${r.code}${out !== '' ? `: ${out.slice(0, 200)}` : ''}` };
      }
      const host = ('httpGet' in h ? h.httpGet.host : h.tcpSocket.host) ?? (hostNetwork ? '127.0.0.1' : this.podIP(podKey));
      if (host === null || host === undefined) return { ok: false, message: 'the pod has no IP yet' };
      if ('tcpSocket' in h) return await tcpCheck(host, h.tcpSocket.port, timeoutMs);
      return await httpCheck(host, h.httpGet.port, h.httpGet.path, h.httpGet.headers ?? [], timeoutMs);
    } catch (err) {
      return { ok: false, message: messageOf(err) };
    }
  }

  /** Tears down the pod's sandbox if it has one (CNI DEL, netns, infra container). Idempotent. */
  async removeSandbox(podKey: string): Promise<void> {
    await this.sandboxes.remove(podKey);
  }

  /**
   * Mounts the rootfs, writes the bundle, starts the container under conmon + runc.
   * The row is written first with state `creating` (intent, rule S3).
   */
  async runContainer(o: RunContainerOptions): Promise<ContainerRecord> {
    const id = containerId(o.podKey, o.name, o.specHash, o.attempt);
    if (this.state.getContainer(id) !== undefined) {
      // An attempt number is never reused; a row with this id is left from a crash.
      await this.destroyContainer(id, 0);
    }
    const now = Date.now();
    const rec: ContainerRecord = {
      id,
      podKey: o.podKey,
      name: o.name,
      specHash: o.specHash,
      imageRef: o.image.ref,
      imageDigest: o.image.digest,
      state: 'creating',
      pid: null,
      pidStart: null,
      exitCode: null,
      createdAt: now,
      startedAt: null,
      finishedAt: null,
      attempt: o.attempt,
      reason: null,
    };
    // The intent row, the attempt it uses and the image's last use: one commit (each is an fsync),
    // before any side effect.
    this.state.transaction(() => {
      this.patchRestart(o.podKey, o.name, (prev) => ({ nextAttempt: Math.max(prev.nextAttempt, o.attempt + 1) }));
      this.state.insertContainer(rec);
      // The image's last use: automatic GC removes unused images least recently used first.
      this.state.touchImage(o.image.digest, now);
    });
    const { bundle, rootfs } = this.bundleOf(id);
    let taskStage = false;
    try {
      await mkdirp(bundle);
      await this.snapshots.mountRootfs(id, o.image.chainIds, rootfs);
      const { pod, volumes, ...run } = o.run;
      const mounts = volumes === undefined ? [] : await this.volumes.mounts(o.podKey, volumes.pod, volumes.mounts);
      const spec = generateSpec(o.image.config, {
        ...run,
        mounts,
        sandbox: this.sandboxRef(o.podKey, pod),
        id,
        rootfs,
        annotations: { ...(run.annotations ?? {}), [ANNOTATION_POD]: o.podKey, [ANNOTATION_CONTAINER]: o.name },
      });
      // No conmon size limit: berth up rotates (rotateLogs); see CreateTaskOptions.logSizeMax.
      taskStage = true;
      const pid = await this.tasks.create({ id, bundle, spec, logPath: this.logPath(o.podKey, o.name, id) });
      this.state.updateContainer(id, { state: 'created', pid });
      crashPoint('task.between-create-start');
      // A replace creates the new container while the old one stops, and starts it only
      // once the old one is gone (ports, and Kubernetes' stop-then-start order).
      if (o.startAfter !== undefined) await o.startAfter;
      await this.tasks.start(id);
      crashPoint('task.after-start');
      const startedAt = Date.now();
      const pidStart = startTime(pid);
      this.state.transaction(() => {
        this.state.updateContainer(id, { state: 'running', startedAt, pidStart });
        this.addEvent(`pod/${o.podKey}`, 'Started', `container ${o.name} (${id}) started, pid ${pid}`);
      });
      await this.pruneLogs(o.podKey, o.name, id);
      this.cfg.log.info({ id, containerPid: pid, pod: o.podKey }, 'container started');
      if (o.postStart !== undefined) {
        // The kubelet's rule: a failed postStart hook kills the container; its restart policy decides what follows.
        const r = await this.runHandler(o.podKey, id, o.postStart, POST_START_TIMEOUT_MS, o.run.pod.hostNetwork);
        if (!r.ok) {
          this.addEvent(`pod/${o.podKey}`, 'FailedPostStartHook', `container ${o.name} (${id}): postStart hook failed: ${r.message}`, { type: 'Warning' });
          // The kubelet's killContainer, as for any stop: preStop, the stop signal, SIGKILL after the
          // grace period (regression poststart-failure-sigkills).
          const hooks: StopHooks = { hostNetwork: o.run.pod.hostNetwork, ...(o.stop?.minWindowMs !== undefined ? { minWindowMs: o.stop.minWindowMs } : {}), ...(o.stop?.preStop !== undefined ? { preStop: o.stop.preStop } : {}) };
          await this.killContainer(id, o.stop?.graceMs ?? 0, 'postStart hook failed', hooks);
        }
      }
      return { ...rec, state: 'running', pid, pidStart, startedAt };
    } catch (err) {
      this.cfg.log.debug({ id, err }, 'container start failed, rolling back');
      // runc could not start the process (an executable not found, a bad working dir): as
      // containerd and the kubelet, the container exited with 128, reason StartError, so the
      // restart policy and the crash-loop back-off decide, not a retry every few seconds; the
      // reason is a Warning event (regression start-failure-ignores-restart-policy).
      if (taskStage) {
        const kept = await this.removeContainerFiles(id, 0).then(
          () => true,
          (e: unknown) => (this.cfg.log.warn({ id, err: e }, 'clean-up after a failed start failed'), false),
        );
        if (kept) {
          this.state.transaction(() => {
            this.state.updateContainer(id, { state: 'exited', exitCode: 128, reason: 'StartError', finishedAt: Date.now(), pid: null });
            this.addEvent(`pod/${o.podKey}`, 'Failed', `container ${o.name} (${id}) could not start: ${messageOf(err)}`, { type: 'Warning' });
          });
          throw err;
        }
      }
      await this.destroyContainer(id, 0).catch((e: unknown) => this.cfg.log.warn({ id, err: e }, 'rollback failed'));
      throw err;
    }
  }

  /**
   * Keeps the current log and the one before it (what `logs --previous` will show, as the
   * kubelet does); a container restarted many times must not fill the disk with old logs.
   */
  private async pruneLogs(podKey: string, name: string, currentId: string): Promise<void> {
    const dir = path.dirname(this.logPath(podKey, name, currentId));
    const entries = await fsp.readdir(dir).catch(() => [] as string[]);
    const others = await Promise.all(
      entries
        .filter((f) => f.endsWith('.log') && f !== `${currentId}.log`)
        .map(async (f) => ({ f, mtime: (await fsp.stat(path.join(dir, f)).catch(() => undefined))?.mtimeMs ?? 0 })),
    );
    others.sort((a, b) => b.mtime - a.mtime);
    for (const { f } of others.slice(1)) {
      await fsp.rm(path.join(dir, f), { force: true });
      await fsp.rm(path.join(dir, `${f}.1`), { force: true });
    }
  }

  private get logMaxBytes(): number {
    return this.cfg.containerLogMaxBytes ?? 10 * 1024 * 1024;
  }

  /** Disk use of a pod's disk emptyDir (du's count, bounded; see VolumeManager.usage). */
  emptyDirUsage(podKey: string, name: string, stopAtBytes: number): Promise<{ bytes: number; complete: boolean }> {
    return this.volumes.usage(podKey, name, { stopAtBytes });
  }

  /**
   * Evicts a pod whose emptyDir passed its sizeLimit, as the kubelet's eviction manager does
   * for local storage (grace period 0): every running container of the pod is killed
   * (SIGKILL), then the named volumes are emptied, and an `Evicted` warning event with
   * `message` is recorded. The rows stay: the exits are observed like any other, so the
   * restartPolicy decides what runs again (see docs/NOTES.md). Idempotent.
   */
  async evictPod(podKey: string, volumes: readonly string[], message: string): Promise<void> {
    for (const c of this.state.listContainers(podKey)) {
      if (c.state === 'running') await this.tasks.stop(c.id, 0, 'SIGKILL');
    }
    for (const v of volumes) await this.volumes.empty(podKey, v);
    this.addEvent(`pod/${podKey}`, 'Evicted', message, { type: 'Warning' });
  }

  /**
   * Rotates the log of each running container that reached the configured size, keeping one
   * previous file (`<log>.1`); run by `berth up` every second. Returns the ids rotated. While no
   * daemon runs nothing rotates (as no kubelet would): the next `berth up` rotates at once.
   */
  async rotateLogs(): Promise<string[]> {
    const done: string[] = [];
    for (const c of this.state.listContainers()) {
      if (c.state !== 'running') continue;
      const rotated = await this.tasks.rotateLog({ bundle: this.bundleOf(c.id).bundle, logPath: this.logPath(c.podKey, c.name, c.id), maxBytes: this.logMaxBytes });
      if (rotated) done.push(c.id);
    }
    return done;
  }

  /**
   * The kubelet's killContainer before the signal: the preStop hook, only when there is a grace
   * period to run it in, counted against it; once it ran, the container still gets at least
   * MIN_GRACE_AFTER_PRESTOP_MS to stop after the signal (the kubelet's minimal shutdown window),
   * however long the hook took; without a hook, at least `hooks.minWindowMs` (the same 2 s for a
   * pod's containers, so terminationGracePeriodSeconds 0 is SIGTERM and 2 s, not SIGKILL at once,
   * as the kubelet: regression grace-zero-sigkills). Returns the grace left for the signal.
   */
  private async preStop(rec: ContainerRecord | undefined, id: string, graceMs: number, hooks: StopHooks): Promise<number> {
    if (hooks.preStop === undefined || graceMs <= 0 || rec?.state !== 'running' || !(await this.isRunning(id))) return Math.max(hooks.minWindowMs ?? 0, graceMs);
    const began = Date.now();
    const r = await this.runHandler(rec.podKey, id, hooks.preStop, graceMs, hooks.hostNetwork ?? false);
    if (!r.ok) this.addEvent(`pod/${rec.podKey}`, 'FailedPreStopHook', `container ${rec.name} (${id}): preStop hook failed: ${r.message}`, { type: 'Warning' });
    return Math.max(MIN_GRACE_AFTER_PRESTOP_MS, graceMs - (Date.now() - began));
  }

  /**
   * Stops a running container and keeps it: preStop, its stop signal, SIGKILL after the grace
   * period; the exit is then recorded as any exit is (code, reason, restart record), and the
   * pod's restart policy and back-off decide what follows. What the kubelet does to a container
   * whose liveness or startup probe gave up. Nothing to do for a container not running.
   */
  async killContainer(id: string, graceMs: number, why: string, hooks: StopHooks = {}): Promise<void> {
    const rec = this.state.getContainer(id);
    if (rec === undefined || rec.state !== 'running') return;
    this.addEvent(`pod/${rec.podKey}`, 'Killing', `container ${rec.name} (${id}): ${why}, will be stopped`);
    const grace = await this.preStop(rec, id, graceMs, hooks);
    await this.tasks.stop(id, grace, this.stopSignalOf(id));
    // The exit is recorded now (conmon has written its exit file), not at the next observation:
    // the plan that follows must see it exited, never running and unhealthy again.
    const now = this.state.getContainer(id);
    if (now !== undefined) await this.observeContainer(now, true);
  }

  /**
   * Stops (SIGTERM, SIGKILL after graceMs) and deletes a container: runc state, conmon
   * files, rootfs mount, writable layer, row. Idempotent.
   */
  async destroyContainer(id: string, graceMs: number, hooks: StopHooks = {}): Promise<void> {
    const rec = this.state.getContainer(id);
    // preStop runs first and counts against the grace period, as on Kubernetes.
    const grace = await this.preStop(rec, id, graceMs, hooks);
    if (rec !== undefined && rec.state !== 'removing') this.state.updateContainer(id, { state: 'removing' });
    const code = await this.removeContainerFiles(id, grace);
    this.state.transaction(() => {
      this.state.deleteContainer(id);
      if (rec !== undefined && rec.state !== 'exited') {
        this.addEvent(`pod/${rec.podKey}`, 'Killed', `container ${rec.name} (${id}) stopped${code !== undefined ? `, exit code ${code}` : ''}`);
      }
    });
  }

  /** The image's STOPSIGNAL (allowlisted) for a recorded container, else SIGTERM. */
  private stopSignalOf(id: string): string {
    const rec = this.state.getContainer(id);
    const m = rec === undefined ? undefined : this.state.getManifest(rec.imageDigest);
    if (m === undefined) return 'SIGTERM';
    try {
      return stopSignal(parseImageConfig(Buffer.from(m.config), `image ${rec?.imageRef ?? ''} config`));
    } catch {
      return 'SIGTERM';
    }
  }

  /** A container's OCI bundle (config.json) and the rootfs mount point inside it. */
  private bundleOf(id: string): { bundle: string; rootfs: string } {
    const bundle = path.join(this.snapshots.containerDir(id), 'bundle');
    return { bundle, rootfs: path.join(bundle, 'rootfs') };
  }

  // records: rows the reconciler and the daemon read and write through the façade ------

  listPods(): PodRecord[] {
    return this.state.listPods();
  }

  getPod(key: string): PodRecord | undefined {
    return this.state.getPod(key);
  }

  listContainers(podKey?: string): ContainerRecord[] {
    return this.state.listContainers(podKey);
  }

  listImages(): ReturnType<StateStore['listImages']> {
    return this.state.listImages();
  }

  listRestarts(podKey?: string): RestartRecord[] {
    return this.state.listRestarts(podKey);
  }

  /** Records the crash-loop backoff and restart count of one container name (rule S6). */
  updateRestart(podKey: string, name: string, patch: Partial<Pick<RestartRecord, 'restarts' | 'backoffMs'>>): void {
    this.patchRestart(podKey, name, () => patch);
  }

  /** Read-modify-write of one restart row in a transaction (a new row starts at attempt 0, no restarts). */
  private patchRestart(podKey: string, name: string, patch: (prev: RestartRecord) => Partial<Omit<RestartRecord, 'podKey' | 'name'>>): void {
    this.state.transaction(() => {
      const prev = this.state.getRestart(podKey, name) ?? emptyRestart(podKey, name);
      this.state.putRestart({ ...prev, ...patch(prev) });
    });
  }

  listConditions(key?: string): ConditionRecord[] {
    return this.state.listConditions(key);
  }

  setConditions(key: string, conds: Parameters<StateStore['setConditions']>[1]): string[] {
    return this.state.setConditions(key, conds);
  }

  deleteConditions(key: string): void {
    this.state.deleteConditions(key);
  }

  listEvents(o: Parameters<StateStore['listEvents']>[0] = {}): EventRecord[] {
    return this.state.listEvents(o);
  }

  addEvent(key: string, reason: string, message: string, opts: { type?: EventRecord['type']; code?: string } = {}): EventRecord {
    const e = this.state.addEvent(key, reason, message, opts);
    for (const l of this.eventListeners) l(e);
    return e;
  }

  /** Calls `fn` for every event this process records; returns the unsubscribe function. */
  onEvent(fn: (e: EventRecord) => void): () => void {
    this.eventListeners.add(fn);
    return () => this.eventListeners.delete(fn);
  }

  /** The log file of a recorded container id (current or previous attempt). */
  containerLogPath(id: string): string | undefined {
    const c = this.state.getContainer(id) ?? parseContainerId(id);
    return c === undefined ? undefined : this.logPath(c.podKey, c.name, id);
  }

  /** The registry options this runtime pulls with (the daemon refuses a pull asked for with others). */
  get registrySettings(): Pick<RuntimeConfig, 'registryConfig' | 'registryHostsDir'> {
    return {
      ...(this.cfg.registryConfig !== undefined ? { registryConfig: { ...this.cfg.registryConfig } } : {}),
      ...(this.cfg.registryHostsDir !== undefined ? { registryHostsDir: { ...this.cfg.registryHostsDir } } : {}),
    };
  }

  /** Paths used by tests, `berth check` and the daemon (exit files, socket). */
  get paths(): { root: string; state: string; runcRoot: string; exitDir: string; socket: string } {
    return {
      root: this.cfg.root,
      state: this.cfg.state,
      runcRoot: path.join(this.cfg.state, 'runc'),
      exitDir: path.join(this.cfg.state, 'exits'),
      socket: path.join(this.cfg.state, 'berth.sock'),
    };
  }

  /**
   * State fsck for `berth check`: SQLite integrity, rows vs runc vs files. Read-only:
   * it reports, the next `berth up` (sweep) or apply repairs.
   */
  async fsck(): Promise<Finding[]> {
    const out: Finding[] = [];
    const integrity = this.state.integrityCheck();
    out.push(integrity === 'ok' ? { level: 'ok', what: 'database', detail: 'integrity ok' } : { level: 'fail', what: 'database', detail: integrity });
    const rows = this.state.listContainers();
    const known = new Set([...rows.map((c) => c.id), ...this.sandboxes.ids()]);
    const tasks = await this.tasks.list();
    const runcIds = new Set(tasks.map((t) => t.id));
    for (const c of rows) {
      if (c.state === 'running' && !runcIds.has(c.id)) out.push({ level: 'warn', what: 'container', detail: `${c.id} is recorded running but runc does not know it (vanished; it is restarted by policy)` });
      if (runcIds.has(c.id) && tasks.find((t) => t.id === c.id)?.status === 'running' && !(await this.tasks.conmonAlive(c.id))) {
        out.push({ level: 'warn', what: 'monitor', detail: `${c.id} runs without its conmon: its output and exit code are no longer recorded (replace it: berth delete, then apply)` });
      }
    }
    for (const t of tasks) {
      if (known.has(t.id)) continue;
      out.push(
        t.annotations?.[ANNOTATION_POD] !== undefined
          ? { level: 'warn', what: 'container', detail: `${t.id} carries berth's annotation but has no row (removed by the next berth up)` }
          : { level: 'ok', what: 'container', detail: `${t.id} in berth's runc root is not berth's; it is left alone` },
      );
    }
    const dirs = await fsp.readdir(path.join(this.cfg.root, 'containers')).catch(() => [] as string[]);
    for (const d of dirs) if (!known.has(d) && !runcIds.has(d)) out.push({ level: 'warn', what: 'residue', detail: `containers/${d} has no row and no runc container` });
    const mounts = (await listMounts()).filter((m) => m.startsWith(`${path.join(this.cfg.root, 'containers')}/`));
    for (const m of mounts) {
      const id = path.relative(path.join(this.cfg.root, 'containers'), m).split('/')[0] ?? '';
      if (!known.has(id)) out.push({ level: 'warn', what: 'mount', detail: `${m} belongs to no recorded container` });
    }
    const tmp = (await fsp.readdir(path.join(this.cfg.root, 'snapshots')).catch(() => [] as string[])).filter((n) => n.startsWith('tmp-'));
    const ingest = await fsp.readdir(path.join(this.cfg.root, 'content', 'ingest')).catch(() => [] as string[]);
    // Partial downloads named by their digest are kept for a resume (a day); other ingest files are residue.
    const partials = ingest.filter((n) => /^[0-9a-f]{64}$/.test(n));
    const junk = ingest.length - partials.length;
    if (tmp.length + junk > 0) out.push({ level: 'warn', what: 'residue', detail: `${tmp.length} interrupted extraction(s), ${junk} stray download file(s) (swept by the next berth up)` });
    if (partials.length > 0) out.push({ level: 'ok', what: 'content', detail: `${partials.length} partial download(s) kept for a resume (removed after 24 h)` });
    for (const img of this.state.listImages()) {
      const m = this.state.getManifest(img.digest);
      for (const l of m?.layers ?? []) {
        const ready = this.state.getSnapshot(l.chainId) !== undefined;
        const there = await fsp.access(this.snapshots.dir(l.chainId)).then(() => true, () => false);
        if (ready && !there) out.push({ level: 'fail', what: 'snapshot', detail: `${l.chainId} of ${img.ref} is recorded ready but its directory is missing` });
      }
    }
    if (out.length === 1 && integrity === 'ok') out.push({ level: 'ok', what: 'state', detail: `${rows.length} container(s), ${this.state.listImages().length} image(s), consistent` });
    return out;
  }

  /**
   * `berth exec`: runs `argv` in the running container with this process's stdio (TaskDriver
   * execAttached: the command's exit code; 127/126 with runc's words when it cannot start).
   * Changes no state and needs only runc's root: the CLI calls it in its own process even
   * while `berth up` runs (the daemon could not hand it a terminal's stdin).
   */
  execInContainer(id: string, argv: readonly string[], o: { stdin: boolean; tty?: boolean }): Promise<{ code: number; failure?: string }> {
    return this.tasks.execAttached(id, argv, o);
  }

  /** `berth stats`: one reading of the container's cgroup counters; undefined when it has no cgroup (not running). */
  containerStats(id: string): Promise<CgroupSample | undefined> {
    return readCgroupSample(id);
  }

  /**
   * Whether conmon has written container `id`'s exit file (name as it appears in
   * `paths.exitDir`). conmon creates the file and then writes the code into it, and a watcher
   * sees the creation first: the exit watch waits for the write's own event.
   */
  async exitWritten(id: string): Promise<boolean> {
    return (await this.tasks.exitCode(id)) !== undefined;
  }

  /** True while runc reports the container running. */
  async isRunning(id: string): Promise<boolean> {
    return (await this.tasks.state(id))?.status === 'running';
  }

}

/**
 * Deterministic id: `<namespace>.<pod>.<container>.<hash8>-<attempt>`; DNS labels hold no
 * dots, so the pod key can be read back from an id (exit files are named by id).
 */
export function containerId(podKey: string, name: string, specHash: string, attempt: number): string {
  const [ns, pod] = podKey.split('/');
  return `${ns}.${pod}.${name}.${specHash.slice(0, 8)}-${attempt}`;
}

/** The pod key (`namespace/name`) and container name of a berth container id; undefined for a foreign id. */
function parseContainerId(id: string): { podKey: string; name: string } | undefined {
  const parts = id.split('.');
  if (parts.length !== 4 || parts.some((p) => p === '')) return undefined;
  return { podKey: `${parts[0]}/${parts[1]}`, name: parts[2] ?? '' };
}

/** The pod key (`namespace/name`) of a berth container id, or undefined for a foreign id. */
export function podKeyOfContainerId(id: string): string | undefined {
  return parseContainerId(id)?.podKey;
}

function emptyRestart(podKey: string, name: string): RestartRecord {
  return { podKey, name, restarts: 0, nextAttempt: 0, backoffMs: 0, lastId: null, lastExitCode: null, lastReason: null, lastStartedAt: null, lastFinishedAt: null };
}

const SIGNALS: Record<number, string> = { 1: 'SIGHUP', 2: 'SIGINT', 3: 'SIGQUIT', 6: 'SIGABRT', 9: 'SIGKILL', 11: 'SIGSEGV', 13: 'SIGPIPE', 15: 'SIGTERM' };

/** Kubernetes' terminated reasons: Completed, Error, OOMKilled; berth adds the signal's name. */
function exitReason(code: number, oom: boolean): string {
  if (oom) return 'OOMKilled';
  if (code === 0) return 'Completed';
  if (code > 128 && code < 160) return SIGNALS[code - 128] ?? `signal ${code - 128}`;
  return 'Error';
}

/** The credentials of a pod's imagePullSecrets (dockerconfigjson), tried in order; none: undefined. */
function secretCredentials(pullSecrets: readonly { secret: string; configJson: string }[]): CredentialSource | undefined {
  return pullSecrets.length === 0 ? undefined : chainCredentials(...pullSecrets.map((p) => credentialsFromDockerConfig(p.configJson, `imagePullSecret ${p.secret}`)));
}

async function tcpCheck(host: string, port: number, timeoutMs: number): Promise<{ ok: boolean; message: string }> {
  const net = await import('node:net');
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    const done = (ok: boolean, message: string): void => {
      sock.destroy();
      resolve({ ok, message });
    };
    sock.setTimeout(timeoutMs, () => done(false, `dial tcp ${host}:${port}: timeout after ${timeoutMs} ms`));
    sock.once('connect', () => done(true, `connected to ${host}:${port}`));
    sock.once('error', (e) => done(false, `dial tcp ${host}:${port}: ${e.message}`));
  });
}


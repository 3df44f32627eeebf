import { statSync } from 'node:fs';
import * as path from 'node:path';
import { containerArgv } from '../lib/argv.js';
import { BerthError, isBerthError } from '../lib/errors.js';
import type { Logger } from '../lib/log.js';
import { matchesSelector, parseSelector } from '../lib/selector.js';
import { parseReference, type DiskUsage, type EventRecord, type GcReport, type ImageSummary, type ImportedImage, type ObservedPod, type Runtime } from '../runtime/index.js';
import { Controller, type ApplyResult, type ProgressEvent } from '../reconciler/controller.js';
import { buildDescription, type ImageProcess, type PodDescription } from '../reconciler/describe.js';
import { configChanges, enforceImmutable, knownConfigs, recordConfigs, type ConfigChange } from '../reconciler/configs.js';
import { ANNOTATION_DEFAULT_CONTAINER, type DesiredConfig, type DesiredPlatform, type DesiredPod } from '../reconciler/desired.js';
import { resolvePods } from '../reconciler/resolve.js';
import type { ParseCache } from '../reconciler/manifest.js';
import type { ManifestProblem } from '../reconciler/problem.js';
import { lastAppliedPod, type Plan, type PruneScope } from '../reconciler/plan.js';
import { explainPullFailure } from '../reconciler/pull-error.js';
import { buildStatus, type StatusReport } from '../reconciler/status.js';
import { asPullClient, pullConflict, type PullClient } from './pull.js';

/**
 * What the CLI asks of berth, as data in and data out: the daemon answers these over its
 * socket and the CLI runs the very same methods in-process (under the state lock) when no
 * daemon runs, so output and exit codes cannot differ between the two paths.
 */

/**
 * The manifests a command names: an absolute path (file or directory) or stdin's text. The
 * service reads them itself, so a daemon answers from its warm parse cache and the CLI
 * loads no YAML parser or validator at all.
 */
export interface ManifestRef {
  /** Absolute path, or "-" with stdinText. */
  path: string;
  stdinText?: string;
  /** As the user wrote it, for messages. */
  display: string;
}

/** Manifest problems stop a command before anything runs (exit 2). */
export interface InvalidManifests {
  problems: ManifestProblem[];
  badFiles: number;
}

export interface ApplyRequest {
  input: ManifestRef;
  /** Already read by the caller (the in-process CLI, which checks them before taking the lock). */
  pods?: DesiredPod[];
  /** With `pods`: the ConfigMaps and Secrets the caller read along with them. */
  configs?: DesiredConfig[];
  /** Delete pods this source applied before and no longer declares. */
  prune?: boolean;
  force?: boolean;
  dryRun?: boolean;
  /** Wait until every applied pod is Ready, up to timeoutMs. */
  wait?: boolean;
  timeoutMs?: number;
}

export interface ApplyResponse extends ApplyResult {
  /** With dryRun: the plan, nothing executed. */
  plan?: Plan;
  /** With wait: the pods not Ready by the deadline, and why. */
  notReady?: { key: string; reason: string; message: string }[];
  invalid?: InvalidManifests;
  /** The pods the manifests declare (for --wait's message). */
  declared?: string[];
  /** The ConfigMaps and Secrets recorded, changed or forgotten (with dryRun: that would be). */
  configs?: ConfigChange[];
}

export interface DiffRequest {
  input: ManifestRef;
  pods?: DesiredPod[];
  /** With `pods`: the ConfigMaps and Secrets the caller read along with them. */
  configs?: DesiredConfig[];
  prune?: boolean;
}

export interface DiffResponse {
  plan?: Plan;
  /** The ConfigMaps and Secrets the apply would create, change or delete (names only). */
  configs?: ConfigChange[];
  invalid?: InvalidManifests;
}

export interface DeleteRequest {
  keys: string[];
  /** ConfigMaps and Secrets to forget (`configmap/<ns>/<name>`, `secret/<ns>/<name>`). */
  configs?: string[];
  /** The path given to -f (ownership: a file inside the watched directory may delete its own pods). */
  source?: string;
  force?: boolean;
}

export interface EventsRequest {
  afterId?: number;
  sinceTs?: number;
  limit?: number;
  keyPrefix?: string;
}

export interface LogTarget {
  id: string;
  file: string;
  running: boolean;
  /** Set when the pod has several containers, none was named and no annotation chose one: kubectl's default. */
  defaulted?: { container: string; all: string[] };
  /** For stderr: the default-container annotation names no container of the pod (kubectl's warning). */
  warning?: string;
}

/** Which pods a read (`ps`, `status`) is about; both filters apply. Unknown keys are simply absent from the answer. */
export interface PodQuery {
  /** `namespace/name` keys. */
  keys?: string[];
  /** A label selector (`-l`) over metadata.labels as applied: k=v, k!=v, k, !k, k in (a,b), k notin (a,b), comma = AND. */
  selector?: string;
  /** Only this namespace (an explicit -n without names). */
  namespace?: string;
}

/** A pod as `ps` lists it: its observation and the restart count of each container name. */
export interface PodListing extends ObservedPod {
  restarts: Record<string, number>;
}

export interface DescribeRequest {
  podKey: string;
}

export interface LogsRequest {
  podKey: string;
  container?: string;
  previous?: boolean;
}

export interface ServiceOptions {
  rt: Runtime;
  log: Logger;
  controller: Controller;
  /** The daemon's view (rows kept current by its exit watch) vs a read-only observation. */
  daemon: boolean;
  /** Called when an apply changed recorded ConfigMaps or Secrets (the daemon re-resolves its watched pods). */
  onConfigsChanged?: () => void;
}

export class BerthService {
  constructor(private readonly o: ServiceOptions) {}

  /** Parse results per input path (a few, least recently used dropped), reused while the text is unchanged. */
  private readonly caches = new Map<string, ParseCache>();

  /**
   * The manifests of `input` with their pods resolved against the ConfigMaps and Secrets they
   * name (loaded now, over the ones recorded by earlier applies); `configs` are the ones loaded.
   */
  private async load(input: ManifestRef, pods?: DesiredPod[], given: DesiredConfig[] = []): Promise<{ pods: DesiredPod[]; configs: DesiredConfig[] } | { invalid: InvalidManifests }> {
    if (pods !== undefined) {
      // An immutable ConfigMap or Secret whose data changed refuses the apply, naming the file.
      const imm = enforceImmutable(this.o.rt, given);
      if (imm.problems.length > 0) return { invalid: { problems: imm.problems, badFiles: new Set(imm.problems.map((p) => p.file)).size } };
      return { pods: resolvePods(pods, knownConfigs(this.o.rt, given)), configs: given };
    }
    const { loadManifests } = await import('../reconciler/manifest.js');
    let cache = this.caches.get(input.path);
    this.caches.delete(input.path);
    cache ??= new Map();
    this.caches.set(input.path, cache);
    for (const k of [...this.caches.keys()].slice(0, Math.max(0, this.caches.size - 8))) this.caches.delete(k);
    const res = await loadManifests(input.stdinText !== undefined ? { path: '-', stdinText: input.stdinText } : { path: input.path }, input.stdinText !== undefined ? {} : { cache });
    if (res.problems.length > 0) return { invalid: { problems: res.problems, badFiles: res.badFiles.length } };
    const imm = enforceImmutable(this.o.rt, res.configs);
    if (imm.problems.length > 0) return { invalid: { problems: imm.problems, badFiles: new Set(imm.problems.map((p) => p.file)).size } };
    return { pods: resolvePods(res.pods, knownConfigs(this.o.rt, res.configs)), configs: res.configs };
  }

  async apply(req: ApplyRequest, onProgress?: (e: ProgressEvent) => void): Promise<ApplyResponse> {
    const c = this.o.controller;
    // `apply -f DIR`: the archives in DIR/images/ are imported first (issue 14); a bad one refuses the apply, naming it.
    if (req.input.stdinText === undefined && req.dryRun !== true && statSync(req.input.path, { throwIfNoEntry: false })?.isDirectory() === true) {
      const { ImageFolder } = await import('../reconciler/image-folder.js');
      const folder = new ImageFolder(req.input.path, { importer: this.o.rt, ledger: path.join(this.o.rt.paths.root, 'image-folder.json'), log: this.o.log });
      const res = await folder.sync({ requireStable: false });
      if (res.problems.length > 0) return { steps: [], blocked: [], refused: [], keys: [], invalid: { problems: res.problems, badFiles: res.problems.length } };
    }
    const loaded = await this.load(req.input, req.pods, req.configs);
    if ('invalid' in loaded) return { steps: [], blocked: [], refused: [], keys: [], invalid: loaded.invalid };
    const pods = loaded.pods;
    // As kubectl: nothing to apply is a mistake (and with --prune it would delete everything)
    // — except `apply --prune -f DIR` of a directory, which says "this directory declares
    // nothing now" (GitOps: its files were removed).
    const pruneDir = req.prune === true && req.input.stdinText === undefined && statSync(req.input.path, { throwIfNoEntry: false })?.isDirectory() === true;
    if (pods.length === 0 && loaded.configs.length === 0 && !pruneDir) throw new BerthError('ERR_INVALID_MANIFEST', `apply ${req.input.display}: no objects passed to apply`);
    const prune: PruneScope | undefined = req.prune === true ? { sources: [req.input.path] } : undefined;
    const force = req.force !== undefined ? { force: req.force } : {};
    const configs = configChanges(this.o.rt, loaded.configs, prune);
    if (req.dryRun === true) {
      const refused = c.ownershipProblems({ pods, ...force }, req.input.path);
      const plan = await c.diff(pods, prune, { fromRows: this.o.daemon });
      return { steps: [], blocked: plan.blocked, refused, keys: [], plan, configs };
    }
    // ConfigMaps and Secrets first: the pods resolved against them are applied next.
    if (recordConfigs(this.o.rt, loaded.configs, prune)) this.o.onConfigsChanged?.();
    const res = await c.apply({ pods, ...(prune !== undefined ? { prune } : {}), ...force }, req.input.path, onProgress);
    const declared = pods.map((p) => p.key);
    if (req.wait !== true || res.refused.length > 0) return { ...res, declared, configs };
    const notReady = await c.waitReady(res.keys.filter((k) => declared.includes(k)), req.timeoutMs ?? 60_000);
    return { ...res, notReady, declared, configs };
  }

  async diff(req: DiffRequest): Promise<DiffResponse> {
    const loaded = await this.load(req.input, req.pods, req.configs);
    if ('invalid' in loaded) return { invalid: loaded.invalid };
    const prune: PruneScope | undefined = req.prune === true ? { sources: [req.input.path] } : undefined;
    return { plan: await this.o.controller.diff(loaded.pods, prune, { fromRows: this.o.daemon }), configs: configChanges(this.o.rt, loaded.configs, prune) };
  }

  /** `delete`: the planner's delete-pod steps for recorded pods among `keys`. */
  async delete(req: DeleteRequest, onProgress?: (e: ProgressEvent) => void): Promise<ApplyResult & { missing: string[]; configs: ConfigChange[] }> {
    const recorded = new Set(this.o.rt.listPods().map((p) => p.key));
    const keys = [...new Set(req.keys)];
    const present = keys.filter((k) => recorded.has(k));
    const res = await this.o.controller.apply(
      { pods: [], prune: { keys: present }, ...(req.force !== undefined ? { force: req.force } : {}) },
      req.source,
      onProgress,
    );
    // The file's ConfigMaps and Secrets, after its pods: running pods that still read one keep
    // what they have (env as started, mounted files as last projected).
    const rows = new Map(this.o.rt.listConfigs().map((r) => [r.key, r]));
    const wanted = [...new Set(req.configs ?? [])];
    const gone = wanted.filter((k) => rows.has(k));
    if (gone.length > 0 && res.refused.length === 0) {
      this.o.rt.updateConfigs([], gone);
      this.o.onConfigsChanged?.();
    }
    const configs: ConfigChange[] = res.refused.length > 0 ? [] : gone.map((k) => ({ op: 'delete', key: k, source: rows.get(k)?.source ?? '' }));
    return { ...res, missing: [...keys.filter((k) => !recorded.has(k)), ...wanted.filter((k) => !rows.has(k))], configs };
  }

  /** Observed pods a query selects: the daemon's rows, or one read-only observation (rows checked against /proc). */
  private async selectPods(q: PodQuery = {}): Promise<ObservedPod[]> {
    const sel = q.selector !== undefined ? parseSelector(q.selector) : undefined;
    const keys = q.keys !== undefined ? new Set(q.keys) : undefined;
    const all = this.o.daemon ? this.o.rt.recordedPods() : await this.o.rt.observe({ repair: false });
    return all.filter((p) => (keys === undefined || keys.has(p.key)) && (q.namespace === undefined || p.namespace === q.namespace) && (sel === undefined || matchesSelector(sel, lastAppliedPod(p.spec)?.labels ?? {})));
  }

  async pods(q: PodQuery = {}): Promise<PodListing[]> {
    const pods = await this.selectPods(q);
    const restarts = this.o.rt.listRestarts();
    return pods.map((p) => ({ ...p, restarts: Object.fromEntries(restarts.filter((r) => r.podKey === p.key).map((r) => [r.name, r.restarts])) }));
  }

  async status(q: PodQuery = {}): Promise<StatusReport> {
    return buildStatus({
      pods: await this.selectPods(q),
      restarts: this.o.rt.listRestarts(),
      conditions: this.o.rt.listConditions(),
      now: Date.now(),
      daemon: this.o.daemon ? { pid: process.pid, pending: this.o.controller.queue.pending(), active: this.o.controller.queue.active(), resyncs: this.o.controller.resyncs } : null,
    });
  }

  events(req: EventsRequest): EventRecord[] {
    return this.o.rt.listEvents(req);
  }

  /** Calls `fn` for each event recorded from now on about pod `podKey` (an exit among them); returns the unsubscribe. */
  onPodEvent(podKey: string, fn: (e: EventRecord) => void): () => void {
    const key = `pod/${podKey}`;
    return this.o.rt.onEvent((e) => {
      if (e.key === key) fn(e);
    });
  }

  images(): ImageSummary[] {
    return this.o.rt.imageSummaries();
  }

  imagesInspect(req: { ref: string }): ReturnType<Runtime['inspectImage']> {
    return this.o.rt.inspectImage(req.ref);
  }

  imagesTag(req: { src: string; dst: string }): { ref: string; digest: string } {
    return this.o.rt.tagImage(req.src, req.dst);
  }

  /**
   * `images import PATH [--ref REF]`: PATH is read by this process (the daemon's when it runs), so
   * the CLI passes it absolute. Records an Imported event per reference.
   */
  async imagesImport(req: { path: string; ref?: string }): Promise<{ imported: ImportedImage[] }> {
    if (typeof req.path !== 'string' || req.path === '') throw new BerthError('ERR_INVALID_ARGUMENT', 'images import: no archive path');
    if (!path.isAbsolute(req.path)) throw new BerthError('ERR_INVALID_ARGUMENT', `images import ${req.path}: the path must be absolute`);
    const imported = await this.o.rt.importImages(req.path, req.ref !== undefined ? { ref: req.ref } : {});
    for (const i of imported) this.o.rt.addEvent(`image/${i.ref}`, 'Imported', `imported ${i.ref} (${i.digest}) from ${req.path} (${i.format})`);
    return { imported };
  }

  /** `images export REF... -o FILE`: FILE (absolute) is written by this process. */
  imagesExport(req: { refs: string[]; file: string }): Promise<{ exported: { ref: string; digest: string }[] }> {
    if (!Array.isArray(req.refs) || req.refs.length === 0) throw new BerthError('ERR_INVALID_ARGUMENT', 'images export: no image reference');
    if (typeof req.file !== 'string' || !path.isAbsolute(req.file)) throw new BerthError('ERR_INVALID_ARGUMENT', 'images export: the output file must be an absolute path');
    return this.o.rt.exportImages(req.refs, req.file).then((exported) => ({ exported }));
  }

  /** `images rm REF|DIGEST...`: forgets the images (all or none); refused for an image a pod uses (ERR_CONFLICT names it). */
  imagesRemove(req: { refs: string[]; force?: boolean }): { removed: { ref: string; digest: string }[] } {
    if (!Array.isArray(req.refs) || req.refs.length === 0) throw new BerthError('ERR_INVALID_ARGUMENT', 'images rm: no image reference');
    return { removed: this.o.rt.removeImages(req.refs, { force: req.force === true }) };
  }

  /** `images prune [--all]`: forgets the images nothing uses, then collects garbage. */
  imagesPrune(req: { all?: boolean }): Promise<{ images: { ref: string; digest: string }[]; gc: GcReport }> {
    return this.o.rt.pruneImages({ all: req.all === true });
  }

  /** `gc [--dry-run]`: removes (or lists) what no image, container or pod reaches. */
  gc(req: { dryRun?: boolean }): Promise<GcReport> {
    return this.o.rt.collectGarbage({ dryRun: req.dryRun === true });
  }

  /** `df`: disk use by images, containers, logs and volumes, and what prune and gc would reclaim. Read-only. */
  df(): Promise<DiskUsage> {
    return this.o.rt.diskUsage();
  }

  /** Why this daemon must not take a pull `client` asks for (other root or registry options), or undefined. */
  pullConflict(client: PullClient): string | undefined {
    return this.o.daemon ? pullConflict({ root: this.o.rt.paths.root, pid: process.pid, ...this.o.rt.registrySettings }, client) : undefined;
  }

  /**
   * `images pull`; `onProgress`: the pull step's start, its layers as they are written, its end.
   * `platform`: `--platform os/arch[/variant]`; `client`: who asks, refused (ERR_CONFLICT) by a
   * daemon that pulls with another root or other registry options (daemon/pull.ts).
   */
  async pull(ref: string, onProgress?: (e: ProgressEvent) => void, o: { platform?: string; client?: PullClient } = {}): Promise<{ ref: string; digest: string }> {
    if (ref === '') throw new BerthError('ERR_INVALID_ARGUMENT', 'pull: no image reference');
    const conflict = o.client !== undefined ? this.pullConflict(o.client) : undefined;
    if (conflict !== undefined) throw new BerthError('ERR_CONFLICT', conflict);
    let platform: DesiredPlatform | undefined;
    if (o.platform !== undefined) {
      const { parsePlatform } = await import('../reconciler/manifest.js');
      const p = parsePlatform(o.platform);
      if (typeof p === 'string') throw new BerthError('ERR_INVALID_ARGUMENT', `images pull --platform: ${p}`);
      platform = p;
    }
    const canonical = parseReference(ref).canonical;
    const step = { kind: 'pull' as const, image: ref, reason: 'requested' };
    const began = Date.now();
    onProgress?.({ key: `image/${ref}`, phase: 'start', step });
    const off = onProgress === undefined ? undefined : this.o.rt.onProgress((w) => (w.kind === 'pull' && w.image === ref ? onProgress({ key: `image/${ref}`, phase: 'wait', step, wait: w }) : undefined));
    const img = await this.o.rt
      .pullImage(ref, undefined, platform)
      .catch((err: unknown) => {
        // The same words as a pod's failed pull: the registry's answer in short and what to check.
        const e = isBerthError(err) ? new BerthError(err.code, explainPullFailure(canonical, err), { cause: err, details: err.details }) : err;
        onProgress?.({ key: `image/${ref}`, phase: 'end', step, ms: Date.now() - began, error: { code: isBerthError(e) ? e.code : 'ERR_INTERNAL', message: String(e) } });
        throw e;
      })
      .finally(() => off?.());
    onProgress?.({ key: `image/${ref}`, phase: 'end', step, ms: Date.now() - began });
    this.o.rt.addEvent(`image/${img.ref}`, 'Pulled', `pulled ${img.ref} (${img.digest})`);
    return { ref: img.ref, digest: img.digest };
  }

  /**
   * `describe pod`: one pod's record, status, conditions, what each container runs (the
   * image's Entrypoint/Cmd as command/args override them) and its last exits, with the
   * newest events of the pod and of its images. Read-only.
   */
  async describe(req: DescribeRequest): Promise<PodDescription> {
    const rt = this.o.rt;
    const pod = this.o.daemon ? rt.recordedPods().find((p) => p.key === req.podKey) : await rt.observePod(req.podKey, { repair: false });
    const conditions = rt.listConditions(`pod/${req.podKey}`);
    if (pod === undefined) {
      // Declared but never recorded (e.g. blocked before its first step): the stored conditions say why.
      const ready = conditions.find((c) => c.type === 'Ready' && c.status === 'False');
      throw new BerthError('ERR_NOT_FOUND', `describe pod ${req.podKey}: ${ready !== undefined ? `not created: ${ready.reason}: ${ready.message}` : 'no such pod'}`);
    }
    const restarts = rt.listRestarts(req.podKey);
    const status = buildStatus({ pods: [pod], restarts, conditions, now: Date.now(), daemon: null }).pods[0];
    if (status === undefined) throw new BerthError('ERR_INTERNAL', `describe pod ${req.podKey}: no status`);
    const desired = lastAppliedPod(pod.spec);
    const images: Record<string, ImageProcess> = {};
    const declared = [...(desired?.initContainers ?? []), ...(desired?.containers ?? [])];
    for (const c of declared) {
      const row = pod.containers.filter((x) => x.name === c.name).pop();
      const digest = row?.imageDigest ?? rt.localImage(c.image)?.digest ?? null;
      const config = digest !== null ? rt.imageConfig(digest) : undefined;
      images[c.name] = {
        digest,
        entrypoint: config !== undefined ? (config.config.Entrypoint ?? []) : null,
        cmd: config !== undefined ? (config.config.Cmd ?? []) : null,
        // A manifest command decides alone; otherwise the image's config is needed.
        effective: config !== undefined || c.command !== undefined ? containerArgv({ entrypoint: config?.config.Entrypoint, cmd: config?.config.Cmd }, c.command, c.args) : null,
      };
    }
    const podKey = `pod/${req.podKey}`;
    const imageKeys = [...new Set(declared.map((c) => `image/${c.image}`))];
    const events = [
      ...rt.listEvents({ keyPrefix: podKey, limit: 200 }).filter((e) => e.key === podKey),
      // The image's events since the pod was created: a pull that failed for it.
      ...imageKeys.flatMap((k) => rt.listEvents({ keyPrefix: k, limit: 20, sinceTs: pod.createdAt }).filter((e) => e.key === k)),
    ]
      .sort((a, b) => a.id - b.id)
      .slice(-DESCRIBE_EVENTS);
    return buildDescription({ pod, status, restarts, images, events });
  }

  /**
   * The container a `logs` or `exec` of POD[/CTR] is about: the one named, else the one the
   * pod's default-container annotation names, else the first with a note (kubectl's rule).
   */
  private pickContainer(verb: string, req: { podKey: string; container?: string }): { name: string; defaulted?: LogTarget['defaulted']; warning?: string } {
    const rt = this.o.rt;
    const pod = rt.getPod(req.podKey);
    const spec = pod !== undefined ? lastAppliedPod(pod.spec) : undefined;
    const declared = (spec?.containers ?? []).map((c) => c.name);
    const names = [...new Set([...declared, ...rt.listContainers(req.podKey).map((r) => r.name), ...rt.listRestarts(req.podKey).map((r) => r.name)])];
    if (pod === undefined && names.length === 0) throw new BerthError('ERR_NOT_FOUND', `${verb} ${req.podKey}: no such pod`);
    if (req.container !== undefined) {
      if (!names.includes(req.container)) throw new BerthError('ERR_NOT_FOUND', `${verb} ${req.podKey}/${req.container}: no such container (containers: ${names.join(', ') || 'none'})`);
      return { name: req.container };
    }
    const wanted = spec?.annotations?.[ANNOTATION_DEFAULT_CONTAINER];
    if (wanted !== undefined && names.includes(wanted)) return { name: wanted };
    const name = names[0];
    if (name === undefined) throw new BerthError('ERR_NOT_FOUND', `${verb} ${req.podKey}: the pod has no containers yet`);
    return {
      name,
      ...(names.length > 1 ? { defaulted: { container: name, all: names } } : {}),
      ...(wanted !== undefined ? { warning: `Default container name "${wanted}" not found in pod ${req.podKey}` } : {}),
    };
  }

  /** Which log file `berth logs` reads: the current attempt, or with `previous` the one before. */
  async logTarget(req: LogsRequest): Promise<LogTarget> {
    const rt = this.o.rt;
    const rows = rt.listContainers(req.podKey);
    const restarts = rt.listRestarts(req.podKey);
    const { name, defaulted, warning } = this.pickContainer('logs', req);
    const current = rows.filter((r) => r.name === name).sort((a, b) => a.createdAt - b.createdAt).pop();
    const r = restarts.find((x) => x.name === name);
    let id: string | undefined;
    if (req.previous === true) {
      // The attempt before the current one: its row is gone, its log is kept (the kubelet's --previous,
      // lastState.terminated). In a back-off the exited row is still the current one, but the kubelet
      // shows the container as waiting and the attempt that crashed as its last state: that one.
      const backingOff = current?.state === 'exited' && r?.lastId === current.id && r.lastFinishedAt !== null && r.lastFinishedAt + r.backoffMs > Date.now();
      id = r !== undefined && r.lastId !== null && (r.lastId !== current?.id || backingOff) ? r.lastId : undefined;
      if (id === undefined) throw new BerthError('ERR_NOT_FOUND', `logs --previous ${req.podKey}/${name}: no previous attempt (restarts: ${r?.restarts ?? 0})`);
    } else {
      id = current?.id ?? r?.lastId ?? undefined;
      if (id === undefined) {
        // A pending pod says why (a failed pull, an invalid spec) rather than only that nothing ran.
        const ready = rt.listConditions(`pod/${req.podKey}`).find((c) => c.type === 'Ready' && c.status === 'False' && c.message !== '');
        const why = ready !== undefined ? `: ${ready.reason}: ${ready.message}` : ` (berth describe pod ${req.podKey.split('/')[1] ?? ''} says why)`;
        throw new BerthError('ERR_NOT_FOUND', `logs ${req.podKey}/${name}: no container has run yet${why}`);
      }
    }
    const file = rt.containerLogPath(id);
    if (file === undefined) throw new BerthError('ERR_NOT_FOUND', `logs ${req.podKey}/${name}: no log for ${id}`);
    const running = req.previous !== true && current?.id === id && (this.o.daemon ? current.state === 'running' : await rt.isRunning(id));
    return { id, file, running, ...(defaulted !== undefined ? { defaulted } : {}), ...(warning !== undefined ? { warning } : {}) };
  }

  /**
   * The running container `berth exec` runs in (the CLI then calls runc itself: the daemon
   * cannot hand over a terminal's stdin). Not running: ERR_NOT_FOUND saying how it ended.
   */
  async execTarget(req: ExecRequest): Promise<ExecTarget> {
    const rt = this.o.rt;
    const { name, defaulted, warning } = this.pickContainer('exec', req);
    const current = rt
      .listContainers(req.podKey)
      .filter((r) => r.name === name)
      .sort((a, b) => a.createdAt - b.createdAt)
      .pop();
    const running = current !== undefined && (this.o.daemon ? current.state === 'running' : await rt.isRunning(current.id));
    if (current === undefined || !running) {
      const how = current === undefined ? 'no container has run yet' : current.exitCode !== null ? `it exited (code ${current.exitCode}${current.reason !== null ? `, ${current.reason}` : ''})` : `it is ${current.state}`;
      throw new BerthError('ERR_NOT_FOUND', `exec ${req.podKey}/${name}: the container is not running: ${how}`);
    }
    return { id: current.id, container: name, ...(defaulted !== undefined ? { defaulted } : {}), ...(warning !== undefined ? { warning } : {}) };
  }

  /**
   * `berth stats`: the cgroup counters of every running container of the pods a query selects,
   * read twice STATS_SAMPLE_MS apart for the CPU share. Containers whose cgroup is gone by
   * then (they exited) are left out. Read-only.
   */
  async stats(q: PodQuery = {}): Promise<ContainerStats[]> {
    const rt = this.o.rt;
    const running = (await this.selectPods(q)).flatMap((p) => p.containers.filter((c) => c.state === 'running').map((c) => ({ pod: p.key, c })));
    const first = await Promise.all(running.map(({ c }) => rt.containerStats(c.id)));
    const t0 = process.hrtime.bigint();
    await new Promise((r) => setTimeout(r, STATS_SAMPLE_MS));
    const second = await Promise.all(running.map(({ c }) => rt.containerStats(c.id)));
    const wallNs = Number(process.hrtime.bigint() - t0);
    const out: ContainerStats[] = [];
    running.forEach(({ pod, c }, i) => {
      const a = first[i];
      const b = second[i];
      if (a === undefined || b === undefined) return;
      out.push({
        pod,
        container: c.name,
        id: c.id,
        cpu: { seconds: b.cpuNs / 1e9, percent: Math.round((Math.max(0, b.cpuNs - a.cpuNs) / wallNs) * 10000) / 100 },
        memory: { bytes: b.memoryBytes, limitBytes: b.memoryLimitBytes },
        pids: { current: b.pids, limit: b.pidsLimit },
      });
    });
    return out.sort((x, y) => x.pod.localeCompare(y.pod) || x.container.localeCompare(y.container));
  }
}

/** How long `stats` waits between its two readings of the CPU counter. */
const STATS_SAMPLE_MS = 500;

export interface ExecRequest {
  podKey: string;
  container?: string;
}

export interface ExecTarget {
  id: string;
  container: string;
  defaulted?: { container: string; all: string[] };
  warning?: string;
}

/** One running container in `berth stats` (`-o json` prints an array of these). */
export interface ContainerStats {
  /** `namespace/name`. */
  pod: string;
  container: string;
  id: string;
  /** CPU time used since the container started, and its share of one CPU over the sample (200 = two CPUs busy). */
  cpu: { seconds: number; percent: number };
  /** Working set (usage minus inactive file cache) and the limit, null when unlimited; bytes. */
  memory: { bytes: number; limitBytes: number | null };
  pids: { current: number; limit: number | null };
}

/** How many of the newest events `describe` shows. */
const DESCRIBE_EVENTS = 10;

/**
 * Routes one API method to the service: the daemon's socket and the in-process CLI share it.
 * `onProgress` receives each step as it starts and ends (apply, delete), for live output.
 */
export async function dispatch(s: BerthService, method: string, body: unknown, onProgress?: (e: ProgressEvent) => void): Promise<unknown> {
  const b = (body ?? {}) as Record<string, unknown>;
  switch (method) {
    case 'apply':
      return s.apply(b as unknown as ApplyRequest, onProgress);
    case 'diff':
      return s.diff(b as unknown as DiffRequest);
    case 'delete':
      return s.delete(b as unknown as DeleteRequest, onProgress);
    case 'pods':
      return s.pods(b as PodQuery);
    case 'status':
      return s.status(b as PodQuery);
    case 'describe':
      return s.describe(b as unknown as DescribeRequest);
    case 'events':
      return s.events(b as EventsRequest);
    case 'images':
      return s.images();
    case 'imagesInspect':
      return s.imagesInspect(b as { ref: string });
    case 'imagesTag':
      return s.imagesTag(b as { src: string; dst: string });
    case 'pull': {
      const client = asPullClient(b['client']);
      return s.pull(String(b['ref'] ?? ''), onProgress, { ...(typeof b['platform'] === 'string' ? { platform: b['platform'] } : {}), ...(client !== undefined ? { client } : {}) });
    }
    case 'imagesImport':
      return s.imagesImport({ path: String(b['path'] ?? ''), ...(typeof b['ref'] === 'string' ? { ref: b['ref'] } : {}) });
    case 'imagesExport':
      return s.imagesExport({ refs: Array.isArray(b['refs']) ? b['refs'].map(String) : [], file: String(b['file'] ?? '') });
    case 'imagesRemove':
      return s.imagesRemove({ refs: Array.isArray(b['refs']) ? b['refs'].map(String) : [], force: b['force'] === true });
    case 'imagesPrune':
      return s.imagesPrune({ all: b['all'] === true });
    case 'gc':
      return s.gc({ dryRun: b['dryRun'] === true });
    case 'df':
      return s.df();
    case 'logs':
      return s.logTarget(b as unknown as LogsRequest);
    case 'exec':
      return s.execTarget(b as unknown as ExecRequest);
    case 'stats':
      return s.stats(b as PodQuery);
    default:
      throw new BerthError('ERR_NOT_FOUND', `api ${method}: no such method`);
  }
}

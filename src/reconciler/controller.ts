import { watch as fsWatch, type FSWatcher } from 'node:fs';
import { systemClock, type Clock } from '../lib/clock.js';
import { BerthError, isBerthError, isErrorCode, messageOf, type ErrorCode } from '../lib/errors.js';
import type { Logger } from '../lib/log.js';
import type { StepWait } from '../lib/progress.js';
import { podKeyOfContainerId, type Runtime } from '../runtime/index.js';
import { podVerdict, wantedBy, type PodPhase, type PodSituation } from './conditions.js';
import type { DesiredImage, DesiredPod } from './desired.js';
import { inScope, lastAppliedPod, plan, type Plan, type PruneScope, type Step } from './plan.js';
import { explainPullFailure } from './pull-error.js';
import { needsResolution, resolvePods } from './resolve.js';
import { recordedConfigs } from './configs.js';
import { WorkQueue, type Outcome } from './queue.js';
import { Prober } from './prober.js';
import { computePlan, executeStep, imageViews, podVolumes, recordPod, ResolveCache, toView } from './reconcile.js';

/**
 * The controller: keys, not events (DESIGN §5). Watchers, timers and container exits only
 * enqueue keys — `pod/<namespace>/<name>` and `image/<ref>` — and each run of a key re-reads
 * desired and observed state, plans with the one planner and executes through the runtime
 * façade. The queue serialises each key, bounds pulls in their own pool (a hanging pull
 * never holds a pod worker) and retries failures with backoff.
 *
 * Desired state of a pod key, in order: an apply/delete in flight from the CLI; else the
 * recorded owner keeps it — a pod recorded from a watched directory follows that directory
 * (absent there = prune), a pod recorded from any other source (a CLI apply) keeps its last
 * applied spec; else a watched directory that declares it. Prune never crosses sources.
 */

export interface StepResult {
  step: Step;
  error?: { code: string; message: string };
}

/** What one run of a key did; apply collects these for the keys it asked for. */
export interface KeyReport {
  key: string;
  steps: StepResult[];
  blocked: Plan['blocked'];
  /** Images this pod still waits for (pull in progress). */
  waitingImages: string[];
  /** Pull failures this pod is stuck behind. */
  imageErrors: string[];
  /** Nothing left to wait for in this run (no pull pending). */
  settled: boolean;
  /** Time from the start of this run of the key to the report (metrics' duration histogram). */
  durationMs?: number;
  /** The controller's desire epoch when this run started (an apply counts only runs that saw its desire). */
  epoch?: number;
}

/**
 * A step starting or ending, with its duration and, on failure, the error; `wait` while it
 * waits (a grace period, a pull's layers: lib/progress).
 */
export interface ProgressEvent {
  key: string;
  phase: 'start' | 'end' | 'wait';
  step: Step;
  ms?: number;
  error?: { code: string; message: string };
  wait?: StepWait;
}

export interface ApplyRequest {
  pods: DesiredPod[];
  prune?: PruneScope;
  /** Take pods owned by a watched directory (apply) or delete them anyway (delete). */
  force?: boolean;
}

export interface ApplyResult {
  /** Executed steps (failed ones carry the error), pulls first, then per pod in request order. */
  steps: StepResult[];
  blocked: Plan['blocked'];
  /** Apply refused before anything ran (ownership); exit 1. */
  refused: string[];
  /** Keys the apply touched, for --wait. */
  keys: string[];
}

export interface ControllerOptions {
  rt: Runtime;
  log: Logger;
  clock?: Clock;
  /** Pod workers (default 4); pulls run in their own pool (default 2). */
  workers?: number;
  pullWorkers?: number;
  /** Retry failed keys with backoff (the daemon); false: one run, the caller reports (in-process apply). */
  retry?: boolean;
}

type Desire =
  | { kind: 'present'; pod: DesiredPod; conflict?: string }
  | { kind: 'absent'; scope: PruneScope };

const POD = 'pod/';
const IMAGE = 'image/';

export class Controller {
  readonly queue: WorkQueue;
  private readonly rt: Runtime;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly retry: boolean;
  private readonly resolveCache = new ResolveCache();
  /** Watched directories (absolute) and what they declare (last good, rule M5). */
  private roots: string[] = [];
  private declared = new Map<string, DesiredPod>();
  private declaredImages = new Map<string, DesiredImage>();
  private invalid = new Map<string, string[]>();
  /** CLI apply/delete in flight: overrides the recorded desire until its keys settle. */
  private readonly overrides = new Map<string, Desire>();
  private readonly imageWaiters = new Map<string, Set<string>>();
  private readonly pullReasons = new Map<string, string>();
  private readonly imageErrors = new Map<string, BerthError>();
  private readonly reportListeners = new Set<(r: KeyReport) => void>();
  private readonly progressListeners = new Set<(e: ProgressEvent) => void>();
  /** The step each key runs now, for the waits the runtime reports; subscribed while anyone listens. */
  private readonly runningStep = new Map<string, Step>();
  private offRuntimeProgress: (() => void) | undefined;
  private exitWatcher: FSWatcher | undefined;
  /** When the run in flight of each key started (the queue runs a key once at a time). */
  private readonly runStarted = new Map<string, number>();
  /** Bumped by each apply before it sets its desires; each run notes the value it started under. */
  private desireEpoch = 0;
  private readonly runEpoch = new Map<string, number>();
  /** Resync passes so far (status shows it; tests wait for a pass instead of sleeping). */
  resyncs = 0;
  /** Keys whose run in flight has reported. */
  private readonly emittedRun = new Set<string>();
  /** Probes run only under `berth up` (retry): an in-process apply has no life after it returns. */
  private readonly prober: Prober | undefined;

  constructor(o: ControllerOptions) {
    this.rt = o.rt;
    this.log = o.log;
    this.clock = o.clock ?? systemClock;
    this.retry = o.retry !== false;
    this.prober = this.retry ? new Prober(o.rt, o.log, (podKey) => this.queue.add(POD + podKey)) : undefined;
    this.queue = new WorkQueue({
      workers: o.workers ?? 4,
      pools: { pull: o.pullWorkers ?? 2 },
      poolOf: (key) => (key.startsWith(IMAGE) ? 'pull' : 'default'),
      clock: this.clock,
      handler: (key, signal) => this.handle(key, signal),
      onError: (key, err, attempt, delayMs) =>
        this.log.warn({ key, code: isBerthError(err) ? err.code : undefined, attempt, retryInMs: delayMs }, `reconcile ${key} failed: ${err.message}`),
    });
  }

  // sources ----------------------------------------------------------------------

  /**
   * Sets what the watched directories declare now (last good objects) and the manifest
   * problems per file; enqueues every key whose desire changed.
   */
  setWatched(roots: readonly string[], desired: readonly DesiredPod[], problems: readonly { file: string; text: string }[], images: readonly DesiredImage[] = []): void {
    this.roots = [...roots];
    // berth.dev/v1 Images: pulled ahead of any pod (edge devices pre-pull and keep them).
    this.declaredImages = new Map(images.filter((i) => i.pullPolicy !== 'Never').map((i) => [i.ref, i]));
    for (const img of this.declaredImages.values()) {
      const local = this.rt.localImage(img.ref);
      if (local === undefined && this.queue.nextRetryAt(IMAGE + img.ref) === undefined) {
        this.pullReasons.set(img.ref, `declared by ${img.source}:${img.line}`);
        this.queue.add(IMAGE + img.ref);
      }
    }
    const next = new Map(desired.map((p) => [p.key, p]));
    const invalid = new Map<string, string[]>();
    for (const pod of desired) {
      const mine = problems.filter((p) => p.file === pod.source).map((p) => p.text);
      if (mine.length > 0) invalid.set(pod.key, mine);
    }
    const keys = new Set([...next.keys(), ...this.declared.keys()]);
    for (const key of keys) {
      const a = this.declared.get(key);
      const b = next.get(key);
      const changed = JSON.stringify(a) !== JSON.stringify(b) || JSON.stringify(this.invalid.get(key)) !== JSON.stringify(invalid.get(key));
      if (changed) this.queue.add(POD + key);
    }
    this.declared = next;
    this.invalid = invalid;
  }

  /** Every declared and every recorded pod once more (startup). */
  resyncAll(): void {
    for (const key of new Set([...this.declared.keys(), ...this.rt.listPods().map((p) => p.key)])) this.queue.add(POD + key);
  }

  /**
   * The periodic safety net, cheap enough to run often: no process is started. Only keys
   * that drifted are enqueued — a container gone behind berth's back without an exit file
   * (its recorded pid is dead or reused), a row left in an intent state, a desire that
   * differs from what was applied, a declared container that has no row, a pod recorded or
   * declared on one side only. Returns them.
   */
  resyncDrifted(): string[] {
    this.resyncs++;
    const rows = new Map(this.rt.recordedPods().map((p) => [p.key, p]));
    const drifted = new Set(this.rt.driftedPods());
    for (const key of new Set([...this.declared.keys(), ...rows.keys()])) {
      if (drifted.has(key)) continue;
      const row = rows.get(key);
      const desire = this.desire(key);
      if (row === undefined || desire === undefined || desire.kind === 'absent') drifted.add(key);
      else if (desire.conflict === undefined && JSON.stringify(desire.pod) !== row.spec) drifted.add(key);
      else if (desire.conflict === undefined && !desire.pod.paused && desire.pod.containers.some((c) => !row.containers.some((r) => r.name === c.name))) drifted.add(key);
    }
    for (const key of drifted) {
      // A key waiting out its failure back-off keeps waiting: an add now would cancel the retry
      // and cut every back-off to the resync period (regression resync-cuts-failure-backoff).
      if (this.queue.failures(POD + key) > 0 && this.queue.nextRetryAt(POD + key) !== undefined) continue;
      this.log.debug({ key }, 'resync: drifted');
      this.queue.add(POD + key);
    }
    return [...drifted];
  }

  private underWatched(source: string): boolean {
    return inScope(source, { sources: this.roots });
  }

  private desire(key: string): Desire | undefined {
    const o = this.overrides.get(key);
    if (o !== undefined) return o;
    const row = this.rt.getPod(key);
    const declared = this.declared.get(key);
    if (row !== undefined && !this.underWatched(row.source)) {
      const applied = lastAppliedPod(row.spec);
      if (applied === undefined) return undefined;
      // Resolved again against the ConfigMaps and Secrets recorded now, as watched pods are at
      // each load: an apply of a ConfigMap reaches the mounted files of pods applied from the CLI
      // too (regression cli-pod-volumes-never-refresh).
      const pod = needsResolution(applied) ? (resolvePods([applied], recordedConfigs(this.rt))[0] ?? applied) : applied;
      return declared !== undefined
        ? { kind: 'present', pod, conflict: `${declared.source}:${declared.line} also declares ${key}, which ${row.source} owns; that declaration is not applied` }
        : { kind: 'present', pod };
    }
    if (declared !== undefined) return { kind: 'present', pod: declared };
    if (row !== undefined) return { kind: 'absent', scope: { sources: [row.source] } };
    return undefined;
  }

  // exits ------------------------------------------------------------------------

  /** Watches conmon's exit directory: each exit file enqueues its pod at once. */
  watchExits(): void {
    if (this.exitWatcher !== undefined) return;
    this.exitWatcher = fsWatch(this.rt.paths.exitDir, (_event, file) => {
      if (typeof file !== 'string') return;
      const key = podKeyOfContainerId(file);
      if (key === undefined) return;
      // Created but not yet written (conmon writes the code after creating the file): the write's own event follows.
      void this.rt.exitWritten(file).then(
        (written) => written && this.queue.add(POD + key),
        () => this.queue.add(POD + key),
      );
    });
    this.exitWatcher.on('error', (err) => this.log.warn({ err: messageOf(err) }, 'exit watcher error'));
  }

  // reports ----------------------------------------------------------------------

  /** Each step as it starts and ends (live progress for apply, delete and the daemon's clients). */
  onProgress(fn: (e: ProgressEvent) => void): () => void {
    this.progressListeners.add(fn);
    this.offRuntimeProgress ??= this.rt.onProgress((w) => {
      const key = w.kind === 'pull' ? IMAGE + w.image : POD + w.container.slice(0, w.container.lastIndexOf('/'));
      const step = this.runningStep.get(key);
      if (step !== undefined) this.progress({ key, phase: 'wait', step, wait: w });
    });
    return () => {
      this.progressListeners.delete(fn);
      if (this.progressListeners.size > 0) return;
      this.offRuntimeProgress?.();
      this.offRuntimeProgress = undefined;
    };
  }

  private progress(e: ProgressEvent): void {
    if (e.phase === 'start') this.runningStep.set(e.key, e.step);
    else if (e.phase === 'end') this.runningStep.delete(e.key);
    for (const l of this.progressListeners) l(e);
  }

  onReport(fn: (r: KeyReport) => void): () => void {
    this.reportListeners.add(fn);
    return () => this.reportListeners.delete(fn);
  }

  private emit(r: KeyReport): void {
    this.emittedRun.add(r.key);
    const started = this.runStarted.get(r.key);
    if (started !== undefined && r.durationMs === undefined) r.durationMs = this.clock.now() - started;
    const epoch = this.runEpoch.get(r.key);
    if (r.epoch === undefined && epoch !== undefined) r.epoch = epoch;
    for (const l of this.reportListeners) l(r);
  }

  // the handler ------------------------------------------------------------------

  private async handle(key: string, signal: AbortSignal): Promise<Outcome> {
    this.runStarted.set(key, this.clock.now());
    this.runEpoch.set(key, this.desireEpoch);
    this.emittedRun.delete(key);
    try {
      if (key.startsWith(IMAGE)) return await this.reconcileImage(key.slice(IMAGE.length), signal);
      if (key.startsWith(POD)) return await this.reconcilePod(key.slice(POD.length), signal);
      return {};
    } catch (err) {
      // A run that failed before it reported (the state database itself failing: a full disk)
      // still reports, or an apply waiting for this key would wait for ever
      // (regression apply-hangs-when-state-write-fails).
      if (key.startsWith(POD) && !this.emittedRun.has(key)) {
        const e = asBerthError(err);
        this.log.error({ key, err: e.message, code: e.code }, 'pod run failed before it reported');
        this.emit({ key, steps: [], blocked: [{ key: key.slice(POD.length), reason: `${e.code}: ${e.message}` }], waitingImages: [], imageErrors: [], settled: true });
      }
      // In-process apply runs each key once and reports; the daemon retries with backoff.
      if (!this.retry) return {};
      throw err;
    } finally {
      this.runStarted.delete(key);
      this.emittedRun.delete(key);
    }
  }

  private async reconcileImage(ref: string, signal: AbortSignal): Promise<Outcome> {
    const waiters = this.imageWaiters.get(ref) ?? new Set<string>();
    const declared = this.declaredImages.get(ref);
    if (waiters.size === 0 && (declared === undefined || this.rt.localImage(ref) !== undefined)) {
      // Nobody needs it any more (the pod changed or went): drop the retries.
      this.imageErrors.delete(ref);
      this.queue.forget(IMAGE + ref);
      return {};
    }
    const step: Step = { kind: 'pull', image: ref, reason: this.pullReasons.get(ref) ?? 'not present' };
    const began = this.clock.now();
    this.progress({ key: IMAGE + ref, phase: 'start', step });
    try {
      // The pull secrets of every pod waiting for this image (the kubelet pulls per pod; one pull serves them all here).
      const secrets = new Map<string, { secret: string; configJson: string }>();
      for (const k of waiters) {
        const d = this.desire(k);
        if (d?.kind === 'present') for (const c of d.pod.pullCredentials ?? []) secrets.set(c.secret, c);
      }
      const img = await this.rt.pullImage(ref, signal, declared?.platform, [...secrets.values()]);
      this.progress({ key: IMAGE + ref, phase: 'end', step, ms: this.clock.now() - began });
      this.imageErrors.delete(ref);
      this.rt.addEvent(IMAGE + ref, 'Pulled', `pulled ${ref} (${img.digest})`);
      this.emit({ key: IMAGE + ref, steps: [{ step }], blocked: [], waitingImages: [], imageErrors: [], settled: true });
      // The waiters as they are now: pods re-planned during the pull registered again.
      const now = this.imageWaiters.get(ref) ?? new Set<string>();
      this.imageWaiters.delete(ref);
      for (const k of new Set([...waiters, ...now])) this.queue.add(POD + k);
      return {};
    } catch (err) {
      const raw = asBerthError(err);
      // Worded for a person (what to check, a short excerpt of the registry's answer); the raw error is the cause.
      const e = new BerthError(raw.code, explainPullFailure(ref, raw), { cause: raw, details: raw.details });
      this.imageErrors.set(ref, e);
      this.rt.addEvent(IMAGE + ref, 'Failed', e.message, { type: 'Warning', code: e.code });
      const message = `${e.message}${this.imageUsers(ref, [...waiters, ...(this.imageWaiters.get(ref) ?? [])])}`;
      this.progress({ key: IMAGE + ref, phase: 'end', step, ms: this.clock.now() - began, error: { code: e.code, message } });
      this.emit({ key: IMAGE + ref, steps: [{ step, error: { code: e.code, message } }], blocked: [], waitingImages: [], imageErrors: [], settled: true });
      // The pods learn it (ImagePullBackOff) and apply reports it; the queue retries the pull.
      for (const k of new Set([...waiters, ...(this.imageWaiters.get(ref) ?? [])])) this.queue.add(POD + k);
      throw e;
    }
  }

  /** Which pods want an image, with the manifest file:line that asks for it, for a pull failure's message. */
  private imageUsers(ref: string, podKeys: Iterable<string>): string {
    const users: Parameters<typeof wantedBy>[0][number][] = [];
    for (const key of new Set(podKeys)) {
      const d = this.desire(key);
      const containers = d?.kind === 'present' ? [...(d.pod.initContainers ?? []), ...d.pod.containers].filter((c) => c.image === ref).map((c) => c.name) : [];
      if (d?.kind === 'present' && containers.length > 0) users.push({ podKey: key, containers, source: d.pod.source, line: d.pod.line });
    }
    return wantedBy(users);
  }

  private async reconcilePod(podKey: string, signal: AbortSignal): Promise<Outcome> {
    const qkey = POD + podKey;
    const desire = this.desire(podKey);
    const restarts = this.rt.listRestarts(podKey);
    const observed = await this.rt.observePod(podKey, { repair: true });
    const report: KeyReport = { key: qkey, steps: [], blocked: [], waitingImages: [], imageErrors: [], settled: true };
    const now = this.clock.now();
    if (desire === undefined || (desire.kind === 'absent' && observed === undefined)) {
      this.forgetImageWaits(podKey);
      this.prober?.stopPod(podKey);
      this.emit(report);
      return {};
    }
    const view = observed !== undefined ? this.withProbes(toView(observed, restarts)) : undefined;
    if (desire.kind === 'absent') {
      this.forgetImageWaits(podKey);
      this.prober?.stopPod(podKey);
      const p = plan({ desired: [], observed: view !== undefined ? [view] : [], images: {}, prune: desire.scope, now });
      const failure = await this.execute(p.steps, report, signal);
      this.rt.deleteConditions(qkey);
      this.emit(report);
      if (failure !== undefined) throw failure;
      return {};
    }
    const pod = desire.pod;
    if (this.overrides.get(podKey)?.kind === 'present' && observed !== undefined && observed.spec !== JSON.stringify(pod)) {
      // A CLI apply records its spec at once (kubectl's last-applied): if a step fails, the
      // daemon retries the new spec, not the one it replaces.
      recordPod(this.rt, pod);
    }
    if (desire.conflict !== undefined) {
      this.writeStatus(podKey, pod, view, { conflict: desire.conflict, images: [], waiting: [], failed: [], blocked: [] });
      this.emit(report);
      return {};
    }
    const images = await imageViews(this.rt, [pod], { resolveRemote: true, log: this.log, cache: this.resolveCache, signal });
    const p = plan({ desired: [pod], observed: view !== undefined ? [view] : [], images, now });
    report.blocked = p.blocked;
    const waitImages = new Set<string>();
    const statusImages: PodSituation['images'] = [];
    this.forgetImageWaits(podKey);
    for (const s of p.steps) {
      if (s.kind !== 'pull') continue;
      waitImages.add(s.image);
      const failed = this.imageErrors.get(s.image);
      const waiters = this.imageWaiters.get(s.image) ?? new Set<string>();
      waiters.add(podKey);
      this.imageWaiters.set(s.image, waiters);
      this.pullReasons.set(s.image, s.reason);
      if (failed !== undefined) {
        report.imageErrors.push(failed.message);
        statusImages.push({ image: s.image, error: failed.message, code: failed.code });
        // A failed pull retries on its own backoff; when no retry is pending, ask again.
        if (this.queue.nextRetryAt(IMAGE + s.image) === undefined && this.retry) this.queue.add(IMAGE + s.image);
      } else {
        report.waitingImages.push(s.image);
        statusImages.push({ image: s.image });
        this.queue.add(IMAGE + s.image);
      }
    }
    // Containers whose image is still to come wait for it; the rest go ahead.
    const steps = p.steps.filter((s) => s.kind !== 'pull' && !((s.kind === 'start' || s.kind === 'replace') && waitImages.has(s.container.image)));
    const failure = await this.execute(steps, report, signal);
    // ConfigMap and Secret edits reach mounted files in place, without a restart (the kubelet's sync).
    if (pod.projections !== undefined && pod.paused !== true && this.rt.listContainers(podKey).length > 0) {
      await this.rt.syncVolumes(podKey, podVolumes(pod)).catch((err: unknown) => this.log.warn({ pod: podKey, err: messageOf(err) }, 'volume refresh failed'));
    }
    report.settled = report.waitingImages.length === 0;
    const after = steps.length > 0 ? await this.rt.observePod(podKey, { repair: true }) : observed;
    const failed = report.steps.filter((r) => r.error !== undefined).map((r) => ({ message: r.error?.message ?? '', retryable: failure?.retryable ?? false, ...(isErrorCode(r.error?.code) ? { code: r.error.code } : {}) }));
    if (after !== undefined && pod.paused !== true) this.prober?.sync(pod, after.containers.filter((c) => c.state === 'running'));
    else this.prober?.stopPod(podKey);
    this.writeStatus(podKey, pod, after !== undefined ? this.withProbes(toView(after, this.rt.listRestarts(podKey))) : undefined, {
      images: statusImages,
      waiting: p.waiting ?? [],
      failed,
      blocked: p.blocked,
    });
    this.emit(report);
    if (failure !== undefined) throw failure;
    const due = (p.waiting ?? []).map((w) => w.until);
    if (due.length > 0) return { requeueAfter: Math.max(1, Math.min(...due) - this.clock.now()) };
    return {};
  }

  /** The prober's view of each container: not ready, or unhealthy (the planner restarts it). */
  private withProbes(v: ReturnType<typeof toView>): ReturnType<typeof toView> {
    if (this.prober === undefined) return v;
    return {
      ...v,
      containers: v.containers.map((c) => {
        const p = this.prober?.state(c.id) ?? {};
        return { ...c, ...(p.ready !== undefined ? { ready: p.ready } : {}), ...(p.unhealthy !== undefined ? { unhealthy: p.unhealthy } : {}) };
      }),
    };
  }

  private forgetImageWaits(podKey: string): void {
    for (const [ref, set] of this.imageWaiters) {
      set.delete(podKey);
      if (set.size === 0) this.imageWaiters.delete(ref);
    }
  }

  /** Runs steps in order; a failed create-pod stops the pod's other steps. Returns the first failure. */
  private async execute(steps: readonly Step[], report: KeyReport, signal: AbortSignal): Promise<BerthError | undefined> {
    let first: BerthError | undefined;
    for (const step of steps) {
      if (signal.aborted || step.kind === 'pull') break;
      const began = this.clock.now();
      this.progress({ key: report.key, phase: 'start', step });
      try {
        await executeStep(this.rt, step);
        report.steps.push({ step });
        this.progress({ key: report.key, phase: 'end', step, ms: this.clock.now() - began });
      } catch (err) {
        const e = asBerthError(err);
        report.steps.push({ step, error: { code: e.code, message: e.message } });
        this.progress({ key: report.key, phase: 'end', step, ms: this.clock.now() - began, error: { code: e.code, message: e.message } });
        // A retryable failure decides the retry even when a terminal one came first.
        if (first === undefined || (!first.retryable && e.retryable)) first = e;
        // Nothing of the pod can start without its record or its sandbox.
        if (step.kind === 'create-pod' || step.kind === 'sandbox') break;
      }
    }
    return first;
  }

  private writeStatus(
    podKey: string,
    pod: DesiredPod,
    observed: ReturnType<typeof toView> | undefined,
    s: { images: PodSituation['images']; waiting: NonNullable<Plan['waiting']>; failed: PodSituation['failed']; blocked: Plan['blocked']; conflict?: string },
  ): void {
    const generation = this.rt.getPod(podKey)?.generation ?? 0;
    const v = podVerdict({ desired: pod, observed, generation, invalid: this.invalid.get(podKey) ?? [], ...s });
    // Events on transitions of the stored conditions (not of this process's memory), so a
    // daemon restart does not repeat them.
    const changed = this.rt.setConditions(POD + podKey, v.conditions);
    if (changed.includes('Ready') || (changed.includes('InvalidSpec') && v.phase === 'InvalidSpec')) this.phaseEvent(podKey, v.phase, v.message, s.waiting, v.code);
  }

  private phaseEvent(podKey: string, phase: PodPhase, message: string, waiting: NonNullable<Plan['waiting']>, code?: ErrorCode): void {
    const warning = { type: 'Warning' as const, ...(code !== undefined ? { code } : {}) };
    const key = POD + podKey;
    switch (phase) {
      case 'CrashLoopBackOff':
        for (const w of waiting) {
          this.rt.addEvent(key, 'BackOff', `${w.key}: ${w.message}; next try at ${new Date(w.until).toISOString()}`, { type: 'Warning' });
        }
        return;
      case 'ImagePullBackOff':
        this.rt.addEvent(key, 'BackOff', `image pull back-off: ${message}`, warning);
        return;
      case 'InvalidSpec':
        this.rt.addEvent(key, 'Invalid', `manifest invalid, last good objects kept: ${message}`, warning);
        return;
      case 'Conflict':
        this.rt.addEvent(key, 'Conflict', message, warning);
        return;
      case 'Paused':
        this.rt.addEvent(key, 'Paused', message);
        return;
      case 'Running':
        this.rt.addEvent(key, 'Ready', 'all containers running');
        return;
      default:
        return;
    }
  }

  // apply, delete, diff ---------------------------------------------------------------

  /**
   * Which of `pods` (or of the keys a delete names) another source owns: a pod recorded
   * from, or declared by, a watched directory, asked for from a path outside it.
   */
  ownershipProblems(req: ApplyRequest, source: string | undefined, deleteKeys: readonly string[] = []): string[] {
    if (req.force === true) return [];
    // Only a running daemon owns its directories: with no berth up, the CLI acts alone
    // (README: stop the demo with `berth delete -f manifests/` after Ctrl-C of up).
    const roots = this.roots;
    const owned = (key: string): string | undefined => {
      const row = this.rt.getPod(key);
      const declared = this.declared.get(key);
      // The recorded owner keeps a key: a pod taken with --force belongs to its CLI source.
      if (row !== undefined) return inScope(row.source, { sources: roots }) ? row.source : undefined;
      return declared?.source;
    };
    const out: string[] = [];
    for (const pod of req.pods) {
      const owner = owned(pod.key);
      if (owner !== undefined && owner !== pod.source && !roots.some((r) => inScope(pod.source, { sources: [r] }) && inScope(owner, { sources: [r] }))) {
        out.push(`pod ${pod.key} is owned by ${owner}, which berth up watches; edit that file, or use --force to take the pod over`);
      }
    }
    for (const key of deleteKeys) {
      const owner = owned(key);
      if (owner !== undefined && (source === undefined || !roots.some((r) => inScope(source, { sources: [r] }) && inScope(owner, { sources: [r] })))) {
        out.push(`pod ${key} is owned by ${owner}, which berth up watches: remove it from that file (berth up prunes it), or use --force (it is recreated while the file declares it)`);
      }
    }
    return out;
  }

  /**
   * apply (and delete: pods [] with prune.keys): sets the desire of each key, runs the keys
   * through the queue and waits until each has settled (its pulls done or failed). Returns
   * what was done; the daemon keeps retrying what failed, in-process it is reported once.
   */
  async apply(req: ApplyRequest, source?: string, onProgress?: (e: ProgressEvent) => void): Promise<ApplyResult> {
    const recorded = this.rt.listPods();
    const wanted = new Set(req.pods.map((p) => p.key));
    const pruneKeys =
      req.prune === undefined
        ? []
        : recorded.filter((r) => !wanted.has(r.key) && ((req.prune?.keys?.includes(r.key) ?? false) || inScope(r.source, req.prune ?? {}))).map((r) => r.key);
    const refused = this.ownershipProblems(req, source, pruneKeys);
    if (refused.length > 0) return { steps: [], blocked: [], refused, keys: [] };
    const keys = [...req.pods.map((p) => p.key), ...pruneKeys];
    const reports = new Map<string, KeyReport[]>();
    const imageReports = new Map<string, KeyReport>();
    const pending = new Set(keys.map((k) => POD + k));
    const epoch = ++this.desireEpoch;
    let done: () => void = () => undefined;
    const finished = new Promise<void>((resolve) => (done = resolve));
    const imageKeys = new Set(req.pods.flatMap((p) => p.containers.map((c) => IMAGE + c.image)));
    const stopProgress = onProgress === undefined ? () => false : this.onProgress((e) => {
      if (pending.has(e.key) || imageKeys.has(e.key)) onProgress(e);
    });
    const stop = this.onReport((r) => {
      if (r.key.startsWith(IMAGE)) {
        imageReports.set(r.key.slice(IMAGE.length), r);
        return;
      }
      if (!pending.has(r.key) && !reports.has(r.key)) return;
      // A run that began before this apply set its desire (an exit's run in flight) read the old
      // desire; the queue runs the key again, and that run answers (regression
      // delete-settles-on-a-run-in-flight: `run --rm` returned while its pod was still there).
      if ((r.epoch ?? epoch) < epoch) return;
      const list = reports.get(r.key) ?? [];
      list.push(r);
      reports.set(r.key, list);
      if (r.settled) pending.delete(r.key);
      if (pending.size === 0) done();
    });
    const mine = new Map<string, Desire>();
    for (const pod of req.pods) mine.set(pod.key, { kind: 'present', pod });
    for (const key of pruneKeys) mine.set(key, { kind: 'absent', scope: req.prune?.keys?.includes(key) === true ? { keys: [key] } : (req.prune ?? {}) });
    for (const [key, d] of mine) this.overrides.set(key, d);
    try {
      if (pending.size === 0) done();
      for (const key of keys) this.queue.add(POD + key);
      await finished;
    } finally {
      stop();
      stopProgress();
      // Only this apply's own desires: a later apply of the same key (a delete sent during this
      // one's replace) keeps its own until it settles.
      for (const [key, d] of mine) if (this.overrides.get(key) === d) this.overrides.delete(key);
    }
    const steps: StepResult[] = [];
    const blocked: Plan['blocked'] = [];
    const images = new Set<string>();
    for (const key of keys) {
      for (const r of reports.get(POD + key) ?? []) {
        for (const i of [...r.waitingImages]) images.add(i);
        for (const s of r.steps) if (s.step.kind === 'start' || s.step.kind === 'replace') images.add(s.step.container.image);
      }
    }
    for (const ref of [...images].sort()) {
      const r = imageReports.get(ref);
      if (r !== undefined) steps.push(...r.steps);
    }
    for (const key of keys) {
      const rs = reports.get(POD + key) ?? [];
      for (const r of rs) steps.push(...r.steps);
      const last = rs[rs.length - 1];
      if (last !== undefined) blocked.push(...last.blocked);
    }
    return { steps, blocked, refused: [], keys };
  }

  /** `berth diff`: the whole-world plan, read-only (nothing repaired, nothing recorded). */
  diff(pods: readonly DesiredPod[], prune?: PruneScope, opts: { fromRows?: boolean } = {}): Promise<Plan> {
    return computePlan(this.rt, { desired: pods, repair: false, ...opts, ...(prune !== undefined ? { prune } : {}) }, this.log);
  }

  /**
   * Waits until every key is Ready (its Ready condition True for the current generation) and has
   * stayed so for READY_STABLE_MS, polled every READY_POLL_MS, with nothing in between (the same
   * Ready transition, no container of the pod ended), or the deadline passes; returns the keys not ready with their reason and message.
   * A container that dies right after its start is observed running by the start's own pod run,
   * and when its exit is seen the same pod run may restart it at once, so Ready can stay True
   * through a crash: one Ready reading would report a crash-looping pod ready (regression
   * wait-ready-on-a-container-that-exits-at-once). The kubelet's 1 s relist hides the same race.
   */
  async waitReady(keys: readonly string[], timeoutMs: number, signal?: AbortSignal): Promise<{ key: string; reason: string; message: string }[]> {
    const until = this.clock.now() + timeoutMs;
    let seen = new Map<string, string>();
    let since = this.clock.now();
    for (;;) {
      const notReady: { key: string; reason: string; message: string }[] = [];
      const now = new Map<string, string>();
      for (const key of keys) {
        const ready = this.rt.listConditions(POD + key).find((c) => c.type === 'Ready');
        if (ready?.status !== 'True') {
          notReady.push({ key, reason: ready?.reason ?? 'Unknown', message: ready?.message ?? 'not reconciled yet' });
          continue;
        }
        const ends = this.rt.listRestarts(key).map((r) => `${r.name}:${r.nextAttempt}:${r.lastFinishedAt ?? ''}`);
        now.set(key, `${ready.lastTransitionTime} ${ends.sort().join(' ')}`);
      }
      const same = [...now].every(([k, sig]) => seen.get(k) === sig);
      if (!same) since = this.clock.now();
      // The same Ready for READY_STABLE_MS: a container that dies just after its start has had time
      // to be seen dead even on a loaded machine (two readings 100 ms apart were not always enough).
      const settled = same && this.clock.now() - since >= READY_STABLE_MS;
      if ((notReady.length === 0 && settled) || this.clock.now() >= until || signal?.aborted === true) return notReady;
      seen = now;
      await new Promise((r) => setTimeout(r, READY_POLL_MS));
    }
  }

  /** Stops watching exits and drains the queue within `deadlineMs`; never stops containers. */
  async stop(deadlineMs = 10_000): Promise<string[]> {
    this.exitWatcher?.close();
    this.exitWatcher = undefined;
    this.prober?.stopPod();
    return this.queue.shutdown(deadlineMs);
  }
}

/** How often apply --wait looks at the Ready conditions, and how long Ready must hold unchanged. */
const READY_POLL_MS = 100;
const READY_STABLE_MS = 500;

function asBerthError(err: unknown): BerthError {
  if (err instanceof BerthError) return err;
  // SQLite's own failures of the disk under the state database keep their meaning.
  const code = (err as { code?: unknown } | null)?.code;
  if (code === 'SQLITE_FULL') return new BerthError('ERR_RESOURCE_EXHAUSTED', `state database: no space left on the local disk (${messageOf(err)})`, { cause: err });
  if (typeof code === 'string' && code.startsWith('SQLITE_IOERR')) return new BerthError('ERR_IO', `state database: disk I/O error (${messageOf(err)})`, { cause: err });
  return new BerthError('ERR_INTERNAL', messageOf(err), { cause: err });
}

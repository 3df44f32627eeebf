/**
 * The planner: plan(desired, observed) → Step[]. PURE — `import type` only — so `berth
 * diff` and `berth apply` share it and unit tests run it without processes or SQLite.
 * `diff` renders the steps; `apply` executes them in order.
 */
import type { DesiredContainer, DesiredPod, RestartPolicy } from './desired.js';

export interface ObservedContainerView {
  id: string;
  name: string;
  specHash: string;
  imageRef: string;
  imageDigest: string;
  /** `paused`: frozen by `runc pause` behind berth's back — alive, left alone. */
  state: 'creating' | 'created' | 'running' | 'exited' | 'removing' | 'paused';
  exitCode: number | null;
  pid: number | null;
  attempt: number;
  startedAt: number | null;
  finishedAt: number | null;
  /** From `berth up`'s prober: false while a readiness probe has not passed. */
  ready?: boolean;
  /** From `berth up`'s prober: why a liveness or startup probe gave up on it. */
  unhealthy?: string;
}

/** Restart bookkeeping of one container name (persisted; survives container rows). */
export interface RestartView {
  name: string;
  restarts: number;
  nextAttempt: number;
  /** Delay before the next policy restart, counted from the exit; 0 = at once. */
  backoffMs: number;
}

export interface ObservedPodView {
  key: string;
  source: string;
  podHash: string;
  /** The desired pod as last applied (JSON of DesiredPod), for field-level diffs. */
  spec: string;
  containers: ObservedContainerView[];
  restarts?: RestartView[];
  /** The pod's sandbox as recorded: its hash, whether it is alive, its IP. */
  sandbox?: { hash: string; ready: boolean; ip: string | null };
}

/** What is known about each image reference the desired pods use. */
export interface ImageView {
  /** Manifest digest of the local image, when fully present. */
  local?: string;
  /** Top-level digest (index or manifest) of the local image. */
  localTop?: string;
  /** Top-level digest the registry reports now (only looked up for pullPolicy Always). */
  remote?: string;
  /** The local image's Entrypoint and Cmd, to show what a container will really run. */
  entrypoint?: string[];
  cmd?: string[];
}

export interface PruneScope {
  /** Observed pods whose source file is one of these or lies under one of these dirs. */
  sources?: string[];
  /** Observed pods with exactly these keys (`berth delete`). */
  keys?: string[];
}

export interface PlanInput {
  desired: readonly DesiredPod[];
  observed: readonly ObservedPodView[];
  images: Readonly<Record<string, ImageView>>;
  prune?: PruneScope;
  /** The clock, for crash-loop backoff (ms since the epoch). */
  now?: number;
}

/** Crash-loop backoff of the kubelet: 10 s doubling to 300 s, reset after 10 min of running. */
export const CRASH_BACKOFF_INITIAL_MS = 10_000;
export const CRASH_BACKOFF_MAX_MS = 300_000;
export const CRASH_BACKOFF_RESET_MS = 600_000;

/** A policy restart: which one it is and the backoff to wait before the one after it. */
export interface RestartInfo {
  count: number;
  nextBackoffMs: number;
}

/**
 * One changed value behind a step, for `diff` (old → new, like `kubectl diff`). `field` is the
 * name `changes` lists; `key` narrows it (an env variable's name). An absent `old`/`new` means
 * the field was not set on that side. `masked`: a value that must never be printed (a Secret's),
 * rendered as `***`.
 */
export interface FieldChange {
  field: string;
  key?: string;
  old?: unknown;
  new?: unknown;
  masked?: boolean;
}

export type Step =
  | { kind: 'pull'; image: string; reason: string }
  | { kind: 'create-pod'; pod: DesiredPod }
  | { kind: 'update-pod'; pod: DesiredPod; changes: string[]; details: FieldChange[] }
  | {
      kind: 'start';
      pod: DesiredPod;
      container: DesiredContainer;
      reason: string;
      attempt: number;
      /** The image's Entrypoint and Cmd when it is here: what will run (render applies command/args). */
      image?: { entrypoint?: string[]; cmd?: string[] };
    }
  | {
      kind: 'replace';
      pod: DesiredPod;
      container: DesiredContainer;
      oldId: string;
      reason: string;
      changes: string[];
      details: FieldChange[];
      attempt: number;
      restart?: RestartInfo;
    }
  | { kind: 'remove'; podKey: string; id: string; name: string; graceMs: number; reason: string }
  /** Stop a running container and keep it exited (a liveness or startup probe gave up); the restart policy and back-off take it from there. */
  | { kind: 'kill'; podKey: string; id: string; name: string; graceMs: number; reason: string }
  /**
   * (Re)create the pod's sandbox: its containers (`removeIds`) stop first, each with the pod's
   * grace period, since they live in the old namespaces; start steps for them follow.
   */
  | { kind: 'sandbox'; pod: DesiredPod; reason: string; replace: boolean; removeIds: string[] }
  | { kind: 'remove-sandbox'; podKey: string; reason: string }
  | { kind: 'delete-pod'; podKey: string; graceMs: number; reason: string };

export interface Plan {
  steps: Step[];
  /** Desired objects that cannot be planned (e.g. pullPolicy Never and no image). */
  /** `failed`: the pod's own verdict, for good (an init container failed under restartPolicy Never), not a wait. */
  blocked: { key: string; reason: string; failed?: true }[];
  /** Containers waiting out their crash-loop backoff: restart due at `until`. */
  waiting?: { key: string; reason: 'CrashLoopBackOff'; until: number; message: string }[];
}

/** The desired pod as last applied (the JSON a pod row records), or undefined if unreadable. */
export function lastAppliedPod(spec: string): DesiredPod | undefined {
  try {
    return JSON.parse(spec) as DesiredPod;
  } catch {
    return undefined;
  }
}

/** Kubernetes' default termination grace period, in ms. */
export const DEFAULT_GRACE_MS = 30_000;

/** The grace period a recorded pod was applied with, else Kubernetes' default. */
export function recordedGracePeriodMs(spec: string | undefined): number {
  return (spec === undefined ? undefined : lastAppliedPod(spec)?.gracePeriodMs) ?? DEFAULT_GRACE_MS;
}

export function inScope(source: string, scope: PruneScope): boolean {
  return (scope.sources ?? []).some((s) => source === s || source.startsWith(s.endsWith('/') ? s : `${s}/`));
}

function shouldRestart(policy: RestartPolicy, exitCode: number | null): boolean {
  if (policy === 'Always') return true;
  if (policy === 'OnFailure') return exitCode !== 0;
  return false;
}

/** `{old, new}` without the sides that are unset (JSON has no undefined). */
function change(field: string, before: unknown, after: unknown, key?: string): FieldChange {
  return { field, ...(key !== undefined ? { key } : {}), ...(before !== undefined ? { old: before } : {}), ...(after !== undefined ? { new: after } : {}) };
}

/**
 * The values that differ between two container specs, for `diff`: one entry per top-level
 * field, except `env`, which gets one per variable (so one variable can be masked) — or one
 * for the whole list when only its order changed.
 */
export function changedFields(before: Record<string, unknown> | undefined, after: Record<string, unknown>): FieldChange[] {
  if (before === undefined) return [];
  const keys = new Set([...Object.keys(before), ...Object.keys(after)]);
  keys.delete('specHash');
  // Resolution bookkeeping: the resolved `env` carries the change (masked for Secrets).
  keys.delete('envWritten');
  keys.delete('configError');
  const out: FieldChange[] = [];
  for (const k of [...keys].sort()) {
    if (JSON.stringify(before[k]) === JSON.stringify(after[k])) continue;
    if (k === 'env') {
      const vars = envChanges(before[k], after[k]);
      // Only the order (or bookkeeping) changed: the names, never the values — one may be a
      // Secret's (regression env-order-diff-shows-secret).
      const names = (v: unknown): string[] => (Array.isArray(v) ? (v as { name: string; overridden?: boolean }[]).filter((e) => e.overridden !== true).map((e) => e.name) : []);
      out.push(...(vars.length > 0 ? vars : [change(k, names(before[k]), names(after[k]))]));
      continue;
    }
    out.push(change(k, before[k], after[k]));
  }
  return out;
}

function envChanges(before: unknown, after: unknown): FieldChange[] {
  type Var = { name: string; value?: unknown; secret?: boolean };
  const asMap = (v: unknown): Map<string, Var> => new Map((Array.isArray(v) ? (v as Var[]) : []).map((e) => [e.name, e]));
  const a = asMap(before);
  const b = asMap(after);
  const out: FieldChange[] = [];
  for (const name of [...new Set([...a.keys(), ...b.keys()])].sort()) {
    const x = a.get(name);
    const y = b.get(name);
    if (JSON.stringify(x?.value) === JSON.stringify(y?.value)) continue;
    // A value from a Secret on either side is never printed: shown as changed, masked.
    const masked = x?.secret === true || y?.secret === true;
    out.push({ ...change('env', x?.value, y?.value, name), ...(masked ? { masked: true } : {}) });
  }
  return out;
}

/** The field names `changes` lists, in order, once each. */
function fieldNames(details: readonly FieldChange[]): string[] {
  return [...new Set(details.map((d) => d.field))];
}

export function plan(input: PlanInput): Plan {
  const steps: Step[] = [];
  const blocked: Plan['blocked'] = [];
  const waiting: NonNullable<Plan['waiting']> = [];
  const now = input.now ?? 0;
  const pulls = new Map<string, string>();
  const observedByKey = new Map(input.observed.map((p) => [p.key, p]));
  const desiredKeys = new Set(input.desired.map((p) => p.key));

  // Which images must be pulled, and which containers run an outdated image.
  const outdatedImage = (c: DesiredContainer): boolean => {
    const view = input.images[c.image] ?? {};
    if (c.pullPolicy === 'Never') return false;
    if (view.local === undefined) return true;
    return c.pullPolicy === 'Always' && view.remote !== undefined && view.remote !== view.localTop;
  };
  const podSteps: Step[] = [];
  for (const pod of input.desired) {
    const obs = observedByKey.get(pod.key);
    const prev = obs !== undefined ? lastAppliedPod(obs.spec) : undefined;
    let podBlocked = false;
    for (const c of [...(pod.initContainers ?? []), ...pod.containers]) {
      const view = input.images[c.image] ?? {};
      if (c.pullPolicy === 'Never' && view.local === undefined) {
        blocked.push({ key: `${pod.key}/${c.name}`, reason: `image ${c.image} is not present and imagePullPolicy is Never` });
        podBlocked = true;
      }
    }
    if (podBlocked) {
      // As the kubelet's ErrImageNeverPull: a new pod is recorded (status lists it with the
      // reason) but starts nothing; a pod that exists keeps what runs untouched.
      if (obs === undefined) podSteps.push({ kind: 'create-pod', pod });
      continue;
    }
    if (obs === undefined) {
      podSteps.push({ kind: 'create-pod', pod });
    } else {
      const details = podChanges(prev, pod);
      const changes = prev === undefined ? ['(unknown previous spec)'] : fieldNames(details);
      if (changes.length > 0 || obs.podHash !== pod.podHash || obs.source !== pod.source) {
        podSteps.push({ kind: 'update-pod', pod, changes: obs.source !== pod.source ? [...changes, `source ${obs.source} → ${pod.source}`] : changes, details });
      }
    }
    const allObserved = obs?.containers ?? [];
    // A pod without hostNetwork runs in a sandbox; a missing, dead or outdated one is made
    // anew before its containers start, and the containers of the old one go with it.
    let fresh = false;
    if (pod.sandbox !== undefined && pod.paused !== true) {
      const sb = obs?.sandbox;
      const why = sb === undefined ? 'none yet' : sb.hash !== pod.sandbox.hash ? 'network settings changed' : !sb.ready ? 'sandbox gone (infra container or network namespace)' : undefined;
      // As the kubelet: a pod that ran to completion (Never, or OnFailure after success) gets no new sandbox.
      const finished = sb !== undefined && allObserved.length > 0 && allObserved.every((o) => o.state === 'exited' && !shouldRestart(pod.restartPolicy, o.exitCode));
      if (why !== undefined && !finished) {
        podSteps.push({ kind: 'sandbox', pod, reason: why, replace: sb !== undefined || allObserved.length > 0, removeIds: allObserved.map((o) => o.id) });
        fresh = true;
      }
    }
    const observedContainers = fresh ? [] : allObserved;
    const restarts = new Map((obs?.restarts ?? []).map((r) => [r.name, r]));
    // Init containers first, in order, each to a successful exit: until then no container starts.
    const initDone = pod.paused === true || initContainersDone(pod, observedContainers, allObserved, restarts, now, input.images, podSteps, waiting, blocked, pulls, outdatedImage);
    for (const c of initDone ? pod.containers : []) {
      if (c.configError !== undefined) {
        // The kubelet's CreateContainerConfigError: nothing is started or replaced for it; what runs stays.
        blocked.push({ key: `${pod.key}/${c.name}`, reason: `CreateContainerConfigError: ${c.configError}` });
        continue;
      }
      const mine = observedContainers.filter((o) => o.name === c.name);
      const current = mine.find((o) => o.specHash === c.specHash) ?? mine[mine.length - 1];
      const r = restarts.get(c.name);
      const attempt = Math.max(r?.nextAttempt ?? 0, ...allObserved.filter((o) => o.name === c.name).map((m) => m.attempt + 1));
      if (pod.paused === true) {
        // Paused on purpose: stop what runs, start nothing, until the annotation goes.
        for (const m of mine) {
          if (m.state !== 'exited') podSteps.push({ kind: 'remove', podKey: pod.key, id: m.id, name: m.name, graceMs: pod.gracePeriodMs, reason: 'paused (berth.dev/paused)' });
        }
        continue;
      }
      for (const extra of mine) {
        if (extra !== current) {
          podSteps.push({ kind: 'remove', podKey: pod.key, id: extra.id, name: extra.name, graceMs: pod.gracePeriodMs, reason: 'superseded' });
        }
      }
      const needPull = outdatedImage(c);
      if (needPull && !pulls.has(c.image)) {
        const view = input.images[c.image] ?? {};
        pulls.set(c.image, view.local === undefined ? 'not present' : `registry has ${view.remote ?? '?'}`);
      }
      if (current === undefined) {
        const view = input.images[c.image];
        const image = view?.local !== undefined ? { ...(view.entrypoint !== undefined ? { entrypoint: view.entrypoint } : {}), ...(view.cmd !== undefined ? { cmd: view.cmd } : {}) } : undefined;
        podSteps.push({ kind: 'start', pod, container: c, reason: fresh && allObserved.length > 0 ? 'new sandbox' : 'declared', attempt, ...(image !== undefined ? { image } : {}) });
        continue;
      }
      const prevC = prev?.containers.find((x) => x.name === c.name);
      if (current.state === 'paused') {
        // Frozen behind berth's back (`runc pause`): alive; replacing it would lose its state.
        continue;
      }
      if (current.specHash !== c.specHash) {
        const details = changedFields(prevC as unknown as Record<string, unknown> | undefined, c as unknown as Record<string, unknown>);
        podSteps.push({ kind: 'replace', pod, container: c, oldId: current.id, reason: 'spec changed', changes: fieldNames(details), details, attempt });
      } else if (needPull && c.pullPolicy === 'Always' && (input.images[c.image]?.local !== undefined)) {
        // Top-level digests (index or manifest) on both sides: what the registry was asked about.
        const view = input.images[c.image] ?? {};
        podSteps.push({ kind: 'replace', pod, container: c, oldId: current.id, reason: 'image moved', changes: ['image digest'], details: [change('image digest', view.localTop, view.remote)], attempt });
      } else if (c.pullPolicy === 'Always' && input.images[c.image]?.local !== undefined && current.imageDigest !== input.images[c.image]?.local && current.state !== 'exited') {
        // The tag moved and the new image is already here (pulled by an earlier run of this
        // key, or for another pod): the container still runs the old digest.
        podSteps.push({ kind: 'replace', pod, container: c, oldId: current.id, reason: 'image moved', changes: ['image digest'], details: [change('image digest', current.imageDigest, input.images[c.image]?.local)], attempt });
      } else if (current.state === 'running' && current.unhealthy !== undefined) {
        // The kubelet kills a container whose liveness (or startup) probe gave up. Whether and when
        // it runs again is then the exit's business: the restart policy (Never: it stays exited)
        // and the crash-loop back-off, as for any other exit (regressions liveness-kill-honours-
        // restart-policy, liveness-restart-backs-off).
        podSteps.push({ kind: 'kill', podKey: pod.key, id: current.id, name: c.name, graceMs: pod.gracePeriodMs, reason: current.unhealthy });
      } else if (current.state === 'exited') {
        if (shouldRestart(pod.restartPolicy, current.exitCode)) {
          const finished = current.finishedAt ?? now;
          const ran = finished - (current.startedAt ?? finished);
          // The kubelet's doBackOff: the first restart is immediate, then 10 s doubling to
          // 300 s, counted from the exit; a run of 10 min forgives the past.
          const delay = ran >= CRASH_BACKOFF_RESET_MS ? 0 : (r?.backoffMs ?? 0);
          const due = finished + delay;
          const exited = `exited with code ${current.exitCode ?? '?'}`;
          if (now >= due) {
            const next = delay === 0 ? CRASH_BACKOFF_INITIAL_MS : Math.min(delay * 2, CRASH_BACKOFF_MAX_MS);
            podSteps.push({
              kind: 'replace', pod, container: c, oldId: current.id, attempt,
              reason: `${exited}, restartPolicy ${pod.restartPolicy}`, changes: [], details: [],
              restart: { count: (r?.restarts ?? 0) + 1, nextBackoffMs: next },
            });
          } else {
            waiting.push({ key: `${pod.key}/${c.name}`, reason: 'CrashLoopBackOff', until: due, message: `${exited}; back-off ${Math.round(delay / 1000)}s restarting failed container` });
          }
        }
      } else if (current.state === 'created') {
        podSteps.push({ kind: 'replace', pod, container: c, oldId: current.id, reason: 'created but never started', changes: [], details: [], attempt });
      }
    }
    for (const o of observedContainers) {
      if (!pod.containers.some((c) => c.name === o.name) && !(pod.initContainers ?? []).some((c) => c.name === o.name)) {
        podSteps.push({ kind: 'remove', podKey: pod.key, id: o.id, name: o.name, graceMs: pod.gracePeriodMs, reason: 'no longer declared' });
      }
    }
    if (pod.sandbox === undefined && obs?.sandbox !== undefined) {
      podSteps.push({ kind: 'remove-sandbox', podKey: pod.key, reason: 'hostNetwork: true' });
    }
  }
  if (input.prune !== undefined) {
    for (const obs of input.observed) {
      const named = input.prune.keys?.includes(obs.key) === true;
      if (desiredKeys.has(obs.key) || !(named || inScope(obs.source, input.prune))) continue;
      const grace = recordedGracePeriodMs(obs.spec);
      podSteps.push({ kind: 'delete-pod', podKey: obs.key, graceMs: grace, reason: named ? 'deleted' : `no longer declared in ${obs.source}` });
    }
  }
  for (const [image, reason] of [...pulls.entries()].sort(([a], [b]) => (a < b ? -1 : 1))) {
    steps.push({ kind: 'pull', image, reason });
  }
  steps.push(...podSteps);
  return waiting.length > 0 ? { steps, blocked, waiting } : { steps, blocked };
}

/**
 * The kubelet's init container rule: each init container, in order, must have exited 0 (with
 * its current spec) before the next starts, and all before any container. A running one is
 * waited for (its exit enqueues the pod); a failed one is restarted with the crash-loop
 * back-off unless restartPolicy is Never, which leaves the pod failed. Returns whether all are done.
 */
function initContainersDone(
  pod: DesiredPod,
  observed: readonly ObservedContainerView[],
  allObserved: readonly ObservedContainerView[],
  restarts: ReadonlyMap<string, RestartView>,
  now: number,
  images: Readonly<Record<string, ImageView>>,
  steps: Step[],
  waiting: NonNullable<Plan['waiting']>,
  blocked: Plan['blocked'],
  pulls: Map<string, string>,
  outdatedImage: (c: DesiredContainer) => boolean,
): boolean {
  for (const c of pod.initContainers ?? []) {
    if (c.configError !== undefined) {
      blocked.push({ key: `${pod.key}/${c.name}`, reason: `CreateContainerConfigError: ${c.configError}` });
      return false;
    }
    const mine = observed.filter((o) => o.name === c.name);
    const current = mine.filter((o) => o.specHash === c.specHash).pop();
    const r = restarts.get(c.name);
    const attempt = Math.max(r?.nextAttempt ?? 0, ...allObserved.filter((o) => o.name === c.name).map((m) => m.attempt + 1));
    if (images[c.image]?.local === undefined || outdatedImage(c)) {
      if (outdatedImage(c) && !pulls.has(c.image)) pulls.set(c.image, images[c.image]?.local === undefined ? 'not present' : `registry has ${images[c.image]?.remote ?? '?'}`);
      if (images[c.image]?.local === undefined) {
        steps.push({ kind: 'start', pod, container: c, reason: 'init container', attempt });
        return false;
      }
    }
    for (const old of mine) {
      if (old !== current && old.state !== 'exited') steps.push({ kind: 'remove', podKey: pod.key, id: old.id, name: old.name, graceMs: pod.gracePeriodMs, reason: 'superseded' });
    }
    if (current === undefined) {
      const view = images[c.image];
      const image = view?.local !== undefined ? { ...(view.entrypoint !== undefined ? { entrypoint: view.entrypoint } : {}), ...(view.cmd !== undefined ? { cmd: view.cmd } : {}) } : undefined;
      steps.push({ kind: 'start', pod, container: c, reason: 'init container', attempt, ...(image !== undefined ? { image } : {}) });
      return false;
    }
    if (current.state !== 'exited') {
      // Running (or created): its exit enqueues the pod.
      if (current.state === 'created') steps.push({ kind: 'replace', pod, container: c, oldId: current.id, reason: 'created but never started', changes: [], details: [], attempt });
      return false;
    }
    if (current.exitCode === 0) continue;
    if (pod.restartPolicy === 'Never') {
      blocked.push({ key: `${pod.key}/${c.name}`, reason: `init container ${c.name} failed with exit code ${current.exitCode ?? '?'} and restartPolicy is Never`, failed: true });
      return false;
    }
    const finished = current.finishedAt ?? now;
    const ran = finished - (current.startedAt ?? finished);
    const delay = ran >= CRASH_BACKOFF_RESET_MS ? 0 : (r?.backoffMs ?? 0);
    const due = finished + delay;
    const exited = `init container exited with code ${current.exitCode ?? '?'}`;
    if (now >= due) {
      const next = delay === 0 ? CRASH_BACKOFF_INITIAL_MS : Math.min(delay * 2, CRASH_BACKOFF_MAX_MS);
      steps.push({ kind: 'replace', pod, container: c, oldId: current.id, attempt, reason: exited, changes: [], details: [], restart: { count: (r?.restarts ?? 0) + 1, nextBackoffMs: next } });
    } else {
      waiting.push({ key: `${pod.key}/${c.name}`, reason: 'CrashLoopBackOff', until: due, message: `${exited}; back-off ${Math.round(delay / 1000)}s restarting failed init container` });
    }
    return false;
  }
  return true;
}

/** Pod-level fields that differ, named as in the manifest (Kubernetes field names), with their values as written there. */
const POD_FIELDS: readonly [keyof DesiredPod, string, (v: unknown) => unknown][] = [
  ['hostNetwork', 'spec.hostNetwork', (v) => v],
  ['restartPolicy', 'spec.restartPolicy', (v) => v],
  ['gracePeriodMs', 'spec.terminationGracePeriodSeconds', (v) => (typeof v === 'number' ? v / 1000 : v)],
  ['labels', 'metadata.labels', (v) => v],
];

function podChanges(prev: DesiredPod | undefined, next: DesiredPod): FieldChange[] {
  if (prev === undefined) return [];
  const out: FieldChange[] = [];
  for (const [k, name, shown] of POD_FIELDS) {
    if (JSON.stringify(prev[k]) !== JSON.stringify(next[k])) out.push(change(name, shown(prev[k]), shown(next[k])));
  }
  return out;
}

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
  state: 'creating' | 'created' | 'running' | 'exited' | 'removing';
  exitCode: number | null;
  pid: number | null;
}

export interface ObservedPodView {
  key: string;
  source: string;
  podHash: string;
  /** The desired pod as last applied (JSON of DesiredPod), for field-level diffs. */
  spec: string;
  containers: ObservedContainerView[];
}

/** What is known about each image reference the desired pods use. */
export interface ImageView {
  /** Manifest digest of the local image, when fully present. */
  local?: string;
  /** Top-level digest (index or manifest) of the local image. */
  localTop?: string;
  /** Top-level digest the registry reports now (only looked up for pullPolicy Always). */
  remote?: string;
}

export interface PruneScope {
  /** Observed pods whose source file is one of these or lies under one of these dirs. */
  sources: string[];
}

export interface PlanInput {
  desired: readonly DesiredPod[];
  observed: readonly ObservedPodView[];
  images: Readonly<Record<string, ImageView>>;
  prune?: PruneScope;
}

export type Step =
  | { kind: 'pull'; image: string; reason: string }
  | { kind: 'create-pod'; pod: DesiredPod }
  | { kind: 'update-pod'; pod: DesiredPod; changes: string[] }
  | { kind: 'start'; pod: DesiredPod; container: DesiredContainer; reason: string }
  | { kind: 'replace'; pod: DesiredPod; container: DesiredContainer; oldId: string; reason: string; changes: string[] }
  | { kind: 'remove'; podKey: string; id: string; name: string; graceMs: number; reason: string }
  | { kind: 'delete-pod'; podKey: string; graceMs: number; reason: string };

export interface Plan {
  steps: Step[];
  /** Desired objects that cannot be planned (e.g. pullPolicy Never and no image). */
  blocked: { key: string; reason: string }[];
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
  return scope.sources.some((s) => source === s || source.startsWith(s.endsWith('/') ? s : `${s}/`));
}

function shouldRestart(policy: RestartPolicy, exitCode: number | null): boolean {
  if (policy === 'Always') return true;
  if (policy === 'OnFailure') return exitCode !== 0;
  return false;
}

/** Top-level fields whose values differ between two container specs, for `diff`. */
export function changedFields(before: Record<string, unknown> | undefined, after: Record<string, unknown>): string[] {
  if (before === undefined) return [];
  const keys = new Set([...Object.keys(before), ...Object.keys(after)]);
  keys.delete('specHash');
  const out: string[] = [];
  for (const k of [...keys].sort()) {
    if (JSON.stringify(before[k]) !== JSON.stringify(after[k])) out.push(k);
  }
  return out;
}


export function plan(input: PlanInput): Plan {
  const steps: Step[] = [];
  const blocked: Plan['blocked'] = [];
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
    for (const c of pod.containers) {
      const view = input.images[c.image] ?? {};
      if (c.pullPolicy === 'Never' && view.local === undefined) {
        blocked.push({ key: `${pod.key}/${c.name}`, reason: `image ${c.image} is not present and imagePullPolicy is Never` });
        podBlocked = true;
      }
    }
    if (podBlocked) continue;
    if (obs === undefined) {
      podSteps.push({ kind: 'create-pod', pod });
    } else {
      const changes = podChanges(prev, pod);
      if (changes.length > 0 || obs.podHash !== pod.podHash || obs.source !== pod.source) {
        podSteps.push({ kind: 'update-pod', pod, changes: obs.source !== pod.source ? [...changes, `source ${obs.source} → ${pod.source}`] : changes });
      }
    }
    const observedContainers = obs?.containers ?? [];
    for (const c of pod.containers) {
      const mine = observedContainers.filter((o) => o.name === c.name);
      const current = mine.find((o) => o.specHash === c.specHash) ?? mine[mine.length - 1];
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
        podSteps.push({ kind: 'start', pod, container: c, reason: 'declared' });
        continue;
      }
      const prevC = prev?.containers.find((x) => x.name === c.name);
      if (current.specHash !== c.specHash) {
        const changes = changedFields(prevC as unknown as Record<string, unknown> | undefined, c as unknown as Record<string, unknown>);
        podSteps.push({ kind: 'replace', pod, container: c, oldId: current.id, reason: 'spec changed', changes });
      } else if (needPull && c.pullPolicy === 'Always' && (input.images[c.image]?.local !== undefined)) {
        podSteps.push({ kind: 'replace', pod, container: c, oldId: current.id, reason: 'image moved', changes: ['image digest'] });
      } else if (current.state === 'exited') {
        if (shouldRestart(pod.restartPolicy, current.exitCode)) {
          podSteps.push({ kind: 'replace', pod, container: c, oldId: current.id, reason: `exited with code ${current.exitCode ?? '?'}, restartPolicy ${pod.restartPolicy}`, changes: [] });
        }
      } else if (current.state === 'created') {
        podSteps.push({ kind: 'replace', pod, container: c, oldId: current.id, reason: 'created but never started', changes: [] });
      }
    }
    for (const o of observedContainers) {
      if (!pod.containers.some((c) => c.name === o.name)) {
        podSteps.push({ kind: 'remove', podKey: pod.key, id: o.id, name: o.name, graceMs: pod.gracePeriodMs, reason: 'no longer declared' });
      }
    }
  }
  if (input.prune !== undefined) {
    for (const obs of input.observed) {
      if (desiredKeys.has(obs.key) || !inScope(obs.source, input.prune)) continue;
      const grace = recordedGracePeriodMs(obs.spec);
      podSteps.push({ kind: 'delete-pod', podKey: obs.key, graceMs: grace, reason: `no longer declared in ${obs.source}` });
    }
  }
  for (const [image, reason] of [...pulls.entries()].sort(([a], [b]) => (a < b ? -1 : 1))) {
    steps.push({ kind: 'pull', image, reason });
  }
  steps.push(...podSteps);
  return { steps, blocked };
}

/** Pod-level fields that differ, named as in the manifest (Kubernetes field names). */
const POD_FIELDS = [
  ['hostNetwork', 'spec.hostNetwork'],
  ['restartPolicy', 'spec.restartPolicy'],
  ['gracePeriodMs', 'spec.terminationGracePeriodSeconds'],
  ['labels', 'metadata.labels'],
] as const;

function podChanges(prev: DesiredPod | undefined, next: DesiredPod): string[] {
  if (prev === undefined) return ['(unknown previous spec)'];
  const out: string[] = [];
  for (const [k, name] of POD_FIELDS) {
    if (JSON.stringify(prev[k]) !== JSON.stringify(next[k])) out.push(name);
  }
  return out;
}

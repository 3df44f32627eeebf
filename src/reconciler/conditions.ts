/**
 * Conditions and the one-word status of a pod, from what the controller saw in its last
 * reconcile. PURE (`import type` only): unit tests and `berth status` use it without a runtime.
 *
 * Conditions follow Kubernetes/Flux: Ready, Reconciling, Stalled, InvalidSpec, each with
 * status True/False, a CamelCase reason, a message and the generation it was computed for.
 */
import type { ErrorCode } from '../lib/errors.js';
import type { DesiredPod } from './desired.js';
import type { ObservedPodView, Plan } from './plan.js';

export type ConditionType = 'Ready' | 'Reconciling' | 'Stalled' | 'InvalidSpec';

export interface Condition {
  type: ConditionType;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  /** The berth error code of the failure the condition reports (README, Error codes), when it reports one. */
  code?: ErrorCode;
  observedGeneration: number;
}

export type PodPhase =
  | 'Running'
  | 'NotReady'
  | 'Pending'
  | 'ContainerCreating'
  | 'ImagePullBackOff'
  | 'CrashLoopBackOff'
  | 'InvalidSpec'
  | 'Paused'
  | 'Completed'
  | 'Error'
  | 'Conflict';

export interface PodSituation {
  desired: DesiredPod;
  /** Observation after this reconcile's steps. */
  observed: ObservedPodView | undefined;
  generation: number;
  /** Images the pod waits for; `error` once a pull failed (retried with backoff). */
  images: { image: string; error?: string; code?: ErrorCode }[];
  waiting: NonNullable<Plan['waiting']>;
  /** Steps that failed in this reconcile. */
  failed: { message: string; retryable: boolean; code?: ErrorCode }[];
  blocked: Plan['blocked'];
  /** Manifest problems of the file that declares the pod (last good objects kept). */
  invalid: string[];
  /** Another source owns the key; this declaration is not applied. */
  conflict?: string;
}

export interface PodVerdict {
  phase: PodPhase;
  conditions: Condition[];
  /** The reason the pod is not Ready, in one line (status's LAST ERROR column). */
  message: string;
  /** The code of the failure behind `message`, when a berth error is behind it. */
  code?: ErrorCode;
}

const cond = (type: ConditionType, on: boolean, reason: string, message: string, generation: number, code?: ErrorCode): Condition => ({
  type,
  status: on ? 'True' : 'False',
  reason,
  message,
  ...(code !== undefined ? { code } : {}),
  observedGeneration: generation,
});

/** The code a blocked reason was stored with (`ERR_…: …`, the controller's form), else ERR_PRECONDITION. */
function blockedCode(reason: string): ErrorCode {
  return (/^(ERR_[A-Z_]+): /.exec(reason)?.[1] as ErrorCode | undefined) ?? 'ERR_PRECONDITION';
}

/** Where manifests ask for an image: ` (wanted by default/web container app at /m/web.yaml:3; …)`. */
export function wantedBy(users: readonly { podKey: string; containers: readonly string[]; source: string; line: number }[]): string {
  if (users.length === 0) return '';
  const parts = users.map((u) => `${u.podKey} container${u.containers.length === 1 ? '' : 's'} ${u.containers.join(', ')} at ${u.source}:${u.line}`);
  return ` (wanted by ${parts.join('; ')})`;
}

/** The phase a stored set of conditions stands for (the inverse of podVerdict's Ready reason). */
export function phaseOf(conds: readonly { type: string; status: string; reason: string }[]): PodPhase | 'Unknown' {
  const ready = conds.find((c) => c.type === 'Ready');
  if (ready === undefined) return 'Unknown';
  if (conds.some((c) => c.type === 'InvalidSpec' && c.status === 'True')) return 'InvalidSpec';
  return ready.status === 'True' ? 'Running' : (ready.reason as PodPhase);
}

export function podVerdict(s: PodSituation): PodVerdict {
  const g = s.generation;
  const containers = s.observed?.containers ?? [];
  const declared = s.desired.containers.length;
  const running = s.desired.containers.filter((c) => containers.some((o) => o.name === c.name && o.state === 'running')).length;
  // A readiness probe that has not passed (berth up's prober) keeps a running container not ready.
  const readyCount = s.desired.containers.filter((c) => containers.some((o) => o.name === c.name && o.state === 'running' && o.ready !== false)).length;
  const exited = s.desired.containers.map((c) => containers.find((o) => o.name === c.name && o.state === 'exited'));
  const allExited = exited.every((o) => o !== undefined);
  // Every container runs or has exited for good (its restart policy does not restart that exit).
  const restarts = (code: number | null): boolean => s.desired.restartPolicy === 'Always' || (s.desired.restartPolicy === 'OnFailure' && code !== 0);
  const settled = s.desired.containers.every((c, i) => containers.some((o) => o.name === c.name && o.state === 'running') || (exited[i] !== undefined && !restarts(exited[i]?.exitCode ?? null)));
  const pulling = s.images.filter((i) => i.error === undefined);
  const pullFailed = s.images.filter((i) => i.error !== undefined);
  // Init containers yet to exit 0 with their current spec, while no app container has started.
  const started = s.desired.containers.some((c) => containers.some((o) => o.name === c.name));
  const initPending = started
    ? []
    : (s.desired.initContainers ?? []).filter((c) => {
        const cur = containers.filter((o) => o.name === c.name && o.specHash === c.specHash).pop();
        return !(cur?.state === 'exited' && cur.exitCode === 0);
      });

  let phase: PodPhase;
  let reason: string;
  let message: string;
  let stalled = false;
  let reconciling = false;
  let code: ErrorCode | undefined;
  if (s.conflict !== undefined) {
    phase = 'Conflict';
    reason = 'OwnedElsewhere';
    message = s.conflict;
    code = 'ERR_CONFLICT';
    stalled = true;
  } else if (s.desired.paused) {
    phase = 'Paused';
    reason = 'Paused';
    message = 'paused by the berth.dev/paused annotation';
  } else if (s.blocked.length > 0 && s.blocked.every((b) => b.failed === true)) {
    // The kubelet's Init:Error under restartPolicy Never: the pod has failed for good, nothing
    // more will run (regression init-failure-shown-pending).
    phase = 'Error';
    reason = 'InitContainerFailed';
    message = s.blocked.map((b) => `${b.key}: ${b.reason}`).join('; ');
    stalled = true;
  } else if (s.blocked.length > 0) {
    phase = 'Pending';
    reason = 'Blocked';
    message = s.blocked.map((b) => `${b.key}: ${b.reason}`).join('; ');
    code = blockedCode(s.blocked[0]?.reason ?? '');
    stalled = true;
  } else if (pullFailed.length > 0) {
    phase = 'ImagePullBackOff';
    reason = 'ImagePullBackOff';
    // Each failure names the containers of this pod that use the image and where the manifest says so.
    message = pullFailed
      .map((i) => `${i.error ?? ''}${wantedBy([{ podKey: s.desired.key, containers: s.desired.containers.filter((c) => c.image === i.image).map((c) => c.name), source: s.desired.source, line: s.desired.line }])}`)
      .join('; ');
    code = pullFailed.find((i) => i.code !== undefined)?.code;
    stalled = true;
  } else if (s.waiting.length > 0) {
    phase = 'CrashLoopBackOff';
    reason = 'CrashLoopBackOff';
    message = s.waiting.map((w) => `${w.key}: ${w.message}`).join('; ');
    stalled = true;
  } else if (s.failed.length > 0) {
    phase = 'Error';
    reason = s.failed.every((f) => !f.retryable) ? 'Failed' : 'RetryingAfterError';
    message = s.failed.map((f) => f.message).join('; ');
    code = s.failed.find((f) => f.code !== undefined)?.code;
    stalled = reason === 'Failed';
    reconciling = !stalled;
  } else if (pulling.length > 0) {
    phase = 'ContainerCreating';
    reason = 'Pulling';
    message = `pulling ${pulling.map((i) => i.image).join(', ')}`;
    reconciling = true;
  } else if (initPending.length > 0) {
    // The kubelet's Initialized=False (ContainersNotInitialized), in its words.
    phase = 'Pending';
    reason = 'ContainersNotInitialized';
    message = `containers with incomplete status: [${initPending.map((c) => c.name).join(' ')}]`;
    reconciling = true;
  } else if (running === declared && readyCount < declared) {
    phase = 'NotReady';
    reason = 'ContainersNotReady';
    // status.ts reads the count back for the READY column: keep this form.
    message = `${readyCount}/${declared} containers ready (readiness probe)`;
  } else if (running === declared) {
    phase = 'Running';
    reason = 'Running';
    message = '';
  } else if (running > 0 && settled) {
    // Some run, the others exited for good under the restart policy: the kubelet's phase is
    // Running, and kubectl's STATUS the first exited container's reason — Completed beside a
    // running one reads NotReady (the pod is not Ready), a failure Error. Nothing is left to do,
    // so it is not Reconciling (regression completed-beside-running-pending).
    const first = exited.find((o) => o !== undefined);
    if (first?.exitCode === 0) {
      phase = 'NotReady';
      reason = 'ContainersNotReady';
      // status.ts reads the count back for the READY column: keep this form.
      message = `${readyCount}/${declared} containers ready (${first.name} completed)`;
    } else {
      phase = 'Error';
      reason = 'ContainersFailed';
      message = exited.filter((o) => o !== undefined && o.exitCode !== 0).map((o) => `${o?.name ?? '?'} exited with code ${o?.exitCode ?? '?'}`).join('; ');
    }
  } else if (allExited && s.desired.restartPolicy !== 'Always') {
    const failed = exited.filter((o) => o?.exitCode !== 0);
    phase = failed.length === 0 ? 'Completed' : 'Error';
    reason = failed.length === 0 ? 'PodCompleted' : 'ContainersFailed';
    message = failed.map((o) => `${o?.name ?? '?'} exited with code ${o?.exitCode ?? '?'}`).join('; ');
  } else {
    phase = 'Pending';
    reason = 'ContainersNotReady';
    message = `${running}/${declared} containers running`;
    reconciling = true;
  }
  const invalid = s.invalid.length > 0;
  if (invalid && (phase === 'Running' || phase === 'Pending')) {
    // The last good objects keep running; the status still says the file needs fixing.
    phase = 'InvalidSpec';
  }
  const ready = readyCount === declared && !s.desired.paused && s.conflict === undefined;
  const verdictCode = phase === 'InvalidSpec' ? 'ERR_INVALID_MANIFEST' : code;
  return {
    phase,
    message: invalid && message === '' ? s.invalid.join('; ') : message,
    ...(verdictCode !== undefined ? { code: verdictCode } : {}),
    conditions: [
      // Not ready: the reason is the phase, so `berth status` reads the phase back from the row.
      cond('Ready', ready, ready ? 'Running' : phase, ready ? `${running}/${declared} containers running` : message, g, ready ? undefined : code),
      cond('Reconciling', reconciling, reconciling ? reason : 'Settled', reconciling ? message : '', g, reconciling ? code : undefined),
      cond('Stalled', stalled, stalled ? reason : 'Progressing', stalled ? message : '', g, stalled ? code : undefined),
      cond('InvalidSpec', invalid, invalid ? 'ManifestInvalid' : 'Valid', invalid ? s.invalid.join('; ') : '', g, invalid ? 'ERR_INVALID_MANIFEST' : undefined),
    ],
  };
}

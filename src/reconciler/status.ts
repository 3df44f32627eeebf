/**
 * `berth status`: one row per pod from recorded state — containers, restart bookkeeping and
 * the conditions the controller last wrote. Pure (`import type` only); its JSON shape is
 * schemas/status.json.
 */
import type { ConditionRecord, ObservedPod, RestartRecord } from '../runtime/index.js';
import { phaseOf } from './conditions.js';
import { lastAppliedPod } from './plan.js';

export interface ContainerStatus {
  name: string;
  id: string | null;
  state: string;
  pid: number | null;
  exitCode: number | null;
  reason: string | null;
  restarts: number;
  startedAt: string | null;
  finishedAt: string | null;
  /** When a container in CrashLoopBackOff is tried again. */
  nextRestartAt: string | null;
}

export interface PodStatus {
  key: string;
  namespace: string;
  name: string;
  kind: string;
  source: string;
  /** Line of the pod's document in `source` (absent for a pod recorded before it was kept). */
  line?: number;
  /** metadata.labels as applied. */
  labels?: Record<string, string>;
  status: string;
  ready: string;
  restarts: number;
  createdAt: string;
  generation: number;
  lastError: string;
  /** The berth error code behind lastError (README, Error codes); null when none is (or no error). */
  lastErrorCode: string | null;
  nextTryAt: string | null;
  paused: boolean;
  /** The pod's IP on berth's bridge; null with hostNetwork or while it has no sandbox. */
  ip: string | null;
  hostNetwork: boolean;
  /** While berth deletes the pod: when its grace period ends (Kubernetes' deletionTimestamp); else null. */
  deletionTimestamp: string | null;
  conditions: {
    type: string;
    status: string;
    reason: string;
    message: string;
    /** Present when the condition reports a failure with a berth error code. */
    code?: string;
    observedGeneration: number;
    lastTransitionTime: string;
  }[];
  containers: ContainerStatus[];
  /** spec.initContainers, in order (empty when the pod has none). */
  initContainers: ContainerStatus[];
}

export interface StatusReport {
  apiVersion: 'berth.dev/v1';
  kind: 'Status';
  generatedAt: string;
  /** The daemon that answered, or null when read in-process (no `berth up` running). */
  daemon: { pid: number; pending: number; active: number; resyncs: number } | null;
  pods: PodStatus[];
}

const iso = (ms: number | null | undefined): string | null => (ms === null || ms === undefined ? null : new Date(ms).toISOString());

export function buildStatus(o: {
  pods: readonly ObservedPod[];
  restarts: readonly RestartRecord[];
  conditions: readonly ConditionRecord[];
  now: number;
  daemon: StatusReport['daemon'];
}): StatusReport {
  const pods: PodStatus[] = o.pods.map((p) => {
    const desired = lastAppliedPod(p.spec);
    const conds = o.conditions.filter((c) => c.key === `pod/${p.key}`);
    const restarts = o.restarts.filter((r) => r.podKey === p.key);
    const containerStatus = (name: string): ContainerStatus => {
      const c = p.containers.filter((x) => x.name === name).pop();
      const r = restarts.find((x) => x.name === name);
      const exited = c?.state === 'exited';
      const due = exited && r !== undefined && r.lastFinishedAt !== null ? r.lastFinishedAt + r.backoffMs : null;
      return {
        name,
        id: c?.id ?? null,
        state: c?.state ?? 'waiting',
        pid: c?.state === 'running' || c?.state === 'paused' ? c.pid : null,
        exitCode: c?.exitCode ?? r?.lastExitCode ?? null,
        reason: c?.reason ?? r?.lastReason ?? null,
        restarts: r?.restarts ?? 0,
        startedAt: iso(c?.startedAt),
        finishedAt: iso(c?.finishedAt ?? r?.lastFinishedAt),
        nextRestartAt: due !== null && due > o.now ? iso(due) : null,
      };
    };
    const initNames = new Set((desired?.initContainers ?? []).map((c) => c.name));
    const names = desired?.containers.map((c) => c.name) ?? [...new Set(p.containers.map((c) => c.name).filter((n) => !initNames.has(n)))];
    const containers = names.map(containerStatus);
    const initContainers = [...initNames].map(containerStatus);
    const running = containers.filter((c) => c.state === 'running').length;
    let status: string = phaseOf(conds);
    // Rows are newer than conditions when a container exited after the last reconcile.
    if (status === 'Unknown') status = running === containers.length && containers.length > 0 ? 'Running' : 'Pending';
    let restartCount = containers.reduce((n, c) => n + c.restarts, 0);
    // kubectl's printPod: while an init container has not completed, it decides STATUS and
    // RESTARTS (regression init-status-hidden). berth's own verdicts about the whole pod stay.
    const init = OWN_VERDICTS.has(status) ? undefined : initStatus(initContainers, containers, status);
    if (init !== undefined) {
      status = init.status;
      restartCount = init.restarts;
    }
    // kubectl's printPod: a pod being deleted is Terminating until it is gone, unless it had
    // already ended (Succeeded, Failed) (regression terminating-status-missing).
    const deleting = p.deletionTimestamp ?? null;
    if (deleting !== null && !['Succeeded', 'Failed'].includes(podPhase({ status, containers, initContainers }, desired?.restartPolicy ?? null))) status = 'Terminating';
    const ready = conds.find((c) => c.type === 'Ready');
    const probed = ready?.status === 'False' && ready.reason === 'NotReady' ? /^(\d+)\/\d+ containers ready/.exec(ready.message)?.[1] : undefined;
    const probeReady = probed !== undefined ? Math.min(Number(probed), running) : undefined;
    const stalled = conds.find((c) => c.type === 'Stalled' && c.status === 'True');
    const invalid = conds.find((c) => c.type === 'InvalidSpec' && c.status === 'True');
    const next = [...initContainers, ...containers].map((c) => c.nextRestartAt).filter((x): x is string => x !== null).sort()[0] ?? null;
    return {
      key: p.key,
      namespace: p.namespace,
      name: p.name,
      kind: desired?.kind ?? 'Pod',
      source: p.source,
      ...(desired?.line !== undefined ? { line: desired.line } : {}),
      ...(desired?.labels !== undefined ? { labels: desired.labels } : {}),
      status,
      // kubectl's READY counts containers that are ready, not running: while a readiness probe has
      // not passed, the NotReady verdict (conditions.ts) carries the count of those that have
      // (regression ready-counts-running).
      ready: `${probeReady ?? running}/${containers.length}`,
      restarts: restartCount,
      createdAt: iso(p.createdAt) ?? '',
      generation: p.generation ?? 1,
      lastError: stalled?.message ?? invalid?.message ?? (ready?.status === 'False' ? ready.message : ''),
      // The code of the condition lastError is taken from.
      lastErrorCode: (stalled !== undefined ? stalled.code : invalid !== undefined ? invalid.code : ready?.status === 'False' ? ready.code : null) ?? null,
      nextTryAt: next,
      paused: desired?.paused === true,
      ip: desired?.hostNetwork === true ? null : (p.sandbox?.ip ?? null),
      hostNetwork: desired?.hostNetwork === true,
      deletionTimestamp: iso(deleting),
      conditions: conds.map((c) => ({
        type: c.type,
        status: c.status,
        reason: c.reason,
        message: c.message,
        ...(typeof c.code === 'string' ? { code: c.code } : {}),
        observedGeneration: c.observedGeneration,
        lastTransitionTime: iso(c.lastTransitionTime) ?? '',
      })),
      containers,
      initContainers,
    };
  });
  return { apiVersion: 'berth.dev/v1', kind: 'Status', generatedAt: new Date(o.now).toISOString(), daemon: o.daemon, pods };
}

/** Statuses about the pod as a whole that berth keeps over what its init containers say. */
const OWN_VERDICTS: ReadonlySet<string> = new Set(['Paused', 'Conflict', 'InvalidSpec']);

/**
 * kubectl's printPod for init containers: the first one that has not exited 0 decides — Init:<reason>
 * while it waits out a back-off or after a failed exit, Init:i/N while it runs or is still to run;
 * RESTARTS counts the init containers up to it. Undefined when all have completed, or once an app
 * container has a row (the pod got past them; its init rows may be gone). `podStatus`: the stored
 * verdict, which alone knows that an image pull is backing off.
 */
export function initStatus(inits: readonly ContainerStatus[], apps: readonly ContainerStatus[], podStatus: string): { status: string; restarts: number } | undefined {
  if (apps.some((c) => c.id !== null)) return undefined;
  let restarts = 0;
  for (const [i, c] of inits.entries()) {
    restarts += c.restarts;
    if (c.state === 'exited' && c.exitCode === 0) continue;
    let status: string;
    if (c.state === 'exited' && c.nextRestartAt !== null) status = 'Init:CrashLoopBackOff';
    // The CRI runtimes' terminated reasons: OOMKilled, else Error for any non-zero exit (a signal's too).
    else if (c.state === 'exited') status = c.reason === 'OOMKilled' ? 'Init:OOMKilled' : c.reason === null ? `Init:ExitCode:${c.exitCode ?? 0}` : 'Init:Error';
    else if (c.id === null && podStatus === 'ImagePullBackOff') status = 'Init:ImagePullBackOff';
    else status = `Init:${i}/${inits.length}`;
    return { status, restarts };
  }
  return undefined;
}

/** Kubernetes' pod phase. */
export type PodPhaseName = 'Pending' | 'Running' | 'Succeeded' | 'Failed' | 'Unknown';

/**
 * The kubelet's getPhase over the containers as status reports them: an init container that has
 * not completed keeps the pod Pending (Failed under restartPolicy Never once one failed); then the
 * app containers decide — any still to start: Pending; one running: Running; all stopped: Running
 * under Always, Succeeded when all exited 0, Failed under Never, else Running (OnFailure restarts)
 * (regression init-status-hidden).
 */
export function podPhase(s: Pick<PodStatus, 'status' | 'containers' | 'initContainers'>, restartPolicy: string | null): PodPhaseName {
  if (s.status === 'Unknown') return 'Unknown';
  const alive = (c: ContainerStatus): boolean => c.state === 'running' || c.state === 'paused' || c.state === 'removing';
  // Exited, or waiting to run again after an exit (the kubelet's Waiting with a last termination).
  const stopped = (c: ContainerStatus): boolean => c.state === 'exited' || (!alive(c) && c.restarts > 0);
  let pendingInit = 0;
  let failedInit = 0;
  for (const c of s.initContainers) {
    if (c.state === 'exited' && c.exitCode === 0) continue;
    if (stopped(c) && c.exitCode !== 0) failedInit++;
    else pendingInit++;
  }
  // Past its init containers (an app container started) the pod does not go back to Pending for them.
  const started = s.containers.some((c) => c.id !== null);
  if (!started && failedInit > 0 && restartPolicy === 'Never') return 'Failed';
  const running = s.containers.filter(alive).length;
  const done = s.containers.filter(stopped);
  const waiting = s.containers.length - running - done.length;
  if ((!started && (pendingInit > 0 || failedInit > 0)) || waiting > 0) return 'Pending';
  if (running > 0) return 'Running';
  if (done.length === 0) return 'Pending';
  if (restartPolicy === 'Always') return 'Running';
  if (done.every((c) => c.state === 'exited' && c.exitCode === 0)) return 'Succeeded';
  return restartPolicy === 'Never' ? 'Failed' : 'Running';
}

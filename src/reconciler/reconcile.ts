import { existsSync } from 'node:fs';
import { BerthError, messageOf } from '../lib/errors.js';
import type { Logger } from '../lib/log.js';
import type { ObservedPod, Runtime } from '../runtime/index.js';
import type { DesiredPod } from './desired.js';
import { plan, type ImageView, type ObservedPodView, type Plan, type PruneScope, type Step } from './plan.js';

const RESOLVE_TIMEOUT_MS = 10_000;

export interface ReconcileOptions {
  desired: readonly DesiredPod[];
  /** Roll back interrupted operations while observing (apply, up); false for diff. */
  repair?: boolean;
  prune?: PruneScope;
  /** Ask the registry about images with pullPolicy Always (apply and diff both do). */
  resolveRemote?: boolean;
  signal?: AbortSignal;
}

export interface ReconcileResult {
  plan: Plan;
  /** Steps that failed, with the error; the rest were carried out. */
  failed: { step: Step; error: BerthError }[];
}

function toView(p: ObservedPod): ObservedPodView {
  return {
    key: p.key,
    source: p.source,
    podHash: p.podHash,
    spec: p.spec,
    containers: p.containers.map((c) => ({
      id: c.id,
      name: c.name,
      specHash: c.specHash,
      imageRef: c.imageRef,
      imageDigest: c.imageDigest,
      state: c.state,
      exitCode: c.exitCode,
      pid: c.pid,
    })),
  };
}

/**
 * Observes the runtime and computes the plan. Shared by `diff` and `apply`, so the
 * printed plan is exactly what apply executes.
 */
export async function computePlan(rt: Runtime, o: ReconcileOptions, log: Logger): Promise<Plan> {
  const observed = (await rt.observe({ repair: o.repair !== false })).map(toView);
  const images: Record<string, ImageView> = {};
  for (const pod of o.desired) {
    for (const c of pod.containers) {
      if (images[c.image] !== undefined) continue;
      const local = rt.localImage(c.image);
      const view: ImageView = {};
      if (local !== undefined) {
        view.local = local.digest;
        view.localTop = local.indexDigest ?? local.digest;
      }
      // One container with pullPolicy Always is enough to ask the registry for this image.
      const anyAlways = o.desired.some((p) => p.containers.some((x) => x.image === c.image && x.pullPolicy === 'Always'));
      if (o.resolveRemote !== false && anyAlways && local !== undefined) {
        try {
          // Bounded: the answer only decides whether a running container is replaced, and the
          // plan is computed under the state lock, so a silent registry must not hold it long.
          view.remote = await rt.resolveImage(c.image, AbortSignal.timeout(RESOLVE_TIMEOUT_MS));
        } catch (err) {
          // An unreachable registry must not stop running workloads: keep the local image.
          log.warn({ image: c.image, err: messageOf(err) }, 'cannot resolve image, keeping the local one');
        }
      }
      images[c.image] = view;
    }
  }
  return plan({ desired: o.desired, observed, images, ...(o.prune !== undefined ? { prune: o.prune } : {}) });
}

/**
 * Executes a plan. Pulls run first; a pod whose image failed to pull is skipped (its
 * running containers stay as they are). Each step's failure is recorded and the rest go on.
 */
export async function executePlan(rt: Runtime, p: Plan, log: Logger, signal?: AbortSignal): Promise<ReconcileResult> {
  const failed: ReconcileResult['failed'] = [];
  const failedImages = new Set<string>();
  const failedPods = new Set<string>();
  const fail = (step: Step, err: unknown): void => {
    const e = err instanceof BerthError ? err : new BerthError('ERR_INTERNAL', messageOf(err), { cause: err });
    failed.push({ step, error: e });
    // The caller reports failures to the user (CLI stderr, up's output); the log keeps detail.
    log.debug({ step: step.kind, code: e.code, err: e.message }, 'step failed');
  };
  for (const step of p.steps) {
    if (signal?.aborted) break;
    try {
      switch (step.kind) {
        case 'pull':
          await rt.pullImage(step.image, signal);
          rt.state.addEvent(step.image, 'Pulled', `pulled ${step.image}`);
          break;
        case 'create-pod':
        case 'update-pod':
          recordPod(rt, step.pod);
          break;
        case 'start':
        case 'replace': {
          if (failedPods.has(step.pod.key)) break;
          // The pull's own failure is the one reported; the container simply waits for it.
          if (failedImages.has(step.container.image)) break;
          const image = rt.localImage(step.container.image);
          if (image === undefined) throw new BerthError('ERR_NOT_FOUND', `start ${step.pod.key}/${step.container.name}: image ${step.container.image} is not present`);
          const c = step.container;
          const run = {
            ...(c.command !== undefined ? { command: c.command } : {}),
            ...(c.args !== undefined ? { args: c.args } : {}),
            ...(c.workingDir !== undefined ? { workingDir: c.workingDir } : {}),
            ...(c.memoryBytes !== undefined ? { memoryBytes: c.memoryBytes } : {}),
            ...(c.cpuMillis !== undefined ? { cpuMillis: c.cpuMillis } : {}),
            env: c.env,
            hostNetwork: step.pod.hostNetwork,
            hostname: step.pod.name,
            hostFiles: step.pod.hostNetwork ? ['/etc/hosts', '/etc/resolv.conf'].filter((f) => existsSync(f)) : [],
          };
          // A new spec that cannot be generated must not cost the running container its life.
          rt.checkRunSpec(image, run);
          if (step.kind === 'replace') await rt.destroyContainer(step.oldId, step.pod.gracePeriodMs);
          await rt.runContainer({ podKey: step.pod.key, name: c.name, specHash: c.specHash, image, run });
          // The record is the last-applied spec: a broken file falls back to it (rule M5),
          // so it must follow container edits, not only pod-level ones.
          recordPod(rt, step.pod);
          break;
        }
        case 'remove':
          await rt.destroyContainer(step.id, step.graceMs);
          break;
        case 'delete-pod': {
          const containers = rt.state.listContainers(step.podKey);
          // Stop all containers of the pod in parallel: each gets the full grace period.
          await Promise.all(containers.map((c) => rt.destroyContainer(c.id, step.graceMs)));
          await rt.forgetPod(step.podKey);
          rt.state.addEvent(step.podKey, 'Pruned', `pod ${step.podKey} deleted (${step.reason})`);
          break;
        }
      }
    } catch (err) {
      if (step.kind === 'pull') failedImages.add(step.image);
      if (step.kind === 'create-pod') failedPods.add(step.pod.key);
      fail(step, err);
    }
  }
  return { plan: p, failed };
}

function recordPod(rt: Runtime, pod: DesiredPod): void {
  rt.recordPod({
    key: pod.key,
    namespace: pod.namespace,
    name: pod.name,
    source: pod.source,
    podHash: pod.podHash,
    spec: JSON.stringify(pod),
    createdAt: Date.now(),
  });
}

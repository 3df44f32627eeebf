import * as os from 'node:os';
import { BerthError, messageOf } from '../lib/errors.js';
import type { Logger } from '../lib/log.js';
import { cpuShares, oomScoreAdj } from './qos.js';
import type { EnvEntry, ObservedPod, PodVolume, RestartRecord, Runtime, StopHooks } from '../runtime/index.js';

/** The kubelet's minimumGracePeriodInSeconds: a pod's container gets at least this long after its stop signal. */
const MIN_STOP_WINDOW_MS = 2_000;
import type { DesiredContainer, DesiredPod } from './desired.js';
import { lastAppliedPod, plan, type ImageView, type ObservedPodView, type Plan, type PruneScope, type Step } from './plan.js';

/**
 * The bridge between the pure planner and the runtime façade: observation → views,
 * image views, and the execution of one step. Shared by `diff` (plan only) and the
 * controller (plan per key, then execute), so what diff prints is what apply does.
 */

const RESOLVE_TIMEOUT_MS = 10_000;

export interface PlanOptions {
  desired: readonly DesiredPod[];
  /** Roll back interrupted operations while observing (apply, up); false for diff. */
  repair?: boolean;
  prune?: PruneScope;
  /** Ask the registry about images with pullPolicy Always (apply and diff both do). */
  resolveRemote?: boolean;
  now?: number;
  /**
   * Plan from the recorded rows instead of asking runc: the daemon, whose exit watch keeps
   * them current, answers `diff` without starting a process per container.
   */
  fromRows?: boolean;
}

export function toView(p: ObservedPod, restarts: readonly RestartRecord[] = []): ObservedPodView {
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
      attempt: c.attempt,
      startedAt: c.startedAt,
      finishedAt: c.finishedAt,
    })),
    ...(p.sandbox !== undefined ? { sandbox: { hash: p.sandbox.hash, ready: p.sandbox.ready, ip: p.sandbox.ip } } : {}),
    restarts: restarts.map((r) => ({ name: r.name, restarts: r.restarts, nextAttempt: r.nextAttempt, backoffMs: r.backoffMs })),
  };
}

/** Remote digests asked recently, so a burst of keys asks the registry once per image. */
export class ResolveCache {
  private readonly entries = new Map<string, { digest: string | undefined; at: number }>();
  constructor(private readonly ttlMs = 10_000) {}
  get(ref: string, now: number): { digest: string | undefined } | undefined {
    const e = this.entries.get(ref);
    return e !== undefined && now - e.at < this.ttlMs ? e : undefined;
  }
  set(ref: string, digest: string | undefined, now: number): void {
    this.entries.set(ref, { digest, at: now });
  }
}

/** What is known about each image the desired pods use: local digests, and the registry's for Always. */
export async function imageViews(
  rt: Runtime,
  desired: readonly DesiredPod[],
  o: { resolveRemote?: boolean; log: Logger; cache?: ResolveCache; signal?: AbortSignal },
): Promise<Record<string, ImageView>> {
  const images: Record<string, ImageView> = {};
  for (const pod of desired) {
    for (const c of [...(pod.initContainers ?? []), ...pod.containers]) {
      if (images[c.image] !== undefined) continue;
      const local = rt.localImage(c.image);
      const view: ImageView = {};
      if (local !== undefined) {
        view.local = local.digest;
        view.localTop = local.indexDigest ?? local.digest;
        const cfg = rt.imageConfig(local.digest)?.config;
        if (cfg?.Entrypoint !== undefined && cfg.Entrypoint !== null) view.entrypoint = [...cfg.Entrypoint];
        if (cfg?.Cmd !== undefined && cfg.Cmd !== null) view.cmd = [...cfg.Cmd];
      }
      // One container with pullPolicy Always is enough to ask the registry for this image.
      const anyAlways = desired.some((p) => [...(p.initContainers ?? []), ...p.containers].some((x) => x.image === c.image && x.pullPolicy === 'Always'));
      if (o.resolveRemote !== false && anyAlways && local !== undefined) {
        const cached = o.cache?.get(c.image, Date.now());
        if (cached !== undefined) {
          if (cached.digest !== undefined) view.remote = cached.digest;
        } else {
          try {
            // Bounded: the answer only decides whether a running container is replaced, so
            // a silent registry must not hold the key long.
            const signals = [AbortSignal.timeout(RESOLVE_TIMEOUT_MS), ...(o.signal !== undefined ? [o.signal] : [])];
            // With the pull secrets of the pods that use it, as the pull would be (a private image
            // reachable only through them was otherwise never checked: a 401 each time).
            const secrets = new Map<string, { secret: string; configJson: string }>();
            for (const p of desired) if ([...(p.initContainers ?? []), ...p.containers].some((x) => x.image === c.image)) for (const s of p.pullCredentials ?? []) secrets.set(s.secret, s);
            view.remote = await rt.resolveImage(c.image, AbortSignal.any(signals), [...secrets.values()]);
            o.cache?.set(c.image, view.remote, Date.now());
          } catch (err) {
            // An unreachable registry must not stop running workloads: keep the local image.
            o.log.warn({ image: c.image, err: messageOf(err) }, 'cannot resolve image, keeping the local one');
            o.cache?.set(c.image, undefined, Date.now());
          }
        }
      }
      images[c.image] = view;
    }
  }
  return images;
}

/**
 * Observes the runtime and computes the whole-world plan: `berth diff` (read-only,
 * repair false). The controller plans per key with the same planner.
 */
export async function computePlan(rt: Runtime, o: PlanOptions, log: Logger): Promise<Plan> {
  const restarts = rt.listRestarts();
  const pods = o.fromRows === true
    ? rt.recordedPods().map((p) => ({ ...p, containers: p.containers.filter((c) => c.state !== 'creating' && c.state !== 'removing') }))
    : await rt.observe({ repair: o.repair !== false });
  const observed = pods.map((p) => toView(p, restarts.filter((r) => r.podKey === p.key)));
  const images = await imageViews(rt, o.desired, { resolveRemote: o.resolveRemote !== false, log });
  return plan({
    desired: o.desired,
    observed,
    images,
    now: o.now ?? Date.now(),
    ...(o.prune !== undefined ? { prune: o.prune } : {}),
  });
}

/**
 * Carries out one step other than `pull` (the controller runs pulls as image keys).
 * Throws a BerthError; what a failure leaves: a failed start is rolled back by the
 * runtime (no half-made container), a failed replace may leave the old one removed.
 */
export async function executeStep(rt: Runtime, step: Exclude<Step, { kind: 'pull' }>): Promise<void> {
  switch (step.kind) {
    case 'create-pod':
      recordPod(rt, step.pod);
      rt.addEvent(`pod/${step.pod.key}`, 'Created', `pod ${step.pod.key} from ${step.pod.source}:${step.pod.line}`);
      return;
    case 'update-pod':
      recordPod(rt, step.pod);
      return;
    case 'start':
    case 'replace': {
      const image = rt.localImage(step.container.image);
      if (image === undefined) throw new BerthError('ERR_NOT_FOUND', `start ${step.pod.key}/${step.container.name}: image ${step.container.image} is not present`);
      const c = step.container;
      const run = {
        ...(c.command !== undefined ? { command: c.command } : {}),
        ...(c.args !== undefined ? { args: c.args } : {}),
        ...(c.workingDir !== undefined ? { workingDir: c.workingDir } : {}),
        ...(c.memoryBytes !== undefined ? { memoryBytes: c.memoryBytes } : {}),
        ...(c.cpuMillis !== undefined ? { cpuMillis: c.cpuMillis } : {}),
        // The kubelet's CPU weight and OOM score for the pod's QoS class (regression requests-ignored).
        cpuShares: cpuShares(c),
        oomScoreAdj: oomScoreAdj(step.pod, c, os.totalmem()),
        ...(c.security !== undefined ? { security: c.security } : {}),
        env: runtimeEnv(rt, step.pod, c),
        pod: { hostNetwork: step.pod.hostNetwork, shareProcessNamespace: step.pod.sandbox?.shareProcessNamespace ?? false },
        ...(step.pod.volumes !== undefined ? { volumes: { pod: podVolumes(step.pod), mounts: (c.volumeMounts ?? []).map((m) => ({ volume: m.name, mountPath: m.mountPath, readOnly: m.readOnly, ...(m.subPath !== undefined ? { subPath: m.subPath } : {}) })) } } : {}),
      };
      if (step.pod.volumes !== undefined) await rt.syncVolumes(step.pod.key, podVolumes(step.pod));
      // A new spec that cannot be generated must not cost the running container its life.
      rt.checkRunSpec(image, run);
      // The old container stops while the new one is prepared; the new one starts after it is gone.
      const stopping = step.kind === 'replace' ? rt.destroyContainer(step.oldId, step.pod.gracePeriodMs, hooksOf(rt, step.pod.key, c.name)) : undefined;
      // Handled at once: a stop that fails while the new container is still being created
      // must not be an unhandled rejection (runContainer sees it when it awaits startAfter).
      void stopping?.catch(() => undefined);
      try {
        await rt.runContainer({
          podKey: step.pod.key,
          name: c.name,
          specHash: c.specHash,
          attempt: step.attempt,
          image,
          run,
          ...(c.lifecycle?.postStart !== undefined ? { postStart: c.lifecycle.postStart, stop: { graceMs: step.pod.gracePeriodMs, minWindowMs: MIN_STOP_WINDOW_MS, ...(c.lifecycle.preStop !== undefined ? { preStop: c.lifecycle.preStop } : {}) } } : {}),
          ...(stopping !== undefined ? { startAfter: stopping } : {}),
        });
      } catch (err) {
        // A restart that could not start its process (runc's StartError: the row stays exited
        // with code 128) still counts, and its back-off grows, as the kubelet counts it —
        // else each retry restarted at once (regression start-failure-ignores-restart-policy).
        if (step.kind === 'replace' && step.restart !== undefined) rt.updateRestart(step.pod.key, c.name, { restarts: step.restart.count, backoffMs: step.restart.nextBackoffMs });
        throw err;
      } finally {
        // Never leave the stop running unobserved (a failed create still waits for it).
        await stopping?.catch(() => undefined);
      }
      if (c.envWarning !== undefined) rt.addEvent(`pod/${step.pod.key}`, 'InvalidEnvironmentVariableNames', `container ${c.name}: ${c.envWarning}`, { type: 'Warning' });
      if (step.kind === 'replace' && step.restart !== undefined) {
        rt.updateRestart(step.pod.key, c.name, { restarts: step.restart.count, backoffMs: step.restart.nextBackoffMs });
        rt.addEvent(`pod/${step.pod.key}`, 'Restarted', `container ${c.name} restarted (restart ${step.restart.count}; ${step.reason})`);
      } else if (step.kind === 'replace') {
        // A new spec forgives the old one's crashes (the kubelet keys backoff by spec hash too).
        rt.updateRestart(step.pod.key, c.name, { backoffMs: 0 });
      }
      // The record is the last-applied spec: a broken file falls back to it (rule M5),
      // so it must follow container edits, not only pod-level ones.
      recordPod(rt, step.pod);
      return;
    }
    case 'remove':
      await rt.destroyContainer(step.id, step.graceMs, hooksOf(rt, step.podKey, step.name));
      return;
    case 'kill':
      await rt.killContainer(step.id, step.graceMs, step.reason, hooksOf(rt, step.podKey, step.name));
      return;
    case 'sandbox': {
      const pod = step.pod;
      const sb = pod.sandbox;
      if (sb === undefined) throw new BerthError('ERR_INTERNAL', `sandbox ${pod.key}: the pod has hostNetwork`);
      // The containers live in the old sandbox's namespaces: they stop first, in parallel, each with the full grace period.
      const names = new Map(rt.listContainers(pod.key).map((c) => [c.id, c.name]));
      await Promise.all(step.removeIds.map((id) => rt.destroyContainer(id, pod.gracePeriodMs, hooksOf(rt, pod.key, names.get(id) ?? ''))));
      await rt.createSandbox(
        {
          podKey: pod.key,
          namespace: pod.namespace,
          name: pod.name,
          hash: sb.hash,
          hostname: sb.hostname,
          ...(sb.subdomain !== undefined ? { subdomain: sb.subdomain } : {}),
          dns: sb.dns,
          ports: sb.ports,
        },
        sb.shareProcessNamespace,
      );
      return;
    }
    case 'remove-sandbox':
      await rt.removeSandbox(step.podKey);
      return;
    case 'delete-pod': {
      // Before anything stops: status and describe read the pod as Terminating meanwhile.
      rt.markPodDeleting(step.podKey, step.graceMs);
      const containers = rt.listContainers(step.podKey);
      // Stop all containers of the pod in parallel: each gets the full grace period.
      await Promise.all(containers.map((c) => rt.destroyContainer(c.id, step.graceMs, hooksOf(rt, step.podKey, c.name))));
      await rt.removeSandbox(step.podKey);
      await rt.forgetPod(step.podKey);
      rt.addEvent(`pod/${step.podKey}`, 'Pruned', `pod ${step.podKey} deleted (${step.reason})`);
      return;
    }
  }
}

/** The preStop hook of a container as its pod was last applied (the one that runs now). */
function hooksOf(rt: Runtime, podKey: string, name: string): StopHooks {
  const rec = rt.getPod(podKey);
  const pod = rec === undefined ? undefined : lastAppliedPod(rec.spec);
  const preStop = [...(pod?.initContainers ?? []), ...(pod?.containers ?? [])].find((c) => c.name === name)?.lifecycle?.preStop;
  return { ...(preStop !== undefined ? { preStop } : {}), hostNetwork: pod?.hostNetwork ?? false, minWindowMs: MIN_STOP_WINDOW_MS };
}

/**
 * The pod's memory limit as the kubelet's pod cgroup has it: when every container has a memory
 * limit, the larger of the app containers' sum and the largest init container's; otherwise none.
 */
export function podMemoryLimit(pod: DesiredPod): number | undefined {
  const apps = pod.containers.map((c) => c.memoryBytes);
  const inits = (pod.initContainers ?? []).map((c) => c.memoryBytes);
  if ([...apps, ...inits].some((b) => b === undefined)) return undefined;
  const sum = apps.reduce((a: number, b) => a + (b ?? 0), 0);
  return Math.max(sum, ...inits.map((b) => b ?? 0));
}

/** The pod's volumes as the runtime makes them, with the projected files resolution found. */
export function podVolumes(pod: DesiredPod): PodVolume[] {
  return (pod.volumes ?? []).map((v): PodVolume => {
    if ('emptyDir' in v) {
      const podLimit = v.emptyDir.medium === 'Memory' ? podMemoryLimit(pod) : undefined;
      return { name: v.name, kind: 'emptyDir', medium: v.emptyDir.medium, ...(v.emptyDir.sizeLimitBytes !== undefined ? { sizeLimitBytes: v.emptyDir.sizeLimitBytes } : {}), ...(podLimit !== undefined ? { podMemoryLimitBytes: podLimit } : {}) };
    }
    if ('hostPath' in v) return { name: v.name, kind: 'hostPath', path: v.hostPath.path, type: v.hostPath.type };
    if ('persistentVolumeClaim' in v) return { name: v.name, kind: 'named', claim: v.persistentVolumeClaim.claimName, readOnly: v.persistentVolumeClaim.readOnly };
    const p = pod.projections?.find((x) => x.volume === v.name);
    return { name: v.name, kind: 'projected', secret: 'secret' in v, files: p?.files ?? [], hash: p?.hash ?? '', ...(p?.failed === true ? { failed: true } : {}) };
  });
}

/** The container's env with the downward-API fields only the host knows filled in (status.podIP…). */
function runtimeEnv(rt: Runtime, pod: DesiredPod, c: DesiredContainer): EnvEntry[] {
  const flags = (e: DesiredContainer['env'][number]): { verbatim?: boolean; overridden?: boolean } => ({ ...(e.verbatim === true ? { verbatim: true } : {}), ...(e.overridden === true ? { overridden: true } : {}) });
  if (!c.env.some((e) => e.from !== undefined)) return c.env.map((e) => ({ name: e.name, value: e.value, ...flags(e) }));
  const hostIP = Object.values(os.networkInterfaces()).flat().find((a) => a !== undefined && a.family === 'IPv4' && !a.internal)?.address ?? '127.0.0.1';
  const podIP = pod.hostNetwork ? hostIP : (rt.podIP(pod.key) ?? '');
  const fields: Record<string, string> = { 'status.podIP': podIP, 'status.podIPs': podIP, 'status.hostIP': hostIP, 'status.hostIPs': hostIP, 'spec.nodeName': os.hostname() };
  return c.env.map((e) => (e.from !== undefined ? { name: e.name, value: fields[e.from] ?? '', verbatim: true, ...(e.overridden === true ? { overridden: true } : {}) } : { name: e.name, value: e.value, ...flags(e) }));
}

export function recordPod(rt: Runtime, pod: DesiredPod): void {
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

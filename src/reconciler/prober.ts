import type { Logger } from '../lib/log.js';
import type { Handler, Runtime } from '../runtime/index.js';
import type { DesiredContainer, DesiredPod, DesiredProbe } from './desired.js';

/**
 * The kubelet's prober, per running container of `berth up`: a startup probe first (nothing
 * else runs until it succeeds), then liveness and readiness on their own periods, each with
 * initialDelaySeconds, timeoutSeconds, successThreshold and failureThreshold as Kubernetes
 * counts them. A liveness or startup probe that reaches its failure threshold marks the
 * container unhealthy (the planner restarts it); readiness decides the container's Ready.
 * Every result change enqueues the pod (`onChange`) and the transitions are events
 * (Unhealthy: "Liveness probe failed: …"). Workers are keyed by container id, so a restart
 * (a new id) starts fresh.
 */

export interface ProbeState {
  /** undefined until a readiness probe has decided; true without a readiness probe once started. */
  ready?: boolean;
  /** A liveness or startup probe reached its failure threshold. */
  unhealthy?: string;
}

interface Worker {
  podKey: string;
  name: string;
  /** The pending timer of each probe: one at a time, so a long-lived container does not pile them up (regression prober-keeps-every-timer). */
  timers: Map<'liveness' | 'readiness' | 'startup', NodeJS.Timeout>;
  started: boolean;
  state: ProbeState;
  counts: Record<'liveness' | 'readiness' | 'startup', { ok: number; fail: number }>;
  stopped: boolean;
}

export class Prober {
  private readonly workers = new Map<string, Worker>();

  constructor(
    private readonly rt: Runtime,
    private readonly log: Logger,
    private readonly onChange: (podKey: string) => void,
  ) {}

  /** What the probes say of a container (empty when it has none or is not probed). */
  state(id: string): ProbeState {
    return this.workers.get(id)?.state ?? {};
  }

  /** Starts workers for the pod's running containers that have probes; stops the others of the pod. */
  sync(pod: DesiredPod, running: readonly { id: string; name: string; startedAt?: number | null }[]): void {
    const live = new Set<string>();
    for (const r of running) {
      const c = pod.containers.find((x) => x.name === r.name);
      if (c?.probes === undefined) continue;
      live.add(r.id);
      if (!this.workers.has(r.id)) this.start(pod, c, r.id, r.startedAt ?? Date.now());
    }
    for (const [id, w] of this.workers) if (w.podKey === pod.key && !live.has(id)) this.stop(id);
  }

  /** Stops every worker of a pod (deleted, paused) or all of them (shutdown). */
  stopPod(podKey?: string): void {
    for (const [id, w] of this.workers) if (podKey === undefined || w.podKey === podKey) this.stop(id);
  }

  private stop(id: string): void {
    const w = this.workers.get(id);
    if (w === undefined) return;
    w.stopped = true;
    for (const t of w.timers.values()) clearTimeout(t);
    w.timers.clear();
    this.workers.delete(id);
  }

  /** Each probe's initialDelaySeconds counts from the container's start, as the kubelet's worker counts it (not from when the startup probe passed or the daemon started). */
  private start(pod: DesiredPod, c: DesiredContainer, id: string, startedAt: number): void {
    const probes = c.probes ?? {};
    const w: Worker = {
      podKey: pod.key,
      name: c.name,
      timers: new Map(),
      started: probes.startup === undefined,
      // Without a readiness probe a started container is ready; with one, not until it passes.
      state: probes.readiness === undefined && probes.startup === undefined ? { ready: true } : { ready: false },
      counts: { liveness: { ok: 0, fail: 0 }, readiness: { ok: 0, fail: 0 }, startup: { ok: 0, fail: 0 } },
      stopped: false,
    };
    this.workers.set(id, w);
    const loop = (kind: 'liveness' | 'readiness' | 'startup', p: DesiredProbe, delay: number): void => {
      const t = setTimeout(() => {
        void this.tick(pod, id, w, kind, p).finally(() => {
          if (!w.stopped && !(kind === 'startup' && w.started)) loop(kind, p, p.periodMs);
        });
      }, delay);
      t.unref();
      w.timers.set(kind, t);
    };
    const left = (p: DesiredProbe): number => Math.max(0, p.initialDelayMs - (Date.now() - startedAt));
    const afterStart = (): void => {
      if (probes.liveness !== undefined) loop('liveness', probes.liveness, left(probes.liveness));
      if (probes.readiness !== undefined) loop('readiness', probes.readiness, left(probes.readiness));
    };
    if (probes.startup !== undefined) {
      (w as Worker & { afterStart?: () => void }).afterStart = afterStart;
      loop('startup', probes.startup, left(probes.startup));
    } else {
      afterStart();
    }
  }

  private async tick(pod: DesiredPod, id: string, w: Worker, kind: 'liveness' | 'readiness' | 'startup', p: DesiredProbe): Promise<void> {
    if (w.stopped || w.state.unhealthy !== undefined) return;
    const r = await this.rt.runHandler(pod.key, id, p as Handler, p.timeoutMs, pod.hostNetwork);
    if (w.stopped) return;
    const n = w.counts[kind];
    if (r.ok) {
      n.ok++;
      n.fail = 0;
    } else {
      n.fail++;
      n.ok = 0;
    }
    const label = kind[0]?.toUpperCase() + kind.slice(1);
    if (!r.ok && n.fail === 1) this.rt.addEvent(`pod/${pod.key}`, 'Unhealthy', `container ${w.name}: ${label} probe failed: ${r.message}`, { type: 'Warning' });
    if (kind === 'startup') {
      if (r.ok) {
        w.started = true;
        if (pod.containers.find((c) => c.name === w.name)?.probes?.readiness === undefined) this.set(w, { ready: true });
        (w as Worker & { afterStart?: () => void }).afterStart?.();
      } else if (n.fail >= p.failureThreshold) {
        this.set(w, { ready: false, unhealthy: `startup probe failed ${n.fail} times: ${r.message}` });
      }
      return;
    }
    if (kind === 'liveness') {
      if (!r.ok && n.fail >= p.failureThreshold) this.set(w, { ...w.state, unhealthy: `liveness probe failed ${n.fail} times: ${r.message}` });
      return;
    }
    if (r.ok && n.ok >= p.successThreshold && w.state.ready !== true) this.set(w, { ...w.state, ready: true });
    else if (!r.ok && n.fail >= p.failureThreshold && w.state.ready !== false) this.set(w, { ...w.state, ready: false });
  }

  private set(w: Worker, next: ProbeState): void {
    const changed = next.ready !== w.state.ready || next.unhealthy !== w.state.unhealthy;
    w.state = next;
    if (!changed) return;
    this.log.info({ pod: w.podKey, container: w.name, ...next }, 'probe result changed');
    this.onChange(w.podKey);
  }
}

import { BerthError } from '../lib/errors.js';
import type { Logger } from '../lib/log.js';
import type { EventRecord, ImageRecord, ObservedPod, Runtime } from '../runtime/index.js';
import { Controller, type ApplyResult } from '../reconciler/controller.js';
import type { DesiredPod } from '../reconciler/desired.js';
import type { Plan, PruneScope } from '../reconciler/plan.js';
import { buildStatus, type StatusReport } from '../reconciler/status.js';

/**
 * What the CLI asks of berth, as data in and data out: the daemon answers these over its
 * socket and the CLI runs the very same methods in-process (under the state lock) when no
 * daemon runs, so output and exit codes cannot differ between the two paths.
 */

export interface ApplyRequest {
  pods: DesiredPod[];
  /** Inventory source: the absolute path given to -f, or "-". */
  source: string;
  prune?: PruneScope;
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
}

export interface DiffRequest {
  pods: DesiredPod[];
  prune?: PruneScope;
}

export interface DeleteRequest {
  keys: string[];
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
  /** Set when the pod has several containers and none was named: kubectl's default. */
  defaulted?: { container: string; all: string[] };
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
}

export class BerthService {
  constructor(private readonly o: ServiceOptions) {}

  async apply(req: ApplyRequest): Promise<ApplyResponse> {
    const c = this.o.controller;
    if (req.dryRun === true) {
      const refused = c.ownershipProblems({ pods: req.pods, ...(req.force !== undefined ? { force: req.force } : {}) }, req.source);
      const plan = await c.diff(req.pods, req.prune, { fromRows: this.o.daemon });
      return { steps: [], blocked: plan.blocked, refused, keys: [], plan };
    }
    const res = await c.apply({ pods: req.pods, ...(req.prune !== undefined ? { prune: req.prune } : {}), ...(req.force !== undefined ? { force: req.force } : {}) }, req.source);
    if (req.wait !== true || res.refused.length > 0) return res;
    const notReady = await c.waitReady(res.keys.filter((k) => req.pods.some((p) => p.key === k)), req.timeoutMs ?? 60_000);
    return { ...res, notReady };
  }

  diff(req: DiffRequest): Promise<Plan> {
    return this.o.controller.diff(req.pods, req.prune, { fromRows: this.o.daemon });
  }

  /** `delete`: the planner's delete-pod steps for recorded pods among `keys`. */
  async delete(req: DeleteRequest): Promise<ApplyResult & { missing: string[] }> {
    const recorded = new Set(this.o.rt.listPods().map((p) => p.key));
    const keys = [...new Set(req.keys)];
    const present = keys.filter((k) => recorded.has(k));
    const res = await this.o.controller.apply(
      { pods: [], prune: { keys: present }, ...(req.force !== undefined ? { force: req.force } : {}) },
      req.source,
    );
    return { ...res, missing: keys.filter((k) => !recorded.has(k)) };
  }

  async pods(): Promise<ObservedPod[]> {
    return this.o.daemon ? this.o.rt.recordedPods() : this.o.rt.observe({ repair: false });
  }

  async status(): Promise<StatusReport> {
    return buildStatus({
      pods: await this.pods(),
      restarts: this.o.rt.listRestarts(),
      conditions: this.o.rt.listConditions(),
      now: Date.now(),
      daemon: this.o.daemon ? { pid: process.pid, pending: this.o.controller.queue.pending(), active: this.o.controller.queue.active() } : null,
    });
  }

  events(req: EventsRequest): EventRecord[] {
    return this.o.rt.listEvents(req);
  }

  images(): ImageRecord[] {
    return this.o.rt.listImages();
  }

  async pull(ref: string): Promise<{ ref: string; digest: string }> {
    if (ref === '') throw new BerthError('ERR_INVALID_ARGUMENT', 'pull: no image reference');
    const img = await this.o.rt.pullImage(ref);
    this.o.rt.addEvent(`image/${img.ref}`, 'Pulled', `pulled ${img.ref} (${img.digest})`);
    return { ref: img.ref, digest: img.digest };
  }

  /** Which log file `berth logs` reads: the current attempt, or with `previous` the one before. */
  async logTarget(req: LogsRequest): Promise<LogTarget> {
    const rt = this.o.rt;
    const pod = rt.getPod(req.podKey);
    const rows = rt.listContainers(req.podKey);
    const restarts = rt.listRestarts(req.podKey);
    const declared = pod !== undefined ? ((JSON.parse(pod.spec) as { containers?: { name: string }[] }).containers ?? []).map((c) => c.name) : [];
    const names = [...new Set([...declared, ...rows.map((r) => r.name), ...restarts.map((r) => r.name)])];
    if (pod === undefined && names.length === 0) throw new BerthError('ERR_NOT_FOUND', `logs ${req.podKey}: no such pod`);
    let name = req.container;
    let defaulted: LogTarget['defaulted'];
    if (name === undefined) {
      name = names[0];
      if (names.length > 1 && name !== undefined) defaulted = { container: name, all: names };
    } else if (!names.includes(name)) {
      throw new BerthError('ERR_NOT_FOUND', `logs ${req.podKey}/${name}: no such container (containers: ${names.join(', ') || 'none'})`);
    }
    if (name === undefined) throw new BerthError('ERR_NOT_FOUND', `logs ${req.podKey}: the pod has no containers yet`);
    const current = rows.filter((r) => r.name === name).sort((a, b) => a.createdAt - b.createdAt).pop();
    const r = restarts.find((x) => x.name === name);
    let id: string | undefined;
    if (req.previous === true) {
      // The attempt before the current one: its row is gone, its log is kept (the kubelet's --previous).
      id = r?.lastId !== null && r?.lastId !== current?.id ? (r?.lastId ?? undefined) : undefined;
      if (id === undefined) throw new BerthError('ERR_NOT_FOUND', `logs --previous ${req.podKey}/${name}: no previous attempt (restarts: ${r?.restarts ?? 0})`);
    } else {
      id = current?.id ?? r?.lastId ?? undefined;
      if (id === undefined) throw new BerthError('ERR_NOT_FOUND', `logs ${req.podKey}/${name}: no container has run yet (berth status ${req.podKey.split('/')[1] ?? ''} says why)`);
    }
    const file = rt.containerLogPath(id);
    if (file === undefined) throw new BerthError('ERR_NOT_FOUND', `logs ${req.podKey}/${name}: no log for ${id}`);
    const running = req.previous !== true && current?.id === id && (this.o.daemon ? current.state === 'running' : await rt.isRunning(id));
    return { id, file, running, ...(defaulted !== undefined ? { defaulted } : {}) };
  }
}

/** Routes one API method to the service: the daemon's socket and the in-process CLI share it. */
export async function dispatch(s: BerthService, method: string, body: unknown): Promise<unknown> {
  const b = (body ?? {}) as Record<string, unknown>;
  switch (method) {
    case 'apply':
      return s.apply(b as unknown as ApplyRequest);
    case 'diff':
      return s.diff(b as unknown as DiffRequest);
    case 'delete':
      return s.delete(b as unknown as DeleteRequest);
    case 'pods':
      return s.pods();
    case 'status':
      return s.status();
    case 'events':
      return s.events(b as EventsRequest);
    case 'images':
      return s.images();
    case 'pull':
      return s.pull(String(b['ref'] ?? ''));
    case 'logs':
      return s.logTarget(b as unknown as LogsRequest);
    default:
      throw new BerthError('ERR_NOT_FOUND', `api ${method}: no such method`);
  }
}

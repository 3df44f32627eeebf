import { createServer, type Server } from 'node:http';
import { isIP } from 'node:net';
import { BerthError } from '../lib/errors.js';
import type { Logger } from '../lib/log.js';
import type { KeyReport } from '../reconciler/controller.js';
import type { StatusReport } from '../reconciler/status.js';

/**
 * Prometheus text exposition of the daemon: `GET /metrics` on the API's unix socket always,
 * and with `berth up --metrics-addr 127.0.0.1:PORT` on that loopback address too — the only
 * TCP listener berth ever opens. Both render the same Metrics. Counters live in memory and
 * start at 0 with each daemon; gauges are read from status at each scrape.
 */

export interface MetricsSource {
  status(): Promise<StatusReport>;
  queue(): { pending: number; active: number };
}

/** Upper bounds (seconds) of the reconcile duration buckets: a no-op pod run to a long pull. */
export const DURATION_BUCKETS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

/** Key kinds of the controller's queue (`pod/<ns>/<name>`, `image/<ref>`). */
const KEY_KINDS = ['pod', 'image'] as const;
type KeyKind = (typeof KEY_KINDS)[number];

/** Container states always exposed (0 when none), so a dashboard's series exist from the start. */
const CONTAINER_STATES = ['created', 'creating', 'exited', 'paused', 'removing', 'running', 'waiting'];

interface Histogram {
  /** Per bucket (DURATION_BUCKETS order), not cumulative; rendered cumulative. */
  counts: number[];
  sum: number;
  count: number;
}

export class Metrics {
  private readonly steps = new Map<string, number>();
  private readonly failures = new Map<string, number>();
  private readonly runFailures = new Map<KeyKind, number>();
  private readonly pulls = new Map<'success' | 'failure', number>();
  private readonly durations = new Map<KeyKind, Histogram>();
  private restarts = 0;
  private runs = 0;

  /** Counts what one key run did (controller.onReport). */
  observe(r: KeyReport): void {
    this.runs++;
    const kind: KeyKind = r.key.startsWith('image/') ? 'image' : 'pod';
    let failed = false;
    for (const s of r.steps) {
      const k = s.step.kind;
      this.steps.set(k, (this.steps.get(k) ?? 0) + 1);
      if (s.error !== undefined) {
        failed = true;
        this.failures.set(s.error.code, (this.failures.get(s.error.code) ?? 0) + 1);
      }
      if (k === 'pull') {
        const result = s.error === undefined ? 'success' : 'failure';
        this.pulls.set(result, (this.pulls.get(result) ?? 0) + 1);
      }
      if (s.step.kind === 'replace' && s.step.restart !== undefined && s.error === undefined) this.restarts++;
    }
    // A run with a failed step is retried by the queue with backoff.
    if (failed) this.runFailures.set(kind, (this.runFailures.get(kind) ?? 0) + 1);
    if (r.durationMs !== undefined) {
      const h = this.durations.get(kind) ?? { counts: DURATION_BUCKETS.map(() => 0), sum: 0, count: 0 };
      const seconds = Math.max(0, r.durationMs) / 1000;
      const i = DURATION_BUCKETS.findIndex((le) => seconds <= le);
      if (i >= 0) h.counts[i] = (h.counts[i] ?? 0) + 1;
      h.sum += seconds;
      h.count++;
      this.durations.set(kind, h);
    }
  }

  /** Prometheus text exposition format 0.0.4: every metric with HELP and TYPE, labels sorted. */
  async render(src: MetricsSource): Promise<string> {
    const st = await src.status();
    const q = src.queue();
    const lines: string[] = [];
    const metric = (name: string, type: string, help: string, samples: [string, number][]): void => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, v] of samples) lines.push(`${name}${labels} ${v}`);
    };
    const esc = (v: string): string => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
    const labels = (...kv: [string, string][]): string => `{${kv.map(([k, v]) => `${k}="${esc(v)}"`).join(',')}}`;
    const label = (k: string, v: string): string => labels([k, v]);
    const count = <K extends string>(m: ReadonlyMap<K, number>, keys: readonly K[]): [K, number][] => keys.map((k) => [k, m.get(k) ?? 0]);

    metric('berth_reconcile_runs_total', 'counter', 'Key runs completed by the controller.', [['', this.runs]]);
    lines.push('# HELP berth_reconcile_duration_seconds Time of one key run, from its start to its report, by key kind.', '# TYPE berth_reconcile_duration_seconds histogram');
    for (const kind of KEY_KINDS) {
      const h = this.durations.get(kind) ?? { counts: DURATION_BUCKETS.map(() => 0), sum: 0, count: 0 };
      let cumulative = 0;
      DURATION_BUCKETS.forEach((le, i) => {
        cumulative += h.counts[i] ?? 0;
        lines.push(`berth_reconcile_duration_seconds_bucket${labels(['kind', kind], ['le', String(le)])} ${cumulative}`);
      });
      lines.push(`berth_reconcile_duration_seconds_bucket${labels(['kind', kind], ['le', '+Inf'])} ${h.count}`);
      lines.push(`berth_reconcile_duration_seconds_sum${label('kind', kind)} ${h.sum}`);
      lines.push(`berth_reconcile_duration_seconds_count${label('kind', kind)} ${h.count}`);
    }
    metric('berth_reconcile_failures_total', 'counter', 'Key runs with a failed step, retried with backoff, by key kind.', count(this.runFailures, KEY_KINDS).map(([k, v]) => [label('kind', k), v]));
    metric('berth_steps_total', 'counter', 'Steps executed, by kind.', [...this.steps].sort().map(([k, v]) => [label('kind', k), v]));
    metric('berth_step_failures_total', 'counter', 'Failed steps, by error code.', [...this.failures].sort().map(([k, v]) => [label('code', k), v]));
    metric('berth_pulls_total', 'counter', 'Image pulls, by result.', count(this.pulls, ['failure', 'success'] as const).map(([k, v]) => [label('result', k), v]));
    metric('berth_restarts_total', 'counter', 'Containers restarted by their restartPolicy.', [['', this.restarts]]);
    metric('berth_queue_pending', 'gauge', 'Keys waiting for a worker.', [['', q.pending]]);
    metric('berth_queue_active', 'gauge', 'Keys being reconciled now.', [['', q.active]]);
    const byStatus = new Map<string, number>();
    for (const p of st.pods) byStatus.set(p.status, (byStatus.get(p.status) ?? 0) + 1);
    metric('berth_pods', 'gauge', 'Pods by status.', [...byStatus].sort().map(([k, v]) => [label('status', k), v]));
    const byState = new Map<string, number>(CONTAINER_STATES.map((s) => [s, 0]));
    for (const p of st.pods) for (const c of p.containers) byState.set(c.state, (byState.get(c.state) ?? 0) + 1);
    metric('berth_containers', 'gauge', 'Declared containers by state (the current attempt of each).', [...byState].sort().map(([k, v]) => [label('state', k), v]));
    metric('berth_container_restarts', 'gauge', 'Policy restarts per pod.', st.pods.map((p) => [label('pod', p.key), p.restarts]));
    metric('berth_pod_ready', 'gauge', '1 when every container of the pod runs.', st.pods.map((p) => [label('pod', p.key), p.status === 'Running' ? 1 : 0]));
    return `${lines.join('\n')}\n`;
  }
}

/** Parses and checks `--metrics-addr`: `HOST:PORT` with a loopback HOST. */
export function parseMetricsAddr(addr: string): { host: string; port: number } {
  const m = /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(addr);
  const host = m?.[1] ?? '';
  const port = Number(m?.[2]);
  const loopback = (isIP(host) === 4 && host.startsWith('127.')) || host === '::1' || host === 'localhost';
  if (m === null || !Number.isInteger(port) || port < 1 || port > 65535 || !loopback) {
    throw new BerthError('ERR_INVALID_ARGUMENT', `up --metrics-addr ${JSON.stringify(addr)}: expected 127.0.0.1:PORT (a loopback address; the API is the unix socket)`);
  }
  return { host, port };
}

export async function serveMetrics(o: { addr: string; metrics: Metrics; source: MetricsSource; log: Logger }): Promise<{ close(): Promise<void>; port: number }> {
  const { host, port } = parseMetricsAddr(o.addr);
  const server: Server = createServer((req, res) => {
    if (req.method !== 'GET' || req.url !== '/metrics') {
      res.writeHead(404).end('not found: GET /metrics\n');
      return;
    }
    o.metrics.render(o.source).then(
      (text) => res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(text),
      (err: unknown) => res.writeHead(500).end(`${String(err)}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new BerthError('ERR_INVALID_ARGUMENT', `up --metrics-addr ${o.addr}: ${err.message}`, { cause: err })));
    server.listen(port, host, () => resolve());
  });
  o.log.info({ addr: o.addr }, 'metrics listening');
  const bound = (server.address() as { port: number }).port;
  return { port: bound, close: () => new Promise<void>((r) => server.close(() => r())) };
}

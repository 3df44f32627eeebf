import { createServer, type Server } from 'node:http';
import { isIP } from 'node:net';
import { BerthError } from '../lib/errors.js';
import type { Logger } from '../lib/log.js';
import type { KeyReport } from '../reconciler/controller.js';
import type { StatusReport } from '../reconciler/status.js';

/**
 * `berth up --metrics-addr 127.0.0.1:PORT`: Prometheus text exposition on `GET /metrics`,
 * the only TCP listener berth ever opens, and only on a loopback address (the API itself is
 * the unix socket). Counters live in memory and start at 0 with each daemon.
 */

export interface MetricsSource {
  status(): Promise<StatusReport>;
  queue(): { pending: number; active: number };
}

export class Metrics {
  private readonly steps = new Map<string, number>();
  private readonly failures = new Map<string, number>();
  private runs = 0;

  /** Counts what one key run did (controller.onReport). */
  observe(r: KeyReport): void {
    this.runs++;
    for (const s of r.steps) {
      const k = s.step.kind;
      this.steps.set(k, (this.steps.get(k) ?? 0) + 1);
      if (s.error !== undefined) this.failures.set(s.error.code, (this.failures.get(s.error.code) ?? 0) + 1);
    }
  }

  async render(src: MetricsSource): Promise<string> {
    const st = await src.status();
    const q = src.queue();
    const lines: string[] = [];
    const metric = (name: string, type: string, help: string, samples: [string, number][]): void => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, v] of samples) lines.push(`${name}${labels} ${v}`);
    };
    const label = (k: string, v: string): string => `{${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"}`;
    metric('berth_reconcile_runs_total', 'counter', 'Key runs completed by the controller.', [['', this.runs]]);
    metric('berth_steps_total', 'counter', 'Steps executed, by kind.', [...this.steps].sort().map(([k, v]) => [label('kind', k), v]));
    metric('berth_step_failures_total', 'counter', 'Failed steps, by error code.', [...this.failures].sort().map(([k, v]) => [label('code', k), v]));
    metric('berth_queue_pending', 'gauge', 'Keys waiting for a worker.', [['', q.pending]]);
    metric('berth_queue_active', 'gauge', 'Keys being reconciled now.', [['', q.active]]);
    const byStatus = new Map<string, number>();
    for (const p of st.pods) byStatus.set(p.status, (byStatus.get(p.status) ?? 0) + 1);
    metric('berth_pods', 'gauge', 'Pods by status.', [...byStatus].sort().map(([k, v]) => [label('status', k), v]));
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

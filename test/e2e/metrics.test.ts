import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { request } from 'node:http';
import * as path from 'node:path';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { requireE2E } from '../helpers/prereq.js';
import { cleanupEnv, makeEnv, startDaemon, stopDaemon, waitFor, type berthUp, type BerthEnv } from '../helpers/berth.js';
import { parsePrometheus, sampleValue, type Family } from '../helpers/prom.js';

/**
 * Issue 12 (operability): `GET /metrics` on the daemon's unix socket is Prometheus text
 * (checked by the parser in test/helpers/prom.ts) and its counters move when a pod is
 * written into the watched directory and starts.
 */

/** GET over the unix socket, as `curl --unix-socket <state>/berth.sock http://berth/metrics` does. */
function getOverSocket(socketPath: string, urlPath: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path: urlPath, method: 'GET', timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type'] ?? ''), body }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${urlPath} on ${socketPath}: timed out`)));
    req.on('error', reject);
    req.end();
  });
}

describe('e2e: /metrics on the API socket', { timeout: 300_000 }, () => {
  let ok = true;
  let demo: DemoFixture | undefined;
  let env: BerthEnv;
  let dir: string;
  let up: ReturnType<typeof berthUp> | undefined;

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv('berth-metrics-');
    demo = await startDemoFixture();
    dir = path.join(env.dir, 'site');
    await fsp.mkdir(dir);
  });
  after(async () => {
    if (up !== undefined) await stopDaemon(up);
    if (env !== undefined) await cleanupEnv(env);
    await demo?.stop();
  });

  const scrape = async (): Promise<Map<string, Family>> => {
    const r = await getOverSocket(path.join(env.state, 'berth.sock'), '/metrics');
    assert.equal(r.status, 200, r.body);
    assert.match(r.type, /^text\/plain; version=0\.0\.4/);
    return parsePrometheus(r.body);
  };

  test('scrape, write a pod file, scrape again: steps, pulls, runs and the duration histogram moved; pods Running 1, containers running 1', async (t) => {
    if (!ok || demo === undefined) return t.skip();
    up = await startDaemon(env, dir);
    const before = await scrape();
    const v = (fam: Map<string, Family>, name: string, labels: Record<string, string> = {}): number => sampleValue(fam, name, labels) ?? 0;
    assert.equal(before.get('berth_reconcile_duration_seconds')?.type, 'histogram');
    assert.equal(v(before, 'berth_pods', { status: 'Running' }), 0);
    assert.equal(v(before, 'berth_containers', { state: 'running' }), 0);

    await fsp.writeFile(path.join(dir, 'web.yaml'), `apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
    - name: app
      image: ${demo.registry.host}/berth/demo:1.0
      command: ["sleep", "3600"]
`);
    const after = await waitFor('pod Running in /metrics', async () => {
      const fam = await scrape();
      return v(fam, 'berth_pods', { status: 'Running' }) === 1 ? fam : undefined;
    }, 60_000, 200);

    assert.equal(v(after, 'berth_containers', { state: 'running' }), 1);
    assert.equal(v(after, 'berth_pod_ready', { pod: 'default/web' }), 1);
    assert.ok(v(after, 'berth_steps_total', { kind: 'start' }) > v(before, 'berth_steps_total', { kind: 'start' }), 'a start step was counted');
    assert.equal(v(after, 'berth_pulls_total', { result: 'success' }) - v(before, 'berth_pulls_total', { result: 'success' }), 1, 'one pull');
    assert.ok(v(after, 'berth_reconcile_runs_total') > v(before, 'berth_reconcile_runs_total'));
    for (const kind of ['pod', 'image']) {
      assert.ok(v(after, 'berth_reconcile_duration_seconds_count', { kind }) > v(before, 'berth_reconcile_duration_seconds_count', { kind }), `${kind} runs observed`);
      assert.ok(v(after, 'berth_reconcile_duration_seconds_sum', { kind }) > 0, `${kind} run time summed`);
    }
    assert.equal(v(after, 'berth_reconcile_failures_total', { kind: 'pod' }), 0);

    // Anything else on the socket is still the JSON API's 404, not metrics.
    const other = await getOverSocket(path.join(env.state, 'berth.sock'), '/metricsx');
    assert.equal(other.status, 404);
  });
});

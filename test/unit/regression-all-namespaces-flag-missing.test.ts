import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { isBerthError } from '../../src/lib/errors.js';
import { parseFastRead } from '../../src/lib/fast-read.js';
import { podQuery, psOutput, statusOutput, type PsPod, type StatusView } from '../../src/lib/pod-views.js';
import { CLI } from '../helpers/berth.js';

/**
 * Regression all-namespaces-flag-missing: `berth status -A` and `berth ps -A` failed with
 * "unknown option '-A'" though both take -n. Now -A is kubectl get's: every namespace whatever -n
 * says, a NAMESPACE column with the pod's name under POD, and no pod names with it. The fast
 * read path (answered by berth up) takes it too, printing with the same renderer.
 */

const status: StatusView = {
  daemon: null,
  pods: [
    { key: 'default/web', source: '/m/web.yaml', ready: '1/1', status: 'Running', restarts: 0, createdAt: new Date(0).toISOString(), nextTryAt: null, lastError: '', containers: [{ name: 'app', state: 'running', exitCode: null }] },
    { key: 'prod/db', source: '/m/db.yaml', ready: '0/1', status: 'Pending', restarts: 2, createdAt: new Date(0).toISOString(), nextTryAt: null, lastError: '', containers: [] },
  ],
};

const ps: PsPod[] = [{ key: 'prod/db', source: '/m/db.yaml', createdAt: 0, restarts: {}, containers: [] }];

test('regression all-namespaces-flag-missing: -A lists every namespace (even with -n) and refuses pod names', () => {
  assert.deepEqual(podQuery('status', [], { namespace: 'prod', namespaceGiven: true, allNamespaces: true }), {});
  assert.deepEqual(podQuery('status', [], { namespace: 'prod', namespaceGiven: true }), { namespace: 'prod' });
  assert.deepEqual(podQuery('ps', [], { namespace: 'default', selector: 'app=web', allNamespaces: true }), { selector: 'app=web' });
  assert.throws(() => podQuery('status', ['web'], { namespace: 'default', allNamespaces: true }), (err: unknown) => isBerthError(err, 'ERR_INVALID_ARGUMENT') && /across all namespaces/.test(err.message));
});

test('regression all-namespaces-flag-missing: with -A the tables have a NAMESPACE column and the pod name under POD', () => {
  const lines = statusOutput(status, {}, { output: 'table', now: 60_000, allNamespaces: true }).stdout.split('\n');
  assert.match(lines[0] ?? '', /^NAMESPACE\s+POD\s+READY\s+STATUS\s+RESTARTS\s+AGE/);
  assert.match(lines[1] ?? '', /^default\s+web\s+1\/1\s+Running\s/);
  assert.match(lines[2] ?? '', /^prod\s+db\s+0\/1\s+Pending\s/);
  assert.match(statusOutput(status, {}, { output: 'wide', now: 60_000, allNamespaces: true }).stdout, /^NAMESPACE\s+POD\s+READY/);
  // Without -A as before: one POD column with namespace/name.
  assert.match(statusOutput(status, {}, { output: 'table', now: 60_000 }).stdout, /^POD\s+READY[^\n]*\ndefault\/web\s/);
  const psLines = psOutput(ps, {}, { output: 'table', now: 60_000, allNamespaces: true }).stdout.split('\n');
  assert.match(psLines[0] ?? '', /^NAMESPACE\s+POD\s+CONTAINER\s+STATE/);
  assert.match(psLines[1] ?? '', /^prod\s+db\s+-\s+pending/);
});

test('regression all-namespaces-flag-missing: the fast read path takes -A and --all-namespaces, once, without names', () => {
  assert.deepEqual(parseFastRead(['status', '-A']), { method: 'status', socket: '/run/berth/berth.sock', query: {}, output: 'table', allNamespaces: true });
  assert.deepEqual(parseFastRead(['pods', '--all-namespaces', '-n', 'x', '-o', 'wide'])?.query, {});
  assert.equal(parseFastRead(['status', '-A', '-A']), undefined);
  assert.equal(parseFastRead(['status', '-A', 'web']), undefined, 'left to the normal path, which refuses it');
});

test('regression all-namespaces-flag-missing: the CLI takes -A on status and ps, and refuses it with a pod name (exit 2)', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-allns-'));
  try {
    const run = (args: string[]) => spawnSync(process.execPath, [CLI, '--root', path.join(dir, 'root'), '--state', path.join(dir, 'state'), ...args], { encoding: 'utf8', timeout: 30_000 });
    for (const cmd of ['status', 'ps']) {
      const r = run([cmd, '-A']);
      assert.equal(r.status, 0, `${cmd}: ${r.stderr}`);
      assert.match(r.stdout, /^NAMESPACE\s+POD\s/, cmd);
      const named = run([cmd, '--all-namespaces', 'web']);
      assert.equal(named.status, 2, `${cmd}: ${named.stderr}`);
      assert.match(named.stderr, /across all namespaces/);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

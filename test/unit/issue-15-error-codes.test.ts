import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { BerthError, ERROR_CODES, RETRYABLE, codeOf, errorLine, exitCodeOf, isErrorCode, splitCoded, type ErrorCode } from '../../src/lib/errors.js';
import { podVerdict, type PodSituation } from '../../src/reconciler/conditions.js';
import type { Digest } from '../../src/lib/digest.js';
import type { DesiredPod } from '../../src/reconciler/desired.js';
import { buildStatus } from '../../src/reconciler/status.js';
import { StateStore } from '../../src/runtime/state/index.js';
import { REPO } from '../helpers/berth.js';
import { validateEvents, validateStatus } from '../helpers/berth-schemas.js';

/**
 * Issue 15: the README lists every error code with its meaning, what to do, whether berth retries
 * it and the exit code; scripts key on the code in `error ERR_…: ` lines. The union is read from
 * the source (not from RETRYABLE), so a code added to the type alone fails here too.
 */

function unionCodes(): string[] {
  const src = readFileSync(path.join(REPO, 'src/lib/errors.ts'), 'utf8');
  const union = /export type ErrorCode =([\s\S]*?);/.exec(src)?.[1];
  assert.ok(union !== undefined, 'the ErrorCode union in src/lib/errors.ts');
  return [...union.matchAll(/\|\s*'(ERR_[A-Z_]+)'/g)].map((m) => m[1] ?? '');
}

interface Row {
  meaning: string;
  todo: string;
  retried: string;
  exit: number;
}

function readmeRows(): Map<string, Row> {
  const readme = readFileSync(path.join(REPO, 'README.md'), 'utf8');
  const at = readme.indexOf('\n### Error codes\n');
  assert.ok(at >= 0, 'README has an "Error codes" section');
  const section = readme.slice(at + 1, readme.indexOf('\n#', at + 2));
  assert.match(section, /^\| code \| what it means \| what to do \| retried \| exit \|$/m, 'the table header');
  const rows = new Map<string, Row>();
  for (const m of section.matchAll(/^\| `(ERR_[A-Z_]+)` \| (.+?) \| (.+?) \| (yes|no) \| (\d) \|$/gm)) {
    assert.ok(!rows.has(m[1] ?? ''), `one row for ${m[1]}`);
    rows.set(m[1] ?? '', { meaning: m[2] ?? '', todo: m[3] ?? '', retried: m[4] ?? '', exit: Number(m[5]) });
  }
  return rows;
}

test('the ErrorCode union, ERROR_CODES and RETRYABLE name the same codes in the same order', () => {
  const union = unionCodes();
  assert.ok(union.length >= 20, `parsed ${union.length} codes`);
  assert.deepEqual([...ERROR_CODES], union);
  assert.deepEqual(Object.keys(RETRYABLE), union);
});

test('README "Error codes": one row per code of the union, with meaning, what to do, retried as RETRYABLE and exit as exitCodeOf', () => {
  const rows = readmeRows();
  const union = unionCodes();
  assert.deepEqual([...rows.keys()], union, 'the table lists every code, in the order of the union, and no other');
  for (const code of union) {
    const row = rows.get(code);
    assert.ok(row !== undefined, `README row for ${code}`);
    assert.ok(row.meaning.length >= 10 && row.todo.length >= 10, `${code}: meaning and what to do`);
    assert.equal(row.retried, RETRYABLE[code as ErrorCode] ? 'yes' : 'no', `${code}: retried`);
    assert.equal(row.exit, exitCodeOf(code as ErrorCode), `${code}: exit`);
  }
});

test('error lines: `error CODE: message`; a stored `CODE: reason` splits back; anything not a BerthError is ERR_INTERNAL', () => {
  assert.equal(errorLine('ERR_NOT_FOUND', 'stats default/x: no such pod'), 'error ERR_NOT_FOUND: stats default/x: no such pod\n');
  assert.deepEqual(splitCoded('ERR_UNSAFE_CONTENT: pull r: bad', 'ERR_PRECONDITION'), { code: 'ERR_UNSAFE_CONTENT', message: 'pull r: bad' });
  assert.deepEqual(splitCoded('ERR_NOPE: x', 'ERR_PRECONDITION'), { code: 'ERR_PRECONDITION', message: 'ERR_NOPE: x' }, 'an unknown code stays text');
  assert.deepEqual(splitCoded('image x is not present', 'ERR_PRECONDITION'), { code: 'ERR_PRECONDITION', message: 'image x is not present' });
  assert.equal(codeOf(new BerthError('ERR_LOCKED', 'x')), 'ERR_LOCKED');
  assert.equal(codeOf(new Error('boom')), 'ERR_INTERNAL');
  assert.equal(codeOf(Object.assign(new Error('enoent'), { code: 'ENOENT' })), 'ERR_INTERNAL');
  assert.equal(isErrorCode('ERR_IO'), true);
  assert.equal(isErrorCode('toString'), false);
  assert.equal(isErrorCode(undefined), false);
  assert.equal(exitCodeOf('ERR_INVALID_MANIFEST'), 2);
  assert.equal(exitCodeOf('ERR_RUNTIME'), 1);
});

test('the output schemas list exactly the codes of the union (status, events) or the manifest ones (validate)', () => {
  const union = unionCodes();
  const schema = (f: string): { definitions?: Record<string, { enum?: string[] }>; $defs?: { problem: { properties: { code: { enum: string[] } } } } } =>
    JSON.parse(readFileSync(path.join(REPO, 'schemas', f), 'utf8')) as never;
  assert.deepEqual(schema('status.json').definitions?.['errorCode']?.enum, union);
  assert.deepEqual(schema('events.json').definitions?.['errorCode']?.enum, union);
  for (const c of schema('validate.json').$defs?.problem.properties.code.enum ?? []) assert.ok(union.includes(c), c);
});

const pod: DesiredPod = {
  key: 'default/web', kind: 'Pod', namespace: 'default', name: 'web', source: '/m/web.yaml', line: 1, podHash: 'p',
  hostNetwork: true, restartPolicy: 'Always', gracePeriodMs: 1000, labels: {}, annotations: {}, paused: false,
  containers: [{ name: 'app', image: 'r/x:1', pullPolicy: 'IfNotPresent', specHash: 'h', env: [], ports: [] }],
};
const situation: PodSituation = { desired: pod, observed: undefined, generation: 1, images: [], waiting: [], failed: [], blocked: [], invalid: [] };

test('conditions carry the code of the failure they report; status -o json has it beside the message (lastErrorCode), in the schema', () => {
  const cases: [string, Partial<PodSituation>, string | null][] = [
    ['pull refused', { images: [{ image: 'r/x:1', error: 'pull r/x:1: unpack layer sha256:aa entry "../x": …', code: 'ERR_UNSAFE_CONTENT' }] }, 'ERR_UNSAFE_CONTENT'],
    ['step failed', { failed: [{ message: 'runc create: boom', retryable: true, code: 'ERR_RUNTIME' }] }, 'ERR_RUNTIME'],
    ['blocked by a stored failure', { blocked: [{ key: 'default/web', reason: 'ERR_INVALID_IMAGE: image r/x:1: no layers' }] }, 'ERR_INVALID_IMAGE'],
    ['blocked by policy', { blocked: [{ key: 'default/web/app', reason: 'image r/x:1 is not present and imagePullPolicy is Never' }] }, 'ERR_PRECONDITION'],
    ['owned elsewhere', { conflict: 'pod default/web is owned by /w/web.yaml' }, 'ERR_CONFLICT'],
    ['invalid file', { invalid: ['/m/web.yaml:3:1: spec: bogus'] }, 'ERR_INVALID_MANIFEST'],
    ['an init container failed under restartPolicy Never: the workload\'s verdict, no berth error', { blocked: [{ key: 'default/web/init', reason: 'init container init failed with exit code 3 and restartPolicy is Never', failed: true }] }, null],
    ['crash loop: the container\'s exit, no berth error', { waiting: [{ key: 'default/web/app', reason: 'CrashLoopBackOff', until: 9_000, message: 'exited with code 1' }] }, null],
  ];
  for (const [what, s, code] of cases) {
    const v = podVerdict({ ...situation, ...s });
    const report = buildStatus({
      pods: [{ key: 'default/web', namespace: 'default', name: 'web', source: '/m/web.yaml', podHash: 'p', spec: JSON.stringify(pod), createdAt: 500, generation: 1, containers: [] }],
      restarts: [],
      conditions: v.conditions.map((c) => ({ ...c, key: 'pod/default/web', lastTransitionTime: 4000 })),
      now: 5000,
      daemon: null,
    });
    assert.deepEqual(validateStatus(report), [], what);
    // Regression init-failure-shown-pending: a failed init container under Never is the pod's end.
    if (what.startsWith('an init container failed')) assert.equal(report.pods[0]?.status, 'Error', what);
    const p = report.pods[0];
    assert.equal(p?.lastErrorCode, code, `${what}: lastErrorCode (${p?.lastError})`);
    if (code !== null) assert.ok(p?.conditions.some((c) => c.code === code && c.message === p.lastError), `${what}: a condition has the code beside the message`);
  }
  const bad = buildStatus({
    pods: [{ key: 'default/web', namespace: 'default', name: 'web', source: '/m/web.yaml', podHash: 'p', spec: JSON.stringify(pod), createdAt: 500, generation: 1, containers: [] }],
    restarts: [],
    conditions: [{ key: 'pod/default/web', type: 'Ready', status: 'False', reason: 'Error', message: 'x', code: 'ERR_BOGUS', observedGeneration: 1, lastTransitionTime: 1 }],
    now: 5000,
    daemon: null,
  });
  assert.notDeepEqual(validateStatus(bad), [], 'the schema refuses a code that is not one');
});

test('the state database keeps the code of conditions and events (and null where there is none)', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-errcodes-state-'));
  const state = new StateStore(dir);
  try {
    state.setConditions('pod/default/web', [
      { type: 'Ready', status: 'False', reason: 'ImagePullBackOff', message: 'pull r/x:1: …', code: 'ERR_UNSAFE_CONTENT', observedGeneration: 1 },
      { type: 'InvalidSpec', status: 'False', reason: 'Valid', message: '', observedGeneration: 1 },
    ]);
    assert.deepEqual(state.listConditions('pod/default/web').map((c) => [c.type, c.code]), [['InvalidSpec', null], ['Ready', 'ERR_UNSAFE_CONTENT']]);
    // A change of code alone is a change (the row is rewritten).
    state.setConditions('pod/default/web', [{ type: 'Ready', status: 'False', reason: 'ImagePullBackOff', message: 'pull r/x:1: …', code: 'ERR_NETWORK', observedGeneration: 1 }]);
    assert.deepEqual(state.listConditions('pod/default/web').map((c) => c.code), ['ERR_NETWORK']);
    const e = state.addEvent('image/r/x:1', 'Failed', 'pull r/x:1: …', { type: 'Warning', code: 'ERR_UNSAFE_CONTENT' });
    assert.equal(e.code, 'ERR_UNSAFE_CONTENT');
    state.addEvent('image/r/x:1', 'Pulled', 'pulled r/x:1');
    const events = state.listEvents();
    assert.deepEqual(events.map((x) => [x.reason, x.code]), [['Failed', 'ERR_UNSAFE_CONTENT'], ['Pulled', null]]);
    assert.deepEqual(validateEvents(events), []);
    // Regression events-for-prefix: the events of pod/default/web are not those of web2 or webapp.
    for (const k of ['pod/default/web', 'pod/default/web2', 'pod/default/webapp']) state.addEvent(k, 'Created', k);
    assert.deepEqual(state.listEvents({ keyPrefix: 'pod/default/web' }).map((x) => x.key), ['pod/default/web']);
  } finally {
    state.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('regression ready-counts-running: READY counts the containers whose readiness passed, as kubectl', () => {
  const container = { id: 'c1', podKey: 'default/web', name: 'app', specHash: 'h', imageRef: 'r/x:1', imageDigest: 'sha256:aa' as Digest, state: 'running' as const, pid: 1, pidStart: '1', exitCode: null, createdAt: 1, startedAt: 1, finishedAt: null, attempt: 0, reason: null, live: true };
  const v = podVerdict({ ...situation, observed: undefined });
  const status = (conds: typeof v.conditions): string | undefined =>
    buildStatus({
      pods: [{ key: 'default/web', namespace: 'default', name: 'web', source: '/m/web.yaml', podHash: 'p', spec: JSON.stringify(pod), createdAt: 500, generation: 1, containers: [container] }],
      restarts: [],
      conditions: conds.map((c) => ({ ...c, key: 'pod/default/web', lastTransitionTime: 4000 })),
      now: 5000,
      daemon: null,
    }).pods[0]?.ready;
  const notReady = v.conditions.map((c) => (c.type === 'Ready' ? { ...c, status: 'False' as const, reason: 'NotReady', message: '0/1 containers ready (readiness probe)' } : c));
  assert.equal(status(notReady), '0/1');
  const running = v.conditions.map((c) => (c.type === 'Ready' ? { ...c, status: 'True' as const, reason: 'Running', message: '1/1 containers running' } : c));
  assert.equal(status(running), '1/1');
});

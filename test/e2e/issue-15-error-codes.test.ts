import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ERROR_CODES, type ErrorCode } from '../../src/lib/errors.js';
import { berth, cleanupEnv, makeEnv, startDaemon, stopDaemon, type BerthEnv, type RunResult } from '../helpers/berth.js';
import { validateEvents, validateStatus } from '../helpers/berth-schemas.js';
import { fillUp } from '../helpers/fill.js';
import { dir, file, imageOf, layerOf, pushImageParts, tarOf, type ImageParts } from '../helpers/hostile.js';
import { requireE2E } from '../helpers/prereq.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';

/**
 * Issue 15: every refused input's error line carries its code — `error ERR_…: <operation> <ids>:
 * <reason>` — and `-o json` carries it beside the message, so scripts and the README key on it.
 * Real refusals end to end: an invalid manifest (validate, apply, diff), a hostile layer refused by
 * the unpacker during a pull from the real docker-registry on loopback (in-process and through the
 * daemon's socket), an image the registry does not have, a malformed reference, bad flag values
 * and an unknown pod; `status -o json` and `events -o json` carry the code beside the message.
 * Regressions: unpack-refusal-without-code (the unpack refusals printed a clear message but no
 * code), open-state-full-disk-is-internal.
 */

const CODES = new Set<string>(ERROR_CODES);

/** Every stderr line is a coded error line with a known code; returns the lines. */
function errorLines(r: RunResult): string[] {
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  assert.ok(lines.length > 0, `an error line on stderr (exit ${r.code}, stdout ${r.stdout})`);
  for (const l of lines) {
    const m = /^error (ERR_[A-Z_]+): \S/.exec(l);
    assert.ok(m !== null, `not a coded error line: ${JSON.stringify(l)}`);
    assert.ok(CODES.has(m[1] ?? ''), `unknown code in ${JSON.stringify(l)}`);
  }
  return lines;
}

/** Asserts every error line carries `code` and the text names `ids`; returns the lines. */
function refusedWith(r: RunResult, exit: number, code: ErrorCode, ids: readonly string[]): string[] {
  assert.equal(r.code, exit, `exit code; stderr: ${r.stderr}`);
  const lines = errorLines(r);
  for (const l of lines) assert.ok(l.startsWith(`error ${code}: `), `${code} expected: ${l}`);
  for (const id of ids) assert.ok(r.stderr.includes(id), `names ${id}: ${r.stderr}`);
  return lines;
}

const BAD_POD = `apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  hostNetwork: true
  restartPolicy: Sometimes
  containers:
    - name: app
      image: 127.0.0.1:9/berth/none:1
      comand: [sh]
`;

describe('issue 15: coded error lines', { timeout: 300_000 }, () => {
  let ok = true;
  let env: BerthEnv;
  let registry: TestRegistry | undefined;
  let hostile: ImageParts;
  let hostileRef = '';

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv('berth-errcodes-');
    registry = await startRegistry();
    // E2: an entry climbing out of the root. The unpacker refuses it (ERR_UNSAFE_CONTENT).
    hostile = imageOf([layerOf(tarOf(dir('etc'), file('../../../canary.txt', 'pwned\n')))]);
    await pushImageParts(registry.url, 'berth/hostile', '1', hostile);
    hostileRef = `${registry.host}/berth/hostile:1`;
  });

  after(async () => {
    if (env !== undefined) await cleanupEnv(env);
    await registry?.stop();
  });

  test('an invalid manifest: validate, apply and diff print ERR_INVALID_MANIFEST lines naming file:line:col and field; -o json carries the code', async (t) => {
    if (!ok) return t.skip();
    const bad = path.join(env.dir, 'bad.yaml');
    await fsp.writeFile(bad, BAD_POD);
    for (const cmd of [['validate'], ['apply'], ['diff']]) {
      const r = await berth(env, [...cmd, '-f', bad]);
      const lines = refusedWith(r, 2, 'ERR_INVALID_MANIFEST', [`${bad}:7:18: spec.restartPolicy: `, `${bad}:11:7: spec.containers[0].comand: `]);
      assert.match(lines.at(-1) ?? '', /^error ERR_INVALID_MANIFEST: 2 problem\(s\) in 1 file\(s\)/, cmd.join(' '));
    }
    const j = await berth(env, ['validate', '-f', bad, '-o', 'json']);
    assert.equal(j.code, 2, j.stderr);
    const out = JSON.parse(j.stdout) as { valid: boolean; problems: { code: string; file: string; field: string }[] };
    assert.deepEqual(out.problems.map((p) => [p.code, p.file, p.field]), [
      ['ERR_INVALID_MANIFEST', bad, 'spec.restartPolicy'],
      ['ERR_INVALID_MANIFEST', bad, 'spec.containers[0].comand'],
    ]);
  });

  test('regression unpack-refusal-without-code: a hostile layer refused at pull says ERR_UNSAFE_CONTENT, the ref and the layer digest', async (t) => {
    if (!ok) return t.skip();
    const layer = hostile.layers[0]?.digest ?? '';
    const r = await berth(env, ['images', 'pull', '-q', hostileRef]);
    const [line] = refusedWith(r, 1, 'ERR_UNSAFE_CONTENT', [hostileRef, layer, '../../../canary.txt']);
    assert.ok(line?.startsWith(`error ERR_UNSAFE_CONTENT: pull ${hostileRef}: `), `operation and ref first: ${line}`);
    assert.doesNotMatch(line ?? '', /pull \S+: pull /, 'no doubled operation');
    // The same refusal as a pod's pull step during apply.
    const pod = path.join(env.dir, 'hostile.yaml');
    await fsp.writeFile(pod, BAD_POD.replace('  restartPolicy: Sometimes\n', '').replace('      comand: [sh]\n', '').replace('127.0.0.1:9/berth/none:1', hostileRef));
    const a = await berth(env, ['apply', '-q', '-f', pod]);
    refusedWith(a, 1, 'ERR_UNSAFE_CONTENT', [hostileRef, layer]);
    // -o json: the code beside the message, in status (lastErrorCode, the conditions) and events.
    const st = await berth(env, ['status', 'web', '-o', 'json']);
    assert.equal(st.code, 0, st.stderr);
    const status = JSON.parse(st.stdout) as { pods: { lastError: string; lastErrorCode: string | null; conditions: { type: string; message: string; code?: string }[] }[] };
    assert.deepEqual(validateStatus(status), []);
    const web = status.pods[0];
    assert.equal(web?.lastErrorCode, 'ERR_UNSAFE_CONTENT', web?.lastError);
    assert.ok(web?.lastError.includes(layer), web?.lastError);
    assert.deepEqual(web?.conditions.filter((c) => c.code !== undefined).map((c) => [c.type, c.code]), [['Ready', 'ERR_UNSAFE_CONTENT'], ['Stalled', 'ERR_UNSAFE_CONTENT']]);
    const ev = await berth(env, ['events', '-o', 'json']);
    assert.equal(ev.code, 0, ev.stderr);
    const events = JSON.parse(ev.stdout) as { key: string; reason: string; type: string; message: string; code: string | null }[];
    assert.deepEqual(validateEvents(events), []);
    const failed = events.find((e) => e.key === `image/${hostileRef}` && e.reason === 'Failed');
    assert.equal(failed?.code, 'ERR_UNSAFE_CONTENT', JSON.stringify(events));
    assert.ok(failed?.message.includes(layer));
    assert.ok(events.filter((e) => e.type === 'Normal').every((e) => e.code === null), 'no code on Normal events');
  });

  test('an image the registry does not have: ERR_NOT_FOUND naming the ref; a malformed ref: ERR_INVALID_ARGUMENT', async (t) => {
    if (!ok) return t.skip();
    const missing = `${registry?.host ?? ''}/berth/none:1`;
    refusedWith(await berth(env, ['images', 'pull', '-q', missing]), 1, 'ERR_NOT_FOUND', [`pull ${missing}: not found`]);
    refusedWith(await berth(env, ['images', 'pull', '-q', 'Bad/Ref:1']), 2, 'ERR_INVALID_ARGUMENT', ['Bad/Ref:1']);
  });

  test('bad flag values berth checks itself: ERR_INVALID_ARGUMENT naming the flag and the value, exit 2', async (t) => {
    if (!ok) return t.skip();
    const good = path.join(env.dir, 'empty');
    await fsp.mkdir(good, { recursive: true });
    refusedWith(await berth(env, ['apply', '-f', good, '--wait', '--timeout', 'soon']), 2, 'ERR_INVALID_ARGUMENT', ['apply --timeout "soon"']);
    refusedWith(await berth(env, ['up', good, '--resync', '0']), 2, 'ERR_INVALID_ARGUMENT', ['up --resync "0"']);
    // Set-based selectors are read as kubectl reads them; a malformed one is refused whole.
    refusedWith(await berth(env, ['status', '-l', 'a in (b']), 2, 'ERR_INVALID_ARGUMENT', ['selector "a in (b"']);
  });

  test('an unknown pod: ERR_NOT_FOUND from status, stats, describe and delete', async (t) => {
    if (!ok) return t.skip();
    refusedWith(await berth(env, ['status', 'nope']), 1, 'ERR_NOT_FOUND', ['status default/nope: no such pod']);
    refusedWith(await berth(env, ['stats', 'nope']), 1, 'ERR_NOT_FOUND', ['stats default/nope']);
    refusedWith(await berth(env, ['describe', 'pod', 'nope']), 1, 'ERR_NOT_FOUND', ['default/nope']);
    refusedWith(await berth(env, ['delete', 'pod', 'nope']), 1, 'ERR_NOT_FOUND', ['delete pod default/nope: not found']);
  });

  test('regression open-state-full-disk-is-internal: a state database that cannot be opened on a full disk is ERR_RESOURCE_EXHAUSTED, not ERR_INTERNAL', async (t) => {
    if (!ok) return t.skip();
    const mnt = path.join(env.dir, 'full');
    await fsp.mkdir(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=512k,mode=0700', 'tmpfs', mnt]);
    try {
      await fillUp(path.join(mnt, 'filler'), 64 * 1024);
      const full = { ...env, root: path.join(mnt, 'root'), state: path.join(env.dir, 'full-state') };
      refusedWith(await berth(full, ['status']), 1, 'ERR_RESOURCE_EXHAUSTED', [`open state ${path.join(full.root, 'berth.db')}: `]);
    } finally {
      execFileSync('umount', [mnt]);
      await fsp.rm(path.join(env.dir, 'full-state'), { recursive: true, force: true });
    }
  });

  test('through the daemon socket the codes arrive unchanged', async (t) => {
    if (!ok) return t.skip();
    const watched = path.join(env.dir, 'watched');
    await fsp.mkdir(watched, { recursive: true });
    const up = await startDaemon(env, watched);
    try {
      const pull = await berth(env, ['images', 'pull', '-q', hostileRef]);
      refusedWith(pull, 1, 'ERR_UNSAFE_CONTENT', [`pull ${hostileRef}: `, hostile.layers[0]?.digest ?? '']);
      const bad = path.join(env.dir, 'bad.yaml');
      refusedWith(await berth(env, ['apply', '-f', bad]), 2, 'ERR_INVALID_MANIFEST', [`${bad}:7:18: spec.restartPolicy: `]);
      refusedWith(await berth(env, ['describe', 'pod', 'nope']), 1, 'ERR_NOT_FOUND', ['default/nope']);
      refusedWith(await berth(env, ['status', 'nope']), 1, 'ERR_NOT_FOUND', ['status default/nope: no such pod']);
    } finally {
      await stopDaemon(up, 'SIGTERM');
    }
  });
});

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { requireE2E } from '../helpers/prereq.js';
import { berth, cleanupEnv, makeEnv, type BerthEnv } from '../helpers/berth.js';

/** `berth diff` exits 0 no changes · 1 changes pending · 2 error (kubectl diff); apply of bad input exits 2. */
describe('exit codes of diff and apply', () => {
  let env: BerthEnv;
  let ok = true;
  before((t) => {
    ok = requireE2E(t);
    if (ok) env = makeEnv();
  });
  after(async () => {
    if (env !== undefined) await cleanupEnv(env);
  });

  const pod = (image: string): string => `apiVersion: v1
kind: Pod
metadata:
  name: app
spec:
  hostNetwork: true
  containers:
    - name: main
      image: ${image}
`;

  test('diff: 0 when nothing is declared and nothing runs', async (t) => {
    if (!ok) return t.skip();
    const dir = path.join(env.dir, 'empty');
    await fsp.mkdir(dir);
    const r = await berth(env, ['diff', '-f', dir]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '');
  });

  test('diff: 1 when a pod would be created (image missing: a pull is planned, nothing contacted)', async (t) => {
    if (!ok) return t.skip();
    const file = path.join(env.dir, 'app.yaml');
    await fsp.writeFile(file, pod('127.0.0.1:9/berth/none:1.0'));
    const r = await berth(env, ['diff', '-f', file]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stdout, /pull \(not present\)/);
    const j = await berth(env, ['diff', '-f', file, '-o', 'json']);
    assert.equal(j.code, 1);
    const parsed = JSON.parse(j.stdout) as { steps: { kind: string }[] };
    assert.deepEqual(
      parsed.steps.map((s) => s.kind),
      ['pull', 'create-pod', 'start'],
    );
  });

  test('diff: 2 for an invalid manifest, naming file, line and field', async (t) => {
    if (!ok) return t.skip();
    const file = path.join(env.dir, 'bad.yaml');
    await fsp.writeFile(file, pod('127.0.0.1:9/berth/none:1.0').replace('hostNetwork: true', 'hostNetwork: true\n  hostnetwork: true'));
    const r = await berth(env, ['diff', '-f', file]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:7:3: spec\\.hostnetwork: unknown field`));
  });

  test('diff -f - reads stdin: 1 for a pending pod, 2 for invalid YAML naming "-" and the line', async (t) => {
    if (!ok) return t.skip();
    const pending = await berth(env, ['diff', '-f', '-'], { input: pod('127.0.0.1:9/berth/none:1.0') });
    assert.equal(pending.code, 1, pending.stderr);
    assert.match(pending.stdout, /\+ pod default\/app \(-:1\)/);
    // regression: stdin-duplicate-pods — two documents with one name flapped apply forever.
    const dup = await berth(env, ['diff', '-f', '-'], { input: `${pod('127.0.0.1:9/a:1')}---\n${pod('127.0.0.1:9/b:1')}` });
    assert.equal(dup.code, 2);
    assert.match(dup.stderr, /^error ERR_INVALID_MANIFEST: -:\d+:1: metadata\.name: pod default\/app is also declared in -:1/m);
    const bad = await berth(env, ['diff', '-f', '-'], { input: 'apiVersion: v1\nkind: [\n' });
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^error ERR_INVALID_MANIFEST: -:\d+:\d+: yaml:/m);
  });

  test('diff: 2 for a path that does not exist', async (t) => {
    if (!ok) return t.skip();
    const r = await berth(env, ['diff', '-f', path.join(env.dir, 'missing')]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /no such file or directory/);
  });

  test('regression: empty-apply-prunes-all — apply of no objects is refused, except --prune of a directory', async (t) => {
    if (!ok) return t.skip();
    const r = await berth(env, ['apply', '-f', path.join(env.dir, 'empty')]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /no objects passed to apply/);
    await fsp.writeFile(path.join(env.dir, 'empty.yaml'), '# nothing here\n');
    const file = await berth(env, ['apply', '--prune', '-f', path.join(env.dir, 'empty.yaml')]);
    assert.equal(file.code, 2);
    const stdin = await berth(env, ['apply', '--prune', '-f', '-'], { input: '' });
    assert.equal(stdin.code, 2);
  });

  test('apply: 2 for an invalid manifest and nothing is recorded', async (t) => {
    if (!ok) return t.skip();
    const r = await berth(env, ['apply', '-f', path.join(env.dir, 'bad.yaml')]);
    assert.equal(r.code, 2);
    const ps = await berth(env, ['ps', '-o', 'json']);
    assert.deepEqual(JSON.parse(ps.stdout), []);
  });

  test('apply: 1 when the registry is unreachable, with the reference in the error', async (t) => {
    if (!ok) return t.skip();
    const r = await berth(env, ['apply', '-f', path.join(env.dir, 'app.yaml')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /127\.0\.0\.1:9\/berth\/none/);
  });

  test('up: 2 for a directory that does not exist', async (t) => {
    if (!ok) return t.skip();
    const r = await berth(env, ['up', path.join(env.dir, 'missing')]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /not a directory/);
  });

  test('up: 2 for a --resync that is not a number of seconds (regression: resync-nan-hot-loop)', async (t) => {
    if (!ok) return t.skip();
    for (const bad of ['abc', '0', '-5']) {
      const r = await berth(env, ['up', env.dir, '--resync', bad]);
      assert.equal(r.code, 2, bad);
      assert.match(r.stderr, /--resync/);
    }
  });

  test('regression: concurrent-first-open — berth processes opening a new root together all succeed', async (t) => {
    if (!ok) return t.skip();
    for (let round = 0; round < 6; round++) {
      const fresh: BerthEnv = { root: path.join(env.dir, `fresh-${round}`, 'root'), state: path.join(env.dir, `fresh-${round}`, 'state'), dir: env.dir };
      const runs = await Promise.all([0, 1, 2, 3, 4].map(() => berth(fresh, ['ps'])));
      for (const r of runs) assert.equal(r.code, 0, r.stderr);
    }
  });

  test('regression: subcommand-usage-exit-1 — usage errors exit 2 everywhere, never 1', async (t) => {
    if (!ok) return t.skip();
    for (const args of [['apply'], ['diff'], ['ps', '-o', 'xml'], ['ps', '--bogus'], ['images', 'bogus'], ['logs'], ['bogus']]) {
      const r = await berth(env, args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    }
  });

  test('regression: root-is-a-file — a --root or --state that is not a directory is exit 2 naming the flag', async (t) => {
    if (!ok) return t.skip();
    const f = path.join(env.dir, 'a-file');
    await fsp.writeFile(f, '');
    const r = await berth({ ...env, root: f }, ['ps']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--root .*a-file: not a directory/);
    const s = await berth({ ...env, state: path.join(f, 'x') }, ['ps']);
    assert.equal(s.code, 2);
    assert.match(s.stderr, /--state /);
  });

  test('help: every command has --help', async (t) => {
    if (!ok) return t.skip();
    for (const cmd of [[], ['apply'], ['diff'], ['delete'], ['up'], ['ps'], ['logs'], ['images'], ['images', 'pull'], ['check'], ['version']]) {
      const r = await berth(env, [...cmd, '--help']);
      assert.equal(r.code, 0, `${cmd.join(' ')} --help: ${r.stderr}`);
      assert.match(r.stdout, /Usage: berth/);
    }
  });
});

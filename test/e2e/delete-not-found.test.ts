import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { requireE2E } from '../helpers/prereq.js';
import { berth, cleanupEnv, makeEnv, type BerthEnv } from '../helpers/berth.js';

/**
 * `delete -f` of pods that do not exist, as kubectl: an error per missing pod and exit 1, unless
 * --ignore-not-found (regression delete-missing-silent: it printed "nothing to delete", exit 0).
 * Nothing is started: the pods are never applied.
 */
describe('e2e: delete of pods that do not exist', { timeout: 120_000 }, () => {
  let ok = true;
  let env: BerthEnv;
  before((t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv('berth-delnf-');
  });
  after(async () => {
    if (ok) await cleanupEnv(env);
  });

  test('regression delete-missing-silent: each missing pod is ERR_NOT_FOUND, exit 1; --ignore-not-found is exit 0', async (t) => {
    if (!ok) return t.skip();
    const file = path.join(env.dir, 'two.yaml');
    const pod = (n: string): string => `apiVersion: v1\nkind: Pod\nmetadata: {name: ${n}}\nspec: {hostNetwork: true, containers: [{name: c, image: busybox}]}\n`;
    await fsp.writeFile(file, `${pod('ghost-a')}---\n${pod('ghost-b')}`);
    const r = await berth(env, ['delete', '-f', file]);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, /^error ERR_NOT_FOUND: delete pod default\/ghost-a: not found$/m);
    assert.match(r.stderr, /^error ERR_NOT_FOUND: delete pod default\/ghost-b: not found$/m);
    const ignored = await berth(env, ['delete', '-f', file, '--ignore-not-found']);
    assert.equal(ignored.code, 0, ignored.stderr);
    assert.equal(ignored.stderr, '');
    assert.equal((await berth(env, ['delete', 'pod', 'ghost-a'])).code, 1);
    assert.equal((await berth(env, ['delete', 'pod', 'ghost-a', '--ignore-not-found'])).code, 0);
  });

  test('regression delete-leaves-configs: delete -f removes the file\'s ConfigMaps and Secrets too; delete secret NAME; a missing one is ERR_NOT_FOUND', async (t) => {
    if (!ok) return t.skip();
    const file = path.join(env.dir, 'configs.yaml');
    await fsp.writeFile(file, 'apiVersion: v1\nkind: Secret\nmetadata: {name: dbpass}\nstringData: {pw: hunter2}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\ndata: {a: "1"}\n');
    const a = await berth(env, ['apply', '-f', file]);
    assert.equal(a.code, 0, a.stderr);
    assert.doesNotMatch((await berth(env, ['diff', '-f', file])).stdout, /secret|configmap/);
    const d = await berth(env, ['delete', '-f', file]);
    assert.equal(d.code, 0, d.stderr);
    assert.match(d.stdout, /^- secret default\/dbpass: deleted$/m);
    assert.match(d.stdout, /^- configmap default\/app: deleted$/m);
    // Gone: an apply would create both again.
    const diff = await berth(env, ['diff', '-f', file]);
    assert.match(diff.stdout, /^\+ secret default\/dbpass/m);
    assert.match(diff.stdout, /^\+ configmap default\/app/m);
    const again = await berth(env, ['delete', '-f', file]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /^error ERR_NOT_FOUND: delete secret default\/dbpass: not found$/m);
    assert.equal((await berth(env, ['apply', '-f', file])).code, 0);
    const byName = await berth(env, ['delete', 'secret', 'dbpass']);
    assert.equal(byName.code, 0, byName.stderr);
    assert.match((await berth(env, ['diff', '-f', file])).stdout, /^\+ secret default\/dbpass/m);
    assert.equal((await berth(env, ['delete', 'cm', 'app'])).code, 0);
    assert.equal((await berth(env, ['delete', 'configmap', 'app'])).code, 1);
  });
});

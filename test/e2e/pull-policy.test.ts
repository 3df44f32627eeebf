import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { buildBusyboxImage, pushImage } from '../../scripts/fixture-image.js';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { freePort } from '../helpers/registry.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, cleanupEnv, httpGet, makeEnv, waitFor, type BerthEnv } from '../helpers/berth.js';

/**
 * imagePullPolicy: a moved tag is pulled first, then only the containers with
 * pullPolicy Always are replaced. regression: pull-policy-first-container-decides — the
 * first container using an image decided whether the registry was asked at all.
 */
describe('e2e: imagePullPolicy with a moved tag', { timeout: 300_000 }, () => {
  let demo: DemoFixture | undefined;
  let env: BerthEnv;
  let file: string;
  let ports: number[] = [];
  let ok = true;

  const podYaml = (name: string, port: number, policy: string): string => `apiVersion: v1
kind: Pod
metadata:
  name: ${name}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
    - name: httpd
      image: ${demo?.registry.host ?? ''}/berth/demo:1.0
      imagePullPolicy: ${policy}
      command: ["httpd", "-f", "-p", "127.0.0.1:${port}", "-h", "/var/www"]
`;

  const pids = async (): Promise<Record<string, number>> => {
    const rows = JSON.parse((await berth(env, ['ps', '-o', 'json'])).stdout) as { key: string; containers: { state: string; pid: number }[] }[];
    return Object.fromEntries(rows.map((r) => [r.key, r.containers.find((c) => c.state === 'running')?.pid ?? 0]));
  };

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv();
    demo = await startDemoFixture();
    ports = [await freePort(), await freePort()];
    file = path.join(env.dir, 'pods.yaml');
    // The IfNotPresent pod comes first: it must not stop the Always pod from being checked.
    await fsp.writeFile(file, `${podYaml('steady', ports[0] ?? 0, 'IfNotPresent')}---\n${podYaml('fresh', ports[1] ?? 0, 'Always')}`);
  });
  after(async () => {
    if (env !== undefined) await cleanupEnv(env);
    await demo?.stop();
  });

  test('tag moved: pull, replace the Always container, keep the IfNotPresent one', async (t) => {
    if (!ok || demo === undefined) return t.skip();
    const a = await berth(env, ['apply', '-f', file]);
    assert.equal(a.code, 0, a.stderr);
    const before = await pids();
    const same = await berth(env, ['diff', '-f', file]);
    assert.equal(same.code, 0, `nothing moved yet: ${same.stdout}`);

    await pushImage(demo.registry.url, 'berth/demo', '1.0', await buildBusyboxImage({ page: '<h1>berth demo v2</h1>\n' }));
    const d = await berth(env, ['diff', '-f', file]);
    assert.equal(d.code, 1);
    assert.match(d.stdout, /~ image .*berth\/demo:1\.0: pull \(registry has sha256:/);
    assert.match(d.stdout, /~ container default\/fresh\/httpd: replace .*image moved/);
    assert.doesNotMatch(d.stdout, /default\/steady/);

    const r = await berth(env, ['apply', '-f', file]);
    assert.equal(r.code, 0, r.stderr);
    const after = await pids();
    assert.equal(after['default/steady'], before['default/steady']);
    assert.notEqual(after['default/fresh'], before['default/fresh']);
    const page = await waitFor('new page', async () => {
      const res = await httpGet(`http://127.0.0.1:${ports[1] ?? 0}/`).catch(() => undefined);
      return res?.status === 200 ? res.body : undefined;
    });
    assert.match(page, /berth demo v2/);
    const again = await berth(env, ['diff', '-f', file]);
    assert.equal(again.code, 0, again.stdout);
  });
});

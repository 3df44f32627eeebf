import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildBusyboxImage, pushImage } from '../../scripts/fixture-image.js';
import { requireE2E, requireTools } from '../helpers/prereq.js';
import { berth, cleanupEnv, makeEnv, waitFor, type BerthEnv } from '../helpers/berth.js';
import { htpasswdEntry, startRegistry, type TestRegistry } from '../helpers/registry.js';

/**
 * Issue 13/14, imagePullSecrets: a pod pulls from a registry with htpasswd basic auth (the real
 * docker-registry) with the credentials of a kubernetes.io/dockerconfigjson Secret it names; without
 * the Secret the pull fails saying authentication is required, and the Secret's password never
 * appears in status, events or diff. The node's own config.json is empty (DOCKER_CONFIG).
 */
describe('e2e: imagePullSecrets (issues 13, 14)', { timeout: 300_000 }, () => {
  let ok = true;
  let env: BerthEnv;
  let dir: string;
  let registry: TestRegistry | undefined;
  let childEnv: NodeJS.ProcessEnv;
  const PASSWORD = 'pull-s3cret-42';

  before(async (t) => {
    ok = requireE2E(t) && requireTools(t, ['perl']);
    if (!ok) return;
    dir = mkdtempSync(path.join(os.tmpdir(), 'berth-pullsecret-'));
    const storageDir = path.join(dir, 'storage');
    // Push to an open registry, then serve the same storage behind htpasswd.
    const open = await startRegistry({ storageDir });
    try {
      await pushImage(open.url, 'berth/private', '1.0', await buildBusyboxImage());
    } finally {
      await open.stop();
    }
    writeFileSync(path.join(dir, 'htpasswd'), `${await htpasswdEntry('puller', PASSWORD)}\n`);
    registry = await startRegistry({ storageDir, auth: { htpasswd: { path: path.join(dir, 'htpasswd') } } });
    mkdirSync(path.join(dir, 'docker'));
    childEnv = { ...process.env, DOCKER_CONFIG: path.join(dir, 'docker') };
    env = makeEnv('berth-pullsecret-');
  });

  after(async () => {
    if (!ok) return;
    await berth(env, ['delete', '-f', path.join(dir, 'm')], { env: childEnv }).catch(() => undefined);
    await cleanupEnv(env);
    await registry?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const pod = (withSecret: boolean): string => `apiVersion: v1
kind: Pod
metadata: {name: private}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
${withSecret ? '  imagePullSecrets: [{name: regcred}]\n' : ''}  containers:
    - name: c
      image: ${registry?.host ?? ''}/berth/private:1.0
      command: ["sleep", "3600"]
`;
  const secret = (): string => `apiVersion: v1
kind: Secret
metadata: {name: regcred}
type: kubernetes.io/dockerconfigjson
stringData:
  .dockerconfigjson: '{"auths":{"${registry?.host ?? ''}":{"auth":"${Buffer.from(`puller:${PASSWORD}`).toString('base64')}"}}}'
`;

  test('regression: inprocess-apply-drops-configs — without the Secret the pull fails with "authentication required"; with it (applied in-process from the same directory) the pod runs', async (t) => {
    if (!ok) return t.skip();
    const m = path.join(dir, 'm');
    mkdirSync(m);
    writeFileSync(path.join(m, 'pod.yaml'), pod(false));
    const denied = await berth(env, ['apply', '-f', m], { env: childEnv });
    assert.equal(denied.code, 1, denied.stdout);
    assert.match(denied.stderr, /authentication required for 127\.0\.0\.1:\d+/);
    writeFileSync(path.join(m, 'pod.yaml'), pod(true));
    writeFileSync(path.join(m, 'secret.yaml'), secret());
    const r = await berth(env, ['apply', '-f', m], { env: childEnv });
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    await waitFor('private running', async () => {
      const s = JSON.parse((await berth(env, ['status', '-o', 'json'], { env: childEnv })).stdout) as { pods: { key: string; status: string }[] };
      return s.pods.find((p) => p.key === 'default/private')?.status === 'Running' ? true : undefined;
    });
    for (const args of [['status', '-o', 'json'], ['events', '-o', 'json'], ['diff', '-f', m], ['describe', 'pod', 'private']]) {
      const out = await berth(env, args, { env: childEnv });
      assert.ok(!out.stdout.includes(PASSWORD) && !out.stderr.includes(PASSWORD), `${args.join(' ')} shows the pull secret's password`);
      assert.ok(!out.stdout.includes(Buffer.from(`puller:${PASSWORD}`).toString('base64')), `${args.join(' ')} shows the encoded credentials`);
    }
  });

  test('regression always-check-without-pull-secrets: a moved tag of a private image with pullPolicy Always is seen through the pod\'s Secret and replaces the container', async (t) => {
    if (!ok) return t.skip();
    const m = path.join(dir, 'always');
    mkdirSync(m);
    writeFileSync(path.join(m, 'secret.yaml'), secret());
    writeFileSync(path.join(m, 'pod.yaml'), pod(true).replace('name: private', 'name: always').replace('      command:', '      imagePullPolicy: Always\n      command:'));
    const r = await berth(env, ['apply', '-f', m], { env: childEnv });
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    const ids = async (): Promise<(string | null)[]> => (JSON.parse((await berth(env, ['status', '-o', 'json'], { env: childEnv })).stdout) as { pods: { key: string; containers: { id: string | null; state: string }[] }[] }).pods.find((p) => p.key === 'default/always')?.containers.map((c) => (c.state === 'running' ? c.id : null)) ?? [];
    const first = await waitFor('always running', async () => ((await ids())[0] ?? undefined) ?? undefined);
    // The tag moves: another image pushed under it (through an open registry on the same storage).
    const open = await startRegistry({ storageDir: path.join(dir, 'storage') });
    try {
      await pushImage(open.url, 'berth/private', '1.0', await buildBusyboxImage({ user: 'nobody' }));
    } finally {
      await open.stop();
    }
    const d = await berth(env, ['diff', '-f', m], { env: childEnv });
    assert.equal(d.code, 1, `${d.stdout}\n${d.stderr}`);
    assert.match(d.stdout, /image moved/);
    const again = await berth(env, ['apply', '-f', m], { env: childEnv });
    assert.equal(again.code, 0, `${again.stdout}\n${again.stderr}`);
    const second = await waitFor('always replaced', async () => {
      const id = (await ids())[0];
      return id !== null && id !== undefined && id !== first ? id : undefined;
    });
    assert.notEqual(second, first);
    await berth(env, ['delete', '-f', m], { env: childEnv });
  });
});

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, cleanupEnv, makeEnv, mountsUnder, startDaemon, stopDaemon, waitFor, type berthUp, type BerthEnv } from '../helpers/berth.js';

/**
 * Issue 13, ConfigMap and Secret: env (valueFrom, envFrom), projected volumes updated in place
 * (the kubelet's ..data swap) without a restart, env-dependent edits restarting only the
 * container that reads them, secret values never printed; emptyDir; hostPath under the
 * operator's allow-list only; a subPath symlink out of its volume refused. Real runc, conmon,
 * overlay, a `berth up` watching the directory.
 */

interface StatusPod {
  key: string;
  status: string;
  lastError: string;
  containers: { name: string; state: string; pid: number | null; id: string | null }[];
}

const SECRET = 's3cr3t-Value-4711';
const SECRET2 = 'n3w-s3cr3t-0815';

describe('e2e: ConfigMaps, Secrets and volumes (issue 13)', { timeout: 600_000 }, () => {
  let ok = true;
  let env: BerthEnv;
  let demo: DemoFixture | undefined;
  let dir: string;
  let up: ReturnType<typeof berthUp> | undefined;
  let allowed: string;

  const status = async (): Promise<StatusPod[]> => {
    const r = await berth(env, ['status', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as { pods: StatusPod[] }).pods;
  };
  const container = async (pod: string, name: string): Promise<StatusPod['containers'][number] | undefined> =>
    (await status()).find((p) => p.key === `default/${pod}`)?.containers.find((c) => c.name === name);
  const logs = async (target: string): Promise<string> => (await berth(env, ['logs', target])).stdout;

  const configMap = (conf: string, greeting: string): string => `apiVersion: v1
kind: ConfigMap
metadata:
  name: app-config
data:
  greeting: ${greeting}
  app.conf: "${conf}"
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: app-env
data:
  mode: fast
`;
  const secret = (value: string): string => `apiVersion: v1
kind: Secret
metadata:
  name: creds
type: Opaque
stringData:
  password: ${value}
`;
  const pod = (): string => `apiVersion: v1
kind: Pod
metadata:
  name: cfg
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  volumes:
    - name: conf
      configMap: {name: app-config}
    - name: creds
      secret: {secretName: creds, defaultMode: 0o400}
    - name: scratch
      emptyDir: {}
  containers:
    - name: reader
      image: ${demo?.registry.host ?? ''}/berth/demo:1.0
      env:
        - name: GREETING
          valueFrom: {configMapKeyRef: {name: app-config, key: greeting}}
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        - name: POD_IP
          valueFrom: {fieldRef: {fieldPath: status.podIP}}
        - name: URL
          value: "http://$(POD_IP)/$(POD_NAME)/$(GREETING)"
      envFrom:
        - prefix: CFG_
          configMapRef: {name: app-env}
      command: ["sh", "-c", "echo G=$GREETING N=$POD_NAME F=$CFG_mode; echo URL=$URL IP=$POD_IP; echo up > /scratch/seen; while :; do echo CONF=$(cat /etc/conf/app.conf); sleep 1; done"]
      volumeMounts:
        - {name: conf, mountPath: /etc/conf}
        - {name: scratch, mountPath: /scratch}
    - name: other
      image: ${demo?.registry.host ?? ''}/berth/demo:1.0
      env:
        - name: PASSWORD
          valueFrom: {secretKeyRef: {name: creds, key: password}}
      command: ["sh", "-c", "echo LEN=\${#PASSWORD} FILE=$(cat /etc/creds/password | wc -c); while :; do sleep 1; done"]
      volumeMounts:
        - {name: creds, mountPath: /etc/creds}
        - {name: scratch, mountPath: /data, subPath: sub}
`;

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv('berth-cfg-');
    demo = await startDemoFixture();
    dir = path.join(env.dir, 'manifests');
    allowed = path.join(env.dir, 'allowed');
    await fsp.mkdir(dir);
    await fsp.mkdir(allowed);
    await fsp.writeFile(path.join(dir, 'cm.yaml'), configMap('a=1', 'hello'));
    await fsp.writeFile(path.join(dir, 'secret.yaml'), secret(SECRET));
    await fsp.writeFile(path.join(dir, 'pod.yaml'), pod());
    up = await startDaemon(env, dir, { extra: ['--resync', '2'] });
  });

  after(async () => {
    if (!ok) return;
    if (up !== undefined) await stopDaemon(up);
    await berth(env, ['delete', '-f', dir]).catch(() => undefined);
    await cleanupEnv(env);
    await demo?.stop();
  });

  test('env from a ConfigMap key, a Secret key, envFrom with prefix and metadata fieldRef; volumes mounted', async (t) => {
    if (!ok) return t.skip();
    await waitFor('cfg running', async () => ((await status()).find((p) => p.key === 'default/cfg')?.status === 'Running' ? true : undefined), 60_000);
    const out = await waitFor('reader output', async () => {
      const l = await logs('cfg/reader');
      return l.includes('CONF=a=1') ? l : undefined;
    });
    assert.match(out, /^G=hello N=cfg F=fast$/m);
    // A literal expands the variables before it, a runtime field (status.podIP) included.
    const url = /^URL=(\S+) IP=(\S+)$/m.exec(out);
    assert.ok(url !== null, out);
    assert.equal(url[1], `http://${url[2] ?? ''}/cfg/hello`);
    const other = await waitFor('other output', async () => {
      const l = await logs('cfg/other');
      return l.includes('LEN=') ? l : undefined;
    });
    assert.match(other, new RegExp(`^LEN=${SECRET.length} FILE=\\s*${SECRET.length}$`, 'm'));
    // The emptyDir is one directory for both containers; the subPath was created inside it.
    const vol = path.join(env.root, 'pods', 'default_cfg', 'volumes');
    assert.equal((await fsp.readFile(path.join(vol, 'scratch', 'seen'), 'utf8')).trim(), 'up');
    assert.ok((await fsp.stat(path.join(vol, 'scratch', 'sub'))).isDirectory());
    // The secret volume is a tmpfs, its file mode as asked; the configMap volume uses ..data.
    assert.ok((await mountsUnder(env.dir)).includes(path.join(vol, 'creds')), 'secret volume on tmpfs');
    assert.equal((await fsp.lstat(path.join(vol, 'creds', '..data', 'password'))).mode & 0o777, 0o400);
    assert.equal(await fsp.readlink(path.join(vol, 'conf', 'app.conf')), '..data/app.conf');
  });

  test('a ConfigMap edit reaches the mounted file without a restart; a key env reads restarts only its container', async (t) => {
    if (!ok) return t.skip();
    const reader = await container('cfg', 'reader');
    const other = await container('cfg', 'other');
    await fsp.writeFile(path.join(dir, 'cm.yaml'), configMap('a=2', 'hello'));
    await waitFor('mounted file updated', async () => ((await logs('cfg/reader')).includes('CONF=a=2') ? true : undefined), 30_000);
    assert.equal((await container('cfg', 'reader'))?.pid, reader?.pid, 'reader not restarted by a file-only change');
    assert.equal((await container('cfg', 'other'))?.pid, other?.pid);
    await fsp.writeFile(path.join(dir, 'cm.yaml'), configMap('a=2', 'bonjour'));
    const replaced = await waitFor('reader replaced', async () => {
      const c = await container('cfg', 'reader');
      return c?.state === 'running' && c.id !== reader?.id ? c : undefined;
    }, 30_000);
    assert.notEqual(replaced.pid, reader?.pid);
    assert.match(await logs('cfg/reader'), /^G=bonjour N=cfg F=fast$/m);
    assert.equal((await container('cfg', 'other'))?.pid, other?.pid, 'other does not read greeting and keeps running');
  });

  test('regression cli-pod-volumes-never-refresh: a ConfigMap applied again reaches the files of a pod applied from the CLI, without a restart', async (t) => {
    if (!ok) return t.skip();
    const cli = path.join(env.dir, 'cli');
    await fsp.mkdir(cli, { recursive: true });
    const cm = (v: string): string => `apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cli-config}\ndata: {v: ${v}}\n`;
    await fsp.writeFile(path.join(cli, 'cm.yaml'), cm('one'));
    await fsp.writeFile(
      path.join(cli, 'pod.yaml'),
      `apiVersion: v1
kind: Pod
metadata: {name: clipod}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  volumes: [{name: c, configMap: {name: cli-config}}]
  containers:
    - name: main
      image: ${demo?.registry.host ?? ''}/berth/demo:1.0
      command: ["sh", "-c", "while :; do echo V=$(cat /c/v); sleep 1; done"]
      volumeMounts: [{name: c, mountPath: /c}]
`,
    );
    assert.equal((await berth(env, ['apply', '-f', path.join(cli, 'cm.yaml')])).code, 0);
    const a = await berth(env, ['apply', '-f', path.join(cli, 'pod.yaml')]);
    assert.equal(a.code, 0, a.stderr);
    const first = await waitFor('clipod running', async () => {
      const c = await container('clipod', 'main');
      return c?.state === 'running' ? c : undefined;
    }, 60_000);
    // The container prints the file (a runc exec under CI's chrooted root does not see the container's mounts).
    await waitFor('first value', async () => ((await logs('clipod')).includes('V=one') ? true : undefined), 30_000);
    await fsp.writeFile(path.join(cli, 'cm.yaml'), cm('two'));
    assert.equal((await berth(env, ['apply', '-f', path.join(cli, 'cm.yaml')])).code, 0);
    await waitFor('file updated', async () => ((await logs('clipod')).includes('V=two') ? true : undefined), 30_000);
    await new Promise((r) => setTimeout(r, 5000)); // resyncs (every 2 s) leave it alone
    assert.equal((await container('clipod', 'main'))?.pid, first.pid, 'not restarted');
    assert.equal((await berth(env, ['delete', '-f', cli])).code, 0);
  });

  test('a Secret value never appears in diff, status, describe, events, ps or berth output; a change is shown masked', async (t) => {
    if (!ok) return t.skip();
    const edited = path.join(env.dir, 'secret-edit.yaml');
    await fsp.writeFile(edited, secret(SECRET2));
    const diff = await berth(env, ['diff', '-f', dir]);
    await fsp.writeFile(path.join(dir, 'secret.yaml'), secret(SECRET2));
    const other = await waitFor('other replaced for the new secret', async () => {
      const l = await logs('cfg/other');
      return l.includes(`LEN=${SECRET2.length}`) ? l : undefined;
    }, 30_000);
    assert.ok(other.length > 0);
    const outputs = [
      diff.stdout,
      diff.stderr,
      (await berth(env, ['diff', '-f', dir, '-o', 'json'])).stdout,
      (await berth(env, ['status', '-o', 'json'])).stdout,
      (await berth(env, ['status', '-o', 'yaml'])).stdout,
      (await berth(env, ['describe', 'pod', 'cfg'])).stdout,
      (await berth(env, ['describe', 'pod', 'cfg', '-o', 'json'])).stdout,
      (await berth(env, ['events', '-o', 'json'])).stdout,
      (await berth(env, ['ps', '-o', 'json'])).stdout,
      (await berth(env, ['ps', '-o', 'yaml'])).stdout,
      up?.output() ?? '',
    ];
    for (const [i, text] of outputs.entries()) {
      for (const v of [SECRET, SECRET2, Buffer.from(SECRET).toString('base64'), Buffer.from(SECRET2).toString('base64')]) {
        assert.ok(!text.includes(v), `output ${i} shows a secret value`);
      }
    }
    const describe = (await berth(env, ['describe', 'pod', 'cfg'])).stdout;
    assert.match(describe, /PASSWORD=<set from a Secret>/);
  });

  test('diff masks a changed secret env value', async (t) => {
    if (!ok) return t.skip();
    const copy = path.join(env.dir, 'diffcase');
    await fsp.mkdir(copy);
    for (const f of ['cm.yaml', 'pod.yaml']) await fsp.copyFile(path.join(dir, f), path.join(copy, f));
    await fsp.writeFile(path.join(copy, 'secret.yaml'), secret('another-value-99'));
    const d = await berth(env, ['diff', '-f', copy]);
    assert.equal(d.code, 1, d.stderr);
    assert.match(d.stdout, /env\.PASSWORD: \*\*\* \(before\) → \*\*\* \(after\)/);
    // Regression config-changes-invisible: the Secret itself is a change too, by key name only.
    assert.match(d.stdout, /^~ secret default\/creds: update \(data: password\)$/m);
    assert.ok(!d.stdout.includes('another-value-99') && !d.stdout.includes(SECRET2));
  });

  test('hostPath: refused outside the allow-list (exit 2, naming the field), mounted inside it', async (t) => {
    if (!ok) return t.skip();
    const file = path.join(env.dir, 'host.yaml');
    const hostPod = (p: string): string => `apiVersion: v1
kind: Pod
metadata: {name: hostvol}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  volumes: [{name: h, hostPath: {path: ${p}, type: DirectoryOrCreate}}]
  containers:
    - name: c
      image: ${demo?.registry.host ?? ''}/berth/demo:1.0
      command: ["sh", "-c", "echo from-pod > /h/written; sleep 3600"]
      volumeMounts: [{name: h, mountPath: /h}]
`;
    await fsp.writeFile(file, hostPod('/etc'));
    const v = await berth(env, ['validate', '-f', file]);
    assert.equal(v.code, 2);
    assert.match(v.stderr + v.stdout, /spec\.volumes\[0\]\.hostPath\.path: hostPath \/etc is not allowed: no host path is allowed unless the operator allows a prefix \(--allow-host-path PREFIX\)/);
    // The policy is the operator's: validate with it names the allowed prefixes.
    const refused = await berth(env, ['--allow-host-path', allowed, 'validate', '-f', file]);
    assert.equal(refused.code, 2, refused.stdout);
    assert.match(refused.stderr + refused.stdout, new RegExp(`hostPath /etc is outside the allowed host paths \\(${allowed}\\)`));
    // Through the daemon its own policy applies (started without --allow-host-path): refused too.
    const viaDaemon = await berth(env, ['apply', '-f', file]);
    assert.equal(viaDaemon.code, 2, viaDaemon.stdout);
    // Inside the allow-list: applied in-process (the daemon was started without the option).
    await fsp.writeFile(file, hostPod(path.join(allowed, 'data')));
    if (up !== undefined) await stopDaemon(up, 'SIGTERM');
    up = undefined;
    const r = await berth(env, ['--allow-host-path', allowed, 'apply', '-f', file]);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    await waitFor('pod wrote into the host path', async () => ((await fsp.readFile(path.join(allowed, 'data', 'written'), 'utf8').catch(() => '')).includes('from-pod') ? true : undefined));
    const d = await berth(env, ['--allow-host-path', allowed, 'delete', '-f', file]);
    assert.equal(d.code, 0, d.stderr);
    assert.ok((await fsp.stat(path.join(allowed, 'data', 'written'))).isFile(), 'deleting the pod never removes a hostPath');
  });

  test('regression hostpath-symlink-escapes-allow-list: a symlink inside an allowed directory cannot lead a hostPath out; regression hostpath-untyped-missing: an untyped missing path is made', async (t) => {
    if (!ok) return t.skip();
    if (up !== undefined) await stopDaemon(up, 'SIGTERM');
    up = undefined;
    const canary = path.join(env.dir, 'host-canary');
    await fsp.mkdir(canary);
    // What a container with the allowed directory mounted could do: a link from inside it to elsewhere.
    await fsp.symlink(canary, path.join(allowed, 'escape'));
    const file = path.join(env.dir, 'escape.yaml');
    const hostPod = (name: string, p: string, type: string): string => `apiVersion: v1
kind: Pod
metadata: {name: ${name}}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  volumes: [{name: h, hostPath: {path: ${p}${type !== '' ? `, type: ${type}` : ''}}}]
  containers:
    - name: c
      image: ${demo?.registry.host ?? ''}/berth/demo:1.0
      command: ["sh", "-c", "echo from-pod > /h/written; sleep 3600"]
      volumeMounts: [{name: h, mountPath: /h}]
`;
    for (const [type, sub] of [['Directory', ''], ['', ''], ['DirectoryOrCreate', '/made']] as const) {
      await fsp.writeFile(file, hostPod('escape', path.join(allowed, 'escape') + sub, type));
      const r = await berth(env, ['--allow-host-path', allowed, 'apply', '-f', file]);
      assert.notEqual(r.code, 0, `type ${type || '(none)'}${sub}: ${r.stdout}`);
      assert.match(r.stderr + r.stdout, /resolves to \S*host-canary\S*, outside the allowed host paths/);
      assert.deepEqual(await fsp.readdir(canary), [], 'nothing made or written outside the allow-list');
      await berth(env, ['--allow-host-path', allowed, 'delete', '-f', file]);
    }
    // Untyped and missing: made as a directory (containerd's CRI makes a missing bind source), then used.
    await fsp.writeFile(file, hostPod('untyped', path.join(allowed, 'new', 'dir'), ''));
    const made = await berth(env, ['--allow-host-path', allowed, 'apply', '-f', file]);
    assert.equal(made.code, 0, `${made.stdout}\n${made.stderr}`);
    await waitFor('pod wrote into the made path', async () => ((await fsp.readFile(path.join(allowed, 'new', 'dir', 'written'), 'utf8').catch(() => '')).includes('from-pod') ? true : undefined));
    const d = await berth(env, ['--allow-host-path', allowed, 'delete', '-f', file]);
    assert.equal(d.code, 0, d.stderr);
  });

  test('regression: subpath-symlink-escape — a subPath whose symlink leaves the volume is refused, the canary untouched', async (t) => {
    if (!ok) return t.skip();
    // A container (or anyone) planted a symlink in the emptyDir that points out of the volume.
    const vol = path.join(env.root, 'pods', 'default_cfg', 'volumes', 'scratch');
    const canary = path.join(env.dir, 'canary');
    await fsp.mkdir(canary);
    await fsp.writeFile(path.join(canary, 'keep'), 'canary');
    await fsp.symlink(canary, path.join(vol, 'escape'));
    const text = (await fsp.readFile(path.join(dir, 'pod.yaml'), 'utf8')).replace('subPath: sub', 'subPath: escape');
    await fsp.writeFile(path.join(dir, 'pod.yaml'), text);
    const r = await berth(env, ['apply', '-f', dir]);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr + r.stdout, /subPath "escape" leaves the volume/);
    assert.equal(await fsp.readFile(path.join(canary, 'keep'), 'utf8'), 'canary');
    const pods = await status();
    assert.match(pods.find((p) => p.key === 'default/cfg')?.lastError ?? '', /leaves the volume/);
  });

  test('deleting the pod unmounts and removes its volumes', async (t) => {
    if (!ok) return t.skip();
    const r = await berth(env, ['delete', '-f', dir]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((await mountsUnder(env.dir)).filter((m) => m.includes(`${path.sep}pods${path.sep}`)), []);
    await assert.rejects(fsp.stat(path.join(env.root, 'pods', 'default_cfg')));
  });
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatProblem, parseManifestText } from '../../src/reconciler/manifest.js';
import { plan } from '../../src/reconciler/plan.js';
import { resolvePods } from '../../src/reconciler/resolve.js';
import type { DesiredConfig, DesiredPod } from '../../src/reconciler/desired.js';

const CM = (conf: string, greeting: string): string => `apiVersion: v1
kind: ConfigMap
metadata: {name: app}
data:
  greeting: ${greeting}
  app.conf: "${conf}"
binaryData:
  blob: AAEC
`;
const SECRET = `apiVersion: v1
kind: Secret
metadata: {name: creds}
data:
  password: b2xk
stringData:
  password: new-pw
  user: admin
`;
const POD = `apiVersion: v1
kind: Pod
metadata: {name: web, labels: {tier: front}}
spec:
  hostNetwork: true
  volumes:
    - {name: conf, configMap: {name: app, items: [{key: app.conf, path: etc/app.conf, mode: 0o600}]}}
  containers:
    - name: a
      image: busybox
      env:
        - {name: GREETING, valueFrom: {configMapKeyRef: {name: app, key: greeting}}}
        - {name: TIER, valueFrom: {fieldRef: {fieldPath: "metadata.labels['tier']"}}}
        - {name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        - {name: user, value: inline-wins}
      envFrom: [{secretRef: {name: creds}}]
      volumeMounts: [{name: conf, mountPath: /etc/conf}]
    - name: b
      image: busybox
      volumeMounts: [{name: conf, mountPath: /conf}]
`;

function load(...docs: string[]): { pods: DesiredPod[]; configs: DesiredConfig[] } {
  const r = parseManifestText(docs.join('---\n'), '/m/x.yaml');
  assert.deepEqual(r.problems.map(formatProblem), []);
  return { pods: r.pods, configs: r.configs };
}

test('issue 13: ConfigMap and Secret load as base64 data; stringData wins over data', () => {
  const { configs } = load(CM('a=1', 'hi'), SECRET);
  const cm = configs.find((c) => c.kind === 'ConfigMap');
  assert.equal(cm?.key, 'configmap/default/app');
  assert.equal(Buffer.from(cm?.data['greeting'] ?? '', 'base64').toString(), 'hi');
  assert.deepEqual([...Buffer.from(cm?.data['blob'] ?? '', 'base64')], [0, 1, 2]);
  const sec = configs.find((c) => c.kind === 'Secret');
  assert.equal(Buffer.from(sec?.data['password'] ?? '', 'base64').toString(), 'new-pw');
});

test('issue 13: env, envFrom and fieldRefs resolve as the kubelet does; env wins over envFrom; secrets are flagged', () => {
  const { pods, configs } = load(CM('a=1', 'hi'), SECRET, POD);
  const [pod] = resolvePods(pods, configs);
  const a = pod?.containers.find((c) => c.name === 'a');
  assert.deepEqual(a?.env, [
    { name: 'password', value: 'new-pw', secret: true },
    { name: 'user', value: 'inline-wins' },
    { name: 'GREETING', value: 'hi' },
    { name: 'TIER', value: 'front' },
    { name: 'IP', value: '', from: 'status.podIP' },
  ]);
  assert.equal(a?.configError, undefined);
  // Projection: only the listed item, at its path, with its mode.
  assert.deepEqual(pod?.projections?.map((p) => ({ v: p.volume, files: p.files.map((f) => [f.path, Buffer.from(f.data, 'base64').toString(), f.mode]) })), [
    { v: 'conf', files: [['etc/app.conf', 'a=1', 0o600]] },
  ]);
  // Resolving an already resolved (recorded) pod again gives the same pod.
  assert.deepEqual(resolvePods(resolvePods(pods, configs), configs), resolvePods(pods, configs));
});

test('issue 13: a mounted-only change moves the projection, not a hash; a change env reads replaces only that container', () => {
  const before = resolvePods(load(CM('a=1', 'hi'), SECRET, POD).pods, load(CM('a=1', 'hi'), SECRET).configs)[0];
  const fileOnly = resolvePods(load(POD).pods, load(CM('a=2', 'hi'), SECRET).configs)[0];
  assert.notEqual(fileOnly?.projections?.[0]?.hash, before?.projections?.[0]?.hash);
  assert.deepEqual(fileOnly?.containers.map((c) => c.specHash), before?.containers.map((c) => c.specHash));
  const envChange = resolvePods(load(POD).pods, load(CM('a=1', 'hello'), SECRET).configs)[0];
  assert.notEqual(envChange?.containers[0]?.specHash, before?.containers[0]?.specHash);
  assert.equal(envChange?.containers[1]?.specHash, before?.containers[1]?.specHash);
});

test('issue 13: a missing ConfigMap, Secret or key is CreateContainerConfigError for the containers that need it; optional ones are skipped', () => {
  const { pods } = load(POD);
  const [pod] = resolvePods(pods, load(SECRET).configs);
  assert.match(pod?.containers[0]?.configError ?? '', /env GREETING: ConfigMap default\/app not found/);
  // b mounts the volume whose ConfigMap is missing.
  assert.match(pod?.containers[1]?.configError ?? '', /volume conf: ConfigMap default\/app not found/);
  const p = plan({ desired: pod !== undefined ? [pod] : [], observed: [], images: { 'docker.io/library/busybox:latest': { local: 'sha256:aa', localTop: 'sha256:aa' } } });
  assert.deepEqual(p.steps.map((s) => s.kind), ['create-pod']);
  assert.deepEqual(p.blocked.map((b) => b.key), ['default/web/a', 'default/web/b']);
  assert.match(p.blocked[0]?.reason ?? '', /^CreateContainerConfigError: /);
  const optional = load(POD.replace('key: greeting}', 'key: greeting, optional: true}').replace("configMap: {name: app,", 'configMap: {name: app, optional: true,')).pods;
  const [ok] = resolvePods(optional, load(SECRET).configs);
  assert.deepEqual(ok?.containers.map((c) => c.configError), [undefined, undefined]);
  assert.equal(ok?.containers[0]?.env.some((e) => e.name === 'GREETING'), false);
});

test('issue 13: manifest checks — volumes, mounts, subPath, env sources, keys, base64, ambiguous octal modes', () => {
  const problems = (text: string): string[] => parseManifestText(text, '/m/x.yaml').problems.map(formatProblem);
  assert.deepEqual(problems(POD.replace('mode: 0o600', 'mode: 0400')), ['/m/x.yaml:7:93: mode: 0400 is ambiguous: YAML 1.2 reads it as decimal 400, kubectl as octal 256; write 256 or 0o400']);
  assert.match(problems(POD.replace('mountPath: /conf}', 'mountPath: /conf, subPath: ../x}'))[0] ?? '', /subPath: "\.\.\/x" must be a relative path without \.\. components/);
  assert.match(problems(POD.replace('{name: conf, mountPath: /conf}', '{name: cnof, mountPath: /conf}'))[0] ?? '', /volumeMounts\[0\]\.name: no volume named "cnof" in spec\.volumes \(volumes: conf\)/);
  assert.match(problems(POD.replace('mountPath: /conf}', 'mountPath: /proc/x}'))[0] ?? '', /is under \/proc, \/sys or \/dev/);
  assert.match(problems(POD.replace('path: etc/app.conf', 'path: ../app.conf'))[0] ?? '', /items\[0\]\.path: "\.\.\/app\.conf" must be a relative path/);
  assert.match(problems(POD.replace('status.podIP', 'spec.hostAliases'))[0] ?? '', /fieldPath: "spec\.hostAliases" is not a field berth provides/);
  assert.match(problems(POD.replace('envFrom: [{secretRef: {name: creds}}]', 'envFrom: [{}]'))[0] ?? '', /envFrom\[0\]: set exactly one of configMapRef and secretRef/);
  assert.match(problems(CM('a', 'b').replace('blob: AAEC', 'blob: "not base64!"'))[0] ?? '', /binaryData\.blob/);
  assert.match(problems(CM('a', 'b').replace('blob: AAEC', 'greeting: AAEC'))[0] ?? '', /key "greeting" is in both data and binaryData/);
  assert.match(problems(CM('a', 'b').replace('app.conf:', '"..bad":'))[0] ?? '', /data/);
});

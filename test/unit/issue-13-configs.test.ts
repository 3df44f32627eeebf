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
  // b mounts the volume whose ConfigMap is missing; a needs it for its env — and a volume that
  // cannot be set up stops every container of the pod (regression failed-volume-blocks-only-its-users).
  assert.match(pod?.containers[1]?.configError ?? '', /volume conf: ConfigMap default\/app not found/);
  assert.match(pod?.containers[0]?.configError ?? '', /volume conf: ConfigMap default\/app not found/);
  const sidecar = load(POD.replace("      volumeMounts: [{name: conf, mountPath: /conf}]\n", '')).pods;
  assert.match(resolvePods(sidecar, load(SECRET).configs)[0]?.containers[1]?.configError ?? '', /volume conf: ConfigMap default\/app not found/, 'b mounts nothing now and still waits');
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
  // Regression quoted-mode-string-refused: a quoted "0644" is a string, under a key named mode or not.
  assert.deepEqual(problems(CM('a=1', 'hi').replace('  greeting: hi\n', '  greeting: hi\n  mode: "0644"\n')), []);
  assert.deepEqual(problems(POD.replace('labels: {tier: front}', 'labels: {tier: front, mode: "0700"}')), []);
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

import { expandEnv } from '../../src/runtime/tasks/spec.js';
import { changedFields } from '../../src/reconciler/plan.js';

/** The env a container of the loaded pod gets: resolved, then expanded as at its start (no podIP here). */
function envOf(docs: string[], container = 'c'): Record<string, string> {
  const { pods, configs } = load(...docs);
  const c = resolvePods(pods, configs)[0]?.containers.find((x) => x.name === container);
  assert.ok(c !== undefined);
  assert.equal(c.configError, undefined);
  return Object.fromEntries(expandEnv(c.env.map((e) => ({ name: e.name, value: e.value, ...(e.verbatim === true ? { verbatim: true } : {}), ...(e.overridden === true ? { overridden: true } : {}) }))).map((e) => [e.name, e.value]));
}

const podEnv = (env: string, envFrom = ''): string => `apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  hostNetwork: true
  containers:
    - name: c
      image: busybox
${env}${envFrom}`;

test('regression env-expansion-of-references: values from Secrets, ConfigMaps and envFrom are never expanded', () => {
  const secret = `apiVersion: v1
kind: Secret
metadata: {name: s}
stringData: {pw: "pa$$w(rd)$(HOME)", other: "x$$y"}
`;
  const cm = `apiVersion: v1
kind: ConfigMap
metadata: {name: m}
data: {tpl: "$(HOME)/$$"}
`;
  const env = envOf([secret, cm, podEnv(
    '      env:\n        - {name: HOME, value: /root}\n        - {name: PW, valueFrom: {secretKeyRef: {name: s, key: pw}}}\n        - {name: TPL, valueFrom: {configMapKeyRef: {name: m, key: tpl}}}\n        - {name: LIT, value: "$(HOME)/$$x"}\n',
    '      envFrom: [{secretRef: {name: s}}]\n',
  )]);
  assert.equal(env['PW'], 'pa$$w(rd)$(HOME)');
  assert.equal(env['pw'], 'pa$$w(rd)$(HOME)');
  assert.equal(env['other'], 'x$$y');
  assert.equal(env['TPL'], '$(HOME)/$$');
  // A literal value is expanded: $(VAR) and $$.
  assert.equal(env['LIT'], '/root/$x');
});

test('regression env-expansion-order: a literal sees envFrom values and the env entries before it, as the kubelet expands', () => {
  const cm = `apiVersion: v1
kind: ConfigMap
metadata: {name: m}
data: {A: "1", B: "2"}
`;
  // env replaces B before A reads it: 3.
  assert.deepEqual(envOf([cm, podEnv('      env:\n        - {name: B, value: "3"}\n        - {name: A, value: "$(B)"}\n', '      envFrom: [{configMapRef: {name: m}}]\n')]), { A: '3', B: '3' });
  // A reads B before env replaces it: envFrom's 2.
  assert.deepEqual(envOf([cm, podEnv('      env:\n        - {name: A, value: "$(B)"}\n        - {name: B, value: "3"}\n', '      envFrom: [{configMapRef: {name: m}}]\n')]), { A: '2', B: '3' });
  // An unknown reference and an unclosed one stay as written; $$ after them is still unescaped.
  assert.deepEqual(envOf([podEnv('      env:\n        - {name: X, value: "$(NOPE) $(x $$y"}\n')]), { X: '$(NOPE) $(x $y' });
});

test('regression binarydata-in-env: binaryData keys are files only — envFrom skips them, a configMapKeyRef to one fails', () => {
  const cm = `apiVersion: v1
kind: ConfigMap
metadata: {name: m}
data: {text: hello}
binaryData: {blob: AAEC}
`;
  assert.deepEqual(envOf([cm, podEnv('', '      envFrom: [{configMapRef: {name: m}}]\n')]), { text: 'hello' });
  const { pods, configs } = load(cm, podEnv('      env:\n        - {name: B, valueFrom: {configMapKeyRef: {name: m, key: blob}}}\n'));
  assert.match(resolvePods(pods, configs)[0]?.containers[0]?.configError ?? '', /ConfigMap default\/m has no key "blob"/);
});

test('regression env-order-diff-shows-secret: an env list that only changed order is shown without its values', () => {
  const before = { env: [{ name: 'A', value: '1' }, { name: 'S', value: 'hunter2', secret: true }] };
  const after = { env: [{ name: 'S', value: 'hunter2', secret: true }, { name: 'A', value: '1' }] };
  const out = JSON.stringify(changedFields(before, after));
  assert.ok(!out.includes('hunter2'), out);
  assert.match(out, /"field":"env"/);
});

test('regression config-changes-invisible: diff and apply list the ConfigMaps and Secrets they create, change or delete — key names, never values', async () => {
  const { configChanges, renderConfigChanges } = await import('../../src/reconciler/configs.js');
  const { configs } = load(CM('a=1', 'hi'), SECRET);
  const rows = (cs: DesiredConfig[]): { key: string; source: string; object: string }[] => cs.map((c) => ({ key: c.key, source: c.source, object: JSON.stringify(c) }));
  const rt = (cs: DesiredConfig[]): never => ({ listConfigs: () => rows(cs) }) as never;
  assert.deepEqual(configChanges(rt([]), configs).map((c) => [c.op, c.key]), [['create', 'configmap/default/app'], ['create', 'secret/default/creds']]);
  assert.deepEqual(configChanges(rt(configs), configs), []);
  const changed = load(CM('a=2', 'hi'), SECRET.replace('new-pw', 'newer-pw')).configs;
  const upd = configChanges(rt(configs), changed);
  assert.deepEqual(upd.map((c) => [c.op, c.key, c.keys]), [['update', 'configmap/default/app', ['app.conf']], ['update', 'secret/default/creds', ['password']]]);
  const text = renderConfigChanges(upd);
  assert.equal(text, '~ configmap default/app: update (data: app.conf)\n~ secret default/creds: update (data: password)\n');
  assert.ok(!text.includes('newer-pw') && !JSON.stringify(upd).includes(Buffer.from('newer-pw').toString('base64')));
  // Pruned: a recorded config the path no longer declares.
  const del = configChanges(rt(configs), configs.filter((c) => c.kind === 'Secret'), { sources: ['/m/x.yaml'] });
  assert.deepEqual(del.map((c) => [c.op, c.key]), [['delete', 'configmap/default/app']]);
});

test('regression immutable-ignored: an immutable ConfigMap keeps its recorded data; a changed one is a problem naming its file', async () => {
  const { enforceImmutable } = await import('../../src/reconciler/configs.js');
  const imm = (greeting: string, immutable = true): DesiredConfig[] => load(CM('a=1', greeting).replace('binaryData:', `${immutable ? 'immutable: true\n' : ''}binaryData:`)).configs;
  const recorded = imm('hi');
  assert.equal(recorded[0]?.immutable, true);
  const rt = { listConfigs: () => recorded.map((c) => ({ key: c.key, source: c.source, object: JSON.stringify(c) })) } as never;
  // The same data again: fine.
  assert.deepEqual(enforceImmutable(rt, imm('hi')).problems, []);
  // Changed data, or immutable dropped: refused, the record kept.
  for (const changed of [imm('bye'), imm('hi', false)]) {
    const r = enforceImmutable(rt, changed);
    assert.equal(r.problems.length, 1);
    assert.match(formatProblem(r.problems[0] as never), /^\/m\/x\.yaml:1:1: immutable: ConfigMap default\/app is immutable: its data cannot change \(delete it, then apply it again\)$/);
    assert.equal(Buffer.from(r.configs[0]?.data['greeting'] ?? '', 'base64').toString(), 'hi');
  }
  // Not recorded as immutable: any change goes.
  const mutable = { listConfigs: () => imm('hi', false).map((c) => ({ key: c.key, source: c.source, object: JSON.stringify(c) })) } as never;
  assert.deepEqual(enforceImmutable(mutable, imm('bye')).problems, []);
});

test('regression items-dotdot-prefix: an items path with a component like "..b" below the top is a name; a leading ".." is refused', () => {
  const problems = (text: string): string[] => parseManifestText(text, '/m/x.yaml').problems.map(formatProblem);
  assert.deepEqual(problems(POD.replace('path: etc/app.conf', 'path: etc/..app.conf')), []);
  assert.match(problems(POD.replace('path: etc/app.conf', 'path: ..data/app.conf'))[0] ?? '', /items\[0\]\.path: "\.\.data\/app\.conf" must be a relative path without \.\. components, not starting with '\.\.'/);
  assert.match(problems(POD.replace('path: etc/app.conf', 'path: etc/../app.conf'))[0] ?? '', /items\[0\]\.path/);
});

test('regression empty-subpath-refused: subPath "" mounts the whole volume, as in Kubernetes', () => {
  const r = parseManifestText(POD.replace('mountPath: /conf}', 'mountPath: /conf, subPath: ""}'), '/m/x.yaml');
  assert.deepEqual(r.problems.map(formatProblem), []);
  const mount = r.pods[0]?.containers[0]?.volumeMounts?.[0];
  assert.equal(mount?.subPath, undefined);
});

test('regression envfrom-invalid-keys-silent: envFrom keys that are no variable names are skipped and named in a warning, without changing the hash', () => {
  const cm = (extra: string): string => `apiVersion: v1\nkind: ConfigMap\nmetadata: {name: vars}\ndata:\n  GOOD: "1"\n${extra}`;
  const p = podEnv('', '      envFrom: [{configMapRef: {name: vars}}]\n');
  const withBad = load(cm('  1bad: "2"\n  2also: "3"\n'), p);
  const clean = load(cm(''), p);
  const c = resolvePods(withBad.pods, withBad.configs)[0]?.containers[0];
  const d = resolvePods(clean.pods, clean.configs)[0]?.containers[0];
  assert.deepEqual(c?.env.map((e) => e.name), ['GOOD']);
  assert.equal(c?.envWarning, 'Keys [1bad, 2also] from the EnvFrom configMap default/vars were skipped since they are considered invalid environment variable names.');
  assert.equal(d?.envWarning, undefined);
  assert.equal(c?.specHash, d?.specHash);
});

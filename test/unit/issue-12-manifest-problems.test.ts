import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { declaredPodKeys, formatProblem, listManifestFiles, loadManifests, MAX_PROBLEMS_PER_DOCUMENT, parseManifestText } from '../../src/reconciler/manifest.js';

/**
 * Issue 12: every problem of every document in one run, in line order, one per mistake,
 * with did-you-mean for misspelt names, clear messages for a missing apiVersion or kind,
 * and a way out for Kubernetes workloads.
 */

const POD = `apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  hostNetwork: true
  containers:
    - name: httpd
      image: 127.0.0.1:5000/berth/demo:1.0
      command: ["httpd", "-f"]
`;

const SPEC_FIELDS = 'containers, initContainers, volumes, restartPolicy, hostNetwork, hostname, subdomain, dnsPolicy, dnsConfig, shareProcessNamespace, securityContext, imagePullSecrets, terminationGracePeriodSeconds';
const CONTAINER_FIELDS = 'name, image, imagePullPolicy, command, args, workingDir, env, envFrom, ports, resources, securityContext, livenessProbe, readinessProbe, startupProbe, lifecycle, volumeMounts, stdin, tty';
const READS = 'berth reads: Pod, ConfigMap and Secret (apiVersion: v1), Container and Image (apiVersion: berth.dev/v1)';

function problemsOf(text: string): string[] {
  return parseManifestText(text, '/m/x.yaml').problems.map(formatProblem);
}

test('issue 12: schema and semantic problems of one document are listed together, in line order', () => {
  const text = POD.replace('name: web', 'name: Web_1')
    .replace('  hostNetwork: true\n', '  hostNetwork: true\n  restartPolicy: always\n')
    .replace('      command: ["httpd", "-f"]\n', '      comand: ["httpd"]\n      env: [{name: "1bad", value: x}]\n      resources: {limits: {cpu: true, memory: ""}}\n')
    .replace('127.0.0.1:5000/berth/demo:1.0', 'UPPER/case');
  assert.deepEqual(problemsOf(text), [
    `/m/x.yaml:4:9: metadata.name: "Web_1" is not a DNS label (lowercase a-z, 0-9 and '-', at most 63)`,
    '/m/x.yaml:7:18: spec.restartPolicy: must be one of "Always", "OnFailure", "Never", not "always"; did you mean "Always"?',
    '/m/x.yaml:10:14: spec.containers[0].image: parse image reference "UPPER/case": repository names must be lowercase',
    `/m/x.yaml:11:7: spec.containers[0].comand: unknown field "comand"; did you mean "command"? (allowed: ${CONTAINER_FIELDS})`,
    '/m/x.yaml:12:20: spec.containers[0].env[0].name: "1bad" is not a valid environment variable name',
    // anyOf: one line for the value no branch takes; the string branch's own error for "".
    '/m/x.yaml:13:33: spec.containers[0].resources.limits.cpu: must be string or number, not true',
    '/m/x.yaml:13:47: spec.containers[0].resources.limits.memory: must not be empty',
  ]);
});

test('issue 12: a misspelt field is named once, with did-you-mean, and explains the missing one', () => {
  // containers is required: the misspelling is the one problem, not "missing containers" too.
  assert.deepEqual(problemsOf(POD.replace('  containers:', '  contianers:')), [
    `/m/x.yaml:7:3: spec.contianers: unknown field "contianers"; did you mean "containers"? (allowed: ${SPEC_FIELDS})`,
  ]);
  // A misspelt hostNetwork is not also "set hostNetwork: true".
  assert.deepEqual(problemsOf(POD.replace('  hostNetwork:', '  hostnetwork:')), [
    `/m/x.yaml:6:3: spec.hostnetwork: unknown field "hostnetwork"; did you mean "hostNetwork"? (allowed: ${SPEC_FIELDS})`,
  ]);
  // Nothing near: the allowed fields, without a guess.
  assert.deepEqual(problemsOf(POD.replace('  hostNetwork: true\n', '  hostNetwork: true\n  affinity: {}\n')), [
    `/m/x.yaml:7:3: spec.affinity: unknown field "affinity" (not in the subset berth implements; allowed: ${SPEC_FIELDS})`,
  ]);
  // A missing spec is one problem, not also a missing hostNetwork.
  assert.deepEqual(problemsOf('apiVersion: v1\nkind: Pod\nmetadata: {name: web}\n'), ['/m/x.yaml:1:1: missing required field "spec"']);
  assert.deepEqual(problemsOf('apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: []\n'), ['/m/x.yaml:4:7: spec: must be object, not a list']);
});

test('issue 12: a wrong type, a bad enum, a negative grace period and a key too long say what is allowed', () => {
  assert.deepEqual(problemsOf(POD.replace('hostNetwork: true', 'hostNetwork: "yes"')), ['/m/x.yaml:6:16: spec.hostNetwork: must be boolean, not "yes"']);
  assert.deepEqual(problemsOf(POD.replace('  hostNetwork: true\n', '  hostNetwork: true\n  terminationGracePeriodSeconds: -5\n')), [
    '/m/x.yaml:7:34: spec.terminationGracePeriodSeconds: must be >= 0, not -5',
  ]);
  assert.deepEqual(problemsOf(POD.replace('  hostNetwork: true\n', '  hostNetwork: true\n  terminationGracePeriodSeconds: 1.5\n')), [
    '/m/x.yaml:7:34: spec.terminationGracePeriodSeconds: must be integer, not 1.5',
  ]);
  assert.deepEqual(problemsOf(POD.replace('      command:', '      stdin: true\n      command:')), ['/m/x.yaml:10:14: spec.containers[0].stdin: must be false, not true']);
  assert.deepEqual(problemsOf(POD.replace('  containers:\n    - name: httpd\n      image: 127.0.0.1:5000/berth/demo:1.0\n      command: ["httpd", "-f"]\n', '  containers: []\n')), [
    '/m/x.yaml:7:15: spec.containers: must have at least 1 item',
  ]);
  const key = `example.com/${'k'.repeat(388)}`;
  assert.deepEqual(problemsOf(POD.replace('  name: web\n', `  name: web\n  labels:\n    ${key}: v\n`)), [
    `/m/x.yaml:6:5: metadata.labels["${key}"]: key must be at most 317 characters, not 400`,
  ]);
});

test('issue 12: a missing or misspelt apiVersion or kind is named, and never as undefined', () => {
  const body = POD.split('\n').slice(2).join('\n');
  assert.deepEqual(problemsOf(`kind: Pod\n${body}`), ['/m/x.yaml:1:1: apiVersion is missing; a Pod needs apiVersion: v1']);
  assert.deepEqual(problemsOf(`apiVersion: v1\n${body}`), ['/m/x.yaml:1:1: kind is missing; apiVersion v1 has kinds Pod, ConfigMap and Secret']);
  assert.deepEqual(problemsOf(`apiVersion: berth.dev/v1\n${body}`), ['/m/x.yaml:1:1: kind is missing; apiVersion berth.dev/v1 has kinds Container and Image']);
  assert.deepEqual(problemsOf(body), [`/m/x.yaml:1:1: apiVersion and kind are missing (${READS})`]);
  assert.deepEqual(problemsOf('kind: Image\nmetadata: {name: demo}\nspec: {ref: busybox}\n'), ['/m/x.yaml:1:1: apiVersion is missing; an Image needs apiVersion: berth.dev/v1']);
  assert.deepEqual(problemsOf(POD.replace('kind: Pod', 'kind: Pdo')), [`/m/x.yaml:2:7: kind: unknown kind "Pdo"; did you mean "Pod"? (${READS})`]);
  assert.deepEqual(problemsOf(POD.replace('kind: Pod', 'kind: pod')), [`/m/x.yaml:2:7: kind: unknown kind "pod"; did you mean "Pod"? (${READS})`]);
  assert.deepEqual(problemsOf(POD.replace('apiVersion: v1', 'apiVersion: vl')), ['/m/x.yaml:1:13: apiVersion: unknown apiVersion "vl"; did you mean "v1"? (a Pod needs apiVersion: v1)']);
  assert.deepEqual(problemsOf(POD.replace('apiVersion: v1', 'apiVersion: apps/v1')), ['/m/x.yaml:1:13: apiVersion: apiVersion "apps/v1" is not the one for this kind: a Pod needs apiVersion: v1']);
  assert.deepEqual(problemsOf(POD.replace('kind: Pod', 'kind: [Pod]')), ['/m/x.yaml:2:7: kind: must be a string such as Pod, not a list']);
  assert.deepEqual(problemsOf(POD.replace('apiVersion: v1', 'apiVersion: 1')), ['/m/x.yaml:1:13: apiVersion: must be a string; a Pod needs apiVersion: v1']);
  assert.deepEqual(problemsOf('kind: ConfigMap\nmetadata: {name: x}\n'), ['/m/x.yaml:1:1: apiVersion is missing; a ConfigMap needs apiVersion: v1']);
  assert.deepEqual(problemsOf('apiVersion: v1\nkind: Service\nmetadata: {name: x}\n'), [
    '/m/x.yaml:2:7: kind: unsupported object v1/Service: this berth implements v1/Pod, berth.dev/v1/Container, berth.dev/v1/Image, v1/ConfigMap and v1/Secret',
  ]);
  // The rest of the document is still checked, as the kind it was meant to be.
  assert.deepEqual(problemsOf(`kind: Pdo\n${body.replace('command:', 'comand:')}`), [
    '/m/x.yaml:1:1: apiVersion is missing; a Pod needs apiVersion: v1',
    `/m/x.yaml:1:7: kind: unknown kind "Pdo"; did you mean "Pod"? (${READS})`,
    `/m/x.yaml:9:7: spec.containers[0].comand: unknown field "comand"; did you mean "command"? (allowed: ${CONTAINER_FIELDS})`,
  ]);
  for (const text of [body, `kind: Pod\n${body}`, 'kind: Deployment\n', 'kind: Pdo\n', 'apiVersion: x\n', 'kind: null\napiVersion: null\n']) {
    for (const p of problemsOf(text)) assert.doesNotMatch(p, /undefined|null\//, p);
  }
});

test('issue 12: Deployments and other workloads say how to take the pod template out', () => {
  const hint = (kind: string, template: string, dropped: string): string =>
    `berth runs Pods (and its own Container kind), not ${kind}s; take the pod template out: a Pod (apiVersion: v1, kind: Pod) with metadata from ${template}.metadata (plus a name) and spec from ${template}.spec; ${dropped}`;
  const cases: [string, string, string][] = [
    ['apps/v1', 'Deployment', hint('Deployment', 'spec.template', 'replicas are not supported')],
    ['apps/v1', 'ReplicaSet', hint('ReplicaSet', 'spec.template', 'replicas are not supported')],
    ['apps/v1', 'StatefulSet', hint('StatefulSet', 'spec.template', 'replicas and volumeClaimTemplates are not supported')],
    ['apps/v1', 'DaemonSet', hint('DaemonSet', 'spec.template', 'on one host a DaemonSet is one Pod')],
    ['batch/v1', 'Job', hint('Job', 'spec.template', 'completions and parallelism are not supported')],
    ['batch/v1', 'CronJob', hint('CronJob', 'spec.jobTemplate.spec.template', 'schedules are not supported')],
    // Any apiVersion, even an old or wrong one: the kind is what matters.
    ['extensions/v1beta1', 'Deployment', hint('Deployment', 'spec.template', 'replicas are not supported')],
  ];
  for (const [api, kind, want] of cases) {
    assert.deepEqual(problemsOf(`apiVersion: ${api}\nkind: ${kind}\nmetadata: {name: x}\nspec: {replicas: 2}\n`), [`/m/x.yaml:2:7: kind: unsupported object ${api}/${kind}: ${want}`]);
  }
  assert.deepEqual(problemsOf('apiVersion: apps/v1\nkind: Deploymnet\n'), [`/m/x.yaml:2:7: kind: unknown kind "Deploymnet"; did you mean "Deployment"? ${hint('Deployment', 'spec.template', 'replicas are not supported')}`]);
});

test('issue 12: at most 100 problems per document, then a line saying how many more', () => {
  const env = (n: number): string => Array.from({ length: n }, (_, i) => `        - {name: "${i}bad"}`).join('\n');
  const text = (n: number): string => POD.replace('      command: ["httpd", "-f"]\n', `      env:\n${env(n)}\n`);
  assert.equal(problemsOf(text(MAX_PROBLEMS_PER_DOCUMENT)).length, MAX_PROBLEMS_PER_DOCUMENT);
  const over = problemsOf(text(MAX_PROBLEMS_PER_DOCUMENT + 50));
  assert.equal(over.length, MAX_PROBLEMS_PER_DOCUMENT + 1);
  assert.match(over[MAX_PROBLEMS_PER_DOCUMENT - 1] ?? '', /:110:\d+: spec\.containers\[0\]\.env\[99\]\.name: "99bad" is not a valid/);
  assert.equal(over[MAX_PROBLEMS_PER_DOCUMENT], '/m/x.yaml:110:18: 50 more problems in this document not listed (at most 100 are listed per document)');
  // Far past the bound, problems are not even kept: the note says "more" without a count.
  const huge = problemsOf(POD.replace('["httpd", "-f"]', `[${Array(20_000).fill('1').join(',')}]`));
  assert.equal(huge.length, MAX_PROBLEMS_PER_DOCUMENT + 1);
  assert.equal(huge[0], '/m/x.yaml:10:17: spec.containers[0].command[0]: must be string, not 1');
  assert.match(huge[MAX_PROBLEMS_PER_DOCUMENT] ?? '', /: more problems in this document not listed \(at most 100 are listed per document\)$/);
  // The other documents of the file have their own budget.
  const two = problemsOf(`${text(150)}---\n${POD.replace('name: web', 'name: Web')}`);
  assert.equal(two.length, MAX_PROBLEMS_PER_DOCUMENT + 2);
  assert.match(two.at(-1) ?? '', /metadata\.name: "Web" is not a DNS label/);
});

test('issue 12: problems of a directory are sorted by file as it is walked, then line and column', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-issue12-'));
  try {
    mkdirSync(path.join(dir, 'a'));
    // a/x.yaml is read before a-b.yaml (the walk sorts names in each directory).
    writeFileSync(path.join(dir, 'a', 'x.yaml'), POD.replace('name: web', 'name: one').replace('  hostNetwork: true\n', '  hostNetwork: true\n  restartPolicy: Sometimes\n').replace('kind: Pod', 'kind: Pod\nextra: 1'));
    writeFileSync(path.join(dir, 'a-b.yaml'), POD.replace('name: web', 'name: two').replace('command:', 'comand:'));
    writeFileSync(path.join(dir, 'c.yaml'), POD.replace('name: web', 'name: one'));
    const r = await loadManifests(dir);
    assert.deepEqual(
      r.problems.map((p) => `${path.relative(dir, p.file)}:${p.line}:${p.col}: ${p.field}`),
      ['a/x.yaml:3:1: extra', 'a/x.yaml:8:18: spec.restartPolicy', 'a-b.yaml:10:7: spec.containers[0].comand'],
    );
    // c.yaml is valid and its pod is kept; the duplicate is with a file that failed, so none.
    assert.deepEqual(r.pods.map((p) => p.name), ['one']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('issue 12: .json manifests are listed and read like .yaml, with line and column', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-issue12-json-'));
  try {
    const pod = (name: string): object => ({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name },
      spec: { hostNetwork: true, containers: [{ name: 'a', image: 'busybox:1.36', command: ['sh', '-c', 'echo "\\/" \u00e9 \u{1F600}'] }] },
    });
    writeFileSync(path.join(dir, 'pretty.json'), JSON.stringify(pod('pretty'), null, 2));
    writeFileSync(path.join(dir, 'tabs.json'), JSON.stringify(pod('tabs'), null, '\t'));
    writeFileSync(path.join(dir, 'one-line.json'), JSON.stringify(pod('one-line')));
    // JSON's \/ escape is YAML too.
    writeFileSync(path.join(dir, 'slash.json'), JSON.stringify(pod('slash')).replace('busybox:1.36', 'library\\/busybox:1.36'));
    writeFileSync(path.join(dir, 'notes.jsonl'), '{}');
    const listed = await listManifestFiles(dir);
    assert.deepEqual(listed.files.map((f) => path.basename(f)), ['one-line.json', 'pretty.json', 'slash.json', 'tabs.json']);
    const r = await loadManifests(dir);
    assert.deepEqual(r.problems.map(formatProblem), []);
    assert.deepEqual(r.pods.map((p) => p.name), ['one-line', 'pretty', 'slash', 'tabs']);
    assert.equal(r.pods[0]?.containers[0]?.command?.[2], 'echo "\\/" \u00e9 \u{1F600}');
    assert.equal(r.pods[2]?.containers[0]?.image, 'docker.io/library/busybox:1.36');
    assert.deepEqual((await declaredPodKeys({ path: dir })).keys.map((k) => k.key), ['default/one-line', 'default/pretty', 'default/slash', 'default/tabs']);
    // Positions point into the JSON text.
    writeFileSync(path.join(dir, 'pretty.json'), JSON.stringify({ ...pod('pretty'), spec: { hostNetwork: 'yes', contianers: [] } }, null, 2));
    const bad = await loadManifests(dir);
    assert.deepEqual(bad.problems.map((p) => `${path.basename(p.file)}:${formatProblem({ ...p, file: '' }).slice(1)}`), [
      'pretty.json:8:20: spec.hostNetwork: must be boolean, not "yes"',
      `pretty.json:9:5: spec.contianers: unknown field "contianers"; did you mean "containers"? (allowed: ${SPEC_FIELDS})`,
    ]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('regression: issue-12-lenient-reading — the hashes of valid pods are what they were before all-errors checking', () => {
  // Pinned from the loader before issue 12: reading documents leniently must not move a hash
  // (a moved hash replaces every running container).
  const r = parseManifestText(
    `apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: ns1
  labels: {a: b}
  annotations: {x: y}
spec:
  hostNetwork: true
  restartPolicy: OnFailure
  terminationGracePeriodSeconds: 7
  containers:
    - name: a
      image: busybox
      imagePullPolicy: Never
      command: [sh, -c]
      args: ["echo hi"]
      workingDir: /srv
      env: [{name: A, value: b}, {name: C}]
      ports: [{containerPort: 80, hostPort: 80, protocol: TCP, hostIP: 127.0.0.1, name: http}, {containerPort: 53, protocol: UDP}]
      resources: {limits: {cpu: 500m, memory: 64Mi}, requests: {cpu: 250m}}
      stdin: false
    - name: b
      image: 127.0.0.1:5000/x@sha256:${'a'.repeat(64)}
      resources: {limits: {cpu: 2, memory: 100000000}}
---
apiVersion: berth.dev/v1
kind: Container
metadata: {name: c}
spec: {image: busybox:1, hostNetwork: true, env: [{name: X, value: "1"}], ports: [{containerPort: 8080}]}
`,
    '/m/x.yaml',
  );
  assert.deepEqual(r.problems, []);
  assert.deepEqual(
    r.pods.map((p) => [p.key, p.podHash, p.containers.map((c) => c.specHash)]),
    [
      ['ns1/web', 'ae0480d75d9895172ace41ddc403823014380636c0b898fe6ea29884228024b4', ['02f7c745513e27131e017853f724793c4250692b32e778a8be5a053c224aa92d', 'a9d4ca6bab38721c20f263c2670121d6c564dbd558e95235be0982e1c761ed68']],
      ['default/c', 'ae0480d75d9895172ace41ddc403823014380636c0b898fe6ea29884228024b4', ['a958671d0ff4b77fce6a921102014312bf6156ac63b0132ea2b8528c7c1b9014']],
    ],
  );
  assert.deepEqual(r.pods[0]?.containers[0]?.env, [{ name: 'A', value: 'b' }, { name: 'C', value: '' }]);
  assert.deepEqual(r.pods[0]?.labels, { a: 'b' });
  assert.deepEqual(r.pods[0]?.annotations, { x: 'y' });
});

test('regression cap-prefix-means-nothing-on-kubernetes: a capability written with CAP_ is a problem that says what to write', () => {
  const withCaps = (caps: string): string => POD.replace('      command: ["httpd", "-f"]\n', `      command: ["httpd", "-f"]\n      securityContext: {capabilities: ${caps}}\n`);
  assert.ok(withCaps('x').includes('capabilities'), 'the POD template has the image line the test edits');
  assert.deepEqual(problemsOf(withCaps('{add: [NET_ADMIN], drop: [ALL]}')), []);
  const p = problemsOf(withCaps('{add: [CAP_NET_ADMIN]}'));
  assert.equal(p.length, 1, p.join('\n'));
  assert.match(p[0] ?? '', /capabilities\.add\[0\]: "CAP_NET_ADMIN": write "NET_ADMIN" — Kubernetes adds the CAP_ prefix itself/);
});

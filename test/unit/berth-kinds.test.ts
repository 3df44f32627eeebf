import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { declaredPodKeys, duplicatePods, formatProblem, loadManifests, parseManifestText } from '../../src/reconciler/manifest.js';
import { REPO } from '../helpers/berth.js';

/** berth.dev/v1 Image and Container (DESIGN §4): strict like Pods, same problem format. */

const IMAGE = `apiVersion: berth.dev/v1
kind: Image
metadata:
  name: demo
  namespace: edge
spec:
  ref: busybox
  platform: linux/arm/v7
`;

const CONTAINER = `apiVersion: berth.dev/v1
kind: Container
metadata:
  name: web
  labels:
    app: web
spec:
  image: 127.0.0.1:5000/berth/demo:1.0
  command: ["httpd", "-f"]
  restartPolicy: OnFailure
  hostNetwork: true
  terminationGracePeriodSeconds: 5
`;

/** The same workload written as a v1 Pod. */
const POD = `apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
spec:
  restartPolicy: OnFailure
  hostNetwork: true
  terminationGracePeriodSeconds: 5
  containers:
    - name: web
      image: 127.0.0.1:5000/berth/demo:1.0
      command: ["httpd", "-f"]
`;

function problemsOf(text: string): string[] {
  return parseManifestText(text, '/m/x.yaml').problems.map(formatProblem);
}

test('berth kinds: an Image parses to a DesiredImage with a canonical ref, default pull policy and platform', () => {
  const r = parseManifestText(IMAGE, '/m/img.yaml');
  assert.deepEqual(r.problems, []);
  assert.deepEqual(r.pods, []);
  assert.deepEqual(r.images, [
    {
      key: 'image/edge/demo',
      namespace: 'edge',
      name: 'demo',
      ref: 'docker.io/library/busybox:latest',
      pullPolicy: 'Always',
      platform: { os: 'linux', architecture: 'arm', variant: 'v7' },
      source: '/m/img.yaml',
      line: 1,
    },
  ]);
  const pinned = parseManifestText(IMAGE.replace('  namespace: edge\n', '').replace('ref: busybox', 'ref: 127.0.0.1:5000/x:1.0').replace('  platform: linux/arm/v7\n', ''), '/m/img.yaml');
  assert.deepEqual(pinned.images[0], {
    key: 'image/default/demo',
    namespace: 'default',
    name: 'demo',
    ref: '127.0.0.1:5000/x:1.0',
    pullPolicy: 'IfNotPresent',
    source: '/m/img.yaml',
    line: 1,
  });
  assert.equal(parseManifestText(IMAGE.replace('  platform', '  pullPolicy: Never\n  platform'), '/m/img.yaml').images[0]?.pullPolicy, 'Never');
});

test('berth kinds: Image fields are checked where they are written', () => {
  const allowed = 'allowed: ref, pullPolicy, platform';
  assert.deepEqual(problemsOf(IMAGE.replace('  platform:', '  platfrom:')), [`/m/x.yaml:8:3: spec.platfrom: unknown field "platfrom"; did you mean "platform"? (${allowed})`]);
  // A misspelt required field: the misspelling is named, once, instead of the missing field.
  assert.deepEqual(problemsOf(IMAGE.replace('  ref:', '  reff:')), [`/m/x.yaml:7:3: spec.reff: unknown field "reff"; did you mean "ref"? (${allowed})`]);
  assert.deepEqual(problemsOf(IMAGE.replace('  ref:', '  source:')), [
    `/m/x.yaml:7:3: spec.source: unknown field "source" (not in the subset berth implements; ${allowed})`,
    `/m/x.yaml:7:3: spec: missing required field "ref"`,
  ]);
  assert.deepEqual(problemsOf(IMAGE.replace('  name: demo\n', '  name: demo\n  labels: {a: b}\n')), [
    '/m/x.yaml:5:3: metadata.labels: unknown field "labels" (not in the subset berth implements; allowed: name, namespace)',
  ]);
  assert.match(problemsOf(IMAGE.replace('ref: busybox', 'ref: UPPER'))[0] ?? '', /^\/m\/x\.yaml:7:8: spec\.ref: parse image reference "UPPER"/);
  assert.match(problemsOf(IMAGE.replace('name: demo', 'name: Demo'))[0] ?? '', /:4:9: metadata\.name: "Demo" is not a DNS label/);
  assert.match(problemsOf(IMAGE.replace('linux/arm/v7', 'Linux'))[0] ?? '', /:8:13: spec\.platform: "Linux" is not os\/architecture\[\/variant\]/);
  assert.match(problemsOf(IMAGE.replace('linux/arm/v7', 'windows/amd64'))[0] ?? '', /spec\.platform: os "windows": berth runs Linux containers/);
  assert.match(problemsOf(IMAGE.replace('linux/arm/v7', 'linux/aarch64'))[0] ?? '', /spec\.platform: architecture "aarch64" .*did you mean linux\/arm64\?/);
  assert.match(problemsOf(IMAGE.replace('linux/arm/v7', 'linux/arm64/v7'))[0] ?? '', /spec\.platform: variant "v7" is not one arm64 has/);
  assert.match(problemsOf(IMAGE.replace('linux/arm/v7', 'linux/s390x/v1'))[0] ?? '', /variant "v1" is not one s390x has \(it has none\)/);
  assert.match(problemsOf(IMAGE.replace('platform: linux/arm/v7', 'pullPolicy: Sometimes'))[0] ?? '', /:8:15: spec\.pullPolicy: must be one of "Always", "IfNotPresent", "Never"/);
  for (const ok of ['linux/amd64', 'linux/amd64/v3', 'linux/arm64/v8', 'linux/arm64/v8.2', 'linux/386', 'linux/riscv64']) {
    assert.deepEqual(problemsOf(IMAGE.replace('linux/arm/v7', ok)), [], ok);
  }
});

test('berth kinds: a Container is the one-container Pod it abbreviates, with the same hashes', () => {
  const c = parseManifestText(CONTAINER, '/m/c.yaml');
  const p = parseManifestText(POD, '/m/c.yaml');
  assert.deepEqual(c.problems, []);
  assert.deepEqual(p.problems, []);
  const ctr = c.pods[0];
  const pod = p.pods[0];
  assert.ok(ctr !== undefined && pod !== undefined);
  assert.equal(ctr.kind, 'Container');
  assert.equal(pod.kind, 'Pod');
  assert.equal(ctr.key, 'default/web');
  assert.equal(ctr.containers.length, 1);
  assert.equal(ctr.containers[0]?.name, 'web', 'the container name defaults to metadata.name');
  assert.equal(ctr.restartPolicy, 'OnFailure');
  assert.equal(ctr.gracePeriodMs, 5000);
  assert.deepEqual(ctr.labels, { app: 'web' });
  // Rewriting a Pod as a Container (or back) replaces nothing.
  assert.deepEqual({ ...ctr, kind: 'Pod' }, pod);
  const named = parseManifestText(CONTAINER.replace('  image:', '  name: httpd\n  image:'), '/m/c.yaml').pods[0];
  assert.equal(named?.containers[0]?.name, 'httpd');
  const paused = parseManifestText(CONTAINER.replace('  labels:', '  annotations:\n    berth.dev/paused: "true"\n  labels:'), '/m/c.yaml').pods[0];
  assert.equal(paused?.paused, true);
  assert.equal(paused?.containers[0]?.specHash, ctr.containers[0]?.specHash);
});

test('berth kinds: Container fields are checked where they are written, pod-level and container-level alike', () => {
  const allowed =
    'allowed: name, image, imagePullPolicy, command, args, workingDir, env, envFrom, ports, resources, securityContext, livenessProbe, readinessProbe, startupProbe, lifecycle, stdin, tty, restartPolicy, hostNetwork, terminationGracePeriodSeconds';
  assert.deepEqual(problemsOf(CONTAINER.replace('  restartPolicy', '  restartPolcy')), [`/m/x.yaml:10:3: spec.restartPolcy: unknown field "restartPolcy"; did you mean "restartPolicy"? (${allowed})`]);
  assert.deepEqual(problemsOf(CONTAINER.replace('  command', '  comand')), [`/m/x.yaml:9:3: spec.comand: unknown field "comand"; did you mean "command"? (${allowed})`]);
  // A Pod-only field is not a Container field.
  assert.match(problemsOf(CONTAINER.replace('  hostNetwork', '  containers: []\n  hostNetwork'))[0] ?? '', /:11:3: spec\.containers: unknown field/);
  assert.deepEqual(problemsOf(CONTAINER.replace('  command', '  env: [{name: A, valu: b}]\n  command')), [
    '/m/x.yaml:9:19: spec.env[0].valu: unknown field "valu"; did you mean "value"? (allowed: name, value, valueFrom)',
  ]);
  assert.match(problemsOf(CONTAINER.replace('    app: web', '    app: web\n  creationTimestamp: null'))[0] ?? '', /:7:3: metadata\.creationTimestamp: unknown field .*allowed: name, namespace, labels, annotations\)/);
  assert.deepEqual(problemsOf(CONTAINER.replace('  image', '  name: Bad_\n  image')), ['/m/x.yaml:8:9: spec.name: "Bad_" is not a DNS label']);
  // A name taken from metadata.name is reported once, at metadata.name.
  assert.deepEqual(problemsOf(CONTAINER.replace('name: web', 'name: Web')), [`/m/x.yaml:4:9: metadata.name: "Web" is not a DNS label (lowercase a-z, 0-9 and '-', at most 63)`]);
  // Without hostNetwork a Container gets a pod sandbox like a Pod.
  assert.deepEqual(problemsOf(CONTAINER.replace('hostNetwork: true', 'hostNetwork: false')), []);
  assert.match(problemsOf(CONTAINER.replace('  command', '  workingDir: /proc/self\n  command'))[0] ?? '', /:9:15: spec\.workingDir: .*clean absolute path/);
  assert.match(problemsOf(CONTAINER.replace('"-f"]', '"-f\\0"]'))[0] ?? '', /:9:22: spec\.command\[1\]: contains a NUL byte/);
  assert.match(problemsOf(CONTAINER.replace('kind: Container', 'kind: Containers'))[0] ?? '', /:2:7: kind: unknown kind "Containers"; did you mean "Container"\?/);
  assert.deepEqual(problemsOf(CONTAINER.replace('berth.dev/v1', 'berth.dev/v2')), [
    '/m/x.yaml:1:13: apiVersion: unknown apiVersion "berth.dev/v2"; did you mean "berth.dev/v1"? (a Container needs apiVersion: berth.dev/v1)',
  ]);
  assert.deepEqual(problemsOf(CONTAINER.replace('berth.dev/v1', 'v1')), ['/m/x.yaml:1:13: apiVersion: apiVersion "v1" is not the one for this kind: a Container needs apiVersion: berth.dev/v1']);
});

test('berth kinds: a Container and a Pod of one name are duplicates; Images have a name space of their own', async () => {
  const both = [...parseManifestText(POD, '/m/a.yaml').pods, ...parseManifestText(CONTAINER, '/m/b.yaml').pods];
  assert.deepEqual(duplicatePods(both).map(formatProblem), [
    '/m/b.yaml:1:1: metadata.name: Container default/web is also declared in /m/a.yaml:1 as a Pod (a Container is a one-container pod: the two kinds share names)',
  ]);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-kinds-'));
  try {
    writeFileSync(path.join(dir, 'a-pod.yaml'), POD);
    writeFileSync(path.join(dir, 'b-image.yaml'), IMAGE.replace('name: demo', 'name: web').replace('  namespace: edge\n', ''));
    const ok = await loadManifests(dir);
    assert.deepEqual(ok.problems, [], 'an Image may share a pod name');
    assert.deepEqual([ok.pods.map((p) => p.key), ok.images.map((i) => i.key)], [['default/web'], ['image/default/web']]);
    writeFileSync(path.join(dir, 'c-container.yaml'), CONTAINER);
    writeFileSync(path.join(dir, 'd-image.yaml'), IMAGE.replace('name: demo', 'name: web').replace('  namespace: edge\n', ''));
    const dup = await loadManifests(dir);
    assert.deepEqual(
      dup.problems.map(formatProblem),
      [
        `${dir}/c-container.yaml:1:1: metadata.name: Container default/web is also declared in ${dir}/a-pod.yaml:1 as a Pod (a Container is a one-container pod: the two kinds share names)`,
        `${dir}/d-image.yaml:1:1: metadata.name: Image default/web is also declared in ${dir}/b-image.yaml:1`,
      ],
    );
    assert.deepEqual([dup.pods.map((p) => p.key), dup.images.map((i) => i.key)], [['default/web'], ['image/default/web']]);
    assert.deepEqual(dup.badFiles.map((f) => path.basename(f)).sort(), ['c-container.yaml', 'd-image.yaml']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('berth kinds: delete -f finds Containers as well as Pods, not Images', async () => {
  const text = [POD.replace('name: web', 'name: p'), CONTAINER.replace('name: web', 'name: c'), IMAGE].join('---\n');
  const r = await declaredPodKeys({ path: '-', stdinText: text });
  assert.deepEqual(r.problems, []);
  assert.deepEqual(r.keys.map((k) => k.key), ['default/p', 'default/c']);
});

test('berth kinds: container.json lists exactly the container fields of pod.json (volumeMounts aside: a Container has no volumes) plus the three pod-level ones', () => {
  const read = (f: string): Record<string, unknown> => JSON.parse(readFileSync(path.join(REPO, 'schemas', f), 'utf8')) as Record<string, unknown>;
  type Obj = { properties: Record<string, { $ref?: string }> };
  const pod = read('pod.json') as { $defs: { container: Obj } };
  const ctr = read('container.json') as { $defs: { spec: Obj } };
  const want = [...Object.keys(pod.$defs.container.properties).filter((k) => k !== 'volumeMounts'), 'restartPolicy', 'hostNetwork', 'terminationGracePeriodSeconds'];
  assert.deepEqual(Object.keys(ctr.$defs.spec.properties), want);
  // Each is a reference into pod.json, so a field means the same in both kinds.
  for (const [k, v] of Object.entries(ctr.$defs.spec.properties)) assert.match(v.$ref ?? '', /^pod\.json#\/\$defs\/(container|podSpec)\/properties\//, k);
});

test('berth kinds: the shipped examples load with zero problems and include each berth kind', async () => {
  const r = await loadManifests(path.join(REPO, 'manifests'));
  assert.deepEqual(r.problems.map(formatProblem), []);
  assert.ok(r.pods.some((p) => p.kind === 'Pod'));
  assert.ok(r.pods.some((p) => p.kind === 'Container'));
  assert.ok(r.images.length >= 1);
  // The demo (`berth up manifests/`) loads them too: they must use only the demo's image.
  for (const ref of [...r.images.map((i) => i.ref), ...r.pods.flatMap((p) => p.containers.map((c) => c.image))]) {
    assert.equal(ref, '127.0.0.1:5111/berth/demo:1.0');
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync, symlinkSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { duplicatePods, loadManifests, parseManifestText, formatProblem, readManifestFile } from '../../src/reconciler/manifest.js';
import { REPO } from '../helpers/berth.js';

const GOOD = `apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  hostNetwork: true
  containers:
    - name: httpd
      image: 127.0.0.1:5000/berth/demo:1.0
      command: ["httpd", "-f"]
      env:
        - name: GREETING
          value: "hello; rm -rf /"
`;

function problemsOf(text: string): string[] {
  return parseManifestText(text, '/m/x.yaml').problems.map(formatProblem);
}

test('manifest: a valid pod loads with defaults and hashes', () => {
  const r = parseManifestText(GOOD, '/m/web.yaml');
  assert.deepEqual(r.problems, []);
  const p = r.pods[0];
  assert.ok(p !== undefined);
  assert.equal(p.key, 'default/web');
  assert.equal(p.restartPolicy, 'Always');
  assert.equal(p.gracePeriodMs, 30_000);
  const c = p.containers[0];
  assert.equal(c?.image, '127.0.0.1:5000/berth/demo:1.0');
  assert.equal(c?.pullPolicy, 'IfNotPresent');
  assert.equal(c?.env[0]?.value, 'hello; rm -rf /');
  assert.match(c?.specHash ?? '', /^[a-f0-9]{64}$/);
  // The same text gives the same hash; a different command a different one.
  assert.equal(parseManifestText(GOOD, '/m/web.yaml').pods[0]?.containers[0]?.specHash, c?.specHash);
  const edited = parseManifestText(GOOD.replace('"-f"]', '"-f", "-v"]'), '/m/web.yaml').pods[0]?.containers[0]?.specHash;
  assert.notEqual(edited, c?.specHash);
});

test('manifest: an unknown field is rejected with file:line:col and the field path', () => {
  const text = GOOD.replace('      command:', '      comand: ["x"]\n      command:');
  const problems = problemsOf(text);
  assert.equal(problems.length, 1);
  assert.match(problems[0] ?? '', /^\/m\/x\.yaml:10:\d+: spec\.containers\[0\]\.comand: unknown field/);
});

test('manifest: a wrong type names the field and line', () => {
  const problems = problemsOf(GOOD.replace('hostNetwork: true', 'hostNetwork: "yes"'));
  assert.match(problems[0] ?? '', /:6:\d+: spec\.hostNetwork: must be boolean/);
});

test('manifest: yaml errors, duplicate keys and YAML 1.1 booleans are errors', () => {
  assert.match(problemsOf('apiVersion: v1\nkind: [\n')[0] ?? '', /x\.yaml:\d+:\d+: yaml:/);
  assert.match(problemsOf(GOOD.replace('kind: Pod', 'kind: Pod\nkind: Pod'))[0] ?? '', /yaml: .*[Mm]ap keys must be unique/);
  // `yes` is a string in the core schema, so hostNetwork: yes is a type error, not true.
  assert.match(problemsOf(GOOD.replace('hostNetwork: true', 'hostNetwork: yes'))[0] ?? '', /spec\.hostNetwork: must be boolean/);
});

test('manifest: alias bombs are refused', () => {
  const bomb = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]'];
  for (let i = 0; i < 8; i++) bomb.push(`${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(10).fill(`*${String.fromCharCode(97 + i)}`).join(',')}]`);
  const problems = problemsOf(bomb.join('\n'));
  assert.equal(problems.length, 1);
  assert.match(problems[0] ?? '', /alias|Excessive/i);
});

test('manifest: unsupported kinds, bad names, bad images and env names are named', () => {
  assert.match(problemsOf('apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n')[0] ?? '', /kind: unsupported object apps\/v1\/Deployment/);
  assert.match(problemsOf(GOOD.replace('name: web', 'name: Web_1'))[0] ?? '', /metadata\.name: "Web_1" is not a DNS label/);
  assert.match(problemsOf(GOOD.replace('image: 127.0.0.1:5000/berth/demo:1.0', 'image: "UPPER/case:x"'))[0] ?? '', /spec\.containers\[0\]\.image: parse image reference/);
  assert.match(problemsOf(GOOD.replace('GREETING', '"1=bad"'))[0] ?? '', /env\[0\]\.name: "1=bad" is not a valid environment variable name/);
});

test('issue 13: a pod without hostNetwork gets a sandbox (hostname, DNS, host ports); a hostNetwork pod keeps its old podHash', () => {
  const net = GOOD.replace('  hostNetwork: true\n', '  hostname: www\n  subdomain: front\n  dnsPolicy: None\n  dnsConfig: {nameservers: [10.0.0.10], searches: [lan], options: [{name: ndots, value: "2"}]}\n').replace(
    '      command:',
    '      ports: [{containerPort: 80, hostPort: 8080}, {containerPort: 53, hostPort: 5353, protocol: UDP, hostIP: 127.0.0.1}]\n      command:',
  );
  const r = parseManifestText(net, '/m/web.yaml');
  assert.deepEqual(r.problems.map(formatProblem), []);
  const pod = r.pods[0];
  assert.equal(pod?.hostNetwork, false);
  assert.deepEqual({ ...pod?.sandbox, hash: undefined }, {
    hash: undefined,
    hostname: 'www',
    subdomain: 'front',
    dns: { policy: 'None', nameservers: ['10.0.0.10'], searches: ['lan'], options: [{ name: 'ndots', value: '2' }] },
    shareProcessNamespace: false,
    ports: [
      { hostPort: 8080, containerPort: 80, protocol: 'tcp' },
      { hostPort: 5353, containerPort: 53, protocol: 'udp', hostIP: '127.0.0.1' },
    ],
  });
  // The sandbox is part of the pod-level hash: a changed hostPort replaces the containers.
  const moved = parseManifestText(net.replace('hostPort: 8080', 'hostPort: 8081'), '/m/web.yaml').pods[0];
  assert.notEqual(moved?.sandbox?.hash, pod?.sandbox?.hash);
  assert.notEqual(moved?.podHash, pod?.podHash);
  // A hostNetwork pod hashes as before sandboxes existed: upgrading berth replaces nothing.
  assert.equal(parseManifestText(GOOD, '/m/web.yaml').pods[0]?.podHash, 'ae0480d75d9895172ace41ddc403823014380636c0b898fe6ea29884228024b4');
});

test('issue 13: sandbox fields are checked — DNS labels, dnsPolicy None without nameservers, addresses, hostPort used twice', () => {
  const plain = GOOD.replace('  hostNetwork: true\n', '');
  assert.match(problemsOf(plain.replace('spec:\n', 'spec:\n  hostname: Bad_Name\n'))[0] ?? '', /spec\.hostname: "Bad_Name" is not a DNS label/);
  assert.match(problemsOf(plain.replace('spec:\n', 'spec:\n  dnsPolicy: None\n'))[0] ?? '', /spec\.dnsPolicy: dnsPolicy None needs spec\.dnsConfig\.nameservers/);
  assert.match(problemsOf(plain.replace('spec:\n', 'spec:\n  dnsPolicy: None\n  dnsConfig: {nameservers: [dns.lan]}\n'))[0] ?? '', /spec\.dnsConfig\.nameservers\[0\]: "dns\.lan" is not an IP address/);
  assert.match(problemsOf(plain.replace('spec:\n', 'spec:\n  dnsPolicy: Cluster\n'))[0] ?? '', /spec\.dnsPolicy/);
  const twice = plain.replace('      command:', '      ports: [{containerPort: 80, hostPort: 8080}, {containerPort: 81, hostPort: 8080}]\n      command:');
  assert.deepEqual(problemsOf(twice), ['/m/x.yaml:9:82: spec.containers[0].ports[1].hostPort: hostPort 8080/tcp is already used in this pod at spec.containers[0].ports[0].hostPort']);
  // Another protocol or another address is another port.
  assert.deepEqual(problemsOf(twice.replace('containerPort: 81, hostPort: 8080', 'containerPort: 81, hostPort: 8080, protocol: UDP')), []);
  assert.deepEqual(problemsOf(twice.replace('{containerPort: 80, hostPort: 8080}', '{containerPort: 80, hostPort: 8080, hostIP: 127.0.0.1}').replace('containerPort: 81, hostPort: 8080', 'containerPort: 81, hostPort: 8080, hostIP: 127.0.0.2')), []);
  // Regression ipv6-hostip-silently-unmapped: an IPv6 hostIP is refused (portmap would skip it for an IPv4 pod).
  assert.match(problemsOf(plain.replace('      command:', '      ports: [{containerPort: 80, hostPort: 8080, hostIP: "::"}]\n      command:'))[0] ?? '', /ports\[0\]\.hostIP: :: is an IPv6 address; pods on berth's bridge have IPv4 addresses only/);
});

test('issue 13: a hostPort mapped by two pods in two files names both files and lines', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-ports-'));
  const pod = (name: string, port: number): string =>
    `apiVersion: v1\nkind: Pod\nmetadata: {name: ${name}}\nspec:\n  containers: [{name: a, image: busybox, ports: [{containerPort: 80, hostPort: ${port}}]}]\n`;
  writeFileSync(path.join(dir, 'a.yaml'), pod('a', 8080));
  writeFileSync(path.join(dir, 'b.yaml'), `# b\n---\n${pod('b', 8080)}`);
  writeFileSync(path.join(dir, 'c.yaml'), pod('c', 8081));
  const res = await loadManifests(dir);
  assert.deepEqual(res.problems.map(formatProblem), [`${dir}/b.yaml:3:1: hostPort: pod default/b maps hostPort 8080/tcp, which pod default/a (${dir}/a.yaml:1) maps too`]);
  assert.deepEqual(res.pods.map((p) => p.name), ['a', 'c']);
  rmSync(dir, { recursive: true, force: true });
});

test('manifest: multi-document files, empty documents, BOM and CRLF', () => {
  const two = `\ufeff---\n${GOOD}---\n---\n${GOOD.replace('name: web', 'name: web2')}`.replace(/\n/g, '\r\n');
  const r = parseManifestText(two, '/m/two.yaml');
  assert.deepEqual(r.problems, []);
  assert.deepEqual(
    r.pods.map((p) => p.key),
    ['default/web', 'default/web2'],
  );
});

test('manifest: directory loading skips dotfiles and editor files, follows symlinked dirs, rejects duplicates', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-manifests-'));
  // git-sync's layout: a hidden checkout inside the directory, reached through a link.
  const real = path.join(dir, '.rev-1');
  mkdirSync(real);
  try {
    mkdirSync(path.join(dir, 'sub'));
    writeFileSync(path.join(dir, 'sub', 'web.yaml'), GOOD);
    writeFileSync(path.join(dir, '.hidden.yaml'), 'not: [valid');
    writeFileSync(path.join(dir, 'web.yaml~'), 'not: [valid');
    writeFileSync(path.join(dir, 'notes.txt'), 'ignored');
    writeFileSync(path.join(real, 'other.yml'), GOOD.replace('name: web', 'name: other'));
    symlinkSync(real, path.join(dir, 'linked'));
    const r = await loadManifests(dir);
    assert.deepEqual(r.problems, []);
    assert.deepEqual(r.pods.map((p) => p.key).sort(), ['default/other', 'default/web']);
    writeFileSync(path.join(dir, 'dup.yaml'), GOOD);
    const d = await loadManifests(dir);
    assert.equal(d.problems.length, 1);
    assert.match(formatProblem(d.problems[0]!), /pod default\/web is also declared in/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(real, { recursive: true, force: true });
  }
});

test('manifest: the shipped examples load without problems', async () => {
  const r = await loadManifests(path.join(REPO, 'manifests'));
  assert.deepEqual(r.problems.map(formatProblem), []);
  assert.ok(r.pods.length >= 1);
});

test('regression: load-time-checks-match-run-time — workingDir and quantities are checked where the manifest names them', () => {
  const wd = (v: string): string[] => problemsOf(GOOD.replace('      command: ["httpd", "-f"]', `      command: ["httpd", "-f"]\n      workingDir: ${JSON.stringify(v)}`));
  assert.deepEqual(wd('/var/www/'), [], 'a trailing slash is accepted, as Kubernetes does');
  for (const bad of ['/proc/self/cwd', '/a/../b', 'relative', '/sys']) {
    assert.match(wd(bad)[0] ?? '', /:\d+:\d+: spec\.containers\[0\]\.workingDir: .*clean absolute path/, bad);
  }
  const lim = (v: string): string[] => problemsOf(GOOD.replace('      command: ["httpd", "-f"]', `      command: ["httpd", "-f"]\n      resources:\n        limits:\n          ${v}`));
  assert.match(lim('memory: 1e300')[0] ?? '', /resources\.limits\.memory: .*not a memory quantity/);
  assert.match(lim('memory: "1e300"')[0] ?? '', /resources\.limits\.memory/);
  assert.match(lim('cpu: 1e300')[0] ?? '', /resources\.limits\.cpu: .*not a CPU quantity/);
  assert.deepEqual(lim('memory: 128Mi'), []);
  assert.deepEqual(lim('cpu: 0.5'), []);
});

test('regression: duplicate-newcomer-takes-over — the file that applied a pod keeps it, the newcomer is reported', () => {
  const a = parseManifestText(GOOD, '/m/a-dup.yaml').pods;
  const b = parseManifestText(GOOD, '/m/web.yaml').pods;
  const pods = [...a, ...b];
  const noOwner = duplicatePods(pods);
  assert.equal(noOwner[0]?.file, '/m/web.yaml', 'without an owner the first file wins');
  const owned = duplicatePods(pods, new Map([['default/web', '/m/web.yaml']]));
  assert.equal(owned.length, 1);
  assert.equal(owned[0]?.file, '/m/a-dup.yaml');
  assert.match(owned[0]?.message ?? '', /also declared in \/m\/web\.yaml/);
});

test('regression: symlinked-manifest-files — a ConfigMap-style ..data layout is read; a link outside is reported', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-cm-'));
  const outside = mkdtempSync(path.join(os.tmpdir(), 'berth-outside-'));
  try {
    mkdirSync(path.join(dir, '..2026_11_25'));
    writeFileSync(path.join(dir, '..2026_11_25', 'web.yaml'), GOOD);
    symlinkSync('..2026_11_25', path.join(dir, '..data'));
    symlinkSync('..data/web.yaml', path.join(dir, 'web.yaml'));
    const r = await loadManifests(dir);
    assert.deepEqual(r.problems.map(formatProblem), []);
    assert.deepEqual(r.pods.map((p) => `${p.key} ${path.basename(p.source)}`), ['default/web web.yaml']);

    writeFileSync(path.join(outside, 'evil.yaml'), GOOD.replace('name: web', 'name: evil'));
    symlinkSync(path.join(outside, 'evil.yaml'), path.join(dir, 'evil.yaml'));
    const bad = await loadManifests(dir);
    assert.equal(bad.problems.length, 1);
    assert.match(formatProblem(bad.problems[0]!), /evil\.yaml:1:1: symlink to .* points outside the manifest directory/);
    assert.ok(!bad.pods.some((p) => p.name === 'evil'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
  }
});

test('manifest: kubectl dry-run output (status: {}, creationTimestamp: null) is accepted; a non-empty status is not', () => {
  const dry = GOOD.replace('metadata:\n', 'metadata:\n  creationTimestamp: null\n') + 'status: {}\n';
  assert.deepEqual(problemsOf(dry), []);
  assert.deepEqual(problemsOf(`${GOOD}status:\n  phase: Running\n`), ['/m/x.yaml:15:3: status: must be empty ({})']);
  assert.match(problemsOf(GOOD.replace('      command:', '      terminationMessagePath: /dev/x\n      command:'))[0] ?? '', /terminationMessagePath: unknown field/);
});

test('regression: unrepresentable-strings — NUL bytes and unpaired surrogates are refused where the manifest names them', () => {
  const cases: [string, RegExp][] = [
    [GOOD.replace('"-f"]', '"-f", "a\\0b"]'), /^\/m\/x\.yaml:10:32: spec\.containers\[0\]\.command\[2\]: contains a NUL byte, which a process argument cannot carry$/],
    [GOOD.replace('      command:', '      args: ["x", "\\0"]\n      command:'), /^\/m\/x\.yaml:10:19: spec\.containers\[0\]\.args\[1\]: contains a NUL byte, which a process argument cannot carry$/],
    [GOOD.replace('GREETING', '"GREET\\0ING"'), /:12:17: spec\.containers\[0\]\.env\[0\]\.name: contains a NUL byte, which an environment variable cannot carry$/],
    [GOOD.replace('"hello; rm -rf /"', '"hello\\x00"'), /:13:18: spec\.containers\[0\]\.env\[0\]\.value: contains a NUL byte, which an environment variable/],
    [GOOD.replace('      command:', '      workingDir: "/srv\\0"\n      command:'), /:10:19: spec\.containers\[0\]\.workingDir: contains a NUL byte, which a path cannot carry$/],
    [GOOD.replace('image: 127.0.0.1:5000/berth/demo:1.0', 'image: "busybox\\0"'), /:9:14: spec\.containers\[0\]\.image: contains a NUL byte, which an image reference cannot carry$/],
    [GOOD.replace('name: web', 'name: "web\\0"'), /:4:9: metadata\.name: contains a NUL byte, which a name cannot carry$/],
    [GOOD.replace('name: httpd', 'name: "h\\0"'), /:8:13: spec\.containers\[0\]\.name: contains a NUL byte, which a name cannot carry$/],
    // A literal NUL in the file is the same string as the escape.
    [GOOD.replace('"-f"]', '"-f\u0000"]'), /:10:26: spec\.containers\[0\]\.command\[1\]: contains a NUL byte/],
    // A key: the field path escapes it, so the NUL never reaches the terminal.
    [GOOD.replace('metadata:\n', 'metadata:\n  labels:\n    "a\\0b": c\n'), /:5:5: metadata\.labels\["a\\u0000b"\]: contains a NUL byte, which a label key cannot carry$/],
    [GOOD.replace('"-f"]', '"\\ud800"]'), /:10:26: spec\.containers\[0\]\.command\[1\]: contains an unpaired UTF-16 surrogate \(U\+D800 at index 0\), which is not Unicode and cannot be encoded as UTF-8 for a process argument$/],
    [GOOD.replace('"hello; rm -rf /"', '"ok\\udfff"'), /:13:18: spec\.containers\[0\]\.env\[0\]\.value: contains an unpaired UTF-16 surrogate \(U\+DFFF at index 2\)/],
    [GOOD.replace('      command:', '      workingDir: "/\\ud800"\n      command:'), /:10:19: spec\.containers\[0\]\.workingDir: contains an unpaired UTF-16 surrogate/],
  ];
  for (const [text, want] of cases) {
    const problems = problemsOf(text);
    assert.equal(problems.length, 1, `${want}: ${problems.join('\n')}`);
    assert.match(problems[0] ?? '', want);
    assert.doesNotMatch(problems[0] ?? '', /\0/);
  }
  // A surrogate pair is one well-formed character (😀), not a problem.
  const emoji = parseManifestText(GOOD.replace('"hello; rm -rf /"', '"\\ud83d\\ude00"'), '/m/x.yaml');
  assert.deepEqual(emoji.problems, []);
  assert.equal(emoji.pods[0]?.containers[0]?.env[0]?.value, '\u{1F600}');
  // The other documents of the file still parse: only the one with the NUL is refused.
  const two = parseManifestText(`${GOOD}---\n${GOOD.replace('name: web', 'name: web2').replace('"-f"]', '"-f\\0"]')}`, '/m/two.yaml');
  assert.deepEqual(two.problems.map(formatProblem), ['/m/two.yaml:24:26: spec.containers[0].command[1]: contains a NUL byte, which a process argument cannot carry']);
  assert.deepEqual(two.pods.map((p) => p.key), ['default/web']);
});

test('manifest: the berth.dev/paused annotation pauses without touching any hash', () => {
  const withAnnotations = (lines: string): string => GOOD.replace('metadata:\n', `metadata:\n  annotations:\n${lines}`);
  const plain = parseManifestText(GOOD, '/m/x.yaml').pods[0];
  assert.equal(plain?.paused, false);
  assert.deepEqual(plain?.annotations, {});
  const paused = parseManifestText(withAnnotations('    berth.dev/paused: "true"\n    team: edge\n'), '/m/x.yaml');
  assert.deepEqual(paused.problems, []);
  assert.equal(paused.pods[0]?.paused, true);
  assert.deepEqual(paused.pods[0]?.annotations, { 'berth.dev/paused': 'true', team: 'edge' });
  // Pausing must not replace anything: the same hashes as the unpaused pod.
  assert.equal(paused.pods[0]?.podHash, plain?.podHash);
  assert.equal(paused.pods[0]?.containers[0]?.specHash, plain?.containers[0]?.specHash);
  assert.equal(parseManifestText(withAnnotations('    berth.dev/paused: "false"\n'), '/m/x.yaml').pods[0]?.paused, false);
  assert.deepEqual(problemsOf(withAnnotations('    berth.dev/paused: "yes"\n')), [
    '/m/x.yaml:5:23: metadata.annotations["berth.dev/paused"]: annotation berth.dev/paused must be "true" or "false", not "yes"',
  ]);
  // An annotation value is a string in Kubernetes: a YAML boolean is a type error.
  assert.match(problemsOf(withAnnotations('    berth.dev/paused: true\n'))[0] ?? '', /:5:23: metadata\.annotations\["berth\.dev\/paused"\]: must be string/);
  // berth.dev/ is berth's prefix: a key it does not read is a typo, not something to ignore.
  assert.deepEqual(problemsOf(withAnnotations('    berth.dev/pasued: "true"\n')), [
    '/m/x.yaml:5:5: metadata.annotations["berth.dev/pasued"]: unknown berth annotation "berth.dev/pasued" (berth reads: berth.dev/paused)',
  ]);
});

test('regression: symlinked-dir-escapes-root — a symlinked directory pointing outside is reported, not walked; one inside is read', async (t) => {
  const { mkdtempSync, mkdirSync, writeFileSync, symlinkSync } = await import('node:fs');
  const os = await import('node:os');
  const nodePath = await import('node:path');
  const base = mkdtempSync(nodePath.join(os.tmpdir(), 'berth-symdir-'));
  t.after(() => rmSync(base, { recursive: true, force: true }));
  const root = nodePath.join(base, 'manifests');
  const outside = nodePath.join(base, 'outside');
  mkdirSync(nodePath.join(root, 'rev-1'), { recursive: true });
  mkdirSync(outside);
  const pod = (name: string): string => `apiVersion: v1\nkind: Pod\nmetadata: {name: ${name}}\nspec:\n  hostNetwork: true\n  containers: [{name: a, image: busybox}]\n`;
  writeFileSync(nodePath.join(root, 'rev-1', 'in.yaml'), pod('inside'));
  writeFileSync(nodePath.join(outside, 'out.yaml'), pod('outside'));
  symlinkSync('rev-1', nodePath.join(root, 'current'));
  symlinkSync(outside, nodePath.join(root, 'escape'));
  const res = await loadManifests(root);
  assert.deepEqual(res.pods.map((p) => p.name), ['inside']);
  assert.ok(res.problems.some((p) => p.file === nodePath.join(root, 'escape') && /points outside the manifest directory/.test(p.message)), JSON.stringify(res.problems));
});

test('regression: symlink-swapped-after-listing — a file is re-checked against the directory when it is read', async (t) => {
  const { mkdtempSync, mkdirSync, writeFileSync, symlinkSync, realpathSync } = await import('node:fs');
  const os = await import('node:os');
  const nodePath = await import('node:path');
  const base = mkdtempSync(nodePath.join(os.tmpdir(), 'berth-swap-'));
  t.after(() => rmSync(base, { recursive: true, force: true }));
  const root = nodePath.join(base, 'manifests');
  mkdirSync(root);
  writeFileSync(nodePath.join(base, 'secret.yaml'), 'not: yours\n');
  writeFileSync(nodePath.join(root, 'real.yaml'), 'kind: Pod\n');
  // The link points inside when listed; by the time it is read it points outside.
  symlinkSync(nodePath.join(base, 'secret.yaml'), nodePath.join(root, 'link.yaml'));
  await assert.rejects(readManifestFile(nodePath.join(root, 'link.yaml'), realpathSync(root)), /resolves to .*secret\.yaml, outside the manifest directory/);
  assert.equal(await readManifestFile(nodePath.join(root, 'real.yaml'), realpathSync(root)), 'kind: Pod\n');
});

test('regression hostnetwork-ports-unchecked: a hostNetwork pod\'s containerPort clashes with another pod\'s hostPort', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-ports-'));
  writeFileSync(path.join(dir, 'a.yaml'), 'apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  hostNetwork: true\n  containers: [{name: a, image: busybox, ports: [{containerPort: 8080}]}]\n');
  writeFileSync(path.join(dir, 'b.yaml'), 'apiVersion: v1\nkind: Pod\nmetadata: {name: b}\nspec:\n  containers: [{name: b, image: busybox, ports: [{containerPort: 80, hostPort: 8080}]}]\n');
  // Another protocol is another port.
  writeFileSync(path.join(dir, 'c.yaml'), 'apiVersion: v1\nkind: Pod\nmetadata: {name: c}\nspec:\n  hostNetwork: true\n  containers: [{name: c, image: busybox, ports: [{containerPort: 8080, protocol: UDP}]}]\n');
  const res = await loadManifests(dir);
  assert.deepEqual(res.problems.map(formatProblem), [`${dir}/b.yaml:1:1: hostPort: pod default/b maps hostPort 8080/tcp, which pod default/a (${dir}/a.yaml:1) maps too`]);
  rmSync(dir, { recursive: true, force: true });
});

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadManifests, parseManifestText, formatProblem, MAX_MANIFEST_FILE_BYTES, type LoadResult } from '../../src/reconciler/manifest.js';
import { setHostPathAllowList, setPrivilegedAllowed } from '../../src/lib/policy.js';
import { CLI } from '../helpers/berth.js';

/**
 * Issue 15, hostile manifests: each case is fed to the whole loader (list, read, parse, schema,
 * semantic checks) from a directory of its own; the table is docs/hostile-manifests.md. The
 * expected outcome is either the exact problems (file:line:col, field, what) with nothing
 * accepted from the file, or the object accepted exactly as written. Every case must come back
 * within SAFETY_MS (a guard against blow-ups, not a performance target), and leave the loader
 * as it found it: Object.prototype untouched and a good manifest loading to the same hash.
 */

const SAFETY_MS = 15_000;
const IMAGE = '127.0.0.1:5000/berth/demo:1.0';

function pod(spec: string, meta = ''): string {
  return `apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n${meta}spec:\n${spec}`;
}

/** A pod whose one container carries `ctr` (lines indented by 6) and whose spec carries `extra` (indented by 2). */
function podWith(ctr: string, extra = ''): string {
  return pod(`  containers:\n    - name: main\n      image: ${IMAGE}\n${ctr}${extra}`);
}

const GOOD = podWith('      command: ["sleep", "1"]\n');
const goodHash = parseManifestText(GOOD, '/m/good.yaml').pods[0]?.containers[0]?.specHash;
const protoKeys = Object.getOwnPropertyNames(Object.prototype).sort();

interface ExpectedProblem {
  file: string;
  line: number;
  col: number;
  field: string;
  message: RegExp;
}

interface Expected {
  /** File name relative to the case directory, 1-based line and column, field, and what the message says. */
  problems?: ExpectedProblem[];
  /** The first problem repeats (same file, line, field and message, any column) at least once. */
  repeated?: boolean;
  /** The objects are accepted exactly as given: checked here. */
  accepted?: (r: LoadResult) => void;
}

interface Case {
  name: string;
  rule: string;
  /** Files of the case directory: text, or a builder given the directory (symlinks, fifos). */
  files: Record<string, string | Buffer | ((dir: string, file: string) => void)>;
  expect: Expected;
  /** Also run `berth validate -f DIR` and expect exit 2 (or 0 when accepted). */
  cli?: boolean;
  policy?: { hostPaths?: string[]; privileged?: boolean };
}

const outside = mkdtempSync(path.join(os.tmpdir(), 'berth-hostile-outside-'));
writeFileSync(path.join(outside, 'secret.yaml'), GOOD.replace('name: web', 'name: stolen'));
const work = mkdtempSync(path.join(os.tmpdir(), 'berth-hostile-manifests-'));
after(() => {
  rmSync(work, { recursive: true, force: true });
  rmSync(outside, { recursive: true, force: true });
});

const laughs = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
for (let i = 1; i < 9; i++) {
  const me = String.fromCharCode(97 + i);
  const prev = String.fromCharCode(96 + i);
  laughs.push(`${me}: &${me} [${Array(9).fill(`*${prev}`).join(',')}]`);
}

const CASES: Case[] = [
  {
    name: 'invalid-yaml',
    rule: 'M2',
    files: { 'x.yaml': 'apiVersion: v1\nkind: [Pod\nmetadata: {name: web}\n' },
    expect: { problems: [{ file: 'x.yaml', line: 3, col: 1, field: '', message: /^yaml: Flow sequence in block collection must be sufficiently indented and end with a \]$/ }] },
    cli: true,
  },
  {
    name: 'billion-laughs',
    rule: 'M2',
    files: { 'x.yaml': `${laughs.join('\n')}\n` },
    expect: { problems: [{ file: 'x.yaml', line: 1, col: 1, field: '', message: /^yaml: Excessive alias count/ }] },
    cli: true,
  },
  {
    name: 'aliases-inside-the-limit-are-plain-data',
    rule: 'M2',
    files: { 'x.yaml': podWith('      command: &c ["sh", "-c", "echo hi"]\n      args: *c\n') },
    expect: {
      accepted: (r) => {
        assert.deepEqual(r.pods[0]?.containers[0]?.command, ['sh', '-c', 'echo hi']);
        assert.deepEqual(r.pods[0]?.containers[0]?.args, ['sh', '-c', 'echo hi']);
      },
    },
  },
  {
    name: 'over-the-size-limit',
    rule: 'M1',
    // A valid pod and a comment: one byte over the limit.
    files: { 'x.yaml': `${GOOD}#${'x'.repeat(MAX_MANIFEST_FILE_BYTES - GOOD.length - 1)}\n` },
    expect: { problems: [{ file: 'x.yaml', line: 1, col: 1, field: '', message: new RegExp(`^read .*x\\.yaml: ${MAX_MANIFEST_FILE_BYTES + 1} bytes exceeds the ${MAX_MANIFEST_FILE_BYTES} byte limit$`) }] },
    cli: true,
  },
  {
    name: 'deep-nesting',
    rule: 'M2',
    files: { 'x.yaml': podWith(`      args: ${'['.repeat(100_000)}${']'.repeat(100_000)}\n`) },
    // The parser runs out of stack and says so (once per unwound level, all on that line).
    expect: { problems: [{ file: 'x.yaml', line: 9, col: 0, field: '', message: /^yaml: Maximum call stack size exceeded$/ }], repeated: true },
  },
  {
    name: 'wrong-types',
    rule: 'M3',
    files: { 'x.yaml': pod(`  hostNetwork: "true"\n  containers:\n    - name: main\n      image: ${IMAGE}\n      ports: [{containerPort: "80"}]\n`) },
    expect: {
      problems: [
        { file: 'x.yaml', line: 6, col: 16, field: 'spec.hostNetwork', message: /^must be boolean/ },
        { file: 'x.yaml', line: 10, col: 31, field: 'spec.containers[0].ports[0].containerPort', message: /^must be integer/ },
      ],
    },
  },
  {
    name: 'unknown-kind',
    rule: 'M3',
    files: { 'x.yaml': 'apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n' },
    expect: { problems: [{ file: 'x.yaml', line: 2, col: 7, field: 'kind', message: /^unsupported object example\.com\/v1\/Widget/ }] },
  },
  {
    name: 'unknown-field',
    rule: 'M3',
    files: { 'x.yaml': podWith('      comand: ["sleep", "1"]\n') },
    expect: { problems: [{ file: 'x.yaml', line: 9, col: 7, field: 'spec.containers[0].comand', message: /^unknown field "comand"; did you mean "command"\?/ }] },
  },
  {
    name: 'duplicate-names-across-files',
    rule: 'M4',
    files: { 'a.yaml': GOOD, 'b.yaml': GOOD.replace('"sleep", "1"', '"sleep", "2"') },
    expect: { problems: [{ file: 'b.yaml', line: 1, col: 1, field: 'metadata.name', message: /^pod default\/web is also declared in .*\/a\.yaml:1$/ }] },
    cli: true,
  },
  {
    name: 'deployment',
    rule: 'M3',
    files: { 'x.yaml': 'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 3\n' },
    expect: { problems: [{ file: 'x.yaml', line: 2, col: 7, field: 'kind', message: /^unsupported object apps\/v1\/Deployment: berth runs Pods .* take the pod template out/ }] },
  },
  {
    name: 'hostpath-outside-the-allow-list',
    rule: 'M4, R4',
    policy: { hostPaths: ['/srv/data'] },
    files: {
      'x.yaml': podWith(
        '      volumeMounts: [{name: a, mountPath: /a}, {name: b, mountPath: /b}, {name: c, mountPath: /c}]\n',
        '  volumes:\n    - {name: a, hostPath: {path: /etc}}\n    - {name: b, hostPath: {path: /srv/database}}\n    - {name: c, hostPath: {path: /srv/data/../../etc}}\n',
      ),
    },
    expect: {
      problems: [
        { file: 'x.yaml', line: 11, col: 34, field: 'spec.volumes[0].hostPath.path', message: /^hostPath \/etc is outside the allowed host paths \(\/srv\/data\)$/ },
        { file: 'x.yaml', line: 12, col: 34, field: 'spec.volumes[1].hostPath.path', message: /^hostPath \/srv\/database is outside the allowed host paths/ },
        { file: 'x.yaml', line: 13, col: 34, field: 'spec.volumes[2].hostPath.path', message: /must be a clean absolute path$/ },
      ],
    },
    cli: true,
  },
  {
    name: 'privileged-without-opt-in',
    rule: 'M4, R4',
    files: { 'x.yaml': podWith('      securityContext: {privileged: true, capabilities: {add: [SYS_ADMIN]}}\n') },
    expect: {
      problems: [
        { file: 'x.yaml', line: 9, col: 37, field: 'spec.containers[0].securityContext.privileged', message: /^privileged containers are refused unless the operator allows them/ },
      ],
    },
    cli: true,
  },
  {
    name: 'nul-bytes',
    rule: 'R1, M4',
    files: { 'x.yaml': podWith('      args: ["a\\0b"]\n      env: [{name: A, value: "x\\0y"}]\n') },
    expect: {
      problems: [
        { file: 'x.yaml', line: 9, col: 14, field: 'spec.containers[0].args[0]', message: /^contains a NUL byte, which a process argument cannot carry$/ },
        { file: 'x.yaml', line: 10, col: 30, field: 'spec.containers[0].env[0].value', message: /^contains a NUL byte, which an environment variable cannot carry$/ },
      ],
    },
  },
  {
    name: 'lone-surrogates',
    rule: 'M4',
    files: { 'x.yaml': podWith('      args: ["a\\ud800b"]\n', '').replace('  name: web\n', '  name: web\n  labels: {"k\\udc00": v}\n') },
    expect: {
      problems: [
        { file: 'x.yaml', line: 5, col: 12, field: 'metadata.labels["k\\udc00"]', message: /^contains an unpaired UTF-16 surrogate \(U\+DC00 at index 1\).* a label key$/ },
        { file: 'x.yaml', line: 10, col: 14, field: 'spec.containers[0].args[0]', message: /^contains an unpaired UTF-16 surrogate \(U\+D800 at index 1\).* a process argument$/ },
      ],
    },
  },
  {
    name: 'shell-metacharacters-are-argv',
    rule: 'M4',
    files: {
      'x.yaml': podWith(
        `      command: ["sh", "-c", "echo $(id) \`uname\`; rm -rf / && x | y > /z 2>&1 < /q * ? ~ \\\\ ' \\"", "$HOME", ";", "&&", "|"]\n` +
          '      args: ["--flag=$(cat /etc/shadow)", "a b"]\n      env: [{name: X, value: "$(reboot); `halt`"}]\n',
      ),
    },
    expect: {
      accepted: (r) => {
        const c = r.pods[0]?.containers[0];
        assert.deepEqual(c?.command, ['sh', '-c', "echo $(id) `uname`; rm -rf / && x | y > /z 2>&1 < /q * ? ~ \\ ' \"", '$HOME', ';', '&&', '|']);
        assert.deepEqual(c?.args, ['--flag=$(cat /etc/shadow)', 'a b']);
        assert.deepEqual(c?.env.map((e) => [e.name, e.value]), [['X', '$(reboot); `halt`']]);
      },
    },
    cli: true,
  },
  {
    name: 'yaml-1.1-octal-mode',
    rule: 'M2',
    files: { 'x.yaml': podWith('      volumeMounts: [{name: c, mountPath: /c}]\n', '  volumes:\n    - {name: c, configMap: {name: cm, defaultMode: 0400}}\n') },
    expect: { problems: [{ file: 'x.yaml', line: 11, col: 52, field: 'defaultMode', message: /^0400 is ambiguous: YAML 1\.2 reads it as decimal 400, kubectl as octal 256; write 256 or 0o400$/ }] },
  },
  {
    name: 'yaml-1.1-booleans-and-directive',
    rule: 'M2',
    files: { 'x.yaml': `%YAML 1.1\n---\n${pod(`  hostNetwork: yes\n  containers:\n    - name: main\n      image: ${IMAGE}\n      tty: on\n`)}` },
    expect: {
      problems: [
        { file: 'x.yaml', line: 8, col: 16, field: 'spec.hostNetwork', message: /^must be boolean, not "yes"/ },
        { file: 'x.yaml', line: 12, col: 12, field: 'spec.containers[0].tty', message: /^must be false, not "on"$/ },
      ],
    },
  },
  {
    name: 'symlinked-file-outside-the-directory',
    rule: 'M1',
    files: { 'ok.yaml': GOOD, 'x.yaml': (_dir, file) => symlinkSync(path.join(outside, 'secret.yaml'), file) },
    expect: { problems: [{ file: 'x.yaml', line: 1, col: 1, field: '', message: /^symlink to .*secret\.yaml points outside the manifest directory; not read/ }] },
    cli: true,
  },
  {
    name: 'symlinked-directory-outside-the-directory',
    rule: 'M1',
    files: { 'ok.yaml': GOOD, sub: (_dir, file) => symlinkSync(outside, file) },
    expect: { problems: [{ file: 'sub', line: 1, col: 1, field: '', message: /^symlink to directory .* points outside the manifest directory; not read/ }] },
  },
  {
    name: 'fifo-in-the-directory',
    rule: 'M1',
    files: { 'ok.yaml': GOOD, 'x.yaml': (_dir, file) => execFileSync('mkfifo', [file]) },
    expect: { problems: [{ file: 'x.yaml', line: 1, col: 1, field: '', message: /^not a regular file$/ } ] },
  },
  {
    name: 'many-documents',
    rule: 'M1, M2',
    // 100 000 empty documents (400 KB) and then one pod: the pod is read, the empties skipped.
    files: { 'x.yaml': `${'---\n'.repeat(100_000)}${GOOD}` },
    expect: { accepted: (r) => assert.deepEqual(r.pods.map((p) => [p.key, p.line]), [['default/web', 100_001]]) },
  },
  {
    name: 'many-invalid-documents',
    rule: 'M3',
    // 5 000 documents with two mistakes each: every one is listed, nothing is accepted.
    files: { 'x.yaml': Array.from({ length: 5_000 }, (_, i) => `---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: C${i}}\ndata: {"../k": v}\n`).join('') },
    expect: {
      accepted: (r) => {
        assert.equal(r.configs.length, 0);
        assert.equal(r.problems.length, 10_000);
        assert.equal(formatProblem(r.problems[0] ?? { file: '', line: 0, col: 0, field: '', message: '' }).replace(/^.*\//, ''), 'x.yaml:4:18: metadata.name: "C0" is not a DNS label (lowercase a-z, 0-9 and \'-\', at most 63)');
      },
    },
  },
  {
    name: 'python-and-js-tags',
    rule: 'M2',
    files: {
      'x.yaml': podWith('      command: !!python/object/apply:os.system ["touch /tmp/pwned"]\n      args: [!!js/function "function () { globalThis.pwned = 1 }", !custom x]\n'),
    },
    expect: {
      problems: [
        { file: 'x.yaml', line: 9, col: 16, field: '', message: /^yaml: Unresolved tag: tag:yaml\.org,2002:python\/object\/apply:os\.system$/ },
        { file: 'x.yaml', line: 10, col: 14, field: '', message: /^yaml: Unresolved tag: tag:yaml\.org,2002:js\/function$/ },
        { file: 'x.yaml', line: 10, col: 68, field: '', message: /^yaml: Unresolved tag: !custom$/ },
      ],
    },
    cli: true,
  },
  {
    name: 'merge-keys',
    rule: 'M2',
    files: { 'x.yaml': pod(`  containers:\n    - &base\n      name: main\n      image: ${IMAGE}\n    - <<: *base\n      name: side\n`) },
    expect: {
      problems: [
        { file: 'x.yaml', line: 10, col: 7, field: 'spec.containers[1]["<<"]', message: /^unknown field "<<"/ },
        { file: 'x.yaml', line: 10, col: 7, field: 'spec.containers[1]', message: /^missing required field "image"$/ },
      ],
    },
  },
  {
    name: 'configmap-key-traversal',
    rule: 'M4',
    files: { 'x.yaml': 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata:\n  "../x": a\n  "a/b": b\n  "..data": c\n' },
    expect: {
      problems: [
        { file: 'x.yaml', line: 5, col: 3, field: 'data["../x"]', message: /^key must match pattern/ },
        { file: 'x.yaml', line: 6, col: 3, field: 'data["a/b"]', message: /^key must match pattern/ },
        { file: 'x.yaml', line: 7, col: 3, field: 'data["..data"]', message: /^key "\.\.data" must be made of .* and not start with '\.\.'$/ },
      ],
    },
  },
  {
    name: 'secret-invalid-base64',
    rule: 'M3',
    files: { 'x.yaml': 'apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata:\n  a: "a$b"\n  b: "QQ=x"\n' },
    expect: {
      problems: [
        { file: 'x.yaml', line: 5, col: 6, field: 'data.a', message: /^must match pattern/ },
        { file: 'x.yaml', line: 6, col: 6, field: 'data.b', message: /^must match pattern/ },
      ],
    },
  },
  {
    name: 'subpath-traversal',
    rule: 'M4, R4',
    files: { 'x.yaml': podWith('      volumeMounts: [{name: v, mountPath: /a, subPath: "../../etc"}, {name: v, mountPath: /b, subPath: "x/../../y"}]\n', '  volumes: [{name: v, emptyDir: {}}]\n') },
    expect: {
      problems: [
        { file: 'x.yaml', line: 9, col: 56, field: 'spec.containers[0].volumeMounts[0].subPath', message: /^"\.\.\/\.\.\/etc" must be a relative path without \.\. components$/ },
        { file: 'x.yaml', line: 9, col: 104, field: 'spec.containers[0].volumeMounts[1].subPath', message: /^"x\/\.\.\/\.\.\/y" must be a relative path without \.\. components$/ },
      ],
    },
  },
  {
    name: 'non-namespaced-sysctls',
    rule: 'M4',
    files: { 'x.yaml': pod(`  securityContext:\n    sysctls: [{name: kernel.panic, value: "1"}, {name: vm.swappiness, value: "0"}]\n  containers:\n    - name: main\n      image: ${IMAGE}\n`) },
    expect: {
      problems: [
        { file: 'x.yaml', line: 7, col: 22, field: 'spec.securityContext.sysctls[0].name', message: /^"kernel\.panic" is not a namespaced sysctl .*it would change the host$/ },
        { file: 'x.yaml', line: 7, col: 56, field: 'spec.securityContext.sysctls[1].name', message: /^"vm\.swappiness" is not a namespaced sysctl/ },
      ],
    },
  },
  {
    name: 'bom-and-crlf',
    rule: 'M2',
    files: { 'x.yaml': `\ufeff${GOOD.replace(/\n/g, '\r\n')}` },
    expect: { accepted: (r) => assert.equal(r.pods[0]?.containers[0]?.specHash, goodHash) },
  },
  {
    name: 'duplicate-keys',
    rule: 'M2',
    files: { 'x.yaml': GOOD.replace('  name: web\n', '  name: web\n  name: other\n') },
    expect: { problems: [{ file: 'x.yaml', line: 5, col: 3, field: '', message: /^yaml: Map keys must be unique$/ }] },
  },
  {
    name: 'proto-keys',
    rule: 'M3',
    files: { 'x.yaml': GOOD.replace('  name: web\n', '  name: web\n  __proto__: {polluted: true}\n  constructor: {prototype: {polluted: true}}\n') },
    expect: {
      problems: [
        { file: 'x.yaml', line: 5, col: 3, field: 'metadata.__proto__', message: /^unknown field "__proto__"/ },
        { file: 'x.yaml', line: 6, col: 3, field: 'metadata.constructor', message: /^unknown field "constructor"/ },
      ],
    },
  },
];

async function runCase(c: Case): Promise<{ result: LoadResult; ms: number; dir: string }> {
  const dir = path.join(work, c.name);
  mkdirSync(dir);
  for (const [name, content] of Object.entries(c.files)) {
    const file = path.join(dir, name);
    if (typeof content === 'function') content(dir, file);
    else writeFileSync(file, content);
  }
  setHostPathAllowList(c.policy?.hostPaths ?? []);
  setPrivilegedAllowed(c.policy?.privileged ?? false);
  try {
    const t0 = performance.now();
    const result = await loadManifests(dir);
    return { result, ms: performance.now() - t0, dir };
  } finally {
    setHostPathAllowList([]);
    setPrivilegedAllowed(false);
  }
}

describe('issue 15: hostile manifests', () => {
  for (const c of CASES) {
    test(`hostile manifest: ${c.name} (${c.rule})`, async () => {
      const { result, ms, dir } = await runCase(c);
      assert.ok(ms < SAFETY_MS, `${c.name}: the loader took ${Math.round(ms)} ms (safety bound ${SAFETY_MS} ms)`);
      const shown = result.problems.slice(0, 5).map(formatProblem).join('\n');
      if (c.expect.problems !== undefined) {
        const got = result.problems.map((p) => ({ ...p, file: path.relative(dir, p.file) }));
        if (c.expect.repeated !== true) assert.equal(got.length, c.expect.problems.length, shown);
        else assert.ok(got.length >= 1, shown);
        for (const [i, p] of got.entries()) {
          const want: ExpectedProblem | undefined = c.expect.repeated === true ? c.expect.problems[0] : c.expect.problems[i];
          assert.ok(want !== undefined);
          const col = c.expect.repeated === true ? 0 : p.col;
          assert.deepEqual({ file: p.file, line: p.line, col, field: p.field }, { file: want.file, line: want.line, col: want.col, field: want.field }, shown);
          assert.match(p.message, want.message);
        }
        // Nothing of a file with a problem is accepted.
        const bad = new Set(result.badFiles);
        for (const o of [...result.pods, ...result.configs, ...result.images]) assert.ok(!bad.has(o.source), `${o.key} accepted from a bad file`);
        for (const want of c.expect.problems) assert.ok(bad.has(path.join(dir, want.file)), `${want.file} is a bad file`);
      } else {
        assert.ok(c.expect.accepted !== undefined);
        if (c.name !== 'many-invalid-documents') assert.deepEqual(result.problems, [], shown);
        c.expect.accepted(result);
      }
      // Nothing else broke: no prototype was touched, no tag ran, and a good manifest loads as before.
      assert.deepEqual(Object.getOwnPropertyNames(Object.prototype).sort(), protoKeys);
      assert.equal((Object.prototype as Record<string, unknown>)['polluted'], undefined);
      assert.equal((globalThis as Record<string, unknown>)['pwned'], undefined);
      assert.equal(parseManifestText(GOOD, '/m/good.yaml').pods[0]?.containers[0]?.specHash, goodHash);
      if (c.cli === true) {
        const args = [CLI, 'validate', '-f', dir, ...(c.policy?.hostPaths ?? []).flatMap((p) => ['--allow-host-path', p])];
        const r = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 30_000 });
        const want = c.expect.problems !== undefined ? 2 : 0;
        assert.equal(r.status, want, `validate exit ${r.status}: ${r.stdout}${r.stderr}`);
        if (c.expect.problems !== undefined) {
          for (const p of c.expect.problems) {
            assert.ok(r.stderr.includes(`${path.join(dir, p.file)}:${p.line}:${p.col}: ${p.field === '' ? '' : `${p.field}: `}`), `the CLI names ${p.file}:${p.line}:${p.col} ${p.field}:\n${r.stderr}`);
          }
        }
      }
    });
  }

  test('hostile manifest: nesting depths around the parser limit never throw out of the loader', () => {
    // Depths on both sides of where the yaml parser runs out of stack: each is a problem or a value, never an exception.
    for (let depth = 400; depth <= 1_600; depth += 25) {
      const t0 = performance.now();
      const r = parseManifestText(podWith(`      args: ${'['.repeat(depth)}${']'.repeat(depth)}\n`), '/m/x.yaml');
      assert.ok(performance.now() - t0 < SAFETY_MS);
      assert.equal(r.pods.length, 0);
      const shown = `depth ${depth}: ${r.problems.map(formatProblem).join('\n')}`;
      assert.ok(r.problems.length >= 1, shown);
      const messages = new Set(r.problems.map((p) => p.message));
      assert.equal(messages.size, 1, shown);
      assert.match(r.problems[0]?.message ?? '', /^(yaml: Maximum call stack size exceeded|must be string, not a list)$/);
    }
  });

  test('hostile manifest: a fifo named on the command line is refused without opening it', async () => {
    const fifo = path.join(work, 'lone.yaml');
    execFileSync('mkfifo', [fifo]);
    const t0 = performance.now();
    await assert.rejects(loadManifests(fifo), (err: Error & { code?: string }) => err.code === 'ERR_INVALID_ARGUMENT' && /not a file or directory/.test(err.message));
    assert.ok(performance.now() - t0 < SAFETY_MS);
  });

  test('regression: octal-mode-problem-still-yields-pod — a document with an ambiguous mode yields no object', () => {
    const text = podWith('      volumeMounts: [{name: c, mountPath: /c}]\n', '  volumes:\n    - {name: c, configMap: {name: cm, defaultMode: 0400}}\n');
    const r = parseManifestText(text, '/m/x.yaml');
    assert.deepEqual(r.problems.map(formatProblem), ['/m/x.yaml:11:52: defaultMode: 0400 is ambiguous: YAML 1.2 reads it as decimal 400, kubectl as octal 256; write 256 or 0o400']);
    assert.deepEqual(r.pods, [], 'the pod with the ambiguous mode is not returned');
    // The same document with the mode written unambiguously is a pod with mode 256.
    const ok = parseManifestText(text.replace('0400', '0o400'), '/m/x.yaml');
    assert.deepEqual(ok.problems, []);
    const v = ok.pods[0]?.volumes?.[0];
    assert.ok(v !== undefined && 'configMap' in v);
    assert.equal(v.configMap.defaultMode, 256);
  });
});

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Ajv } from 'ajv';
import { missingE2EPrereqs, requireE2E } from '../helpers/prereq.js';
import { berth, CLI, cleanupEnv, makeEnv, REPO } from '../helpers/berth.js';

/**
 * Issue 12: `berth validate -f PATH [-o json]` lists every problem of every file in one run,
 * in file and line order, with did-you-mean and hints; exit 2 on any, 0 when all is valid;
 * it needs no root, no state and no registry. apply and diff print the same list.
 */

/** One manifest, eight different mistakes (line numbers in the comments). */
const EIGHT = `apiVersion: v1
kind: Pod
metadata:
  name: Web_1                          # 4: bad name
spec:
  hostNetwork: true
  restartPolicy: Sometimes             # 7: bad enum
  terminationGracePeriodSeconds: -5    # 8: negative grace
  containers:
    - name: web
      image: busybox:1.36
      comand: ["httpd", "-f"]          # 12: typo'd field
      ports:
        - containerPort: "8080"        # 14: wrong type
---
apiVersion: v1
kind: Pdo                              # 17: typo'd kind
metadata:
  name: two
spec:
  hostNetwork: true
  containers:
    - name: a
      image: busybox:1.36
---
kind: Pod                              # 26: missing apiVersion
metadata:
  name: three
spec:
  hostNetwork: true
  containers:
    - name: a
      image: busybox:1.36
---
apiVersion: apps/v1
kind: Deployment                       # 36: a Deployment
metadata:
  name: four
spec:
  replicas: 2
  selector:
    matchLabels: {app: four}
  template:
    metadata:
      labels: {app: four}
    spec:
      hostNetwork: true
      containers:
        - name: a
          image: busybox:1.36
`;

/** The golden list: [line, col, field, message], in line order. */
const GOLDEN: [number, number, string, string][] = [
  [4, 9, 'metadata.name', `"Web_1" is not a DNS label (lowercase a-z, 0-9 and '-', at most 63)`],
  [7, 18, 'spec.restartPolicy', 'must be one of "Always", "OnFailure", "Never", not "Sometimes"'],
  [8, 34, 'spec.terminationGracePeriodSeconds', 'must be >= 0, not -5'],
  [
    12,
    7,
    'spec.containers[0].comand',
    'unknown field "comand"; did you mean "command"? (allowed: name, image, imagePullPolicy, command, args, workingDir, env, envFrom, ports, resources, securityContext, livenessProbe, readinessProbe, startupProbe, lifecycle, volumeMounts, stdin, tty)',
  ],
  [14, 26, 'spec.containers[0].ports[0].containerPort', 'must be integer, not "8080"'],
  [17, 7, 'kind', 'unknown kind "Pdo"; did you mean "Pod"? (berth reads: Pod, ConfigMap and Secret (apiVersion: v1), Container and Image (apiVersion: berth.dev/v1))'],
  [26, 1, '', 'apiVersion is missing; a Pod needs apiVersion: v1'],
  [
    36,
    7,
    'kind',
    'unsupported object apps/v1/Deployment: berth runs Pods (and its own Container kind), not Deployments; take the pod template out: a Pod (apiVersion: v1, kind: Pod) with metadata from spec.template.metadata (plus a name) and spec from spec.template.spec; replicas are not supported',
  ],
];

const goldenLines = (file: string): string[] => GOLDEN.map(([line, col, field, message]) => `error ERR_INVALID_MANIFEST: ${file}:${line}:${col}: ${field !== '' ? `${field}: ` : ''}${message}`);

const validateOutput = (() => {
  const ajv = new Ajv({ strict: true, allErrors: true });
  return ajv.compile(JSON.parse(readFileSync(path.join(REPO, 'schemas', 'validate.json'), 'utf8')) as object);
})();

function parseJsonOutput(stdout: string): { valid: boolean; problems: { file: string; line: number; col: number; field: string; message: string }[] } {
  const out = JSON.parse(stdout) as unknown;
  assert.ok(validateOutput(out), JSON.stringify(validateOutput.errors));
  return out as ReturnType<typeof parseJsonOutput>;
}

const POD = (name: string, image = '127.0.0.1:9/berth/none:1.0'): object => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name },
  spec: { hostNetwork: true, containers: [{ name: 'main', image }] },
});

describe('berth validate (issue 12)', () => {
  const env = makeEnv('berth-validate-');
  after(async () => {
    await cleanupEnv(env);
  });
  const eight = path.join(env.dir, 'eight.yaml');
  writeFileSync(eight, EIGHT);

  test('acceptance: eight mistakes in one manifest, all listed in line order with did-you-mean and hints; exit 2', async () => {
    const r = await berth(env, ['validate', '-f', eight]);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stdout, '');
    assert.deepEqual(r.stderr.trimEnd().split('\n'), [...goldenLines(eight), 'error ERR_INVALID_MANIFEST: 8 problem(s) in 1 file(s)']);
    // It opened nothing: --root and --state (which berth() passes) were not created.
    assert.equal(existsSync(env.root), false, 'validate created --root');
    assert.equal(existsSync(env.state), false, 'validate created --state');
  });

  test('acceptance: -o json gives the same list, valid false, in the shape of schemas/validate.json; exit 2', async () => {
    const r = await berth(env, ['validate', '-f', eight, '-o', 'json']);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr, '');
    const out = parseJsonOutput(r.stdout);
    assert.equal(out.valid, false);
    assert.deepEqual(
      out.problems,
      GOLDEN.map(([line, col, field, message]) => ({ code: 'ERR_INVALID_MANIFEST', file: eight, line, col, field, message })),
    );
    // The schema check can fail.
    assert.equal(validateOutput({ valid: false, problems: [{ code: 'ERR_INVALID_MANIFEST', file: eight, line: 0, col: 1, field: '', message: 'x' }] }), false);
    assert.equal(validateOutput({ valid: false, problems: [{ file: eight, line: 1, col: 1, field: '', message: 'x' }] }), false, 'a problem without its code');
  });

  test('stdin (-f -) is the file "-", with the same list', async () => {
    const r = await berth(env, ['validate', '-f', '-'], { input: EIGHT });
    assert.equal(r.code, 2);
    assert.deepEqual(r.stderr.trimEnd().split('\n'), [...goldenLines('-'), 'error ERR_INVALID_MANIFEST: 8 problem(s) in 1 file(s)']);
  });

  test('diff and apply print the same full list, sorted the same way, before touching any state', async () => {
    for (const cmd of [['diff'], ['apply'], ['apply', '--dry-run']]) {
      const r = await berth(env, [...cmd, '-f', eight]);
      assert.equal(r.code, 2, `${cmd.join(' ')}: ${r.stderr}`);
      assert.deepEqual(r.stderr.trimEnd().split('\n'), [...goldenLines(eight), 'error ERR_INVALID_MANIFEST: 8 problem(s) in 1 file(s); nothing was changed'], cmd.join(' '));
    }
  });

  test('exit 0 when all is valid: the shipped manifests', async () => {
    const dir = path.join(REPO, 'manifests');
    const r = await berth(env, ['validate', '-f', dir]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'valid: 3 objects in 3 files\n');
    const j = await berth(env, ['validate', '-f', dir, '-o', 'json']);
    assert.equal(j.code, 0, j.stderr);
    assert.deepEqual(parseJsonOutput(j.stdout), { valid: true, problems: [] });
  });

  test('a path that cannot be read: exit 2; with -o json, one problem naming it', async () => {
    const missing = path.join(env.dir, 'missing');
    const r = await berth(env, ['validate', '-f', missing]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^error ERR_INVALID_ARGUMENT: read manifests .*missing: no such file or directory$/m);
    const j = await berth(env, ['validate', '-f', missing, '-o', 'json']);
    assert.equal(j.code, 2);
    assert.deepEqual(parseJsonOutput(j.stdout), { valid: false, problems: [{ code: 'ERR_INVALID_ARGUMENT', file: missing, line: 1, col: 1, field: '', message: `read manifests ${missing}: no such file or directory` }] });
  });

  test('problems of a directory come file by file, each in line order', async () => {
    const dir = path.join(env.dir, 'tree');
    mkdirSync(path.join(dir, 'a'), { recursive: true });
    writeFileSync(path.join(dir, 'a', 'z.yaml'), 'apiVersion: v1\nkind: Pod\nmetadata: {name: z}\nspec:\n  hostNetwork: true\n  containers: [{name: a, image: busybox, comand: [x]}]\n  restartPolicy: never\n');
    writeFileSync(path.join(dir, 'b.json'), JSON.stringify({ ...POD('b'), kind: 'Pdo' }, null, 2));
    const r = await berth(env, ['validate', '-f', dir]);
    assert.equal(r.code, 2);
    assert.deepEqual(
      r.stderr
        .trimEnd()
        .split('\n')
        .map((l) => l.replace(`${dir}/`, '').split(': ').slice(0, 3).join(': ')),
      [
        'error ERR_INVALID_MANIFEST: a/z.yaml:6:42: spec.containers[0].comand',
        'error ERR_INVALID_MANIFEST: a/z.yaml:7:18: spec.restartPolicy',
        'error ERR_INVALID_MANIFEST: b.json:3:11: kind',
        'error ERR_INVALID_MANIFEST: 3 problem(s) in 2 file(s)',
      ],
    );
  });

  test('needs no root, no state and no registry: runs as nobody with --root and --state that do not exist', (t) => {
    const file = path.join(env.dir, 'nobody', 'eight.yaml');
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, EIGHT);
    chmodSync(env.dir, 0o755);
    chmodSync(path.dirname(file), 0o755);
    chmodSync(file, 0o644);
    let cli = CLI;
    let repo = REPO;
    let argv: string[];
    if (process.getuid?.() !== 0) {
      argv = [process.execPath, cli, '--root', '/nonexistent/x', '--state', '/nonexistent/y', 'validate', '-f', file];
    } else {
      try {
        execFileSync('setpriv', ['--version'], { stdio: 'ignore' });
      } catch {
        assert.ok(process.env['CI'] !== 'true', 'setpriv (util-linux) is missing in CI');
        return t.skip('setpriv (util-linux) not found: cannot drop to nobody');
      }
      const asNobody = (wrap: string[]): string[] => [...wrap, 'setpriv', '--reuid', 'nobody', '--regid', 'nogroup', '--clear-groups', process.execPath];
      const readable = (wrap: string[]): ReturnType<typeof spawnSync> =>
        spawnSync(asNobody(wrap)[0] ?? '', [...asNobody(wrap).slice(1), '-e', `require('fs').accessSync(${JSON.stringify(cli)}, require('fs').constants.R_OK)`]);
      let wrap: string[] = [];
      if (readable(wrap).status !== 0) {
        // The checkout lies under a directory nobody may enter (a fresh machine clones into
        // /root/project): show it to nobody through a bind mount in a mount namespace of its own.
        const mnt = mkdtempSync(path.join(os.tmpdir(), 'berth-repo-'));
        chmodSync(mnt, 0o755);
        t.after(() => rmdirSync(mnt));
        wrap = ['unshare', '-m', 'sh', '-c', 'mount --make-rprivate / && mount --bind "$0" "$1" && shift && exec "$@"', REPO, mnt];
        cli = path.join(mnt, path.relative(REPO, CLI));
        repo = mnt;
        const probe = readable(wrap);
        if (probe.status !== 0) {
          assert.ok(process.env['CI'] !== 'true', `nobody cannot read ${cli} even through a bind mount: ${String(probe.stderr)}`);
          return t.skip(`nobody cannot read ${cli}: ${String(probe.stderr).trim()}`);
        }
      }
      argv = [...asNobody(wrap), cli, '--root', '/nonexistent/x', '--state', '/nonexistent/y', 'validate', '-f', file];
    }
    const r = spawnSync(argv[0] ?? '', argv.slice(1), { encoding: 'utf8' });
    assert.equal(r.status, 2, r.stderr);
    assert.deepEqual(r.stderr.trimEnd().split('\n'), [...goldenLines(file), 'error ERR_INVALID_MANIFEST: 8 problem(s) in 1 file(s)']);
    const ok = spawnSync(argv[0] ?? '', [...argv.slice(1, -1), path.join(repo, 'manifests')], { encoding: 'utf8' });
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(ok.stdout, 'valid: 3 objects in 3 files\n');
  });

  test('regression: issue-12-json-dir — diff, apply --dry-run and validate all read a directory of .json manifests', async (t) => {
    const dir = path.join(env.dir, 'json');
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'app.json'), JSON.stringify(POD('app'), null, 2));
    writeFileSync(path.join(dir, 'more.yaml'), `apiVersion: v1\nkind: Pod\nmetadata: {name: more}\nspec: {hostNetwork: true, containers: [{name: main, image: "127.0.0.1:9/berth/none:1.0"}]}\n`);
    const v = await berth(env, ['validate', '-f', dir]);
    assert.equal(v.code, 0, v.stderr);
    assert.equal(v.stdout, 'valid: 2 objects in 2 files\n');
    // diff and apply need the runtime (root, runc): only those parts wait for the e2e prerequisites.
    if (missingE2EPrereqs().length > 0 && !requireE2E(t)) return;
    const d = await berth(env, ['diff', '-f', dir]);
    assert.equal(d.code, 1, d.stderr);
    assert.match(d.stdout, new RegExp(`\\+ pod default/app \\(${path.join(dir, 'app.json').replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:1\\)`));
    assert.match(d.stdout, /\+ pod default\/more /);
    const a = await berth(env, ['apply', '--dry-run', '-f', dir]);
    assert.equal(a.code, 0, a.stderr);
    assert.match(a.stdout, /\+ pod default\/app /);
    assert.match(a.stdout, /\+ pod default\/more /);
  });
});

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { loadManifests, parseManifestText, type LoadResult } from '../../src/reconciler/manifest.js';
import { propertyParams, returnsOrBerth, settlesAsBerth } from '../helpers/property.js';

/**
 * Issue 15, fuzzing the manifest loader (docs/property-tests.md): random text, random bytes and
 * mutated valid manifests into parseManifestText (strings), loadManifests on stdin text, and
 * loadManifests on a temp directory of random files. The loader reports bad input as problems
 * (file:line:col, a message) and may throw only a BerthError; nothing else, nothing slow, and
 * the same text always gives the same answer. Object.prototype stays as it was.
 */

const BOUND_MS = 2_000;
const IMAGE = '127.0.0.1:5000/berth/demo:1.0';

const VALID: readonly string[] = [
  `apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: edge
  labels:
    app: web
  annotations:
    note: "x"
spec:
  restartPolicy: OnFailure
  terminationGracePeriodSeconds: 5
  containers:
    - name: web
      image: ${IMAGE}
      command: ["httpd", "-f"]
      args:
        - -p
        - "8080"
      env:
        - name: A
          value: "1"
        - name: FROM_CM
          valueFrom:
            configMapKeyRef:
              name: cfg
              key: k
      ports:
        - containerPort: 8080
          hostPort: 18080
      resources:
        limits:
          memory: 64Mi
          cpu: 500m
      volumeMounts:
        - name: data
          mountPath: /data
  volumes:
    - name: data
      emptyDir: {}
`,
  `apiVersion: berth.dev/v1
kind: Container
metadata:
  name: one
spec:
  image: ${IMAGE}
  command: ["sleep", "1"]
  restartPolicy: Always
---
apiVersion: berth.dev/v1
kind: Image
metadata:
  name: demo
spec:
  ref: busybox
  platform: linux/arm/v7
`,
  `apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
data:
  k: v
  other: |
    line one
    line two
---
apiVersion: v1
kind: Secret
metadata:
  name: s
stringData:
  token: abc
`,
];

/** Fragments that change what YAML means: indicators, anchors, tags, directives, odd scalars, odd bytes. */
const TOKENS = [
  ': ', '- ', '{', '}', '[', ']', ',', '&a ', '*a', '<<: *a\n', '!!str ', '!!binary ', '!!map ', '!custom ', '|', '>-', "'", '"',
  '%YAML 1.1\n', '%TAG ! tag:x,2000:\n', '---\n', '...\n', '# c', '\t', '\n', '  ', '\0', '\ufeff', '\r\n', '\r', '\u2028',
  'yes', 'no', 'on', 'null', '~', '0x10', '0o17', '1e400', '-.inf', '.nan', '2001-12-14', '12:30:45', '?', '@', '`', '%',
  'kind: Pod', 'kind: Deployment', 'apiVersion: v2', 'name: UPPER', 'name: ""', 'privileged: true', 'hostPath:\n  path: /', '__proto__: {x: 1}',
  'constructor:', "'\\x00'", '"\\u0000"', '"\\ud800"', 'a'.repeat(300),
];

const mutation = fc.oneof(
  fc.record({ op: fc.constant('insert' as const), at: fc.nat(), token: fc.constantFrom(...TOKENS) }),
  fc.record({ op: fc.constant('delete' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 40 }) }),
  fc.record({ op: fc.constant('dupLine' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('swapLines' as const), at: fc.nat(), with: fc.nat() }),
  fc.record({ op: fc.constant('indent' as const), at: fc.nat(), by: fc.integer({ min: -4, max: 4 }) }),
);
type Mutation = typeof mutation extends fc.Arbitrary<infer M> ? M : never;

function mutate(text: string, muts: readonly Mutation[]): string {
  let t = text;
  for (const m of muts) {
    const at = t.length === 0 ? 0 : m.at % t.length;
    if (m.op === 'insert') t = t.slice(0, at) + m.token + t.slice(at);
    else if (m.op === 'delete') t = t.slice(0, at) + t.slice(at + m.len);
    else {
      const lines = t.split('\n');
      const i = m.at % lines.length;
      if (m.op === 'dupLine') lines.splice(i, 0, lines[i] as string);
      else if (m.op === 'swapLines') {
        const j = m.with % lines.length;
        [lines[i], lines[j]] = [lines[j] as string, lines[i] as string];
      } else lines[i] = m.by >= 0 ? ' '.repeat(m.by) + (lines[i] as string) : (lines[i] as string).slice(-m.by);
      t = lines.join('\n');
    }
  }
  return t;
}

const textInput = fc.oneof(
  { weight: 1, arbitrary: fc.string({ maxLength: 400 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 400 }) },
  { weight: 1, arbitrary: fc.array(fc.constantFrom(...TOKENS), { maxLength: 30 }).map((a) => a.join('')) },
  { weight: 6, arbitrary: fc.tuple(fc.constantFrom(...VALID), fc.array(mutation, { minLength: 1, maxLength: 5 })).map(([t, m]) => mutate(t, m)) },
);

const protoBefore = Object.getOwnPropertyNames(Object.prototype).sort();

/** What every problem list must look like: positioned, in the file it names, with a message. */
function checkShape(r: Pick<LoadResult, 'problems' | 'pods' | 'images' | 'configs'>, files: readonly string[], what: string): void {
  for (const p of r.problems) {
    assert.ok(files.includes(p.file), `${what}: problem in an unknown file ${p.file}`);
    assert.ok(Number.isInteger(p.line) && p.line >= 1 && Number.isInteger(p.col) && p.col >= 1, `${what}: problem position ${p.line}:${p.col}`);
    assert.ok(typeof p.message === 'string' && p.message.length > 0, `${what}: empty problem message`);
  }
  for (const o of [...r.pods, ...r.images, ...r.configs]) assert.ok(files.includes(o.source), `${what}: object from an unknown file ${o.source}`);
}

const tally = (m: Map<string, number>, k: string): void => void m.set(k, (m.get(k) ?? 0) + 1);

describe('property: manifest loader', () => {
  after(() => {
    assert.deepEqual(Object.getOwnPropertyNames(Object.prototype).sort(), protoBefore, 'Object.prototype is untouched');
  });

  test('the unmutated manifests load without problems (the fuzz starts from inputs that pass every check)', () => {
    for (const text of VALID) assert.deepEqual(parseManifestText(text, '/m/x.yaml').problems, []);
  });

  test('parseManifestText and loadManifests(stdin): problems or objects, never another error; deterministic', async (t) => {
    const seen = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(textInput, async (text) => {
        const what = `text ${JSON.stringify(text.slice(0, 400))}`;
        const first = returnsOrBerth(what, BOUND_MS, () => parseManifestText(text, '/m/x.yaml'));
        assert.ok(first.ok, `${what}: parseManifestText threw ${first.ok ? '' : first.message}`);
        const r = first.value as ReturnType<typeof parseManifestText>;
        checkShape(r, ['/m/x.yaml'], what);
        tally(seen, r.problems.length > 0 ? 'problems' : r.pods.length + r.images.length + r.configs.length > 0 ? 'objects' : 'empty');
        const again = parseManifestText(text, '/m/x.yaml');
        assert.deepEqual(again, r, `${what}: a second parse differs`);
        const stdin = await settlesAsBerth(`stdin ${what}`, BOUND_MS, () => loadManifests({ path: '-', stdinText: text }));
        if (stdin.ok) checkShape(stdin.value as LoadResult, ['-'], what);
      }),
      propertyParams(1000),
    );
    t.diagnostic(`outcomes: ${JSON.stringify([...seen].sort())}`);
    assert.ok((seen.get('problems') ?? 0) > 0 && (seen.get('objects') ?? 0) > 0, JSON.stringify([...seen]));
  });

  let base: string;
  let seq = 0;
  let outsideFile: string;
  let outsideDir: string;
  before(() => {
    base = mkdtempSync(path.join(os.tmpdir(), 'berth-property-manifests-'));
    // Valid manifests outside every fuzzed directory: symlinks point at them.
    outsideDir = path.join(base, 'outside');
    mkdirSync(outsideDir);
    outsideFile = path.join(base, 'outside.yaml');
    const pod = (name: string): string => `apiVersion: v1\nkind: Pod\nmetadata:\n  name: ${name}\nspec:\n  containers:\n    - name: c\n      image: ${IMAGE}\n`;
    writeFileSync(outsideFile, pod('outside-file'));
    writeFileSync(path.join(outsideDir, 'p.yaml'), pod('outside-dir'));
  });
  after(() => rmSync(base, { recursive: true, force: true }));

  const fileName = fc.constantFrom('a.yaml', 'b.yml', 'c.yaml', '.hidden.yaml', 'notes.txt', 'sub/d.yaml', 'sub/deeper/e.yml', 'f.YAML', 'g.yaml~');
  /** Regular files mostly; also symlinks out of the directory (a file, a directory, /), to itself and to '.', and fifos. */
  const fileKind = fc.oneof(
    { weight: 8, arbitrary: fc.constant('file' as const) },
    { weight: 1, arbitrary: fc.constantFrom('link-out-file' as const, 'link-out-dir' as const, 'link-root' as const, 'link-dot' as const, 'loop' as const, 'fifo' as const) },
  );
  const fileContent = fc.oneof(
    { weight: 3, arbitrary: textInput.map((s) => Buffer.from(s, 'utf8')) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 600 }).map((u) => Buffer.from(u)) },
  );

  test('loadManifests(directory of random files): a LoadResult or a BerthError, problems in the files read', { timeout: 120_000 }, async (t) => {
    const seen = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(fc.uniqueArray(fc.tuple(fileName, fileContent, fileKind), { selector: ([n]) => n.split('/')[0], minLength: 1, maxLength: 5 }), async (files) => {
        const dir = path.join(base, `d${++seq}`);
        try {
          mkdirSync(dir);
          for (const [name, content, kind] of files) {
            const p = path.join(dir, name);
            mkdirSync(path.dirname(p), { recursive: true });
            if (kind === 'file') writeFileSync(p, content);
            else if (kind === 'fifo') execFileSync('mkfifo', [p]);
            else if (kind === 'loop') symlinkSync(path.basename(p), p);
            else symlinkSync(kind === 'link-out-file' ? outsideFile : kind === 'link-out-dir' ? outsideDir : kind === 'link-root' ? '/' : '.', p);
          }
          const what = `files ${JSON.stringify(files.map(([n, c, k]) => [n, k, c.toString('latin1').slice(0, 200)]))}`;
          const ending = await settlesAsBerth(what, BOUND_MS, () => loadManifests(dir));
          tally(seen, ending.ok ? ((ending.value as LoadResult).problems.length > 0 ? 'problems' : 'clean') : ending.code);
          if (!ending.ok) return;
          const r = ending.value as LoadResult;
          checkShape(r, r.files, what);
          for (const f of r.files) assert.ok(f.startsWith(`${dir}/`), `${what}: read ${f} outside the directory`);
          for (const o of [...r.pods, ...r.images, ...r.configs]) assert.ok(!r.badFiles.includes(o.source), `${what}: object kept from bad file ${o.source}`);
          // The manifests outside the directory, reachable only through symlinks, are never loaded.
          assert.ok(!r.pods.some((p) => p.name.startsWith('outside')), `${what}: loaded a pod from outside the directory`);
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      }),
      propertyParams(200),
    );
    t.diagnostic(`outcomes: ${JSON.stringify([...seen].sort())}`);
  });
});

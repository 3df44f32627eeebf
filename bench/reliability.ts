/**
 * bench/reliability — issue 15's suites at full size, in one run, summed into ONE table: trials run, containers
 * lost, corrupt or orphaned objects, hostile inputs tried / rejected / confined / escaped, faults injected /
 * survived, credentials leaked. Target: 0 lost, 0 corrupt, 0 escaped, 0 leaked.
 *
 *   bash bench/reliability.sh [--trials N] [--crash-point-runs N] [--pods N] [--edits N] [--seconds S]
 *                             [--storm-pods N] [--cli N] [--property-runs N] [--only crash,load,hostile,faults,property]
 *
 * It runs the test files themselves (node --test, TAP reporter, one file at a time), with the environment
 * variables that raise their sizes (BERTH_TRIALS, BERTH_LOAD_*, BERTH_PROPERTY_RUNS), and reads two things from
 * their output: the `BERTH_FIGURES {json}` lines the crash and load suites print, and the pass/fail of each test,
 * matched to the hostile-case catalogue (test/helpers/hostile.ts: each case's documented outcome, an error code
 * or `confined`). A hostile case whose test fails counts as escaped when its failure names a canary, a prototype
 * or a global (the suites' escape checks), otherwise as "failed otherwise" (a wrong code, a time bound). Every suite
 * uses its own temp roots, bridges and loopback registries (see each file).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { REPO } from '../test/helpers/berth.js';
import { IMAGE_CASES, LAYER_CASES, imageTestName, layerTestName } from '../test/helpers/hostile.js';
import { log, machine, revision } from './common.js';

const { values: opt } = parseArgs({
  options: {
    trials: { type: 'string', default: '100' },
    'crash-point-runs': { type: 'string', default: '1' },
    pods: { type: 'string', default: '100' },
    edits: { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '60' },
    'storm-pods': { type: 'string', default: '100' },
    cli: { type: 'string', default: '20' },
    'property-runs': { type: 'string', default: '1000' },
    only: { type: 'string', default: 'crash,load,hostile,faults,property' },
  },
});
const only = new Set(opt.only.split(','));
const DIST = path.join(REPO, 'dist', 'test');
/** Each suite's whole output is kept here, for the failures the table counts. */
const OUT = mkdtempSync(path.join(os.tmpdir(), 'berth-reliability-'));

interface TestResult {
  name: string;
  ok: boolean;
  skipped: boolean;
  /** The test's TAP YAML block (its error message when it failed). */
  detail: string;
}

/** A failure that shows something got out: a canary outside the root changed, a prototype or global was written. */
const ESCAPE = /canary|pwned|polluted|prototype/i;
interface FileRun {
  file: string;
  code: number | null;
  ms: number;
  tests: TestResult[];
  figures: Record<string, unknown>[];
}

/** Runs one built test file with node's test runner (TAP) and `env` added; returns its leaf tests and figures. */
function runFile(rel: string, env: Record<string, string>): Promise<FileRun> {
  const file = path.join(DIST, rel);
  const t0 = Date.now();
  log(`running ${rel} ${Object.entries(env).map(([k, v]) => `${k}=${v}`).join(' ')}`);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--test', '--test-concurrency=1', '--test-reporter=tap', file], {
      env: { ...process.env, CI: 'true', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      const saved = path.join(OUT, `${rel.replaceAll('/', '_')}-${Date.now()}.tap`);
      writeFileSync(saved, out);
      const r: FileRun = { file: rel, code, ms: Date.now() - t0, tests: parseTap(out), figures: [] };
      for (const m of out.matchAll(/BERTH_FIGURES (\{.*\})/g)) r.figures.push(JSON.parse(m[1] ?? '{}') as Record<string, unknown>);
      const failed = r.tests.filter((t) => !t.ok);
      log(`  ${r.tests.length} test(s), ${failed.length} failed, exit ${code}, ${(r.ms / 1000).toFixed(0)} s (output: ${saved})`);
      for (const f of failed) log(`  FAILED ${f.name}\n    ${(/error: (?:\|-\n\s*)?(.*)/.exec(f.detail)?.[1] ?? '').slice(0, 300)}`);
      if (code !== 0 && failed.length === 0) log(out.slice(-3000));
      resolve(r);
    });
  });
}

/** Leaf tests of a TAP stream: `ok`/`not ok` lines whose YAML block does not say `type: 'suite'`. */
function parseTap(text: string): TestResult[] {
  const lines = text.split('\n');
  const out: TestResult[] = [];
  for (let i = 0; i < lines.length; i++) {
    const m = /^(\s*)(not )?ok \d+ - (.*?)(\s+# (SKIP|TODO).*)?$/.exec(lines[i] ?? '');
    if (m === null) continue;
    let suite = false;
    const block: string[] = [];
    for (let j = i + 1; j < lines.length && j < i + 60; j++) {
      const l = lines[j] ?? '';
      if (/^\s*\.\.\.\s*$/.test(l)) break;
      if (/type: 'suite'/.test(l)) suite = true;
      block.push(l);
    }
    if (suite) continue;
    out.push({ name: m[3] ?? '', ok: m[2] === undefined, skipped: m[5] === 'SKIP', detail: block.join('\n') });
  }
  return out;
}

const sum = (runs: readonly FileRun[], suite: string, key: string): number =>
  runs.flatMap((r) => r.figures).filter((f) => f['suite'] === suite).reduce((a, f) => a + (typeof f[key] === 'number' ? (f[key] as number) : 0), 0);

async function main(): Promise<void> {
  log('bench/reliability — issue 15 suites at full size');
  log(machine());
  log(`revision ${revision()}`);
  log();
  const runs: FileRun[] = [];
  const rows: [string, string][] = [];
  const started = Date.now();

  // ── crash ────────────────────────────────────────────────────────────────────────────────────
  if (only.has('crash')) {
    const points: FileRun[] = [];
    for (let i = 0; i < Number(opt['crash-point-runs']); i++) points.push(await runFile('e2e/issue-15-crash-points.test.js', {}));
    const random = await runFile('e2e/issue-15-random-kill.test.js', { BERTH_TRIALS: opt.trials });
    runs.push(...points, random);
    const all = [...points, random];
    const f = (k: string): number => sum(all, 'crash-points', k) + sum(all, 'random-kill', k);
    rows.push(['crash trials run (injected points + random kill -9 of berth up)', `${f('trials')} (${sum(all, 'crash-points', 'trials')} + ${sum(all, 'random-kill', 'trials')}), ${f('passed')} passed`]);
    rows.push(['containers lost (running, not changed by the trial, pid changed or gone)', String(f('lost'))]);
    rows.push(['corrupt objects (blob not hashing to its name, rows and files disagreeing)', String(f('corrupt'))]);
    rows.push(['orphaned objects (mounts, cgroups, netns, veths, addresses, rules, runc, conmon, temp files)', String(f('orphaned'))]);
    rows.push(['crash trials failed otherwise (no convergence, exit codes)', String(f('other'))]);
  }

  // ── load ─────────────────────────────────────────────────────────────────────────────────────
  if (only.has('load')) {
    const r = await runFile('e2e/issue-15-load.test.js', {
      BERTH_LOAD_PODS: opt.pods,
      BERTH_LOAD_EDITS: opt.edits,
      BERTH_LOAD_SECONDS: opt.seconds,
      BERTH_LOAD_STORM_PODS: opt['storm-pods'],
      BERTH_LOAD_CLI: opt.cli,
    });
    runs.push(r);
    const f = r.figures.find((x) => x['suite'] === 'load') ?? {};
    const n = (k: string): string => (typeof f[k] === 'number' ? String(f[k]) : 'n/a');
    const s = (k: string): string => (typeof f[k] === 'number' ? `${((f[k] as number) / 1000).toFixed(1)} s` : 'n/a');
    rows.push([`load: ${opt.pods} pods from one directory converge`, `${s('convergeMs')} (${r.tests[0]?.ok === true ? 'pass' : 'FAIL'})`]);
    rows.push([`load: ${opt.edits} edits in ${opt.seconds} s to ${opt['storm-pods']} pods: lost updates, daemon crashes`, `${n('lostUpdates')} lost, settled ${s('settleMs')} after the last edit (${r.tests[1]?.ok === true ? 'pass' : 'FAIL'})`]);
    rows.push([`load: ${opt.cli} concurrent CLI commands answered as expected`, `${n('cliOk')} of ${opt.cli} in ${s('cliMs')} (${r.tests[2]?.ok === true ? 'pass' : 'FAIL'})`]);
  }

  // ── hostile inputs ───────────────────────────────────────────────────────────────────────────
  if (only.has('hostile')) {
    const layers = await runFile('unit/issue-15-hostile-layers.test.js', {});
    const images = await runFile('integration/issue-15-hostile-images.test.js', {});
    const manifests = await runFile('unit/issue-15-hostile-manifests.test.js', {});
    runs.push(layers, images, manifests);
    let tried = 0;
    let rejected = 0;
    let confined = 0;
    let escaped = 0;
    let failedOtherwise = 0;
    const failed = (t: TestResult): void => {
      if (ESCAPE.test(t.detail)) escaped++;
      else failedOtherwise++;
    };
    const count = (run: FileRun, cases: readonly { outcome: string }[], name: (c: never) => string): void => {
      for (const c of cases) {
        const t = run.tests.find((x) => x.name === name(c as never));
        if (t === undefined || t.skipped) continue;
        tried++;
        if (!t.ok) failed(t);
        else if (c.outcome === 'confined') confined++;
        else rejected++;
      }
    };
    count(layers, LAYER_CASES, layerTestName as (c: never) => string);
    count(images, IMAGE_CASES, imageTestName as (c: never) => string);
    for (const t of manifests.tests.filter((x) => x.name.startsWith('hostile manifest:') && !x.skipped)) {
      tried++;
      if (t.ok) rejected++;
      else failed(t);
    }
    rows.push(['hostile inputs tried (layers, images, manifests)', String(tried)]);
    rows.push(['  rejected with a coded error (manifests: refused or read as data)', String(rejected)]);
    rows.push(['  confined (extracted, nothing outside the root)', String(confined)]);
    rows.push(['  escaped (a canary outside the root, a prototype or a global changed)', String(escaped)]);
    rows.push(['  failed otherwise (wrong code or message, a time bound)', String(failedOtherwise)]);
  }

  // ── registry faults and disk full ────────────────────────────────────────────────────────────
  if (only.has('faults')) {
    const faults = await runFile('integration/issue-14-registry-faults.test.js', {});
    const guard = await runFile('integration/registry-guard.test.js', {});
    const disk = await runFile('e2e/issue-15-disk-full.test.js', {});
    const auth = existsSync(path.join(DIST, 'unit/issue-14-registry-auth.test.js')) ? [await runFile('unit/issue-14-registry-auth.test.js', {})] : [];
    runs.push(faults, guard, disk, ...auth);
    const injected = [...faults.tests, ...disk.tests].filter((t) => !t.skipped);
    rows.push(['faults injected (registry proxy faults, disk full)', String(injected.length)]);
    rows.push(['  survived as documented (resumed, retried or a coded error; nothing bad committed)', String(injected.filter((t) => t.ok).length)]);
    const credTests = [...guard.tests, ...auth.flatMap((a) => a.tests)].filter((t) => !t.skipped && /Authorization|credential|redact|P3|redirect|token|realm/i.test(t.name));
    rows.push(['credential checks (redirect hops, token realms, P3 refusals, redaction)', `${credTests.length} run, ${credTests.filter((t) => t.ok).length} passed`]);
    rows.push(['credentials leaked', String(credTests.filter((t) => !t.ok).length)]);
  }

  // ── property tests ───────────────────────────────────────────────────────────────────────────
  if (only.has('property')) {
    const files: string[] = [];
    for (const kind of ['unit', 'integration', 'e2e']) {
      const d = path.join(DIST, kind);
      if (!existsSync(d)) continue;
      for (const f of readdirSync(d)) if (/^property-.*\.test\.js$/.test(f)) files.push(`${kind}/${f}`);
    }
    const prop: FileRun[] = [];
    for (const f of files) prop.push(await runFile(f, { BERTH_PROPERTY_RUNS: opt['property-runs'] }));
    runs.push(...prop);
    const tests = prop.flatMap((r) => r.tests).filter((t) => !t.skipped);
    rows.push([`property tests (${files.length} file(s), BERTH_PROPERTY_RUNS=${opt['property-runs']})`, `${tests.length} run, ${tests.filter((t) => !t.ok).length} failed`]);
  }

  log();
  log(`| figure | value |`);
  log(`|---|---|`);
  for (const [k, v] of rows) log(`| ${k} | ${v} |`);
  log();
  const failed = runs.filter((r) => r.code !== 0).map((r) => r.file);
  log(`${runs.length} suite run(s) in ${((Date.now() - started) / 60_000).toFixed(1)} min; ${failed.length === 0 ? 'all passed' : `failed: ${failed.join(', ')}`}`);
}

main().catch((err: unknown) => {
  log(`bench/reliability: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exitCode = 1;
});

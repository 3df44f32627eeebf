import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { buildBusyboxImage, pushImage, type BuiltImage } from '../../scripts/fixture-image.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { imageWithData, prng } from '../helpers/gc-images.js';
import { listStore, storeProblems, type StoreListing } from '../helpers/gc-check.js';
import { newFigures, printFigures } from '../helpers/crash-check.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, CLI, cleanupEnv, makeEnv, waitFor, type BerthEnv } from '../helpers/berth.js';

/**
 * Issue 14: kill -9 of `berth gc` and `berth images prune` at random moments. Each trial pulls
 * four garbage images (a layer of 600 files each, so removing their snapshot directories takes
 * measurable time), makes them garbage (`images rm`, or `images prune` which forgets them itself),
 * runs the command and SIGKILLs it after a delay drawn by a seeded PRNG over the measured span of
 * a whole run (process start to exit), plus the crash points GC has (`state.in-transaction`,
 * `state.after-row-before-files`, `gc.after-file`). After each kill:
 *  - the running container keeps its pid, and every image that still has a row (the pod's, and
 *    the kept image in gc trials) has its manifest row, every blob and every snapshot row and
 *    directory — only files no row names may be left (they are the next GC's);
 *  - after the next `berth gc`, rows and files agree (gc-check.ts) and every blob hashes to its name.
 * Prints a BERTH_FIGURES line (trials, lost, corrupt) on stderr.
 */

const SEED = Number(process.env['BERTH_GC_KILL_SEED'] ?? '1414');
const RANDOM_TRIALS = 10;
const GARBAGE = 4;

interface PsPod {
  key: string;
  containers: { id: string; state: string; pid: number | null }[];
}

/** Runs the CLI and SIGKILLs it after `killAfterMs` (if still running); resolves with how it ended. */
function berthKilled(env: BerthEnv, args: string[], killAfterMs: number | undefined, extraEnv: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number; stderr: string }> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const child = spawn(process.execPath, [CLI, '--root', env.root, '--state', env.state, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...extraEnv } });
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const timer = killAfterMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    const guard = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (timer !== undefined) clearTimeout(timer);
      clearTimeout(guard);
      resolve({ code, signal, ms: Date.now() - t0, stderr });
    });
  });
}

async function sha256File(p: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(p)) h.update(c as Buffer);
  return `sha256:${h.digest('hex')}`;
}

/** Missing pieces of the images that still have rows (what a kill must never cause). */
function missingOfKept(s: StoreListing): string[] {
  const out: string[] = [];
  const blobs = new Set(s.blobs);
  const dirs = new Set(s.snapshotDirs);
  const snaps = new Set(s.snapshots.map((x) => x.chainId));
  const digests = new Set([...s.images.map((i) => i.digest), ...s.containers.map((c) => c.imageDigest)]);
  for (const d of digests) {
    const m = s.manifests.find((x) => x.digest === d);
    if (m === undefined) {
      out.push(`manifest ${d} has no row`);
      continue;
    }
    for (const b of [m.digest, m.configDigest, ...m.layers.map((l) => l.digest)]) if (!blobs.has(b)) out.push(`manifest ${d}: blob ${b} missing`);
    for (const l of m.layers) {
      if (!snaps.has(l.chainId)) out.push(`manifest ${d}: snapshot row ${l.chainId} missing`);
      if (!dirs.has(l.chainId)) out.push(`manifest ${d}: snapshot directory ${l.chainId} missing`);
    }
  }
  return out;
}

describe('e2e: kill -9 of gc and images prune at random moments (issue 14)', { timeout: 900_000 }, () => {
  let ok = true;
  let env: BerthEnv;
  let registry: TestRegistry | undefined;
  let file = '';
  const garbage: BuiltImage[] = [];
  let usedRef = '';
  let keptRef = '';

  const ps = async (): Promise<PsPod[]> => {
    const r = await berth(env, ['ps', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as PsPod[];
  };
  const web = async (): Promise<PsPod['containers'][number] | undefined> => (await ps()).find((p) => p.key === 'default/gck-web')?.containers.at(-1);

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv('berth-gckill-');
    registry = await startRegistry();
    const base = await buildBusyboxImage();
    const used = await imageWithData(base, { seed: 900, files: 50, fileBytes: 2048 });
    const kept = await imageWithData(base, { seed: 901, files: 50, fileBytes: 2048 });
    await pushImage(registry.url, 'berth/gck', 'used', used);
    await pushImage(registry.url, 'berth/gck', 'kept', kept);
    for (let i = 0; i < GARBAGE; i++) {
      const g = await imageWithData(base, { seed: 1000 + i, files: 600, fileBytes: 1024 });
      garbage.push(g);
      await pushImage(registry.url, 'berth/gck', `g${i}`, g);
    }
    usedRef = `${registry.host}/berth/gck:used`;
    keptRef = `${registry.host}/berth/gck:kept`;
    file = path.join(env.dir, 'gck-web.yaml');
    await fsp.writeFile(
      file,
      `apiVersion: v1
kind: Pod
metadata: {name: gck-web}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
    - name: main
      image: ${usedRef}
      command: ["sh", "-c", "while true; do sleep 1; done"]
`,
    );
  });

  after(async () => {
    if (!ok) return;
    await berth(env, ['delete', '-f', file]).catch(() => undefined);
    await cleanupEnv(env);
    await registry?.stop();
  });

  test('gc-kill-random: ≥ 10 kills at seeded random moments plus the crash points lose and corrupt nothing', async (t) => {
    if (!ok || registry === undefined) return t.skip();
    const applied = await berth(env, ['apply', '-f', file]);
    assert.equal(applied.code, 0, applied.stderr);
    const first = await waitFor('gck-web running', async () => {
      const c = await web();
      return c?.state === 'running' ? c : undefined;
    }, 60_000);
    const figures = { ...newFigures('issue-14-gc-kill'), seed: SEED, midGc: 0, spanMs: 0, delaysMs: [] as number[] };
    const rand = prng(SEED);

    /** Pulls the garbage images (and the kept one); for gc trials forgets the garbage ones. */
    const prepare = async (cmd: 'gc' | 'prune'): Promise<void> => {
      for (const ref of [keptRef, ...garbage.map((_g, i) => `${registry?.host ?? ''}/berth/gck:g${i}`)]) {
        const r = await berth(env, ['images', 'pull', '-q', ref]);
        assert.equal(r.code, 0, r.stderr);
      }
      if (cmd === 'gc') {
        const rm = await berth(env, ['images', 'rm', ...garbage.map((_g, i) => `${registry?.host ?? ''}/berth/gck:g${i}`)]);
        assert.equal(rm.code, 0, rm.stderr);
      }
    };
    const argsOf = (cmd: 'gc' | 'prune'): string[] => (cmd === 'gc' ? ['gc'] : ['images', 'prune']);

    // The span of one whole run and of a run with nothing to remove (process start, lock, open,
    // mark), measured: the random kills fall over [0.8 × empty, 1.1 × whole], where GC works.
    await prepare('gc');
    const whole = await berthKilled(env, ['gc'], undefined);
    assert.equal(whole.code, 0, whole.stderr);
    const empty = await berthKilled(env, ['gc'], undefined);
    assert.equal(empty.code, 0, empty.stderr);
    figures.spanMs = whole.ms;
    assert.deepEqual(storeProblems(await listStore(env.root)), []);
    const lo = 0.8 * Math.min(empty.ms, whole.ms);
    const hi = 1.1 * whole.ms;

    const trials: { name: string; cmd: 'gc' | 'prune'; delay?: number; crash?: string }[] = [];
    for (let i = 0; i < RANDOM_TRIALS; i++) trials.push({ name: `random ${i + 1}`, cmd: i % 2 === 0 ? 'gc' : 'prune', delay: Math.round(lo + rand() * (hi - lo)) });
    trials.push({ name: 'state.in-transaction', cmd: 'gc', crash: 'state.in-transaction' });
    trials.push({ name: 'state.after-row-before-files', cmd: 'prune', crash: 'state.after-row-before-files' });
    trials.push({ name: 'gc.after-file:5', cmd: 'gc', crash: 'gc.after-file:5' });

    const table: string[] = [];
    for (const tr of trials) {
      figures.trials++;
      try {
        await prepare(tr.cmd);
        const r = await berthKilled(env, argsOf(tr.cmd), tr.delay, tr.crash !== undefined ? { BERTH_CRASH_AT: tr.crash } : {});
        if (tr.crash !== undefined) assert.equal(r.signal, 'SIGKILL', `${tr.name}: the crash point was reached: ${r.stderr}`);
        if (tr.delay !== undefined) figures.delaysMs.push(tr.delay);
        const killed = r.signal === 'SIGKILL';
        const s = await listStore(env.root);
        const left = storeProblems(s).filter((p) => /referenced by no row|has no row$/.test(p));
        if (killed && left.length > 0) figures.midGc++;
        const c = await web();
        try {
          assert.equal(c?.state, 'running', `${tr.name}: the container kept its pid (still running)`);
          assert.equal(c?.pid, first.pid, `${tr.name}: the container kept its pid`);
          assert.deepEqual(missingOfKept(s), [], `${tr.name}: no kept image or running container lost a layer`);
        } catch (err) {
          figures.lost++;
          throw err;
        }
        const next = await berth(env, ['gc']);
        assert.equal(next.code, 0, next.stderr);
        try {
          const after = await listStore(env.root);
          assert.deepEqual(storeProblems(after), [], `${tr.name}: rows and files agree after the next gc`);
          for (const b of after.blobs) assert.equal(await sha256File(path.join(env.root, 'content/blobs/sha256', b.slice(7))), b, `${tr.name}: ${b} hashes to its name`);
          assert.ok(existsSync(path.join(env.root, 'snapshots')));
          assert.ok(after.images.some((i) => i.ref === usedRef), 'the used image is kept');
          if (tr.cmd === 'gc') assert.ok(after.images.some((i) => i.ref === keptRef), 'gc keeps an image with a row');
        } catch (err) {
          figures.corrupt++;
          throw err;
        }
        figures.passed++;
        table.push(`${tr.name.padEnd(30)} ${tr.cmd.padEnd(6)} ${tr.delay !== undefined ? `${tr.delay} ms`.padEnd(9) : '-'.padEnd(9)} ${killed ? 'killed' : 'finished'}${killed && left.length > 0 ? ` mid-GC (${left.length} files left for the next gc)` : ''}`);
      } catch (err) {
        if (figures.lost === 0 && figures.corrupt === 0) figures.other++;
        printFigures(figures);
        throw err;
      }
    }
    process.stderr.write(`gc kill trials (seed ${SEED}, whole run ${whole.ms} ms, nothing to remove ${empty.ms} ms):\n${table.join('\n')}\n`);
    printFigures(figures);
    assert.ok(figures.trials >= 13);
    assert.ok(figures.midGc >= 4, `at least 4 kills landed mid-GC (got ${figures.midGc}): the delays cover the GC`);
    assert.equal(figures.lost, 0);
    assert.equal(figures.corrupt, 0);
  });
});

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, CLI, cleanupEnv, conmonProcesses, makeEnv, mountsUnder, type BerthEnv } from '../helpers/berth.js';

/**
 * kill -9 of `berth apply` at staggered moments (mid-pull, mid-create, mid-replace): a
 * running container is never harmed, the next apply converges, and nothing is left
 * behind — exactly one container, one conmon, one mount, no temp residue.
 */
describe('e2e: kill -9 of berth apply at any moment', { timeout: 600_000 }, () => {
  let demo: DemoFixture | undefined;
  let env: BerthEnv;
  let file: string;
  let text: string;
  let ok = true;

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv();
    demo = await startDemoFixture();
    text = demo.text;
    file = path.join(env.dir, 'web.yaml');
  });
  after(async () => {
    if (env !== undefined) await cleanupEnv(env);
    await demo?.stop();
  });

  const killedApply = async (delayMs: number): Promise<void> => {
    const child = spawn(process.execPath, [CLI, '--root', env.root, '--state', env.state, 'apply', '-f', file], { stdio: 'ignore' });
    const exited = new Promise((r) => child.once('exit', r));
    await new Promise((r) => setTimeout(r, delayMs));
    child.kill('SIGKILL');
    await exited;
  };

  /** Pods running besides default/web (the bystander of the second test). */
  let others = 0;
  const pidOf = async (key: string): Promise<number | undefined> => {
    const rows = JSON.parse((await berth(env, ['ps', '-o', 'json'])).stdout) as { key: string; containers: { state: string; pid: number }[] }[];
    const c = rows.find((p) => p.key === key)?.containers[0];
    return c?.state === 'running' ? c.pid : undefined;
  };

  const settled = async (): Promise<{ pid: number; id: string }> => {
    const r = await berth(env, ['apply', '-f', file]);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    const rows = JSON.parse((await berth(env, ['ps', '-o', 'json'])).stdout) as { key: string; containers: { id: string; state: string; pid: number }[] }[];
    assert.equal(rows.length, 1 + others);
    const cs = rows.find((p) => p.key === 'default/web')?.containers ?? [];
    assert.equal(cs.length, 1, JSON.stringify(cs));
    assert.equal(cs[0]?.state, 'running');
    assert.equal((await fsp.readdir(path.join(env.state, 'runc'))).length, 1 + others, 'one runc container per pod');
    assert.equal((await conmonProcesses(env.state)).length, 1 + others, 'one conmon per pod');
    assert.equal((await mountsUnder(env.root)).length, 1 + others, 'one rootfs mount per pod');
    assert.deepEqual(await fsp.readdir(path.join(env.root, 'content', 'ingest')), []);
    assert.deepEqual((await fsp.readdir(path.join(env.root, 'snapshots'))).filter((n) => n.startsWith('tmp-')), []);
    return { pid: cs[0]?.pid ?? 0, id: cs[0]?.id ?? '' };
  };

  test('first apply killed at staggered delays, then converges to one healthy container', async (t) => {
    if (!ok) return t.skip();
    await fsp.writeFile(file, text);
    for (const delay of [150, 300, 450, 600, 800]) await killedApply(delay);
    await settled();
  });

  test('a replace killed midway never leaves two containers; an unrelated running container keeps its pid', async (t) => {
    if (!ok) return t.skip();
    // A bystander pod from another file: every killed apply of web.yaml must leave it alone.
    const bystander = path.join(env.dir, 'bystander.yaml');
    await fsp.writeFile(bystander, text.replace('name: web', 'name: bystander').replace(/command: \[.*\]/, 'command: ["sleep", "3600"]').replace(/\n\s+ports:\n(\s+[-a-zA-Z].*\n)+/, '\n'));
    const b = await berth(env, ['apply', '-f', bystander]);
    assert.equal(b.code, 0, b.stderr);
    others = 1;
    const bystanderPid = await pidOf('default/bystander');
    assert.ok(bystanderPid !== undefined, 'the bystander runs');
    const { pid: before } = await settled();
    for (const [i, delay] of [200, 400, 700].entries()) {
      // Same directory, different spelling: a new spec hash that still serves.
      await fsp.writeFile(file, text.replace('"-h", "/var/www"]', `"-h", "/var/www${'/.'.repeat(i + 1)}"]`));
      await killedApply(delay);
      const after = await settled();
      assert.ok(after.pid > 0);
    }
    // Re-applying the last file with nothing to do keeps the pid.
    const last = await settled();
    const again = await settled();
    assert.equal(again.pid, last.pid);
    assert.notEqual(last.pid, before);
    assert.equal(await pidOf('default/bystander'), bystanderPid, 'the unrelated pod kept its pid through every killed apply');

    // regression: check-misses-dead-monitor — a container whose conmon died is reported.
    const [conmon] = await conmonProcesses(env.state);
    assert.ok(conmon !== undefined);
    process.kill(conmon, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 200));
    const check = await berth(env, ['check']);
    assert.match(check.stdout, /^warn\s+monitor\s+.*runs without its conmon/m);
  });
});

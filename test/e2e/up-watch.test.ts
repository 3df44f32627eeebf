import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { promises as fsp, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, berthUp, cleanupEnv, conmonProcesses, httpGet, makeEnv, mountsUnder, waitFor, waitResyncs, type BerthEnv } from '../helpers/berth.js';

/** `berth up DIR` converges on file edits, keeps last-good on broken files, restores drift, prunes removed files; `apply --prune`. */
describe('e2e: berth up and prune', { timeout: 600_000 }, () => {
  let demo: DemoFixture | undefined;
  let env: BerthEnv;
  let port: number;
  let dir: string;
  let text: string;
  let ok = true;

  const pids = async (): Promise<Map<string, number>> => {
    const r = await berth(env, ['ps', '-o', 'json']);
    const rows = JSON.parse(r.stdout) as { key: string; containers: { name: string; state: string; pid: number | null }[] }[];
    const out = new Map<string, number>();
    for (const p of rows) for (const c of p.containers) if (c.state === 'running' && c.pid !== null) out.set(`${p.key}/${c.name}`, c.pid);
    return out;
  };

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv();
    demo = await startDemoFixture();
    port = demo.port;
    text = demo.text;
    dir = path.join(env.dir, 'site');
    await fsp.mkdir(dir);
  });
  after(async () => {
    if (env !== undefined) await cleanupEnv(env);
    await demo?.stop();
  });

  test('up: create, edit, broken file keeps last good, drift restored, removal prunes', async (t) => {
    if (!ok) return t.skip();
    const file = path.join(dir, 'web.yaml');
    await fsp.writeFile(file, text);
    let up = berthUp(env, dir, ['--resync', '2']);
    try {
      const first = await waitFor('pod running', async () => (await pids()).get('default/web/httpd'), 60_000);
      await waitFor('page', async () => ((await httpGet(`http://127.0.0.1:${port}/`).catch(() => undefined))?.status === 200 ? true : undefined));

      // Edit: the watcher sees the save and replaces the container.
      await fsp.writeFile(file, text.replace('"-h", "/var/www"]', '"-h", "/etc"]'));
      const second = await waitFor('replaced', async () => {
        const p = (await pids()).get('default/web/httpd');
        return p !== undefined && p !== first ? p : undefined;
      }, 60_000);
      assert.ok(readFileSync(`/proc/${second}/cmdline`, 'utf8').split('\0').includes('/etc'));

      // Broken YAML: the pod keeps running with its pid; the error names the file and line.
      await fsp.writeFile(file, `${text}\n  bogus: [\n`);
      await waitFor('invalid manifest logged', async () => (/invalid manifest: .*web\.yaml:\d+:\d+/.test(up.output()) ? true : undefined), 30_000);
      // regression: up-says-converged-on-invalid — the human output names the file and line.
      await waitFor('invalid manifest shown', async () => (/! invalid manifest \(last good objects kept\): .*web\.yaml:\d+:\d+/.test(up.output()) ? true : undefined), 30_000);
      // ... and recorded: an Invalid event keyed by the file, and the pod's InvalidSpec condition.
      const events = JSON.parse((await berth(env, ['events', '-o', 'json'])).stdout) as { key: string; reason: string; message: string }[];
      assert.ok(events.some((e) => e.key === `source/${file}` && e.reason === 'Invalid' && /web\.yaml:\d+:\d+/.test(e.message)), JSON.stringify(events.slice(-5)));
      await waitFor('status InvalidSpec', async () => {
        const st = JSON.parse((await berth(env, ['status', '-o', 'json'])).stdout) as { pods: { key: string; status: string }[] };
        return st.pods.find((p) => p.key === 'default/web')?.status === 'InvalidSpec' ? true : undefined;
      }, 10_000);
      await waitResyncs(env, 2); // resyncs with the broken file
      assert.equal((await pids()).get('default/web/httpd'), second);

      // regression: pod-record-follows-container-edits — a new berth up that starts while the
      // file is broken keeps what was last applied from it (the edited command, not the first one).
      up.child.kill('SIGKILL');
      await new Promise((r) => up.child.once('exit', r));
      up = berthUp(env, dir, ['--resync', '2']);
      await waitFor('restarted up reports the broken file', async () => (/invalid manifest: .*web\.yaml/.test(up.output()) ? true : undefined), 30_000);
      await waitResyncs(env, 2);
      assert.equal((await pids()).get('default/web/httpd'), second, up.output());

      // regression: empty-file-prunes — an emptied file (a non-atomic rewrite) keeps its pod (rule M5).
      const good = await fsp.readFile(file, 'utf8');
      await fsp.writeFile(file, '');
      await waitFor('empty file noticed', async () => (/empty manifest keeps its last objects/.test(up.output()) ? true : undefined), 30_000);
      await waitResyncs(env, 2);
      assert.equal((await pids()).get('default/web/httpd'), second);
      await fsp.writeFile(file, good);

      // Drift: runc kill behind berth's back → restarted by restartPolicy Always on resync.
      const runcRoot = path.join(env.state, 'runc');
      const [id] = (await fsp.readdir(runcRoot));
      assert.ok(id !== undefined);
      execFileSync('runc', ['--root', runcRoot, 'kill', id, 'KILL']);
      const third = await waitFor('restarted after drift', async () => {
        const p = (await pids()).get('default/web/httpd');
        return p !== undefined && p !== second ? p : undefined;
      }, 60_000);
      assert.notEqual(third, second);
      // Three incarnations so far: only the current log and the previous one are kept.
      const logs = await fsp.readdir(path.join(env.root, 'logs', 'default_web', 'httpd'));
      assert.equal(logs.length, 2, logs.join(', '));

      // Removing the file prunes the pod and everything it had.
      await fsp.rm(file);
      await waitFor('pruned', async () => ((await pids()).size === 0 && (await mountsUnder(env.root)).length === 0 ? true : undefined), 60_000);
      assert.deepEqual(await conmonProcesses(env.state), []);
      assert.deepEqual(await fsp.readdir(runcRoot), []);
    } finally {
      up.child.kill('SIGTERM');
      await new Promise((r) => up.child.once('exit', r));
    }
  });

  test('regression up-dies-on-config-apply, up-abort-listener-leak: berth up outlives a ConfigMap applied while its directory is gone, and many reloads', async (t) => {
    if (!ok) return t.skip();
    const watched = path.join(env.dir, 'leak');
    await fsp.mkdir(watched);
    const cm = path.join(env.dir, 'cm.yaml');
    const up = berthUp(env, watched, ['--resync', '3600']);
    try {
      await waitFor('socket', async () => ((await berth(env, ['status'])).code === 0 ? true : undefined), 30_000);
      // Reloads: each wakes the summary loop once.
      for (let i = 0; i < 15; i++) {
        await fsp.writeFile(cm, `apiVersion: v1\nkind: ConfigMap\nmetadata: {name: leak}\ndata: {n: "${i}"}\n`);
        const a = await berth(env, ['apply', '-f', cm]);
        assert.equal(a.code, 0, a.stderr);
      }
      await new Promise((r) => setTimeout(r, 500));
      assert.doesNotMatch(up.output(), /MaxListenersExceededWarning/);
      // The watched directory disappears; an apply of a ConfigMap reloads it and fails to read it.
      await fsp.rename(watched, `${watched}.away`);
      await fsp.writeFile(cm, 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: leak}\ndata: {n: "last"}\n');
      await berth(env, ['apply', '-f', cm]);
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal(up.child.exitCode, null, up.output().slice(-2000));
      assert.equal((await berth(env, ['status'])).code, 0);
    } finally {
      up.child.kill('SIGTERM');
      await new Promise((r) => (up.child.exitCode !== null ? r(undefined) : up.child.once('exit', r)));
      await fsp.rename(`${watched}.away`, watched).catch(() => undefined);
    }
  });

  test('regression pod-in-two-roots-silent: a pod declared in two watched directories is a problem naming both files; the first keeps it', async (t) => {
    if (!ok) return t.skip();
    const d1 = path.join(env.dir, 'root1');
    const d2 = path.join(env.dir, 'root2');
    await fsp.mkdir(d1);
    await fsp.mkdir(d2);
    await fsp.writeFile(path.join(d1, 'web.yaml'), text);
    await fsp.writeFile(path.join(d2, 'web.yaml'), text);
    const up = berthUp(env, d1, [d2, '--resync', '3600']);
    try {
      await waitFor('duplicate named', async () => (new RegExp(`invalid manifest.*${d2}/web\\.yaml:\\d+:\\d+: .*pod default/web is also declared in ${d1}/web\\.yaml`).test(up.output()) ? true : undefined), 60_000);
      const st = JSON.parse((await berth(env, ['status', '-o', 'json'])).stdout) as { pods: { key: string; source?: string }[] };
      assert.equal(st.pods.filter((p) => p.key === 'default/web').length, 1);
    } finally {
      up.child.kill('SIGTERM');
      await new Promise((r) => (up.child.exitCode !== null ? r(undefined) : up.child.once('exit', r)));
      await berth(env, ['delete', '--force', '-f', path.join(d1, 'web.yaml')]);
    }
  });

  test('apply --prune deletes what this path applied and no longer declares; plain apply does not', async (t) => {
    if (!ok) return t.skip();
    const file = path.join(dir, 'web.yaml');
    await fsp.writeFile(file, text);
    const a = await berth(env, ['apply', '-f', dir]);
    assert.equal(a.code, 0, a.stderr);
    assert.equal((await pids()).size, 1);
    await fsp.rm(file);
    const plain = await berth(env, ['apply', '-f', dir]);
    assert.equal(plain.code, 2, 'an empty directory without --prune is refused, as kubectl does');
    assert.equal((await pids()).size, 1, 'without --prune nothing is deleted');
    const d = await berth(env, ['diff', '-f', dir, '--prune']);
    assert.equal(d.code, 1);
    assert.match(d.stdout, /- pod default\/web: delete/);
    const pruned = await berth(env, ['apply', '-f', dir, '--prune']);
    assert.equal(pruned.code, 0, pruned.stderr);
    assert.equal((await pids()).size, 0);
    assert.deepEqual(await mountsUnder(env.root), []);
    assert.deepEqual(await conmonProcesses(env.state), []);
  });

  test('regression: delete-broken-file — delete -f works on a file that no longer validates; delete pod NAME', async (t) => {
    if (!ok) return t.skip();
    const file = path.join(dir, 'web.yaml');
    await fsp.writeFile(file, text);
    const a = await berth(env, ['apply', '-f', file]);
    assert.equal(a.code, 0, a.stderr);
    await fsp.writeFile(file, text.replace('command:', 'commandx:'));
    const d = await berth(env, ['delete', '-f', file]);
    assert.equal(d.code, 0, d.stderr);
    assert.match(d.stdout, /- pod default\/web: delete/);
    assert.equal((await pids()).size, 0);

    await fsp.writeFile(file, text);
    assert.equal((await berth(env, ['apply', '-f', file])).code, 0);
    const byName = await berth(env, ['delete', 'pod', 'web']);
    assert.equal(byName.code, 0, byName.stderr);
    assert.equal((await pids()).size, 0);
    const missing = await berth(env, ['delete', 'pod', 'web']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /delete pod default\/web: not found/);
    const usage = await berth(env, ['delete']);
    assert.equal(usage.code, 2);
    await fsp.rm(file);
  });
});

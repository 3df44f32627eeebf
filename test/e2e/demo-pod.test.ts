import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { requireE2E } from '../helpers/prereq.js';
import { spawn } from 'node:child_process';
import { berth, berthUp, cgroupDirsOf, cgroupValue, CLI, cleanupEnv, conmonProcesses, httpGet, makeEnv, mountsUnder, waitFor, waitResyncs, type BerthEnv } from '../helpers/berth.js';
import { validateRuntimeConfig } from '../helpers/oci-schemas.js';

/**
 * The walking skeleton end to end, from the shipped demo manifest: real registry, real
 * pull, real overlay snapshot, real conmon + runc.
 */

interface PsRow {
  key: string;
  containers: { id: string; name: string; state: string; pid: number | null; imageDigest: string }[];
}

async function ps(env: BerthEnv): Promise<PsRow[]> {
  const r = await berth(env, ['ps', '-o', 'json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as PsRow[];
}

async function runningPid(env: BerthEnv, key = 'default/web', name = 'httpd'): Promise<number | undefined> {
  const rows = await ps(env);
  const c = rows.find((p) => p.key === key)?.containers.find((x) => x.name === name && x.state === 'running');
  return c?.pid ?? undefined;
}

async function runcIds(env: BerthEnv): Promise<string[]> {
  const dir = path.join(env.state, 'runc');
  const names = await fsp.readdir(dir).catch(() => [] as string[]);
  return names;
}

describe('e2e: demo pod (manifests/demo-web.yaml)', { timeout: 600_000 }, () => {
  let demo: DemoFixture | undefined;
  let env: BerthEnv;
  let port: number;
  let manifest: string;
  let original: string;
  let ok = true;

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv();
    // Keep the demo's 8080 when it is free; otherwise move the test copy to a free port.
    demo = await startDemoFixture({ preferPort: 8080 });
    port = demo.port;
    original = demo.original;
    await fsp.mkdir(path.join(env.dir, 'manifests'));
    manifest = path.join(env.dir, 'manifests', 'demo-web.yaml');
    await fsp.writeFile(manifest, demo.text);
  });

  const adapt = (text: string): string => demo?.adapt(text) ?? text;
  const registryHost = (): string => demo?.registry.host ?? '';

  after(async () => {
    if (env !== undefined) await cleanupEnv(env);
    await demo?.stop();
  });

  test('diff before apply: exit 1 and the planned steps', async (t) => {
    if (!ok) return t.skip();
    const r = await berth(env, ['diff', '-f', manifest]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stdout, /pull/);
    assert.match(r.stdout, /\+ pod default\/web/);
    assert.match(r.stdout, /\+ container default\/web\/httpd: start/);
  });

  let firstPid = 0;
  test('apply: the page is served, the config.json is valid, ps shows it', async (t) => {
    if (!ok) return t.skip();
    const r = await berth(env, ['apply', '-f', manifest]);
    assert.equal(r.code, 0, `stdout: ${r.stdout}\nstderr: ${r.stderr}`);
    const page = await waitFor('demo page', async () => {
      const res = await httpGet(`http://127.0.0.1:${port}/`).catch(() => undefined);
      return res?.status === 200 ? res.body : undefined;
    });
    assert.match(page, /berth demo/);
    const pid = await runningPid(env);
    assert.ok(pid !== undefined && pid > 0, 'running pid');
    firstPid = pid;
    // berth is not the container's parent: conmon is.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    const parentCmd = readFileSync(`/proc/${ppid}/cmdline`, 'utf8');
    assert.match(parentCmd, /conmon/);
    // Every generated config.json validates against the official runtime-spec schema.
    const rows = await ps(env);
    const id = rows[0]?.containers[0]?.id ?? '';
    const spec = JSON.parse(readFileSync(path.join(env.root, 'containers', id, 'bundle', 'config.json'), 'utf8')) as unknown;
    validateRuntimeConfig(spec);
    // conmon keeps the output in a CRI log: httpd -v logs each request.
    const logs = await waitFor('request in log', async () => {
      const r = await berth(env, ['logs', 'web']);
      return /response:200/.test(r.stdout) ? r.stdout : undefined;
    });
    assert.doesNotMatch(logs, /stderr F/, 'CRI framing is stripped');
    // regression: logs-tail-arguments — 0 prints nothing; a bad count or target is exit 2.
    const none = await berth(env, ['logs', 'web', '--tail', '0']);
    assert.equal(none.code, 0);
    assert.equal(none.stdout, '');
    for (const bad of [['--tail', 'abc'], ['--tail', '-3']]) assert.equal((await berth(env, ['logs', 'web', ...bad])).code, 2, bad.join(' '));
    // kubectl's --tail=-1: every line.
    const all = await berth(env, ['logs', 'web', '--tail=-1']);
    assert.equal(all.code, 0, all.stderr);
    assert.equal(all.stdout, (await berth(env, ['logs', 'web'])).stdout);
    assert.equal((await berth(env, ['logs', 'web/httpd/x'])).code, 2);
    const raw = await berth(env, ['logs', 'web/httpd', '--raw', '--tail', '1']);
    assert.match(raw.stdout, /^\S+ stderr F .*response:200\n$/);
    // The manifest's limits reach the container's cgroup (64Mi, 500m; default pids limit).
    assert.equal(await cgroupValue(pid, ['memory', 'memory.limit_in_bytes'], 'memory.max'), String(64 * 1024 * 1024));
    assert.equal(await cgroupValue(pid, ['pids', 'pids.max'], 'pids.max'), '4096');
    const quota = await cgroupValue(pid, ['cpu', 'cpu.cfs_quota_us'], 'cpu.max');
    assert.ok(quota === '50000' || quota.startsWith('50000 '), `cpu quota ${quota}`);
    const images = await berth(env, ['images', 'ls']);
    assert.match(images.stdout, new RegExp(`${registryHost()}/berth/demo:1\\.0\\s+sha256:[a-f0-9]{12}\\s+linux/\\w+\\s+[\\d.]+ (?:kB|MB)\\s+[\\d.]+ (?:kB|MB)\\s`));
    const pulled = await berth(env, ['images', 'pull', `${registryHost()}/berth/demo:1.0`]);
    assert.equal(pulled.code, 0, pulled.stderr);
    const check = await berth(env, ['check']);
    assert.equal(check.code, 0, check.stdout + check.stderr);
    assert.match(check.stdout, /ok\s+database\s+integrity ok/);
    assert.doesNotMatch(check.stdout, /^(warn|fail)\s+(container|mount|residue|snapshot)/m);
    const table = await berth(env, ['ps']);
    assert.match(table.stdout, /default\/web\s+httpd\s+running\s+\d+/);
  });

  test('diff after apply: exit 0', async (t) => {
    if (!ok) return t.skip();
    const r = await berth(env, ['diff', '-f', manifest]);
    assert.equal(r.code, 0, `stdout: ${r.stdout}\nstderr: ${r.stderr}`);
    assert.equal(r.stdout, '');
  });

  test('apply again: nothing changes, same pid', async (t) => {
    if (!ok) return t.skip();
    const r = await berth(env, ['apply', '-f', manifest]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /no changes/);
    assert.equal(await runningPid(env), firstPid);
  });

  let secondPid = 0;
  test('edit the command: the container is replaced and runs the new command', async (t) => {
    if (!ok) return t.skip();
    const edited = adapt(original).replace('"-h", "/var/www"]', '"-h", "/etc"]');
    assert.notEqual(edited, adapt(original));
    await fsp.writeFile(manifest, edited);
    const d = await berth(env, ['diff', '-f', manifest]);
    assert.equal(d.code, 1);
    assert.match(d.stdout, /replace .*spec changed: command/);
    const r = await berth(env, ['apply', '-f', manifest]);
    assert.equal(r.code, 0, r.stderr);
    const pid = await runningPid(env);
    assert.ok(pid !== undefined && pid !== firstPid, `new pid (old ${firstPid}, new ${String(pid)})`);
    secondPid = pid;
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    assert.ok(cmdline.includes('/etc'), `new command line: ${cmdline.join(' ')}`);
    const res = await waitFor('new page', async () => {
      const x = await httpGet(`http://127.0.0.1:${port}/passwd`).catch(() => undefined);
      return x?.status === 200 ? x : undefined;
    });
    assert.match(res.body, /root:x:0:0/);
    // Only one container of that name remains.
    const rows = await ps(env);
    assert.equal(rows[0]?.containers.length, 1);
    assert.equal((await runcIds(env)).length, 1);
  });

  test('a bad edit (image tag that does not exist) fails clearly and the running container keeps its pid', async (t) => {
    if (!ok) return t.skip();
    const good = await fsp.readFile(manifest, 'utf8');
    await fsp.writeFile(manifest, good.replace('/berth/demo:1.0', '/berth/demo:nope'));
    const r = await berth(env, ['apply', '-f', manifest]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /berth\/demo:nope/);
    assert.equal(await runningPid(env), secondPid);
    const res = await httpGet(`http://127.0.0.1:${port}/passwd`);
    assert.equal(res.status, 200);
    await fsp.writeFile(manifest, good);
    const back = await berth(env, ['diff', '-f', manifest]);
    assert.equal(back.code, 0, back.stdout);
  });

  test('kill -9 of berth up leaves the container serving; a new berth up adopts it', async (t) => {
    if (!ok) return t.skip();
    const dir = path.dirname(manifest);
    const up = berthUp(env, dir, ['--resync', '1']);
    await waitFor('berth up converged', async () => (/berth: converged/.test(up.output()) ? true : undefined), 60_000);
    // Through the daemon's socket now (ps goes to berth up while it runs): the same pid.
    assert.equal(await runningPid(env), secondPid);
    up.child.kill('SIGKILL');
    await new Promise((r) => up.child.once('exit', r));
    const res = await httpGet(`http://127.0.0.1:${port}/passwd`);
    assert.equal(res.status, 200);
    assert.equal(await runningPid(env), secondPid);
    const up2 = berthUp(env, dir, ['--resync', '1']);
    await waitFor('second berth up converged', async () => (/converged \(0 step/.test(up2.output()) ? true : undefined), 60_000);
    // Let a resync pass run too: still the same process.
    await waitResyncs(env, 1);
    assert.equal(await runningPid(env), secondPid, up2.output());
    up2.child.kill('SIGTERM');
    await new Promise((r) => up2.child.once('exit', r));
    assert.equal(await runningPid(env), secondPid);
  });

  test('delete: no mounts, no runc containers, no conmon left', async (t) => {
    if (!ok) return t.skip();
    const deletedId = (await ps(env))[0]?.containers[0]?.id ?? '';
    assert.notEqual(deletedId, '');
    assert.notDeepEqual(await cgroupDirsOf(deletedId), [], 'the running container has cgroups');
    // logs -f follows until the container stops.
    const follow = spawn(process.execPath, [CLI, '--root', env.root, '--state', env.state, 'logs', '-f', 'web'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const followed = new Promise<number | null>((resolve) => follow.once('exit', resolve));
    const r = await berth(env, ['delete', '-f', manifest]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /- pod default\/web: delete/);
    assert.equal(await followed, 0);
    assert.deepEqual(await mountsUnder(env.root), []);
    assert.deepEqual(await runcIds(env), []);
    assert.deepEqual(await conmonProcesses(env.state), []);
    assert.deepEqual(await cgroupDirsOf(deletedId), [], 'runc removed the container cgroups');
    await assert.rejects(httpGet(`http://127.0.0.1:${port}/`));
    assert.deepEqual(await ps(env), []);
    // Nothing of the container remains under the root's containers dir.
    assert.deepEqual(await fsp.readdir(path.join(env.root, 'containers')), []);
  });
});

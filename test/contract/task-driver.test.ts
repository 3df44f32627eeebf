import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, promises as fsp, symlinkSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TaskDriver } from '../../src/runtime/tasks/index.js';
import { generateSpec } from '../../src/runtime/tasks/spec.js';
import { createLogger } from '../../src/lib/log.js';
import { requireE2E } from '../helpers/prereq.js';
import { cleanupEnv, conmonProcesses, processesWith } from '../helpers/berth.js';
import { validateRuntimeConfig } from '../helpers/oci-schemas.js';

/** Contract of the task driver on real conmon + runc (critest-style idempotence). */
describe('contract: task driver (conmon + runc)', { timeout: 120_000 }, () => {
  let base: string;
  let tasks: TaskDriver;
  let ok = true;

  const bundle = (id: string, args: string[]): { dir: string; spec: Record<string, unknown> } => {
    const dir = path.join(base, 'bundles', id);
    const rootfs = path.join(dir, 'rootfs');
    mkdirSync(path.join(rootfs, 'bin'), { recursive: true });
    for (const d of ['proc', 'sys', 'dev', 'etc', 'tmp']) mkdirSync(path.join(rootfs, d));
    copyFileSync('/bin/busybox', path.join(rootfs, 'bin', 'busybox'));
    for (const a of ['sh', 'sleep', 'echo']) symlinkSync('busybox', path.join(rootfs, 'bin', a));
    const spec = generateSpec(
      { architecture: 'amd64', os: 'linux', config: { Env: ['PATH=/bin'] }, rootfs: { type: 'layers', diff_ids: [] } },
      { id, command: args, sandbox: { kind: 'host', files: [] }, rootfs },
    );
    return { dir, spec };
  };

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    base = mkdtempSync(path.join(os.tmpdir(), 'berth-tasks-'));
    tasks = new TaskDriver({ runcRoot: path.join(base, 'state', 'runc'), exitDir: path.join(base, 'state', 'exits'), stateDir: path.join(base, 'state') }, createLogger('silent'));
    await tasks.init();
  });
  after(async () => {
    if (base !== undefined) await cleanupEnv({ root: path.join(base, 'root'), state: path.join(base, 'state'), dir: base });
  });

  /** Each test starts its own container and removes it: no test depends on another's state or order. */
  const running = async (t: { after: (fn: () => Promise<void>) => void }, id: string, args: string[]): Promise<number> => {
    const { dir, spec } = bundle(id, args);
    validateRuntimeConfig(spec);
    t.after(() => tasks.delete(id));
    const pid = await tasks.create({ id, bundle: dir, spec, logPath: path.join(base, 'logs', `${id}.log`) });
    await tasks.start(id);
    return pid;
  };

  test('conmon-keeps-sync-pipe-open: create returns with the pid while the container runs', async (t) => {
    if (!ok) return t.skip();
    const { dir, spec } = bundle('c1', ['sh', '-c', 'echo hello; exec sleep 1000']);
    validateRuntimeConfig(spec);
    t.after(() => tasks.delete('c1'));
    const started = Date.now();
    const pid = await tasks.create({ id: 'c1', bundle: dir, spec, logPath: path.join(base, 'logs', 'c1.log') });
    assert.ok(Date.now() - started < 10_000, 'create must not wait for the sync pipe to close');
    assert.ok(pid > 0);
    assert.equal((await tasks.state('c1'))?.status, 'created');
    await tasks.start('c1');
    assert.equal((await tasks.state('c1'))?.status, 'running');
    assert.equal((await conmonProcesses(path.join(base, 'state', 'conmon', 'c1'))).length, 1);
  });

  test('regression exec-timeout-leaks-command: an exec past its deadline is ERR_TIMEOUT and its command is killed, not left in the container', async (t) => {
    if (!ok) return t.skip();
    const pid = await running(t, 'cx', ['sleep', '1000']);
    assert.ok(pid > 0);
    const ok0 = await tasks.exec('cx', ['echo', 'hi'], 10_000);
    assert.deepEqual(ok0, { code: 0, stdout: 'hi\n', stderr: '' });
    await assert.rejects(tasks.exec('cx', ['sh', '-c', 'sleep 4243 & exec sleep 4242'], 700), (e: Error & { code?: string }) => e.code === 'ERR_TIMEOUT');
    const left = async (): Promise<string> => [...(await processesWith('sleep\x004242\x00')), ...(await processesWith('sleep\x004243\x00'))].join(' ');
    for (let i = 0; i < 40 && (await left()) !== ''; i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(await left(), '', 'the timed-out command and what it started are gone');
  });

  test('create of an existing id fails with ERR_ALREADY_EXISTS and leaves it running', async (t) => {
    if (!ok) return t.skip();
    await running(t, 'dup', ['sleep', '1000']);
    const { dir, spec } = bundle('dup-again', ['true']);
    await assert.rejects(tasks.create({ id: 'dup', bundle: dir, spec, logPath: path.join(base, 'logs', 'x.log') }), (err: Error & { code?: string }) => err.code === 'ERR_ALREADY_EXISTS');
    assert.equal((await tasks.state('dup'))?.status, 'running');
  });

  test('stop: SIGTERM, then SIGKILL after the grace period; exit code recorded by conmon', async (t) => {
    if (!ok) return t.skip();
    await running(t, 'stubborn', ['sh', '-c', 'echo hello; exec sleep 1000']);
    // PID 1 ignores SIGTERM without a handler: the grace period must run out, then SIGKILL.
    const began = Date.now();
    const code = await tasks.stop('stubborn', 500);
    assert.ok(Date.now() - began >= 450, 'waited for the grace period');
    assert.equal(code, 137);
    const log = await fsp.readFile(path.join(base, 'logs', 'stubborn.log'), 'utf8');
    assert.match(log, /^\S+ stdout F hello$/m);
  });

  test('a container that exits on its own reports its exit code', async (t) => {
    if (!ok) return t.skip();
    await running(t, 'c2', ['sh', '-c', 'exit 3']);
    assert.equal(await tasks.waitExit('c2', 10_000), true);
    assert.equal(await tasks.exitCode('c2'), 3);
  });

  test('delete and kill of a gone container succeed; state of an unknown id is undefined', async (t) => {
    if (!ok) return t.skip();
    await running(t, 'gone', ['sleep', '1000']);
    await tasks.delete('gone');
    await tasks.delete('gone');
    await tasks.kill('gone', 'SIGKILL');
    assert.equal(await tasks.state('gone'), undefined);
    assert.equal(await tasks.state('never-created'), undefined);
    assert.ok(!(await tasks.list()).some((c) => c.id === 'gone'));
    assert.deepEqual(await conmonProcesses(path.join(base, 'state', 'conmon', 'gone')), []);
  });

  test('regression: conmon-hang-leak — a conmon that never reports is killed, and create fails in time', async (t) => {
    if (!ok) return t.skip();
    const fake = path.join(base, 'fake-conmon');
    // A unique sleep length marks the process so the test can look for it afterwards.
    writeFileSync(fake, '#!/bin/sh\nexec sleep 599.25\n', { mode: 0o755 });
    const hung = new TaskDriver(
      { runcRoot: path.join(base, 'state', 'runc'), exitDir: path.join(base, 'state', 'exits'), stateDir: path.join(base, 'state') },
      createLogger('silent'),
      { runc: 'runc', conmon: fake },
      { createTimeoutMs: 500 },
    );
    const { dir, spec } = bundle('c4', ['true']);
    const began = Date.now();
    await assert.rejects(hung.create({ id: 'c4', bundle: dir, spec, logPath: path.join(base, 'logs', 'c4.log') }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_TIMEOUT');
      assert.match(err.message, /^create task c4: conmon did not report within 0\.5s \(killed\)$/);
      return true;
    });
    assert.ok(Date.now() - began < 10_000);
    assert.deepEqual(await processesWith('599.25'), [], 'the hung conmon was killed');
  });

  test('runc-hang-deadline: a runc that never answers is killed at the deadline and fails with ERR_TIMEOUT', async (t) => {
    if (!ok) return t.skip();
    // Own directories, so the test does not depend on the order or outcome of the others.
    const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-runc-hang-'));
    try {
      const realRunc = execFileSync('sh', ['-c', 'command -v runc'], { encoding: 'utf8' }).trim();
      const wrapper = path.join(dir, 'runc');
      // The shell stays the parent of a sleep with a unique length: both must die, which only a
      // kill of the whole process group achieves.
      writeFileSync(
        wrapper,
        `#!/bin/sh
case " $* " in
  *" state hang-me "*) sleep 598.75; exit 0 ;;
esac
exec ${realRunc} "$@"
`,
        { mode: 0o755 },
      );
      const hanging = new TaskDriver(
        { runcRoot: path.join(dir, 'runc-root'), exitDir: path.join(dir, 'exits'), stateDir: dir },
        createLogger('silent'),
        { runc: wrapper, conmon: 'conmon' },
        { runcTimeoutMs: 1000 },
      );
      await hanging.init();
      const began = Date.now();
      await assert.rejects(hanging.state('hang-me'), (err: Error & { code?: string; details?: Record<string, unknown> }) => {
        assert.equal(err.code, 'ERR_TIMEOUT');
        assert.equal(err.message, 'state of task hang-me: runc did not answer within 1s (killed)');
        assert.equal(err.details?.['id'], 'hang-me');
        return true;
      });
      const took = Date.now() - began;
      assert.ok(took >= 900 && took < 2500, `rejected after ${took} ms, deadline 1000 ms`);
      assert.equal(await hanging.state('other'), undefined, 'runc still answers for other ids');
      assert.deepEqual(await processesWith('598.75'), [], 'the hung wrapper and its sleep were killed');
      assert.deepEqual(await processesWith(wrapper), [], 'the hung wrapper shell was killed');
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });

  test('a failing create reports runc\'s reason and leaves nothing behind', async (t) => {
    if (!ok) return t.skip();
    const { dir, spec } = bundle('c3', ['/no/such/binary']);
    await assert.rejects(
      tasks.create({ id: 'c3', bundle: dir, spec, logPath: path.join(base, 'logs', 'c3.log') }),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'ERR_RUNTIME');
        assert.match(err.message, /no such file|not found|executable/i);
        return true;
      },
    );
    assert.equal(await tasks.state('c3'), undefined);
  });
});


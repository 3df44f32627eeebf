import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { runProcess, spawnChild, spawnCounts, type ProcessExitError } from '../../src/lib/exec.js';
import { nativeSpawn } from '../../src/lib/spawn.js';
import { BerthError } from '../../src/lib/errors.js';
import { sleep } from '../../src/lib/time.js';

/** Live pids whose command line contains `marker`; each test uses its own sleep length as marker. */
async function pidsWith(marker: string): Promise<number[]> {
  const out: number[] = [];
  for (const name of await fsp.readdir('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    const cmd = await fsp.readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes(marker)) out.push(Number(name));
  }
  return out;
}

/** Polls until at least `n` processes carry the marker, so the test knows whom to look for later. */
async function waitForPids(marker: string, n: number): Promise<number[]> {
  for (let i = 0; i < 200; i++) {
    const pids = await pidsWith(marker);
    if (pids.length >= n) return pids;
    await sleep(10);
  }
  assert.fail(`fewer than ${n} processes with ${marker} appeared`);
}

/** A killed process may be a zombie until its new parent reaps it; that counts as gone. */
async function alive(pid: number): Promise<boolean> {
  const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (stat === undefined) return false;
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== 'Z' && state !== 'X';
}

/** SIGKILL is asynchronous: allow a moment for the kernel to finish the exit, then insist. */
async function assertAllGone(pids: readonly number[]): Promise<void> {
  for (let i = 0; i < 50; i++) {
    const left = [];
    for (const p of pids) if (await alive(p)) left.push(p);
    if (left.length === 0) return;
    await sleep(10);
  }
  const left = [];
  for (const p of pids) if (await alive(p)) left.push(p);
  assert.deepEqual(left, [], 'every process of the group was killed');
}

function isTimeout(what: string, timeoutMs: number) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof BerthError, String(err));
    assert.equal(err.code, 'ERR_TIMEOUT');
    assert.equal(err.retryable, true);
    assert.equal(err.message, `${what}: no answer within ${timeoutMs / 1000}s (killed)`);
    assert.equal(err.details['timeoutMs'], timeoutMs);
    return true;
  };
}

describe('lib/exec runProcess', () => {
  test('a child that outlives its deadline is killed and the call fails with ERR_TIMEOUT', async () => {
    const began = Date.now();
    const run = runProcess('sleep', ['30.101'], { timeoutMs: 500, what: 'nap' });
    // Handled now: under load it may reject before the assertion below attaches.
    void run.catch(() => undefined);
    const pids = await waitForPids('30.101', 1);
    await assert.rejects(run, isTimeout('nap', 500));
    const took = Date.now() - began;
    assert.ok(took >= 450 && took < 1500, `rejected after ${took} ms`);
    await assertAllGone(pids);
  });

  test('the whole process group dies, including a grandchild that holds the output pipes', async () => {
    const began = Date.now();
    // The trailing ':' keeps sh from exec'ing the last sleep: sh, its foreground sleep and the
    // background sleep (which keeps stdout open) are three processes of one group.
    const run = runProcess('sh', ['-c', 'sleep 30.102 & sleep 30.102; :'], { timeoutMs: 500, what: 'nap group' });
    // Handled now: under load it may reject before the assertion below attaches.
    void run.catch(() => undefined);
    const pids = await waitForPids('30.102', 3);
    await assert.rejects(run, isTimeout('nap group', 500));
    const took = Date.now() - began;
    assert.ok(took < 1500, `rejected after ${took} ms: the grandchild must not hold the call until the kill grace ends`);
    await assertAllGone(pids);
  });

  test('abort kills the group and rejects with the signal reason', async () => {
    const ac = new AbortController();
    const run = runProcess('sh', ['-c', 'sleep 30.103 & sleep 30.103; :'], { timeoutMs: 60_000, what: 'nap', signal: ac.signal });
    // Handled now: under load it may reject before the assertion below attaches.
    void run.catch(() => undefined);
    const pids = await waitForPids('30.103', 3);
    const reason = new Error('shutting down');
    ac.abort(reason);
    await assert.rejects(run, (err) => err === reason);
    await assertAllGone(pids);
    // Already aborted: nothing is started.
    await assert.rejects(runProcess('sleep', ['30.104'], { timeoutMs: 60_000, what: 'nap', signal: ac.signal }), (err) => err === reason);
    assert.deepEqual(await pidsWith('30.104'), []);
  });

  test('a non-zero exit rejects with stdout, stderr and the exit code, like execFile', async () => {
    await assert.rejects(runProcess('sh', ['-c', 'echo out; echo oops >&2; exit 3'], { timeoutMs: 5_000, what: 'fail' }), (err: unknown) => {
      assert.ok(err instanceof Error && !(err instanceof BerthError));
      const e = err as Error & { stdout: string; stderr: string; code: number | null };
      assert.equal(e.code, 3);
      assert.equal(e.stdout, 'out\n');
      assert.equal(e.stderr, 'oops\n');
      assert.match(e.message, /^fail: exit status 3: oops$/);
      return true;
    });
  });

  test('success returns the output; input goes to stdin; captured output is bounded', async () => {
    assert.deepEqual(await runProcess('cat', [], { timeoutMs: 5_000, what: 'cat', input: 'hello' }), { stdout: 'hello', stderr: '' });
    const { stdout } = await runProcess('head', ['-c', '100000', '/dev/zero'], { timeoutMs: 5_000, what: 'zeros', maxStdoutBytes: 1000 });
    assert.equal(stdout.length, 1000);
    assert.equal((await runProcess('pwd', [], { timeoutMs: 5_000, what: 'pwd', cwd: '/proc' })).stdout, '/proc\n');
  });

  test('a file that cannot be started is ERR_PRECONDITION', async () => {
    await assert.rejects(runProcess('/no/such/binary', [], { timeoutMs: 5_000, what: 'ghost' }), (err: unknown) => {
      assert.ok(err instanceof BerthError);
      assert.equal(err.code, 'ERR_PRECONDITION');
      assert.match(err.message, /^ghost: cannot run \/no\/such\/binary: .*ENOENT/);
      return true;
    });
  });
});

describe('lib/exec through posix_spawn (the berth_spawn addon)', () => {
  test('the addon is built and used: runProcess does not fork this process', async () => {
    // CI builds the addon (npm ci); a missing build would silently fall back to child_process.
    assert.ok(nativeSpawn() !== undefined, 'build/Release/berth_spawn.node is not built or lacks spawn/waitExit/pipe');
    const before = spawnCounts.native;
    await runProcess('true', [], { timeoutMs: 5_000, what: 'true' });
    assert.equal(spawnCounts.native, before + 1);
  });

  test('the child gets only the descriptors it is given, an empty signal mask, default handlers and its own process group', async () => {
    // Programs run directly (no shell in between, whose own signal handling would show instead).
    const status = (await runProcess('grep', ['-E', '^Sig(Blk|Ign)', '/proc/self/status'], { timeoutMs: 5_000, what: 'status' })).stdout;
    assert.match(status, /^SigBlk:\s+0+$/m, status);
    // Nothing ignored, glibc's internal 32 and 33 included (node ignores SIGPIPE itself; glibc's posix_spawn
    // would leave 32 and 33 ignored, and conmon would hand that on to the container).
    assert.match(status, /^SigIgn:\s+0+$/m, status);
    const fds = (await runProcess('ls', ['/proc/self/fd'], { timeoutMs: 5_000, what: 'fds' })).stdout.trim().split('\n').map(Number);
    // What a child_process child gets (descriptors this process inherited without close-on-exec) is the bound.
    const forked = new Set(execFileSync('ls', ['/proc/self/fd'], { encoding: 'utf8' }).trim().split('\n').map(Number));
    const leaked = fds.filter((fd) => fd > 3 && !forked.has(fd));
    assert.deepEqual(leaked, [], `node's descriptors in the child: ${leaked.join(' ')}`);
    assert.ok([0, 1, 2].every((fd) => fds.includes(fd)));
    const pg = (await runProcess('ps', ['-o', 'pid=,pgid=', '-p', String(process.pid)], { timeoutMs: 5_000, what: 'ps' })).stdout.trim().split(/\s+/);
    assert.equal(pg.length, 2);
    const self = (await runProcess('sh', ['-c', 'ps -o pgid= -p $$; echo $$'], { timeoutMs: 5_000, what: 'pgid' })).stdout.trim().split(/\s+/);
    assert.equal(self[0], self[1], 'the child leads its own process group');
  });

  test('spawnChild passes a pipe on descriptor 3 and reports the exit; a missing file is an error event', async () => {
    const child = spawnChild('sh', ['-c', 'echo sync >&3; echo oops >&2; exit 4'], { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
    let sync = '';
    let err = '';
    child.stdio[3]?.on('data', (b: Buffer) => (sync += b.toString()));
    child.stdio[2]?.on('data', (b: Buffer) => (err += b.toString()));
    const [code] = (await once(child, 'exit')) as [number | null];
    await sleep(50);
    assert.equal(code, 4);
    assert.equal(sync, 'sync\n');
    assert.equal(err, 'oops\n');
    const ghost = spawnChild('/no/such/binary', [], { stdio: ['ignore', 'ignore', 'pipe'] });
    const [e] = (await once(ghost, 'error')) as [Error & { code?: string }];
    assert.equal(e.code, 'ENOENT');
  });

  test('a signal death is reported by name, PATH is the child\'s, and BERTH_NODE_SPAWN=1 is the same contract through child_process', async () => {
    await assert.rejects(runProcess('sh', ['-c', 'kill -TERM $$'], { timeoutMs: 5_000, what: 'term' }), (err: unknown) => {
      const e = err as ProcessExitError;
      assert.equal(e.code, null);
      assert.equal(e.signal, 'SIGTERM');
      return true;
    });
    // A PATH without sh's directory: not found, as execvp in the child would say.
    await assert.rejects(runProcess('sh', ['-c', 'true'], { timeoutMs: 5_000, what: 'nopath', env: { PATH: '/nonexistent' } }), (err: unknown) => err instanceof BerthError && err.code === 'ERR_PRECONDITION');
    const r = await runTest(['--test-name-pattern', 'lib/exec runProcess', process.argv[1] ?? ''], { BERTH_NODE_SPAWN: '1' });
    assert.equal(r.code, 0, r.out);
  });
});

function runTest(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, ['--test', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    c.stdout.on('data', (b: Buffer) => (out += b.toString()));
    c.stderr.on('data', (b: Buffer) => (out += b.toString()));
    c.on('exit', (code) => resolve({ code, out }));
  });
}

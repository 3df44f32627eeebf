import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import * as os from 'node:os';
import * as path from 'node:path';
import { isFrozen, isSameProcess, processStartedAt, readProcFile, startTime } from '../../src/lib/proc.js';

test('proc: a live process matches its recorded start time; another start time, no pid or a gone process does not', async () => {
  const mine = startTime(process.pid);
  assert.match(mine, /^\d+$/);
  assert.equal(isSameProcess(process.pid, mine), true);
  assert.equal(isSameProcess(process.pid, String(Number(mine) + 1)), false, 'a pid reused by a later process');
  assert.equal(isSameProcess(null, mine), false);
  assert.equal(isSameProcess(process.pid, null), false);
  const child = spawn('true');
  const pid = child.pid ?? 0;
  await new Promise((r) => child.once('exit', r));
  assert.equal(startTime(pid), '', 'gone (reaped) reads as empty');
});

test('regression: empty-start-time-alive — a start time recorded as empty (gone when read) never counts as the same process', () => {
  // The pid of a process that is gone reads '' too: '' === '' used to make a dead container look alive.
  assert.equal(isSameProcess(2 ** 22 + 12345, ''), false);
  assert.equal(isSameProcess(process.pid, ''), false);
});

test('proc: isFrozen reads the freezer of the cgroup /proc/PID/cgroup names (v1 freezer.state, else v2 cgroup.freeze)', () => {
  // This process's own cgroup lines, answered from a cgroup tree the test lays out.
  const lines = readFileSync(`/proc/${process.pid}/cgroup`, 'utf8').split('\n').filter((l) => l !== '');
  const freezer = lines.find((l) => l.split(':')[1]?.split(',').includes('freezer'));
  const unified = lines.find((l) => l.startsWith('0::'));
  const root = mkdtempSync(path.join(os.tmpdir(), 'berth-freezer-'));
  try {
    let file: string;
    let frozen: string;
    let thawed: string;
    if (freezer !== undefined) {
      file = path.join(root, 'freezer', freezer.split(':').slice(2).join(':'), 'freezer.state');
      [frozen, thawed] = ['FROZEN\n', 'THAWED\n'];
    } else {
      assert.ok(unified !== undefined, 'a cgroup line to test with');
      file = path.join(root, unified.slice(3), 'cgroup.freeze');
      [frozen, thawed] = ['1\n', '0\n'];
    }
    assert.equal(isFrozen(process.pid, root), false, 'no freezer file: not frozen');
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, frozen);
    assert.equal(isFrozen(process.pid, root), true);
    writeFileSync(file, thawed);
    assert.equal(isFrozen(process.pid, root), false);
    if (freezer !== undefined) {
      writeFileSync(file, 'FREEZING\n');
      assert.equal(isFrozen(process.pid, root), true, 'FREEZING counts as paused, as runc says');
    }
    assert.equal(isFrozen(2 ** 22 + 12345, root), false, 'a gone process');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('regression: conmon-exit-esrch — a /proc file whose process ends between open and read reads as gone, not as an error', async () => {
  // The exit watch asks whether conmon is alive while conmon is exiting: its cmdline was opened,
  // conmon was reaped, and the read failed with ESRCH, which ended a pod's run as ERR_INTERNAL.
  const child = spawn('sleep', ['60'], { stdio: 'ignore' });
  await once(child, 'spawn');
  const pid = child.pid ?? 0;
  assert.match(readProcFile(`/proc/${pid}/cmdline`) ?? '', /^sleep\0/);
  const fd = openSync(`/proc/${pid}/cmdline`, 'r');
  try {
    child.kill('SIGKILL');
    await once(child, 'exit'); // reaped by node: the task is released
    // What the kernel does to a read now (the case readProcFile answers undefined for):
    assert.throws(() => readSync(fd, Buffer.alloc(16), 0, 16, 0), (err: NodeJS.ErrnoException) => err.code === 'ESRCH');
    assert.equal(readProcFile(fd), undefined);
  } finally {
    closeSync(fd);
  }
  assert.equal(readProcFile(`/proc/${pid}/cmdline`), undefined, 'gone at the open');
});

test('regression adopted-without-started-at: a process start time from /proc is when it started, in ms since the epoch', () => {
  const at = processStartedAt(startTime(process.pid));
  assert.ok(at !== undefined);
  const expected = Date.now() - process.uptime() * 1000;
  assert.ok(Math.abs(at - expected) < 1500, `${at} vs ${expected}`);
  assert.equal(processStartedAt(''), undefined);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { isSameProcess, startTime } from '../../src/lib/proc.js';

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

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLogger } from '../../src/lib/log.js';
import { TaskDriver } from '../../src/runtime/tasks/index.js';

/**
 * Regression observe-between-init-exit-and-exit-file: an observation that found a container
 * recorded running, its init gone and conmon's exit file not yet written (conmon writes it only
 * after reaping the init; a `berth run --rm IMG -- /bin/true` ends that close to its start, just as
 * the start step re-reads the pod) asked `runc state`, got "stopped", then read no exit code and
 * could record the exit as 137, vanished. Now it waits for conmon while conmon lives
 * (TaskDriver.exitRecorded), and only a conmon that is gone too means nobody will write it.
 */

const ID = 'default.regr.app.0a1b2c';

function setup(): { base: string; tasks: TaskDriver; exitFile: string } {
  const base = mkdtempSync(path.join(os.tmpdir(), 'berth-exit-record-'));
  const tasks = new TaskDriver({ runcRoot: path.join(base, 'runc'), exitDir: path.join(base, 'exits'), stateDir: base }, createLogger('silent'));
  mkdirSync(path.join(base, 'exits'));
  mkdirSync(tasks.persistDir(ID), { recursive: true });
  return { base, tasks, exitFile: tasks.exitFile(ID) };
}

/** A stand-in conmon: a live process whose command line names the container, as conmon's does. */
function fakeConmon(tasks: TaskDriver): { kill: () => Promise<void> } {
  const p = spawn('sh', ['-c', 'sleep 30', ID], { stdio: 'ignore' });
  writeFileSync(path.join(tasks.persistDir(ID), 'conmon.pid'), `${p.pid ?? 0}\n`);
  return {
    kill: async () => {
      if (p.exitCode !== null || p.signalCode !== null) return;
      const gone = new Promise((resolve) => p.once('exit', resolve));
      p.kill('SIGKILL');
      await gone;
    },
  };
}

test('regression observe-between-init-exit-and-exit-file: waits while conmon lives and returns once it writes the code', async () => {
  const { base, tasks, exitFile } = setup();
  const conmon = fakeConmon(tasks);
  try {
    writeFileSync(exitFile, ''); // created, not yet written
    const t0 = Date.now();
    const waiting = tasks.exitRecorded(ID, 5_000);
    await sleep(120);
    writeFileSync(exitFile, '0');
    assert.equal(await waiting, true);
    assert.ok(Date.now() - t0 >= 110, 'returned before the code was written');
    assert.equal(await tasks.exitCode(ID), 0);
  } finally {
    await conmon.kill();
    rmSync(base, { recursive: true, force: true });
  }
});

test('regression observe-between-init-exit-and-exit-file: no wait when conmon is gone too, a bounded one when it never writes', async () => {
  const { base, tasks } = setup();
  const conmon = fakeConmon(tasks);
  try {
    let t0 = Date.now();
    assert.equal(await tasks.exitRecorded(ID, 300), false);
    const waited = Date.now() - t0;
    assert.ok(waited >= 290 && waited < 2_000, `waited ${waited} ms for a live conmon that never writes`);
    await conmon.kill();
    t0 = Date.now();
    assert.equal(await tasks.exitRecorded(ID, 5_000), false);
    assert.ok(Date.now() - t0 < 1_000, 'waited for a conmon that is gone');
  } finally {
    await conmon.kill();
    rmSync(base, { recursive: true, force: true });
  }
});

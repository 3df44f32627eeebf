import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, promises as fsp, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LockFile } from '../../src/lib/lock.js';
import { REPO } from '../helpers/berth.js';

/**
 * The state lock keeps berth processes out of each other's critical sections.
 * regression: state-lock-race — the O_EXCL pid-file lock let a second process treat a
 * just-created (still empty) lock file as stale and take it too.
 */
const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-lock-'));
after(() => fsp.rm(dir, { recursive: true, force: true }));

const LOCK_JS = path.join(REPO, 'dist/src/lib/lock.js');

function worker(lock: string, marker: string, iterations: number): Promise<string> {
  const script = `
    import { LockFile } from ${JSON.stringify(LOCK_JS)};
    import { promises as fsp, constants as fsc } from 'node:fs';
    const l = new LockFile(${JSON.stringify(lock)});
    let violations = 0;
    for (let i = 0; i < ${iterations}; i++) {
      await l.acquire({ waitMs: 60000, what: 'test' });
      try {
        const fh = await fsp.open(${JSON.stringify(marker)}, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL);
        await fh.close();
        await new Promise((r) => setTimeout(r, 1));
        await fsp.rm(${JSON.stringify(marker)});
      } catch { violations++; }
      await l.release();
    }
    process.stdout.write(String(violations));
  `;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`worker exited ${String(code)}`))));
  });
}

test('state lock: four processes hammering the lock never overlap', { timeout: 120_000 }, async () => {
  const lock = path.join(dir, 'a.lock');
  const marker = path.join(dir, 'a.inside');
  const results = await Promise.all([0, 1, 2, 3].map(() => worker(lock, marker, 150)));
  assert.deepEqual(results, ['0', '0', '0', '0']);
});

test('state lock: a holder killed with SIGKILL releases it at once; the message names the holder', async () => {
  const lock = path.join(dir, 'b.lock');
  const holder = spawn(
    process.execPath,
    ['--input-type=module', '-e', `import { LockFile } from ${JSON.stringify(LOCK_JS)}; const l = new LockFile(${JSON.stringify(lock)}); await l.acquire({ waitMs: 5000, what: 't' }); process.stdout.write('held'); setInterval(() => {}, 1000);`],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  await new Promise<void>((resolve) => holder.stdout.once('data', () => resolve()));
  const l = new LockFile(lock);
  let told: number | undefined;
  await assert.rejects(l.acquire({ waitMs: 200, what: 'apply', onWait: (pid) => (told = pid) }), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'ERR_LOCKED');
    assert.match(err.message, new RegExp(`apply: state is locked by pid ${holder.pid}`));
    return true;
  });
  assert.equal(told, holder.pid, 'a waiter is told who holds the lock');
  holder.kill('SIGKILL');
  await new Promise((r) => holder.once('exit', r));
  await l.acquire({ waitMs: 2000, what: 'apply' });
  await l.release();
});

test('state lock: a detached child spawned while holding the lock does not inherit it', async () => {
  const lock = path.join(dir, 'c.lock');
  writeFileSync(lock, '');
  const l = new LockFile(lock);
  await l.acquire({ waitMs: 1000, what: 't' });
  const child = spawn('sleep', ['30'], { detached: true, stdio: 'ignore' });
  child.unref();
  try {
    await l.release();
    const again = new LockFile(lock);
    await again.acquire({ waitMs: 500, what: 't' });
    await again.release();
  } finally {
    child.kill('SIGKILL');
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { REPO } from '../helpers/berth.js';

/** The crash-point switch (src/lib/crashpoint.ts) in a child process: it dies only where told. */
const MODULE = path.join(REPO, 'dist/src/lib/crashpoint.js');

function run(crashAt: string | undefined): { status: number | null; signal: NodeJS.Signals | null; out: string } {
  const env: NodeJS.ProcessEnv = { PATH: process.env['PATH'] ?? '' };
  if (crashAt !== undefined) env['BERTH_CRASH_AT'] = crashAt;
  const script = `const { crashPoint } = await import(${JSON.stringify(MODULE)});
for (let i = 1; i <= 3; i++) { crashPoint('other'); crashPoint('p.q'); process.stdout.write('hit' + i + '\\n'); }`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env, encoding: 'utf8' });
  return { status: r.status, signal: r.signal, out: r.stdout };
}

test('crashPoint: inert without BERTH_CRASH_AT', () => {
  assert.deepEqual(run(undefined), { status: 0, signal: null, out: 'hit1\nhit2\nhit3\n' });
});

test('crashPoint: NAME kills at the first hit with SIGKILL, before anything after it runs', () => {
  assert.deepEqual(run('p.q'), { status: null, signal: 'SIGKILL', out: '' });
});

test('crashPoint: NAME:N kills at the N-th hit', () => {
  assert.deepEqual(run('p.q:3'), { status: null, signal: 'SIGKILL', out: 'hit1\nhit2\n' });
});

test('crashPoint: another name, or a prefix of one, never fires', () => {
  assert.deepEqual(run('p'), { status: 0, signal: null, out: 'hit1\nhit2\nhit3\n' });
  assert.deepEqual(run('p.q.r'), { status: 0, signal: null, out: 'hit1\nhit2\nhit3\n' });
});

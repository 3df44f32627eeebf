import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { REPO } from '../helpers/berth.js';

/** In CI an e2e prerequisite that is missing fails the run; it never skips silently. */
const E2E = path.join(REPO, 'dist/test/e2e/exit-codes.test.js');

function runWithoutTools(ci: boolean): { status: number | null; out: string } {
  const env: NodeJS.ProcessEnv = { PATH: '/nonexistent-berth-test', HOME: process.env['HOME'] ?? '/root' };
  if (ci) env['CI'] = 'true';
  const r = spawnSync(process.execPath, ['--test', '--test-reporter=spec', E2E], { env, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

test('e2e prerequisites: missing runc/conmon/registry fail the run when CI=true', () => {
  const r = runWithoutTools(true);
  assert.notEqual(r.status, 0, r.out);
  assert.match(r.out, /e2e prerequisites missing: .*runc/);
});

test('e2e prerequisites: outside CI the same run skips with the reason printed', () => {
  const r = runWithoutTools(false);
  assert.equal(r.status, 0, r.out);
  assert.match(r.out, /SKIP e2e prerequisites missing/);
});

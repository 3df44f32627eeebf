import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { buildProgram } from '../../src/cli.js';
import { CLI_DOC_COMMAND, CLI_DOC_PATH, renderCliDoc } from '../../src/lib/cli-doc.js';
import { describeCommand, walkCommands } from '../../src/lib/cli-model.js';
import { REPO } from '../helpers/berth.js';

/** Issue 12: docs/cli.md is generated from the commander definitions and kept current. */

test(`cli doc: ${CLI_DOC_PATH} is what ${CLI_DOC_COMMAND} generates now`, () => {
  const want = renderCliDoc(describeCommand(buildProgram()));
  let have = '';
  try {
    have = readFileSync(path.join(REPO, CLI_DOC_PATH), 'utf8');
  } catch {
    // missing: reported as stale below
  }
  // Not deepEqual on the whole text: a wall of diff hides the one-line fix.
  assert.ok(have === want, `${CLI_DOC_PATH} is stale (a command, option, default or description changed): run ${CLI_DOC_COMMAND}`);
});

test('cli doc: deterministic, and documents every command with its options and defaults', () => {
  const spec = describeCommand(buildProgram());
  const text = renderCliDoc(spec);
  assert.equal(renderCliDoc(describeCommand(buildProgram())), text);
  for (const { path: p, cmd } of walkCommands(spec)) {
    assert.match(text, new RegExp(`^### berth ${p.join(' ')}$`, 'm'));
    for (const o of cmd.options) assert.ok(text.includes(`\`${o.flags}\``), `berth ${p.join(' ')} ${o.flags}`);
  }
  assert.match(text, /^\| `--root <dir>` \| .* \| `"\/var\/lib\/berth"` \|$/m);
  assert.match(text, /^\*\*Usage:\*\* `berth up \[options\] <dir\.\.\.>`$/m);
  assert.match(text, /^### berth images pull$/m);
});

test('README: the error code table has every ErrorCode, "retried" exactly for the retryable ones, exit 2 exactly for invalid input', async () => {
  const { RETRYABLE } = await import('../../src/lib/errors.js');
  const readme = readFileSync(path.join(REPO, 'README.md'), 'utf8');
  const rows = new Map([...readme.matchAll(/^\| `(ERR_[A-Z_]+)` \| (.*) \| (\d) \|$/gm)].map((m) => [m[1] ?? '', { text: m[2] ?? '', exit: Number(m[3]) }]));
  assert.deepEqual([...rows.keys()].sort(), Object.keys(RETRYABLE).sort(), 'one README row per ErrorCode (src/lib/errors.ts)');
  for (const [code, retryable] of Object.entries(RETRYABLE)) {
    const row = rows.get(code);
    assert.equal(row?.text.includes('*retried*'), retryable, `${code}: marked *retried* iff RETRYABLE`);
    assert.equal(row?.exit, code === 'ERR_INVALID_ARGUMENT' || code === 'ERR_INVALID_MANIFEST' ? 2 : 1, `${code}: exit code`);
  }
});

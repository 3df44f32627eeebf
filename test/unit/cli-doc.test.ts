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


/**
 * Writes docs/cli.md from the commander definitions (`node dist/scripts/gen-cli-doc.js`);
 * `--check` exits 1 when the file differs instead of writing it. The unit test cli-doc
 * makes the same comparison.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildProgram } from '../src/cli.js';
import { describeCommand } from '../src/lib/cli-model.js';
import { CLI_DOC_COMMAND, CLI_DOC_PATH, renderCliDoc } from '../src/lib/cli-doc.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const file = path.join(repo, CLI_DOC_PATH);
const text = renderCliDoc(describeCommand(buildProgram()));
if (process.argv.includes('--check')) {
  let current = '';
  try {
    current = readFileSync(file, 'utf8');
  } catch {
    // missing: stale
  }
  if (current !== text) {
    process.stderr.write(`${CLI_DOC_PATH} is stale: run ${CLI_DOC_COMMAND}\n`);
    process.exitCode = 1;
  }
} else {
  writeFileSync(file, text);
  process.stdout.write(`wrote ${CLI_DOC_PATH}\n`);
}

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildProgram } from '../../src/cli.js';
import { describeCommand, walkCommands } from '../../src/lib/cli-model.js';
import { CLI } from '../helpers/berth.js';

/** Issue 12: `berth completion bash|zsh|fish` is generated from the commander definitions. */

const spec = describeCommand(buildProgram());
/** Every command and alias, nested ones (images ls/pull) included. */
const names = walkCommands(spec).flatMap((w) => [w.cmd.name, ...w.cmd.aliases]);

function script(shell: string): string {
  const r = spawnSync(process.execPath, [CLI, 'completion', shell], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

test('completion: the model has every command, the images subcommands and the ps alias', () => {
  for (const n of ['apply', 'diff', 'validate', 'delete', 'up', 'ps', 'pods', 'status', 'events', 'logs', 'images', 'ls', 'pull', 'check', 'version', 'install-service', 'completion']) {
    assert.ok(names.includes(n), n);
  }
});

test('completion bash: passes bash -n, mentions every command, and completes commands, nested commands, option values and files', () => {
  const text = script('bash');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-completion-'));
  try {
    const file = path.join(dir, 'berth.bash');
    writeFileSync(file, text);
    const syntax = spawnSync('bash', ['-n', file], { encoding: 'utf8' });
    assert.equal(syntax.status, 0, syntax.stderr);
    for (const n of names) assert.match(text, new RegExp(`"[^"\\n]*\\b${n}\\b[^"\\n]*"`), `bash script mentions ${n}`);

    writeFileSync(path.join(dir, 'manifest.yaml'), '');
    // What bash would offer after each command line (the last word is the one being completed).
    const complete = (words: string[]): string[] => {
      const r = spawnSync('bash', ['-c', `source ${JSON.stringify(file)}; cd ${JSON.stringify(dir)}; COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); _berth; printf '%s\\n' "\${COMPREPLY[@]}"`, 'bash', ...words], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      return r.stdout.split('\n').filter((l) => l !== '').sort();
    };
    assert.deepEqual(complete(['berth', 'ap']), ['apply']);
    assert.deepEqual(complete(['berth', 'images', 'p']), ['prune', 'pull']);
    assert.deepEqual(complete(['berth', '--root', '/x', '--log-level', 'info', 'st']), ['stats', 'status'], 'global option values are skipped');
    assert.deepEqual(complete(['berth', '--log-level', 'd']), ['debug']);
    assert.deepEqual(complete(['berth', 'diff', '-o', '']), ['json', 'text']);
    assert.deepEqual(complete(['berth', 'completion', '']), ['bash', 'fish', 'zsh']);
    assert.deepEqual(complete(['berth', 'apply', '--dr']), ['--dry-run']);
    assert.ok(complete(['berth', 'apply', '-']).includes('--root'), 'global options are offered below commands');
    assert.deepEqual(complete(['berth', 'apply', '-f', 'man']), ['manifest.yaml']);
    assert.deepEqual(complete(['berth', 'apply', '--timeout', '']), [], 'a duration has nothing to complete');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('completion zsh and fish: every command is offered', () => {
  const zsh = script('zsh');
  assert.match(zsh, /^#compdef berth$/m);
  for (const n of names) assert.match(zsh, new RegExp(`'${n}:`), `zsh script offers ${n}`);
  const fish = script('fish');
  for (const n of names) assert.match(fish, new RegExp(`^complete -c berth -n '__berth_at [^\\n]*' -a ${n} -d `, 'm'), `fish script offers ${n}`);
});

test('completion: an unknown shell is a usage error (exit 2)', () => {
  const r = spawnSync(process.execPath, [CLI, 'completion', 'tcsh'], { encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /bash, zsh, fish/);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CLI } from '../helpers/berth.js';

/** `-f` as kubectl users write it: each form either does what it says or is refused with exit 2, never half done. */
const run = (args: string[], input?: string): { code: number | null; out: string; err: string } => {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 30_000, ...(input !== undefined ? { input } : {}) });
  return { code: r.status, out: r.stdout, err: r.stderr };
};

test('regression repeated-f-keeps-last: a second -f is refused, not a silent replacement of the first; a URL is refused clearly', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-f-'));
  try {
    writeFileSync(path.join(dir, 'bad.yaml'), 'apiVersion: v1\nkind: Pod\nmetadata: {name: b\n');
    writeFileSync(path.join(dir, 'good.yaml'), 'apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {hostNetwork: true, containers: [{name: a, image: busybox}]}\n');
    const two = run(['validate', '-f', path.join(dir, 'bad.yaml'), '-f', path.join(dir, 'good.yaml')]);
    assert.equal(two.code, 2, two.out);
    assert.match(two.err, /give one -f/);
    const url = run(['validate', '-f', 'https://example.com/x.yaml']);
    assert.equal(url.code, 2);
    assert.match(url.err, /reads local files and directories only/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('regression prune-stdin-deletes-others: apply/diff --prune -f - are refused (stdin and berth run share one source)', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-f-'));
  try {
    for (const cmd of ['apply', 'diff']) {
      const r = run(['--root', path.join(dir, 'root'), '--state', path.join(dir, 'state'), cmd, '--prune', '-f', '-'], 'apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {hostNetwork: true, containers: [{name: a, image: busybox}]}\n');
      assert.equal(r.code, 2, `${cmd}: ${r.out}${r.err}`);
      assert.match(r.err, /stdin names no set of pods to prune against/);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

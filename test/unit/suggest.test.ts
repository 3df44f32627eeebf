import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closest, editDistance } from '../../src/lib/suggest.js';

test('suggest: edit distance counts an adjacent transposition as one edit', () => {
  assert.equal(editDistance('', ''), 0);
  assert.equal(editDistance('', 'abc'), 3);
  assert.equal(editDistance('abc', ''), 3);
  assert.equal(editDistance('kitten', 'sitting'), 3);
  assert.equal(editDistance('contianers', 'containers'), 1);
  assert.equal(editDistance('Pdo', 'Pod'), 1);
  assert.equal(editDistance('comand', 'command'), 1);
  assert.equal(editDistance('restartPolcy', 'restartPolicy'), 1);
  assert.equal(editDistance('imgae', 'image'), 1);
  assert.equal(editDistance('hostnetwork', 'hostNetwork'), 1);
  assert.equal(editDistance('abc', 'abc'), 0);
});

test('suggest: closest prefers a case-insensitive match, then the nearest within two edits', () => {
  const spec = ['containers', 'restartPolicy', 'hostNetwork', 'terminationGracePeriodSeconds'];
  assert.equal(closest('contianers', spec), 'containers');
  assert.equal(closest('hostnetwork', spec), 'hostNetwork');
  assert.equal(closest('HOSTNETWORK', spec), 'hostNetwork');
  assert.equal(closest('restartpolicy', spec), 'restartPolicy');
  assert.equal(closest('containrs', spec), 'containers');
  assert.equal(closest('volumes', spec), undefined);
  assert.equal(closest('containers', spec), undefined, 'a name that is allowed is not misspelt');
  // Two edits only for names longer than four characters: `nm` is not a misspelt `name`.
  assert.equal(closest('imge', ['image']), 'image');
  assert.equal(closest('imae', ['image']), 'image');
  assert.equal(closest('img', ['image']), 'image');
  assert.equal(closest('nm', ['name']), undefined);
  assert.equal(closest('nam', ['name']), 'name');
  assert.equal(closest('vl', ['v1', 'berth.dev/v1']), 'v1');
  assert.equal(closest('berth.dev/v2', ['v1', 'berth.dev/v1']), 'berth.dev/v1');
  // Ties go to the first candidate.
  assert.equal(closest('cat', ['bat', 'hat']), 'bat');
  assert.equal(closest('x'.repeat(10_000), ['x']), undefined, 'long input is not compared');
});

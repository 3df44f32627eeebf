import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseManifestText, validatorSource, validatorsArePrecompiled } from '../../src/reconciler/manifest.js';

/** scripts/compile-schemas writes dist/schemas/validators.cjs at build time (setup.sh). */
test('schemas: the manifest loader uses the precompiled validators, built from the current schemas', () => {
  const built = readFileSync(fileURLToPath(new URL('../../schemas/validators.cjs', import.meta.url)), 'utf8');
  const digest = /module\.exports\.schemaDigest = "([0-9a-f]{64})"/.exec(built)?.[1];
  assert.ok(digest !== undefined, 'the built module carries its schema digest');
  assert.match(validatorSource(), new RegExp(`schemaDigest = "${digest}"`), 'built from the schemas as they are now (run scripts/setup.sh)');
  // Messages need verbose errors (parentSchema lists the allowed fields): the standalone code keeps them.
  const r = parseManifestText('apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  hostNetwork: true\n  containers: [{name: a, image: busybox, comand: [sh]}]\n', '/m/x.yaml');
  assert.equal(r.problems.length, 1);
  assert.match(r.problems[0]?.message ?? '', /unknown field "comand"; did you mean "command"\? \(allowed: .*command/);
  assert.equal(validatorsArePrecompiled(), true);
});

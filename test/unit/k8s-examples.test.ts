import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { Pod } from 'kubernetes-models/v1';
import { REPO } from '../helpers/berth.js';

/**
 * The shipped examples are Kubernetes v1 objects, so a user who outgrows one device
 * applies the same files to Kubernetes or k3s unchanged (validated with kubernetes-models).
 */

function validateK8s(doc: Record<string, unknown>): void {
  if (doc['apiVersion'] === 'v1' && doc['kind'] === 'Pod') {
    new Pod(doc as ConstructorParameters<typeof Pod>[0]).validate();
    return;
  }
  throw new Error(`no Kubernetes model for ${String(doc['apiVersion'])}/${String(doc['kind'])}`);
}

test('examples: every manifests/ document is a valid Kubernetes v1 object', () => {
  const dir = path.join(REPO, 'manifests');
  const files = readdirSync(dir).filter((f) => /\.ya?ml$/.test(f));
  assert.ok(files.length > 0);
  let docs = 0;
  for (const f of files) {
    for (const d of parseAllDocuments(readFileSync(path.join(dir, f), 'utf8'))) {
      const obj = d.toJS() as Record<string, unknown> | null;
      if (obj === null) continue;
      validateK8s(obj);
      docs++;
    }
  }
  assert.ok(docs > 0);
});

test('examples: the Kubernetes validation rejects a broken Pod (the check can fail)', () => {
  assert.throws(() =>
    validateK8s({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'x' }, spec: { containers: [{ name: 'a', image: 'b', ports: [{ containerPort: '80' }] }] } }),
  );
  assert.throws(() => validateK8s({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'x' }, spec: {} }));
});

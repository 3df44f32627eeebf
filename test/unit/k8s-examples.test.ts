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

/** berth's own kinds have no Kubernetes model; manifest.test.ts and berth-kinds.test.ts check them. */
const BERTH_KINDS = new Set(['berth.dev/v1/Image', 'berth.dev/v1/Container']);

/** Every .yaml/.yml under manifests/, recursively, as `berth up manifests/` reads them. */
function exampleFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => !e.name.startsWith('.'))
    .flatMap((e) => (e.isDirectory() ? exampleFiles(path.join(dir, e.name)) : /\.ya?ml$/.test(e.name) ? [path.join(dir, e.name)] : []));
}

test('examples: every manifests/ document is a valid Kubernetes v1 object, or one of berth\'s own kinds, counted', () => {
  const files = exampleFiles(path.join(REPO, 'manifests'));
  assert.ok(files.length > 0);
  const counts = new Map<string, number>();
  for (const f of files) {
    for (const d of parseAllDocuments(readFileSync(f, 'utf8'))) {
      const obj = d.toJS() as Record<string, unknown> | null;
      if (obj === null) continue;
      const kind = `${String(obj['apiVersion'])}/${String(obj['kind'])}`;
      counts.set(kind, (counts.get(kind) ?? 0) + 1);
      // Skipped explicitly, and counted below, so a berth kind cannot hide a Kubernetes one.
      if (BERTH_KINDS.has(kind)) continue;
      validateK8s(obj);
    }
  }
  // The shipped set: the demo Pod, and one example of each berth kind (manifests/examples/).
  assert.deepEqual(Object.fromEntries([...counts].sort()), {
    'berth.dev/v1/Container': 1,
    'berth.dev/v1/Image': 1,
    'v1/Pod': 1,
  });
});

test('examples: the Kubernetes validation rejects a broken Pod (the check can fail)', () => {
  assert.throws(() =>
    validateK8s({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'x' }, spec: { containers: [{ name: 'a', image: 'b', ports: [{ containerPort: '80' }] }] } }),
  );
  assert.throws(() => validateK8s({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'x' }, spec: {} }));
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';

/**
 * `berth validate` / `diff` load manifests and nothing else: importing the manifest loader
 * (and parsing every kind) must not load SQLite, undici or child_process. Checked in a fresh
 * process, where CommonJS packages imported from ESM still land in require.cache and
 * builtins in process.moduleLoadList.
 */


const MANIFESTS = `apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  hostNetwork: true
  containers: [{name: a, image: busybox, workingDir: /srv}]
---
apiVersion: berth.dev/v1
kind: Container
metadata: {name: clock}
spec: {image: busybox, hostNetwork: true}
---
apiVersion: berth.dev/v1
kind: Image
metadata: {name: demo}
spec: {ref: busybox, platform: linux/arm64}
`;

/** Imports `module` in a child node, runs `parseManifestText` if it has one, and lists what got loaded. */
function heavyModulesLoadedBy(module: string): string[] {
  const url = module.startsWith('.') ? new URL(module, import.meta.url).href : pathToFileURL(createRequire(import.meta.url).resolve(module)).href;
  const script = `
    import { createRequire } from 'node:module';
    const m = await import(${JSON.stringify(url)});
    if (typeof m.parseManifestText === 'function') {
      const r = m.parseManifestText(${JSON.stringify(MANIFESTS)}, '/m/x.yaml');
      if (r.problems.length > 0 || r.pods.length !== 2 || r.images.length !== 1) throw new Error('parse: ' + JSON.stringify(r.problems));
    }
    const cached = Object.keys(createRequire(import.meta.url).cache);
    const loaded = [];
    if (cached.some((p) => p.includes('/node_modules/better-sqlite3/'))) loaded.push('better-sqlite3');
    if (cached.some((p) => p.includes('/node_modules/undici/'))) loaded.push('undici');
    if (process.moduleLoadList.includes('NativeModule child_process')) loaded.push('node:child_process');
    process.stdout.write(JSON.stringify(loaded));
  `;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: fileURLToPath(new URL('.', import.meta.url)), encoding: 'utf8', timeout: 30_000 });
  return JSON.parse(out) as string[];
}

test('regression: manifest-loads-runtime — the manifest loader loads no SQLite, undici or child_process', () => {
  assert.deepEqual(heavyModulesLoadedBy('../../src/reconciler/manifest.js'), []);
});

test('regression: manifest-loads-runtime — the probe sees them when the runtime is imported (the check can fail)', () => {
  // manifest.ts used to import parseReference/checkWorkingDir from here. undici is loaded by
  // the registry client at its first request only, so the probe is shown it directly.
  assert.deepEqual(heavyModulesLoadedBy('../../src/runtime/index.js'), ['better-sqlite3', 'node:child_process']);
  assert.deepEqual(heavyModulesLoadedBy('undici'), ['undici']);
});

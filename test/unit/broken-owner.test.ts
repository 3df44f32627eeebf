import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ManifestSource } from '../../src/reconciler/source.js';
import { formatProblem } from '../../src/reconciler/manifest.js';
import { createLogger } from '../../src/lib/log.js';

const pod = (name: string, cmd: string): string => `apiVersion: v1
kind: Pod
metadata: {name: ${name}}
spec:
  hostNetwork: true
  containers:
    - name: c
      image: busybox
      command: ["${cmd}"]
`;

test('regression broken-owner-hands-pod-over: a pod whose owning file stops parsing stays that file\'s; the other file declaring it is the duplicate', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-owner-'));
  try {
    const a = path.join(dir, 'a.yaml');
    const b = path.join(dir, 'b.yaml');
    writeFileSync(a, `${pod('web', 'A')}---\n${pod('other', 'O')}`);
    writeFileSync(b, pod('web', 'B'));
    const owners = new Map<string, string>();
    const src = new ManifestSource(dir, createLogger('silent'), () => [], () => owners);
    const first = await src.load();
    assert.deepEqual(first.desired.map((p) => `${p.key}<-${path.basename(p.source)}:${p.containers[0]?.command?.[0] ?? ''}`).sort(), ['default/other<-a.yaml:O', 'default/web<-a.yaml:A']);
    assert.match(first.problems.map(formatProblem).join('\n'), /b\.yaml:1:1: .*pod default\/web is also declared in .*a\.yaml/);
    for (const p of first.desired) owners.set(p.key, p.source);
    // a.yaml breaks: web keeps a.yaml's last good spec; b.yaml is still the duplicate.
    writeFileSync(a, `${pod('web', 'A')}  bogus: [\n`);
    const second = await src.load();
    assert.deepEqual(second.desired.map((p) => `${p.key}<-${path.basename(p.source)}:${p.containers[0]?.command?.[0] ?? ''}`).sort(), ['default/other<-a.yaml:O', 'default/web<-a.yaml:A']);
    const text = second.problems.map(formatProblem).join('\n');
    assert.match(text, /b\.yaml:1:1: .*pod default\/web is also declared in .*a\.yaml, which owns it/);
    assert.match(text, /a\.yaml:\d+:\d+/);
    // The owner removes the pod (valid again): b.yaml may take it.
    writeFileSync(a, pod('other', 'O'));
    const third = await src.load();
    assert.deepEqual(third.desired.map((p) => `${p.key}<-${path.basename(p.source)}`).sort(), ['default/other<-a.yaml', 'default/web<-b.yaml']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

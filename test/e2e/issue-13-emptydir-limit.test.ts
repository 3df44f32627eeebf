import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { EventRecord } from '../../src/runtime/index.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, startDaemon, waitFor } from '../helpers/berth.js';
import { PodSuite, podStatuses } from '../helpers/pod-suite.js';

/**
 * Issue 13, emptyDir `sizeLimit` on disk: `berth up` measures each limited disk emptyDir (du's
 * count) every 10 s and evicts a pod whose volume passed its limit, as the kubelet's eviction
 * manager does: its containers are killed, the volume is emptied and an `Evicted` warning event
 * names the volume and both sizes. What runs again is the restartPolicy's decision (berth's
 * choice, docs/NOTES.md): Never stays exited, Always runs again on the emptied volume. A pod
 * under its limit is left alone. Real runc, conmon, busybox dd.
 */

const fill = (mb: number): string =>
  `n=$(cat /state/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /state/n; if [ $n -eq 1 ]; then dd if=/dev/urandom of=/cache/fill bs=1048576 count=${mb}; fi; while true; do sleep 1; done`;

const pod = (name: string, image: string, policy: string, mb: number): string => `apiVersion: v1
kind: Pod
metadata: {name: ${name}}
spec:
  hostNetwork: true
  restartPolicy: ${policy}
  terminationGracePeriodSeconds: 1
  containers:
    - name: main
      image: ${image}
      command: ["sh", "-c", ${JSON.stringify(fill(mb))}]
      volumeMounts: [{name: cache, mountPath: /cache}, {name: state, mountPath: /state}]
  volumes:
    - name: cache
      emptyDir: {sizeLimit: 4Mi}
    - name: state
      emptyDir: {}
`;

describe('e2e: disk emptyDir sizeLimit evicts the pod (issue 13)', { timeout: 300_000 }, () => {
  const suite = new PodSuite();

  before(async (t) => {
    if (!requireE2E(t)) return;
    await suite.setUp('berth-edlimit-');
    const { image } = suite;
    await fsp.writeFile(path.join(suite.dir, 'pods.yaml'), [pod('never', image, 'Never', 8), pod('always', image, 'Always', 8), pod('small', image, 'Always', 1)].join('---\n'));
    suite.daemon = await startDaemon(suite.env, suite.dir);
  });

  after(() => suite.tearDown());

  const volumeFile = (p: string, v: string, f: string): string => path.join(suite.env.root, 'pods', `default_${p}`, 'volumes', v, f);

  test('over the limit: Evicted event naming volume and sizes, volume emptied, restartPolicy decides', async (t) => {
    if (!suite.ok) return t.skip();
    const evicted = await waitFor('two Evicted events', async () => {
      const r = await berth(suite.env, ['events', '-o', 'json']);
      const evs = (JSON.parse(r.stdout) as EventRecord[]).filter((e) => e.reason === 'Evicted');
      return evs.length >= 2 ? evs : undefined;
    }, 90_000, 500);
    for (const name of ['never', 'always']) {
      const e = evicted.find((x) => x.key === `pod/default/${name}`);
      assert.ok(e !== undefined, `an Evicted event for ${name}`);
      assert.equal(e.type, 'Warning');
      assert.match(e.message, /emptyDir volume "cache" uses \d+ bytes, over its sizeLimit of 4194304 bytes/);
      const used = Number(/uses (\d+) bytes/.exec(e.message)?.[1]);
      assert.ok(used > 4 * 2 ** 20, `measured ${used}`);
    }
    assert.ok(!evicted.some((e) => e.key === 'pod/default/small'), 'a pod under its limit is not evicted');

    // restartPolicy Never: killed (137), not run again; the volume is empty.
    const never = await waitFor('never pod exited', async () => {
      const p = (await podStatuses(suite.env)).get('never');
      return p?.containers[0]?.state === 'exited' ? p : undefined;
    }, 30_000);
    assert.equal(never.containers[0]?.exitCode, 137);
    assert.equal(never.containers[0]?.restarts, 0);
    await assert.rejects(fsp.access(volumeFile('never', 'cache', 'fill')), 'the evicted volume is emptied');

    // restartPolicy Always: runs again (second run, per /state/n) on the emptied volume, and stays.
    await waitFor('always pod ran again', async () => {
      const n = await fsp.readFile(volumeFile('always', 'state', 'n'), 'utf8').catch(() => '');
      const p = (await podStatuses(suite.env)).get('always');
      return n.trim() === '2' && p?.containers[0]?.state === 'running' ? true : undefined;
    }, 60_000);
    await assert.rejects(fsp.access(volumeFile('always', 'cache', 'fill')));

    const small = (await podStatuses(suite.env)).get('small');
    assert.equal(small?.containers[0]?.state, 'running');
    assert.equal(small?.containers[0]?.restarts, 0);
    await fsp.access(volumeFile('small', 'cache', 'fill'));
  });
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildDescription, renderDescription } from '../../src/reconciler/describe.js';
import { buildStatus } from '../../src/reconciler/status.js';
import { containerArgv } from '../../src/lib/argv.js';
import type { DesiredPod } from '../../src/reconciler/desired.js';

/** Issue 12: `describe pod` — effective command (Kubernetes semantics), states, last exit. */

const pod: DesiredPod = {
  key: 'default/web', kind: 'Pod', namespace: 'default', name: 'web', source: '/m/web.yaml', line: 4, podHash: 'p',
  hostNetwork: true, restartPolicy: 'Always', gracePeriodMs: 3000, labels: { app: 'web' }, annotations: {}, paused: false,
  containers: [
    { name: 'app', image: 'r/x:1', pullPolicy: 'IfNotPresent', specHash: 'h', args: ['--port', '80'], env: [{ name: 'A', value: '1' }], ports: [{ containerPort: 80, hostPort: 80, protocol: 'TCP' }], memoryBytes: 64 * 2 ** 20, cpuMillis: 500 },
    { name: 'side', image: 'r/y:1', pullPolicy: 'IfNotPresent', specHash: 'i', env: [], ports: [] },
  ],
};

const image = { entrypoint: ['/entry'], cmd: ['--default'] };

test('describe: args replace the image Cmd behind its Entrypoint; a crash-looping container waits with its last exit', () => {
  const exited = {
    id: 'default.web.app.h-1', podKey: 'default/web', name: 'app', specHash: 'h', imageRef: 'r/x:1', imageDigest: 'sha256:aa' as never, state: 'exited' as const,
    pid: null, pidStart: null, exitCode: 137, createdAt: 1000, startedAt: 1000, finishedAt: 3000, attempt: 1, reason: 'OOMKilled', live: false,
  };
  const observed = { key: 'default/web', namespace: 'default', name: 'web', source: '/m/web.yaml', podHash: 'p', spec: JSON.stringify(pod), createdAt: 500, generation: 1, containers: [exited] };
  const restarts = [{ podKey: 'default/web', name: 'app', restarts: 1, nextAttempt: 2, backoffMs: 10_000, lastId: exited.id, lastExitCode: 137, lastReason: 'OOMKilled', lastStartedAt: 1000, lastFinishedAt: 3000 }];
  const status = buildStatus({ pods: [observed], restarts, conditions: [], now: 5000, daemon: null }).pods[0];
  assert.ok(status !== undefined);
  const d = buildDescription({
    pod: observed,
    status,
    restarts,
    images: {
      app: { digest: 'sha256:aa', entrypoint: ['/entry'], cmd: ['--default'], effective: containerArgv(image, undefined, ['--port', '80']) },
      side: { digest: null, entrypoint: null, cmd: null, effective: null },
    },
    events: [],
  });
  const app = d.containers[0];
  assert.deepEqual(app?.effectiveCommand, ['/entry', '--port', '80']);
  assert.deepEqual([app?.state, app?.stateReason, app?.lastState?.exitCode, app?.lastState?.reason], ['Waiting', 'CrashLoopBackOff', 137, 'OOMKilled']);
  assert.equal(app?.nextRestartAt, new Date(13_000).toISOString());
  assert.deepEqual([d.containers[1]?.state, d.containers[1]?.stateReason], ['Waiting', 'Pending']);
  assert.equal(d.line, 4);

  const text = renderDescription(d, 5000);
  assert.match(text, /^Source:\s+\/m\/web\.yaml:4$/m);
  assert.match(text, /Command:\s+\/entry --port 80\n\s+\(image Entrypoint \["\/entry"\] \+ manifest args; image Cmd replaced\)/);
  assert.match(text, /State:\s+Waiting\n\s+Reason:\s+CrashLoopBackOff\n\s+Last State:\s+Terminated\n\s+Reason:\s+OOMKilled\n\s+Exit Code:\s+137\n/);
  assert.match(text, /Next Restart:\s+\S+ \(in 8s\)/);
  assert.match(text, /Ports:\s+80\/TCP \(host 80\)/);
  assert.match(text, /Limits:\s+memory 64Mi, cpu 500m/);
  assert.match(text, /Command:\s+<image Entrypoint: not pulled yet>\n\s+\(image Entrypoint <not pulled yet> \+ image Cmd <not pulled yet>\)/);
  assert.match(text, /^Conditions:\n {2}<none: not reconciled yet>$/m);
});

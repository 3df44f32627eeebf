import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, cleanupEnv, makeEnv, startDaemon, stopDaemon, waitFor, type berthUp, type BerthEnv } from '../helpers/berth.js';
import { freePort } from '../helpers/registry.js';

/**
 * Issue 13, probes and hooks under `berth up`: readiness holds Ready (and apply --wait) until
 * it passes; a liveness probe that gives up restarts only its container; an httpGet probe
 * against the pod; preStop runs before the stop signal. Real runc, conmon, runc exec.
 */

interface StatusPod {
  key: string;
  status: string;
  containers: { name: string; state: string; id: string | null; pid: number | null; restarts: number; exitCode?: number | null }[];
}

describe('e2e: probes and lifecycle hooks (issue 13)', { timeout: 300_000 }, () => {
  let ok = true;
  let env: BerthEnv;
  let demo: DemoFixture | undefined;
  let dir: string;
  let hostDir: string;
  let image = '';
  let up: ReturnType<typeof berthUp> | undefined;

  const pod = async (name: string): Promise<StatusPod | undefined> =>
    (JSON.parse((await berth(env, ['status', '-o', 'json'])).stdout) as { pods: StatusPod[] }).pods.find((p) => p.key === `default/${name}`);

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv('berth-probe-');
    demo = await startDemoFixture();
    image = `${demo.registry.host}/berth/demo:1.0`;
    dir = path.join(env.dir, 'manifests');
    hostDir = path.join(env.dir, 'host');
    await fsp.mkdir(dir);
    await fsp.mkdir(hostDir);
    up = await startDaemon(env, dir, { extra: ['--resync', '30'] });
  });

  after(async () => {
    if (!ok) return;
    if (up !== undefined) await stopDaemon(up);
    await berth(env, ['delete', '-f', dir]).catch(() => undefined);
    await cleanupEnv(env);
    await demo?.stop();
  });

  test('a readiness probe keeps the pod NotReady until it passes; apply --wait waits for it', async (t) => {
    if (!ok) return t.skip();
    const port = await freePort();
    const file = path.join(dir, 'gate.yaml');
    await fsp.writeFile(
      file,
      `apiVersion: v1
kind: Pod
metadata: {name: gate}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
    - name: web
      image: ${image}
      command: ["sh", "-c", "mkdir -p /tmp/www; sleep 3; echo ok > /tmp/www/ready.html; exec httpd -f -p 127.0.0.1:${port} -h /tmp/www"]
      ports: [{name: http, containerPort: ${port}}]
      readinessProbe:
        httpGet: {path: /ready.html, port: http}
        periodSeconds: 1
        failureThreshold: 1
`,
    );
    const seen = await waitFor('NotReady while the probe fails', async () => ((await pod('gate'))?.status === 'NotReady' ? true : undefined), 30_000, 50);
    assert.equal(seen, true);
    const r = await berth(env, ['apply', '-f', file, '--wait', '--timeout', '30s']);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    assert.equal((await pod('gate'))?.status, 'Running');
  });

  test('a liveness probe that gives up restarts only its container', async (t) => {
    if (!ok) return t.skip();
    await fsp.writeFile(
      path.join(dir, 'live.yaml'),
      `apiVersion: v1
kind: Pod
metadata: {name: live}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
    - name: probed
      image: ${image}
      command: ["sh", "-c", "touch /tmp/alive; sleep 2; rm /tmp/alive; exec sleep 3600"]
      livenessProbe:
        exec: {command: [test, -f, /tmp/alive]}
        periodSeconds: 1
        failureThreshold: 2
    - name: other
      image: ${image}
      command: ["sleep", "3600"]
`,
    );
    const first = await waitFor('both running', async () => {
      const p = await pod('live');
      return p?.containers.every((c) => c.state === 'running') === true ? p : undefined;
    }, 30_000);
    const probedId = first.containers.find((c) => c.name === 'probed')?.id;
    const otherPid = first.containers.find((c) => c.name === 'other')?.pid;
    const restarted = await waitFor('probed restarted by its liveness probe', async () => {
      const p = await pod('live');
      const c = p?.containers.find((x) => x.name === 'probed');
      return c !== undefined && c.id !== probedId && c.state === 'running' ? p : undefined;
    }, 30_000);
    assert.equal(restarted.containers.find((c) => c.name === 'probed')?.restarts, 1);
    assert.equal(restarted.containers.find((c) => c.name === 'other')?.pid, otherPid, 'the other container keeps running');
    const events = (await berth(env, ['events', '--for', 'live'])).stdout;
    assert.match(events, /Liveness probe failed: exit code 1/);
    // Killed and kept (its exit recorded: Last State), then restarted by the policy.
    assert.match(events, /Killing\s+pod\/default\/live\s+container probed \(\S+\): liveness probe failed 2 times.*, will be stopped/);
    assert.match(events, /container probed restarted \(restart 1; exited with code 1(37|43), restartPolicy Always/);
  });

  test('regression liveness-kill-honours-restart-policy: restartPolicy Never kills the container and leaves it exited', async (t) => {
    if (!ok) return t.skip();
    await fsp.writeFile(
      path.join(dir, 'never.yaml'),
      `apiVersion: v1
kind: Pod
metadata: {name: never}
spec:
  hostNetwork: true
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
    - name: probed
      image: ${image}
      command: ["sleep", "3600"]
      livenessProbe:
        exec: {command: ["false"]}
        periodSeconds: 1
        failureThreshold: 1
`,
    );
    const killed = await waitFor('probed killed', async () => {
      const p = await pod('never');
      const c = p?.containers.find((x) => x.name === 'probed');
      return c?.state === 'exited' ? c : undefined;
    }, 30_000);
    assert.ok(killed.exitCode === 137 || killed.exitCode === 143, `exit code ${killed.exitCode}`);
    // A few probe periods later: still the same exited container, never restarted.
    await new Promise((r) => setTimeout(r, 3000));
    const later = (await pod('never'))?.containers.find((x) => x.name === 'probed');
    assert.equal(later?.id, killed.id);
    assert.equal(later?.state, 'exited');
    assert.equal(later?.restarts, 0);
    await fsp.rm(path.join(dir, 'never.yaml'));
  });

  test('preStop runs before the stop signal', async (t) => {
    if (!ok) return t.skip();
    // The daemon has no --allow-host-path: this pod is applied and deleted in-process, with the daemon stopped.
    if (up !== undefined) await stopDaemon(up, 'SIGTERM');
    up = undefined;
    const file = path.join(env.dir, 'hook.yaml');
    await fsp.writeFile(
      file,
      `apiVersion: v1
kind: Pod
metadata: {name: hook}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 10
  volumes: [{name: h, hostPath: {path: ${hostDir}, type: Directory}}]
  containers:
    - name: c
      image: ${image}
      command: ["sh", "-c", "trap 'echo PRESTOP >> /h/log' USR1; trap 'echo TERM >> /h/log; exit 0' TERM; while :; do sleep 1; done"]
      volumeMounts: [{name: h, mountPath: /h}]
      lifecycle:
        preStop:
          # The hook signals the container's PID 1, whose trap writes the line: the order of the two
          # lines is the order in which the container saw preStop and the stop signal.
          exec: {command: [sh, -c, "kill -USR1 1; sleep 2"]}
`,
    );
    const args = ['--allow-host-path', hostDir];
    const a = await berth(env, [...args, 'apply', '-f', file]);
    assert.equal(a.code, 0, `${a.stdout}\n${a.stderr}`);
    const d = await berth(env, [...args, 'delete', '-f', file]);
    assert.equal(d.code, 0, d.stderr);
    const events = (await berth(env, ['events', '--for', 'hook'])).stdout;
    assert.equal((await fsp.readFile(path.join(hostDir, 'log'), 'utf8')).trim(), 'PRESTOP\nTERM', `events:\n${events}\ndelete:\n${d.stdout}${d.stderr}`);
  });

  test('regression poststart-failure-sigkills: a failed postStart hook stops the container as any stop does — preStop, then the stop signal', async (t) => {
    if (!ok) return t.skip();
    if (up !== undefined) await stopDaemon(up, 'SIGTERM');
    up = undefined;
    const args = ['--allow-host-path', hostDir];
    const file = path.join(env.dir, 'poststart.yaml');
    await fsp.writeFile(
      file,
      `apiVersion: v1
kind: Pod
metadata: {name: poststart}
spec:
  hostNetwork: true
  restartPolicy: Never
  terminationGracePeriodSeconds: 5
  volumes: [{name: h, hostPath: {path: ${hostDir}, type: Directory}}]
  containers:
    - name: c
      image: ${image}
      command: ["sh", "-c", "trap 'echo POSTSTART >> /h/poststart.log' USR2; trap 'echo PRESTOP >> /h/poststart.log' USR1; trap 'echo TERM >> /h/poststart.log; exit 0' TERM; while :; do sleep 0.2; done"]
      volumeMounts: [{name: h, mountPath: /h}]
      lifecycle:
        # Each hook signals the container's PID 1, whose trap writes the line (as in the preStop test:
        # the order of the lines is the order in which the container saw the hooks and the signal).
        postStart:
          exec: {command: [sh, -c, "kill -USR2 1; sleep 1; exit 1"]}
        preStop:
          exec: {command: [sh, -c, "kill -USR1 1; sleep 1"]}
`,
    );
    const a = await berth(env, [...args, 'apply', '-f', file]);
    const events = (await berth(env, ['events', '--for', 'poststart'])).stdout;
    assert.match(events, /FailedPostStartHook/, `${a.stdout}\n${a.stderr}`);
    const log = await waitFor('the container stopped', async () => {
      const l = (await fsp.readFile(path.join(hostDir, 'poststart.log'), 'utf8').catch(() => '')).trim();
      return l.endsWith('TERM') ? l : undefined;
    }, 30_000);
    assert.equal(log, 'POSTSTART\nPRESTOP\nTERM', events);
    await berth(env, [...args, 'delete', '-f', file]);
  });

  test('regression prestop-grace, grace-zero-sigkills: no preStop without a grace period, but the signal and 2 s; a preStop that uses up the grace period still leaves 2 s after the signal', async (t) => {
    if (!ok) return t.skip();
    if (up !== undefined) await stopDaemon(up, 'SIGTERM');
    up = undefined;
    const args = ['--allow-host-path', hostDir];
    const run = async (name: string, grace: number, hook: string, onTerm: string): Promise<string> => {
      const log = path.join(hostDir, `${name}.log`);
      const file = path.join(env.dir, `${name}.yaml`);
      await fsp.writeFile(
        file,
        `apiVersion: v1
kind: Pod
metadata: {name: ${name}}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: ${grace}
  volumes: [{name: h, hostPath: {path: ${hostDir}, type: Directory}}]
  containers:
    - name: c
      image: ${image}
      command: ["sh", "-c", "trap 'echo PRESTOP >> /h/${name}.log' USR1; trap '${onTerm}' TERM; while :; do sleep 0.2; done"]
      volumeMounts: [{name: h, mountPath: /h}]
      lifecycle:
        preStop:
          exec: {command: [sh, -c, "${hook}"]}
`,
      );
      const a = await berth(env, [...args, 'apply', '-f', file]);
      assert.equal(a.code, 0, `${a.stdout}\n${a.stderr}`);
      const d = await berth(env, [...args, 'delete', '-f', file]);
      assert.equal(d.code, 0, d.stderr);
      return (await fsp.readFile(log, 'utf8').catch(() => '')).trim();
    };
    // terminationGracePeriodSeconds: 0 — the kubelet runs no preStop hook.
    // The hooks signal PID 1 (its USR1 trap writes PRESTOP) rather than write themselves: an exec'd
    // process under a chrooted runc (the CI's fresh root) does not see the container's mounts.
    // Regression grace-zero-sigkills: it still sends the stop signal and waits up to 2 s
    // (minimumGracePeriodInSeconds) before SIGKILL.
    const noGrace = await run('nograce', 0, 'kill -USR1 1', 'echo TERM >> /h/nograce.log; exit 0');
    assert.equal(noGrace, 'TERM');
    // The hook outlives the 3 s grace period; the container still gets 2 s to finish on SIGTERM.
    assert.equal(await run('slowhook', 3, 'kill -USR1 1; sleep 10', 'sleep 1; echo DRAINED >> /h/slowhook.log; exit 0'), 'PRESTOP\nDRAINED');
  });
});

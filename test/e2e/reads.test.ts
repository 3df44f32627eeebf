import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { requireE2E } from '../helpers/prereq.js';
import { berth, cleanupEnv, makeEnv, startDaemon, stopDaemon, waitFor, type berthUp, type BerthEnv } from '../helpers/berth.js';
import { validateStatus } from '../helpers/berth-schemas.js';

/**
 * Issue 12, kubectl-grade reads: `describe pod` of a pending pod (a tag that does not exist)
 * and of a crash-looping one, `status` with the same reason, pull errors that say what to
 * check and name the manifest file:line, `logs` picking the default container like kubectl,
 * `ps`/`status` by name and label selector with `-o wide`, and `diff` showing old → new.
 */

interface StatusJson {
  pods: { key: string; status: string; lastError: string; line?: number; labels?: Record<string, string> }[];
}

describe('e2e: kubectl-grade reads (describe, logs default container, ps/status selectors, diff values)', { timeout: 600_000 }, () => {
  let demo: DemoFixture | undefined;
  let env: BerthEnv;
  let ok = true;
  let up: ReturnType<typeof berthUp> | undefined;
  let badFile = '';
  let duoFile = '';

  const image = (tag: string): string => `${demo?.registry.host ?? ''}/berth/demo:${tag}`;

  /** Two containers that each print their name once, then sleep. */
  const duoPod = (name: string, labels: string, annotations = '', aText = 'from-a'): string => `apiVersion: v1
kind: Pod
metadata:
  name: ${name}
  labels: ${labels}
${annotations !== '' ? `  annotations: ${annotations}\n` : ''}spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 0
  containers:
    - name: a
      image: ${image('1.0')}
      command: ["sh", "-c", "echo ${aText}; exec sleep 3600"]
    - name: b
      image: ${image('1.0')}
      command: ["sh", "-c", "echo from-b; exec sleep 3600"]
      env: [{ name: X, value: "1" }]
`;

  const duoText = (aText = 'from-a'): string =>
    [
      '# three pods of two containers each',
      duoPod('duo', '{ app: duo, tier: x }', '', aText),
      duoPod('pick', '{ app: pick }', '{ kubectl.kubernetes.io/default-container: b }'),
      duoPod('stray', '{ app: stray }', '{ kubectl.kubernetes.io/default-container: zzz }'),
    ].join('\n---\n');

  const statusJson = async (args: string[] = []): Promise<StatusJson> => {
    const r = await berth(env, ['status', ...args, '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    const parsed = JSON.parse(r.stdout) as StatusJson;
    assert.deepEqual(validateStatus(parsed), [], 'status -o json matches schemas/status.json');
    return parsed;
  };
  const keys = async (args: string[]): Promise<string[]> => (await statusJson(args)).pods.map((p) => p.key);

  before(async (t) => {
    ok = requireE2E(t);
    if (!ok) return;
    env = makeEnv();
    demo = await startDemoFixture();
    badFile = path.join(env.dir, 'bad.yaml');
    duoFile = path.join(env.dir, 'duo.yaml');
  });
  after(async () => {
    if (up !== undefined) await stopDaemon(up);
    if (env !== undefined) await cleanupEnv(env);
    await demo?.stop();
  });

  test('a tag that does not exist: apply names what to check and file:line; status and describe show Pending/ImagePullBackOff with the registry\'s answer', async (t) => {
    if (!ok) return t.skip();
    // Two comment lines first: the pod's document starts on line 3.
    await fsp.writeFile(
      badFile,
      `# a typo'd tag\n# (the registry has 1.0)\napiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\nspec:\n  hostNetwork: true\n  containers:\n    - name: app\n      image: ${image('nope')}\n      command: ["sleep", "3600"]\n`,
    );
    const where = `${badFile}:3`;
    const reason = new RegExp(
      `pull ${image('nope').replace(/[.]/g, '\\.')}: not found: registry [\\d.:]+ answered 404 "manifest unknown[^"]*"; check the tag, the registry address and credentials`,
    );
    const apply = await berth(env, ['apply', '-f', badFile]);
    assert.equal(apply.code, 1, apply.stderr);
    assert.match(apply.stderr, reason);
    assert.ok(apply.stderr.includes(`(wanted by default/bad container app at ${where})`), apply.stderr);
    assert.doesNotMatch(apply.stderr, /\{"errors"|"detail"/, 'no raw registry body');
    assert.equal(apply.stderr.trim().split('\n').length, 1, 'one line');

    const pod = (await statusJson(['bad'])).pods[0];
    assert.equal(pod?.status, 'ImagePullBackOff');
    assert.match(pod?.lastError ?? '', reason);
    assert.ok(pod?.lastError.endsWith(`at ${where})`), pod?.lastError);
    assert.equal(pod?.line, 3);
    const table = await berth(env, ['status', 'bad']);
    assert.match(table.stdout, /default\/bad\s+0\/1\s+ImagePullBackOff\s+0\s+\S+\s+pull .*manifest unknown.*check the tag/);

    const d = await berth(env, ['describe', 'pod', 'bad']);
    assert.equal(d.code, 0, d.stderr);
    assert.match(d.stdout, /^Status:\s+Pending$/m);
    assert.match(d.stdout, /^Reason:\s+ImagePullBackOff$/m);
    assert.ok(d.stdout.includes(`Source:         ${where}\n`), d.stdout);
    const message = /^Message:\s+(.*)$/m.exec(d.stdout)?.[1] ?? '';
    assert.equal(message, pod?.lastError, 'describe and status give the same reason');
    assert.match(d.stdout, /Image Digest:\s+<not pulled>/);
    assert.match(d.stdout, /State:\s+Waiting\n\s+Reason:\s+ImagePullBackOff/);
    assert.match(d.stdout, /Command:\s+sleep 3600\n\s+\(manifest command; image Entrypoint and Cmd replaced\)/);
    assert.match(d.stdout, /Warning\s+Failed\s+image\/\S+:nope\s+pull .*manifest unknown/, 'the image\'s failure is among the events');
    assert.match(d.stdout, /Ready\s+False\s+ImagePullBackOff/);

    const j = await berth(env, ['describe', 'bad', '-o', 'json']);
    const dj = JSON.parse(j.stdout) as { phase: string; status: string; line: number; containers: { state: string; stateReason: string; imageDigest: string | null }[] };
    assert.deepEqual([dj.phase, dj.status, dj.line], ['Pending', 'ImagePullBackOff', 3]);
    assert.deepEqual([dj.containers[0]?.state, dj.containers[0]?.stateReason, dj.containers[0]?.imageDigest], ['Waiting', 'ImagePullBackOff', null]);

    // logs of the pending pod says why nothing ran.
    const logs = await berth(env, ['logs', 'bad']);
    assert.equal(logs.code, 1);
    assert.match(logs.stderr, /no container has run yet: ImagePullBackOff: pull .*manifest unknown/);

    const missing = await berth(env, ['describe', 'pod', 'nope']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /describe pod default\/nope: no such pod/);
    assert.equal((await berth(env, ['describe', 'pod'])).code, 2);
    assert.equal((await berth(env, ['describe', 'service', 'x'])).code, 2);
  });

  test('logs of a two-container pod: the first container with a note naming the others; the default-container annotation wins', async (t) => {
    if (!ok) return t.skip();
    await fsp.writeFile(duoFile, duoText());
    const apply = await berth(env, ['apply', '-f', duoFile]);
    assert.equal(apply.code, 0, apply.stderr);
    const logs = (target: string): Promise<{ code: number; stdout: string; stderr: string }> =>
      waitFor(`logs ${target}`, async () => {
        const r = await berth(env, ['logs', target]);
        return r.stdout !== '' ? r : undefined;
      });

    const duo = await logs('duo');
    assert.equal(duo.code, 0);
    assert.equal(duo.stdout, 'from-a\n');
    assert.equal(duo.stderr, 'Defaulted container "a" out of: a, b\n');

    const pick = await logs('pick');
    assert.equal(pick.stdout, 'from-b\n', 'kubectl.kubernetes.io/default-container: b');
    assert.equal(pick.stderr, '', 'no note when the annotation chose');

    const stray = await logs('stray');
    assert.equal(stray.stdout, 'from-a\n');
    assert.equal(stray.stderr, 'Default container name "zzz" not found in pod default/stray\nDefaulted container "a" out of: a, b\n');

    const named = await logs('duo/b');
    assert.deepEqual([named.stdout, named.stderr], ['from-b\n', '']);
  });

  test('ps and status take pod names and -l selectors; -o wide adds columns', async (t) => {
    if (!ok) return t.skip();
    assert.deepEqual(await keys(['duo']), ['default/duo']);
    assert.deepEqual(await keys(['pick', 'duo']), ['default/duo', 'default/pick']);
    assert.deepEqual(await keys(['-l', 'app=duo']), ['default/duo']);
    assert.deepEqual(await keys(['-l', 'tier=x,app=duo']), ['default/duo']);
    assert.deepEqual(await keys(['-l', 'app,app!=duo']), ['default/pick', 'default/stray']);
    assert.deepEqual(await keys(['-l', '!app']), ['default/bad']);
    assert.deepEqual(await keys(['-l', 'tier']), ['default/duo']);
    assert.deepEqual((await statusJson(['duo'])).pods[0]?.labels, { app: 'duo', tier: 'x' });

    const nope = await berth(env, ['status', 'nope']);
    assert.deepEqual([nope.code, nope.stdout], [1, '']);
    assert.match(nope.stderr, /^error ERR_NOT_FOUND: status default\/nope: no such pod$/m);
    const some = await berth(env, ['status', 'duo', 'nope']);
    assert.equal(some.code, 1);
    assert.match(some.stdout, /default\/duo\s+2\/2\s+Running/);
    assert.match(some.stderr, /default\/nope: no such pod/);
    assert.equal((await berth(env, ['status', 'duo', '-l', 'app=duo'])).code, 2, 'names and a selector exclude each other');
    // Set-based selectors, as kubectl reads them.
    assert.deepEqual(await keys(['-l', 'app in (duo,pick)']), ['default/duo', 'default/pick']);
    assert.deepEqual(await keys(['-l', 'app notin (duo),app']), ['default/pick', 'default/stray']);
    const set = await berth(env, ['status', '-l', 'app in (duo']);
    assert.equal(set.code, 2);
    assert.match(set.stderr, /selector "app in \(duo"/);

    const wide = await berth(env, ['status', '-o', 'wide']);
    assert.equal(wide.code, 0, wide.stderr);
    assert.match(wide.stdout, /^POD\s+READY\s+STATUS\s+RESTARTS\s+AGE\s+CONTAINERS\s+SOURCE\s+NEXT TRY\s+LAST ERROR$/m);
    assert.ok(new RegExp(`default/duo\\s+2/2\\s+Running\\s+0\\s+\\S+\\s+a:running,b:running\\s+${duoFile}:3\\s+-`).test(wide.stdout), wide.stdout);

    const ps = await berth(env, ['ps', '-l', 'tier=x', '-o', 'json']);
    const pods = JSON.parse(ps.stdout) as { key: string; containers: { name: string; restarts: number }[] }[];
    assert.deepEqual(pods.map((p) => [p.key, p.containers.map((c) => `${c.name}:${c.restarts}`)]), [['default/duo', ['a:0', 'b:0']]]);
    const psWide = await berth(env, ['ps', 'duo', '-o', 'wide']);
    assert.equal(psWide.code, 0, psWide.stderr);
    assert.match(psWide.stdout, /^POD\s+CONTAINER\s+STATE\s+PID\s+ATTEMPT\s+RESTARTS\s+LAST EXIT\s+IMAGE\s+DIGEST\s+AGE\s+CONTAINER ID$/m);
    assert.match(psWide.stdout, /default\/duo\s+a\s+running\s+\d+\s+0\s+0\s+-\s+\S+\s+[0-9a-f]{12}\s+\S+\s+default\.duo\.a\.[0-9a-f]{8}-0\n/);
    assert.equal(psWide.stdout.trim().split('\n').length, 3, 'header and the two containers of duo');
    const psMissing = await berth(env, ['ps', 'nope']);
    assert.deepEqual([psMissing.code, psMissing.stdout], [1, '']);
    assert.match((await berth(env, ['ps', '-l', 'app=pick', '-o', 'yaml'])).stdout, /^- key: default\/pick\n/);
  });

  test('diff prints old → new per changed field; -o json carries the details', async (t) => {
    if (!ok) return t.skip();
    await fsp.writeFile(duoFile, duoText('from-a2'));
    const r = await berth(env, ['diff', '-f', duoFile]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stdout, /~ container default\/duo\/a: replace default\.duo\.a\.[0-9a-f]{8}-0 \(spec changed: command\)\n {4}command: \["sh","-c","echo from-a; exec sleep 3600"\] → \["sh","-c","echo from-a2; exec sleep 3600"\]\n/);
    const j = await berth(env, ['diff', '-f', duoFile, '-o', 'json']);
    const plan = JSON.parse(j.stdout) as { steps: { kind: string; pod: string; container?: string; details?: unknown[] }[] };
    const step = plan.steps.find((s) => s.kind === 'replace' && s.pod === 'default/duo');
    assert.deepEqual(step?.details, [{ field: 'command', old: ['sh', '-c', 'echo from-a; exec sleep 3600'], new: ['sh', '-c', 'echo from-a2; exec sleep 3600'] }]);
    // apply --dry-run prints the same lines.
    const dry = await berth(env, ['apply', '-f', duoFile, '--dry-run']);
    assert.match(dry.stdout, / {4}command: \[.*\] → \[.*from-a2/);
    await fsp.writeFile(duoFile, duoText());
  });

  test('describe of a crash-looping pod through berth up: waiting in back-off, last exit with code and reason, next restart', async (t) => {
    if (!ok) return t.skip();
    const site = path.join(env.dir, 'site');
    await fsp.mkdir(site);
    await fsp.writeFile(
      path.join(site, 'crash.yaml'),
      `apiVersion: v1\nkind: Pod\nmetadata:\n  name: crash\nspec:\n  hostNetwork: true\n  restartPolicy: Always\n  terminationGracePeriodSeconds: 0\n  containers:\n    - name: app\n      image: ${image('1.0')}\n      command: ["sh", "-c", "echo boom; exit 3"]\n`,
    );
    up = await startDaemon(env, site);
    const d = await waitFor('crash in back-off', async () => {
      const r = await berth(env, ['describe', 'pod', 'crash']);
      return /Reason:\s+CrashLoopBackOff/.test(r.stdout) ? r : undefined;
    }, 60_000, 200);
    assert.match(d.stdout, /^Status:\s+Running$/m);
    assert.match(d.stdout, /State:\s+Waiting\n\s+Reason:\s+CrashLoopBackOff\n\s+Last State:\s+Terminated\n\s+Reason:\s+Error\n\s+Exit Code:\s+3\n\s+Started:.*\n\s+Finished:.*\n/);
    assert.match(d.stdout, /Restarts:\s+[1-9]/);
    assert.match(d.stdout, /Next Restart:\s+\S+ \(in \d+s\)/);
    assert.match(d.stdout, /Warning\s+BackOff\s+pod\/default\/crash/);
    const j = JSON.parse((await berth(env, ['describe', 'crash', '-o', 'json'])).stdout) as { containers: { lastState: { exitCode: number; reason: string } | null; nextRestartAt: string | null }[] };
    assert.deepEqual([j.containers[0]?.lastState?.exitCode, j.containers[0]?.lastState?.reason], [3, 'Error']);

    // Through the daemon the pending pod reads the same: the daemon retries the pull, the words stay.
    const bad = await berth(env, ['describe', 'pod', 'bad']);
    assert.match(bad.stdout, /^Reason:\s+ImagePullBackOff$/m);
    assert.ok(bad.stdout.includes(`at ${badFile}:3)`), bad.stdout);
    // And the default container through the socket.
    const logs = await berth(env, ['logs', 'duo']);
    assert.deepEqual([logs.stdout, logs.stderr], ['from-a\n', 'Defaulted container "a" out of: a, b\n']);
    assert.deepEqual(await keys(['-l', 'app=duo']), ['default/duo']);
  });
});

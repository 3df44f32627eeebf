import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseFastRun, runDocument } from '../../src/lib/fast-run.js';

/**
 * Issue 13, `berth run` handed to the daemon before commander loads (lib/fast-run): which command
 * lines the fast path takes, and that everything else is left to the normal path, which reports
 * bad flags the usual way.
 */

test('the plain forms of run are taken, with the global --root/--state/--log-level before the command', () => {
  const r = parseFastRun(['--root', '/r', '--state=/s', '--log-level', 'warn', 'run', '--rm', '--net', 'host', '--name', 'once', '-n', 'ns', '-e', 'A=1', '--env=B=x=y', 'img:1', '--', 'sh', '-c', 'echo --rm']);
  assert.ok(r !== undefined);
  assert.equal(r.socket, '/s/berth.sock');
  assert.deepEqual(r.flags, {
    name: 'once',
    namespace: 'ns',
    image: 'img:1',
    command: ['sh', '-c', 'echo --rm'],
    env: [
      { name: 'A', value: '1' },
      { name: 'B', value: 'x=y' },
    ],
    net: 'host',
    mode: 'rm',
  });
  assert.equal(parseFastRun(['run', '-d', 'img'])?.flags.mode, 'detach');
  assert.equal(parseFastRun(['run', 'img'])?.flags.mode, 'attach');
  assert.match(parseFastRun(['run', 'img'])?.flags.name ?? '', /^run-[a-z0-9]+$/);
  assert.equal(parseFastRun(['run', 'img'])?.socket, '/run/berth/berth.sock');
});

test('anything else is left to the normal path', () => {
  for (const args of [
    ['ps'],
    ['--bridge', 'b0', 'run', 'img'], // a global flag the fast path does not know
    ['run', '--rm', '-d', 'img'], // excluded pair: the normal path says so
    ['run', '--net', 'bridge', 'img'],
    ['run', '-e', 'NOEQUALS', 'img'],
    ['run', '--name', 'a', '--name', 'b', 'img'],
    ['run', '--rm', '--rm', 'img'],
    ['run', 'img', '--rm'], // an option after the image
    ['run', 'img', 'sh'], // a command without --
    ['run', '--quiet', 'img'],
    ['run'],
    ['--log-level', 'loud', 'run', 'img'],
    ['--root', '--state', 'run', 'img'],
  ]) {
    assert.equal(parseFastRun(args), undefined, args.join(' '));
  }
});

test('the document is the one the normal path applies', () => {
  assert.deepEqual(runDocument({ name: 'x', namespace: 'default', image: 'i', command: [], env: [], net: 'pod' }), {
    apiVersion: 'berth.dev/v1',
    kind: 'Container',
    metadata: { name: 'x', namespace: 'default' },
    spec: { image: 'i', restartPolicy: 'Never', terminationGracePeriodSeconds: 2 },
  });
});

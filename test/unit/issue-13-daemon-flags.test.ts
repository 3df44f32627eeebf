import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { DAEMON_ENV, DAEMON_NODE_FLAGS, REEXEC_MARK, daemonExec, forgetReexecEnv, inheritedFds, missingDaemonFlags, reexecWithDaemonFlags } from '../../src/daemon/reexec.js';

/**
 * Issue 13 (daemon memory): `berth up` re-executes itself once with DAEMON_NODE_FLAGS
 * (daemon/reexec.ts). What it executes, when it does not, and what the daemon removes again.
 */

const view = (o: { execArgv?: string[]; env?: NodeJS.ProcessEnv; argv?: string[] } = {}) => ({
  pid: 4242,
  execPath: '/usr/bin/node',
  argv: o.argv ?? ['/usr/bin/node', '/opt/berth/dist/src/cli.js', '--root', '/r', 'up', '/m'],
  execArgv: o.execArgv ?? [],
  env: o.env ?? { PATH: '/usr/bin' },
});

test('issue-13 daemon-flags: every flag is missing from a plain node, none once given in any spelling', () => {
  assert.deepEqual(missingDaemonFlags([], undefined), [...DAEMON_NODE_FLAGS]);
  assert.deepEqual(missingDaemonFlags([...DAEMON_NODE_FLAGS], undefined), []);
  // The operator's own value, underscores, a negation, NODE_OPTIONS: theirs wins, ours is not added.
  assert.deepEqual(missingDaemonFlags(['--max_semi_space_size=8'], undefined), DAEMON_NODE_FLAGS.filter((f) => !f.startsWith('--max-semi-space-size')));
  assert.deepEqual(missingDaemonFlags(['--no-compact-on-every-full-gc'], undefined), DAEMON_NODE_FLAGS.filter((f) => f !== '--compact-on-every-full-gc'));
  assert.deepEqual(missingDaemonFlags([], '--expose-gc  --max-semi-space-size=2'), DAEMON_NODE_FLAGS.filter((f) => f !== '--expose-gc' && !f.startsWith('--max-semi-space-size')));
  // Unrelated options change nothing.
  assert.deepEqual(missingDaemonFlags(['--enable-source-maps', '--import', '/x.mjs'], '--trace-warnings'), [...DAEMON_NODE_FLAGS]);
});

test('issue-13 daemon-flags: the re-execution keeps node, its options, the script and every argument, adds the flags and the mark', () => {
  const plan = daemonExec(view({ execArgv: ['--enable-source-maps'] }));
  assert.ok(plan !== undefined);
  assert.equal(plan.path, '/usr/bin/node');
  assert.deepEqual(plan.argv, ['/usr/bin/node', '--enable-source-maps', ...DAEMON_NODE_FLAGS, '/opt/berth/dist/src/cli.js', '--root', '/r', 'up', '/m']);
  assert.equal(plan.env.PATH, '/usr/bin');
  for (const [k, v] of Object.entries(DAEMON_ENV)) assert.equal(plan.env[k], v);
  assert.equal(plan.env[REEXEC_MARK], Object.keys(DAEMON_ENV).join(','));
});

test('issue-13 daemon-flags: no second re-execution (the mark), none when node has every flag', () => {
  assert.equal(daemonExec(view({ env: { [REEXEC_MARK]: '-' } })), undefined);
  assert.equal(daemonExec(view({ execArgv: [...DAEMON_NODE_FLAGS] })), undefined);
});

test('issue-13 daemon-flags: an environment variable the operator set is kept, and kept after the daemon cleans up', () => {
  const [name] = Object.keys(DAEMON_ENV);
  assert.ok(name !== undefined);
  const plan = daemonExec(view({ env: { PATH: '/usr/bin', [name]: '8' } }));
  assert.ok(plan !== undefined);
  assert.equal(plan.env[name], '8');
  assert.equal(plan.env[REEXEC_MARK], '-');
  const env: NodeJS.ProcessEnv = { ...plan.env };
  forgetReexecEnv(env);
  assert.deepEqual(env, { PATH: '/usr/bin', [name]: '8' });

  // What berth added goes again, so conmon, runc and the CNI plugins get the environment berth was given.
  const added = daemonExec(view());
  assert.ok(added !== undefined);
  const env2: NodeJS.ProcessEnv = { ...added.env };
  forgetReexecEnv(env2);
  assert.deepEqual(env2, { PATH: '/usr/bin' });
});

test('issue-13 daemon-flags: stdio always passes through execve, systemd sockets only when they are this process\'s', () => {
  assert.deepEqual(inheritedFds({}, 4242), [0, 1, 2]);
  assert.deepEqual(inheritedFds({ LISTEN_PID: '4242', LISTEN_FDS: '2' }, 4242), [0, 1, 2, 3, 4]);
  assert.deepEqual(inheritedFds({ LISTEN_PID: '1', LISTEN_FDS: '2' }, 4242), [0, 1, 2]);
  assert.deepEqual(inheritedFds({ LISTEN_PID: '4242', LISTEN_FDS: 'x' }, 4242), [0, 1, 2]);
});

test('issue-13 daemon-flags: a failed execve leaves the process as it was and says why (the daemon then runs without the flags)', () => {
  const fdFlags = (): string[] => [0, 1, 2].map((fd) => /flags:\s+(\d+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1] ?? '?');
  const before = fdFlags();
  const r = reexecWithDaemonFlags({ ...view(), pid: process.pid, execPath: '/nonexistent/berth-test/node' });
  assert.match(r.failed ?? '', /could not restart node with --max-semi-space-size=1 .*ENOENT.*execve '\/nonexistent\/berth-test\/node'/);
  // stdio's close-on-exec flags, cleared just before the execve, are set again.
  assert.deepEqual(fdFlags(), before);
});

test('issue-13 daemon-flags: the re-executed daemon gets NODE_EXTRA_CA_CERTS as BERTH_EXTRA_CA_CERTS, so node does not parse it at its start (regression extra-ca-certs-parsed-at-every-start)', () => {
  const moved = daemonExec(view({ env: { PATH: '/usr/bin', NODE_EXTRA_CA_CERTS: '/etc/ssl/certs/ca-certificates.crt' } }));
  assert.ok(moved !== undefined);
  assert.equal(moved.env['NODE_EXTRA_CA_CERTS'], undefined);
  assert.equal(moved.env['BERTH_EXTRA_CA_CERTS'], '/etc/ssl/certs/ca-certificates.crt');
  // One set by the launcher already wins; node's copy still goes.
  const both = daemonExec(view({ env: { NODE_EXTRA_CA_CERTS: '/a.pem', BERTH_EXTRA_CA_CERTS: '/b.pem' } }));
  assert.equal(both?.env['BERTH_EXTRA_CA_CERTS'], '/b.pem');
  assert.equal(both?.env['NODE_EXTRA_CA_CERTS'], undefined);
  assert.equal(daemonExec(view({ env: { PATH: '/usr/bin' } }))?.env['BERTH_EXTRA_CA_CERTS'], undefined);
});

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { checkWorkingDir, expandEnv, expandRefs, generateSandboxSpec, generateSpec, processArgs, stopSignal, DEFAULT_CAPS, type SandboxRef } from '../../src/runtime/tasks/spec.js';
import type { ImageConfig } from '../../src/runtime/images/documents.js';
import { validateRuntimeConfig } from '../helpers/oci-schemas.js';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** An empty rootfs: no /etc/passwd, so only numeric users resolve. */
const ROOTFS = mkdtempSync(path.join(os.tmpdir(), 'berth-spec-'));
after(() => rmSync(ROOTFS, { recursive: true, force: true }));

const HOST: SandboxRef = { kind: 'host', files: [] };
const POD: SandboxRef = {
  kind: 'pod',
  netns: '/run/netns/berth-x',
  ipc: '/proc/42/ns/ipc',
  uts: '/proc/42/ns/uts',
  files: [{ destination: '/etc/hosts', source: '/sb/hosts' }],
};

const image = (config: ImageConfig['config'] = {}): ImageConfig => ({
  architecture: 'amd64',
  os: 'linux',
  config: { Env: ['PATH=/bin', 'A=1'], Entrypoint: ['/entry'], Cmd: ['--serve'], ...config },
  rootfs: { type: 'layers', diff_ids: [] },
});

test('spec: command/args follow Kubernetes over Entrypoint/Cmd', () => {
  assert.deepEqual(processArgs(image(), undefined, undefined), ['/entry', '--serve']);
  assert.deepEqual(processArgs(image(), ['/bin/sh'], undefined), ['/bin/sh']);
  assert.deepEqual(processArgs(image(), undefined, ['--other']), ['/entry', '--other']);
  assert.deepEqual(processArgs(image(), ['/bin/sh'], ['-c', 'x']), ['/bin/sh', '-c', 'x']);
});

test('spec: generated config.json validates against the runtime-spec schema in every variant', () => {
  for (const variant of [
    { sandbox: HOST },
    { sandbox: POD, memoryBytes: 64 * 1024 * 1024, cpuMillis: 250, pidsLimit: 100 },
    { sandbox: { ...POD, pid: '/proc/42/ns/pid' } },
    { sandbox: { kind: 'host' as const, files: [{ destination: '/etc/hosts', source: '/etc/hosts' }] }, env: [{ name: 'A', value: '2' }, { name: 'B', value: 'x=y' }], workingDir: '/srv' },
  ]) {
    const spec = generateSpec(image(), { id: 'ns.pod.c.12345678', rootfs: ROOTFS, ...variant });
    validateRuntimeConfig(spec);
  }
  validateRuntimeConfig(generateSandboxSpec({ id: 'ns.pod._sandbox.12345678', rootfs: '/r', netns: '/run/netns/berth-x', hostname: 'pod', catatonit: '/usr/bin/catatonit' }));
});

test('spec: a pod container joins its sandbox by path (network, IPC, UTS; PID only when shared) and sets no hostname of its own', () => {
  const spec = generateSpec(image(), { id: 'x', sandbox: POD, rootfs: ROOTFS }) as { hostname?: string; linux: { namespaces: { type: string; path?: string }[] }; mounts: { destination: string; source: string }[] };
  assert.deepEqual(spec.linux.namespaces, [
    { type: 'pid' },
    { type: 'ipc', path: '/proc/42/ns/ipc' },
    { type: 'uts', path: '/proc/42/ns/uts' },
    { type: 'mount' },
    { type: 'network', path: '/run/netns/berth-x' },
  ]);
  assert.equal(spec.hostname, undefined);
  assert.ok(spec.mounts.some((m) => m.destination === '/etc/hosts' && m.source === '/sb/hosts'));
  const shared = generateSpec(image(), { id: 'x', sandbox: { ...POD, pid: '/proc/42/ns/pid' }, rootfs: ROOTFS }) as { linux: { namespaces: { type: string; path?: string }[] } };
  assert.deepEqual(shared.linux.namespaces[0], { type: 'pid', path: '/proc/42/ns/pid' });
  const host = generateSpec(image(), { id: 'x', sandbox: HOST, rootfs: ROOTFS }) as { linux: { namespaces: { type: string }[] } };
  assert.deepEqual(host.linux.namespaces.map((n) => n.type), ['pid', 'ipc', 'mount']);
});

test('spec: safe defaults (R2): no new privileges, default caps, empty inheritable/ambient, pids limit, cgroup per container', () => {
  const spec = generateSpec(image(), { id: 'x', sandbox: POD, rootfs: ROOTFS }) as {
    process: { noNewPrivileges: boolean; capabilities: Record<string, string[]>; env: string[]; user: { additionalGids: number[] } };
    linux: { cgroupsPath: string; resources: { pids: { limit: number } }; namespaces: { type: string }[]; maskedPaths: string[] };
    hostname: string;
  };
  assert.equal(spec.process.noNewPrivileges, true);
  assert.deepEqual(spec.process.capabilities['bounding'], DEFAULT_CAPS);
  assert.deepEqual(spec.process.capabilities['inheritable'], []);
  assert.deepEqual(spec.process.capabilities['ambient'], []);
  assert.ok(!DEFAULT_CAPS.includes('CAP_SYS_ADMIN'));
  assert.equal(spec.linux.cgroupsPath, '/berth/x');
  assert.ok(spec.linux.resources.pids.limit > 0);
  assert.ok(spec.linux.maskedPaths.includes('/proc/kcore'));
  assert.deepEqual(spec.process.user.additionalGids, [0]);
  assert.ok(spec.linux.namespaces.some((n) => n.type === 'network'));
  assert.deepEqual(spec.process.env, ['PATH=/bin', 'A=1']);
});

test('spec: R1 — working dir under /proc, /sys, /dev or unclean is refused (CVE-2024-21626)', () => {
  for (const bad of ['/proc/self/fd/8', '/sys', '/dev/x', 'relative', '/a/../b', '/a//b']) {
    assert.throws(() => checkWorkingDir(bad, 'test'), (e: Error & { code?: string }) => e.code === 'ERR_INVALID_IMAGE', bad);
  }
  assert.equal(checkWorkingDir('/srv/app', 'test'), '/srv/app');
  assert.throws(() => generateSpec(image({ WorkingDir: '/proc/self/fd/7' }), { id: 'x', sandbox: HOST, rootfs: ROOTFS }), /working dir/);
});

test('spec: R1 — user ids in range (CVE-2024-40635), env entries KEY=VALUE without NUL', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-user-'));
  const user = (u: string): unknown => (generateSpec(image({ User: u }), { id: 'x', sandbox: HOST, rootfs: dir }) as { process: { user: unknown } }).process.user;
  assert.deepEqual(user('1000:1000'), { uid: 1000, gid: 1000, additionalGids: [1000] });
  assert.deepEqual(user(''), { uid: 0, gid: 0, additionalGids: [0] });
  assert.throws(() => user('4294967295'), (e: Error & { code?: string }) => e.code === 'ERR_INVALID_IMAGE');
  assert.throws(() => user('nobody'), (e: Error & { code?: string }) => e.code === 'ERR_INVALID_IMAGE' && /nobody/.test(e.message));
  rmSync(dir, { recursive: true });
  assert.throws(() => generateSpec(image({ Env: ['NOEQUALS'] }), { id: 'x', sandbox: HOST, rootfs: ROOTFS }), /KEY=VALUE/);
  assert.throws(() => generateSpec(image({ Env: ['A=b\0c'] }), { id: 'x', sandbox: HOST, rootfs: ROOTFS }), /KEY=VALUE/);
});

test('spec: R3 — the image config is never mutated', () => {
  const img = image();
  const before = JSON.stringify(img);
  generateSpec(img, { id: 'x', sandbox: HOST, rootfs: ROOTFS, env: [{ name: 'PATH', value: '/x' }], command: ['a'] });
  assert.equal(JSON.stringify(img), before);
});

test('spec: STOPSIGNAL is taken from an allowlist, else SIGTERM', () => {
  assert.equal(stopSignal(image({ StopSignal: 'SIGQUIT' })), 'SIGQUIT');
  assert.equal(stopSignal(image({ StopSignal: 'int' })), 'SIGINT');
  assert.equal(stopSignal(image({ StopSignal: 'SIGKILL' })), 'SIGTERM');
  assert.equal(stopSignal(image({ StopSignal: '9' })), 'SIGTERM');
  assert.equal(stopSignal(undefined), 'SIGTERM');
});

test('regression: var-refs-not-expanded — $(VAR) in env, command and args follows Kubernetes', () => {
  const vars = new Map([['A', 'x'], ['B', 'y']]);
  assert.equal(expandRefs('$(A)-$(B)', vars), 'x-y');
  assert.equal(expandRefs('$$(A)', vars), '$(A)');
  assert.equal(expandRefs('$(MISSING) $ $x $(', vars), '$(MISSING) $ $x $(');
  assert.deepEqual(expandEnv([{ name: 'FOO', value: 'f' }, { name: 'BAR', value: '$(FOO)-x' }, { name: 'LATE', value: '$(AFTER)' }, { name: 'AFTER', value: 'a' }]), [
    { name: 'FOO', value: 'f' },
    { name: 'BAR', value: 'f-x' },
    { name: 'LATE', value: '$(AFTER)' },
    { name: 'AFTER', value: 'a' },
  ]);
  const spec = generateSpec(image(), {
    id: 'x',
    sandbox: HOST,
    rootfs: ROOTFS,
    env: [{ name: 'GREETING', value: 'hi' }],
    command: ['echo', '$(GREETING)'],
    args: ['$$(GREETING)', '$(GREETING)!'],
  }) as { process: { args: string[] } };
  assert.deepEqual(spec.process.args, ['echo', 'hi', '$(GREETING)', 'hi!']);
});

test('regression: untrusted-config-text-in-errors — a huge User or WorkingDir is cut to 80 characters in the message', () => {
  const huge = 'x'.repeat(4 * 1024 * 1024);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-user-'));
  for (const bad of [() => generateSpec(image({ User: huge }), { id: 'x', sandbox: HOST, rootfs: dir }), () => checkWorkingDir(`/${huge}/..`, 'img')]) {
    assert.throws(bad, (e: Error) => e.message.length < 300 && /…/.test(e.message));
  }
  rmSync(dir, { recursive: true });
});

test('issue 13: every securityContext variant gives a config.json the runtime-spec schema accepts, with what it asks for', () => {
  const variants: { security: NonNullable<Parameters<typeof generateSpec>[1]['security']>; check: (s: Record<string, any>) => void }[] = [
    { security: {}, check: (s) => assert.ok(s.linux.seccomp !== undefined && s.process.noNewPrivileges === true) },
    { security: { seccomp: 'Unconfined' }, check: (s) => assert.equal(s.linux.seccomp, undefined) },
    { security: { capDrop: ['ALL'], capAdd: ['CAP_NET_ADMIN'] }, check: (s) => assert.deepEqual(s.process.capabilities.effective, ['CAP_NET_ADMIN']) },
    { security: { capDrop: ['CAP_CHOWN'] }, check: (s) => assert.ok(!s.process.capabilities.bounding.includes('CAP_CHOWN')) },
    { security: { readOnlyRootFilesystem: true }, check: (s) => assert.equal(s.root.readonly, true) },
    { security: { allowPrivilegeEscalation: true }, check: (s) => assert.equal(s.process.noNewPrivileges, false) },
    { security: { privileged: true }, check: (s) => assert.ok(s.linux.seccomp === undefined && s.linux.maskedPaths.length === 0 && s.linux.resources.devices[0].allow === true) },
    { security: { sysctls: [{ name: 'kernel.shm_rmid_forced', value: '1' }] }, check: (s) => assert.deepEqual(s.linux.sysctl, { 'kernel.shm_rmid_forced': '1' }) },
    { security: { runAsUser: 1000, runAsGroup: 2000, supplementalGroups: [3000] }, check: (s) => assert.deepEqual(s.process.user, { uid: 1000, gid: 2000, additionalGids: [2000, 3000] }) },
  ];
  for (const v of variants) {
    const spec = generateSpec(image(), { id: 'x', sandbox: POD, rootfs: ROOTFS, security: v.security }) as Record<string, any>;
    validateRuntimeConfig(spec);
    v.check(spec);
  }
});

test('regression device-hostpath-nodev, mounts-unordered: volumes are bound as containerd binds them (rbind, rprivate, ro/rw), shallowest first', () => {
  const spec = generateSpec(image(), {
    id: 'x',
    sandbox: POD,
    rootfs: ROOTFS,
    mounts: [
      { destination: '/data/cache', source: '/srv/cache', readOnly: false },
      { destination: '/dev/fuse', source: '/dev/fuse', readOnly: false, device: true },
      { destination: '/data', source: '/srv/data', readOnly: true },
    ],
  }) as { mounts: { destination: string; options: string[] }[] };
  assert.deepEqual(spec.mounts.find((m) => m.destination === '/dev/fuse')?.options, ['rbind', 'rprivate', 'rw']);
  assert.deepEqual(spec.mounts.find((m) => m.destination === '/data')?.options, ['rbind', 'rprivate', 'ro']);
  const order = spec.mounts.map((m) => m.destination);
  assert.ok(order.indexOf('/data') < order.indexOf('/data/cache'), order.join(' '));
});

test('regression etc-hosts-read-only: a pod container may write /etc/hosts; resolv.conf and hostname are read-only only with readOnlyRootFilesystem; a volume there replaces the file', () => {
  const files = [
    { destination: '/etc/hosts', source: '/sb/hosts' },
    { destination: '/etc/resolv.conf', source: '/sb/resolv.conf' },
    { destination: '/etc/hostname', source: '/sb/hostname' },
  ];
  const opts = (security: Parameters<typeof generateSpec>[1]['security'], sandbox: SandboxRef = { ...POD, files }, mounts: { destination: string; source: string; readOnly: boolean }[] = []): Record<string, string[]> => {
    const spec = generateSpec(image(), { id: 'x', sandbox, rootfs: ROOTFS, ...(security !== undefined ? { security } : {}), mounts }) as { mounts: { destination: string; source: string; options: string[] }[] };
    return Object.fromEntries(spec.mounts.filter((m) => m.destination.startsWith('/etc/')).map((m) => [`${m.destination}<-${m.source}`, m.options]));
  };
  const rw = opts(undefined);
  assert.ok(rw['/etc/hosts<-/sb/hosts']?.includes('rw'));
  assert.ok(rw['/etc/resolv.conf<-/sb/resolv.conf']?.includes('rw'));
  const ro = opts({ readOnlyRootFilesystem: true });
  assert.ok(ro['/etc/hosts<-/sb/hosts']?.includes('rw'));
  assert.ok(ro['/etc/resolv.conf<-/sb/resolv.conf']?.includes('ro'));
  assert.ok(ro['/etc/hostname<-/sb/hostname']?.includes('ro'));
  // The host's own files (hostNetwork) stay read-only.
  assert.ok(opts(undefined, { kind: 'host', files: [{ destination: '/etc/hosts', source: '/etc/hosts' }] })['/etc/hosts<-/etc/hosts']?.includes('ro'));
  const replaced = opts(undefined, { ...POD, files }, [{ destination: '/etc/hosts', source: '/v/hosts', readOnly: false }]);
  assert.deepEqual(Object.keys(replaced).filter((k) => k.startsWith('/etc/hosts')), ['/etc/hosts</v/hosts'.replace('</', '<-/')]);
});

test('regression cap-add-beats-drop: capabilities as containerd applies them — add ALL, drop ALL, each add, each drop', () => {
  const caps = (security: NonNullable<Parameters<typeof generateSpec>[1]['security']>): string[] =>
    (generateSpec(image(), { id: 'x', sandbox: POD, rootfs: ROOTFS, security }) as { process: { capabilities: { bounding: string[] } } }).process.capabilities.bounding;
  const all = caps({ capAdd: ['ALL'] });
  assert.ok(all.length > DEFAULT_CAPS.length && all.includes('CAP_SYS_ADMIN'));
  assert.deepEqual(caps({ capAdd: ['ALL'], capDrop: ['CAP_CHOWN'] }), all.filter((c) => c !== 'CAP_CHOWN'));
  assert.deepEqual(caps({ capAdd: ['ALL'], capDrop: ['ALL'] }), []);
  assert.ok(!caps({ capAdd: ['CAP_NET_ADMIN'], capDrop: ['CAP_NET_ADMIN'] }).includes('CAP_NET_ADMIN'));
  assert.deepEqual(caps({ capDrop: ['ALL'], capAdd: ['CAP_NET_BIND_SERVICE'] }), ['CAP_NET_BIND_SERVICE']);
});

test('regression hostname-env-missing, nofile-1024, no-cgroup-namespace: HOSTNAME is set, RLIMIT_NOFILE is large, a cgroup namespace on v2', () => {
  const spec = generateSpec(image(), { id: 'x', sandbox: { ...POD, hostname: 'web-0' }, rootfs: ROOTFS }) as {
    process: { env: string[]; rlimits: { type: string; soft: number; hard: number }[] };
    linux: { namespaces: { type: string }[] };
  };
  assert.equal(spec.process.env[0], 'HOSTNAME=web-0');
  const over = generateSpec(image({ Env: ['HOSTNAME=img'] }), { id: 'x', sandbox: { ...POD, hostname: 'web-0' }, rootfs: ROOTFS }) as { process: { env: string[] } };
  assert.deepEqual(over.process.env.filter((e) => e.startsWith('HOSTNAME=')), ['HOSTNAME=img']);
  const nofile = spec.process.rlimits.find((r) => r.type === 'RLIMIT_NOFILE');
  assert.ok(nofile !== undefined && nofile.soft > 1024 && nofile.hard === nofile.soft, JSON.stringify(nofile));
  const v2 = existsSync('/sys/fs/cgroup/cgroup.controllers');
  assert.equal(spec.linux.namespaces.some((n) => n.type === 'cgroup'), v2);
  const priv = generateSpec(image(), { id: 'x', sandbox: POD, rootfs: ROOTFS, security: { privileged: true } }) as { linux: { namespaces: { type: string }[] } };
  assert.ok(!priv.linux.namespaces.some((n) => n.type === 'cgroup'));
});

test('regression empty-command-args: an empty command or args list is none, and an Entrypoint of [""] is no Entrypoint, as containerd', () => {
  assert.deepEqual(processArgs(image(), [], undefined), ['/entry', '--serve']);
  assert.deepEqual(processArgs(image(), undefined, []), ['/entry', '--serve']);
  assert.deepEqual(processArgs(image(), ['/bin/sh'], []), ['/bin/sh']);
  assert.deepEqual(processArgs(image({ Entrypoint: [''] }), undefined, ['x']), ['x']);
  assert.deepEqual(processArgs(image({ Entrypoint: [''], Cmd: ['/bin/app'] }), undefined, undefined), ['/bin/app']);
});

test('regression privileged-incomplete: privileged gets the host devices and a writable /sys and cgroup tree, as containerd', () => {
  const priv = generateSpec(image(), { id: 'x', sandbox: POD, rootfs: ROOTFS, security: { privileged: true } }) as Record<string, any>;
  validateRuntimeConfig(priv);
  const devices = priv.linux.devices as { path: string; type: string; major: number; minor: number }[];
  assert.deepEqual(devices.find((d) => d.path === '/dev/null'), { path: '/dev/null', type: 'c', major: 1, minor: 3, fileMode: 0o666, uid: 0, gid: 0 });
  assert.ok(!devices.some((d) => d.path.startsWith('/dev/pts/')));
  const opts = (spec: Record<string, any>, dest: string): string[] => (spec.mounts as { destination: string; options: string[] }[]).find((m) => m.destination === dest)?.options ?? [];
  assert.ok(opts(priv, '/sys').includes('rw') && opts(priv, '/sys/fs/cgroup').includes('rw'));
  const plain = generateSpec(image(), { id: 'x', sandbox: POD, rootfs: ROOTFS }) as Record<string, any>;
  assert.equal(plain.linux.devices, undefined);
  assert.ok(opts(plain, '/sys').includes('ro') && opts(plain, '/sys/fs/cgroup').includes('ro'));
});

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildBusyboxImage, pushImage } from '../../scripts/fixture-image.js';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { requireE2E, requireTools } from '../helpers/prereq.js';
import { buildSeccompProbe } from '../helpers/seccomp-probe.js';
import { berth, cleanupEnv, makeEnv, waitFor, type BerthEnv } from '../helpers/berth.js';

/**
 * Issue 13, security: image users by name (the rootfs's /etc/passwd and /etc/group),
 * runAsUser/runAsGroup/supplementalGroups, runAsNonRoot, the RuntimeDefault seccomp profile
 * (refuses unshare(CLONE_NEWUSER) to a container without CAP_SYS_ADMIN; Unconfined allows it),
 * readOnlyRootFilesystem, capabilities drop/add, namespaced sysctls, privileged only with the
 * operator's opt-in, and a memory limit's OOM kill reported as OOMKilled. Real runc and conmon.
 */

interface StatusPod {
  key: string;
  status: string;
  lastError: string;
  containers: { name: string; state: string; exitCode: number | null; reason: string | null }[];
}

describe('e2e: securityContext and the default seccomp profile (issue 13)', { timeout: 600_000 }, () => {
  let ok = true;
  let env: BerthEnv;
  let demo: DemoFixture | undefined;
  let dir: string;
  let image = '';
  let nobodyImage = '';

  const status = async (): Promise<StatusPod[]> => {
    const r = await berth(env, ['status', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as { pods: StatusPod[] }).pods;
  };
  /** Applies one pod whose container prints and exits; returns its log once it has exited. */
  const run = async (name: string, spec: { image?: string; command: string; container?: string; pod?: string; extraArgs?: string[] }): Promise<{ code: number; out: string; err: string }> => {
    const file = path.join(dir, `${name}.yaml`);
    await fsp.writeFile(
      file,
      `apiVersion: v1
kind: Pod
metadata: {name: ${name}}
spec:
  hostNetwork: true
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
${spec.pod ?? ''}  containers:
    - name: c
      image: ${spec.image ?? image}
      command: ["sh", "-c", ${JSON.stringify(spec.command)}]
${spec.container ?? ''}`,
    );
    const r = await berth(env, [...(spec.extraArgs ?? []), 'apply', '-f', file]);
    if (r.code !== 0) return { code: r.code, out: r.stdout, err: r.stderr };
    await waitFor(`${name} exited`, async () => ((await status()).find((p) => p.key === `default/${name}`)?.containers[0]?.state === 'exited' ? true : undefined), 60_000);
    return { code: 0, out: (await berth(env, ['logs', `${name}/c`])).stdout, err: r.stderr };
  };

  before(async (t) => {
    ok = requireE2E(t) && requireTools(t, ['gcc']);
    if (!ok) return;
    env = makeEnv('berth-sec-');
    demo = await startDemoFixture();
    image = `${demo.registry.host}/berth/demo:1.0`;
    await pushImage(demo.registry.url, 'berth/demo', 'nobody', await buildBusyboxImage({ user: 'nobody' }));
    nobodyImage = `${demo.registry.host}/berth/demo:nobody`;
    dir = path.join(env.dir, 'manifests');
    await fsp.mkdir(dir);
  });

  after(async () => {
    if (!ok) return;
    await berth(env, ['delete', '-f', dir]).catch(() => undefined);
    await cleanupEnv(env);
    await demo?.stop();
  });

  test('an image User given by name runs as the uid and gid its /etc/passwd names; runAsUser/runAsGroup/supplementalGroups override', async (t) => {
    if (!ok) return t.skip();
    const named = await run('named', { image: nobodyImage, command: 'echo U=$(id -u) G=$(id -g)' });
    assert.equal(named.code, 0, named.err);
    assert.match(named.out, /^U=65534 G=65534$/m);
    const over = await run('over', { command: 'echo U=$(id -u) G=$(id -g) GS=$(id -G)', pod: '  securityContext: {runAsUser: 1000, runAsGroup: 2000, supplementalGroups: [3000]}\n' });
    assert.equal(over.code, 0, over.err);
    assert.match(over.out, /^U=1000 G=2000 GS=2000 3000$/m);
  });

  test('regression emptydir-root-only: a non-root container writes to its emptyDir volumes, on disk and on tmpfs', async (t) => {
    if (!ok) return t.skip();
    const r = await run('scratch', {
      command: 'echo disk > /scratch/f && echo mem > /mem/f && cat /scratch/f /mem/f && id -u',
      pod: '  securityContext: {runAsUser: 1000, runAsGroup: 1000}\n  volumes: [{name: scratch, emptyDir: {}}, {name: mem, emptyDir: {medium: Memory, sizeLimit: 1Mi}}]\n',
      container: '      volumeMounts: [{name: scratch, mountPath: /scratch}, {name: mem, mountPath: /mem}]\n',
    });
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, 'disk\nmem\n1000\n');
  });

  test('regression memory-emptydir-unsized: a Memory emptyDir without sizeLimit is as large as the pod memory limit, not half the RAM', async (t) => {
    if (!ok) return t.skip();
    const r = await run('memsize', {
      command: "df -k /mem | tail -1 | awk '{print $2}'",
      pod: '  volumes: [{name: mem, emptyDir: {medium: Memory}}]\n',
      container: '      resources: {limits: {memory: 24Mi}}\n      volumeMounts: [{name: mem, mountPath: /mem}]\n',
    });
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out.trim(), String(24 * 1024));
  });

  test('regression mounts-unordered, hostname-env-missing, nofile-1024, no-cgroup-namespace: what containerd gives a container', async (t) => {
    if (!ok) return t.skip();
    const r = await run('ctrd', {
      command: "echo H=$HOSTNAME; echo N=$(ulimit -n); echo CG=$(cat /proc/self/cgroup); echo CACHE=$(df -P /data/cache | tail -1 | awk '{print $1}')",
      pod: '  volumes: [{name: cache, emptyDir: {medium: Memory}}, {name: data, emptyDir: {}}]\n',
      container: '      volumeMounts: [{name: cache, mountPath: /data/cache}, {name: data, mountPath: /data}]\n',
    });
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, new RegExp(`^H=${os.hostname()}$`, 'm'));
    assert.match(r.out, /^N=(\d+)$/m);
    // 1048576 where berth may raise its hard limit; this process's hard limit where it may not (a sandbox without CAP_SYS_RESOURCE).
    const hard = Number(/^Max open files\s+\S+\s+(\d+)/m.exec(await fsp.readFile('/proc/self/limits', 'utf8'))?.[1] ?? 65536);
    assert.ok(Number(/^N=(\d+)$/m.exec(r.out)?.[1]) >= Math.min(65536, hard), r.out);
    if (existsSync('/sys/fs/cgroup/cgroup.controllers')) assert.match(r.out, /^CG=0::\/$/m);
    assert.match(r.out, /^CACHE=tmpfs$/m);
  });

  test('regression requests-ignored: the OOM score follows the pod QoS class, as the kubelet sets it', async (t) => {
    if (!ok) return t.skip();
    const g = await run('qosg', { command: 'cat /proc/self/oom_score_adj', container: '      resources: {limits: {cpu: 500m, memory: 64Mi}}\n' });
    assert.equal(g.code, 0, g.err);
    // -997 where berth may lower a score (CAP_SYS_RESOURCE); never below its own where it may not.
    assert.ok(Number(g.out.trim()) <= 0 && Number(g.out.trim()) >= -997, g.out);
    const b = await run('qosb', { command: 'cat /proc/self/oom_score_adj' });
    assert.equal(b.code, 0, b.err);
    assert.equal(b.out.trim(), '1000');
  });

  test('runAsNonRoot refuses an image that runs as root, naming why, and starts nothing', async (t) => {
    if (!ok) return t.skip();
    const r = await run('nonroot', { command: 'echo ran', container: '      securityContext: {runAsNonRoot: true}\n' });
    assert.equal(r.code, 1, r.out);
    assert.match(r.err + r.out, /container has runAsNonRoot and image will run as root/);
    const pod = (await status()).find((p) => p.key === 'default/nonroot');
    assert.equal(pod?.containers[0]?.state, 'waiting');
    assert.match(pod?.lastError ?? '', /runAsNonRoot/);
  });

  test('the default seccomp profile refuses a syscall it lists (vmsplice: EPERM); Unconfined allows it', async (t) => {
    if (!ok) return t.skip();
    // A static probe from the host, mounted by hostPath under the allowed prefix.
    const probeDir = path.join(env.dir, 'probe');
    await fsp.mkdir(probeDir);
    buildSeccompProbe(probeDir);
    const pod = `  volumes: [{name: p, hostPath: {path: ${probeDir}, type: Directory}}]\n`;
    const mount = '      volumeMounts: [{name: p, mountPath: /probe, readOnly: true}]\n';
    const args = ['--allow-host-path', probeDir];
    const confined = await run('sc-default', { command: '/probe/probe vmsplice', pod, container: mount, extraArgs: args });
    assert.equal(confined.code, 0, confined.err);
    assert.match(confined.out, /^vmsplice errno=1$/m, confined.out);
    const open = await run('sc-open', { command: '/probe/probe vmsplice', pod, container: `${mount}      securityContext: {seccompProfile: {type: Unconfined}}\n`, extraArgs: args });
    assert.match(open.out, /^vmsplice ok$/m, open.out);
  });

  test('readOnlyRootFilesystem makes a write to / fail; capabilities drop ALL and add one', async (t) => {
    if (!ok) return t.skip();
    const ro = await run('ro', { command: 'touch /x; echo RC=$?', container: '      securityContext: {readOnlyRootFilesystem: true}\n' });
    assert.match(ro.out, /^RC=1$/m, ro.out);
    assert.match(ro.out, /Read-only file system/);
    const caps = await run('caps', { command: 'grep CapEff /proc/self/status', container: '      securityContext: {capabilities: {drop: [ALL], add: [NET_ADMIN]}}\n' });
    // CAP_NET_ADMIN is bit 12: 0x1000, and nothing else.
    assert.match(caps.out, /^CapEff:\s+0000000000001000$/m, caps.out);
  });

  test('a namespaced sysctl is set in the container; a host one and privileged without opt-in are exit 2', async (t) => {
    if (!ok) return t.skip();
    const sc = await run('sysctl', { command: 'cat /proc/sys/kernel/shm_rmid_forced', pod: '  securityContext: {sysctls: [{name: kernel.shm_rmid_forced, value: "1"}]}\n' });
    assert.equal(sc.code, 0, sc.err);
    assert.match(sc.out, /^1$/m);
    const host = await run('hostsysctl', { command: 'true', pod: '  securityContext: {sysctls: [{name: vm.swappiness, value: "1"}]}\n' });
    assert.equal(host.code, 2);
    assert.match(host.err, /"vm\.swappiness" is not a namespaced sysctl/);
    const priv = await run('priv', { command: 'true', container: '      securityContext: {privileged: true}\n' });
    assert.equal(priv.code, 2);
    assert.match(priv.err, /privileged containers are refused unless the operator allows them \(--allow-privileged\)/);
    const allowed = await run('priv', { command: "grep CapEff /proc/self/status; [ -c /dev/kmsg ] && echo HOSTDEV; grep ' /sys ' /proc/mounts | grep -q ' rw,' && echo SYSRW", container: '      securityContext: {privileged: true}\n', extraArgs: ['--allow-privileged'] });
    assert.equal(allowed.code, 0, allowed.err);
    assert.doesNotMatch(allowed.out, /CapEff:\s+0{16}$/m);
    // Regression privileged-incomplete: the host's devices and a writable /sys.
    assert.match(allowed.out, /^HOSTDEV$/m);
    assert.match(allowed.out, /^SYSRW$/m);
  });

  test('a memory limit is enforced: the container is OOM-killed and reported as OOMKilled', async (t) => {
    if (!ok) return t.skip();
    const r = await run('oom', {
      // dd as PID 1 (exec): the process the OOM killer picks is the container's main one.
      command: 'exec dd if=/dev/zero of=/dev/null bs=128M count=1',
      container: '      resources: {limits: {memory: 16Mi}}\n',
    });
    assert.equal(r.code, 0, r.err);
    const c = (await status()).find((p) => p.key === 'default/oom')?.containers[0];
    assert.equal(c?.reason, 'OOMKilled', `${JSON.stringify(c)} ${r.out}`);
    assert.equal(c?.exitCode, 137);
    // regression: conmon-oom-file-in-cwd — conmon's `oom` marker lands in the bundle, not in berth's working directory.
    await assert.rejects(fsp.stat(path.join(process.cwd(), 'oom')));
  });
});

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, realpathSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Runtime, type SandboxSpec } from '../../src/runtime/index.js';
import { netnsName } from '../../src/runtime/network/index.js';
import { createLogger } from '../../src/lib/log.js';
import { requireE2E, requireTools } from '../helpers/prereq.js';
import { cleanupEnv } from '../helpers/berth.js';
import { removeTestBridge } from '../helpers/cni.js';

/**
 * Contract of pod sandboxes on the real implementation (critest-style): creating one twice
 * replaces it (one netns, one IP), removing one that is gone — or never was — succeeds, an
 * unknown pod has no sandbox and no IP, and a removal leaves no netns, veth or IP allocation.
 * Each test makes and removes its own sandbox; the bridge is this suite's own and removed after.
 */
describe('contract: pod sandboxes (netns + CNI + catatonit)', { timeout: 120_000 }, () => {
  let base: string;
  let rt: Runtime;
  let ok = true;
  const bridge = `bc${randomBytes(3).toString('hex')}`;
  const subnet = `10.${200 + ((randomBytes(1)[0] ?? 0) % 50)}.${randomBytes(1)[0] ?? 0}.0/24`;
  let forwardBefore = '';

  const spec = (name: string, hash = 'h1'): SandboxSpec => ({
    podKey: `default/${name}`,
    namespace: 'default',
    name,
    hash: hash.padEnd(16, '0'),
    hostname: name,
    dns: { policy: 'None', nameservers: ['192.0.2.53'] },
    ports: [],
  });
  /** This suite's netns only (other berth instances on the host have their own). */
  const mine = (pod: string): string => netnsName(realpathSync(path.join(base, 'root')), `default/${pod}`);
  const netns = (): string[] =>
    execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
      .split('\n')
      .map((l) => l.split(' ')[0] ?? '')
      .filter((n) => ['twice', 'gone'].some((p) => n === mine(p)));
  const veths = (): string => execFileSync('ip', ['-o', 'link', 'show', 'master', bridge], { encoding: 'utf8' }).trim();

  before(async (t) => {
    ok = requireE2E(t) && requireTools(t, ['ip', 'catatonit']);
    if (!ok) return;
    forwardBefore = readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim();
    base = mkdtempSync(path.join(os.tmpdir(), 'berth-sandbox-'));
    rt = await Runtime.open({ root: path.join(base, 'root'), state: path.join(base, 'state'), log: createLogger('silent'), network: { bridge, subnet } });
  });

  after(async () => {
    if (!ok) return;
    await rt.close();
    await cleanupEnv({ root: path.join(base, 'root'), state: path.join(base, 'state'), dir: base });
    await removeTestBridge(bridge);
    if (forwardBefore !== '') execFileSync('sysctl', ['-q', '-w', `net.ipv4.ip_forward=${forwardBefore}`]);
  });

  test('regression sandbox-rollback-forgets-failed-teardown: a failed create whose rollback fails keeps its row; the next removal frees everything', async (t) => {
    if (!ok) return t.skip();
    // Faults injected into the real task driver: the infra container does not start, and the
    // rollback's first `runc delete` fails (a wedged runc). CNI, netns and runc are real.
    const tasks = (rt as unknown as { sandboxes: { tasks: { start: (id: string) => Promise<void>; delete: (id: string) => Promise<void> } } }).sandboxes.tasks;
    const start = tasks.start;
    const del = tasks.delete;
    let failDelete = true;
    tasks.start = async () => {
      throw new Error('injected: start failed');
    };
    tasks.delete = async (id: string) => {
      if (failDelete) {
        failDelete = false;
        throw new Error('injected: delete failed');
      }
      return del.call(tasks, id);
    };
    try {
      await assert.rejects(rt.createSandbox(spec('rollback'), false), /injected: start failed/);
    } finally {
      tasks.start = start;
      tasks.delete = del;
    }
    // The network was released by the rollback's DEL all the same; the infra container is still there.
    const ipam = (): string[] => execFileSync('ls', [path.join(base, 'root', 'cni', 'networks', 'berth')], { encoding: 'utf8' }).split('\n').filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));
    assert.deepEqual(ipam(), []);
    const runcIds = (): string[] => ((JSON.parse(execFileSync('runc', ['--root', path.join(base, 'state', 'runc'), 'list', '--format', 'json'], { encoding: 'utf8' }) || '[]') as { id: string }[] | null) ?? []).map((c) => c.id).filter((id) => id.startsWith('default.rollback.'));
    assert.equal(runcIds().length, 1, 'the infra container runc could not delete');
    // The row says so; removing the pod's sandbox (the next create, delete or repair) finishes the job.
    await rt.removeSandbox('default/rollback');
    assert.deepEqual(runcIds(), []);
    assert.ok(!execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).includes(mine('rollback')));
  });

  test('regression pod-subnet-changed-under-running-pods: another --pod-subnet for a bridge with pods is refused, naming the one in use', async (t) => {
    if (!ok) return t.skip();
    t.after(() => rt.removeSandbox('default/first'));
    await rt.createSandbox(spec('first'), false);
    const other = `10.${200 + ((randomBytes(1)[0] ?? 0) % 50)}.${randomBytes(1)[0] ?? 0}.0/24`;
    assert.notEqual(other, subnet);
    const rt2 = await Runtime.open({ root: path.join(base, 'root'), state: path.join(base, 'state'), log: createLogger('silent'), network: { bridge, subnet: other } });
    try {
      await assert.rejects(rt2.createSandbox(spec('second'), false), (e: Error) => e.message.includes(`bridge ${bridge} carries pods in ${subnet}`) && e.message.includes(`--pod-subnet ${subnet}`));
    } finally {
      await rt2.close();
    }
    // The first pod's masquerade jump is still the one for its subnet.
    assert.ok(execFileSync('iptables-save', ['-t', 'nat'], { encoding: 'utf8' }).includes(`-A POSTROUTING -s ${subnet}`));
  });

  test('regression hostport-check-race: two pods mapping one hostPort, created at once: one gets it, the other ERR_CONFLICT', async (t) => {
    if (!ok) return t.skip();
    t.after(async () => {
      await rt.removeSandbox('default/racea');
      await rt.removeSandbox('default/raceb');
    });
    const port = 20000 + ((randomBytes(2).readUInt16BE(0) ?? 0) % 20000);
    const withPort = (name: string): SandboxSpec => ({ ...spec(name), ports: [{ hostPort: port, containerPort: 80, protocol: 'tcp' }] });
    const results = await Promise.allSettled([rt.createSandbox(withPort('racea'), false), rt.createSandbox(withPort('raceb'), false)]);
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1, JSON.stringify(results.map((r) => r.status)));
    const refused = results.find((r) => r.status === 'rejected');
    assert.match(String((refused as PromiseRejectedResult | undefined)?.reason), new RegExp(`${port}`));
  });

  test('an unknown pod has no sandbox and no IP; removing it is success', async (t) => {
    if (!ok) return t.skip();
    assert.equal(rt.podIP('default/never'), null);
    await rt.removeSandbox('default/never');
    await rt.removeSandbox('default/never');
  });

  test('create twice: the second replaces the first (one netns, one IP allocation, one infra container)', async (t) => {
    if (!ok) return t.skip();
    t.after(() => rt.removeSandbox('default/twice'));
    const a = await rt.createSandbox(spec('twice', 'aaaa'), false);
    const b = await rt.createSandbox(spec('twice', 'bbbb'), false);
    assert.ok(a.ip !== null && b.ip !== null);
    assert.equal(rt.podIP('default/twice'), b.ip);
    assert.equal(netns().length, 1, netns().join(', '));
    assert.equal(veths().split('\n').filter((l) => l !== '').length, 1, veths());
    const allocations = execFileSync('ls', [path.join(base, 'root', 'cni', 'networks', 'berth')], { encoding: 'utf8' }).split('\n').filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));
    assert.deepEqual(allocations, [b.ip]);
    const infra = execFileSync('runc', ['--root', path.join(base, 'state', 'runc'), 'list', '-q'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes('._sandbox.'));
    assert.equal(infra.length, 1, infra.join(', '));
  });

  test('removing a sandbox whose infra container and netns are already gone succeeds and leaves nothing', async (t) => {
    if (!ok) return t.skip();
    await rt.createSandbox(spec('gone'), false);
    const runcRoot = path.join(base, 'state', 'runc');
    const id = execFileSync('runc', ['--root', runcRoot, 'list', '-q'], { encoding: 'utf8' }).split('\n').find((l) => l.startsWith('default.gone._sandbox.')) ?? '';
    execFileSync('runc', ['--root', runcRoot, 'delete', '--force', id]);
    execFileSync('ip', ['netns', 'delete', mine('gone')]);
    await rt.removeSandbox('default/gone');
    await rt.removeSandbox('default/gone');
    assert.equal(rt.podIP('default/gone'), null);
    assert.deepEqual(netns(), []);
    assert.equal(veths(), '');
    const rules = execFileSync('iptables-save', [], { encoding: 'utf8' });
    assert.ok(!rules.includes(`id: \\"${id}\\"`), 'no rule tagged with the removed sandbox');
  });
});

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fsp, readFileSync, realpathSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { once } from 'node:events';
import { startDemoFixture, type DemoFixture } from '../helpers/demo.js';
import { requireE2E, requireTools } from '../helpers/prereq.js';
import { berth, cleanupEnv, CLI, httpGet, makeEnv, processesWith, waitFor, type BerthEnv, type RunResult } from '../helpers/berth.js';
import { freePort } from '../helpers/registry.js';
import { removeTestBridge } from '../helpers/cni.js';
import { bridgeChains, CniNetwork, netnsName, removeBridgeRules, sweepTaggedRules } from '../../src/runtime/network/index.js';

/**
 * Issue 13, pod sandboxes: catatonit infra containers holding the pod's namespaces, CNI
 * networking through the real plugins in /usr/lib/cni (bridge + host-local, portmap,
 * loopback) with berth's own masquerade and forward rules per bridge, hostPort on 127.0.0.1,
 * pod-to-pod by IP, egress masqueraded, and a delete that leaves no netns, veth, IP allocation
 * or iptables rule. Each run uses its own bridge and subnet and
 * removes them (and the CNI chains, when no other pod uses them) in its teardown.
 */

interface StatusPod {
  key: string;
  status: string;
  ip: string | null;
  hostNetwork: boolean;
  containers: { name: string; state: string; pid: number | null }[];
}

const sh = (cmd: string, args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8' });

/**
 * Another network of a test's own: a netns behind a veth, the host's end `hostAddr`, the netns's
 * `outAddr` (a /30 in `net`, a benchmarking range). `remove` deletes both; nothing made is success.
 */
function outsideNetwork(prefix: string, net: string): { ns: string; hostAddr: string; outAddr: string; remove: () => void } {
  const tag = randomBytes(3).toString('hex');
  const ns = `b${prefix}${tag}`;
  const hostEnd = `v${prefix}${tag}`;
  const inner = `w${prefix}${tag}`;
  const octet = 1 + ((randomBytes(1)[0] ?? 0) % 250);
  const hostAddr = `${net}.${octet}.1`;
  const outAddr = `${net}.${octet}.2`;
  const remove = (): void => {
    for (const args of [['netns', 'delete', ns], ['link', 'del', hostEnd]]) {
      try {
        sh('ip', args);
      } catch {
        // not made, or went with the netns
      }
    }
  };
  try {
    sh('ip', ['netns', 'add', ns]);
    sh('ip', ['link', 'add', hostEnd, 'type', 'veth', 'peer', 'name', inner, 'netns', ns]);
    sh('ip', ['addr', 'add', `${hostAddr}/30`, 'dev', hostEnd]);
    sh('ip', ['link', 'set', hostEnd, 'up']);
    sh('ip', ['-n', ns, 'addr', 'add', `${outAddr}/30`, 'dev', inner]);
    sh('ip', ['-n', ns, 'link', 'set', inner, 'up']);
  } catch (err) {
    remove();
    throw err;
  }
  return { ns, hostAddr, outAddr, remove };
}

describe('e2e: pod sandboxes with CNI networking (issue 13)', { timeout: 600_000 }, () => {
  let ok = true;
  let env: BerthEnv;
  let demo: DemoFixture | undefined;
  const bridge = `bt${randomBytes(3).toString('hex')}`;
  const subnet = `10.${200 + (randomBytes(1)[0] ?? 0) % 50}.${randomBytes(1)[0] ?? 0}.0/24`;
  let forwardBefore = '';
  let dir: string;
  let hostPort: number;
  const B = (args: string[], opts: { timeoutMs?: number } = {}): Promise<RunResult> => berth(env, ['--bridge', bridge, '--pod-subnet', subnet, ...args], opts);

  const status = async (): Promise<StatusPod[]> => {
    const r = await B(['status', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as { pods: StatusPod[] }).pods;
  };
  const logs = async (target: string): Promise<string> => (await B(['logs', target])).stdout;

  before(async (t) => {
    ok = requireE2E(t) && requireTools(t, ['ip', 'iptables-save', 'catatonit']);
    if (!ok) return;
    for (const plugin of ['bridge', 'host-local', 'portmap', 'loopback']) {
      if (!existsSync(`/usr/lib/cni/${plugin}`)) throw new Error(`CNI plugin /usr/lib/cni/${plugin} is missing (Debian package containernetworking-plugins, scripts/host-deps.sh)`);
    }
    forwardBefore = readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim();
    env = makeEnv('berth-net-');
    demo = await startDemoFixture();
    dir = path.join(env.dir, 'manifests');
    await fsp.mkdir(dir);
    hostPort = await freePort();
  });

  after(async () => {
    if (!ok) return;
    await B(['delete', '-f', dir], { timeoutMs: 120_000 }).catch(() => undefined);
    await cleanupEnv(env);
    await demo?.stop();
    // What CNI made for this run and no pod uses any more: the bridge, its rules, shared chains, ip_forward.
    await removeTestBridge(bridge);
    if (forwardBefore !== '') execFileSync('sysctl', ['-q', '-w', `net.ipv4.ip_forward=${forwardBefore}`]);
  });

  const webPod = (name: string, extra = ''): string => `apiVersion: v1
kind: Pod
metadata:
  name: ${name}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: web
      image: ${demo?.registry.host ?? ''}/berth/demo:1.0
      command: ["httpd", "-f", "-p", "8080", "-h", "/var/www"]
${extra}`;

  test('two containers share localhost and the hostname; hostPort serves on 127.0.0.1; status shows the pod IP', async (t) => {
    if (!ok) return t.skip();
    const pair = `${webPod('pair', `      ports:
        - containerPort: 8080
          hostPort: ${hostPort}
    - name: client
      image: ${demo?.registry.host ?? ''}/berth/demo:1.0
      command: ["sh", "-c", "hostname; cat /etc/hosts; while :; do wget -qO- http://localhost:8080/ >/dev/null && echo LOCAL-OK; sleep 1; done"]
`)}`;
    await fsp.writeFile(path.join(dir, 'pair.yaml'), pair);
    const diff = await B(['diff', '-f', dir]);
    assert.match(diff.stdout, new RegExp(`\\+ sandbox default/pair: create \\(hostPort ${hostPort}→8080/tcp\\)`), diff.stdout);
    const r = await B(['apply', '-f', dir]);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    const pod = await waitFor('pair running with an IP', async () => {
      const p = (await status()).find((x) => x.key === 'default/pair');
      return p?.status === 'Running' && p.ip !== null ? p : undefined;
    });
    assert.equal(pod.hostNetwork, false);
    assert.ok(ipInSubnet(pod.ip ?? '', subnet), `${pod.ip} in ${subnet}`);
    // localhost inside the pod is shared by its containers.
    const out = await waitFor('client reaches web over localhost', async () => {
      const l = await logs('pair/client');
      return l.includes('LOCAL-OK') ? l : undefined;
    });
    // The hostname is the pod's; /etc/hosts names the pod IP.
    assert.match(out, /^pair$/m);
    assert.match(out, new RegExp(`^${pod.ip?.replaceAll('.', '\\.') ?? ''}\\tpair$`, 'm'));
    // hostPort through portmap on 127.0.0.1.
    const res = await waitFor('hostPort answers', async () => httpGet(`http://127.0.0.1:${hostPort}/`).catch(() => undefined));
    assert.equal(res.status, 200);
    // The host reaches the pod by its IP on the bridge.
    assert.equal((await httpGet(`http://${pod.ip ?? ''}:8080/`)).status, 200);
    // Two app containers and one infra container (catatonit), which is not listed as a container.
    const runc = JSON.parse(sh('runc', ['--root', path.join(env.state, 'runc'), 'list', '--format', 'json']) || '[]') as { id: string; status: string }[];
    assert.deepEqual(runc.filter((c) => c.id.startsWith('default.pair.')).map((c) => c.id.split('.')[2]).sort(), ['_sandbox', 'client', 'web']);
    assert.deepEqual(pod.containers.map((c) => c.name), ['web', 'client']);
  });

  test('rules removed from outside (a firewall reload) are written again at the next resync of berth up: hostPort serves again', async (t) => {
    if (!ok) return t.skip();
    const infra = (JSON.parse(sh('runc', ['--root', path.join(env.state, 'runc'), 'list', '--format', 'json']) || '[]') as { id: string }[]).find((c) => c.id.startsWith('default.pair._sandbox'));
    assert.ok(infra !== undefined, 'the pair pod of the test before runs');
    const restored = async (): Promise<{ key: string; reason: string }[]> => {
      const r = await B(['events', '-o', 'json']);
      return (JSON.parse(r.stdout) as { key: string; reason: string }[]).filter((e) => e.reason === 'NetworkRulesRestored');
    };
    const up = spawn(process.execPath, [CLI, '--root', env.root, '--state', env.state, '--bridge', bridge, '--pod-subnet', subnet, 'up', dir, '--resync', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    up.stdout?.on('data', (b: Buffer) => (out += b.toString()));
    up.stderr?.on('data', (b: Buffer) => (out += b.toString()));
    try {
      await waitFor('daemon socket', async () => (existsSync(path.join(env.state, 'berth.sock')) ? true : undefined));
      // Everything in place: resyncs find nothing to restore.
      await new Promise((r) => setTimeout(r, 2500));
      assert.deepEqual(await restored(), [], out);
      // A firewall reload drops berth's bridge chains and the pod's portmap rules.
      await removeBridgeRules(bridge);
      assert.ok((await sweepTaggedRules(infra.id)) > 0, 'the pod had host-port rules to remove');
      assert.ok(!sh('iptables-save', ['-t', 'nat']).includes(bridgeChains(bridge).nat));
      await assert.rejects(httpGet(`http://127.0.0.1:${hostPort}/`), 'the hostPort is gone with its rules');
      const res = await waitFor('hostPort answers again', async () => httpGet(`http://127.0.0.1:${hostPort}/`).catch(() => undefined), 15_000);
      assert.equal(res.status, 200);
      assert.ok(sh('iptables-save', ['-t', 'nat']).includes(bridgeChains(bridge).nat), 'the masquerade chain is back');
      const evs = await waitFor('NetworkRulesRestored events', async () => {
        const e = await restored();
        return e.length >= 2 ? e : undefined;
      });
      assert.deepEqual(evs.map((e) => e.key).sort(), [`network/${bridge}`, 'pod/default/pair'], out);
    } finally {
      up.kill('SIGTERM');
      await once(up, 'exit');
    }
  });

  test('a pod reaches another pod by its IP', async (t) => {
    if (!ok) return t.skip();
    const target = (await status()).find((x) => x.key === 'default/pair')?.ip;
    assert.ok(target !== null && target !== undefined);
    await fsp.writeFile(
      path.join(dir, 'peer.yaml'),
      `apiVersion: v1
kind: Pod
metadata:
  name: peer
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: probe
      image: ${demo?.registry.host ?? ''}/berth/demo:1.0
      env: [{name: TARGET, value: "${target}"}]
      command: ["sh", "-c", "while :; do wget -qO- http://$TARGET:8080/ >/dev/null && echo PEER-OK; sleep 1; done"]
`,
    );
    const r = await B(['apply', '-f', dir]);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    await waitFor('peer reaches pair by IP', async () => ((await logs('peer/probe')).includes('PEER-OK') ? true : undefined));
    const ips = (await status()).map((p) => p.ip);
    assert.equal(new Set(ips).size, ips.length, `distinct pod IPs: ${ips.join(', ')}`);
  });

  test('traffic leaving the bridge is masqueraded by the bridge\'s own rules, one set per bridge, none per pod', async (t) => {
    if (!ok) return t.skip();
    // An "outside" network of this test's own: a netns behind a veth, with no route back to the pod subnet,
    // so only a masqueraded connection (source = the host's end of the veth) can be answered.
    const port = 9000 + ((randomBytes(1)[0] ?? 0) % 500);
    const out = outsideNetwork('o', '198.18');
    const { hostAddr, outAddr } = out;
    const outNs = out.ns;
    let server: ReturnType<typeof spawn> | undefined;
    try {
      server = spawn('ip', ['netns', 'exec', outNs, process.execPath, '-e', `require('http').createServer((q, r) => r.end('SEEN=' + q.socket.remoteAddress + '\\n')).listen(${port}, '${outAddr}')`], { stdio: 'ignore' });
      const podIp = (await status()).find((x) => x.key === 'default/peer')?.ip ?? '';
      const file = path.join(env.dir, 'egress.yaml');
      await fsp.writeFile(file, webPod('egress').replace('command: ["httpd", "-f", "-p", "8080", "-h", "/var/www"]', `command: ["sh", "-c", "while :; do wget -qO- http://${outAddr}:${port}/; sleep 1; done"]`));
      const r = await B(['apply', '-f', file]);
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
      const seen = await waitFor('egress reaches the outside netns', async () => /SEEN=(\S+)/.exec(await logs('egress/web'))?.[1]);
      assert.equal(seen, hostAddr, `the outside saw ${seen}, not the host's address (pod addresses ${podIp}, …): not masqueraded`);
      // One jump per bridge into berth's chains, whatever the number of pods; no rule names a pod address.
      const saved = sh('iptables-save', []);
      const chains = bridgeChains(bridge);
      assert.equal(saved.split('\n').filter((l) => l.startsWith('-A POSTROUTING') && l.endsWith(`-j ${chains.nat}`)).length, 1, saved);
      assert.equal(saved.split('\n').filter((l) => l.startsWith('-A FORWARD') && l.endsWith(`-j ${chains.filter}`)).length, 1, saved);
      for (const p of await status()) if (p.ip !== null) assert.ok(!saved.includes(`${p.ip}/32`), `a rule names ${p.ip}`);
      const d = await B(['delete', '-f', file]);
      assert.equal(d.code, 0, d.stderr);
      // Other pods remain on the bridge: its rules stay.
      assert.ok(sh('iptables-save', []).includes(`-j ${chains.nat}`));
    } finally {
      server?.kill('SIGKILL');
      out.remove();
    }
  });

  test('regression hostport-forward-drop: a hostPort answers a client on another network while FORWARD\'s policy is DROP', async (t) => {
    if (!ok) return t.skip();
    // The client is a netns of this test's own behind a veth (another machine, as far as the host can tell):
    // its connection to the host's address is DNATed by portmap and crosses FORWARD, where docker or ufw
    // leave a DROP policy. Only berth's forward chain can let it through.
    const port = await freePort();
    const policyBefore = /^-P FORWARD (\S+)/m.exec(sh('iptables', ['-S', 'FORWARD']))?.[1] ?? 'ACCEPT';
    const file = path.join(env.dir, 'fwd.yaml');
    const out = outsideNetwork('f', '198.19');
    const { hostAddr } = out;
    const outNs = out.ns;
    try {
      await fsp.writeFile(file, webPod('fwd', `      ports: [{containerPort: 8080, hostPort: ${port}}]\n`));
      const r = await B(['apply', '-f', file]);
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
      await waitFor('hostPort answers on the host', async () => httpGet(`http://127.0.0.1:${port}/`).catch(() => undefined));
      sh('iptables', ['-P', 'FORWARD', 'DROP']);
      const fetch = `require('http').get('http://${hostAddr}:${port}/', { timeout: 3000 }, (r) => { console.log('STATUS=' + r.statusCode); r.resume(); }).on('error', (e) => console.log('ERR=' + e.message)).on('timeout', function () { console.log('ERR=timeout'); this.destroy(); })`;
      const got = await waitFor('the outside client is answered', async () => {
        const out = execFileSync('ip', ['netns', 'exec', outNs, process.execPath, '-e', fetch], { encoding: 'utf8', timeout: 10_000 });
        return out.includes('STATUS=200') ? out : undefined;
      }, 15_000);
      assert.match(got, /STATUS=200/);
    } finally {
      sh('iptables', ['-P', 'FORWARD', policyBefore]);
      await B(['delete', '-f', file]).catch(() => undefined);
      out.remove();
    }
  });

  test('regression netns-name-collides-across-roots: a second berth root runs a pod of the same name beside the first', async (t) => {
    if (!ok) return t.skip();
    const env2 = makeEnv('berth-net2-');
    const bridge2 = `bu${randomBytes(3).toString('hex')}`;
    const subnet2 = `10.${150 + (randomBytes(1)[0] ?? 0) % 40}.${randomBytes(1)[0] ?? 0}.0/24`;
    const B2 = (args: string[]): Promise<RunResult> => berth(env2, ['--bridge', bridge2, '--pod-subnet', subnet2, ...args], { timeoutMs: 120_000 });
    const dir2 = path.join(env2.dir, 'manifests');
    try {
      await fsp.mkdir(dir2);
      // The same pod key as the first root's `pair` (default/pair), no hostPort.
      await fsp.writeFile(path.join(dir2, 'pair.yaml'), webPod('pair'));
      const r = await B2(['apply', '-f', dir2]);
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
      const other = await waitFor('the second root\'s pair running with an IP', async () => {
        const st = await B2(['status', '-o', 'json']);
        const p = (JSON.parse(st.stdout) as { pods: StatusPod[] }).pods.find((x) => x.key === 'default/pair');
        return p?.status === 'Running' && p.ip !== null ? p : undefined;
      });
      assert.ok(ipInSubnet(other.ip ?? '', subnet2), `${other.ip} in ${subnet2}`);
      assert.equal((await httpGet(`http://${other.ip ?? ''}:8080/`)).status, 200);
      // The first root's pod is untouched and still serves on its own address.
      const first = (await status()).find((x) => x.key === 'default/pair');
      assert.equal(first?.status, 'Running');
      assert.notEqual(first?.ip, other.ip);
      assert.equal((await httpGet(`http://${first?.ip ?? ''}:8080/`)).status, 200);
    } finally {
      await B2(['delete', '-f', dir2]).catch(() => undefined);
      await cleanupEnv(env2);
      try {
        execFileSync('ip', ['link', 'del', bridge2], { stdio: 'ignore' });
      } catch {
        // never created
      }
    }
  });

  test('a hostPort already bound on the host is refused before anything starts, with ERR_CONFLICT and no leftovers', async (t) => {
    if (!ok) return t.skip();
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    const taken = (srv.address() as net.AddressInfo).port;
    try {
      const file = path.join(env.dir, 'clash.yaml');
      await fsp.writeFile(file, webPod('clash', `      ports: [{containerPort: 8080, hostPort: ${taken}}]\n`));
      const r = await B(['apply', '-f', file]);
      assert.equal(r.code, 1, r.stdout);
      assert.match(r.stderr + r.stdout, new RegExp(`ERR_CONFLICT|hostPort ${taken}/tcp is already bound on the host`));
      const pod = (await status()).find((x) => x.key === 'default/clash');
      assert.equal(pod?.ip ?? null, null);
      assert.ok(!netnsList().includes(netnsOf(env.root, 'default/clash')), 'no netns for the refused pod');
      assert.equal(pod?.containers.filter((c) => c.state === 'running').length ?? 0, 0);
      const d = await B(['delete', '-f', file]);
      assert.equal(d.code, 0, d.stderr);
    } finally {
      srv.close();
    }
  });

  test('regression resync-cuts-failure-backoff: a pod that keeps failing is retried on its back-off (1, 2, 4 s…), not at every resync', async (t) => {
    if (!ok) return t.skip();
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    const taken = (srv.address() as net.AddressInfo).port;
    const watched = path.join(env.dir, 'backoff');
    await fsp.mkdir(watched, { recursive: true });
    await fsp.writeFile(path.join(watched, 'clash.yaml'), webPod('clash2', `      ports: [{containerPort: 8080, hostPort: ${taken}}]\n`));
    const child = spawn(process.execPath, [CLI, '--root', env.root, '--state', env.state, '--bridge', bridge, '--pod-subnet', subnet, 'up', watched, '--resync', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    try {
      await waitFor('first failure', async () => (out.includes('already bound on the host') ? true : undefined), 30_000);
      await new Promise((r) => setTimeout(r, 12_000));
      const attempts = (await B(['events', '--for', 'clash2', '-o', 'json'])).stdout;
      const failures = out.split('\n').filter((l) => l.includes(`hostPort ${taken}/tcp is already bound`) && /✗|failed|error/i.test(l)).length;
      // Back-off 1, 2, 4, 8 s: about five attempts in 12 s; every resync would be twelve or more.
      assert.ok(failures >= 2 && failures <= 7, `${failures} failures in 12 s:\n${out.slice(-3000)}\n${attempts.slice(-500)}`);
    } finally {
      child.kill('SIGTERM');
      await once(child, 'exit');
      srv.close();
      await B(['delete', '--force', '-f', path.join(watched, 'clash.yaml')]);
    }
  });

  test('regression shared-pid-leftovers: with shareProcessNamespace, what a container started ends with it when its exit is recorded', async (t) => {
    if (!ok) return t.skip();
    const file = path.join(env.dir, 'sharedpid.yaml');
    await fsp.writeFile(file, `apiVersion: v1
kind: Pod
metadata: {name: sharedpid}
spec:
  shareProcessNamespace: true
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
    - name: web
      image: ${demo?.registry.host ?? ''}/berth/demo:1.0
      command: ["sh", "-c", "sleep 4244 & sleep 1; exit 3"]
`);
    const leftovers = async (): Promise<number> => (await processesWith('sleep\x004244\x00')).length;
    try {
      const a = await B(['apply', '-f', file]);
      assert.equal(a.code, 0, `${a.stdout}\n${a.stderr}`);
      await waitFor('exit recorded', async () => {
        await B(['apply', '-f', file]);
        return (await status()).find((p) => p.key === 'default/sharedpid')?.containers[0]?.state === 'exited' ? true : undefined;
      }, 30_000, 500);
      await waitFor('its sleep is gone', async () => ((await leftovers()) === 0 ? true : undefined), 5000);
    } finally {
      await B(['delete', '-f', file]);
    }
  });

  test('the sandbox is rebuilt when its infra container dies or its netns goes (reboot), and the pod serves again', async (t) => {
    if (!ok) return t.skip();
    const runcRoot = path.join(env.state, 'runc');
    const infra = (JSON.parse(sh('runc', ['--root', runcRoot, 'list', '--format', 'json'])) as { id: string }[]).find((c) => c.id.startsWith('default.pair._sandbox.'));
    assert.ok(infra !== undefined);
    execFileSync('runc', ['--root', runcRoot, 'kill', infra.id, 'KILL']);
    const r = await B(['apply', '-f', dir]);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout + r.stderr, /sandbox default\/pair: recreate \(sandbox gone/);
    await waitFor('pair serves again on its hostPort', async () => ((await httpGet(`http://127.0.0.1:${hostPort}/`).catch(() => undefined))?.status === 200 ? true : undefined));
    // Reboot: the pinned netns disappears with /run.
    execFileSync('ip', ['netns', 'delete', netnsOf(env.root, 'default/pair')]);
    const again = await B(['apply', '-f', dir]);
    assert.equal(again.code, 0, `${again.stdout}\n${again.stderr}`);
    await waitFor('pair serves after its netns was rebuilt', async () => ((await httpGet(`http://127.0.0.1:${hostPort}/`).catch(() => undefined))?.status === 200 ? true : undefined));
    // host-local keeps exactly one allocation per live pod: the rebuilds released theirs.
    assert.equal(allocations(env).length, 2, allocations(env).join(', '));
  });

  test('deleting the pods leaves no netns, veth, IP allocation or iptables rule', async (t) => {
    if (!ok) return t.skip();
    const before = await status();
    const ids = before.map((p) => p.ip).filter((x): x is string => x !== null);
    assert.equal(ids.length, 2);
    const r = await B(['delete', '-f', dir], { timeoutMs: 120_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(netnsList().filter((n) => n === netnsOf(env.root, 'default/pair') || n === netnsOf(env.root, 'default/peer')), []);
    assert.equal(sh('ip', ['-o', 'link', 'show', 'master', bridge]).trim(), '', 'no veth left on the bridge');
    assert.deepEqual(allocations(env), []);
    const rules = sh('iptables-save', []);
    for (const ip of ids) assert.ok(!rules.includes(`${ip}/`) && !rules.includes(`${ip} `) && !rules.includes(`${ip}:`), `iptables rule naming ${ip} left:\n${rules.split('\n').filter((l) => l.includes(ip)).join('\n')}`);
    assert.ok(!/default\.(pair|peer)\._sandbox/.test(rules), 'no rule carries a sandbox id');
    // The last pod took the bridge's own rules with it.
    const chains = bridgeChains(bridge);
    assert.ok(!rules.includes(chains.nat) && !rules.includes(chains.filter), `bridge rules left:\n${rules.split('\n').filter((l) => l.includes('BERTH-')).join('\n')}`);
    assert.deepEqual(await fsp.readdir(path.join(env.root, 'sandboxes')), []);
  });

  test('regression repair-rewrites-released-rules: a rule check that saw a pod which is gone by the write leaves the bridge without rules', async (t) => {
    if (!ok) return t.skip();
    // berth up's resync read a ready sandbox, then its pod was deleted and took the bridge's rules
    // with it before the check wrote them back: the write must not bring them back for no pod.
    const cni = new CniNetwork({ bridge, subnet, pluginDir: '/usr/lib/cni', dataDir: path.join(env.root, 'cni', 'networks') });
    const r = await cni.checkRules([{ id: 'default.gone._sandbox-0', ports: [] }], () => false);
    assert.deepEqual(r, { bridge: false, portsMissing: [] });
    const rules = sh('iptables-save', []);
    const chains = bridgeChains(bridge);
    assert.ok(!rules.includes(chains.nat) && !rules.includes(chains.filter), 'no bridge rule written for a pod that is gone');
  });
});

function ipInSubnet(ip: string, cidr: string): boolean {
  const [base = '', bits = '0'] = cidr.split('/');
  const n = (a: string): number => a.split('.').reduce((x, o) => x * 256 + Number(o), 0);
  const mask = 2 ** 32 - 2 ** (32 - Number(bits));
  return (n(ip) & mask) >>> 0 === (n(base) & mask) >>> 0;
}

function netnsList(): string[] {
  return sh('ip', ['netns', 'list']).split('\n').map((l) => l.split(' ')[0] ?? '').filter((x) => x !== '');
}

/** The netns berth pins for a pod of the root `root` (runtime/network's own naming). */
function netnsOf(root: string, podKey: string): string {
  return netnsName(realpathSync(root), podKey);
}

/** host-local's allocation files (one per IP) under berth's root. */
function allocations(env: BerthEnv): string[] {
  const d = path.join(env.root, 'cni', 'networks', 'berth');
  try {
    return execFileSync('ls', [d], { encoding: 'utf8' }).split('\n').filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));
  } catch {
    return [];
  }
}


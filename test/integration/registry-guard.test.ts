import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { classifyAddress, describeAddress, type AddressClass } from '../../src/lib/netaddr.js';
import { hopHeaders, registryScope, vetHop } from '../../src/runtime/registry/guard.js';
import { RegistryClient, parseReference } from '../../src/runtime/registry/index.js';
import { BerthError } from '../../src/lib/errors.js';
import { sha256 } from '../../src/lib/digest.js';
import { GUARD_CASES, HOSTS_FILE, NETNS_ADDRESSES, type NetnsReport } from '../helpers/registry-guard-netns.js';
import { requireTools } from '../helpers/prereq.js';

/**
 * Rule P3 (issue 15, registry faults): redirect hops go only where the registry may send us.
 *
 * - the address classifier, as a table (pure);
 * - vetHop's decisions from the URL alone (pure);
 * - on loopback in this namespace: a redirect to another loopback port is followed and the
 *   hop carries no Authorization;
 * - every refusal against private, link-local, unspecified, mapped and public-over-http
 *   targets, run in a network namespace of its own (test/helpers/registry-guard-netns.ts):
 *   refused with the reason, one registry request (not retried), and no connection.
 */

describe('unit: netaddr classifyAddress', () => {
  const table: [string, AddressClass | undefined, string?][] = [
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['0.0.0.0', 'unspecified'],
    ['0.1.2.3', 'unspecified'],
    ['10.0.0.1', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['172.32.0.1', 'public'],
    ['192.168.1.1', 'private'],
    ['100.64.0.1', 'private'],
    ['100.127.255.255', 'private'],
    ['100.128.0.1', 'public'],
    ['169.254.169.254', 'link-local'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['255.255.255.255', 'broadcast'],
    ['240.0.0.1', 'reserved'],
    ['192.0.2.1', 'reserved'],
    ['198.51.100.7', 'reserved'],
    ['203.0.113.5', 'reserved'],
    ['198.18.0.1', 'reserved'],
    ['192.0.0.8', 'reserved'],
    ['8.8.8.8', 'public'],
    ['11.0.0.1', 'public'],
    ['::', 'unspecified'],
    ['::1', 'loopback'],
    ['[::1]', 'loopback'],
    ['0:0:0:0:0:0:0:1', 'loopback'],
    ['::ffff:127.0.0.1', 'loopback', 'IPv4-mapped 127.0.0.1'],
    ['::ffff:7f00:1', 'loopback', 'IPv4-mapped 127.0.0.1'],
    ['[::ffff:7f00:1]', 'loopback', 'IPv4-mapped 127.0.0.1'],
    ['::ffff:10.0.0.1', 'private', 'IPv4-mapped 10.0.0.1'],
    ['::ffff:a9fe:a9fe', 'link-local', 'IPv4-mapped 169.254.169.254'],
    ['::ffff:0.0.0.0', 'unspecified', 'IPv4-mapped 0.0.0.0'],
    ['::ffff:8.8.8.8', 'public', 'IPv4-mapped 8.8.8.8'],
    ['::7f00:1', 'loopback', 'IPv4-compatible 127.0.0.1'],
    ['::8.8.8.8', 'reserved', 'IPv4-compatible 8.8.8.8'],
    ['::ffff:0:7f00:1', 'loopback', 'IPv4-translated 127.0.0.1'],
    ['64:ff9b::a00:1', 'private', 'NAT64 10.0.0.1'],
    ['64:ff9b::7f00:1', 'loopback', 'NAT64 127.0.0.1'],
    ['64:ff9b::808:808', 'public', 'NAT64 8.8.8.8'],
    ['64:ff9b:1::1', 'private'],
    ['2002:7f00:1::1', 'loopback', '6to4 127.0.0.1'],
    ['2002:808:808::1', 'public', '6to4 8.8.8.8'],
    ['fc00::1', 'private'],
    ['fd12:3456::1', 'private'],
    ['fe80::1', 'link-local'],
    ['fe80::1%eth0', 'link-local'],
    ['febf::1', 'link-local'],
    ['fec0::1', 'private'],
    ['ff02::1', 'multicast'],
    ['2001:db8::1', 'reserved'],
    ['2001::1', 'reserved'],
    ['3fff::1', 'reserved'],
    ['100::1', 'reserved'],
    ['2606:4700::1111', 'public'],
    ['2001:4860:4860::8888', 'public'],
    // Not address literals: names (resolved and checked at connect) or rubbish.
    ['localhost', undefined],
    ['registry.example', undefined],
    ['2130706433', undefined], // new URL() normalises these; the classifier itself is strict
    ['0x7f.1', undefined],
    ['0177.0.0.1', undefined],
    ['127.1', undefined],
    ['256.0.0.1', undefined],
    ['1:2:3:4:5:6:7:8:9', undefined],
    ['1::2::3', undefined],
    ['::g', undefined],
  ];
  for (const [text, cls, via] of table) {
    test(`${text} → ${cls ?? 'not an address'}${via !== undefined ? ` (${via})` : ''}`, () => {
      const got = classifyAddress(text);
      assert.equal(got?.class, cls, JSON.stringify(got));
      assert.equal(got?.embedded, via);
    });
  }

  test('addresses are described canonically, the way the error messages say them', () => {
    const d = (s: string): string => describeAddress(classifyAddress(s) ?? assert.fail(s));
    assert.equal(d('::ffff:127.0.0.1'), 'loopback address ::ffff:7f00:1 (IPv4-mapped 127.0.0.1)');
    assert.equal(d('0:0:0:0:0:0:0:1'), 'loopback address ::1');
    assert.equal(d('2001:0db8:0000:0000:0001:0000:0000:0001'), 'reserved address 2001:db8::1:0:0:1');
    assert.equal(d('[FE80::1]'), 'link-local address fe80::1');
  });

  test('the odd IPv4 spellings reach the classifier already normalised by new URL()', () => {
    for (const [u, host] of [
      ['https://2130706433/', '127.0.0.1'],
      ['https://0x7f.1/', '127.0.0.1'],
      ['https://0177.0.0.1/', '127.0.0.1'],
      ['https://0x7f000001/', '127.0.0.1'],
      ['https://10.1/', '10.0.0.1'],
      ['https://%31%30.0.0.1/', '10.0.0.1'],
      ['https://0/', '0.0.0.0'],
      ['https://[::ffff:127.0.0.1]/', '[::ffff:7f00:1]'],
      ['https://[64:ff9b::10.0.0.1]/', '[64:ff9b::a00:1]'],
    ] as const) {
      const h = new URL(u).hostname;
      assert.equal(h, host, u);
      assert.notEqual(classifyAddress(h)?.class, 'public', u);
    }
    // Zone ids are not valid in URLs: such a Location is unparseable, never followed.
    assert.throws(() => new URL('https://[fe80::1%25lo]/'));
  });
});

describe('unit: vetHop decides what the URL alone decides', () => {
  const ctx = { what: 'fetch blob r/x@d', kind: 'redirect to' } as const;
  const reg = (s: string): URL => new URL(`${s}/v2/repo/x/blobs/d`);
  const refuses = (target: string, registry: string, reason: RegExp): void => {
    assert.throws(
      () => vetHop(new URL(target), reg(registry), ctx),
      (err: unknown) => {
        assert.ok(err instanceof BerthError, String(err));
        assert.equal(err.code, 'ERR_FORBIDDEN');
        assert.equal(err.retryable, false, 'a P3 refusal is terminal: the controller does not retry it either');
        assert.match(err.message, /^fetch blob r\/x@d: refusing redirect to /);
        assert.match(err.message, reason);
        assert.match(err.message, /\(rule P3\)$/);
        return true;
      },
      target,
    );
  };

  test('the registry scope comes from its configured host alone', () => {
    assert.deepEqual([...registryScope(new URL('http://127.0.0.1:5000'))], ['loopback']);
    assert.deepEqual([...registryScope(new URL('http://localhost:5000'))], ['loopback']);
    assert.deepEqual([...registryScope(new URL('http://[::1]:5000'))], ['loopback']);
    assert.deepEqual([...registryScope(new URL('https://10.1.2.3'))], ['private']);
    assert.deepEqual([...registryScope(new URL('https://registry.corp'))], [], 'a name vouches for nothing');
    assert.deepEqual([...registryScope(new URL('https://registry-1.docker.io'))], []);
    assert.deepEqual([...registryScope(new URL('https://8.8.8.8'))], []);
  });

  test('same origin is the registry itself: nothing to vet', () => {
    assert.equal(vetHop(new URL('https://registry.corp/v2/other'), reg('https://registry.corp'), ctx), undefined);
    assert.equal(vetHop(new URL('http://127.0.0.1:5000/x'), reg('http://127.0.0.1:5000'), ctx), undefined);
    // A different port or scheme is a different origin.
    assert.notEqual(vetHop(new URL('https://registry.corp:8443/x'), reg('https://registry.corp'), ctx), undefined);
    refuses('http://registry.corp/x', 'https://registry.corp', /plain http/);
  });

  test('a public registry: public https names and addresses pass (names are checked again at connect)', () => {
    assert.deepEqual([...(vetHop(new URL('https://cdn.example/x'), reg('https://registry.example'), ctx)?.allowed ?? [])], ['public']);
    assert.deepEqual([...(vetHop(new URL('https://8.8.8.8/x'), reg('https://registry.example'), ctx)?.allowed ?? [])], ['public']);
    for (const [t, why] of [
      ['https://127.0.0.1/x', /loopback address 127\.0\.0\.1/],
      ['https://127.0.0.1:1/x', /loopback address 127\.0\.0\.1/],
      ['https://2130706433/x', /loopback address 127\.0\.0\.1/],
      ['https://0x7f.1/x', /loopback address 127\.0\.0\.1/],
      ['https://0177.0.0.1/x', /loopback address 127\.0\.0\.1/],
      ['https://[::ffff:7f00:1]/x', /loopback address ::ffff:7f00:1 \(IPv4-mapped 127\.0\.0\.1\)/],
      ['https://[::ffff:10.0.0.1]/x', /private address ::ffff:a00:1 \(IPv4-mapped 10\.0\.0\.1\)/],
      ['https://[64:ff9b::a00:1]/x', /private address 64:ff9b::a00:1 \(NAT64 10\.0\.0\.1\)/],
      ['https://0.0.0.0:8443/x', /unspecified address 0\.0\.0\.0/],
      ['https://[::]/x', /unspecified address ::/],
      ['https://10.0.0.1/x', /private address 10\.0\.0\.1/],
      ['https://192.168.0.1/x', /private address 192\.168\.0\.1/],
      ['https://100.64.0.1/x', /private address 100\.64\.0\.1/],
      ['https://169.254.169.254/x', /link-local address 169\.254\.169\.254/],
      ['https://[fe80::1]/x', /link-local address fe80::1/],
      ['https://[fd00::1]/x', /private address fd00::1/],
      ['https://224.0.0.1/x', /multicast address/],
      ['https://255.255.255.255/x', /broadcast address/],
      ['https://240.0.0.1/x', /reserved address/],
      ['https://localhost/x', /loopback name localhost/],
      ['https://LOCALHOST./x', /loopback name localhost\./],
      ['https://api.localhost/x', /loopback name api\.localhost/],
      ['http://8.8.8.8/x', /plain http/],
      ['http://cdn.example/x', /plain http/],
      ['ftp://cdn.example/x', /scheme ftp is not https/],
      ['file:///etc/passwd', /scheme file is not https/],
    ] as const) {
      refuses(t, 'https://registry.example', why);
    }
  });

  test('query strings and credentials in the target are redacted from the message', () => {
    assert.throws(
      () => vetHop(new URL('https://user:pw@10.0.0.1/blob?X-Amz-Signature=secret'), reg('https://registry.example'), ctx),
      (err: unknown) => {
        assert.ok(err instanceof BerthError);
        assert.ok(!/secret|pw|user/.test(err.message), err.message);
        assert.match(err.message, /refusing redirect to https:\/\/10\.0\.0\.1\/blob\?\[redacted\]: private address 10\.0\.0\.1 \(rule P3\)$/);
        return true;
      },
    );
  });

  test('a loopback registry may redirect within loopback, plain http included, and nowhere private', () => {
    assert.deepEqual([...(vetHop(new URL('http://127.0.0.1:9/x'), reg('http://127.0.0.1:5000'), ctx)?.allowed ?? [])], ['loopback']);
    assert.deepEqual([...(vetHop(new URL('http://localhost:9/x'), reg('http://127.0.0.1:5000'), ctx)?.allowed ?? [])], ['loopback']);
    assert.deepEqual([...(vetHop(new URL('https://[::1]:9/x'), reg('http://localhost:5000'), ctx)?.allowed ?? [])].sort(), ['loopback', 'public']);
    refuses('http://10.0.0.1/x', 'http://127.0.0.1:5000', /private address 10\.0\.0\.1 over plain http/);
    refuses('https://10.0.0.1/x', 'http://127.0.0.1:5000', /private address 10\.0\.0\.1/);
    refuses('http://8.8.8.8/x', 'http://127.0.0.1:5000', /public address 8\.8\.8\.8 over plain http/);
    refuses('https://169.254.169.254/x', 'http://127.0.0.1:5000', /link-local/);
  });

  test('a private registry may redirect to private addresses over https only', () => {
    assert.ok(vetHop(new URL('https://10.9.9.9/x'), reg('http://10.0.0.5:5000'), ctx)?.allowed.has('private'));
    refuses('http://10.9.9.9/x', 'http://10.0.0.5:5000', /plain http/);
    refuses('https://127.0.0.1/x', 'http://10.0.0.5:5000', /loopback/);
    refuses('https://169.254.169.254/x', 'http://10.0.0.5:5000', /link-local/);
  });

  test('Authorization goes only to the credential host', () => {
    const h = { authorization: 'Bearer t', accept: 'x' };
    assert.deepEqual(hopHeaders(h, new URL('https://registry.example/v2/x'), 'registry.example'), h);
    assert.deepEqual(hopHeaders(h, new URL('https://cdn.example/blob'), 'registry.example'), { accept: 'x' });
    assert.deepEqual(hopHeaders({ Authorization: 'Basic x' }, new URL('http://127.0.0.1:2/'), '127.0.0.1:1'), {}, 'another port is another host');
  });
});

describe('integration: a loopback registry redirecting to another loopback port', { timeout: 30_000 }, () => {
  const seen: { server: 'registry' | 'storage'; url: string; headers: IncomingMessage['headers'] }[] = [];
  let registry: Server;
  let storage: Server;
  let client: RegistryClient;
  const blob = Buffer.from('layer bytes from loopback storage');
  const digest = sha256(blob);
  const port = (s: Server): number => (s.address() as AddressInfo).port;

  before(async () => {
    storage = createServer((req, res) => {
      seen.push({ server: 'storage', url: req.url ?? '', headers: req.headers });
      res.writeHead(200, { 'content-length': String(blob.length) });
      res.end(blob);
    });
    storage.listen(0, '127.0.0.1');
    await once(storage, 'listening');
    registry = createServer((req, res) => {
      seen.push({ server: 'registry', url: req.url ?? '', headers: req.headers });
      if (req.url?.endsWith('/manifests/zoned')) {
        res.writeHead(307, { location: 'https://[fe80::1%25lo]/x', 'content-length': '0' });
        res.end();
        return;
      }
      const host = req.url?.includes('/manifests/') ? `localhost:${port(storage)}` : `127.0.0.1:${port(storage)}`;
      res.writeHead(307, { location: `http://${host}/store/${digest.slice(7)}?sig=s`, 'content-length': '0' });
      res.end();
    });
    registry.listen(0, '127.0.0.1');
    await once(registry, 'listening');
    client = new RegistryClient({ retries: 1, headersTimeoutMs: 5_000, bodyTimeoutMs: 5_000 });
  });

  after(async () => {
    await client.close();
    registry.closeAllConnections();
    storage.closeAllConnections();
    registry.close();
    storage.close();
  });

  test('the hop is followed, the blob arrives, and no Authorization reaches the other port', async () => {
    const ref = parseReference(`127.0.0.1:${port(registry)}/repo/x:tag`);
    const body = await client.fetchBlob(ref, digest);
    const chunks: Buffer[] = [];
    for await (const c of body) chunks.push(Buffer.from(c as Uint8Array));
    assert.deepEqual(Buffer.concat(chunks), blob);
    // A name that resolves to loopback is checked at connect and allowed too (manifest path uses localhost).
    assert.deepEqual((await client.fetchManifest(ref, 'tag')).bytes, blob);
    const hops = seen.filter((s) => s.server === 'storage');
    assert.equal(hops.length, 2, JSON.stringify(seen.map((s) => [s.server, s.url])));
    assert.equal(hops[0]?.url, `/store/${digest.slice(7)}?sig=s`);
    for (const h of seen) assert.equal(h.headers.authorization, undefined, `${h.server} ${h.url} got an Authorization header`);
  });

  test('regression: an unparseable Location is ERR_REGISTRY and not retried (it used to be a retried ERR_NETWORK)', async () => {
    const ref = parseReference(`127.0.0.1:${port(registry)}/repo/x:tag`);
    const before = seen.length;
    await assert.rejects(client.fetchManifest(ref, 'zoned'), (err: unknown) => {
      assert.ok(err instanceof BerthError && err.code === 'ERR_REGISTRY', String(err));
      assert.match(err.message, /unparseable redirect location/);
      return true;
    });
    assert.equal(seen.length - before, 1);
  });
});

describe('integration: P3 refusals inside a network namespace of their own', { timeout: 120_000 }, () => {
  test('every forbidden redirect is refused with its reason, not retried, and nothing connects', async (t) => {
    if (process.getuid?.() !== 0) {
      if (process.env['CI'] === 'true' || process.env['CI'] === '1') assert.fail('needs root for unshare -n -m');
      t.skip('needs root for unshare -n -m');
      return;
    }
    if (!requireTools(t, ['unshare', 'ip', 'mount'])) return;
    const dir = mkdtempSync(join(tmpdir(), 'berth-p3-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const hosts = join(dir, 'hosts');
    writeFileSync(hosts, HOSTS_FILE);
    const script = fileURLToPath(new URL('../helpers/registry-guard-netns.js', import.meta.url));
    // Only lo exists in the new namespace; the hosts file is bind-mounted in a private mount namespace.
    const setup = [
      'set -e',
      'ip link set lo up',
      ...NETNS_ADDRESSES.map((a) => `ip addr add ${a} dev lo`),
      'mount --bind "$1" /etc/hosts',
      'exec "$2" "$3" "$1"',
    ].join('\n');
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile('unshare', ['-n', '-m', '--propagation', 'private', 'sh', '-c', setup, 'sh', hosts, process.execPath, script], { timeout: 100_000, maxBuffer: 4 << 20 }, (err, out, errOut) => {
        if (err !== null) reject(new Error(`netns child failed: ${err.message}\n${errOut}`));
        else resolve(out);
      });
    });
    const report = JSON.parse(stdout) as NetnsReport;
    assert.deepEqual(report.interfaces, ['lo'], 'the child ran with loopback only');
    assert.equal(report.outcomes.length, GUARD_CASES.length);
    for (const c of GUARD_CASES) {
      const o = report.outcomes.find((x) => x.name === c.name);
      assert.ok(o !== undefined, c.name);
      const seen = JSON.stringify(o);
      assert.equal(o.fetched, false, seen);
      if (c.expect === 'refused') {
        assert.equal(o.code, 'ERR_FORBIDDEN', seen);
        assert.match(o.message ?? '', /^fetch blob \S+: refusing redirect to .*\(rule P3\)$/, seen);
        assert.match(o.message ?? '', new RegExp(c.reason ?? '.'), seen);
        assert.equal(o.registryRequests, 1, `a refusal is terminal, not retried: ${seen}`);
        assert.deepEqual(o.connects, [], `nothing may connect: ${seen}`);
        assert.ok(!/secret/.test(o.message ?? ''), `query strings are redacted: ${seen}`);
      } else {
        // The trap listener hangs up, so a followed hop fails as a network error and is retried.
        assert.equal(o.code, 'ERR_NETWORK', seen);
        assert.ok(o.connects.length >= 1, `the hop was followed: ${seen}`);
        const to = c.connectsTo ?? [];
        assert.ok(o.connects.every((a) => to.some((x) => a.startsWith(`${x}:`))), `connected only to ${to.join(' or ')}: ${seen}`);
        assert.equal(o.registryRequests, 3, `retries: 2 means three attempts: ${seen}`);
      }
    }
  });
});

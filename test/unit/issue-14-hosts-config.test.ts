import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { BerthError } from '../../src/lib/errors.js';
import { RegistryHosts, type RegistryEndpoint } from '../../src/runtime/registry/hosts.js';

/**
 * How runtime/registry/hosts.ts reads containerd's certs.d layout: which directory applies,
 * the order and capabilities of endpoints, paths relative to hosts.toml, the docker-style
 * certificate files, and errors that name the file and the field. Files only; the network
 * behaviour is test/integration/issue-14-hosts-toml.
 */

// Any PEM block will do for the loader (it checks the armour; TLS checks the rest).
const PEM = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
});

async function hostsDir(files: Record<string, string>): Promise<string> {
  const d = await fsp.mkdtemp(path.join(os.tmpdir(), 'berth-hosts-unit-'));
  dirs.push(d);
  for (const [name, text] of Object.entries(files)) {
    await fsp.mkdir(path.dirname(path.join(d, name)), { recursive: true });
    await fsp.writeFile(path.join(d, name), text);
  }
  return d;
}

const brief = (e: RegistryEndpoint): string => `${e.origin}${e.apiRoot} ${[...e.capabilities].sort().join('+')}${e.mirror ? ' mirror' : ''}${e.tls !== undefined ? ' tls' : ''}`;

async function endpoints(dir: string | undefined, domain: string, insecureHosts: string[] = []): Promise<string[]> {
  return (await new RegistryHosts({ dir, required: false, insecureHosts }).endpoints(domain)).map(brief);
}

async function fails(files: Record<string, string>, domain: string, re: RegExp, code = 'ERR_INVALID_ARGUMENT'): Promise<void> {
  const d = await hostsDir(files);
  await assert.rejects(new RegistryHosts({ dir: d, required: true, insecureHosts: [] }).endpoints(domain), (err: unknown) => {
    assert.ok(err instanceof BerthError);
    assert.equal(err.code, code, err.message);
    assert.match(err.message, re);
    return true;
  });
}

describe('issue 14: hosts.toml loading', () => {
  test('no directory, or no entry for the host: the registry itself (https, http for loopback and insecure hosts, docker.io as registry-1)', async () => {
    assert.deepEqual(await endpoints(undefined, 'registry.example:5000'), ['https://registry.example:5000/v2 pull+push+resolve']);
    assert.deepEqual(await endpoints('/nonexistent/certs.d', '127.0.0.1:5000'), ['http://127.0.0.1:5000/v2 pull+push+resolve']);
    assert.deepEqual(await endpoints(undefined, 'docker.io'), ['https://registry-1.docker.io/v2 pull+push+resolve']);
    assert.deepEqual(await endpoints(undefined, 'lan.example', ['lan.example']), ['http://lan.example/v2 pull+push+resolve']);
    await assert.rejects(new RegistryHosts({ dir: '/nonexistent/certs.d', required: true, insecureHosts: [] }).endpoints('x.example'), /no such directory \(--registry-hosts-dir\)/);
  });

  test('mirrors in file order, then the server; default capabilities; ns for mirrors only; paths and override_path', async () => {
    const d = await hostsDir({
      'registry.example:5000/hosts.toml': [
        'server = "https://registry.example:5000"',
        '[host."https://b-mirror.example"]',
        '  capabilities = ["pull"]',
        '[host."http://a-mirror.example:8080/base"]',
        '[host."c-mirror.example/raw/api"]',
        '  override_path = true',
        '',
      ].join('\n'),
    });
    assert.deepEqual(await endpoints(d, 'registry.example:5000'), [
      'https://b-mirror.example/v2 pull mirror',
      'http://a-mirror.example:8080/base/v2 pull+resolve mirror',
      'https://c-mirror.example/raw/api pull+resolve mirror',
      'https://registry.example:5000/v2 pull+push+resolve',
    ]);
  });

  test('directory precedence: host_port_ before host:port before _default', async () => {
    const d = await hostsDir({
      'r.example_5000_/hosts.toml': 'server = "https://first.example"\n',
      'r.example:5000/hosts.toml': 'server = "https://second.example"\n',
      '_default/hosts.toml': 'server = "https://fallback.example"\n',
    });
    assert.deepEqual(await endpoints(d, 'r.example:5000'), ['https://first.example/v2 pull+push+resolve mirror']);
    await fsp.rm(path.join(d, 'r.example_5000_'), { recursive: true });
    assert.deepEqual(await endpoints(d, 'r.example:5000'), ['https://second.example/v2 pull+push+resolve mirror']);
    assert.deepEqual(await endpoints(d, 'other.example'), ['https://fallback.example/v2 pull+push+resolve mirror']);
  });

  test('edits are seen without a restart (the cache follows hosts.toml)', async () => {
    const d = await hostsDir({ 'r.example/hosts.toml': '[host."https://m1.example"]\n' });
    const hosts = new RegistryHosts({ dir: d, required: true, insecureHosts: [] });
    assert.deepEqual((await hosts.endpoints('r.example')).map(brief), ['https://m1.example/v2 pull+resolve mirror', 'https://r.example/v2 pull+push+resolve']);
    await fsp.writeFile(path.join(d, 'r.example/hosts.toml'), '[host."https://m2.example"]\n  capabilities = ["pull"]\n');
    await fsp.utimes(path.join(d, 'r.example/hosts.toml'), new Date(), new Date(Date.now() + 5000));
    assert.deepEqual((await hosts.endpoints('r.example')).map(brief), ['https://m2.example/v2 pull mirror', 'https://r.example/v2 pull+push+resolve']);
  });

  test('ca and client relative to hosts.toml, added to the system roots; skip_verify; headers to the endpoint', async () => {
    const d = await hostsDir({
      'r.example/ca.pem': PEM,
      'r.example/client.pem': PEM,
      'r.example/hosts.toml': [
        'ca = ["ca.pem"]',
        'client = "client.pem"',
        '[host."https://m.example"]',
        '  skip_verify = true',
        '  [host."https://m.example".header]',
        '    x-mirror-token = ["a", "b"]',
        '',
      ].join('\n'),
    });
    const [m, server] = await new RegistryHosts({ dir: d, required: true, insecureHosts: [] }).endpoints('r.example');
    assert.equal(m?.tls?.rejectUnauthorized, false);
    assert.equal(m?.tls?.ca, undefined, 'skip_verify alone keeps the default roots');
    assert.deepEqual(m?.headers, { 'x-mirror-token': 'a, b' });
    assert.equal(server?.origin, 'https://r.example');
    assert.equal(server?.tls?.rejectUnauthorized, true);
    assert.ok((server?.tls?.ca?.length ?? 0) > 1 && server?.tls?.ca?.at(-1) === PEM, 'the system roots plus ca.pem');
    assert.equal(server?.tls?.cert?.[0]?.toString(), PEM);
    assert.equal(server?.tls?.key?.[0]?.toString(), PEM, 'a client entry without a key file holds both');
  });

  test('a host directory without hosts.toml: *.crt CAs and X.cert/X.key pairs for the registry itself (docker layout)', async () => {
    const d = await hostsDir({ 'r.example:5000/ca.crt': PEM, 'r.example:5000/me.cert': PEM, 'r.example:5000/me.key': PEM });
    const [e] = await new RegistryHosts({ dir: d, required: true, insecureHosts: [] }).endpoints('r.example:5000');
    assert.equal(e?.origin, 'https://r.example:5000');
    assert.equal(e?.mirror, false);
    assert.equal(e?.tls?.ca?.at(-1), PEM);
    assert.equal(e?.tls?.cert?.length, 1);
    await fails({ 'r.example/lonely.cert': PEM }, 'r.example', /lonely\.cert: client certificate without its key lonely\.key/);
  });

  test('bad input names the file and the field', async () => {
    await fails({ 'r.example/hosts.toml': 'server = "https://x"\nserver = "https://y"\n' }, 'r.example', /r\.example\/hosts\.toml: not TOML: line 2/);
    await fails({ 'r.example/hosts.toml': 'sever = "https://x"\n' }, 'r.example', /hosts\.toml: sever: unknown field/);
    await fails({ 'r.example/hosts.toml': '[host."https://m"]\n  capabilities = ["pull", "write"]\n' }, 'r.example', /host\."https:\/\/m"\.capabilities: "write" is not one of/);
    await fails({ 'r.example/hosts.toml': 'proxy = "http://p:8080"\n' }, 'r.example', /proxy: proxies are not supported/);
    await fails({ 'r.example/hosts.toml': 'server = "ftp://x"\n' }, 'r.example', /server: scheme ftp is not http or https/);
    await fails({ 'r.example/hosts.toml': 'server = "https://user:pw@x"\n' }, 'r.example', /server: .* may name only a scheme, host, port and path/);
    await fails({ 'r.example/hosts.toml': 'ca = "missing.pem"\n' }, 'r.example', /missing\.pem: server ca: no such file/);
    await fails({ 'r.example/hosts.toml': 'ca = "hosts.toml"\n' }, 'r.example', /hosts\.toml: server ca: not a PEM file/);
    await fails({ 'r.example/hosts.toml': 'skip_verify = "yes"\n' }, 'r.example', /skip_verify: must be true or false/);
    await fails({ 'r.example/hosts.toml': 'dial_timeout = "soon"\n' }, 'r.example', /dial_timeout: must be a duration/);
    await fails({ 'r.example/hosts.toml': '[header]\n  authorization = "Bearer x"\n' }, 'r.example', /header\.authorization: may not be set here/);
  });
});

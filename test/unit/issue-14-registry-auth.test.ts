import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, chmodSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  basicAuthorization,
  chainCredentials,
  credentialKey,
  credentialsFromDockerConfig,
  defaultDockerConfigPath,
  dockerConfigFile,
  normalizeRegistryHost,
  parseWwwAuthenticate,
  type CredentialSource,
} from '../../src/runtime/registry/auth.js';
import { TokenCache, parseTokenResponse } from '../../src/runtime/registry/token.js';
import { FakeClock } from '../../src/lib/clock.js';
import { BerthError, type ErrorCode } from '../../src/lib/errors.js';

/**
 * Issue 14, registry authentication: the WWW-Authenticate grammar, Docker config.json
 * credentials (keyed by exact host), the token cache and token answers. The flows against a
 * real registry are in test/integration/registry-auth.test.ts.
 */

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
const PASSWORD = 'pa:ss w0rd-SECRET';

function throwsCode(fn: () => unknown, code: ErrorCode, re: RegExp): BerthError {
  let caught: unknown;
  assert.throws(fn, (err: unknown) => {
    caught = err;
    return true;
  });
  assert.ok(caught instanceof BerthError, String(caught));
  assert.equal(caught.code, code, caught.message);
  assert.match(caught.message, re);
  return caught;
}

async function rejectsCode(p: Promise<unknown>, code: ErrorCode, re: RegExp): Promise<BerthError> {
  let caught: unknown;
  await assert.rejects(p, (err: unknown) => {
    caught = err;
    return true;
  });
  assert.ok(caught instanceof BerthError, String(caught));
  assert.equal(caught.code, code, caught.message);
  assert.match(caught.message, re);
  return caught;
}

describe('unit: WWW-Authenticate parser', () => {
  test('docker-registry token challenge', () => {
    assert.deepEqual(
      parseWwwAuthenticate('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:berth/demo:pull"'),
      [{ scheme: 'bearer', params: { realm: 'https://auth.example/token', service: 'registry.example', scope: 'repository:berth/demo:pull' } }],
    );
  });

  test('basic challenge, scheme and parameter names are case-insensitive', () => {
    assert.deepEqual(parseWwwAuthenticate('BASIC Realm="Registry Realm"'), [{ scheme: 'basic', params: { realm: 'Registry Realm' } }]);
  });

  test('several challenges in one value and across values', () => {
    const got = parseWwwAuthenticate(['Basic realm="a, b", Bearer realm="https://t/x", service=reg', 'Negotiate abc==, Bearer realm=second']);
    assert.deepEqual(
      got.map((c) => [c.scheme, c.params]),
      [
        ['basic', { realm: 'a, b' }],
        ['bearer', { realm: 'https://t/x', service: 'reg' }],
        ['negotiate', {}],
        ['bearer', { realm: 'second' }],
      ],
    );
  });

  test('quoted strings keep commas, spaces and escaped quotes; whitespace around = is allowed', () => {
    const [c] = parseWwwAuthenticate('Bearer realm = "https://t/x?a=1,b=2" , scope="repository:a:pull repository:b:pull", error="say \\"hi\\""');
    assert.deepEqual(c?.params, { realm: 'https://t/x?a=1,b=2', scope: 'repository:a:pull repository:b:pull', error: 'say "hi"' });
  });

  test('the first of a repeated parameter wins', () => {
    assert.equal(parseWwwAuthenticate('Bearer realm="https://good/t",realm="https://evil/t"')[0]?.params['realm'], 'https://good/t');
  });

  test('nothing, empty and malformed input give what parsed before the fault', () => {
    assert.deepEqual(parseWwwAuthenticate(undefined), []);
    assert.deepEqual(parseWwwAuthenticate(''), []);
    assert.deepEqual(parseWwwAuthenticate(' , '), []);
    assert.deepEqual(parseWwwAuthenticate('Bearer realm="unterminated'), [{ scheme: 'bearer', params: {} }]);
    assert.deepEqual(parseWwwAuthenticate('Bearer realm="x", ="y"'), [{ scheme: 'bearer', params: { realm: 'x' } }]);
    assert.deepEqual(parseWwwAuthenticate('"quoted"'), []);
  });
});

describe('unit: Docker config.json credentials', () => {
  const lookup = async (src: CredentialSource, host: string): Promise<unknown> => (await src.lookup(host))?.credential;

  test('auth is base64 of user:password; the password may hold colons', async () => {
    const src = credentialsFromDockerConfig(JSON.stringify({ auths: { '127.0.0.1:5000': { auth: b64(`alice:${PASSWORD}`) } } }), '/x/config.json');
    assert.deepEqual(await lookup(src, '127.0.0.1:5000'), { kind: 'basic', username: 'alice', password: PASSWORD });
    assert.equal((await src.lookup('127.0.0.1:5000'))?.origin, '/x/config.json');
  });

  test('username/password fields, and auth wins over them when both are there', async () => {
    const src = credentialsFromDockerConfig(
      JSON.stringify({ auths: { 'a.example': { username: 'u', password: 'p' }, 'b.example': { username: 'u', password: 'p', auth: b64('v:q') } } }),
      'o',
    );
    assert.deepEqual(await lookup(src, 'a.example'), { kind: 'basic', username: 'u', password: 'p' });
    assert.deepEqual(await lookup(src, 'b.example'), { kind: 'basic', username: 'v', password: 'q' });
  });

  test('identitytoken is a refresh token', async () => {
    const src = credentialsFromDockerConfig(JSON.stringify({ auths: { 'r.example': { auth: b64('<token>:'), identitytoken: 'refresh-SECRET' } } }), 'o');
    assert.deepEqual(await lookup(src, 'r.example'), { kind: 'identity-token', username: '<token>', refreshToken: 'refresh-SECRET' });
  });

  test('keyed by exact host[:port]: another port or a longer name is another registry', async () => {
    const src = credentialsFromDockerConfig(JSON.stringify({ auths: { '127.0.0.1:5000': { auth: b64('a:b') }, 'registry.example': { auth: b64('c:d') } } }), 'o');
    assert.equal(await src.lookup('127.0.0.1'), undefined);
    assert.equal(await src.lookup('127.0.0.1:5001'), undefined);
    assert.equal(await src.lookup('registry.example:443'), undefined);
    assert.equal(await src.lookup('evil.registry.example'), undefined);
    assert.equal(await src.lookup('registry.example.evil'), undefined);
    assert.ok(await src.lookup('REGISTRY.example'), 'host names are case-insensitive');
  });

  test('URL-shaped keys lose scheme and path; Docker Hub names are one registry', async () => {
    for (const key of ['https://index.docker.io/v1/', 'index.docker.io', 'docker.io', 'registry-1.docker.io', 'http://docker.io']) {
      const src = credentialsFromDockerConfig(JSON.stringify({ auths: { [key]: { auth: b64('hub:pw') } } }), 'o');
      assert.deepEqual(await lookup(src, 'docker.io'), { kind: 'basic', username: 'hub', password: 'pw' }, key);
    }
    const src = credentialsFromDockerConfig(JSON.stringify({ auths: { 'https://reg.example:8443/v2/': { auth: b64('a:b') } } }), 'o');
    assert.ok(await src.lookup('reg.example:8443'));
    assert.equal(normalizeRegistryHost('HTTPS://Reg.Example:8443/v1/'), 'reg.example:8443');
  });

  test('a key written exactly as the host wins over one that only normalises to it, whatever the order', async () => {
    for (const auths of [
      { docker: { auth: b64('exact:1') }, url: { auth: b64('url:2') } },
      { url: { auth: b64('url:2') }, docker: { auth: b64('exact:1') } },
    ]) {
      const doc = { auths: Object.fromEntries(Object.entries(auths).map(([k, v]) => [k === 'docker' ? 'docker.io' : 'https://index.docker.io/v1/', v])) };
      assert.deepEqual(await lookup(credentialsFromDockerConfig(JSON.stringify(doc), 'o'), 'docker.io'), { kind: 'basic', username: 'exact', password: '1' });
    }
  });

  test('empty entries, no auths: no credential', async () => {
    assert.equal(await credentialsFromDockerConfig('{}', 'o').lookup('x.example'), undefined);
    assert.equal(await credentialsFromDockerConfig('{"auths":{"x.example":{}}}', 'o').lookup('x.example'), undefined);
  });

  test('credential helpers are refused with a clear error when a registry asks, never run', async () => {
    const store = credentialsFromDockerConfig(JSON.stringify({ auths: { 'x.example': {} }, credsStore: 'desktop' }), '/h/config.json');
    await rejectsCode(store.lookup('x.example'), 'ERR_UNSUPPORTED', /credsStore delegates every registry to docker-credential-desktop.*\/h\/config\.json|\/h\/config\.json.*docker-credential-desktop/);
    const helpers = credentialsFromDockerConfig(JSON.stringify({ auths: { 'y.example': { auth: b64('a:b') } }, credHelpers: { 'x.example': 'ecr-login' } }), 'o');
    await rejectsCode(helpers.lookup('x.example'), 'ERR_UNSUPPORTED', /docker-credential-ecr-login/);
    assert.ok(await helpers.lookup('y.example'), 'other hosts still answer from auths');
    const rt = credentialsFromDockerConfig(JSON.stringify({ auths: { 'x.example': { registrytoken: 'tok' } } }), 'o');
    await rejectsCode(rt.lookup('x.example'), 'ERR_UNSUPPORTED', /registrytoken/);
  });

  test('malformed files name the file and the field, never a value', () => {
    const cases: [string, RegExp][] = [
      [`{"auths": {"x.example": {"auth": "${b64(`alice:${PASSWORD}`)}"}`, /not JSON/],
      [`[1]`, /top level: not a JSON object/],
      [`{"auths": []}`, /auths: not an object/],
      [`{"auths": {"x.example": "${PASSWORD}"}}`, /auths\."x\.example": not an object/],
      [`{"auths": {"x.example": {"auth": "not base64 ${PASSWORD}"}}}`, /auths\."x\.example"\.auth: not base64/],
      [`{"auths": {"x.example": {"auth": "${b64(PASSWORD.replace(/:/g, ''))}"}}}`, /no colon/],
      [`{"auths": {"x.example": {"username": "alice"}}}`, /needs both a username and a password/],
      [`{"auths": {"x.example": {"password": 7}}}`, /password: not a string/],
    ];
    for (const [text, re] of cases) {
      const err = throwsCode(() => credentialsFromDockerConfig(text, '/etc/berth/registry.json'), 'ERR_INVALID_ARGUMENT', re);
      assert.match(err.message, /^read registry credentials \/etc\/berth\/registry\.json: /);
      assert.ok(!err.message.includes('SECRET') && !err.message.includes('pa:ss'), err.message);
      assert.ok(!JSON.stringify(err.details).includes('SECRET'));
    }
  });

  test('chained sources: the first that has the host answers (pull secrets before the node file)', async () => {
    const secret = credentialsFromDockerConfig(JSON.stringify({ auths: { 'a.example': { auth: b64('secret:1') } } }), 'imagePullSecret default/regcred');
    const node = credentialsFromDockerConfig(JSON.stringify({ auths: { 'a.example': { auth: b64('node:2') }, 'b.example': { auth: b64('node:3') } } }), '/root/.docker/config.json');
    const chain = chainCredentials(secret, node);
    assert.equal(chain.origin, 'imagePullSecret default/regcred or /root/.docker/config.json');
    assert.equal((await chain.lookup('a.example'))?.origin, 'imagePullSecret default/regcred');
    assert.equal((await chain.lookup('b.example'))?.origin, '/root/.docker/config.json');
    assert.equal(await chain.lookup('c.example'), undefined);
  });

  test('default path: $DOCKER_CONFIG/config.json, else ~/.docker/config.json', () => {
    assert.equal(defaultDockerConfigPath({ DOCKER_CONFIG: '/etc/docker-creds' }, '/root'), '/etc/docker-creds/config.json');
    assert.equal(defaultDockerConfigPath({ DOCKER_CONFIG: '' }, '/root'), '/root/.docker/config.json');
    assert.equal(defaultDockerConfigPath({}, '/home/u'), '/home/u/.docker/config.json');
  });

  test('a file source reads lazily, sees a changed file, and treats a missing default file as no credentials', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'berth-auth-unit-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'config.json');
    const src = dockerConfigFile(file);
    assert.equal(src.origin, file);
    assert.equal(await src.lookup('a.example'), undefined, 'missing file: anonymous');
    writeFileSync(file, JSON.stringify({ auths: { 'a.example': { auth: b64('one:1') } } }));
    assert.deepEqual((await src.lookup('a.example'))?.credential, { kind: 'basic', username: 'one', password: '1' });
    writeFileSync(file, JSON.stringify({ auths: { 'a.example': { auth: b64('two:22') } } }));
    assert.deepEqual((await src.lookup('a.example'))?.credential, { kind: 'basic', username: 'two', password: '22' }, 'a docker login meanwhile is seen');
    await rejectsCode(dockerConfigFile(join(dir, 'nope.json'), { required: true }).lookup('a.example'), 'ERR_INVALID_ARGUMENT', /nope\.json: no such file \(--registry-config\)/);
    mkdirSync(join(dir, 'sub'));
    await rejectsCode(dockerConfigFile(join(dir, 'sub')).lookup('a.example'), 'ERR_INVALID_ARGUMENT', /not a regular file/);
    writeFileSync(file, '{"auths": {');
    await rejectsCode(src.lookup('a.example'), 'ERR_INVALID_ARGUMENT', /config\.json: not JSON/);
    if (process.getuid?.() !== 0) {
      chmodSync(file, 0);
      await rejectsCode(dockerConfigFile(file).lookup('a.example'), 'ERR_IO', /permission denied/);
    }
  });

  test('credential keys: one per credential, never the secret itself', () => {
    const a = credentialKey({ credential: { kind: 'basic', username: 'u', password: PASSWORD }, origin: 'o' });
    const b = credentialKey({ credential: { kind: 'basic', username: 'u', password: 'other' }, origin: 'o' });
    assert.notEqual(a, b);
    assert.equal(credentialKey(undefined), 'anonymous');
    assert.ok(!a.includes('SECRET') && !a.includes('u\0'));
    assert.equal(basicAuthorization({ username: 'alice', password: 'p:w' }), `Basic ${b64('alice:p:w')}`);
  });
});

describe('unit: token cache and token answers', () => {
  test('a token lives expires_in less a margin, on the given clock', async () => {
    const clock = new FakeClock(1_000_000);
    const cache = new TokenCache(clock);
    let fetched = 0;
    const fetch = (): Promise<{ token: string; expiresInS: number }> => Promise.resolve({ token: `t${++fetched}`, expiresInS: 60 });
    const t1 = await cache.refresh('k', fetch);
    assert.equal(t1.authorization, 'Bearer t1');
    assert.equal(cache.get('k')?.authorization, 'Bearer t1');
    clock.advance(53_999);
    assert.equal(cache.get('k')?.authorization, 'Bearer t1', 'still good 54 s in (60 s less a 6 s margin)');
    clock.advance(1);
    assert.equal(cache.get('k'), undefined, 'expired at 54 s');
    assert.equal((await cache.refresh('k', fetch)).authorization, 'Bearer t2');
  });

  test('concurrent refreshes of one key share one fetch; a failure is not cached', async () => {
    const cache = new TokenCache(new FakeClock());
    let calls = 0;
    let release: (v: { token: string; expiresInS: number }) => void = () => undefined;
    const slow = (): Promise<{ token: string; expiresInS: number }> => {
      calls++;
      return new Promise((r) => (release = r));
    };
    const both = Promise.all([cache.refresh('k', slow), cache.refresh('k', slow), cache.refresh('other', () => Promise.resolve({ token: 'o', expiresInS: 60 }))]);
    release({ token: 'shared', expiresInS: 60 });
    const [a, b, c] = await both;
    assert.equal(calls, 1);
    assert.equal(a.authorization, 'Bearer shared');
    assert.equal(b, a);
    assert.equal(c.authorization, 'Bearer o');
    await assert.rejects(cache.refresh('f', () => Promise.reject(new Error('realm down'))));
    assert.equal(cache.get('f'), undefined);
    assert.equal((await cache.refresh('f', () => Promise.resolve({ token: 'ok', expiresInS: 60 }))).authorization, 'Bearer ok');
  });

  test('invalidate drops only the token that was refused', async () => {
    const cache = new TokenCache(new FakeClock());
    await cache.refresh('k', () => Promise.resolve({ token: 'new', expiresInS: 60 }));
    cache.invalidate('k', 'Bearer old');
    assert.equal(cache.get('k')?.authorization, 'Bearer new', 'a refresh by another request is kept');
    cache.invalidate('k', 'Bearer new');
    assert.equal(cache.get('k'), undefined);
  });

  test('token answers: token or access_token, expires_in default 60, nothing quoted in errors', () => {
    const p = (o: unknown): { token: string; expiresInS: number } => parseTokenResponse(Buffer.from(JSON.stringify(o)), 'https://auth.example/token', 'w');
    assert.deepEqual(p({ token: 'a.b.c', expires_in: 300 }), { token: 'a.b.c', expiresInS: 300 });
    assert.deepEqual(p({ access_token: 'x' }), { token: 'x', expiresInS: 60 });
    assert.deepEqual(p({ token: '', access_token: 'y', expires_in: -5 }), { token: 'y', expiresInS: 60 });
    assert.deepEqual(p({ token: 'z', expires_in: '300' }), { token: 'z', expiresInS: 60 });
    const bad = (body: string, re: RegExp): void => {
      const err = throwsCode(() => parseTokenResponse(Buffer.from(body), 'https://auth.example/token', 'fetch manifest r/x:1'), 'ERR_REGISTRY', re);
      assert.ok(!err.message.includes('SECRET'), err.message);
    };
    bad('SECRET not json', /^fetch manifest r\/x:1: token realm https:\/\/auth\.example\/token: answer is not JSON$/);
    bad('["SECRET"]', /not a JSON object/);
    bad('{"tok":"SECRET"}', /no "token" or "access_token"/);
    bad('{"token":"SECRET\\r\\nX-Injected: 1"}', /characters a header cannot carry/);
    bad('{"token":"SECRET with space"}', /characters a header cannot carry/);
  });
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { createServer } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { deferModule, loadUndici } from '../../src/runtime/registry/index.js';

test('registry client: undici is loaded as its Agent and request API only, and that request works on loopback', async () => {
  const { Agent, request } = loadUndici();
  const req = createRequire(import.meta.url);
  const index = req.resolve('undici');
  assert.equal(req.cache[index], undefined, "undici's index (fetch, WebSocket, cache stores, mocks) was loaded");
  const srv = createServer((q, r) => r.end(`${q.method ?? ''} ${q.url ?? ''}`));
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const agent = new Agent({ connections: 1 });
  try {
    const res = await request(`http://127.0.0.1:${(srv.address() as AddressInfo).port}/v2/x/manifests/1?a=b`, { dispatcher: agent, method: 'GET' });
    assert.equal(res.statusCode, 200);
    assert.equal(await res.body.text(), 'GET /v2/x/manifests/1?a=b');
  } finally {
    await agent.close();
    srv.close();
  }
});

test("registry client: undici's HTTP/2 side (node:http2) is not loaded by loadUndici or a plain request", async () => {
  const mod = new URL('../../src/runtime/registry/index.js', import.meta.url).href;
  const script = `
    import { createServer } from 'node:http';
    const { loadUndici } = await import(${JSON.stringify(mod)});
    const { Agent, request } = loadUndici();
    const srv = createServer((q, r) => r.end('ok')).listen(0, '127.0.0.1');
    await new Promise((r) => srv.once('listening', r));
    const agent = new Agent({ connections: 1 });
    const res = await request('http://127.0.0.1:' + srv.address().port + '/v2/', { dispatcher: agent, method: 'GET' });
    const body = await res.body.text();
    await agent.close(); srv.close();
    const loaded = process.moduleLoadList.filter((m) => m === 'NativeModule http2' || m.startsWith('NativeModule internal/http2'));
    process.stdout.write(JSON.stringify({ status: res.statusCode, body, loaded }));
  `;
  const { execFileSync } = await import('node:child_process');
  const out = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' })) as { status: number; body: string; loaded: string[] };
  assert.equal(out.status, 200);
  assert.equal(out.body, 'ok');
  assert.deepEqual(out.loaded, []);
});

test('deferModule: the stand-in loads the real module on its first call and hands it this, the arguments and the result', async () => {
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-defer-'));
  try {
    const file = path.join(dir, 'real.cjs');
    writeFileSync(file, "globalThis.__berthDeferLoads = (globalThis.__berthDeferLoads ?? 0) + 1;\nmodule.exports = function real(a, b) { return { self: this, sum: a + b }; };\n");
    const req = createRequire(path.join(dir, 'x.cjs'));
    const g = globalThis as { __berthDeferLoads?: number };
    const stand = deferModule(req, file);
    assert.equal(typeof stand, 'function');
    assert.equal(g.__berthDeferLoads, undefined, 'the real module was loaded by deferModule');
    const viaRequire = req(file) as (a: number, b: number) => { self: unknown; sum: number };
    assert.ok((viaRequire as unknown) === stand, 'require does not give the stand-in');
    assert.equal(g.__berthDeferLoads, undefined, 'the real module was loaded by require of the stand-in');
    const self = { tag: 1 };
    assert.deepEqual(viaRequire.call(self, 2, 3), { self, sum: 5 });
    assert.equal(g.__berthDeferLoads, 1);
    assert.equal(viaRequire.call(self, 4, 5).sum, 9);
    assert.equal(g.__berthDeferLoads, 1, 'the real module was loaded twice');
    assert.equal(deferModule(req, file), undefined, 'a loaded module is deferred again');
  } finally {
    rmSync(dir, { recursive: true, force: true });
    delete (globalThis as { __berthDeferLoads?: number }).__berthDeferLoads;
  }
});

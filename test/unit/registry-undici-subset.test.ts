import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { createServer } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { loadUndici } from '../../src/runtime/registry/index.js';

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

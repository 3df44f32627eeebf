import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { httpCheck } from '../../src/lib/httpprobe.js';

test('regression probe-redirects-not-followed: an httpGet probe follows same-host redirects and judges the final answer, as the kubelet', async () => {
  let hops = 0;
  const server = http.createServer((req, res) => {
    const port = (server.address() as AddressInfo).port;
    const go = (to: string): void => {
      res.writeHead(302, { location: to });
      res.end();
    };
    if (req.url === '/healthz') return go('/healthz/');
    if (req.url === '/healthz/') {
      res.writeHead(503);
      return res.end();
    }
    if (req.url === '/ok') return go('/ok/');
    if (req.url === '/ok/') {
      res.writeHead(200);
      return res.end();
    }
    if (req.url === '/loop') {
      hops++;
      return go('/loop');
    }
    // Another host (127.0.0.2 is another name for the probe): not followed, a success with a warning.
    if (req.url === '/away') return go(`http://127.0.0.2:${port}/healthz/`);
    res.writeHead(404);
    res.end();
  });
  server.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  const port = (server.address() as AddressInfo).port;
  try {
    const check = (p: string): Promise<{ ok: boolean; message: string }> => httpCheck('127.0.0.1', port, p, [], 2000);
    const down = await check('/healthz');
    assert.equal(down.ok, false, down.message);
    assert.match(down.message, /HTTP 503/);
    assert.equal((await check('/ok')).ok, true);
    const loop = await check('/loop');
    assert.equal(loop.ok, false);
    assert.match(loop.message, /stopped after 10 redirects/);
    assert.equal(hops, 11);
    const away = await check('/away');
    assert.equal(away.ok, true, away.message);
    assert.match(away.message, /probe terminated redirects/);
  } finally {
    server.close();
  }
});

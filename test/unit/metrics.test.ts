import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseMetricsAddr } from '../../src/daemon/metrics.js';

test('metrics: --metrics-addr takes only loopback addresses (the API is the unix socket)', () => {
  assert.deepEqual(parseMetricsAddr('127.0.0.1:9464'), { host: '127.0.0.1', port: 9464 });
  assert.deepEqual(parseMetricsAddr('[::1]:9464'), { host: '::1', port: 9464 });
  for (const bad of ['0.0.0.0:9464', '10.0.0.1:9464', '[::]:9464', '192.168.1.2:80', '127.0.0.1', '127.0.0.1:0', '127.0.0.1:70000', ':9464', 'example.com:9464']) {
    assert.throws(() => parseMetricsAddr(bad), { code: 'ERR_INVALID_ARGUMENT' }, bad);
  }
});

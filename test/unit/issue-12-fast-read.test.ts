import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { askDaemon, parseFastRead, responseBody } from '../../src/lib/fast-read.js';

/**
 * Issue 12, fast reads: which command lines the ps/status fast path takes (everything else goes
 * to commander, which owns usage errors and help), and its raw HTTP/1.1 reader against node's own
 * HTTP server: a plain 200 with Content-Length is read, anything else is left to the normal path.
 */
describe('the ps/status fast path', () => {
  test('takes the plain forms of ps, pods and status', () => {
    assert.deepEqual(parseFastRead(['ps']), { method: 'pods', socket: '/run/berth/berth.sock', query: {}, output: 'table' });
    assert.deepEqual(parseFastRead(['--root', '/r', '--state=/s', '--log-level', 'debug', 'pods', '-o', 'wide', 'a', 'x/b']), {
      method: 'pods',
      socket: '/s/berth.sock',
      query: { keys: ['default/a', 'x/b'] },
      output: 'wide',
    });
    assert.deepEqual(parseFastRead(['--state', 'rel', 'status', '-n', 'ns', 'a', '--output=json']), {
      method: 'status',
      socket: path.join(process.cwd(), 'rel', 'berth.sock'),
      query: { keys: ['ns/a'] },
      output: 'json',
    });
    assert.deepEqual(parseFastRead(['status', '-l', 'app=web,!tier'])?.query, { selector: 'app=web,!tier' });
    assert.deepEqual(parseFastRead(['status', '--selector=a!=b'])?.query, { selector: 'a!=b' });
  });

  test('leaves everything else to commander', () => {
    for (const argv of [
      [],
      ['--help'],
      ['ps', '--help'],
      ['ps', '-h'],
      ['help', 'ps'],
      ['--version'],
      ['describe', 'pod', 'a'],
      ['ps', '-o', 'yaml'],
      ['ps', '-o', 'nonsense'],
      ['ps', '-owide'],
      ['ps', '-o'],
      ['ps', '-o', 'wide', '-o', 'json'],
      ['ps', '--log-level', 'warn'],
      ['--log-level', 'loud', 'ps'],
      ['--root', '/a', '--root', '/b', 'ps'],
      ['--root=', 'ps'],
      ['--root', '-x', 'ps'],
      ['-n', 'x', 'ps'],
      ['ps', '--', 'a'],
      ['ps', '-x'],
      ['ps', 'a', '-l', 'app=x'],
      ['status', '--namespace'],
      ['pss'],
    ]) {
      assert.equal(parseFastRead(argv), undefined, argv.join(' '));
    }
  });

  test('reads a 200 with Content-Length from node:http; an error status, a chunked body, a short body or no socket: undefined', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-fast-read-'));
    const socket = path.join(dir, 'api.sock');
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        if (req.url === '/v1/pods') {
          const text = JSON.stringify({ echo: JSON.parse(body) as unknown, method: req.method, ünïcode: 'ok' });
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
        } else if (req.url === '/v1/status') {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.write('{"chunked":');
          res.end('true}');
        } else {
          const text = '{"error":{"code":"ERR_NOT_FOUND","message":"no"}}';
          res.writeHead(404, { 'content-type': 'application/json', 'content-length': text.length }).end(text);
        }
      });
    });
    await new Promise<void>((r) => server.listen(socket, r));
    try {
      assert.deepEqual(await askDaemon(socket, 'pods', { keys: ['default/a'] }), { echo: { keys: ['default/a'] }, method: 'POST', ünïcode: 'ok' });
      assert.equal(await askDaemon(socket, 'status', {}), undefined);
      assert.equal(await askDaemon(socket, 'nope', {}), undefined);
      assert.equal(await askDaemon(path.join(dir, 'missing.sock'), 'pods', {}), undefined);
    } finally {
      await new Promise((r) => server.close(r));
      rmSync(dir, { recursive: true, force: true });
    }
    assert.equal(responseBody(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n[1,2')), 'partial', 'short body');
    assert.equal(responseBody(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n')), 'partial', 'no end of head');
    assert.equal(responseBody(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[1]')), 'unusable', 'more than announced');
    assert.equal(responseBody(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n[]')), 'unusable');
    assert.equal(responseBody(Buffer.from('HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}')), 'unusable');
    assert.deepEqual(responseBody(Buffer.from('HTTP/1.1 200 OK\r\ncontent-length:  2 \r\n\r\n[]')), { body: '[]' });
  });
});

test('regression namespace-flag-ignored-by-listings: an explicit -n without names lists that namespace only; no -n lists all', async () => {
  const { podQuery } = await import('../../src/lib/pod-views.js');
  assert.deepEqual(parseFastRead(['ps', '-n', 'prod'])?.query, { namespace: 'prod' });
  assert.deepEqual(parseFastRead(['status', '--namespace=prod'])?.query, { namespace: 'prod' });
  assert.deepEqual(parseFastRead(['ps'])?.query, {});
  assert.deepEqual(parseFastRead(['ps', '-n', 'prod', 'web'])?.query, { keys: ['prod/web'] });
  assert.deepEqual(podQuery('ps', [], { namespace: 'default', namespaceGiven: false }), {});
  assert.deepEqual(podQuery('ps', [], { namespace: 'default', namespaceGiven: true }), { namespace: 'default' });
});

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { IdleGc } from '../../src/daemon/idle-gc.js';
import { serveApi } from '../../src/daemon/server.js';
import type { BerthService } from '../../src/daemon/service.js';
import { createLogger } from '../../src/lib/log.js';

/**
 * Regression idle-gc-runs-during-socket-pull: `berth up` ran its idle collection (a full V8 GC plus
 * malloc_trim, ~30–40 ms of the main thread) one second after its queue went idle, even while it
 * was answering a pull or a run handed over its socket, which went through no queue: the
 * collection landed in the middle of the first pull after a start. Now the API counts the
 * requests it is answering, and a collection that comes due meanwhile waits for the last one.
 */

test('regression idle-gc-runs-during-socket-pull: a due collection waits for the busy work, then runs once', async () => {
  let busy = true;
  let collected = 0;
  const gc = new IdleGc({ collect: () => collected++, busy: () => busy, delayMs: 20, minIntervalMs: 0 });
  try {
    gc.idle();
    await sleep(80);
    assert.equal(collected, 0, 'collected while busy');
    busy = false;
    gc.workEnded(false);
    await sleep(80);
    assert.equal(collected, 1, 'the deferred collection ran once the work ended');
    // Light work ending with nothing deferred arms nothing; heavy work (a pull, a run) does.
    gc.workEnded(false);
    await sleep(60);
    assert.equal(collected, 1);
    gc.workEnded(true);
    await sleep(60);
    assert.equal(collected, 2);
  } finally {
    gc.stop();
  }
});

test('regression idle-gc-runs-during-socket-pull: at most one collection per minimum interval, and a stream of idle points does not put it off', async () => {
  let collected = 0;
  const gc = new IdleGc({ collect: () => collected++, busy: () => false, delayMs: 10, minIntervalMs: 300 });
  try {
    gc.idle();
    await sleep(60);
    assert.equal(collected, 1);
    gc.idle();
    await sleep(100);
    assert.equal(collected, 1, 'a second collection within the interval');
    await sleep(250);
    assert.equal(collected, 2);
    // Idle points every 20 ms (one run after another): the collection still comes when due.
    const t0 = Date.now();
    while (Date.now() - t0 < 600) {
      gc.idle();
      await sleep(20);
    }
    assert.ok(collected >= 3, 'idle points put the collection off');
  } finally {
    gc.stop();
  }
});

/** The daemon's API on a socket of its own, with `metrics` as its only answer, recording what it reports idle. */
async function apiWith(metrics: () => Promise<string>): Promise<{ api: Awaited<ReturnType<typeof serveApi>>; socket: string; idle: string[]; close: () => Promise<void> }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-api-idle-'));
  const socket = path.join(dir, 'berth.sock');
  const idle: string[] = [];
  const api = await serveApi({ socket, service: {} as BerthService, log: createLogger('silent'), onEvent: () => () => undefined, metrics, onIdle: (p) => idle.push(p) });
  return {
    api,
    socket,
    idle,
    close: async () => {
      await api.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

test('regression idle-gc-runs-during-socket-pull: the API counts a request until its answer is done and then reports idle', async () => {
  let release!: (text: string) => void;
  const { api, socket, idle, close } = await apiWith(() => new Promise<string>((resolve) => (release = resolve)));
  try {
    assert.equal(api.busy(), 0);
    const answer = new Promise<string>((resolve, reject) => {
      const req = request({ socketPath: socket, path: '/metrics', method: 'GET' }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => resolve(body)).on('error', reject);
      });
      req.on('error', reject).end();
    });
    for (let i = 0; i < 100 && api.busy() === 0; i++) await sleep(10);
    assert.equal(api.busy(), 1, 'the request being answered is not counted');
    assert.deepEqual(idle, []);
    release('berth_up 1\n');
    assert.equal(await answer, 'berth_up 1\n');
    for (let i = 0; i < 100 && idle.length === 0; i++) await sleep(10);
    assert.equal(api.busy(), 0);
    assert.deepEqual(idle, ['/metrics']);
  } finally {
    await close();
  }
});

/**
 * Regression api-request-target-not-a-url-ends-daemon: the idle bookkeeping above parsed the
 * request target a second time after the answer, outside any catch; a target that is no URL
 * (`GET http://[`, which node's HTTP parser accepts) threw there and the unhandled rejection
 * ended the process. Now it is answered 400 and the server goes on answering.
 */
test('regression api-request-target-not-a-url-ends-daemon: a target that is no URL gets a 400 and the API keeps answering', async () => {
  const { api, socket, idle, close } = await apiWith(async () => 'berth_up 1\n');
  const raw = (target: string): Promise<string> =>
    new Promise((resolve, reject) => {
      const s = connect(socket, () => s.write(`GET ${target} HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n\r\n`));
      let text = '';
      s.setEncoding('utf8').on('data', (c: string) => (text += c)).on('close', () => resolve(text)).on('error', reject);
    });
  try {
    const bad = await raw('http://[');
    assert.match(bad, /^HTTP\/1\.1 400 /);
    assert.match(bad, /ERR_INVALID_ARGUMENT/);
    await sleep(50);
    const good = await raw('/metrics');
    assert.match(good, /^HTTP\/1\.1 200 /);
    assert.match(good, /berth_up 1/);
    assert.equal(api.busy(), 0);
    assert.deepEqual(idle, ['/metrics']);
  } finally {
    await close();
  }
});

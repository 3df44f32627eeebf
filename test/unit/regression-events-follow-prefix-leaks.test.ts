import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { DaemonClient } from '../../src/daemon/client.js';
import { serveApi } from '../../src/daemon/server.js';
import type { BerthService } from '../../src/daemon/service.js';
import { createLogger } from '../../src/lib/log.js';
import type { EventRecord } from '../../src/runtime/index.js';
import { eventKeyMatches, StateStore } from '../../src/runtime/state/index.js';

/**
 * Regression events-follow-prefix-leaks: `berth events --follow --for web` printed the events of
 * pod `web2` too: the daemon's followed stream filtered live events with `key.startsWith(prefix)`,
 * while its backlog (listEvents) already took the key itself or keys under it (`key/…`). Now both
 * take the same rule. A real state store and the daemon's API on a socket of its own; the
 * service answers events from that store, the Runtime's fan-out is a set of listeners.
 */

test('regression events-follow-prefix-leaks: the followed stream of pod web has web and web/… events, backlog and live, never web2', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-follow-'));
  const store = new StateStore(dir);
  const listeners = new Set<(e: EventRecord) => void>();
  const add = (key: string): void => {
    const e = store.addEvent(key, 'Started', `event of ${key}`);
    for (const fn of listeners) fn(e);
  };
  const service = { events: (req: Parameters<StateStore['listEvents']>[0]) => store.listEvents(req) } as unknown as BerthService;
  const socket = path.join(dir, 'berth.sock');
  const api = await serveApi({ socket, service, log: createLogger('silent'), metrics: async () => '', onEvent: (fn) => (listeners.add(fn), () => listeners.delete(fn)) });
  const ac = new AbortController();
  try {
    for (const k of ['pod/default/web', 'pod/default/web2', 'pod/default/web/app']) add(k);
    const seen: string[] = [];
    const following = new DaemonClient(socket, process.pid).follow({ keyPrefix: 'pod/default/web', limit: '100' }, (e) => seen.push((e as EventRecord).key), ac.signal);
    for (let i = 0; i < 100 && seen.length < 2; i++) await sleep(10);
    for (const k of ['pod/default/web2', 'pod/default/web2/app', 'pod/default/web', 'pod/default/web/app', 'pod/default/webx']) add(k);
    for (let i = 0; i < 100 && seen.length < 4; i++) await sleep(10);
    await sleep(50);
    ac.abort();
    await following;
    assert.deepEqual(seen, ['pod/default/web', 'pod/default/web/app', 'pod/default/web', 'pod/default/web/app']);
  } finally {
    ac.abort();
    await api.close();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('regression events-follow-prefix-leaks: eventKeyMatches is the rule of listEvents', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-follow-'));
  const store = new StateStore(dir);
  try {
    const keys = ['pod/default/web', 'pod/default/web2', 'pod/default/web/app', 'pod/default/we', 'image/r/x:1'];
    for (const k of keys) store.addEvent(k, 'Started', k);
    for (const prefix of ['', 'pod/default/web', 'pod/default/we', 'image/r']) {
      assert.deepEqual(keys.filter((k) => eventKeyMatches(k, prefix)), store.listEvents({ keyPrefix: prefix }).map((e) => e.key), prefix);
    }
  } finally {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

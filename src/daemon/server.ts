import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { promises as fsp } from 'node:fs';
import { BerthError, isBerthError, messageOf } from '../lib/errors.js';
import type { Logger } from '../lib/log.js';
import { eventKeyMatches, type EventRecord } from '../runtime/index.js';
import { dispatch, type BerthService } from './service.js';
import { answerNdjson } from './ndjson.js';
import { streamPull } from './pull.js';
import { streamRun } from './run.js';

/**
 * The daemon's API: HTTP/1.1 on a unix socket in the state dir, mode 0600 (root only), no
 * TCP. Every route is `POST /v1/<method>` with a JSON body and a JSON answer, except
 * `GET /v1/ping`, `GET /v1/events/follow` (NDJSON, one event per line, until closed),
 * `GET /metrics` (Prometheus text, the same renderer as `--metrics-addr`), `POST /v1/run` (NDJSON:
 * a one-off container's output and exit code, daemon/run.ts) and `POST /v1/images/pull` (NDJSON:
 * a pull's progress and result, daemon/pull.ts).
 * Errors answer `{ "error": { "code": "ERR_…", "message": "…" } }` so the CLI rethrows
 * the same coded error and exits as the in-process path would.
 */

const MAX_BODY = 64 * 1024 * 1024;

export interface ApiServer {
  close(): Promise<void>;
  /** Requests being answered (a followed event stream counts only while it sends its backlog). */
  busy(): number;
}

export async function serveApi(o: {
  socket: string;
  service: BerthService;
  log: Logger;
  onEvent: (fn: (e: EventRecord) => void) => () => void;
  /** Renders the Prometheus text for `GET /metrics`. */
  metrics: () => Promise<string>;
  /**
   * Called when the last request being answered ends, with its path: the daemon's idle collection
   * waits for this instead of running in the middle of a pull or run handed over the socket.
   */
  onIdle?: (path: string) => void;
}): Promise<ApiServer> {
  // The daemon lock is held: a socket file left here is a dead daemon's.
  await fsp.rm(o.socket, { force: true });
  const followers = new Set<ServerResponse>();
  let inflight = 0;
  const server: Server = createServer((req, res) => {
    // Parsed once, here: a target that is no URL (`GET http://[`) is answered 400 and goes no
    // further; parsed again after the answer it threw outside any catch and the unhandled
    // rejection ended the daemon (regression api-request-target-not-a-url-ends-daemon).
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://berth');
    } catch {
      reply(res, new BerthError('ERR_INVALID_ARGUMENT', `api: request target ${JSON.stringify(req.url)} is not a path`));
      return;
    }
    inflight++;
    // Until the route's promise settles: a pull whose client went away still runs to its end.
    void route(req, url, res)
      .catch((err: unknown) => reply(res, err))
      .finally(() => {
        if (--inflight === 0) o.onIdle?.(url.pathname);
      });
  });
  const route = async (req: IncomingMessage, url: URL, res: ServerResponse): Promise<void> => {
    if (req.method === 'GET' && url.pathname === '/v1/ping') return json(res, 200, { pid: process.pid });
    if (req.method === 'GET' && url.pathname === '/v1/events/follow') return follow(url, res);
    if (req.method === 'GET' && url.pathname === '/metrics') {
      const text = await o.metrics();
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4', 'content-length': Buffer.byteLength(text) }).end(text);
      return;
    }
    if (req.method === 'POST' && url.pathname === '/v1/run') return streamRun(o.service, await readJson(req), res);
    if (req.method === 'POST' && url.pathname === '/v1/images/pull') return streamPull(o.service, await readJson(req), res);
    if (req.method !== 'POST' || !url.pathname.startsWith('/v1/')) throw new BerthError('ERR_NOT_FOUND', `api ${req.method ?? ''} ${url.pathname}: no such route`);
    const body = await readJson(req);
    if ((req.headers['accept'] ?? '').includes('application/x-ndjson')) {
      // Streamed: `{"progress": …}` per step start and end, then `{"result": …}` or `{"error": …}`.
      return answerNdjson(res, (send) => dispatch(o.service, url.pathname.slice(4), body, (e) => send({ progress: e })));
    }
    return json(res, 200, await dispatch(o.service, url.pathname.slice(4), body));
  };
  const follow = (url: URL, res: ServerResponse): void => {
    const prefix = url.searchParams.get('keyPrefix') ?? '';
    res.writeHead(200, { 'content-type': 'application/x-ndjson' });
    followers.add(res);
    // Subscribe first, then send the backlog: nothing falls between the two.
    const queued: EventRecord[] = [];
    let live = false;
    let last = Number(url.searchParams.get('afterId') ?? '0') || 0;
    const send = (e: EventRecord): void => {
      // The key or keys under it, as the backlog's query: `--for web` is not `web2` (regression
      // events-follow-prefix-leaks).
      if (e.id <= last || !eventKeyMatches(e.key, prefix)) return;
      last = e.id;
      res.write(`${JSON.stringify(e)}\n`);
    };
    const stop = o.onEvent((e) => (live ? send(e) : queued.push(e)));
    const since = Number(url.searchParams.get('sinceTs') ?? '0') || 0;
    for (const e of o.service.events({ afterId: last, sinceTs: since, keyPrefix: prefix, limit: Number(url.searchParams.get('limit') ?? '100') || 100 })) send(e);
    for (const e of queued) send(e);
    live = true;
    res.on('close', () => {
      stop();
      followers.delete(res);
    });
  };
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.socket, () => resolve());
  });
  await fsp.chmod(o.socket, 0o600);
  o.log.info({ socket: o.socket }, 'api listening');
  return {
    busy: () => inflight,
    close: async () => {
      for (const r of followers) r.end();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await fsp.rm(o.socket, { force: true });
    },
  };
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > MAX_BODY) throw new BerthError('ERR_INVALID_ARGUMENT', `api request: body exceeds ${MAX_BODY} bytes`);
    chunks.push(c as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  try {
    return text === '' ? {} : (JSON.parse(text) as unknown);
  } catch (err) {
    throw new BerthError('ERR_INVALID_ARGUMENT', `api request: body is not JSON: ${messageOf(err)}`);
  }
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function reply(res: ServerResponse, err: unknown): void {
  const code = isBerthError(err) ? err.code : 'ERR_INTERNAL';
  const status = code === 'ERR_NOT_FOUND' ? 404 : code.startsWith('ERR_INVALID') ? 400 : 500;
  if (res.headersSent) {
    res.end();
    return;
  }
  json(res, status, { error: { code, message: messageOf(err) } });
}

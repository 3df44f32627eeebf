import { request, type IncomingMessage } from 'node:http';
import { BerthError, isErrorCode } from '../lib/errors.js';

/**
 * The CLI's side of the daemon socket. Kept to node:http and lib/errors so a command that
 * talks to a running daemon loads neither SQLite nor undici nor the manifest validator.
 */
export class DaemonClient {
  constructor(
    readonly socket: string,
    readonly pid: number,
  ) {}

  /** POST /v1/<method>; a daemon error is rethrown with its code (same exit code as in-process). */
  call<T>(method: string, body: unknown = {}): Promise<T> {
    const text = JSON.stringify(body);
    return new Promise<T>((resolve, reject) => {
      const req = request(
        { socketPath: this.socket, path: `/v1/${method}`, method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) } },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            let parsed: unknown;
            try {
              parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
            } catch {
              reject(new BerthError('ERR_INTERNAL', `daemon ${method}: answer is not JSON (status ${res.statusCode ?? '?'})`));
              return;
            }
            const err = (parsed as { error?: { code?: string; message?: string } }).error;
            if ((res.statusCode ?? 500) >= 400 || err !== undefined) {
              reject(new BerthError(isErrorCode(err?.code) ? err.code : 'ERR_INTERNAL', err?.message ?? `daemon ${method}: status ${res.statusCode ?? '?'}`));
              return;
            }
            resolve(parsed as T);
          });
          res.on('error', reject);
        },
      );
      req.on('error', (err) => reject(new BerthError('ERR_NETWORK', `daemon ${method}: ${err.message} (did berth up stop?)`, { cause: err })));
      req.end(text);
    });
  }

  /**
   * POST /v1/<method> answered as a stream: `onProgress` gets each step as it starts and ends,
   * the promise the final result (or the daemon's coded error).
   */
  callStream<T>(method: string, body: unknown, onProgress: (e: unknown) => void): Promise<T> {
    const text = JSON.stringify(body);
    return new Promise<T>((resolve, reject) => {
      const req = request(
        {
          socketPath: this.socket,
          path: `/v1/${method}`,
          method: 'POST',
          headers: { 'content-type': 'application/json', accept: 'application/x-ndjson', 'content-length': Buffer.byteLength(text) },
        },
        (res) => {
          let settled = false;
          onJsonLines(res, (v) => {
            const m = v as { progress?: unknown; result?: unknown; error?: { code?: string; message?: string } };
            if (m.progress !== undefined) onProgress(m.progress);
            else if (m.error !== undefined) {
              settled = true;
              reject(new BerthError(isErrorCode(m.error.code) ? m.error.code : 'ERR_INTERNAL', m.error.message ?? `daemon ${method}: failed`));
            } else {
              settled = true;
              resolve(m.result as T);
            }
          });
          res.on('end', () => {
            if (!settled) reject(new BerthError('ERR_NETWORK', `daemon ${method}: the answer ended early (did berth up stop?)`));
          });
          res.on('error', reject);
        },
      );
      req.on('error', (err) => reject(new BerthError('ERR_NETWORK', `daemon ${method}: ${err.message} (did berth up stop?)`, { cause: err })));
      req.end(text);
    });
  }

  /** GET /v1/events/follow: calls `onLine` per event until `signal` aborts or the daemon stops. */
  follow(query: Record<string, string>, onEvent: (e: unknown) => void, signal: AbortSignal): Promise<void> {
    const qs = new URLSearchParams(query).toString();
    return new Promise<void>((resolve, reject) => {
      const req = request({ socketPath: this.socket, path: `/v1/events/follow?${qs}`, method: 'GET', signal }, (res) => {
        onJsonLines(res, onEvent);
        res.on('end', () => resolve());
        res.on('error', () => resolve());
      });
      req.on('error', (err) => (signal.aborted ? resolve() : reject(new BerthError('ERR_NETWORK', `daemon events: ${err.message}`, { cause: err }))));
      req.end();
    });
  }
}

/** Calls `fn` with each JSON value of a newline-delimited stream (NDJSON). */
function onJsonLines(res: IncomingMessage, fn: (v: unknown) => void): void {
  let buf = '';
  res.setEncoding('utf8');
  res.on('data', (c: string) => {
    buf += c;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line !== '') fn(JSON.parse(line));
    }
  });
}

/** The running daemon on `socket`, or undefined when none answers (no socket, refused, silent). */
export function connectDaemon(socket: string, timeoutMs = 2000): Promise<DaemonClient | undefined> {
  return new Promise((resolve) => {
    const req = request({ socketPath: socket, path: '/v1/ping', method: 'GET', timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        try {
          const { pid } = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { pid: number };
          resolve(new DaemonClient(socket, pid));
        } catch {
          resolve(undefined);
        }
      });
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(undefined));
    req.end();
  });
}

import { connect } from 'node:net';
import { StringDecoder } from 'node:string_decoder';

/**
 * One streamed request of the CLI's fast paths (lib/fast-run, lib/fast-pull) on the daemon's
 * socket, with node:net alone (node:http's client costs milliseconds more to load): an HTTP/1.0
 * POST, so the daemon answers without chunked framing and closes after its last line, and an
 * NDJSON body handed over one parsed line at a time.
 *
 * Outcomes: `declined` — no daemon, no answer within FIRST_BYTE_MS, or an answer other than a
 * 200 (an older daemon without the route, a refused request): nothing was handed to `onMessage`
 * and the caller takes its normal path; `done` — `onMessage` returned true for a final line;
 * `cut` — the connection closed after a 200 but before a final line (the daemon stopped).
 */

/** How long the daemon has to answer the request's headers (what it then streams has no deadline here). */
const FIRST_BYTE_MS = 2000;

export type StreamOutcome = 'declined' | 'done' | 'cut';

/** POST `route` with `body` as JSON; `onMessage` gets each line's JSON value and returns true for the last one. */
export function postNdjson(socket: string, route: string, body: unknown, onMessage: (m: unknown) => boolean): Promise<StreamOutcome> {
  const text = JSON.stringify(body);
  return new Promise((resolve) => {
    const s = connect(socket);
    let head: Buffer | undefined = Buffer.alloc(0);
    let carry = '';
    const utf8 = new StringDecoder('utf8');
    let done: StreamOutcome | undefined;
    const finish = (v: StreamOutcome): void => {
      if (done !== undefined) return;
      done = v;
      clearTimeout(timer);
      s.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => finish('declined'), FIRST_BYTE_MS);
    const onLine = (line: string): void => {
      if (line === '' || done !== undefined) return;
      let m: unknown;
      try {
        m = JSON.parse(line);
      } catch {
        return;
      }
      if (onMessage(m)) finish('done');
    };
    s.on('data', (c: Buffer) => {
      if (head !== undefined) {
        head = Buffer.concat([head, c]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) return;
        clearTimeout(timer);
        if (!/^HTTP\/1\.[01] 200 /.test(head.subarray(0, end).toString('latin1'))) return finish('declined');
        c = head.subarray(end + 4);
        head = undefined;
      }
      const lines = (carry + utf8.write(c)).split('\n');
      carry = lines.pop() ?? '';
      for (const l of lines) onLine(l);
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      if (head !== undefined) return finish('declined');
      onLine(carry + utf8.end());
      finish('cut');
    });
    s.write(`POST ${route} HTTP/1.0\r\nHost: berth\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\n\r\n${text}`);
  });
}

import type { ServerResponse } from 'node:http';
import { isBerthError, messageOf } from '../lib/errors.js';

/**
 * A streamed answer on the daemon's socket: a 200 with NDJSON, its headers sent at once (the
 * client's first-byte deadline must not cover the work: a pull or an apply can take minutes), the
 * lines `work` sends as it goes, then one `{"result": …}` with what it returns or one
 * `{"error": {code, message}}` with what it throws. A client that went away is not written to;
 * the work still runs to its end.
 */
export async function answerNdjson(res: ServerResponse, work: (send: (line: unknown) => void) => Promise<unknown>): Promise<void> {
  res.on('error', () => undefined);
  const send = (line: unknown): void => {
    if (!res.destroyed) res.write(`${JSON.stringify(line)}\n`);
  };
  res.writeHead(200, { 'content-type': 'application/x-ndjson' });
  res.flushHeaders();
  let last: unknown;
  try {
    last = { result: await work(send) };
  } catch (err) {
    last = { error: { code: isBerthError(err) ? err.code : 'ERR_INTERNAL', message: messageOf(err) } };
  }
  if (!res.destroyed) res.end(`${JSON.stringify(last)}\n`);
}

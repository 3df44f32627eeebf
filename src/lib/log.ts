import { createRequire } from 'node:module';
import type { Logger, Level } from 'pino';

export type { Logger };

/** JSON logs to stderr (fd 2); stdout is for tables and human output. */
export function createLogger(level: Level | 'silent' = 'info'): Logger {
  // Loaded on first use: a command answered by the daemon (ps, status) logs nothing, and
  // loading pino was a fifth of its start-up.
  const { pino } = createRequire(import.meta.url)('pino') as typeof import('pino');
  return pino(
    {
      level,
      base: { pid: process.pid },
      redact: {
        paths: ['authorization', 'headers.authorization', '*.authorization', 'token', '*.token', 'password', '*.password'],
        censor: '[redacted]',
      },
    },
    pino.destination({ fd: 2, sync: true }),
  );
}

/** Strips userinfo and query strings from URLs before they reach logs or error messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    if (u.search !== '') u.search = '?[redacted]';
    return u.toString();
  } catch {
    return '[unparseable url]';
  }
}

/** Escapes control characters so hostile names cannot forge log lines. */
export function printable(s: string): string {
  return s.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

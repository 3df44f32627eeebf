/**
 * Injected crash points for the crash suite (issue 15, test/e2e/issue-15-crash-points.test.ts).
 *
 * `BERTH_CRASH_AT=NAME` (or `NAME:N`, the N-th time the point is reached, counted from 1) makes
 * the process SIGKILL itself when it reaches `crashPoint(NAME)`: no finally blocks, no exit
 * handlers, no flush — exactly a `kill -9` that lands there. This is the one module that reads
 * `process.env` outside cli.ts (STYLE: config is built in cli.ts), because a crash point must be
 * reachable from any depth without threading a test switch through every constructor, and must
 * be fixed for the process's whole life (read once, at load).
 *
 * Inert in normal runs: with the variable unset, a call is one string comparison.
 */

const spec = process.env['BERTH_CRASH_AT'] ?? '';
const colon = spec.lastIndexOf(':');
const target = colon > 0 && /^\d+$/.test(spec.slice(colon + 1)) ? spec.slice(0, colon) : spec;
const nth = colon > 0 && target !== spec ? Math.max(1, Number(spec.slice(colon + 1))) : 1;
let hits = 0;

/** Kills this process with SIGKILL when `BERTH_CRASH_AT` names this point (and its hit count). */
export function crashPoint(name: string): void {
  if (name !== target) return;
  if (++hits < nth) return;
  process.kill(process.pid, 'SIGKILL');
}

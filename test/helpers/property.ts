/**
 * Settings shared by the property tests (test/*\/property-*.test.ts, docs/property-tests.md).
 *
 * CI runs them with a fixed seed and a bounded number of runs, as ordinary tests. For longer runs
 * (bench/reliability, or by hand): BERTH_PROPERTY_RUNS raises each property's run count to at
 * least that many (a property whose CI default is higher keeps its default); BERTH_PROPERTY_SEED
 * replaces the seed. A failure reports the seed, the path and the counterexample, which replay
 * with fast-check's `{ seed, path }`; BERTH_PROPERTY_SHRINK=1 also shrinks it (slow on disk).
 */
import { BerthError } from '../../src/lib/errors.js';

export const PROPERTY_SEED = intFromEnv('BERTH_PROPERTY_SEED', 20261130);

/** The run count for a property: its CI default, or BERTH_PROPERTY_RUNS when that is more. */
export function propertyRuns(ciDefault: number): number {
  return Math.max(ciDefault, intFromEnv('BERTH_PROPERTY_RUNS', ciDefault));
}

/** fast-check parameters for one property. */
export function propertyParams(ciDefault: number): { seed: number; numRuns: number; endOnFailure: boolean; includeErrorInReport: boolean } {
  // endOnFailure: shrinking a case that touches the disk costs minutes; the first failure is reported as found.
  return { seed: PROPERTY_SEED, numRuns: propertyRuns(ciDefault), endOnFailure: process.env['BERTH_PROPERTY_SHRINK'] !== '1', includeErrorInReport: true };
}

function intFromEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n)) throw new Error(`${name}=${raw} is not an integer`);
  return n;
}

/** What one fuzzed call ended in. */
export type Ending = { ok: true; value: unknown } | { ok: false; code: string; message: string };

/**
 * Runs `work` against a timer: it must settle within `ms`, with a value or a BerthError.
 * Anything else (a hang, a TypeError, a plain Error, a non-Error throw) fails with a message that
 * names the input (`what`).
 */
export async function settlesAsBerth(what: string, ms: number, work: () => Promise<unknown>): Promise<Ending> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<'hang'>((resolve) => {
    timer = setTimeout(() => resolve('hang'), ms);
  });
  try {
    const out = await Promise.race([work().then((value) => ({ value }), (error: unknown) => ({ error })), hang]);
    if (out === 'hang') throw new Error(`${what}: did not settle within ${ms} ms`);
    if ('value' in out) return { ok: true, value: out.value };
    return asEnding(what, out.error);
  } finally {
    clearTimeout(timer);
  }
}

/** The synchronous form: a value or a BerthError, within `ms` (measured, since a sync call cannot be raced). */
export function returnsOrBerth(what: string, ms: number, work: () => unknown): Ending {
  const started = performance.now();
  let ending: Ending;
  try {
    ending = { ok: true, value: work() };
  } catch (err) {
    ending = asEnding(what, err);
  }
  const took = performance.now() - started;
  if (took > ms) throw new Error(`${what}: took ${Math.round(took)} ms (bound ${ms} ms)`);
  return ending;
}

function asEnding(what: string, err: unknown): Ending {
  if (err instanceof BerthError && typeof err.code === 'string' && err.code.startsWith('ERR_')) return { ok: false, code: err.code, message: err.message };
  const kind = err instanceof Error ? `${err.constructor.name}: ${err.message}\n${err.stack ?? ''}` : `non-Error ${typeof err}: ${String(err)}`;
  throw new Error(`${what}: ended in something other than a BerthError: ${kind}`);
}

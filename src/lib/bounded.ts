/**
 * Runs `fn` over `items`, at most `limit` calls at a time, in order of `items`.
 *
 * The first rejection aborts the signal handed to every call (and no further call starts);
 * this function then waits until every call that started has settled, and only then rejects
 * with that first error. Later rejections (typically the siblings' abort errors) are dropped.
 * An abort of `opts.signal` works the same way, rejecting with the first error it causes.
 *
 * Why settle before rejecting: the layers of a pull are downloaded this way under the state
 * lock. Returning while a sibling still writes into the content store would let the caller
 * release the lock (and another process sweep the ingest directory) under a live writer
 * (issue 14).
 */
export async function eachBounded<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T, signal: AbortSignal) => Promise<void>,
  opts: { signal?: AbortSignal } = {},
): Promise<void> {
  const stop = new AbortController();
  const signal = opts.signal === undefined ? stop.signal : AbortSignal.any([opts.signal, stop.signal]);
  let failure: { err: unknown } | undefined;
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length && !signal.aborted) {
      const item = items[next++] as T;
      try {
        await fn(item, signal);
      } catch (err) {
        failure ??= { err };
        stop.abort(err);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(Math.max(1, limit), items.length) }, worker));
  if (failure !== undefined) throw failure.err;
  // The caller's signal fired between calls: nothing failed, but not every item ran.
  if (opts.signal?.aborted === true) throw opts.signal.reason;
}

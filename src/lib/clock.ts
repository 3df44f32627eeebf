/**
 * Time as a dependency. Anything that waits or schedules (queue backoff, resyncs, deadlines)
 * takes a Clock, so tests can drive it with FakeClock instead of sleeping.
 */
export interface Clock {
  /** Milliseconds since the epoch (or since the fake clock's start). */
  now(): number;
  /** Calls `fn` once, `ms` from now. The handle is only good for `clearTimeout` on the same clock. */
  setTimeout(fn: () => void, ms: number): unknown;
  /** Cancels a timer; unknown or already fired handles are ignored. */
  clearTimeout(handle: unknown): void;
}

// Node fires timers longer than 2^31-1 ms after 1 ms; clamping makes a very long wait fire
// early instead, which every caller (level-triggered requeues, deadlines rechecked) tolerates.
const MAX_TIMER_MS = 2 ** 31 - 1;

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, Math.min(Math.max(0, ms), MAX_TIMER_MS)),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout> | undefined),
};

interface FakeTimer {
  readonly at: number;
  readonly seq: number;
  readonly fn: () => void;
}

/**
 * A clock that moves only when told. Timers fire in (time, creation) order; a timer scheduled
 * by a firing callback fires in the same `advance` if it is due by then.
 */
export class FakeClock implements Clock {
  #now: number;
  #seq = 0;
  readonly #timers = new Map<number, FakeTimer>();

  constructor(start = 0) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.#seq;
    this.#timers.set(id, { at: this.#now + Math.max(0, Number.isFinite(ms) ? ms : 0), seq: id, fn });
    return id;
  }

  clearTimeout(handle: unknown): void {
    if (typeof handle === 'number') this.#timers.delete(handle);
  }

  /** Number of timers not yet fired or cleared. */
  timerCount(): number {
    return this.#timers.size;
  }

  /** When the earliest timer is due, if any. */
  nextTimerAt(): number | undefined {
    return this.#earliest(Infinity)?.[1].at;
  }

  /** Moves time forward by `ms`, firing due timers synchronously. Callback errors propagate. */
  advance(ms: number): void {
    const until = this.#now + ms;
    for (let due = this.#earliest(until); due !== undefined; due = this.#earliest(until)) {
      this.#fire(due);
    }
    this.#now = until;
  }

  /**
   * Like `advance`, but lets promise continuations and `setImmediate` callbacks run before and
   * after every timer, so async code sees each timer at its own time. `advanceAsync(0)` just
   * lets pending async work settle.
   */
  async advanceAsync(ms: number): Promise<void> {
    const until = this.#now + ms;
    await settle();
    for (let due = this.#earliest(until); due !== undefined; due = this.#earliest(until)) {
      this.#fire(due);
      await settle();
    }
    this.#now = until;
    await settle();
  }

  #earliest(until: number): [number, FakeTimer] | undefined {
    let best: [number, FakeTimer] | undefined;
    for (const entry of this.#timers) {
      const t = entry[1];
      if (t.at > until) continue;
      if (best === undefined || t.at < best[1].at || (t.at === best[1].at && t.seq < best[1].seq)) best = entry;
    }
    return best;
  }

  #fire([id, timer]: [number, FakeTimer]): void {
    this.#timers.delete(id);
    this.#now = Math.max(this.#now, timer.at);
    timer.fn();
  }
}

// A macrotask turn runs after the microtask queue has drained, chained continuations included.
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

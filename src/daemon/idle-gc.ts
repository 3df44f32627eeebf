/**
 * When the daemon collects its garbage (daemon/up.ts; reexec.ts `idleCollector`): a full V8
 * collection plus malloc_trim takes tens of milliseconds of the main thread, so it runs only at an
 * idle point — the controller's queue empty and no request on the socket being answered. A
 * timer that comes due while a pull or a run handed over the socket is still going does not
 * collect: it asks again delayMs later (regression idle-gc-runs-during-socket-pull).
 */
export class IdleGc {
  private timer: NodeJS.Timeout | undefined;
  private last = 0;

  constructor(
    private readonly o: {
      collect: () => void;
      /** True while work the collection must not interrupt runs. */
      busy: () => boolean;
      /** How long an idle point must last before collecting. */
      delayMs: number;
      /** At most one collection per this interval. */
      minIntervalMs: number;
      /** Told how long each collection took. */
      done?: (ms: number) => void;
    },
  ) {}

  /**
   * An idle point: collect after delayMs (and not sooner than minIntervalMs after the last one)
   * unless busy by then. A collection already due keeps its time: a stream of runs, each an idle
   * point, would otherwise put it off until the stream ends.
   */
  idle(): void {
    if (this.timer !== undefined) return;
    this.timer = setTimeout(() => this.due(), Math.max(this.o.delayMs, this.last + this.o.minIntervalMs - Date.now()));
    this.timer.unref();
  }

  /** A request on the socket has ended; `heavy` (a pull, a run) left garbage worth collecting. */
  workEnded(heavy: boolean): void {
    if (heavy) this.idle();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private due(): void {
    this.timer = undefined;
    if (this.o.busy()) {
      this.idle();
      return;
    }
    this.last = Date.now();
    this.o.collect();
    this.o.done?.(Date.now() - this.last);
  }
}

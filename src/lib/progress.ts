import { systemClock, type Clock } from './clock.js';

/**
 * Live progress inside a step, and how the CLI shows it (issue 12): a stop waiting out its
 * termination grace period and the layers of a pull as their bytes are written. The runtime
 * reports these waits (`StepWait`), the controller tags them with the step they belong to, the
 * daemon streams them as NDJSON like the step starts and ends, and `ProgressRenderer` prints:
 * on a TTY a block of status lines rewritten in place (countdown, per-layer bytes, rate, ETA);
 * otherwise plain lines — one per grace wait, one per layer when it is complete.
 */

/** One layer of a pull being downloaded (the current attempt: a retry starts again at 0). */
export interface LayerProgress {
  digest: string;
  /** Size from the manifest. */
  size: number;
  /** Bytes written to the content store so far (not merely received). */
  written: number;
  /** Since this attempt began. */
  ms: number;
  done: boolean;
}

export type StepWait =
  /**
   * A stop sent `signal` and waits up to `graceMs` (until `killAt`, epoch ms) for the exit before
   * SIGKILL; reported when the signal is sent and again, with `over`, when the wait ends.
   */
  | { kind: 'grace'; container: string; signal: string; graceMs: number; killAt: number; over?: 'exited' | 'killed' }
  /** Every layer of the pull that is downloaded (not those already here), at most every PULL_REPORT_MS and at each layer's end. */
  | { kind: 'pull'; image: string; layers: LayerProgress[] };

/** How often a pull reports its layers (≤ 10 updates a second, through the daemon too). */
export const PULL_REPORT_MS = 100;

/** A grace wait shorter than this is not shown: most containers exit on SIGTERM at once. */
export const WAIT_NOTICE_MS = 1000;

/** The stream progress is printed on: process.stdout, or a fake one in tests. */
export interface ProgressStream {
  write(s: string): unknown;
  readonly isTTY?: boolean;
  readonly columns?: number;
}

/** The progress of one step: where the controller's ProgressEvent and this file meet. */
export interface StepProgress<S> {
  phase: 'start' | 'end' | 'wait';
  step: S;
  ms?: number;
  error?: { code: string; message: string };
  wait?: StepWait;
}

export interface RendererOptions<S extends { kind: string }> {
  out: ProgressStream;
  /** The plan line of a step (reconciler/render's renderStep). */
  describe: (step: S) => string;
  /** Steps that print a line when they start, not only when they end. */
  announceStart: (step: S) => boolean;
  /** Default: `out.isTTY`. */
  tty?: boolean;
  clock?: Clock;
}

const TICK_MS = 1000;

export function formatBytes(n: number): string {
  if (n < 1000) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let v = n / 1000;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i] ?? ''}`;
}

const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)}s`;

/** A layer's complete line (both modes): image, layer, size, time and mean rate. */
export function layerDoneLine(image: string, l: LayerProgress): string {
  const rate = l.ms > 0 ? ` (${formatBytes(Math.round((l.written * 1000) / l.ms))}/s)` : '';
  return `  ${image}: layer ${shortDigest(l.digest)} ${formatBytes(l.written)} in ${seconds(l.ms)}${rate}`;
}

/** A layer in flight (TTY): bytes of size, rate, ETA. */
export function layerLine(image: string, l: LayerProgress): string {
  const rate = l.ms > 0 ? (l.written * 1000) / l.ms : 0;
  const eta = rate > 0 ? `, ETA ${Math.ceil((l.size - l.written) / rate)}s` : '';
  const pct = l.size > 0 ? Math.floor((l.written * 100) / l.size) : 0;
  return `  ${image}: layer ${shortDigest(l.digest)} ${formatBytes(l.written)} / ${formatBytes(l.size)} (${pct}%), ${formatBytes(Math.round(rate))}/s${eta}`;
}

export function graceLine(w: Extract<StepWait, { kind: 'grace' }>, now: number): string {
  // Seconds left, rounded up, less 20 ms: a timer set for the one-second notice may fire a
  // millisecond early by the wall clock (node's timers run on the monotonic one), which showed
  // "SIGKILL in 5s" a second into a 5 s grace period (regression grace-line-timer-fires-early).
  return `  stopping ${w.container}: ${w.signal} sent, SIGKILL in ${Math.max(0, Math.ceil((w.killAt - now - 20) / 1000))}s`;
}

const shortDigest = (d: string): string => d.replace(/^sha256:/, '').slice(0, 12);

/**
 * Prints a command's step progress. Lines that stay (a step's start and end, a grace wait off a
 * TTY, a complete layer) are written as they come; on a TTY the waits in flight are a block of
 * lines below them, rewritten in place at each update and every second (the countdown), and
 * cleared before a line that stays and by `close`. Not a TTY: nothing is ever rewritten.
 */
export class ProgressRenderer<S extends { kind: string }> {
  private readonly out: ProgressStream;
  private readonly tty: boolean;
  private readonly clock: Clock;
  /** Grace waits in flight, by container; `shown`: past WAIT_NOTICE_MS (its line is printed/drawn). */
  private readonly graces = new Map<string, { w: Extract<StepWait, { kind: 'grace' }>; since: number; shown: boolean; timer: unknown }>();
  /** Layers in flight per image (TTY block) and the layers whose complete line is printed. */
  private readonly pulls = new Map<string, LayerProgress[]>();
  private readonly printedLayers = new Set<string>();
  private drawn = 0;
  private ticker: unknown;

  constructor(private readonly o: RendererOptions<S>) {
    this.out = o.out;
    this.tty = o.tty ?? o.out.isTTY === true;
    this.clock = o.clock ?? systemClock;
  }

  handle(e: StepProgress<S>): void {
    if (e.phase === 'start') {
      if (this.o.announceStart(e.step)) this.print(`${this.o.describe(e.step)} ...`);
    } else if (e.phase === 'end') {
      // A failed pull's last report may still list layers in flight.
      const s: { kind: string; image?: unknown } = e.step;
      if (s.kind === 'pull' && typeof s.image === 'string') this.pulls.delete(s.image);
      if (e.error === undefined) this.print(`${this.o.describe(e.step)} (${seconds(e.ms ?? 0)})`);
      else this.redraw();
    } else if (e.wait !== undefined) {
      this.onWait(e.wait);
    }
  }

  /** Clears the TTY block and stops the countdown; call before printing anything else (errors). */
  close(): void {
    for (const g of this.graces.values()) this.clock.clearTimeout(g.timer);
    this.graces.clear();
    this.pulls.clear();
    this.stopTicker();
    this.clear();
  }

  private onWait(w: StepWait): void {
    if (w.kind === 'grace') {
      const old = this.graces.get(w.container);
      if (w.over !== undefined) {
        if (old !== undefined) this.clock.clearTimeout(old.timer);
        this.graces.delete(w.container);
        this.redraw();
        return;
      }
      if (old !== undefined) this.clock.clearTimeout(old.timer);
      const g = { w, since: this.clock.now(), shown: false, timer: undefined as unknown };
      g.timer = this.clock.setTimeout(() => {
        g.shown = true;
        if (this.tty) {
          this.redraw();
          this.startTicker();
        } else {
          this.print(graceLine(w, this.clock.now()));
        }
      }, WAIT_NOTICE_MS);
      this.graces.set(w.container, g);
      return;
    }
    const active: LayerProgress[] = [];
    const done: string[] = [];
    for (const l of w.layers) {
      if (!l.done) active.push(l);
      else if (!this.printedLayers.has(`${w.image} ${l.digest}`)) {
        this.printedLayers.add(`${w.image} ${l.digest}`);
        done.push(layerDoneLine(w.image, l));
      }
    }
    this.pulls.set(w.image, active);
    if (done.length > 0) this.print(...done);
    else if (this.tty) this.redraw();
  }

  /** Lines that stay: the block is cleared first and drawn again below them. */
  private print(...lines: string[]): void {
    this.clear();
    this.out.write(`${lines.join('\n')}\n`);
    this.redraw();
  }

  private block(): string[] {
    if (!this.tty) return [];
    const now = this.clock.now();
    const lines: string[] = [];
    for (const g of this.graces.values()) if (g.shown) lines.push(graceLine(g.w, now));
    for (const [image, layers] of this.pulls) for (const l of layers) lines.push(layerLine(image, l));
    // A pty without a size (script(1) off a terminal) says 0 columns.
    const columns = this.out.columns !== undefined && this.out.columns > 0 ? this.out.columns : 80;
    const width = Math.max(20, columns - 1);
    // A line wider than the terminal would wrap, and the block could not be cleared line by line.
    return lines.map((l) => (l.length > width ? `${l.slice(0, width - 1)}…` : l));
  }

  private clear(): void {
    if (this.drawn === 0) return;
    this.out.write(`\r\x1b[K${'\x1b[1A\x1b[K'.repeat(this.drawn - 1)}`);
    this.drawn = 0;
  }

  private redraw(): void {
    if (!this.tty) return;
    const lines = this.block();
    this.clear();
    if (lines.length > 0) this.out.write(lines.join('\n'));
    this.drawn = lines.length;
    if (![...this.graces.values()].some((g) => g.shown)) this.stopTicker();
  }

  private startTicker(): void {
    if (this.ticker !== undefined) return;
    const tick = (): void => {
      this.ticker = undefined;
      this.redraw();
      if ([...this.graces.values()].some((g) => g.shown)) this.ticker = this.clock.setTimeout(tick, TICK_MS);
    };
    this.ticker = this.clock.setTimeout(tick, TICK_MS);
  }

  private stopTicker(): void {
    if (this.ticker === undefined) return;
    this.clock.clearTimeout(this.ticker);
    this.ticker = undefined;
  }
}

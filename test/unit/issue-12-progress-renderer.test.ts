import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeClock } from '../../src/lib/clock.js';
import { formatBytes, graceLine, ProgressRenderer, WAIT_NOTICE_MS, type LayerProgress, type StepProgress } from '../../src/lib/progress.js';

/**
 * Issue 12, live progress as the CLI prints it (lib/progress): a grace period waited out is one
 * plain line off a TTY and a countdown rewritten in place on one; a pull's layers are a line each
 * when complete, and on a TTY lines with bytes, rate and ETA while in flight. A fake stream
 * records what was written; the clock is the only fake.
 */

type Step = { kind: string; name: string; image?: string };

class FakeStream {
  text = '';
  constructor(
    readonly isTTY: boolean,
    readonly columns = 100,
  ) {}
  write(s: string): boolean {
    this.text += s;
    return true;
  }
  /** What a terminal would show: \r returns to the line start, ESC[K erases to its end, ESC[1A moves up. */
  screen(): string[] {
    const lines: string[] = [''];
    let row = 0;
    let col = 0;
    for (let i = 0; i < this.text.length; i++) {
      const c = this.text[i];
      if (this.text.startsWith('\x1b[K', i)) {
        lines[row] = (lines[row] ?? '').slice(0, col);
        i += 2;
      } else if (this.text.startsWith('\x1b[1A', i)) {
        row = Math.max(0, row - 1);
        i += 3;
      } else if (c === '\r') col = 0;
      else if (c === '\n') {
        row++;
        col = 0;
        if (lines[row] === undefined) lines[row] = '';
      } else {
        const l = lines[row] ?? '';
        lines[row] = l.slice(0, col) + c + l.slice(col + 1);
        col++;
      }
    }
    return lines;
  }
}

const setup = (tty: boolean): { out: FakeStream; clock: FakeClock; r: ProgressRenderer<Step> } => {
  const out = new FakeStream(tty);
  const clock = new FakeClock(1_000_000);
  const r = new ProgressRenderer<Step>({ out, clock, describe: (s) => `~ ${s.name}`, announceStart: (s) => s.kind !== 'quick' });
  return { out, clock, r };
};

const replace: Step = { kind: 'replace', name: 'container default/web/app: replace' };
/** SIGTERM sent at the fake clock's start (1 000 000), SIGKILL 30 s later. */
const graceWait = (over?: 'exited' | 'killed'): StepProgress<Step> => ({
  phase: 'wait',
  step: replace,
  wait: { kind: 'grace', container: 'default/web/app', signal: 'SIGTERM', graceMs: 30_000, killAt: 1_000_000 + 30_000, ...(over !== undefined ? { over } : {}) },
});

describe('ProgressRenderer', () => {
  test('not a TTY: a grace wait past WAIT_NOTICE_MS is exactly one line, never rewritten', () => {
    const { out, clock, r } = setup(false);
    r.handle({ phase: 'start', step: replace });
    r.handle(graceWait());
    clock.advance(WAIT_NOTICE_MS);
    clock.advance(10_000);
    r.handle(graceWait('exited'));
    clock.advance(5_000);
    r.handle({ phase: 'end', step: replace, ms: 12_300 });
    r.close();
    assert.equal(out.text, '~ container default/web/app: replace ...\n  stopping default/web/app: SIGTERM sent, SIGKILL in 29s\n~ container default/web/app: replace (12.3s)\n');
    assert.equal(clock.timerCount(), 0, 'no timer left behind');
  });

  test('a container that exits within WAIT_NOTICE_MS: no grace line at all', () => {
    for (const tty of [false, true]) {
      const { out, clock, r } = setup(tty);
      r.handle({ phase: 'start', step: replace });
      r.handle(graceWait());
      clock.advance(WAIT_NOTICE_MS - 1);
      r.handle(graceWait('exited'));
      clock.advance(60_000);
      r.handle({ phase: 'end', step: replace, ms: 1200 });
      r.close();
      assert.doesNotMatch(out.text, /stopping/, `tty ${tty}`);
      assert.equal(clock.timerCount(), 0);
    }
  });

  test('a TTY: the countdown updates in place every second and is erased before the end line', () => {
    const { out, clock, r } = setup(true);
    r.handle({ phase: 'start', step: replace });
    r.handle(graceWait());
    clock.advance(WAIT_NOTICE_MS);
    assert.deepEqual(out.screen(), ['~ container default/web/app: replace ...', '  stopping default/web/app: SIGTERM sent, SIGKILL in 29s']);
    clock.advance(1000);
    assert.deepEqual(out.screen(), ['~ container default/web/app: replace ...', '  stopping default/web/app: SIGTERM sent, SIGKILL in 28s']);
    clock.advance(26_000);
    assert.deepEqual(out.screen().at(-1), '  stopping default/web/app: SIGTERM sent, SIGKILL in 2s');
    // Another step's line while the countdown runs: printed above it, the countdown drawn again below.
    r.handle({ phase: 'end', step: { kind: 'quick', name: 'pod default/other: update' }, ms: 10 });
    assert.deepEqual(out.screen(), ['~ container default/web/app: replace ...', '~ pod default/other: update (0.0s)', '  stopping default/web/app: SIGTERM sent, SIGKILL in 2s']);
    clock.advance(2000);
    r.handle(graceWait('killed'));
    r.handle({ phase: 'end', step: replace, ms: 30_100 });
    r.close();
    assert.deepEqual(out.screen(), ['~ container default/web/app: replace ...', '~ pod default/other: update (0.0s)', '~ container default/web/app: replace (30.1s)', '']);
    assert.equal(clock.timerCount(), 0, 'the ticker stopped');
  });

  const pull: Step = { kind: 'pull', name: 'image r/x:1: pull', image: 'r/x:1' };
  const layer = (digest: string, written: number, ms: number, done = false): LayerProgress => ({ digest: `sha256:${digest.repeat(64 / digest.length)}`, size: 4_000_000, written, ms, done });
  const layers = (...ls: LayerProgress[]): StepProgress<Step> => ({ phase: 'wait', step: pull, wait: { kind: 'pull', image: 'r/x:1', layers: ls } });

  test('not a TTY: one line per layer when complete, with size, time and rate; nothing for layers in flight', () => {
    const { out, r } = setup(false);
    r.handle({ phase: 'start', step: pull });
    r.handle(layers(layer('a', 0, 0), layer('b', 0, 0)));
    r.handle(layers(layer('a', 1_000_000, 500), layer('b', 2_000_000, 500)));
    r.handle(layers(layer('a', 4_000_000, 2000, true), layer('b', 3_000_000, 2000)));
    r.handle(layers(layer('a', 4_000_000, 2000, true), layer('b', 4_000_000, 2500, true)));
    r.handle(layers(layer('a', 4_000_000, 2000, true), layer('b', 4_000_000, 2500, true)));
    r.handle({ phase: 'end', step: pull, ms: 2600 });
    r.close();
    assert.equal(
      out.text,
      [
        '~ image r/x:1: pull ...',
        '  r/x:1: layer aaaaaaaaaaaa 4.00 MB in 2.0s (2.00 MB/s)',
        '  r/x:1: layer bbbbbbbbbbbb 4.00 MB in 2.5s (1.60 MB/s)',
        '~ image r/x:1: pull (2.6s)',
        '',
      ].join('\n'),
    );
  });

  test('a TTY: a line per layer in flight with bytes, percent, rate and ETA, replaced by its complete line', () => {
    const { out, r } = setup(true);
    r.handle({ phase: 'start', step: pull });
    r.handle(layers(layer('a', 1_000_000, 1000), layer('b', 2_000_000, 1000)));
    assert.deepEqual(out.screen(), [
      '~ image r/x:1: pull ...',
      '  r/x:1: layer aaaaaaaaaaaa 1.00 MB / 4.00 MB (25%), 1.00 MB/s, ETA 3s',
      '  r/x:1: layer bbbbbbbbbbbb 2.00 MB / 4.00 MB (50%), 2.00 MB/s, ETA 1s',
    ]);
    r.handle(layers(layer('a', 3_000_000, 1500), layer('b', 4_000_000, 2000, true)));
    assert.deepEqual(out.screen(), [
      '~ image r/x:1: pull ...',
      '  r/x:1: layer bbbbbbbbbbbb 4.00 MB in 2.0s (2.00 MB/s)',
      '  r/x:1: layer aaaaaaaaaaaa 3.00 MB / 4.00 MB (75%), 2.00 MB/s, ETA 1s',
    ]);
    // A failed pull: its layers in flight are cleared with it.
    r.handle({ phase: 'end', step: pull, ms: 1600, error: { code: 'ERR_NETWORK', message: 'reset' } });
    r.close();
    assert.deepEqual(out.screen(), ['~ image r/x:1: pull ...', '  r/x:1: layer bbbbbbbbbbbb 4.00 MB in 2.0s (2.00 MB/s)', '']);
  });

  test('a TTY line wider than the terminal is cut, so the block can be erased line by line; a pty with 0 columns counts as 80', () => {
    const out = new FakeStream(true, 40);
    const r = new ProgressRenderer<Step>({ out, clock: new FakeClock(), describe: (s) => s.name, announceStart: () => true });
    r.handle(layers(layer('a', 1_000_000, 1000)));
    // 39 characters: the last column stays free (a full line would wrap on some terminals).
    assert.deepEqual(out.screen(), ['  r/x:1: layer aaaaaaaaaaaa 1.00 MB / …']);
    r.close();
    const zero = new FakeStream(true, 0);
    const z = new ProgressRenderer<Step>({ out: zero, clock: new FakeClock(), describe: (s) => s.name, announceStart: () => true });
    z.handle(layers(layer('a', 1_000_000, 1000)));
    assert.equal(zero.screen()[0], '  r/x:1: layer aaaaaaaaaaaa 1.00 MB / 4.00 MB (25%), 1.00 MB/s, ETA 3s');
    z.close();
  });

  test('formatBytes: decimal units as registries and podman print them', () => {
    assert.deepEqual([0, 999, 1000, 1_234_567, 62_000_000, 5e12].map(formatBytes), ['0 B', '999 B', '1.00 kB', '1.23 MB', '62.0 MB', '5.00 TB']);
  });
});

test('regression grace-line-timer-fires-early: the notice a second into a 5 s grace period says 4s even when its timer fires a millisecond early', () => {
  const w = { kind: 'grace' as const, container: 'default/p/c', signal: 'SIGTERM', graceMs: 5000, killAt: 10_000 };
  assert.match(graceLine(w, 10_000 - 4001), /SIGKILL in 4s$/);
  assert.match(graceLine(w, 10_000 - 4000), /SIGKILL in 4s$/);
  assert.match(graceLine(w, 10_000 - 3999), /SIGKILL in 4s$/);
  assert.match(graceLine(w, 10_000 - 4100), /SIGKILL in 5s$/);
  assert.match(graceLine(w, 10_000 - 5000), /SIGKILL in 5s$/);
  assert.match(graceLine(w, 10_000), /SIGKILL in 0s$/);
});

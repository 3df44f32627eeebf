import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, renameSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readLog } from '../../src/lib/logfollow.js';

const rec = (t: string, msg: string, tag: 'F' | 'P' = 'F'): string => `2026-11-30T10:00:${t}.000000000Z stdout ${tag} ${msg}\n`;

/** Follows `file` while `script` changes it; returns everything printed. */
async function follow(file: string, script: (wait: () => Promise<void>) => Promise<void>, extra: { timestamps?: boolean; sinceMs?: number } = {}): Promise<string> {
  let out = '';
  let done = false;
  const wait = (): Promise<void> => new Promise((r) => setTimeout(r, 60));
  const reading = readLog(file, { raw: false, timestamps: extra.timestamps ?? false, ...(extra.sinceMs !== undefined ? { sinceMs: extra.sinceMs } : {}), follow: true, running: async () => !done, write: (s) => (out += s), pollMs: 10 });
  await wait();
  await script(wait);
  await wait();
  done = true;
  await reading;
  return out;
}

test('regression: logs-follow-skips-after-truncation — a log truncated by rotation is read again from its start, nothing lost or repeated', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-logs-'));
  const file = path.join(dir, 'c.log');
  writeFileSync(file, rec('01', 'one') + rec('02', 'two') + rec('03', 'three'));
  const out = await follow(file, async (wait) => {
    truncateSync(file, 0);
    await wait();
    appendFileSync(file, rec('04', 'four') + rec('05', 'five'));
  });
  assert.equal(out, 'one\ntwo\nthree\nfour\nfive\n');
  rmSync(dir, { recursive: true });
});

test('logs -f: a file replaced under its path is drained to its end, then the new one is read', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-logs-'));
  const file = path.join(dir, 'c.log');
  writeFileSync(file, rec('01', 'one'));
  const out = await follow(file, async (wait) => {
    appendFileSync(file, rec('02', 'two'));
    renameSync(file, `${file}.1`);
    writeFileSync(file, rec('03', 'three'));
    await wait();
  });
  assert.equal(out, 'one\ntwo\nthree\n');
  rmSync(dir, { recursive: true });
});

test('regression: logs-utf8-split — a character split across two reads is printed whole; partial records join', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-logs-'));
  const file = path.join(dir, 'c.log');
  const bytes = Buffer.from(rec('01', 'grüße ✓'));
  const cut = bytes.indexOf(Buffer.from('✓')) + 1; // inside the 3-byte character
  writeFileSync(file, '');
  const out = await follow(file, async (wait) => {
    appendFileSync(file, bytes.subarray(0, cut));
    await wait();
    appendFileSync(file, bytes.subarray(cut));
    appendFileSync(file, rec('02', 'half ', 'P') + rec('02', 'whole'));
  });
  assert.equal(out, 'grüße ✓\nhalf whole\n');
  rmSync(dir, { recursive: true });
});

test('logs: --since, --timestamps and --tail', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-logs-'));
  const file = path.join(dir, 'c.log');
  writeFileSync(file, rec('01', 'a') + rec('02', 'b') + rec('03', 'c'));
  let out = '';
  await readLog(file, { raw: false, timestamps: true, sinceMs: Date.parse('2026-11-30T10:00:02Z'), follow: false, running: async () => false, write: (s) => (out += s) });
  assert.equal(out, '2026-11-30T10:00:02.000000000Z b\n2026-11-30T10:00:03.000000000Z c\n');
  out = '';
  await readLog(file, { raw: false, timestamps: false, tail: 1, follow: false, running: async () => false, write: (s) => (out += s) });
  assert.equal(out, 'c\n');
  rmSync(dir, { recursive: true });
});

test('issue-13 logs: a follow woken by an event of its pod ends at once with the last output, not at the next poll', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-logs-wake-'));
  const file = path.join(dir, 'c.log');
  writeFileSync(file, '2026-11-30T00:00:00.000000000Z stdout F first\n');
  let stopped = false;
  let kick: (() => void) | undefined;
  let unsubscribed = false;
  const out: string[] = [];
  try {
    const t0 = Date.now();
    const done = readLog(file, {
      raw: false,
      timestamps: false,
      follow: true,
      // Polls so far apart that only the kick can end the follow within the test's bound.
      pollMs: 30_000,
      checkMs: 30_000,
      running: async () => !stopped,
      write: (s) => out.push(s),
      wake: (fn) => {
        kick = fn;
        return () => (unsubscribed = true);
      },
    });
    await new Promise((r) => setTimeout(r, 50));
    appendFileSync(file, '2026-11-30T00:00:01.000000000Z stdout F last words\n');
    stopped = true;
    kick?.();
    await done;
    assert.ok(Date.now() - t0 < 5_000, `the follow ended ${Date.now() - t0} ms after it started`);
    assert.equal(out.join(''), 'first\nlast words\n');
    assert.ok(unsubscribed, 'the wake subscription was left behind');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('regression partial-line-held-while-following: a partial record is shown at once, its line ended by the F record', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-logs-'));
  const file = path.join(dir, 'c.log');
  // The first read ends inside a message: its text so far comes right after the complete lines.
  writeFileSync(file, rec('01', 'one') + rec('02', 'Pass', 'P'));
  const seen: string[] = [];
  let out = '';
  let done = false;
  const reading = readLog(file, { raw: false, timestamps: false, follow: true, running: async () => !done, write: (s) => (out += s), pollMs: 10 });
  const wait = (): Promise<void> => new Promise((r) => setTimeout(r, 80));
  await wait();
  seen.push(out);
  appendFileSync(file, rec('03', 'word: ', 'P'));
  await wait();
  seen.push(out);
  appendFileSync(file, rec('04', 'secret typed') + rec('05', 'two'));
  await wait();
  done = true;
  await reading;
  assert.deepEqual(seen, ['one\nPass', 'one\nPassword: ']);
  assert.equal(out, 'one\nPassword: secret typed\ntwo\n');
  rmSync(dir, { recursive: true });
});

test('partial records while following keep --timestamps (the first record\'s time, once) and --since (decided by the first record)', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-logs-'));
  const file = path.join(dir, 'c.log');
  writeFileSync(file, '');
  const ts = await follow(file, async () => {
    appendFileSync(file, rec('01', 'a', 'P') + rec('02', 'b'));
  }, { timestamps: true });
  assert.equal(ts, '2026-11-30T10:00:01.000000000Z ab\n');
  writeFileSync(file, '');
  const since = await follow(file, async () => {
    appendFileSync(file, rec('01', 'old-', 'P') + rec('09', 'tail') + rec('10', 'new'));
  }, { sinceMs: Date.parse('2026-11-30T10:00:05Z') });
  assert.equal(since, 'new\n');
  rmSync(dir, { recursive: true });
});

test('regression logs-read-whole-file: logs are read in pieces — any piece size gives the same output, with --tail, --since and the previous file', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'berth-logs-'));
  const file = path.join(dir, 'c.log');
  writeFileSync(`${file}.1`, rec('01', 'old één') + rec('02', 'old two'));
  writeFileSync(file, rec('03', 'héllo wörld ✓') + rec('04', 'part ', 'P') + rec('05', 'whole') + rec('06', 'last'));
  const read = async (chunkBytes: number | undefined, extra: { tail?: number; sinceMs?: number }): Promise<string> => {
    let out = '';
    await readLog(file, { raw: false, timestamps: false, follow: false, running: async () => false, write: (s) => (out += s), ...extra, ...(chunkBytes !== undefined ? { chunkBytes } : {}) });
    return out;
  };
  for (const extra of [{}, { tail: 2 }, { tail: 0 }, { sinceMs: Date.parse('2026-11-30T10:00:04Z') }]) {
    const whole = await read(undefined, extra);
    for (const n of [1, 2, 3, 7, 64]) assert.equal(await read(n, extra), whole, `pieces of ${n}, ${JSON.stringify(extra)}`);
  }
  assert.equal(await read(5, {}), 'old één\nold two\nhéllo wörld ✓\npart whole\nlast\n');
  assert.equal(await read(5, { tail: 2 }), 'part whole\nlast\n');
  rmSync(dir, { recursive: true });
});

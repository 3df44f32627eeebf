import { test } from 'node:test';
import assert from 'node:assert/strict';
import { criDecoder } from '../../src/lib/crilog.js';

test('crilog: F ends a message, P continues it, chunking does not matter', () => {
  const log =
    '2026-01-01T00:00:00.000000001+00:00 stdout F hello\n' +
    '2026-01-01T00:00:00.000000002+00:00 stderr P part one, \n' +
    '2026-01-01T00:00:00.000000003+00:00 stderr F part two\n' +
    '2026-01-01T00:00:00.000000004+00:00 stdout F \n' +
    'garbage line\n' +
    '2026-01-01T00:00:00.000000005+00:00 stdout P unfinished';
  const whole = criDecoder();
  const all = [...whole.push(`${log}\n`), ...whole.flush()];
  assert.deepEqual(all, ['hello', 'part one, part two', '', 'unfinished']);
  for (const size of [1, 7, 33]) {
    const d = criDecoder();
    const out: string[] = [];
    for (let i = 0; i < log.length + 1; i += size) out.push(...d.push(`${log}\n`.slice(i, i + size)));
    out.push(...d.flush());
    assert.deepEqual(out, all, `chunks of ${size}`);
  }
});

test('regression crilog-carriage-return-lines-kept: \r, U+2028 and U+2029 in a record are content', () => {
  const log =
    '2026-01-01T00:00:00.000000001+00:00 stdout F line1\r\n' +
    '2026-01-01T00:00:00.000000002+00:00 stdout F \r 10%\r 50%\r100%\n' +
    '2026-01-01T00:00:00.000000003+00:00 stderr P a\u2028b\n' +
    '2026-01-01T00:00:00.000000004+00:00 stderr F \u2029c\n' +
    '2026-01-01T00:00:00.000000005+00:00 stdout F:x tagged\n' +
    '2026-01-01T00:00:00.000000006+00:00 stdout F line3\n';
  const d = criDecoder();
  assert.deepEqual([...d.push(log), ...d.flush()], ['line1\r', '\r 10%\r 50%\r100%', 'a\u2028b\u2029c', 'tagged', 'line3']);
});

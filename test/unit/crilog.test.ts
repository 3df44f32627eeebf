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

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { matchesSelector, parseSelector } from '../../src/lib/selector.js';
import { isBerthError } from '../../src/lib/errors.js';

/** `-l` of `ps` and `status`: kubectl's equality-based label selectors. */

const web = { app: 'web', tier: 'front', 'example.com/team': 'a' };
const db = { app: 'db' };
const none = {};

const pick = (sel: string): string[] =>
  Object.entries({ web, db, none })
    .filter(([, labels]) => matchesSelector(parseSelector(sel), labels))
    .map(([n]) => n);

test('selector: k=v, k==v, k!=v (true when absent), k, !k and comma = and', () => {
  assert.deepEqual(pick('app=web'), ['web']);
  assert.deepEqual(pick('app==web'), ['web']);
  assert.deepEqual(pick('app!=web'), ['db', 'none']);
  assert.deepEqual(pick('tier'), ['web']);
  assert.deepEqual(pick('!tier'), ['db', 'none']);
  assert.deepEqual(pick('app'), ['web', 'db']);
  assert.deepEqual(pick('app=web,tier=front'), ['web']);
  assert.deepEqual(pick('app=web,tier=back'), []);
  assert.deepEqual(pick(' app = db , !tier '), ['db']);
  assert.deepEqual(pick('example.com/team=a'), ['web']);
  assert.deepEqual(pick(''), ['web', 'db', 'none']);
  assert.deepEqual(pick('app='), [], 'an empty value matches only an empty label');
  assert.ok(matchesSelector(parseSelector('app='), { app: '' }));
});

test('selector: parsed into requirements', () => {
  assert.deepEqual(parseSelector('a=1,b!=2,c,!d'), [
    { key: 'a', op: 'eq', value: '1' },
    { key: 'b', op: 'ne', value: '2' },
    { key: 'c', op: 'exists' },
    { key: 'd', op: 'absent' },
  ]);
});

test('selector: what it cannot read is ERR_INVALID_ARGUMENT (exit 2) naming the part', () => {
  const cases: [string, RegExp][] = [
    ['app=web,', /empty requirement/],
    ['a,,b', /empty requirement/],
    ['env in (prod,dev)', /set-based selectors/],
    ['app=we b', /not a label value/],
    ['-app=web', /not a label key/],
    ['UPPER.example.com/x=1', /not a label key/],
    [`app=${'v'.repeat(64)}`, /not a label value/],
  ];
  for (const [sel, re] of cases) {
    assert.throws(() => parseSelector(sel), (err: unknown) => isBerthError(err, 'ERR_INVALID_ARGUMENT') && re.test(err.message) && err.message.includes(JSON.stringify(sel)), sel);
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { matchesSelector, parseSelector } from '../../src/lib/selector.js';
import { isBerthError } from '../../src/lib/errors.js';

/** `-l` of `ps` and `status`: kubectl's label selectors, equality- and set-based. */

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
    ['app=we b', /not a label value/],
    ['-app=web', /not a label key/],
    ['UPPER.example.com/x=1', /not a label key/],
    [`app=${'v'.repeat(64)}`, /not a label value/],
  ];
  for (const [sel, re] of cases) {
    assert.throws(() => parseSelector(sel), (err: unknown) => isBerthError(err, 'ERR_INVALID_ARGUMENT') && re.test(err.message) && err.message.includes(JSON.stringify(sel)), sel);
  }
});

/**
 * Regression selector-in-error-quotes-fragment: `in`/`notin` were refused, and the refusal quoted
 * a fragment split at the value list's comma (`"app in (a"` for `app in (a,b)`). Now they are
 * read as kubectl reads them, commas inside parentheses separate values, and what cannot be read
 * is named whole.
 */
test('regression selector-in-error-quotes-fragment: k in (a,b), k notin (a,b) as kubectl, with other requirements', () => {
  assert.deepEqual(pick('app in (web,db)'), ['web', 'db']);
  assert.deepEqual(pick('app in (web)'), ['web']);
  assert.deepEqual(pick('app notin (web)'), ['db', 'none'], 'notin is true when the label is absent');
  assert.deepEqual(pick('tier notin (front)'), ['db', 'none']);
  assert.deepEqual(pick(' app in ( web , db ) , !tier'), ['db']);
  assert.deepEqual(pick('app in(db),app'), ['db']);
  assert.deepEqual(parseSelector('env in (prod,dev),tier notin (front),x'), [
    { key: 'env', op: 'in', values: ['prod', 'dev'] },
    { key: 'tier', op: 'notin', values: ['front'] },
    { key: 'x', op: 'exists' },
  ]);
});

test('regression selector-in-error-quotes-fragment: a malformed selector is ERR_INVALID_ARGUMENT quoting it whole and the requirement at fault', () => {
  const cases: [string, RegExp][] = [
    ['app in (a,b', /"\(" without "\)"/],
    ['app in (a),b)', /"\)" without "\("/],
    ['app in ()', /"app in \(\)": an empty value/],
    ['app in (a,,b)', /an empty value/],
    ['app=(x)', /"app=\(x\)": expected KEY in/],
    ['app in (we b)', /not a label value/],
    ['app > 1', /numeric operators/],
    ['app in ((a))', /nested/],
  ];
  for (const [sel, re] of cases) {
    assert.throws(() => parseSelector(sel), (err: unknown) => isBerthError(err, 'ERR_INVALID_ARGUMENT') && re.test(err.message) && err.message.includes(JSON.stringify(sel)), sel);
  }
  assert.throws(() => parseSelector('app in (a,b'), (err: unknown) => isBerthError(err) && !err.message.includes('"app in (a"'));
});

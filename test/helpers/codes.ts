import assert from 'node:assert/strict';
import { BerthError } from '../../src/lib/errors.js';

/**
 * For `assert.rejects`/`assert.throws`: the error is a BerthError with `code`, and its message
 * matches every pattern.
 */
export function isCode(code: string, ...patterns: RegExp[]): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof BerthError, `a BerthError, not ${String(err)}`);
    assert.equal(err.code, code, err.message);
    for (const p of patterns) assert.match(err.message, p);
    return true;
  };
}

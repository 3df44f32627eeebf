import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { BerthError } from './errors.js';

/**
 * Loads one of berth's N-API addons, `build/Release/<name>.node` at the package root (built by
 * `npm ci` through node-gyp, or `npm run build:native`), and checks that it has every function in
 * `functions`: an older build lacking one is refused. Throws ERR_PRECONDITION naming the file
 * when it was never built or is too old. Callers load on first use and keep the result.
 */
export function loadAddon<T>(name: string, functions: readonly (keyof T & string)[]): T {
  // Compiled to dist/src/lib/addon.js: the package root is three levels up.
  const file = fileURLToPath(new URL(`../../../build/Release/${name}.node`, import.meta.url));
  let mod: Partial<Record<keyof T, unknown>>;
  try {
    mod = createRequire(import.meta.url)(file) as Partial<Record<keyof T, unknown>>;
  } catch (err) {
    throw new BerthError('ERR_PRECONDITION', `load native addon ${file}: not built (run npm run build:native)`, { cause: err });
  }
  if (functions.some((f) => typeof mod[f] !== 'function')) {
    throw new BerthError('ERR_PRECONDITION', `load native addon ${file}: missing functions (rebuild it)`);
  }
  return mod as T;
}

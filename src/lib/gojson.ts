import { BerthError } from './errors.js';

/**
 * Fields of a parsed JSON object read the way Go's encoding/json fills a struct, which is how
 * containerd, docker, skopeo and the image scanners read manifests, indexes and image configs: a
 * field takes a key equal to its name under Unicode simple case folding, not only the exact key
 * ("layers", "Layers" and "LAYERS" all fill Layers; so does "ſize" for size, U+017F folding to s).
 * When several keys fold to one field, Go keeps the last in the text, while JSON.parse has already
 * merged exact duplicates and lost their order among the others. So an object with two keys that
 * fold to a field berth reads is refused: a Go reader and berth could take different values (an
 * entrypoint, a layer list) from the same verified bytes. Exact duplicates are not seen here;
 * both readers keep the last of those.
 */

/** A key under Go's folding, for comparison with an ASCII field name. */
function fold(s: string): string {
  let out = '';
  for (const ch of s) {
    const c = ch.codePointAt(0) as number;
    if (c >= 0x61 && c <= 0x7a) out += String.fromCharCode(c - 0x20);
    else if (c === 0x17f) out += 'S'; // LATIN SMALL LETTER LONG S folds with s
    else if (c === 0x212a) out += 'K'; // KELVIN SIGN folds with k
    else out += ch;
  }
  return out;
}

/** The keys of `obj` that fill the field `name`, in the order JSON.parse kept them. */
function keysFor(obj: Record<string, unknown>, name: string): string[] {
  const want = fold(name);
  return Object.keys(obj).filter((k) => k === name || (k.length === name.length && fold(k) === want));
}

/**
 * The value Go would put in field `name` of `obj`, undefined when no key fills it (JSON has no
 * undefined values, so that also answers whether the field is present); see the module comment.
 */
export function goField(obj: Record<string, unknown>, name: string, where: string): unknown {
  const keys = keysFor(obj, name);
  if (keys.length === 0) return undefined;
  if (keys.length > 1) {
    throw new BerthError('ERR_INVALID_IMAGE', `${where}: keys ${keys.map((k) => JSON.stringify(k)).join(' and ')} name one field ${JSON.stringify(name)} for Go's JSON readers; refused as ambiguous`);
  }
  return obj[keys[0] as string];
}

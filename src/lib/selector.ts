import { BerthError } from './errors.js';

/**
 * Label selectors as `kubectl get -l` reads them: `k=v` (or `k==v`), `k!=v` (also true when
 * the label is absent), `k` (exists), `!k` (absent), `k in (a,b)` (present with one of the
 * values), `k notin (a,b)` (absent or none of them), joined by commas meaning AND (a comma
 * inside parentheses separates values). The numeric `k>1`/`k<1` are refused.
 */

export type Requirement =
  | { key: string; op: 'eq' | 'ne'; value: string }
  | { key: string; op: 'in' | 'notin'; values: string[] }
  | { key: string; op: 'exists' | 'absent' };

export type Selector = readonly Requirement[];

// Kubernetes label syntax: an optional DNS-subdomain prefix and a name of at most 63
// characters; values the same characters, possibly empty.
const NAME = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$/;
const PREFIX = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const VALUE = /^(([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?)$/;

function bad(text: string, why: string): BerthError {
  return new BerthError('ERR_INVALID_ARGUMENT', `selector ${JSON.stringify(text)}: ${why}`);
}

function checkKey(text: string, key: string): string {
  const slash = key.indexOf('/');
  const prefix = slash === -1 ? undefined : key.slice(0, slash);
  const name = slash === -1 ? key : key.slice(slash + 1);
  if (!NAME.test(name) || (prefix !== undefined && (prefix.length > 253 || !PREFIX.test(prefix)))) {
    throw bad(text, `${JSON.stringify(key)} is not a label key (name: letters, digits, '-', '_', '.', at most 63, optional DNS prefix/)`);
  }
  return key;
}

/** The requirements of `text`: split at the commas outside parentheses; unbalanced ones are refused. */
function requirements(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === '(') {
      if (++depth > 1) throw bad(text, 'nested "(" in a value list');
    } else if (ch === ')') {
      if (--depth < 0) throw bad(text, '")" without "("');
    } else if (ch === ',' && depth === 0) {
      parts.push(text.slice(start, i));
      start = i + 1;
    }
  }
  if (depth > 0) throw bad(text, '"(" without ")"');
  parts.push(text.slice(start));
  return parts;
}

function checkValue(text: string, value: string): string {
  if (!VALUE.test(value)) throw bad(text, `${JSON.stringify(value)} is not a label value (letters, digits, '-', '_', '.', at most 63)`);
  return value;
}

/** Parses `-l`'s argument; throws ERR_INVALID_ARGUMENT (exit 2) naming the requirement it cannot read. */
export function parseSelector(text: string): Selector {
  const out: Requirement[] = [];
  if (text.trim() === '') return out;
  for (const raw of requirements(text)) {
    const part = raw.trim();
    if (part === '') throw bad(text, 'empty requirement (two commas, or a trailing comma)');
    const set = /^(\S+?)\s+(in|notin)\s*\((.*)\)$/.exec(part);
    if (set !== null) {
      const [, key = '', op, list = ''] = set;
      const values = list.split(',').map((v) => v.trim());
      if (values.some((v) => v === '')) throw bad(text, `${JSON.stringify(part)}: an empty value in the list (give at least one, comma-separated)`);
      out.push({ key: checkKey(text, key), op: op === 'notin' ? 'notin' : 'in', values: values.map((v) => checkValue(text, v)) });
      continue;
    }
    if (part.includes('(') || part.includes(')')) throw bad(text, `${JSON.stringify(part)}: expected KEY in (V1,V2…) or KEY notin (V1,V2…)`);
    if (/^[^=!<>]+[<>]/.test(part)) throw bad(text, `${JSON.stringify(part)}: the numeric operators > and < are not supported`);
    const m = /^([^=!]+?)\s*(==|!=|=)\s*(.*)$/.exec(part);
    if (m !== null) {
      const [, key = '', op, value = ''] = m;
      out.push({ key: checkKey(text, key), op: op === '!=' ? 'ne' : 'eq', value: checkValue(text, value) });
    } else if (part.startsWith('!')) {
      out.push({ key: checkKey(text, part.slice(1).trim()), op: 'absent' });
    } else {
      out.push({ key: checkKey(text, part), op: 'exists' });
    }
  }
  return out;
}

export function matchesSelector(sel: Selector, labels: Readonly<Record<string, string>>): boolean {
  return sel.every((r) => {
    const v = Object.hasOwn(labels, r.key) ? labels[r.key] : undefined;
    switch (r.op) {
      case 'eq':
        return v === r.value;
      case 'ne':
        return v !== r.value;
      case 'exists':
        return v !== undefined;
      case 'absent':
        return v === undefined;
      case 'in':
        return v !== undefined && r.values.includes(v);
      case 'notin':
        return v === undefined || !r.values.includes(v);
    }
  });
}

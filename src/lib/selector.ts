import { BerthError } from './errors.js';

/**
 * Label selectors as `kubectl get -l` reads the equality-based ones: `k=v` (or `k==v`),
 * `k!=v` (also true when the label is absent), `k` (exists), `!k` (absent), joined by
 * commas meaning AND. Set-based forms (`k in (a,b)`) are refused with a message rather
 * than misread.
 */

export type Requirement =
  | { key: string; op: 'eq' | 'ne'; value: string }
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

/** Parses `-l`'s argument; throws ERR_INVALID_ARGUMENT (exit 2) naming the part it cannot read. */
export function parseSelector(text: string): Selector {
  const out: Requirement[] = [];
  if (text.trim() === '') return out;
  for (const raw of text.split(',')) {
    const part = raw.trim();
    if (part === '') throw bad(text, 'empty requirement (two commas, or a trailing comma)');
    if (part.includes('(')) throw bad(text, `${part !== text.trim() ? `${JSON.stringify(part)}: ` : ''}set-based selectors (in, notin) are not supported; use k=v, k!=v, k or !k`);
    const m = /^([^=!]+?)\s*(==|!=|=)\s*(.*)$/.exec(part);
    if (m !== null) {
      const [, key = '', op, value = ''] = m;
      if (!VALUE.test(value)) throw bad(text, `${JSON.stringify(value)} is not a label value (letters, digits, '-', '_', '.', at most 63)`);
      out.push({ key: checkKey(text, key), op: op === '!=' ? 'ne' : 'eq', value });
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
    }
  });
}

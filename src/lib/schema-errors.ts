import type { ErrorObject } from 'ajv';
import { closest } from './suggest.js';

/**
 * ajv's errors (compiled with `allErrors` and `verbose`) turned into one problem per mistake,
 * each saying what is wrong and what is allowed. ajv reports some mistakes several times:
 * an anyOf reports every branch and then itself, propertyNames reports the key's error and
 * then itself, and a misspelt required field is both an unknown field and a missing one.
 * Pure; positions are the caller's business (it knows the YAML nodes).
 */

export type FieldPath = (string | number)[];

export interface SchemaProblem {
  path: FieldPath;
  /** The problem is about the key at `path`, not its value (an unknown or misspelt field). */
  atKey: boolean;
  message: string;
  /**
   * Fields this problem already explains, with everything under them: for `contianers` → did
   * you mean `containers`, the path of `containers`; for a missing or mistyped field, that
   * field. A later check that finds them missing or empty stays quiet.
   */
  covers: FieldPath[];
}

export function pointerToPath(ptr: string): FieldPath {
  if (ptr === '') return [];
  return ptr
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
}

export function describeSchemaErrors(errors: readonly ErrorObject[]): SchemaProblem[] {
  const out: SchemaProblem[] = [];
  const consumed = new Set<ErrorObject>();
  const under = (e: ErrorObject, parent: ErrorObject): boolean =>
    e !== parent && e.schemaPath.startsWith(`${parent.schemaPath}/`) && (e.instancePath === parent.instancePath || e.instancePath.startsWith(`${parent.instancePath}/`));

  // anyOf/oneOf: the branch whose type matched says what is wrong; when none did, one line
  // with the types that would have.
  const kept: ErrorObject[] = [];
  for (const e of errors) {
    if (e.keyword !== 'anyOf' && e.keyword !== 'oneOf') continue;
    const branches = new Map<string, ErrorObject[]>();
    for (const b of errors) {
      if (!under(b, e)) continue;
      consumed.add(b);
      const index = b.schemaPath.slice(e.schemaPath.length + 1).split('/')[0] ?? '';
      branches.set(index, [...(branches.get(index) ?? []), b]);
    }
    consumed.add(e);
    if (branches.size === 0) {
      kept.push(e); // oneOf matched more than one branch: ajv's message says so
      continue;
    }
    const typeMiss = (bs: ErrorObject[]): ErrorObject | undefined => bs.find((b) => b.keyword === 'type' && b.instancePath === e.instancePath);
    const matched = [...branches.values()].find((bs) => typeMiss(bs) === undefined);
    if (matched !== undefined) {
      kept.push(...matched);
      continue;
    }
    const types = [...branches.values()].map((bs) => String((typeMiss(bs)?.params as { type?: unknown } | undefined)?.type));
    const at = pointerToPath(e.instancePath);
    out.push({ path: at, atKey: false, message: `must be ${types.join(' or ')}, not ${valueText(e.data)}`, covers: [at] });
  }

  // propertyNames: the key's own error, reported at the key.
  for (const e of errors) {
    if (e.keyword !== 'propertyNames') continue;
    consumed.add(e);
    const key = String((e.params as { propertyName?: unknown }).propertyName);
    for (const inner of errors) {
      if (!under(inner, e)) continue;
      consumed.add(inner);
      out.push({ path: [...pointerToPath(e.instancePath), key], atKey: true, message: `key ${describeKeyword({ ...inner, data: key })}`, covers: [] });
    }
  }

  const rest = [...errors.filter((e) => !consumed.has(e)), ...kept];
  // Unknown fields first, so that a required field they suggest is known to be covered.
  const suggested = new Set<string>();
  for (const e of rest) {
    if (e.keyword !== 'additionalProperties') continue;
    const key = String((e.params as { additionalProperty?: unknown }).additionalProperty);
    const allowed = allowedFields(e);
    const meant = closest(key, allowed);
    const at = pointerToPath(e.instancePath);
    const list = allowed.length > 0 ? allowed.join(', ') : 'none';
    const message =
      meant !== undefined
        ? `unknown field ${JSON.stringify(key)}; did you mean ${JSON.stringify(meant)}? (allowed: ${list})`
        : `unknown field ${JSON.stringify(key)} (not in the subset berth implements; allowed: ${list})`;
    if (meant !== undefined) suggested.add(JSON.stringify([...at, meant]));
    out.push({ path: [...at, key], atKey: true, message, covers: meant !== undefined ? [[...at, meant]] : [] });
  }
  for (const e of rest) {
    if (e.keyword === 'additionalProperties') continue;
    const at = pointerToPath(e.instancePath);
    let covers: FieldPath[] = [];
    if (e.keyword === 'required') {
      const missing = String((e.params as { missingProperty?: unknown }).missingProperty);
      // Named already, as the field that was misspelt.
      if (suggested.has(JSON.stringify([...at, missing]))) continue;
      covers = [[...at, missing]];
    } else if (e.keyword === 'type') {
      covers = [at];
    }
    out.push({ path: at, atKey: false, message: describeKeyword(e), covers });
  }

  const seen = new Set<string>();
  return out.filter((p) => {
    const k = JSON.stringify([p.path, p.atKey, p.message]);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/** The properties the schema of an additionalProperties error lists (needs `verbose`). */
function allowedFields(e: ErrorObject): string[] {
  const props = (e.parentSchema as { properties?: Record<string, unknown> } | undefined)?.properties;
  return props === undefined ? [] : Object.keys(props);
}

/** What is wrong and what is allowed, for one ajv error (needs `verbose` for the value). */
function describeKeyword(e: ErrorObject): string {
  const params = e.params as Record<string, unknown>;
  const value = valueText(e.data);
  const limit = Number(params['limit']);
  switch (e.keyword) {
    case 'type':
      return `must be ${Array.isArray(params['type']) ? params['type'].join(' or ') : String(params['type'])}, not ${value}`;
    case 'enum': {
      const allowed = (params['allowedValues'] as unknown[] | undefined) ?? [];
      const meant = typeof e.data === 'string' ? closest(e.data, allowed.filter((v): v is string => typeof v === 'string')) : undefined;
      return `must be one of ${allowed.map((v) => JSON.stringify(v)).join(', ')}, not ${value}${meant !== undefined ? `; did you mean ${JSON.stringify(meant)}?` : ''}`;
    }
    case 'const':
      return `must be ${JSON.stringify(params['allowedValue'])}, not ${value}`;
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum':
      return `must be ${String(params['comparison'])} ${limit}, not ${value}`;
    case 'minLength':
      return limit === 1 ? 'must not be empty' : `must be at least ${limit} characters, not ${lengthOf(e.data)}`;
    case 'maxLength':
      return `must be at most ${limit} characters, not ${lengthOf(e.data)}`;
    case 'minItems':
      return `must have at least ${limit} ${limit === 1 ? 'item' : 'items'}`;
    case 'maxItems':
      return `must have at most ${limit} ${limit === 1 ? 'item' : 'items'}`;
    case 'maxProperties':
      return limit === 0 ? 'must be empty ({})' : `must have at most ${limit} fields`;
    case 'required':
      return `missing required field ${JSON.stringify(String(params['missingProperty']))}`;
    default:
      return e.message ?? e.keyword;
  }
}

function lengthOf(v: unknown): string {
  return typeof v === 'string' ? String([...v].length) : '?';
}

/** A value as the message shows it: strings quoted and cut short, lists and mappings by name. */
function valueText(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  if (Array.isArray(v)) return 'a list';
  if (v !== null && typeof v === 'object') return 'a mapping';
  return String(v);
}

import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { Ajv, type ValidateFunction } from 'ajv';
import { REPO } from './berth.js';

/**
 * Validators for the JSON that berth prints (schemas/status.json, schemas/events.json),
 * strict like the manifest schemas. `date-time` is checked as RFC 3339 with a Z offset,
 * which is what berth writes (toISOString).
 */
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

let validators: { status: ValidateFunction; events: ValidateFunction } | undefined;

function load(): { status: ValidateFunction; events: ValidateFunction } {
  if (validators !== undefined) return validators;
  const ajv = new Ajv({ strict: true, allErrors: true });
  ajv.addFormat('date-time', { type: 'string', validate: (s: string) => RFC3339.test(s) && !Number.isNaN(Date.parse(s)) });
  const read = (f: string): object => JSON.parse(readFileSync(path.join(REPO, 'schemas', f), 'utf8')) as object;
  validators = { status: ajv.compile(read('status.json')), events: ajv.compile(read('events.json')) };
  return validators;
}

function errors(v: ValidateFunction, data: unknown): string[] {
  return v(data) ? [] : (v.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? ''} ${JSON.stringify(e.params)}`);
}

export function validateStatus(data: unknown): string[] {
  return errors(load().status, data);
}

export function validateEvents(data: unknown): string[] {
  return errors(load().events, data);
}

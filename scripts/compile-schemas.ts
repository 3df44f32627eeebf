import { mkdirSync, writeFileSync, renameSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { validatorSource } from '../src/reconciler/manifest.js';

/**
 * Build step (scripts/setup.sh, after tsc): writes dist/schemas/validators.cjs, the manifest
 * validators as ajv standalone code, so that commands do not compile the schemas at every
 * start. The loader checks the digest it carries and compiles at run time when it is stale.
 */
const out = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../schemas/validators.cjs');
mkdirSync(path.dirname(out), { recursive: true });
writeFileSync(`${out}.tmp`, validatorSource());
renameSync(`${out}.tmp`, out);
process.stdout.write(`compile-schemas: ${out}\n`);

/**
 * Validators for OCI documents against the official JSON Schemas, loaded at run time from the Debian packages
 * (golang-github-opencontainers-specs-dev, golang-github-opencontainers-image-spec-dev), never copied in.
 */
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import AjvModule from 'ajv-draft-04';
import type { ValidateFunction } from 'ajv';

// ajv-draft-04 is CommonJS with `module.exports = Ajv` and `exports.default = Ajv`; under nodenext the
// default import is typed as the exports object, so take `.default` (present at run time too).
const Ajv = AjvModule.default;
type AjvInstance = InstanceType<typeof Ajv>;

const GOCODE = '/usr/share/gocode/src/github.com/opencontainers';
export const RUNTIME_SPEC_SCHEMA_DIR = `${GOCODE}/runtime-spec/schema`;
export const IMAGE_SPEC_SCHEMA_DIR = `${GOCODE}/image-spec/schema`;

const DRAFT_04 = 'http://json-schema.org/draft-04/schema#';

/**
 * Draft-04 `id`s change the base URI that relative `$ref`s resolve against: image-manifest-schema.json declares
 * `https://opencontainers.org/schema/image/manifest` and refers to `content-descriptor.json`, which then means
 * `https://opencontainers.org/schema/image/content-descriptor.json`, a URI no file declares. Upstream's Go loader
 * maps every such URI back to a file in the same directory by stripping namespace prefixes; we get the same result
 * by dropping string-valued `id`s (a property *named* `id` has an object value and is kept) so every `$ref`
 * resolves against the filename we register the schema under.
 */
function stripIds(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(stripIds);
  if (typeof node !== 'object' || node === null) return node;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(node)) {
    if (k === 'id' && typeof v === 'string') continue;
    // Image-spec says https://json-schema.org/draft-04/schema#, a URI ajv does not know as the draft-04 meta-schema.
    out[k] = k === '$schema' && typeof v === 'string' ? DRAFT_04 : stripIds(v);
  }
  return out;
}

function missingDir(dir: string, pkg: string): Error {
  return new Error(`load oci schemas ${dir}: directory missing; install the Debian package ${pkg} (apt-get install ${pkg})`);
}

/** One ajv per schema directory; each file registered under its filename and under the `id` it declares. */
function loadDir(dir: string, pkg: string): AjvInstance {
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
  } catch {
    throw missingDir(dir, pkg);
  }
  if (files.length === 0) throw missingDir(dir, pkg);
  const ajv = new Ajv({ strict: false, allErrors: true });
  // Only formats the schemas use; permissive on purpose: we check structure, not URI/time grammar corner cases.
  ajv.addFormat('uri', (s: string) => {
    try {
      new URL(s);
      return true;
    } catch {
      return false;
    }
  });
  ajv.addFormat('date-time', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)$/i);
  for (const file of files) {
    const raw: unknown = JSON.parse(readFileSync(path.join(dir, file), 'utf8'));
    const schema = stripIds(raw) as object;
    ajv.addSchema(schema, file);
    if (typeof raw === 'object' && raw !== null && 'id' in raw && typeof raw.id === 'string') ajv.addSchema(schema, raw.id);
  }
  return ajv;
}

type Validator = (doc: unknown) => void;

function validatorFor(ajv: AjvInstance, file: string, what: string): Validator {
  let compiled: ValidateFunction | undefined;
  return (doc: unknown): void => {
    compiled ??= ajv.getSchema(file) as ValidateFunction | undefined;
    if (compiled === undefined) throw new Error(`validate ${what}: schema ${file} not loaded`);
    if (compiled(doc)) return;
    const lines = (compiled.errors ?? []).map((e) => `  ${e.instancePath === '' ? '/' : e.instancePath}: ${e.message ?? e.keyword}`);
    throw new Error(`validate ${what}: does not match ${file}:\n${lines.join('\n')}`);
  };
}

let runtimeAjv: AjvInstance | undefined;
let imageAjv: AjvInstance | undefined;

function runtimeSchemas(): AjvInstance {
  runtimeAjv ??= loadDir(RUNTIME_SPEC_SCHEMA_DIR, 'golang-github-opencontainers-specs-dev');
  return runtimeAjv;
}

function imageSchemas(): AjvInstance {
  imageAjv ??= loadDir(IMAGE_SPEC_SCHEMA_DIR, 'golang-github-opencontainers-image-spec-dev');
  return imageAjv;
}

const lazy = (load: () => AjvInstance, file: string, what: string): Validator => {
  let v: Validator | undefined;
  return (doc) => {
    v ??= validatorFor(load(), file, what);
    v(doc);
  };
};

/** Throws unless `doc` is a valid runtime-spec `config.json` (config-schema.json and everything it `$ref`s). */
export const validateRuntimeConfig: Validator = lazy(runtimeSchemas, 'config-schema.json', 'runtime config');
/** Throws unless `doc` is a valid runtime-spec `state` document (what `runc state` prints). */
export const validateRuntimeState: Validator = lazy(runtimeSchemas, 'state-schema.json', 'runtime state');
/** Throws unless `doc` is a valid OCI image manifest. */
export const validateImageManifest: Validator = lazy(imageSchemas, 'image-manifest-schema.json', 'image manifest');
/** Throws unless `doc` is a valid OCI image index. */
export const validateImageIndex: Validator = lazy(imageSchemas, 'image-index-schema.json', 'image index');
/** Throws unless `doc` is a valid OCI image config. */
export const validateImageConfig: Validator = lazy(imageSchemas, 'config-schema.json', 'image config');
/** Throws unless `doc` is a valid content descriptor. */
export const validateDescriptor: Validator = lazy(imageSchemas, 'content-descriptor.json', 'content descriptor');

import { createHash } from 'node:crypto';
import { closeSync, fstatSync, lstatSync, openSync, readFileSync, readSync, realpathSync, promises as fsp, constants as fsc } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Ajv, ValidateFunction } from 'ajv';
import { createRequire } from 'node:module';
import { LineCounter, parseAllDocuments, isMap, isNode, isScalar, visit, type Document } from 'yaml';
import { BerthError, errnoCode } from '../lib/errors.js';
// lib, not the runtime façade: validating manifests must not load SQLite, undici or child_process.
import { classifyAddress, hostIPsOverlap } from '../lib/netaddr.js';
import { hostPathAllowed, hostPathAllowList, privilegedIsAllowed } from '../lib/policy.js';
import { parseReference } from '../lib/reference.js';
import { describeSchemaErrors, type FieldPath } from '../lib/schema-errors.js';
import { closest } from '../lib/suggest.js';
import { checkWorkingDir } from '../lib/workdir.js';
import {
  ANNOTATION_PAUSED,
  canonicalJson,
  defaultPullPolicy,
  parseCpu,
  parseMemory,
  type DesiredConfig,
  type DesiredContainer,
  type DesiredImage,
  type DesiredVolume,
  type DesiredVolumeMount,
  type EnvFromSource,
  type EnvSource,
  type DesiredPlatform,
  type DesiredPod,
  type DesiredPortMapping,
  type DesiredSandbox,
  type DesiredSecurity,
  type DesiredHandler,
  type PodKind,
  type PullPolicy,
  type RestartPolicy,
} from './desired.js';

/** One problem in one manifest, positioned for an editor: file:line:col field: message. */
import type { ManifestProblem } from './problem.js';
export { formatProblem, type ManifestProblem } from './problem.js';

export interface LoadResult {
  /** v1 Pods and berth.dev/v1 Containers (one-container pods), keyed namespace/name. */
  pods: DesiredPod[];
  /** berth.dev/v1 Images, keyed image/namespace/name. */
  images: DesiredImage[];
  /** v1 ConfigMaps and Secrets, keyed configmap/… and secret/…/name. */
  configs: DesiredConfig[];
  problems: ManifestProblem[];
  /** Every manifest file read, absolute. */
  files: string[];
  /** Files that failed (their objects are not in `pods` or `images`). */
  badFiles: string[];
}

export const MAX_MANIFEST_FILE_BYTES = 1024 * 1024;
const MAX_ALIASES = 100;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const ENV_NAME = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;


const BERTH_API = 'berth.dev/v1';
/** The kinds berth reads, each with its one apiVersion and its schema. */
const KINDS: Readonly<Record<string, { apiVersion: string; schema: keyof Validators }>> = {
  Pod: { apiVersion: 'v1', schema: 'pod' },
  Container: { apiVersion: BERTH_API, schema: 'container' },
  Image: { apiVersion: BERTH_API, schema: 'image' },
  ConfigMap: { apiVersion: 'v1', schema: 'configmap' },
  Secret: { apiVersion: 'v1', schema: 'secret' },
};
const KIND_NAMES = Object.keys(KINDS);
const API_VERSIONS = [...new Set(Object.values(KINDS).map((k) => k.apiVersion))];
const READS = `berth reads: Pod, ConfigMap and Secret (apiVersion: v1), Container and Image (apiVersion: ${BERTH_API})`;

/**
 * Kubernetes workload kinds: each wraps a pod template that berth would run as a Pod, so the
 * message says where the template is and what does not carry over.
 */
const WORKLOADS: Readonly<Record<string, { template: string; dropped: string }>> = {
  Deployment: { template: 'spec.template', dropped: 'replicas are not supported' },
  ReplicaSet: { template: 'spec.template', dropped: 'replicas are not supported' },
  StatefulSet: { template: 'spec.template', dropped: 'replicas and volumeClaimTemplates are not supported' },
  DaemonSet: { template: 'spec.template', dropped: 'on one host a DaemonSet is one Pod' },
  Job: { template: 'spec.template', dropped: 'completions and parallelism are not supported' },
  CronJob: { template: 'spec.jobTemplate.spec.template', dropped: 'schedules are not supported' },
};

/** berth.dev/v1 annotations berth reads; any other `berth.dev/` key is a typo and rejected. */
const BERTH_ANNOTATIONS: readonly string[] = [ANNOTATION_PAUSED];

/**
 * At most this many problems are listed per document: a generated file with one mistake
 * repeated ten thousand times needs the first ones and a count, not the whole list.
 */
export const MAX_PROBLEMS_PER_DOCUMENT = 100;
/** Problems (and ajv errors) looked at per document, to sort and pick the first ones from. */
const MAX_PROBLEMS_KEPT = 10 * MAX_PROBLEMS_PER_DOCUMENT;

interface Validators {
  pod: ValidateFunction;
  container: ValidateFunction;
  image: ValidateFunction;
  configmap: ValidateFunction;
  secret: ValidateFunction;
}

let validators: Validators | undefined;

const SCHEMA_FILES = ['pod.json', 'container.json', 'image.json', 'configmap.json', 'secret.json'] as const;

function schemaDir(): string {
  // dist/src/reconciler/manifest.js → repository root is three levels up (two from src/).
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const d of [path.resolve(here, '../../../schemas'), path.resolve(here, '../../schemas')]) {
    try {
      readFileSync(path.join(d, 'pod.json'));
      return d;
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw new BerthError('ERR_INTERNAL', `load schema ${path.join(d, 'pod.json')}: ${String(err)}`, { cause: err });
    }
  }
  throw new BerthError('ERR_INTERNAL', `load schema: schemas/pod.json not found near ${here}`);
}

/** The schema files' text and one digest over them (what a precompiled module was built from). */
function schemaTexts(): { texts: Record<string, string>; digest: string } {
  const dir = schemaDir();
  const texts: Record<string, string> = {};
  const h = createHash('sha256');
  for (const f of SCHEMA_FILES) {
    texts[f] = readFileSync(path.join(dir, f), 'utf8');
    h.update(f).update('\0').update(texts[f] ?? '').update('\0');
  }
  return { texts, digest: h.digest('hex') };
}

const requireCjs = createRequire(import.meta.url);

/** ajv is loaded only when the schemas must be compiled (no current precompiled module). */
function newAjv(source: boolean): Ajv {
  const { Ajv: AjvClass } = requireCjs('ajv') as typeof import('ajv');
  // verbose: errors carry parentSchema and data, so messages can list the allowed fields and
  // show the value. allErrors departs from rule M3 (allErrors:false) on purpose, for issue 12:
  // one run must list every mistake of a file (a file with eight took nine rounds of apply).
  // M3 wanted the first error only to bound the work an invalid document causes; that bound
  // is kept by the file size limit (M1), and the listing by MAX_PROBLEMS_PER_DOCUMENT.
  return new AjvClass({ strict: true, allErrors: true, coerceTypes: false, $data: false, useDefaults: false, verbose: true, ...(source ? { code: { source: true } } : {}) });
}

const VALIDATOR_NAMES: readonly (keyof Validators)[] = ['pod', 'container', 'image', 'configmap', 'secret'];

function addSchemas(ajv: Ajv, texts: Record<string, string>): Record<keyof Validators, string> {
  const ids = SCHEMA_FILES.map((f) => {
    const schema = JSON.parse(texts[f] ?? '{}') as { $id?: string };
    ajv.addSchema(schema);
    return schema.$id ?? f;
  });
  return Object.fromEntries(VALIDATOR_NAMES.map((n, i) => [n, ids[i] ?? ''])) as Record<keyof Validators, string>;
}

/**
 * The validators as standalone code (ajv's standalone output, CommonJS), written at build time
 * to dist/schemas/validators.cjs by scripts/compile-schemas: compiling the schemas took ~55 ms
 * of every `diff`/`validate`. The module carries the digest of the schema files it came from.
 */
export function validatorSource(): string {
  const { texts, digest } = schemaTexts();
  const ajv = newAjv(true);
  const ids = addSchemas(ajv, texts);
  const standaloneCode = (requireCjs('ajv/dist/standalone') as { default: (ajv: Ajv, refs: Record<string, string>) => string }).default;
  return `${standaloneCode(ajv, ids)}\nmodule.exports.schemaDigest = ${JSON.stringify(digest)};\n`;
}

/** Compiled once (rule M3): precompiled when dist/schemas/validators.cjs matches the schemas, else now. */
function schemaValidators(): Validators {
  if (validators !== undefined) return validators;
  const { texts, digest } = schemaTexts();
  try {
    const here = path.dirname(fileURLToPath(import.meta.url));
    const pre = requireCjs(path.resolve(here, '../../schemas/validators.cjs')) as Partial<Validators> & { schemaDigest?: string };
    if (pre.schemaDigest === digest && VALIDATOR_NAMES.every((n) => pre[n] !== undefined)) {
      validators = pre as Validators;
      precompiled = true;
      return validators;
    }
  } catch {
    // not built (a checkout run from source) or unreadable: compile below
  }
  const ajv = newAjv(false);
  const ids = addSchemas(ajv, texts);
  const get = (id: string): ValidateFunction => {
    const v = ajv.getSchema(id);
    if (v === undefined) throw new BerthError('ERR_INTERNAL', `load schema ${id}: not compiled`);
    return v;
  };
  validators = { pod: get(ids.pod), container: get(ids.container), image: get(ids.image), configmap: get(ids.configmap), secret: get(ids.secret) };
  return validators;
}

let precompiled = false;

/** For tests: whether the validators in use came from the precompiled module. */
export function validatorsArePrecompiled(): boolean {
  schemaValidators();
  return precompiled;
}

const MANIFEST_NAME = /\.(ya?ml|json)$/;

/**
 * Lists manifest files under `p` (a file or directory): non-dot `*.yaml`, `*.yml` and `*.json`
 * files, recursively; editor swap/backup files are ignored (rule M1, which named only YAML;
 * issue 12 adds JSON, as kubectl reads it, so that no command skips a file another reads —
 * JSON is YAML 1.2, so the same parser reads it, with positions). Symlinked directories are
 * followed once (git-sync swaps a symlink). Symlinked files are followed when their target
 * lies inside the manifest directory (a mounted ConfigMap's `..data/x.yaml` layout); one
 * that points outside is reported, never read.
 */
export async function listManifestFiles(p: string): Promise<{ files: string[]; problems: ManifestProblem[]; root?: string }> {
  const abs = path.resolve(p);
  let st;
  try {
    st = await fsp.stat(abs);
  } catch (err) {
    throw new BerthError('ERR_INVALID_ARGUMENT', `read manifests ${abs}: ${errnoCode(err) === 'ENOENT' ? 'no such file or directory' : String(err)}`);
  }
  if (st.isFile()) return { files: [abs], problems: [] };
  if (!st.isDirectory()) throw new BerthError('ERR_INVALID_ARGUMENT', `read manifests ${abs}: not a file or directory`);
  const files: string[] = [];
  const problems: ManifestProblem[] = [];
  const rootReal = await fsp.realpath(abs);
  const seen = new Set<string>();
  const walk = async (dir: string): Promise<void> => {
    const real = await fsp.realpath(dir);
    if (seen.has(real)) return;
    seen.add(real);
    const entries = await fsp.readdir(dir, { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      if (e.name.startsWith('.') || e.name.endsWith('~') || e.name.startsWith('#')) continue;
      // `<dir>/images/` holds image archives (an OCI layout has index.json), imported, never parsed (issue 14).
      if (dir === abs && e.name === 'images') continue;
      const full = path.join(dir, e.name);
      const target = e.isSymbolicLink() ? await fsp.stat(full).catch(() => undefined) : undefined;
      if (e.isDirectory()) {
        await walk(full);
      } else if (target?.isDirectory() === true) {
        // A symlinked directory is walked only when it stays inside the manifest directory
        // (git-sync swaps a link to a checkout next to it); a link to `/` must not make the
        // loader (or the watcher) walk the host. Regression: symlinked-dir-escapes-root.
        const to = await fsp.realpath(full);
        if (to === rootReal || to.startsWith(`${rootReal}/`)) await walk(full);
        else problems.push({ file: full, line: 1, col: 1, field: '', message: `symlink to directory ${to} points outside the manifest directory; not read (rule M1)` });
      } else if (!MANIFEST_NAME.test(e.name)) {
        continue;
      } else if (e.isFile()) {
        files.push(full);
      } else if (target?.isFile() === true) {
        const to = await fsp.realpath(full);
        if (to.startsWith(`${rootReal}/`)) files.push(full);
        else problems.push({ file: full, line: 1, col: 1, field: '', message: `symlink to ${to} points outside the manifest directory; not read (rule M1)` });
      } else if (e.isSymbolicLink()) {
        problems.push({ file: full, line: 1, col: 1, field: '', message: 'dangling symlink' });
      } else {
        problems.push({ file: full, line: 1, col: 1, field: '', message: 'not a regular file' });
      }
    }
  };
  await walk(abs);
  return { files, problems, root: rootReal };
}

/**
 * Reads a manifest file with O_NOFOLLOW|O_NONBLOCK and the size limit (rule M1). With `root`
 * (the real path of the directory it was listed from), the file must still resolve inside it:
 * a link swapped to point elsewhere after listing is refused, not read. Regression:
 * symlink-swapped-after-listing.
 */
export async function readManifestFile(file: string, root?: string): Promise<string> {
  if (root !== undefined) {
    const real = realpathSync(file);
    if (!real.startsWith(`${root}/`)) throw new BerthError('ERR_INVALID_MANIFEST', `read ${file}: resolves to ${real}, outside the manifest directory ${root}; not read (rule M1)`);
  }
  return readManifestFileSync(file);
}

/**
 * Synchronous on purpose: manifests are small local files, and five thread-pool round trips
 * per file (lstat, open, fstat, read, close) cost more than the reads (a 200-file directory,
 * re-read at every change and resync, took 50 ms of CPU that way).
 */
function readManifestFileSync(file: string): string {
  // A symlinked file was vetted by listManifestFiles (or named on the command line): open its
  // target, still with O_NOFOLLOW so that nothing else is followed.
  const lst = lstatSync(file);
  const real = lst.isSymbolicLink() ? realpathSync(file) : file;
  const fd = openSync(real, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new BerthError('ERR_INVALID_MANIFEST', `read ${file}: not a regular file`);
    if (st.size > MAX_MANIFEST_FILE_BYTES) {
      throw new BerthError('ERR_INVALID_MANIFEST', `read ${file}: ${st.size} bytes exceeds the ${MAX_MANIFEST_FILE_BYTES} byte limit`);
    }
    // Sized by fstat plus one byte, growing only if the file grew meanwhile: a fixed 1 MiB
    // buffer per file made reading 200 files allocate 200 MiB (most of a resync's CPU was GC).
    let buf = Buffer.allocUnsafe(st.size + 1);
    let n = 0;
    for (;;) {
      if (n === buf.length) {
        if (buf.length > MAX_MANIFEST_FILE_BYTES) break;
        const bigger = Buffer.allocUnsafe(Math.min(buf.length * 2, MAX_MANIFEST_FILE_BYTES + 1));
        buf.copy(bigger, 0, 0, n);
        buf = bigger;
      }
      const bytesRead = readSync(fd, buf, n, buf.length - n, n);
      if (bytesRead === 0) break;
      n += bytesRead;
    }
    if (n > MAX_MANIFEST_FILE_BYTES) throw new BerthError('ERR_INVALID_MANIFEST', `read ${file}: exceeds the ${MAX_MANIFEST_FILE_BYTES} byte limit`);
    return buf.subarray(0, n).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

/** Where manifests come from: a path, or stdin's text (`-f -`, whose source name is "-"). */
export interface ManifestInput {
  path: string;
  stdinText?: string;
}

/**
 * The text of every manifest of an input, one entry per file (or "-" for stdin); files that
 * cannot be listed or read become problems (rule M1).
 */
async function readManifestSources(input: ManifestInput): Promise<{ sources: { file: string; text: string }[]; problems: ManifestProblem[] }> {
  if (input.stdinText !== undefined) return { sources: [{ file: '-', text: input.stdinText }], problems: [] };
  const listed = await listManifestFiles(input.path);
  const sources: { file: string; text: string }[] = [];
  const problems = [...listed.problems];
  for (const file of listed.files) {
    try {
      sources.push({ file, text: await readManifestFile(file, listed.root) });
    } catch (err) {
      problems.push({ file, line: 1, col: 1, field: '', message: err instanceof Error ? err.message : String(err) });
    }
  }
  return { sources, problems };
}

/**
 * `owners`: for a pod declared twice, the file that applied it last (the running one)
 * keeps it and the newcomer is the one reported; otherwise the first file wins.
 */
/**
 * Parse results by file, reused while a file's text is unchanged (`berth up` re-reads its
 * directories at every change and resync; parsing and validating is most of that cost).
 * Results are never mutated by callers.
 */
export type ParseCache = Map<string, { text: string; parsed: ReturnType<typeof parseManifestText> }>;

export async function loadManifests(input: string | ManifestInput, opts: { owners?: ReadonlyMap<string, string>; cache?: ParseCache } = {}): Promise<LoadResult> {
  const read = await readManifestSources(typeof input === 'string' ? { path: input } : input);
  const result: LoadResult = {
    pods: [],
    images: [],
    configs: [],
    problems: [...read.problems],
    files: [...read.sources.map((x) => x.file), ...read.problems.map((x) => x.file)],
    badFiles: read.problems.map((x) => x.file),
  };
  const seen = new Set<string>();
  for (const { file, text } of read.sources) {
    seen.add(file);
    const hit = opts.cache?.get(file);
    const parsed = hit !== undefined && hit.text === text ? hit.parsed : parseManifestText(text, file);
    opts.cache?.set(file, { text, parsed });
    const { pods, images, configs, problems } = parsed;
    if (problems.length > 0) {
      result.problems.push(...problems);
      result.badFiles.push(file);
    } else {
      result.pods.push(...pods);
      result.images.push(...images);
      result.configs.push(...configs);
    }
  }
  for (const file of opts.cache?.keys() ?? []) if (!seen.has(file)) opts.cache?.delete(file);
  // A pod whose owning file is still here but does not parse now stays that file's (its last
  // good objects are kept): another file declaring it is a duplicate, not the new owner — else
  // a typo in the owner handed the pod over and replaced the container (regression
  // broken-owner-hands-pod-over).
  const broken = new Set(result.badFiles);
  for (const pod of result.pods) {
    const owner = opts.owners?.get(pod.key);
    if (owner === undefined || owner === pod.source || !broken.has(owner)) continue;
    result.problems.push({ file: pod.source, line: pod.line, col: 1, field: 'metadata.name', message: `pod ${pod.key} is also declared in ${owner}, which owns it (that file does not parse now; fix it, or remove the pod from it, to move the pod)` });
    result.badFiles.push(pod.source);
  }
  const configDups = duplicates(result.configs, undefined, (c, prev) => `${c.kind} ${c.namespace}/${c.name} is also declared in ${prev.source}:${prev.line}`);
  for (const p of [...duplicatePods(result.pods, opts.owners), ...duplicateImages(result.images), ...configDups, ...hostPortClashes(result.pods)]) {
    result.problems.push(p);
    result.badFiles.push(p.file);
  }
  if (result.badFiles.length > 0) {
    const bad = new Set(result.badFiles);
    result.pods = result.pods.filter((pod) => !bad.has(pod.source));
    result.images = result.images.filter((image) => !bad.has(image.source));
    result.configs = result.configs.filter((c) => !bad.has(c.source));
    result.badFiles = [...bad];
  }
  result.problems = sortProblems(result.problems);
  return result;
}

/**
 * Problems in reading order: by file, then line, then column; stable otherwise. Files compare
 * by path component, which is the order listManifestFiles walks a directory (`a/x.yaml`
 * before `a-b.yaml`).
 */
export function sortProblems(problems: readonly ManifestProblem[]): ManifestProblem[] {
  return [...problems].sort((a, b) => comparePaths(a.file, b.file) || a.line - b.line || a.col - b.col);
}

function comparePaths(a: string, b: string): number {
  if (a === b) return 0;
  const x = a.split('/');
  const y = b.split('/');
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const p = x[i] ?? '';
    const q = y[i] ?? '';
    if (p !== q) return p < q ? -1 : 1;
  }
  return x.length - y.length;
}

/**
 * Names are unique per namespace across all files (rule M4): one problem per later duplicate.
 * A berth.dev/v1 Container is a pod, so a Pod and a Container of one name collide.
 */
export function duplicatePods(pods: readonly DesiredPod[], owners?: ReadonlyMap<string, string>): ManifestProblem[] {
  return duplicates(pods, owners, (pod, prev) => {
    const what = pod.kind === 'Pod' ? 'pod' : pod.kind;
    const kinds = prev.kind === pod.kind ? '' : ` as a ${prev.kind} (a Container is a one-container pod: the two kinds share names)`;
    return `${what} ${pod.key} is also declared in ${prev.source}:${prev.line}${kinds}`;
  });
}

/** Image names are unique per namespace across all files, in a name space of their own. */
export function duplicateImages(images: readonly DesiredImage[]): ManifestProblem[] {
  return duplicates(images, undefined, (image, prev) => `Image ${image.namespace}/${image.name} is also declared in ${prev.source}:${prev.line}`);
}

function duplicates<T extends { key: string; source: string; line: number }>(
  objects: readonly T[],
  owners: ReadonlyMap<string, string> | undefined,
  message: (dup: T, prev: T) => string,
): ManifestProblem[] {
  const byKey = new Map<string, T>();
  const problems: ManifestProblem[] = [];
  const owned = (o: T): boolean => owners?.get(o.key) === o.source;
  // Owners first (stable otherwise), so a newcomer redeclaring a running object is the one rejected.
  const ordered = [...objects].sort((a, b) => Number(owned(b)) - Number(owned(a)));
  for (const o of ordered) {
    const prev = byKey.get(o.key);
    if (prev === undefined) {
      byKey.set(o.key, o);
      continue;
    }
    problems.push({ file: o.source, line: o.line, col: 1, field: 'metadata.name', message: message(o, prev) });
  }
  return problems;
}

type Report = (fieldPath: FieldPath, message: string, atKey?: boolean) => void;

/**
 * Parses one file's text into pods and images. Every problem of every document is listed
 * (at most MAX_PROBLEMS_PER_DOCUMENT each), in line order, with file:line:col; a file with
 * any problem yields no objects from the documents that have them.
 */
export function parseManifestText(text: string, file: string): { pods: DesiredPod[]; images: DesiredImage[]; configs: DesiredConfig[]; problems: ManifestProblem[] } {
  const lc = new LineCounter();
  const problems: ManifestProblem[] = [];
  const pods: DesiredPod[] = [];
  const images: DesiredImage[] = [];
  const configs: DesiredConfig[] = [];
  const at = (offset: number | undefined): { line: number; col: number } => {
    if (offset === undefined) return { line: 1, col: 1 };
    const pos = lc.linePos(offset);
    return { line: pos.line, col: pos.col };
  };
  const body = text.startsWith('\ufeff') ? text.slice(1) : text;
  let docs: Document.Parsed[];
  try {
    docs = parseAllDocuments(body, { schema: 'core', uniqueKeys: true, lineCounter: lc, prettyErrors: false, strict: true }) as Document.Parsed[];
  } catch (err) {
    return { pods, images, configs, problems: [{ file, line: 1, col: 1, field: '', message: `parse: ${(err as Error).message}` }] };
  }
  if (!Array.isArray(docs)) docs = [docs as unknown as Document.Parsed];
  for (const doc of docs) {
    // Warnings are errors (rule M2): they mean the YAML is not what it looks like.
    for (const e of [...doc.errors, ...doc.warnings]) {
      const { line, col } = at(e.pos[0]);
      problems.push({ file, line, col, field: '', message: `yaml: ${e.message.split('\n')[0] ?? e.message}` });
    }
    if (doc.errors.length > 0 || doc.warnings.length > 0) continue;
    if (doc.contents === null) continue; // empty document
    let obj: unknown;
    try {
      obj = doc.toJS({ maxAliasCount: MAX_ALIASES });
    } catch (err) {
      problems.push({ file, ...at(doc.contents.range[0]), field: '', message: `yaml: ${(err as Error).message}` });
      continue;
    }
    if (obj === null || obj === undefined) continue;
    const docLine = at(doc.contents.range[0]).line;
    // File modes written the YAML 1.1 way (0400): YAML 1.2 reads decimal 400, kubectl octal 256.
    // Either reading would surprise someone, so the file must say which (256 or 0o400).
    // Such a document yields no object (regression: octal-mode-problem-still-yields-pod).
    const before = problems.length;
    visit(doc, {
      Pair(_k, pair) {
        // Plain scalars only: a quoted "0644" is a string to every reader (a ConfigMap value, a
        // label), nothing ambiguous (regression quoted-mode-string-refused).
        if (!isScalar(pair.key) || (pair.key.value !== 'defaultMode' && pair.key.value !== 'mode') || !isScalar(pair.value) || pair.value.type !== 'PLAIN') return;
        const src = pair.value.source;
        if (typeof src === 'string' && /^0[0-7]+$/.test(src)) {
          problems.push({ file, ...at(pair.value.range?.[0]), field: String(pair.key.value), message: `${src} is ambiguous: YAML 1.2 reads it as decimal ${Number(src)}, kubectl as octal ${parseInt(src, 8)}; write ${parseInt(src, 8)} or 0o${src.slice(1)}` });
        }
      },
    });
    const ambiguousModes = problems.length > before;
    const locate = (fieldPath: FieldPath): { line: number; col: number } => {
      for (let n = fieldPath.length; n >= 0; n--) {
        const node = doc.getIn(fieldPath.slice(0, n), true);
        if (isNode(node) && node.range) return at(node.range[0]);
      }
      return { line: docLine, col: 1 };
    };
    const locateKey = (parentPath: FieldPath, key: string): { line: number; col: number } => {
      const parent = doc.getIn(parentPath, true);
      if (isMap(parent)) {
        for (const item of parent.items) {
          if (isScalar(item.key) && item.key.value === key && item.key.range) return at(item.key.range[0]);
        }
      }
      return locate(parentPath);
    };
    const found: ManifestProblem[] = [];
    // Past the bound, problems are counted as "more", not kept: a 1 MiB list of wrong values
    // would otherwise become half a million problems, positions and strings.
    let overflow = false;
    const problem: Report = (fieldPath, message, atKey = false) => {
      if (found.length >= MAX_PROBLEMS_KEPT) {
        overflow = true;
        return;
      }
      const pos = atKey ? locateKey(fieldPath.slice(0, -1), String(fieldPath[fieldPath.length - 1])) : locate(fieldPath);
      found.push({ file, ...pos, field: dotted(fieldPath), message });
    };
    const object = checkDocument(obj, { file, line: docLine, problem, overflow: () => (overflow = true) });
    problems.push(...capped(sortProblems(found), overflow));
    if (found.length > 0 || ambiguousModes || object === undefined) continue;
    if ('image' in object) images.push(object.image);
    else if ('config' in object) configs.push(object.config);
    else pods.push(object.pod);
  }
  return { pods, images, configs, problems: sortProblems(problems) };
}

/**
 * The first MAX_PROBLEMS_PER_DOCUMENT problems, and a line saying that there are more (how
 * many, unless some were never kept).
 */
function capped(found: ManifestProblem[], overflow: boolean): ManifestProblem[] {
  if (found.length <= MAX_PROBLEMS_PER_DOCUMENT && !overflow) return found;
  const shown = found.slice(0, MAX_PROBLEMS_PER_DOCUMENT);
  const last = shown[shown.length - 1];
  const more = found.length - MAX_PROBLEMS_PER_DOCUMENT;
  const count = overflow ? 'more problems' : `${more} more problem${more === 1 ? '' : 's'}`;
  const message = `${count} in this document not listed (at most ${MAX_PROBLEMS_PER_DOCUMENT} are listed per document)`;
  // At the last one shown, so that sorting keeps the note after it.
  return [...shown, { file: last?.file ?? '', line: last?.line ?? 1, col: last?.col ?? 1, field: '', message }];
}

/**
 * One document: its kind, then the string, schema and semantic checks, all of them, so that
 * one run lists every mistake. A semantic check stays quiet about a field an earlier check
 * named (an env name with a NUL is also not a valid env name; a misspelt `hostnetwork` is
 * also a missing `hostNetwork`). Returns the object it declares, meaningful only when no
 * problem was reported.
 */
function checkDocument(
  obj: unknown,
  { file, line, problem, overflow }: { file: string; line: number; problem: Report; overflow: () => void },
): { pod: DesiredPod } | { image: DesiredImage } | { config: DesiredConfig } | undefined {
  const o = recordOf(obj);
  if (o === undefined) {
    problem([], 'a manifest document must be a mapping with apiVersion and kind');
    return undefined;
  }
  const kind = resolveKind(o, problem);
  if (kind === undefined) return undefined;
  // Fields named by a string or schema problem, and fields whose whole subtree one explains.
  const named = new Set<string>();
  const covered = new Set<string>();
  const early: Report = (fieldPath, message, atKey) => {
    named.add(dotted(fieldPath));
    problem(fieldPath, message, atKey);
  };
  checkStrings(o, early);
  const validate = schemaValidators()[kind.schema];
  // Validated as the kind it was meant to be: a missing or misspelt apiVersion or kind was
  // reported by resolveKind, and the rest of the document still deserves its checks.
  if (!validate({ ...o, apiVersion: kind.apiVersion, kind: kind.name })) {
    const errors = validate.errors ?? [];
    if (errors.length > MAX_PROBLEMS_KEPT) overflow();
    for (const p of describeSchemaErrors(errors.slice(0, MAX_PROBLEMS_KEPT))) {
      early(p.path, p.message, p.atKey);
      for (const c of p.covers) covered.add(dotted(c));
    }
  }
  const semantic: Report = (fieldPath, message, atKey) => {
    if (named.has(dotted(fieldPath))) return;
    for (let n = 0; n <= fieldPath.length; n++) if (covered.has(dotted(fieldPath.slice(0, n)))) return;
    problem(fieldPath, message, atKey);
  };
  if (kind.name === 'Image') return { image: toDesiredImage(readImage(o), file, line, semantic) };
  if (kind.name === 'ConfigMap' || kind.name === 'Secret') return { config: toDesiredConfig(kind.name, o, file, line, semantic) };
  return { pod: toDesiredPod(kind.name === 'Pod' ? podShape(o) : containerShape(o), file, line, semantic) };
}

/**
 * The kind a document declares, or was clearly meant to (a misspelt kind one or two edits
 * from one berth reads; a Pod without apiVersion), with a problem for each header mistake;
 * undefined when it is not one berth reads (Deployments and other workloads get a hint).
 */
function resolveKind(o: Record<string, unknown>, problem: Report): { name: string; apiVersion: string; schema: keyof Validators } | undefined {
  const apiVersion = o['apiVersion'] ?? undefined;
  const kind = o['kind'] ?? undefined;
  const api = typeof apiVersion === 'string' ? apiVersion : undefined;
  if (kind === undefined) {
    if (apiVersion === undefined) {
      problem([], `apiVersion and kind are missing (${READS})`);
      return undefined;
    }
    const kinds = KIND_NAMES.filter((k) => KINDS[k]?.apiVersion === api);
    const only = kinds.length === 1 ? kinds[0] : undefined;
    // Missing fields are the document's problem: no field to point at, and the message names it.
    problem([], kinds.length === 0 ? `kind is missing (${READS})` : `kind is missing; apiVersion ${api ?? ''} has ${only !== undefined ? `kind ${only}` : `kinds ${kinds.slice(0, -1).join(', ')} and ${kinds[kinds.length - 1] ?? ''}`}`);
    return only !== undefined ? kindOf(only) : undefined;
  }
  if (typeof kind !== 'string') {
    problem(['kind'], `must be a string such as Pod, not ${kind === null || typeof kind !== 'object' ? String(kind) : Array.isArray(kind) ? 'a list' : 'a mapping'}`);
    return undefined;
  }
  const object = api !== undefined ? `${api}/${kind}` : kind;
  if (Object.hasOwn(WORKLOADS, kind)) {
    problem(['kind'], `unsupported object ${object}: ${workloadHint(kind)}`);
    return undefined;
  }
  const meant = Object.hasOwn(KINDS, kind) ? kind : closest(kind, KIND_NAMES);
  if (meant === undefined) {
    const workload = closest(kind, Object.keys(WORKLOADS));
    problem(
      ['kind'],
      workload !== undefined
        ? `unknown kind ${JSON.stringify(kind)}; did you mean ${JSON.stringify(workload)}? ${workloadHint(workload)}`
        : `unsupported object ${object}: this berth implements v1/Pod, ${BERTH_API}/Container, ${BERTH_API}/Image, v1/ConfigMap and v1/Secret`,
    );
    return undefined;
  }
  if (meant !== kind) problem(['kind'], `unknown kind ${JSON.stringify(kind)}; did you mean ${JSON.stringify(meant)}? (${READS})`);
  const want = kindOf(meant);
  const needs = `${/^[AEIOU]/.test(meant) ? 'an' : 'a'} ${meant} needs apiVersion: ${want.apiVersion}`;
  if (apiVersion === undefined) {
    problem([], `apiVersion is missing; ${needs}`);
  } else if (api === undefined) {
    problem(['apiVersion'], `must be a string; ${needs}`);
  } else if (api !== want.apiVersion) {
    const near = closest(api, API_VERSIONS) === want.apiVersion;
    problem(['apiVersion'], near ? `unknown apiVersion ${JSON.stringify(api)}; did you mean ${JSON.stringify(want.apiVersion)}? (${needs})` : `apiVersion ${JSON.stringify(api)} is not the one for this kind: ${needs}`);
  }
  return want;
}

function kindOf(name: string): { name: string; apiVersion: string; schema: keyof Validators } {
  const k = KINDS[name];
  if (k === undefined) throw new BerthError('ERR_INTERNAL', `kind ${name} is not in KINDS`);
  return { name, ...k };
}

/** Where a workload keeps its pod template, and what berth cannot do with the rest. */
function workloadHint(kind: string): string {
  const w = WORKLOADS[kind];
  const t = w?.template ?? 'spec.template';
  return `berth runs Pods (and its own Container kind), not ${kind}s; take the pod template out: a Pod (apiVersion: v1, kind: Pod) with metadata from ${t}.metadata (plus a name) and spec from ${t}.spec; ${w?.dropped ?? 'replicas are not supported'}`;
}

/**
 * Every string in the document, keys included, must survive the trip to an argv, an
 * environment, a path, a JSON spec and a SQLite row: no U+0000 (C strings end there) and no
 * unpaired UTF-16 surrogate (not Unicode, so not UTF-8: Buffer.from would turn it into
 * U+FFFD, and the container would run something other than what the manifest says).
 */
function checkStrings(root: Record<string, unknown>, problem: Report): void {
  const check = (s: string, fieldPath: FieldPath, atKey: boolean): void => {
    const carrier = carrierOf(fieldPath, atKey);
    if (s.includes('\0')) problem(fieldPath, `contains a NUL byte, which ${carrier} cannot carry`, atKey);
    const lone = LONE_SURROGATE.exec(s);
    if (lone !== null) {
      const unit = lone[0].charCodeAt(0).toString(16).toUpperCase();
      problem(fieldPath, `contains an unpaired UTF-16 surrogate (U+${unit} at index ${lone.index}), which is not Unicode and cannot be encoded as UTF-8 for ${carrier}`, atKey);
    }
  };
  // Iterative: a deeply nested document must not exhaust the stack here.
  const stack: { v: unknown; p: FieldPath }[] = [{ v: root, p: [] }];
  for (let item = stack.pop(); item !== undefined; item = stack.pop()) {
    const { v, p } = item;
    if (typeof v === 'string') check(v, p, false);
    else if (Array.isArray(v)) v.forEach((x, i) => stack.push({ v: x, p: [...p, i] }));
    else if (v !== null && typeof v === 'object') {
      for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
        check(k, [...p, k], true);
        stack.push({ v: x, p: [...p, k] });
      }
    }
  }
}

// In a `u` regex a paired surrogate is one code point, so \p{Cs} matches only unpaired halves.
const LONE_SURROGATE = /\p{Cs}/u;

/** What a string at `fieldPath` becomes, for the message. */
function carrierOf(fieldPath: FieldPath, atKey: boolean): string {
  const names = fieldPath.filter((x): x is string => typeof x === 'string');
  const last = names[names.length - 1];
  if (names.includes('command') || names.includes('args')) return 'a process argument';
  if (names.includes('env')) return 'an environment variable';
  if (names[0] === 'metadata' && names[1] === 'labels') return atKey ? 'a label key' : 'a label value';
  if (names[0] === 'metadata' && names[1] === 'annotations') return atKey ? 'an annotation key' : 'an annotation value';
  if (last === 'workingDir') return 'a path';
  if (last === 'image' || last === 'ref') return 'an image reference';
  if (last === 'name' || last === 'namespace') return 'a name';
  return 'a manifest value';
}

/** spec.containers[0].image; a key that is not a plain word is quoted: metadata.annotations["berth.dev/paused"]. */
function dotted(p: FieldPath): string {
  return p.reduce<string>((acc, s) => {
    if (typeof s === 'number') return `${acc}[${s}]`;
    // JSON.stringify escapes NUL and unpaired surrogates, so a hostile key cannot reach a terminal raw.
    if (!/^[A-Za-z_$][\w$-]*$/.test(s)) return `${acc}[${JSON.stringify(s)}]`;
    return acc === '' ? s : `${acc}.${s}`;
  }, '');
}

/*
 * The shapes below are read leniently, so that the semantic checks run on a document the
 * schema rejected too: a value of the wrong type reads as absent (the schema named it).
 * When the schema passed they read exactly what it allows.
 */

function recordOf(v: unknown): Record<string, unknown> | undefined {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
}

function stringOf(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function listOf(v: unknown): unknown[] {
  return Array.isArray(v) ? (v as unknown[]) : [];
}

function stringsOf(v: unknown): string[] | undefined {
  return Array.isArray(v) && v.every((x) => typeof x === 'string') ? (v as string[]) : undefined;
}

function integerOf(v: unknown): number | undefined {
  return Number.isSafeInteger(v) ? (v as number) : undefined;
}

function quantityOf(v: unknown): string | number | undefined {
  return typeof v === 'string' || typeof v === 'number' ? v : undefined;
}

function stringMapOf(v: unknown): Record<string, string> {
  const r = recordOf(v);
  return r === undefined ? {} : Object.fromEntries(Object.entries(r).filter((e): e is [string, string] => typeof e[1] === 'string'));
}

const PULL_POLICIES: readonly PullPolicy[] = ['Always', 'IfNotPresent', 'Never'];
const RESTART_POLICIES: readonly RestartPolicy[] = ['Always', 'OnFailure', 'Never'];

function pullPolicyOf(v: unknown): PullPolicy | undefined {
  return PULL_POLICIES.find((p) => p === v);
}

interface ContainerFields {
  name: string | undefined;
  image: string | undefined;
  imagePullPolicy: PullPolicy | undefined;
  command: string[] | undefined;
  args: string[] | undefined;
  workingDir: string | undefined;
  env: { name: string | undefined; value: string | undefined; valueFrom: EnvSource | undefined }[];
  envFrom: EnvFromSource[];
  volumeMounts: { name: string | undefined; mountPath: string | undefined; readOnly: boolean; subPath: string | undefined }[];
  ports: { containerPort: number | undefined; hostPort: number | undefined; hostIP: string | undefined; protocol: string | undefined }[];
  security: Record<string, unknown> | undefined;
  raw: Record<string, unknown>;
  limits: { cpu: string | number | undefined; memory: string | number | undefined };
  requests: { cpu: string | number | undefined; memory: string | number | undefined };
}

interface ObjectMeta {
  name: string | undefined;
  namespace: string | undefined;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

interface PodLevelFields {
  restartPolicy: RestartPolicy | undefined;
  hostNetwork: boolean | undefined;
  terminationGracePeriodSeconds: number | undefined;
  hostname: string | undefined;
  subdomain: string | undefined;
  dnsPolicy: DesiredSandbox['dns']['policy'] | undefined;
  dnsConfig: { nameservers: string[] | undefined; searches: string[] | undefined; options: { name: string | undefined; value: string | undefined }[] } | undefined;
  shareProcessNamespace: boolean | undefined;
  security: Record<string, unknown> | undefined;
}

const DNS_POLICIES: readonly DesiredSandbox['dns']['policy'][] = ['ClusterFirst', 'ClusterFirstWithHostNet', 'Default', 'None'];

/** berth.dev/v1 Image (schemas/image.json). */
interface ImageShape {
  metadata: ObjectMeta;
  spec: { ref: string | undefined; pullPolicy: PullPolicy | undefined; platform: string | undefined };
}

/** Either pod kind, reduced to what a pod is, with where each container sits in the document. */
interface PodShape {
  kind: PodKind;
  metadata: ObjectMeta;
  spec: PodLevelFields;
  volumes: unknown[];
  /** spec.imagePullSecrets names. */
  pullSecrets: string[];
  containers: { fields: ContainerFields; path: FieldPath; nameFromMetadata: boolean }[];
  /** spec.initContainers: run in order, each to a successful exit, before the containers start. */
  initContainers: { fields: ContainerFields; path: FieldPath; nameFromMetadata: boolean }[];
}

function readMeta(v: unknown): ObjectMeta {
  const m = recordOf(v) ?? {};
  return { name: stringOf(m['name']), namespace: stringOf(m['namespace']), labels: stringMapOf(m['labels']), annotations: stringMapOf(m['annotations']) };
}

function readPodLevel(s: Record<string, unknown>): PodLevelFields {
  const hostNetwork = s['hostNetwork'];
  const share = s['shareProcessNamespace'];
  const dnsConfig = recordOf(s['dnsConfig']);
  return {
    restartPolicy: RESTART_POLICIES.find((p) => p === s['restartPolicy']),
    hostNetwork: typeof hostNetwork === 'boolean' ? hostNetwork : undefined,
    terminationGracePeriodSeconds: integerOf(s['terminationGracePeriodSeconds']),
    hostname: stringOf(s['hostname']),
    subdomain: stringOf(s['subdomain']),
    dnsPolicy: DNS_POLICIES.find((p) => p === s['dnsPolicy']),
    dnsConfig:
      dnsConfig === undefined
        ? undefined
        : {
            nameservers: stringsOf(dnsConfig['nameservers']),
            searches: stringsOf(dnsConfig['searches']),
            options: listOf(dnsConfig['options']).map((o) => ({ name: stringOf(recordOf(o)?.['name']), value: stringOf(recordOf(o)?.['value']) })),
          },
    shareProcessNamespace: typeof share === 'boolean' ? share : undefined,
    security: recordOf(s['securityContext']),
  };
}

function readContainer(v: unknown): ContainerFields {
  const c = recordOf(v) ?? {};
  const limits = recordOf(recordOf(c['resources'])?.['limits']) ?? {};
  const requests = recordOf(recordOf(c['resources'])?.['requests']) ?? {};
  return {
    name: stringOf(c['name']),
    image: stringOf(c['image']),
    imagePullPolicy: pullPolicyOf(c['imagePullPolicy']),
    command: stringsOf(c['command']),
    args: stringsOf(c['args']),
    workingDir: stringOf(c['workingDir']),
    env: listOf(c['env']).map((e) => ({ name: stringOf(recordOf(e)?.['name']), value: stringOf(recordOf(e)?.['value']), valueFrom: envSourceOf(recordOf(e)?.['valueFrom']) })),
    envFrom: listOf(c['envFrom']).map((e) => {
      const r = recordOf(e) ?? {};
      const ref = (v: unknown): { name: string; optional: boolean } | undefined => {
        const x = recordOf(v);
        const name = stringOf(x?.['name']);
        return name === undefined ? undefined : { name, optional: x?.['optional'] === true };
      };
      const out: EnvFromSource = {};
      const prefix = stringOf(r['prefix']);
      if (prefix !== undefined) out.prefix = prefix;
      const cm = ref(r['configMapRef']);
      if (cm !== undefined) out.configMapRef = cm;
      const sec = ref(r['secretRef']);
      if (sec !== undefined) out.secretRef = sec;
      return out;
    }),
    security: recordOf(c['securityContext']),
    raw: c,
    volumeMounts: listOf(c['volumeMounts']).map((m) => {
      const r = recordOf(m) ?? {};
      // subPath "" is the whole volume, as in Kubernetes (regression empty-subpath-refused).
      const subPath = stringOf(r['subPath']);
      return { name: stringOf(r['name']), mountPath: stringOf(r['mountPath']), readOnly: r['readOnly'] === true, subPath: subPath === '' ? undefined : subPath };
    }),
    ports: listOf(c['ports']).map((x) => {
      const p = recordOf(x) ?? {};
      return { containerPort: integerOf(p['containerPort']), hostPort: integerOf(p['hostPort']), hostIP: stringOf(p['hostIP']), protocol: stringOf(p['protocol']) };
    }),
    limits: { cpu: quantityOf(limits['cpu']), memory: quantityOf(limits['memory']) },
    requests: { cpu: quantityOf(requests['cpu']), memory: quantityOf(requests['memory']) },
  };
}

/** v1 Pod (schemas/pod.json). */
function podShape(o: Record<string, unknown>): PodShape {
  const spec = recordOf(o['spec']) ?? {};
  return {
    kind: 'Pod',
    metadata: readMeta(o['metadata']),
    spec: readPodLevel(spec),
    volumes: listOf(spec['volumes']),
    pullSecrets: listOf(spec['imagePullSecrets']).map((x) => stringOf(recordOf(x)?.['name']) ?? ''),
    containers: listOf(spec['containers']).map((c, i) => ({ fields: readContainer(c), path: ['spec', 'containers', i], nameFromMetadata: false })),
    initContainers: listOf(spec['initContainers']).map((c, i) => ({ fields: readContainer(c), path: ['spec', 'initContainers', i], nameFromMetadata: false })),
  };
}

/** berth.dev/v1 Container (schemas/container.json): one container, named after metadata.name unless spec.name says otherwise. */
function containerShape(o: Record<string, unknown>): PodShape {
  const spec = recordOf(o['spec']) ?? {};
  const metadata = readMeta(o['metadata']);
  const fields = readContainer(spec);
  const nameFromMetadata = !Object.hasOwn(spec, 'name');
  if (nameFromMetadata) fields.name = metadata.name;
  return { kind: 'Container', metadata, spec: readPodLevel(spec), volumes: [], pullSecrets: [], containers: [{ fields, path: ['spec'], nameFromMetadata }], initContainers: [] };
}

function readImage(o: Record<string, unknown>): ImageShape {
  const spec = recordOf(o['spec']) ?? {};
  return { metadata: readMeta(o['metadata']), spec: { ref: stringOf(spec['ref']), pullPolicy: pullPolicyOf(spec['pullPolicy']), platform: stringOf(spec['platform']) } };
}

/** metadata.name and metadata.namespace (default "default") as DNS labels (rule M4). */
function checkNames(meta: ObjectMeta, problem: Report): { name: string; namespace: string } {
  const name = meta.name ?? '';
  const namespace = meta.namespace ?? 'default';
  if (meta.name !== undefined && !DNS_LABEL.test(name)) problem(['metadata', 'name'], `${JSON.stringify(name)} is not a DNS label (lowercase a-z, 0-9 and '-', at most 63)`);
  if (!DNS_LABEL.test(namespace)) problem(['metadata', 'namespace'], `${JSON.stringify(namespace)} is not a DNS label`);
  return { name, namespace };
}

/** The annotations berth reads: berth.dev/paused ("true" | "false"); other berth.dev/ keys are typos. */
function readAnnotations(annotations: Record<string, string>, problem: Report): { paused: boolean } {
  for (const key of Object.keys(annotations)) {
    if (key.startsWith('berth.dev/') && !BERTH_ANNOTATIONS.includes(key)) {
      problem(['metadata', 'annotations', key], `unknown berth annotation ${JSON.stringify(key)} (berth reads: ${BERTH_ANNOTATIONS.join(', ')})`, true);
    }
  }
  const paused = annotations[ANNOTATION_PAUSED];
  if (paused === undefined || paused === 'false') return { paused: false };
  if (paused === 'true') return { paused: true };
  problem(['metadata', 'annotations', ANNOTATION_PAUSED], `annotation ${ANNOTATION_PAUSED} must be "true" or "false", not ${JSON.stringify(paused)}`);
  return { paused: false };
}

/** Semantic checks beside the schema (rule M4), then normalisation and hashes. */
function toDesiredPod(o: PodShape, file: string, line: number, problem: Report): DesiredPod {
  const { name, namespace } = checkNames(o.metadata, problem);
  const annotations = o.metadata.annotations;
  const { paused } = readAnnotations(annotations, problem);
  const hostNetwork = o.spec.hostNetwork ?? false;
  const sandbox = hostNetwork ? undefined : readSandbox(o, name, problem);
  const volumes = readVolumes(o.volumes, problem);
  const pullSecrets = o.pullSecrets.filter((n) => n !== '');
  const names = new Set<string>();
  const containers: DesiredContainer[] = [];
  // Only what shapes the containers: kind, paused, labels and annotations are not here, so
  // rewriting a Pod as a Container, pausing or relabelling never replaces a container. A
  // hostNetwork pod's podLevel is `{ hostNetwork: true }` alone, as before sandboxes existed.
  // Init containers run before every container of a pod: a change to one runs the whole pod anew.
  const init = o.initContainers.length > 0 ? sha256hex(canonicalJson(o.initContainers.map((c) => c.fields))) : undefined;
  const podLevel = { hostNetwork, sandbox: sandbox?.hash, volumes: volumes.length > 0 ? volumes : undefined, init };
  const initContainers: DesiredContainer[] = [];
  const podHash = sha256hex(canonicalJson(podLevel));
  for (const { fields: c, path: cpath, nameFromMetadata } of [...o.initContainers, ...o.containers]) {
    const isInit = cpath[1] === 'initContainers';
    const at = (...rest: FieldPath): FieldPath => [...cpath, ...rest];
    // A name taken from metadata.name was checked there.
    if (c.name !== undefined) {
      if (!nameFromMetadata && !DNS_LABEL.test(c.name)) problem(at('name'), `${JSON.stringify(c.name)} is not a DNS label`);
      if (names.has(c.name)) problem(at('name'), `container name ${JSON.stringify(c.name)} is used twice in this pod`);
      names.add(c.name);
    }
    let image = c.image ?? '';
    if (c.image !== undefined) {
      try {
        image = parseReference(c.image).canonical;
      } catch (err) {
        problem(at('image'), err instanceof Error ? err.message : String(err));
      }
    }
    const env: { name: string; value: string }[] = [];
    const envRefs: { name: string; valueFrom: EnvSource }[] = [];
    for (const [j, e] of c.env.entries()) {
      if (e.name === undefined) continue;
      if (!ENV_NAME.test(e.name)) problem(at('env', j, 'name'), `${JSON.stringify(e.name)} is not a valid environment variable name`);
      if (e.valueFrom !== undefined) {
        if (e.value !== undefined) problem(at('env', j, 'valueFrom'), 'set value or valueFrom, not both');
        const fp = 'fieldRef' in e.valueFrom ? e.valueFrom.fieldRef.fieldPath : undefined;
        if (fp !== undefined && !FIELD_PATHS.test(fp)) problem(at('env', j, 'valueFrom', 'fieldRef', 'fieldPath'), `${JSON.stringify(fp)} is not a field berth provides (${FIELD_PATHS_SAY})`);
        envRefs.push({ name: e.name, valueFrom: e.valueFrom });
      }
      env.push({ name: e.name, value: e.value ?? '' });
    }
    for (const [j, f] of c.envFrom.entries()) {
      if ((f.configMapRef === undefined) === (f.secretRef === undefined)) problem(at('envFrom', j), 'set exactly one of configMapRef and secretRef');
    }
    const mounts: DesiredVolumeMount[] = [];
    const mountPaths = new Set<string>();
    for (const [j, m] of c.volumeMounts.entries()) {
      if (m.name === undefined || m.mountPath === undefined) continue;
      if (!volumes.some((v) => v.name === m.name)) problem(at('volumeMounts', j, 'name'), `no volume named ${JSON.stringify(m.name)} in spec.volumes${volumes.length > 0 ? ` (volumes: ${volumes.map((v) => v.name).join(', ')})` : ''}`);
      if (!cleanAbsolute(m.mountPath) || m.mountPath === '/') problem(at('volumeMounts', j, 'mountPath'), `${JSON.stringify(m.mountPath)} must be a clean absolute path other than /`);
      else if (/^\/(proc|sys|dev)(\/|$)/.test(m.mountPath)) problem(at('volumeMounts', j, 'mountPath'), `${JSON.stringify(m.mountPath)} is under /proc, /sys or /dev`);
      if (mountPaths.has(m.mountPath)) problem(at('volumeMounts', j, 'mountPath'), `${m.mountPath} is mounted twice in this container`);
      mountPaths.add(m.mountPath);
      if (m.subPath !== undefined && !cleanRelative(m.subPath)) problem(at('volumeMounts', j, 'subPath'), `${JSON.stringify(m.subPath)} must be a relative path without .. components`);
      mounts.push({ name: m.name, mountPath: m.mountPath, readOnly: m.readOnly, ...(m.subPath !== undefined ? { subPath: m.subPath } : {}) });
    }
    const ports: DesiredContainer['ports'] = [];
    for (const [j, p] of c.ports.entries()) {
      if (p.containerPort === undefined) continue;
      if (hostNetwork && p.hostPort !== undefined && p.hostPort !== p.containerPort) {
        problem(at('ports', j, 'hostPort'), `with hostNetwork, hostPort must equal containerPort (${p.containerPort})`);
      }
      const port: DesiredContainer['ports'][number] = { containerPort: p.containerPort, protocol: p.protocol ?? 'TCP' };
      if (p.hostPort !== undefined) port.hostPort = p.hostPort;
      if (p.hostIP !== undefined) port.hostIP = p.hostIP;
      ports.push(port);
    }
    if (c.workingDir !== undefined) {
      try {
        checkWorkingDir(c.workingDir, 'workingDir');
      } catch {
        problem(at('workingDir'), `${JSON.stringify(c.workingDir)} must be a clean absolute path outside /proc, /sys and /dev`);
      }
    }
    const dc: DesiredContainer = {
      name: c.name ?? '',
      image,
      pullPolicy: c.imagePullPolicy ?? defaultPullPolicy(image),
      specHash: '',
      env,
      ports,
    };
    if (c.command !== undefined) dc.command = c.command;
    if (c.args !== undefined) dc.args = c.args;
    if (envRefs.length > 0) dc.envRefs = envRefs;
    if (c.envFrom.length > 0) dc.envFrom = c.envFrom;
    if (envRefs.length > 0 || c.envFrom.length > 0) dc.envWritten = env.map((e) => ({ ...e }));
    const probes = readProbes(c, at, isInit, problem);
    if (probes.probes !== undefined) dc.probes = probes.probes;
    if (probes.lifecycle !== undefined) dc.lifecycle = probes.lifecycle;
    const security = readSecurity(o.spec.security, c.security, cpath, hostNetwork, cpath[cpath.length - 1] === 0 || o.containers.length === 1 ? problem : () => undefined, problem);
    if (security !== undefined) dc.security = security;
    if (mounts.length > 0) dc.volumeMounts = mounts;
    if (c.workingDir !== undefined) dc.workingDir = c.workingDir;
    const limits = c.limits;
    if (limits.memory !== undefined) {
      const m = parseMemory(limits.memory);
      if (m === undefined || m < 4 * 1024 * 1024) problem(at('resources', 'limits', 'memory'), `${JSON.stringify(limits.memory)} is not a memory quantity of at least 4Mi`);
      else dc.memoryBytes = m;
    }
    if (limits.cpu !== undefined) {
      const m = parseCpu(limits.cpu);
      if (m === undefined) problem(at('resources', 'limits', 'cpu'), `${JSON.stringify(limits.cpu)} is not a CPU quantity`);
      else dc.cpuMillis = m;
    }
    // Requests, as the API server defaults them: a missing request is the limit. They set the
    // container's CPU weight and, with the limits, the pod's QoS class (its OOM score), as the
    // kubelet does (regression requests-ignored).
    const requests = c.requests;
    if (requests.memory !== undefined) {
      const m = parseMemory(requests.memory);
      if (m === undefined) problem(at('resources', 'requests', 'memory'), `${JSON.stringify(requests.memory)} is not a memory quantity`);
      else if (dc.memoryBytes !== undefined && m > dc.memoryBytes) problem(at('resources', 'requests', 'memory'), `${JSON.stringify(requests.memory)} is more than the limit ${JSON.stringify(limits.memory)}`);
      else dc.memoryRequestBytes = m;
    }
    if (requests.cpu !== undefined) {
      const m = parseCpu(requests.cpu);
      if (m === undefined) problem(at('resources', 'requests', 'cpu'), `${JSON.stringify(requests.cpu)} is not a CPU quantity`);
      else if (dc.cpuMillis !== undefined && m > dc.cpuMillis) problem(at('resources', 'requests', 'cpu'), `${JSON.stringify(requests.cpu)} is more than the limit ${JSON.stringify(limits.cpu)}`);
      else dc.cpuRequestMillis = m;
    }
    // Requests stay out of the hash: adding them to the reading moved no running container (a
    // requests-only edit takes effect at the container's next start).
    dc.specHash = sha256hex(canonicalJson({ ...dc, specHash: undefined, memoryRequestBytes: undefined, cpuRequestMillis: undefined, podHash }));
    if (isInit && c.ports.length > 0) problem(at('ports'), 'an init container exposes no ports');
    (isInit ? initContainers : containers).push(dc);
  }
  return {
    key: `${namespace}/${name}`,
    kind: o.kind,
    namespace,
    name,
    source: file,
    line,
    podHash,
    hostNetwork,
    ...(sandbox !== undefined ? { sandbox } : {}),
    ...(volumes.length > 0 ? { volumes } : {}),
    ...(initContainers.length > 0 ? { initContainers } : {}),
    ...(pullSecrets.length > 0 ? { imagePullSecrets: pullSecrets } : {}),
    restartPolicy: o.spec.restartPolicy ?? 'Always',
    gracePeriodMs: (o.spec.terminationGracePeriodSeconds ?? 30) * 1000,
    labels: o.metadata.labels,
    annotations,
    paused,
    containers,
  };
}

/**
 * The pod's sandbox: hostname, DNS and the host ports of all its containers (a hostPort used
 * twice in one pod is a problem at the second use). dnsPolicy None needs a nameserver, as on
 * Kubernetes.
 */
function readSandbox(o: PodShape, name: string, problem: Report): DesiredSandbox {
  const s = o.spec;
  if (s.hostname !== undefined && !DNS_LABEL.test(s.hostname)) problem(['spec', 'hostname'], `${JSON.stringify(s.hostname)} is not a DNS label`);
  if (s.subdomain !== undefined && !DNS_LABEL.test(s.subdomain)) problem(['spec', 'subdomain'], `${JSON.stringify(s.subdomain)} is not a DNS label`);
  const policy = s.dnsPolicy ?? 'ClusterFirst';
  const dns: DesiredSandbox['dns'] = { policy };
  const cfg = s.dnsConfig;
  if (cfg !== undefined) {
    if (cfg.nameservers !== undefined) {
      for (const [i, ns] of cfg.nameservers.entries()) {
        if (!isIP(ns)) problem(['spec', 'dnsConfig', 'nameservers', i], `${JSON.stringify(ns)} is not an IP address`);
      }
      dns.nameservers = cfg.nameservers;
    }
    if (cfg.searches !== undefined) dns.searches = cfg.searches;
    const options = cfg.options.filter((x): x is { name: string; value: string | undefined } => x.name !== undefined);
    if (options.length > 0) dns.options = options.map((x) => (x.value !== undefined ? { name: x.name, value: x.value } : { name: x.name }));
  }
  if (policy === 'None' && (dns.nameservers ?? []).length === 0) {
    problem(['spec', 'dnsPolicy'], 'dnsPolicy None needs spec.dnsConfig.nameservers (at least one)');
  }
  const ports: DesiredPortMapping[] = [];
  const used = new Map<string, string>();
  for (const { fields: c, path: cpath } of o.containers) {
    for (const [j, p] of c.ports.entries()) {
      if (p.hostPort === undefined || p.containerPort === undefined) continue;
      const protocol = (p.protocol ?? 'TCP').toLowerCase() as DesiredPortMapping['protocol'];
      const where = dotted([...cpath, 'ports', j, 'hostPort']);
      if (p.hostIP !== undefined && !isIP(p.hostIP)) problem([...cpath, 'ports', j, 'hostIP'], `${JSON.stringify(p.hostIP)} is not an IP address`);
      // Pods get an IPv4 address only: portmap skips an IPv6 host address for them and the pod
      // would run with the port unmapped (regression ipv6-hostip-silently-unmapped).
      else if (p.hostIP !== undefined && p.hostIP.includes(':')) problem([...cpath, 'ports', j, 'hostIP'], `${p.hostIP} is an IPv6 address; pods on berth's bridge have IPv4 addresses only, so only an IPv4 hostIP can be mapped`);
      const clash = [...used].find(([k]) => k.startsWith(`${protocol}/${p.hostPort}/`) && hostIPsOverlap(k.split('/')[2], p.hostIP));
      if (clash !== undefined) problem([...cpath, 'ports', j, 'hostPort'], `hostPort ${p.hostPort}/${protocol} is already used in this pod at ${clash[1]}`);
      used.set(`${protocol}/${p.hostPort}/${p.hostIP ?? ''}`, where);
      ports.push({ hostPort: p.hostPort, containerPort: p.containerPort, protocol, ...(p.hostIP !== undefined ? { hostIP: p.hostIP } : {}) });
    }
  }
  const shaped = {
    hostname: s.hostname ?? name,
    ...(s.subdomain !== undefined ? { subdomain: s.subdomain } : {}),
    dns,
    shareProcessNamespace: s.shareProcessNamespace ?? false,
    ports,
  };
  return { hash: sha256hex(canonicalJson(shaped)), ...shaped };
}

/** A literal IPv4 or IPv6 address (no brackets, no zone). */
function isIP(s: string): boolean {
  return !s.startsWith('[') && classifyAddress(s) !== undefined;
}

/**
 * hostPort clashes between pods (rule M4's uniqueness, for ports): each later pod that maps a
 * port an earlier one maps gets a problem naming both files and lines.
 */
export function hostPortClashes(pods: readonly DesiredPod[]): ManifestProblem[] {
  const taken: { pod: DesiredPod; p: DesiredPortMapping }[] = [];
  const problems: ManifestProblem[] = [];
  // A hostNetwork pod's container ports are host ports (Kubernetes defaults hostPort to
  // containerPort there): they clash with another pod's mapping of the same port as much as two
  // mappings do (regression hostnetwork-ports-unchecked).
  const hostPorts = (pod: DesiredPod): DesiredPortMapping[] =>
    pod.hostNetwork
      ? pod.containers.flatMap((c) =>
          c.ports.map((p) => ({ hostPort: p.hostPort ?? p.containerPort, containerPort: p.containerPort, protocol: p.protocol.toLowerCase() as DesiredPortMapping['protocol'], ...(p.hostIP !== undefined ? { hostIP: p.hostIP } : {}) })),
        )
      : (pod.sandbox?.ports ?? []);
  for (const pod of pods) {
    for (const p of hostPorts(pod)) {
      const prev = taken.find((t) => t.pod.key !== pod.key && t.p.protocol === p.protocol && t.p.hostPort === p.hostPort && hostIPsOverlap(t.p.hostIP, p.hostIP));
      if (prev !== undefined) {
        problems.push({
          file: pod.source,
          line: pod.line,
          col: 1,
          field: 'hostPort',
          message: `pod ${pod.key} maps hostPort ${p.hostPort}/${p.protocol}, which pod ${prev.pod.key} (${prev.pod.source}:${prev.pod.line}) maps too`,
        });
      }
    }
    for (const p of hostPorts(pod)) taken.push({ pod, p });
  }
  return problems;
}

/**
 * Probes and lifecycle hooks: an httpGet/tcpSocket port by number or by the name of one of the
 * container's ports; the Kubernetes defaults (period 10 s, timeout 1 s, success 1, failure 3);
 * liveness and startup probes need successThreshold 1, and init containers take none.
 */
function readProbes(c: ContainerFields, at: (...rest: FieldPath) => FieldPath, isInit: boolean, problem: Report): { probes?: NonNullable<DesiredContainer['probes']>; lifecycle?: NonNullable<DesiredContainer['lifecycle']> } {
  const portOf = (v: unknown, where: FieldPath): number | undefined => {
    if (typeof v === 'number') return v;
    if (typeof v !== 'string') return undefined;
    const hit = listOf(c.raw['ports']).map((x) => recordOf(x) ?? {}).find((x) => x['name'] === v);
    const n = integerOf(hit?.['containerPort']);
    if (n === undefined) problem(where, `no port named ${JSON.stringify(v)} in this container's ports`);
    return n;
  };
  const handler = (v: Record<string, unknown>, where: FieldPath): DesiredHandler | undefined => {
    const exec = recordOf(v['exec']);
    const http = recordOf(v['httpGet']);
    const tcp = recordOf(v['tcpSocket']);
    const n = [exec, http, tcp].filter((x) => x !== undefined).length;
    if (n !== 1) {
      problem(where, 'set exactly one of exec, httpGet and tcpSocket');
      return undefined;
    }
    if (exec !== undefined) return { exec: { command: stringsOf(exec['command']) ?? [] } };
    if (http !== undefined) {
      const port = portOf(http['port'], [...where, 'httpGet', 'port']);
      if (port === undefined) return undefined;
      const p = stringOf(http['path']) ?? '/';
      const host = stringOf(http['host']);
      const headers = listOf(http['httpHeaders']).map((h) => ({ name: stringOf(recordOf(h)?.['name']) ?? '', value: stringOf(recordOf(h)?.['value']) ?? '' }));
      return { httpGet: { path: p.startsWith('/') ? p : `/${p}`, port, ...(host !== undefined ? { host } : {}), ...(headers.length > 0 ? { headers } : {}) } };
    }
    const port = portOf(tcp?.['port'], [...where, 'tcpSocket', 'port']);
    if (port === undefined) return undefined;
    const host = stringOf(tcp?.['host']);
    return { tcpSocket: { port, ...(host !== undefined ? { host } : {}) } };
  };
  const out: { probes?: NonNullable<DesiredContainer['probes']>; lifecycle?: NonNullable<DesiredContainer['lifecycle']> } = {};
  const probes: NonNullable<DesiredContainer['probes']> = {};
  for (const [field, kind] of [['livenessProbe', 'liveness'], ['readinessProbe', 'readiness'], ['startupProbe', 'startup']] as const) {
    const v = recordOf(c.raw[field]);
    if (v === undefined) continue;
    if (isInit) {
      problem(at(field), 'init containers take no probes');
      continue;
    }
    const h = handler(v, at(field));
    if (h === undefined) continue;
    const successThreshold = integerOf(v['successThreshold']) ?? 1;
    if (kind !== 'readiness' && successThreshold !== 1) problem(at(field, 'successThreshold'), `must be 1 for a ${kind} probe`);
    probes[kind] = {
      ...h,
      initialDelayMs: (integerOf(v['initialDelaySeconds']) ?? 0) * 1000,
      periodMs: (integerOf(v['periodSeconds']) ?? 10) * 1000,
      timeoutMs: (integerOf(v['timeoutSeconds']) ?? 1) * 1000,
      successThreshold,
      failureThreshold: integerOf(v['failureThreshold']) ?? 3,
    };
  }
  if (Object.keys(probes).length > 0) out.probes = probes;
  const lc = recordOf(c.raw['lifecycle']);
  if (lc !== undefined) {
    const lifecycle: NonNullable<DesiredContainer['lifecycle']> = {};
    for (const k of ['postStart', 'preStop'] as const) {
      const v = recordOf(lc[k]);
      const h = v === undefined ? undefined : handler(v, at('lifecycle', k));
      if (h !== undefined) lifecycle[k] = h;
    }
    if (Object.keys(lifecycle).length > 0) out.lifecycle = lifecycle;
  }
  return out;
}

/** Linux capabilities by name (capability.h), as CAP_X. */
const CAPABILITIES = new Set(
  [
    'CHOWN', 'DAC_OVERRIDE', 'DAC_READ_SEARCH', 'FOWNER', 'FSETID', 'KILL', 'SETGID', 'SETUID', 'SETPCAP', 'LINUX_IMMUTABLE',
    'NET_BIND_SERVICE', 'NET_BROADCAST', 'NET_ADMIN', 'NET_RAW', 'IPC_LOCK', 'IPC_OWNER', 'SYS_MODULE', 'SYS_RAWIO', 'SYS_CHROOT',
    'SYS_PTRACE', 'SYS_PACCT', 'SYS_ADMIN', 'SYS_BOOT', 'SYS_NICE', 'SYS_RESOURCE', 'SYS_TIME', 'SYS_TTY_CONFIG', 'MKNOD', 'LEASE',
    'AUDIT_WRITE', 'AUDIT_CONTROL', 'SETFCAP', 'MAC_OVERRIDE', 'MAC_ADMIN', 'SYSLOG', 'WAKE_ALARM', 'BLOCK_SUSPEND', 'AUDIT_READ',
    'PERFMON', 'BPF', 'CHECKPOINT_RESTORE',
  ].map((c) => `CAP_${c}`),
);

/** Sysctls that are namespaced (the kubelet's safe and namespaced sets): per netns or per IPC namespace. */
const NAMESPACED_SYSCTL = /^(net\.[a-z0-9_.\/-]+|kernel\.(shm_rmid_forced|shmmax|shmall|shmmni|msgmax|msgmnb|msgmni|sem)|fs\.mqueue\.[a-z_]+)$/;

/**
 * securityContext: the pod's merged under the container's (the container wins), only the fields
 * that are set. Capability names are normalised to CAP_X; privileged needs the operator's opt-in;
 * sysctls must be namespaced, and net.* needs the pod's own network namespace.
 */
function readSecurity(pod: Record<string, unknown> | undefined, ctr: Record<string, unknown> | undefined, cpath: FieldPath, hostNetwork: boolean, podProblem: Report, problem: Report): DesiredSecurity | undefined {
  if (pod === undefined && ctr === undefined) return undefined;
  const out: DesiredSecurity = {};
  const pick = <T,>(read: (v: unknown) => T | undefined, k: string): T | undefined => read(ctr?.[k]) ?? read(pod?.[k]);
  const bool = (v: unknown): boolean | undefined => (typeof v === 'boolean' ? v : undefined);
  const runAsUser = pick(integerOf, 'runAsUser');
  const runAsGroup = pick(integerOf, 'runAsGroup');
  const runAsNonRoot = pick(bool, 'runAsNonRoot');
  if (runAsUser !== undefined) out.runAsUser = runAsUser;
  if (runAsGroup !== undefined) out.runAsGroup = runAsGroup;
  if (runAsNonRoot !== undefined) out.runAsNonRoot = runAsNonRoot;
  if (runAsNonRoot === true && runAsUser === 0) problem([...cpath, 'securityContext', 'runAsUser'], 'runAsUser 0 breaks runAsNonRoot');
  const groups = Array.isArray(pod?.['supplementalGroups']) ? (pod['supplementalGroups'] as unknown[]).filter((g): g is number => Number.isSafeInteger(g)) : undefined;
  if (groups !== undefined && groups.length > 0) out.supplementalGroups = groups;
  for (const k of ['readOnlyRootFilesystem', 'allowPrivilegeEscalation', 'privileged'] as const) {
    const v = bool(ctr?.[k]);
    if (v !== undefined) out[k] = v;
  }
  if (out.privileged === true && !privilegedIsAllowed()) {
    problem([...cpath, 'securityContext', 'privileged'], 'privileged containers are refused unless the operator allows them (--allow-privileged)');
  }
  if (out.privileged === true && out.allowPrivilegeEscalation === false) {
    problem([...cpath, 'securityContext', 'allowPrivilegeEscalation'], 'cannot be false with privileged: true');
  }
  const caps = recordOf(ctr?.['capabilities']);
  for (const k of ['add', 'drop'] as const) {
    const list = stringsOf(caps?.[k]);
    if (list === undefined) continue;
    const names: string[] = [];
    for (const [i, raw] of list.entries()) {
      const up = raw.toUpperCase();
      const name = up === 'ALL' ? 'ALL' : `CAP_${up}`;
      if (up.startsWith('CAP_')) {
        // Kubernetes puts CAP_ in front of every name itself: CAP_NET_ADMIN becomes the unknown
        // CAP_CAP_NET_ADMIN, which runc ignores (regression cap-prefix-means-nothing-on-kubernetes).
        problem([...cpath, 'securityContext', 'capabilities', k, i], `${JSON.stringify(raw)}: write ${JSON.stringify(raw.slice(4))} — Kubernetes adds the CAP_ prefix itself, so this name would do nothing there`);
      } else if (name !== 'ALL' && !CAPABILITIES.has(name)) {
        const near = closest(name, [...CAPABILITIES]);
        problem([...cpath, 'securityContext', 'capabilities', k, i], `${JSON.stringify(raw)} is not a Linux capability${near !== undefined ? `; did you mean ${JSON.stringify(near.replace(/^CAP_/, ''))}?` : ''}`);
      }
      names.push(name);
    }
    if (k === 'add') out.capAdd = names;
    else out.capDrop = names;
  }
  const seccomp = pick((v) => {
    const t = recordOf(v)?.['type'];
    return t === 'RuntimeDefault' || t === 'Unconfined' ? t : undefined;
  }, 'seccompProfile');
  if (seccomp !== undefined) out.seccomp = seccomp;
  const sysctls = listOf(pod?.['sysctls']).map((x) => ({ name: stringOf(recordOf(x)?.['name']) ?? '', value: stringOf(recordOf(x)?.['value']) ?? '' }));
  for (const [i, sc] of sysctls.entries()) {
    if (!NAMESPACED_SYSCTL.test(sc.name)) podProblem(['spec', 'securityContext', 'sysctls', i, 'name'], `${JSON.stringify(sc.name)} is not a namespaced sysctl (net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*): it would change the host`);
    else if (hostNetwork && sc.name.startsWith('net.')) podProblem(['spec', 'securityContext', 'sysctls', i, 'name'], `${sc.name} needs the pod's own network namespace; with hostNetwork it would change the host`);
  }
  if (sysctls.length > 0) out.sysctls = sysctls;
  return Object.keys(out).length > 0 ? out : undefined;
}

/** The fieldRef paths berth provides (the downward API subset that has a meaning on one host). */
const FIELD_PATHS = /^(metadata\.(name|namespace|uid)|metadata\.(labels|annotations)\['[^']+'\]|spec\.(nodeName|serviceAccountName)|status\.(podIP|podIPs|hostIP|hostIPs))$/;
const FIELD_PATHS_SAY = "metadata.name, metadata.namespace, metadata.uid, metadata.labels['k'], metadata.annotations['k'], spec.nodeName, spec.serviceAccountName, status.podIP(s), status.hostIP(s)";

function envSourceOf(v: unknown): EnvSource | undefined {
  const r = recordOf(v);
  if (r === undefined) return undefined;
  const keyRef = (x: unknown): { name: string; key: string; optional: boolean } | undefined => {
    const k = recordOf(x);
    const name = stringOf(k?.['name']);
    const key = stringOf(k?.['key']);
    return name === undefined || key === undefined ? undefined : { name, key, optional: k?.['optional'] === true };
  };
  const cm = keyRef(r['configMapKeyRef']);
  if (cm !== undefined) return { configMapKeyRef: cm };
  const sec = keyRef(r['secretKeyRef']);
  if (sec !== undefined) return { secretKeyRef: sec };
  const fieldPath = stringOf(recordOf(r['fieldRef'])?.['fieldPath']);
  if (fieldPath !== undefined) return { fieldRef: { fieldPath } };
  return undefined;
}

function cleanAbsolute(p: string): boolean {
  return p.startsWith('/') && !p.includes('\0') && path.posix.normalize(p) === p && (p === '/' || !p.endsWith('/'));
}

function cleanRelative(p: string): boolean {
  return !p.startsWith('/') && !p.includes('\0') && p.split('/').every((c) => c !== '..' && c !== '') && path.posix.normalize(p) === p;
}

const DEFAULT_MODE = 0o644;

/** spec.volumes: unique DNS-label names, one source each, hostPath only under the allow-list. */
function readVolumes(list: readonly unknown[], problem: Report): DesiredVolume[] {
  const out: DesiredVolume[] = [];
  const names = new Set<string>();
  for (const [i, raw] of list.entries()) {
    const v = recordOf(raw) ?? {};
    const at = (...rest: FieldPath): FieldPath => ['spec', 'volumes', i, ...rest];
    const name = stringOf(v['name']);
    if (name === undefined) continue;
    if (!DNS_LABEL.test(name)) problem(at('name'), `${JSON.stringify(name)} is not a DNS label`);
    if (names.has(name)) problem(at('name'), `volume name ${JSON.stringify(name)} is used twice in this pod`);
    names.add(name);
    const items = (x: unknown, where: FieldPath): { key: string; path: string; mode?: number }[] | undefined => {
      if (!Array.isArray(x)) return undefined;
      return (x as unknown[]).flatMap((it, j) => {
        const r = recordOf(it) ?? {};
        const key = stringOf(r['key']);
        const p = stringOf(r['path']);
        if (key === undefined || p === undefined) return [];
        // As the API server: no '..' component and no leading '..' (the projection's own `..data`
        // and `..<timestamp>` live at the top); `a/..b` is an ordinary name (regression items-dotdot-prefix).
        if (!cleanRelative(p) || p.startsWith('..')) problem([...where, j, 'path'], `${JSON.stringify(p)} must be a relative path without .. components, not starting with '..'`);
        const mode = integerOf(r['mode']);
        return [{ key, path: p, ...(mode !== undefined ? { mode } : {}) }];
      });
    };
    const empty = recordOf(v['emptyDir']);
    const host = recordOf(v['hostPath']);
    const cm = recordOf(v['configMap']);
    const sec = recordOf(v['secret']);
    const pvc = recordOf(v['persistentVolumeClaim']);
    if (empty !== undefined) {
      const limit = quantityOf(empty['sizeLimit']);
      const bytes = limit === undefined ? undefined : parseMemory(limit);
      if (limit !== undefined && bytes === undefined) problem(at('emptyDir', 'sizeLimit'), `${JSON.stringify(limit)} is not a size quantity`);
      out.push({ name, emptyDir: { medium: empty['medium'] === 'Memory' ? 'Memory' : '', ...(bytes !== undefined ? { sizeLimitBytes: bytes } : {}) } });
    } else if (host !== undefined) {
      const p = stringOf(host['path']) ?? '';
      if (!cleanAbsolute(p)) problem(at('hostPath', 'path'), `${JSON.stringify(p)} must be a clean absolute path`);
      else if (!hostPathAllowed(p)) {
        problem(
          at('hostPath', 'path'),
          hostPathAllowList().length === 0
            ? `hostPath ${p} is not allowed: no host path is allowed unless the operator allows a prefix (--allow-host-path PREFIX)`
            : `hostPath ${p} is outside the allowed host paths (${hostPathAllowList().join(', ')})`,
        );
      }
      out.push({ name, hostPath: { path: p, type: stringOf(host['type']) ?? '' } });
    } else if (cm !== undefined) {
      const it = items(cm['items'], at('configMap', 'items'));
      out.push({ name, configMap: { name: stringOf(cm['name']) ?? '', ...(it !== undefined ? { items: it } : {}), defaultMode: integerOf(cm['defaultMode']) ?? DEFAULT_MODE, optional: cm['optional'] === true } });
    } else if (sec !== undefined) {
      const it = items(sec['items'], at('secret', 'items'));
      out.push({ name, secret: { secretName: stringOf(sec['secretName']) ?? '', ...(it !== undefined ? { items: it } : {}), defaultMode: integerOf(sec['defaultMode']) ?? DEFAULT_MODE, optional: sec['optional'] === true } });
    } else if (pvc !== undefined) {
      const claim = stringOf(pvc['claimName']) ?? '';
      if (!DNS_LABEL.test(claim)) problem(at('persistentVolumeClaim', 'claimName'), `${JSON.stringify(claim)} is not a DNS label`);
      out.push({ name, persistentVolumeClaim: { claimName: claim, readOnly: pvc['readOnly'] === true } });
    } else {
      problem(at(), `volume ${name} needs one of emptyDir, hostPath, configMap, secret, persistentVolumeClaim`);
    }
  }
  return out;
}

const CONFIG_KEY = /^[-._a-zA-Z0-9]+$/;
/** Kubernetes' limit on one ConfigMap's or Secret's data. */
const MAX_CONFIG_BYTES = 1024 * 1024;

/** v1 ConfigMap/Secret: keys checked, every value turned into base64 of its bytes (stringData wins over data). */
function toDesiredConfig(kind: 'ConfigMap' | 'Secret', o: Record<string, unknown>, file: string, line: number, problem: Report): DesiredConfig {
  const { name, namespace } = checkNames(readMeta(o['metadata']), problem);
  const data: Record<string, string> = {};
  const binaryKeys: string[] = [];
  let total = 0;
  const put = (field: string, key: string, b64: string): void => {
    if (!CONFIG_KEY.test(key) || key === '.' || key === '..' || key.startsWith('..')) {
      problem([field, key], `key ${JSON.stringify(key)} must be made of a-z, A-Z, 0-9, '-', '_' and '.', and not start with '..'`, true);
    }
    if (field !== 'stringData' && Object.hasOwn(data, key) && kind === 'ConfigMap') problem([field, key], `key ${JSON.stringify(key)} is in both data and binaryData`, true);
    total += Math.floor((b64.length * 3) / 4);
    data[key] = b64;
    if (field === 'binaryData') binaryKeys.push(key);
  };
  const strings = (field: string): void => {
    for (const [k, v] of Object.entries(stringMapOf(o[field]))) put(field, k, Buffer.from(v, 'utf8').toString('base64'));
  };
  const base64s = (field: string): void => {
    for (const [k, v] of Object.entries(stringMapOf(o[field]))) {
      if (Buffer.from(v, 'base64').toString('base64') !== v.replace(/\s/g, '')) problem([field, k], 'is not valid base64');
      put(field, k, v);
    }
  };
  if (kind === 'ConfigMap') {
    strings('data');
    base64s('binaryData');
  } else {
    base64s('data');
    strings('stringData');
  }
  if (total > MAX_CONFIG_BYTES) problem([], `${kind} ${namespace}/${name} holds ${total} bytes; at most ${MAX_CONFIG_BYTES} (as Kubernetes)`);
  const type = stringOf(o['type']);
  const lower = kind === 'ConfigMap' ? 'configmap' : 'secret';
  return { key: `${lower}/${namespace}/${name}`, kind, namespace, name, ...(type !== undefined ? { type } : {}), data, ...(binaryKeys.length > 0 ? { binaryKeys } : {}), ...(o['immutable'] === true ? { immutable: true } : {}), source: file, line };
}

function toDesiredImage(o: ImageShape, file: string, line: number, problem: Report): DesiredImage {
  const { name, namespace } = checkNames(o.metadata, problem);
  let ref = o.spec.ref ?? '';
  if (o.spec.ref !== undefined) {
    try {
      ref = parseReference(o.spec.ref).canonical;
    } catch (err) {
      problem(['spec', 'ref'], err instanceof Error ? err.message : String(err));
    }
  }
  const image: DesiredImage = { key: `image/${namespace}/${name}`, namespace, name, ref, pullPolicy: o.spec.pullPolicy ?? defaultPullPolicy(ref), source: file, line };
  if (o.spec.platform !== undefined) {
    const platform = parsePlatform(o.spec.platform);
    if (typeof platform === 'string') problem(['spec', 'platform'], platform);
    else image.platform = platform;
  }
  return image;
}

/** Architectures as OCI indexes name them (Go's GOARCH), with the variants each has. */
const ARCHITECTURES: Readonly<Record<string, { variant: RegExp; says: string } | undefined>> = {
  amd64: { variant: /^v[1-4]$/, says: 'v1, v2, v3, v4' },
  arm64: { variant: /^v(8|9)(\.[0-9])?$/, says: 'v8, v8.N, v9, v9.N' },
  arm: { variant: /^v[5-8]$/, says: 'v5, v6, v7, v8' },
  '386': undefined,
  ppc64le: undefined,
  s390x: undefined,
  riscv64: undefined,
  mips64le: undefined,
  loong64: undefined,
};
/** What other tools (uname, Debian) call them, for the hint. */
const ARCH_ALIASES: Readonly<Record<string, string>> = { x86_64: 'amd64', 'x86-64': 'amd64', aarch64: 'arm64', armhf: 'arm/v7', armel: 'arm/v6', i386: '386', i686: '386' };

/** `os/arch[/variant]` → platform, or why not (manifests' `spec.platform`, `images pull --platform`). Only linux: berth runs Linux containers. */
export function parsePlatform(s: string): DesiredPlatform | string {
  const [os, architecture, variant, ...more] = s.split('/');
  if (os === undefined || architecture === undefined || more.length > 0) return `${JSON.stringify(s)} is not os/architecture[/variant], e.g. linux/arm64 or linux/arm/v7`;
  if (os !== 'linux') return `os ${JSON.stringify(os)}: berth runs Linux containers, so the os must be linux`;
  if (!Object.hasOwn(ARCHITECTURES, architecture)) {
    const alias = ARCH_ALIASES[architecture];
    return `architecture ${JSON.stringify(architecture)} is not one an OCI index names${alias !== undefined ? ` (did you mean linux/${alias}?)` : ''}; known: ${Object.keys(ARCHITECTURES).join(', ')}`;
  }
  const variants = ARCHITECTURES[architecture];
  if (variant === undefined) return { os, architecture };
  if (variants === undefined || !variants.variant.test(variant)) {
    return `variant ${JSON.stringify(variant)} is not one ${architecture} has (${variants === undefined ? 'it has none' : variants.says})`;
  }
  return { os, architecture, variant };
}

function sha256hex(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

/**
 * The pod keys a file or directory names (v1 Pods and berth.dev/v1 Containers), read
 * leniently for `berth delete`: only
 * apiVersion, kind and metadata.name/namespace are looked at, so a file that no longer
 * validates (or names fields berth does not implement) can still be deleted, as kubectl
 * does. Documents that do not parse as YAML are reported as problems.
 */
export async function declaredPodKeys(input: ManifestInput): Promise<{ keys: { key: string; file: string; line: number }[]; configs: { key: string; file: string; line: number }[]; problems: ManifestProblem[] }> {
  const keys: { key: string; file: string; line: number }[] = [];
  // ConfigMaps and Secrets too: `delete -f` removes every object of the file, as kubectl
  // (regression delete-leaves-configs).
  const configs: { key: string; file: string; line: number }[] = [];
  const { sources, problems } = await readManifestSources(input);
  for (const { file, text } of sources) {
    const lc = new LineCounter();
    const docs = parseAllDocuments(text.startsWith('\ufeff') ? text.slice(1) : text, { schema: 'core', lineCounter: lc }) as Document.Parsed[];
    for (const doc of Array.isArray(docs) ? docs : [docs as unknown as Document.Parsed]) {
      if (doc.errors.length > 0) {
        const e = doc.errors[0];
        const pos = lc.linePos(e?.pos[0] ?? 0);
        problems.push({ file, line: pos.line, col: pos.col, field: '', message: `yaml: ${e?.message.split('\n')[0] ?? 'error'}` });
        continue;
      }
      if (doc.contents === null) continue;
      let obj: unknown;
      try {
        obj = doc.toJS({ maxAliasCount: MAX_ALIASES });
      } catch {
        continue;
      }
      if (typeof obj !== 'object' || obj === null) continue;
      const o = obj as { apiVersion?: unknown; kind?: unknown; metadata?: { name?: unknown; namespace?: unknown } };
      const declaresPod = (o.apiVersion === 'v1' && o.kind === 'Pod') || (o.apiVersion === BERTH_API && o.kind === 'Container');
      const declaresConfig = o.apiVersion === 'v1' && (o.kind === 'ConfigMap' || o.kind === 'Secret');
      if ((!declaresPod && !declaresConfig) || typeof o.metadata?.name !== 'string') continue;
      const ns = typeof o.metadata.namespace === 'string' ? o.metadata.namespace : 'default';
      const at = { file, line: lc.linePos(doc.contents.range[0]).line };
      if (declaresPod) keys.push({ key: `${ns}/${o.metadata.name}`, ...at });
      else configs.push({ key: `${o.kind === 'Secret' ? 'secret' : 'configmap'}/${ns}/${o.metadata.name}`, ...at });
    }
  }
  return { keys, configs, problems };
}

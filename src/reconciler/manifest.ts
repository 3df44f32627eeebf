import { createHash } from 'node:crypto';
import { closeSync, fstatSync, lstatSync, openSync, readFileSync, readSync, realpathSync, promises as fsp, constants as fsc } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { LineCounter, parseAllDocuments, isMap, isNode, isScalar, type Document } from 'yaml';
import { BerthError, errnoCode } from '../lib/errors.js';
// lib, not the runtime façade: validating manifests must not load SQLite, undici or child_process.
import { parseReference } from '../lib/reference.js';
import { checkWorkingDir } from '../lib/workdir.js';
import {
  ANNOTATION_PAUSED,
  canonicalJson,
  defaultPullPolicy,
  parseCpu,
  parseMemory,
  type DesiredContainer,
  type DesiredImage,
  type DesiredPlatform,
  type DesiredPod,
  type PodKind,
  type PullPolicy,
  type RestartPolicy,
} from './desired.js';

/** One problem in one manifest, positioned for an editor: file:line:col field: message. */
export interface ManifestProblem {
  file: string;
  line: number;
  col: number;
  field: string; // dotted path, e.g. spec.containers[0].image
  message: string;
}

export interface LoadResult {
  /** v1 Pods and berth.dev/v1 Containers (one-container pods), keyed namespace/name. */
  pods: DesiredPod[];
  /** berth.dev/v1 Images, keyed image/namespace/name. */
  images: DesiredImage[];
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

export function formatProblem(p: ManifestProblem): string {
  return `${p.file}:${p.line}:${p.col}: ${p.field !== '' ? `${p.field}: ` : ''}${p.message}`;
}

const BERTH_API = 'berth.dev/v1';
/** apiVersion → kind → which schema and conversion; anything else is an unsupported object. */
const KINDS: ReadonlyMap<string, keyof Validators> = new Map([
  ['v1 Pod', 'pod'],
  [`${BERTH_API} Container`, 'container'],
  [`${BERTH_API} Image`, 'image'],
]);

/** berth.dev/v1 annotations berth reads; any other `berth.dev/` key is a typo and rejected. */
const BERTH_ANNOTATIONS: readonly string[] = [ANNOTATION_PAUSED];

interface Validators {
  pod: ValidateFunction;
  container: ValidateFunction;
  image: ValidateFunction;
}

let validators: Validators | undefined;
/** Compiled once (rule M3); container.json and image.json $ref pieces of pod.json. */
function schemaValidators(): Validators {
  if (validators !== undefined) return validators;
  // dist/src/reconciler/manifest.js → repository root is three levels up.
  const here = path.dirname(fileURLToPath(import.meta.url));
  const dirs = [path.resolve(here, '../../../schemas'), path.resolve(here, '../../schemas')];
  const read = (name: string): object => {
    for (const d of dirs) {
      try {
        return JSON.parse(readFileSync(path.join(d, name), 'utf8')) as object;
      } catch (err) {
        if (errnoCode(err) === 'ENOENT') continue;
        throw new BerthError('ERR_INTERNAL', `load schema ${path.join(d, name)}: ${String(err)}`, { cause: err });
      }
    }
    throw new BerthError('ERR_INTERNAL', `load schema: schemas/${name} not found near ${here}`);
  };
  // verbose: errors carry parentSchema, so messages can list the allowed fields.
  const ajv = new Ajv({ strict: true, allErrors: false, coerceTypes: false, $data: false, useDefaults: false, verbose: true });
  const pod = read('pod.json');
  ajv.addSchema(pod);
  validators = { pod: ajv.compile(pod), container: ajv.compile(read('container.json')), image: ajv.compile(read('image.json')) };
  return validators;
}

/**
 * Lists manifest files under `p` (a file or directory): non-dot `*.yaml` / `*.yml` files,
 * recursively; editor swap/backup files are ignored (rule M1). Symlinked directories are
 * followed once (git-sync swaps a symlink). Symlinked files are followed when their target
 * lies inside the manifest directory (a mounted ConfigMap's `..data/x.yaml` layout); one
 * that points outside is reported, never read.
 */
export async function listManifestFiles(p: string): Promise<{ files: string[]; problems: ManifestProblem[] }> {
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
      const full = path.join(dir, e.name);
      const target = e.isSymbolicLink() ? await fsp.stat(full).catch(() => undefined) : undefined;
      if (e.isDirectory() || target?.isDirectory() === true) {
        await walk(full);
      } else if (!/\.ya?ml$/.test(e.name)) {
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
  return { files, problems };
}

/** Reads a manifest file with O_NOFOLLOW|O_NONBLOCK and the size limit (rule M1). */
async function readManifestFile(file: string): Promise<string> {
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
      sources.push({ file, text: await readManifestFile(file) });
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
    const { pods, images, problems } = parsed;
    if (problems.length > 0) {
      result.problems.push(...problems);
      result.badFiles.push(file);
    } else {
      result.pods.push(...pods);
      result.images.push(...images);
    }
  }
  for (const file of opts.cache?.keys() ?? []) if (!seen.has(file)) opts.cache?.delete(file);
  for (const p of [...duplicatePods(result.pods, opts.owners), ...duplicateImages(result.images)]) {
    result.problems.push(p);
    result.badFiles.push(p.file);
  }
  if (result.badFiles.length > 0) {
    const bad = new Set(result.badFiles);
    result.pods = result.pods.filter((pod) => !bad.has(pod.source));
    result.images = result.images.filter((image) => !bad.has(image.source));
    result.badFiles = [...bad];
  }
  return result;
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

type FieldPath = (string | number)[];
type Report = (fieldPath: FieldPath, message: string, atKey?: boolean) => void;

/** Parses one file's text into pods and images; all problems carry file:line:col. */
export function parseManifestText(text: string, file: string): { pods: DesiredPod[]; images: DesiredImage[]; problems: ManifestProblem[] } {
  const lc = new LineCounter();
  const problems: ManifestProblem[] = [];
  const pods: DesiredPod[] = [];
  const images: DesiredImage[] = [];
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
    return { pods, images, problems: [{ file, line: 1, col: 1, field: '', message: `parse: ${(err as Error).message}` }] };
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
    const before = problems.length;
    const problem: Report = (fieldPath, message, atKey = false) => {
      const pos = atKey ? locateKey(fieldPath.slice(0, -1), String(fieldPath[fieldPath.length - 1])) : locate(fieldPath);
      problems.push({ file, ...pos, field: dotted(fieldPath), message });
    };
    if (typeof obj !== 'object' || Array.isArray(obj)) {
      problem([], 'a manifest document must be a mapping with apiVersion and kind');
      continue;
    }
    const o = obj as Record<string, unknown>;
    const kind = o['kind'];
    const apiVersion = o['apiVersion'];
    const which = typeof apiVersion === 'string' && typeof kind === 'string' ? KINDS.get(`${apiVersion} ${kind}`) : undefined;
    if (which === undefined) {
      const k = `${String(apiVersion)}/${String(kind)}`;
      problem(
        kind === undefined ? [] : ['kind'],
        `unsupported object ${k}: this berth implements v1/Pod, ${BERTH_API}/Container and ${BERTH_API}/Image (ConfigMap and Secret are planned)`,
      );
      continue;
    }
    checkStrings(o, problem);
    const validate = schemaValidators()[which];
    if (!validate(o)) {
      for (const e of validate.errors ?? []) {
        const fp = pointerToPath(e.instancePath);
        // allErrors is off (rule M3), so a misspelt required field shows up as "required"
        // alone: name the unknown fields beside it, which are usually the misspelling.
        for (const extra of e.keyword === 'required' ? unknownFields(e) : []) problem([...fp, extra], describeUnknown(e), true);
        const extra = extraProp(e);
        if (extra !== undefined) problem([...fp, extra], describeAjvError(e), true);
        else problem(fp, describeAjvError(e));
      }
    }
    // Semantic checks need a schema-valid document, and would repeat a string problem
    // (an env name with a NUL is also not a valid env name).
    if (problems.length > before) continue;
    if (which === 'image') {
      const image = toDesiredImage(o as unknown as ImageObject, file, docLine, problem);
      if (problems.length === before) images.push(image);
      continue;
    }
    const pod = which === 'pod' ? podShape(o as unknown as PodObject) : containerShape(o as unknown as ContainerObject);
    const desired = toDesiredPod(pod, file, docLine, problem);
    if (problems.length === before) pods.push(desired);
  }
  return { pods, images, problems };
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

function extraProp(e: ErrorObject): string | undefined {
  return e.keyword === 'additionalProperties' ? String((e.params as { additionalProperty?: unknown }).additionalProperty) : undefined;
}

/** Keys of the object an error is about that its schema does not list (needs `verbose`). */
function unknownFields(e: ErrorObject): string[] {
  const props = (e.parentSchema as { properties?: Record<string, unknown> } | undefined)?.properties;
  const data: unknown = e.data;
  if (props === undefined || data === null || typeof data !== 'object' || Array.isArray(data)) return [];
  return Object.keys(data).filter((k) => !Object.hasOwn(props, k));
}

function describeUnknown(e: ErrorObject): string {
  return `unknown field (not in the subset berth implements; allowed here: ${allowedHere(e)})`;
}

function describeAjvError(e: ErrorObject): string {
  switch (e.keyword) {
    case 'additionalProperties':
      return describeUnknown(e);
    case 'enum':
      return `must be one of ${((e.params as { allowedValues: unknown[] }).allowedValues ?? []).map((v) => JSON.stringify(v)).join(', ')}`;
    case 'const':
      return `must be ${JSON.stringify((e.params as { allowedValue: unknown }).allowedValue)}`;
    default:
      return e.message ?? e.keyword;
  }
}

function allowedHere(e: ErrorObject): string {
  const props = (e.parentSchema as { properties?: Record<string, unknown> } | undefined)?.properties;
  return props === undefined ? 'none' : Object.keys(props).join(', ');
}

function pointerToPath(ptr: string): FieldPath {
  if (ptr === '') return [];
  return ptr
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
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

interface ContainerFields {
  name: string;
  image: string;
  imagePullPolicy?: PullPolicy;
  command?: string[];
  args?: string[];
  workingDir?: string;
  env?: { name: string; value?: string }[];
  ports?: { containerPort: number; hostPort?: number; hostIP?: string; protocol?: string }[];
  resources?: { limits?: { cpu?: string | number; memory?: string | number } };
}

interface ObjectMeta {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

interface PodLevelFields {
  restartPolicy?: RestartPolicy;
  hostNetwork?: boolean;
  terminationGracePeriodSeconds?: number;
}

/** v1 Pod after the schema (schemas/pod.json). */
interface PodObject {
  metadata: ObjectMeta;
  spec: PodLevelFields & { containers: ContainerFields[] };
}

/** berth.dev/v1 Container after the schema (schemas/container.json). */
interface ContainerObject {
  metadata: ObjectMeta;
  spec: PodLevelFields & Omit<ContainerFields, 'name'> & { name?: string };
}

/** berth.dev/v1 Image after the schema (schemas/image.json). */
interface ImageObject {
  metadata: { name: string; namespace?: string };
  spec: { ref: string; pullPolicy?: PullPolicy; platform?: string };
}

/** Either pod kind, reduced to what a pod is, with where each container sits in the document. */
interface PodShape {
  kind: PodKind;
  metadata: ObjectMeta;
  spec: PodLevelFields;
  containers: { fields: ContainerFields; path: FieldPath; nameFromMetadata: boolean }[];
}

function podShape(o: PodObject): PodShape {
  const { containers, ...spec } = o.spec;
  return { kind: 'Pod', metadata: o.metadata, spec, containers: containers.map((c, i) => ({ fields: c, path: ['spec', 'containers', i], nameFromMetadata: false })) };
}

function containerShape(o: ContainerObject): PodShape {
  const { restartPolicy, hostNetwork, terminationGracePeriodSeconds, name, ...rest } = o.spec;
  const spec: PodLevelFields = {};
  if (restartPolicy !== undefined) spec.restartPolicy = restartPolicy;
  if (hostNetwork !== undefined) spec.hostNetwork = hostNetwork;
  if (terminationGracePeriodSeconds !== undefined) spec.terminationGracePeriodSeconds = terminationGracePeriodSeconds;
  const fields: ContainerFields = { ...rest, name: name ?? o.metadata.name };
  return { kind: 'Container', metadata: o.metadata, spec, containers: [{ fields, path: ['spec'], nameFromMetadata: name === undefined }] };
}

/** metadata.name and metadata.namespace (default "default") as DNS labels (rule M4). */
function checkNames(meta: { name: string; namespace?: string }, problem: Report): { name: string; namespace: string } {
  const name = meta.name;
  const namespace = meta.namespace ?? 'default';
  if (!DNS_LABEL.test(name)) problem(['metadata', 'name'], `${JSON.stringify(name)} is not a DNS label (lowercase a-z, 0-9 and '-', at most 63)`);
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

/** Semantic checks after the schema (rule M4), then normalisation and hashes. */
function toDesiredPod(o: PodShape, file: string, line: number, problem: Report): DesiredPod {
  const { name, namespace } = checkNames(o.metadata, problem);
  const annotations = o.metadata.annotations ?? {};
  const { paused } = readAnnotations(annotations, problem);
  const hostNetwork = o.spec.hostNetwork ?? false;
  if (!hostNetwork) {
    problem(['spec', 'hostNetwork'], 'pod networking (CNI) is not implemented yet: set hostNetwork: true');
  }
  const names = new Set<string>();
  const containers: DesiredContainer[] = [];
  // Only what shapes the containers: kind, paused, labels and annotations are not here, so
  // rewriting a Pod as a Container, pausing or relabelling never replaces a container.
  const podLevel = { hostNetwork };
  const podHash = sha256hex(canonicalJson(podLevel));
  for (const { fields: c, path: cpath, nameFromMetadata } of o.containers) {
    const at = (...rest: FieldPath): FieldPath => [...cpath, ...rest];
    // A name taken from metadata.name was checked there.
    if (!nameFromMetadata && !DNS_LABEL.test(c.name)) problem(at('name'), `${JSON.stringify(c.name)} is not a DNS label`);
    if (names.has(c.name)) problem(at('name'), `container name ${JSON.stringify(c.name)} is used twice in this pod`);
    names.add(c.name);
    let image = c.image;
    try {
      image = parseReference(c.image).canonical;
    } catch (err) {
      problem(at('image'), err instanceof Error ? err.message : String(err));
    }
    const env: { name: string; value: string }[] = [];
    for (const [j, e] of (c.env ?? []).entries()) {
      if (!ENV_NAME.test(e.name)) problem(at('env', j, 'name'), `${JSON.stringify(e.name)} is not a valid environment variable name`);
      env.push({ name: e.name, value: e.value ?? '' });
    }
    const ports: DesiredContainer['ports'] = [];
    for (const [j, p] of (c.ports ?? []).entries()) {
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
      name: c.name,
      image,
      pullPolicy: c.imagePullPolicy ?? defaultPullPolicy(image),
      specHash: '',
      env,
      ports,
    };
    if (c.command !== undefined) dc.command = c.command;
    if (c.args !== undefined) dc.args = c.args;
    if (c.workingDir !== undefined) dc.workingDir = c.workingDir;
    const limits = c.resources?.limits;
    if (limits?.memory !== undefined) {
      const m = parseMemory(limits.memory);
      if (m === undefined || m < 4 * 1024 * 1024) problem(at('resources', 'limits', 'memory'), `${JSON.stringify(limits.memory)} is not a memory quantity of at least 4Mi`);
      else dc.memoryBytes = m;
    }
    if (limits?.cpu !== undefined) {
      const m = parseCpu(limits.cpu);
      if (m === undefined) problem(at('resources', 'limits', 'cpu'), `${JSON.stringify(limits.cpu)} is not a CPU quantity`);
      else dc.cpuMillis = m;
    }
    dc.specHash = sha256hex(canonicalJson({ ...dc, specHash: undefined, podHash }));
    containers.push(dc);
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
    restartPolicy: o.spec.restartPolicy ?? 'Always',
    gracePeriodMs: (o.spec.terminationGracePeriodSeconds ?? 30) * 1000,
    labels: o.metadata.labels ?? {},
    annotations,
    paused,
    containers,
  };
}

function toDesiredImage(o: ImageObject, file: string, line: number, problem: Report): DesiredImage {
  const { name, namespace } = checkNames(o.metadata, problem);
  let ref = o.spec.ref;
  try {
    ref = parseReference(o.spec.ref).canonical;
  } catch (err) {
    problem(['spec', 'ref'], err instanceof Error ? err.message : String(err));
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

/** `os/arch[/variant]` → platform, or why not. Only linux: berth runs Linux containers. */
function parsePlatform(s: string): DesiredPlatform | string {
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
export async function declaredPodKeys(input: ManifestInput): Promise<{ keys: { key: string; file: string; line: number }[]; problems: ManifestProblem[] }> {
  const keys: { key: string; file: string; line: number }[] = [];
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
      if (!declaresPod || typeof o.metadata?.name !== 'string') continue;
      const ns = typeof o.metadata.namespace === 'string' ? o.metadata.namespace : 'default';
      keys.push({ key: `${ns}/${o.metadata.name}`, file, line: lc.linePos(doc.contents.range[0]).line });
    }
  }
  return { keys, problems };
}

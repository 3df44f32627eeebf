import { createHash } from 'node:crypto';
import { readFileSync, promises as fsp, constants as fsc } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { LineCounter, parseAllDocuments, isMap, isNode, isScalar, type Document } from 'yaml';
import { BerthError, errnoCode } from '../lib/errors.js';
import { checkWorkingDir, parseReference } from '../runtime/index.js';
import {
  canonicalJson,
  defaultPullPolicy,
  parseCpu,
  parseMemory,
  type DesiredContainer,
  type DesiredPod,
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
  pods: DesiredPod[];
  problems: ManifestProblem[];
  /** Every manifest file read, absolute. */
  files: string[];
  /** Files that failed (their objects are not in `pods`). */
  badFiles: string[];
}

export const MAX_MANIFEST_FILE_BYTES = 1024 * 1024;
const MAX_ALIASES = 100;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const ENV_NAME = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;

export function formatProblem(p: ManifestProblem): string {
  return `${p.file}:${p.line}:${p.col}: ${p.field !== '' ? `${p.field}: ` : ''}${p.message}`;
}

let podValidator: ValidateFunction | undefined;
function validatePod(): ValidateFunction {
  if (podValidator !== undefined) return podValidator;
  // dist/src/reconciler/manifest.js → repository root is three levels up.
  const here = path.dirname(fileURLToPath(import.meta.url));
  const candidates = [path.resolve(here, '../../../schemas/pod.json'), path.resolve(here, '../../schemas/pod.json')];
  let text: string | undefined;
  for (const c of candidates) {
    try {
      text = readFileSync(c, 'utf8');
      break;
    } catch {
      continue;
    }
  }
  if (text === undefined) throw new BerthError('ERR_INTERNAL', `load schema: schemas/pod.json not found near ${here}`);
  // verbose: errors carry parentSchema, so messages can list the allowed fields.
  const ajv = new Ajv({ strict: true, allErrors: false, coerceTypes: false, $data: false, useDefaults: false, verbose: true });
  podValidator = ajv.compile(JSON.parse(text) as object);
  return podValidator;
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
  // A symlinked file was vetted by listManifestFiles (or named on the command line): open its
  // target, still with O_NOFOLLOW so that nothing else is followed.
  const st = await fsp.lstat(file);
  const real = st.isSymbolicLink() ? await fsp.realpath(file) : file;
  const fh = await fsp.open(real, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new BerthError('ERR_INVALID_MANIFEST', `read ${file}: not a regular file`);
    if (st.size > MAX_MANIFEST_FILE_BYTES) {
      throw new BerthError('ERR_INVALID_MANIFEST', `read ${file}: ${st.size} bytes exceeds the ${MAX_MANIFEST_FILE_BYTES} byte limit`);
    }
    const buf = Buffer.alloc(MAX_MANIFEST_FILE_BYTES + 1);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    if (bytesRead > MAX_MANIFEST_FILE_BYTES) throw new BerthError('ERR_INVALID_MANIFEST', `read ${file}: exceeds the ${MAX_MANIFEST_FILE_BYTES} byte limit`);
    return buf.subarray(0, bytesRead).toString('utf8');
  } finally {
    await fh.close();
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
export async function loadManifests(input: string | ManifestInput, opts: { owners?: ReadonlyMap<string, string> } = {}): Promise<LoadResult> {
  const read = await readManifestSources(typeof input === 'string' ? { path: input } : input);
  const result: LoadResult = {
    pods: [],
    problems: [...read.problems],
    files: [...read.sources.map((x) => x.file), ...read.problems.map((x) => x.file)],
    badFiles: read.problems.map((x) => x.file),
  };
  for (const { file, text } of read.sources) {
    const { pods, problems } = parseManifestText(text, file);
    if (problems.length > 0) {
      result.problems.push(...problems);
      result.badFiles.push(file);
    } else {
      result.pods.push(...pods);
    }
  }
  for (const p of duplicatePods(result.pods, opts.owners)) {
    result.problems.push(p);
    result.badFiles.push(p.file);
  }
  if (result.badFiles.length > 0) {
    const bad = new Set(result.badFiles);
    result.pods = result.pods.filter((pod) => !bad.has(pod.source));
    result.badFiles = [...bad];
  }
  return result;
}

/** Names are unique per namespace across all files (rule M4): one problem per later duplicate. */
export function duplicatePods(pods: readonly DesiredPod[], owners?: ReadonlyMap<string, string>): ManifestProblem[] {
  const byKey = new Map<string, DesiredPod>();
  const problems: ManifestProblem[] = [];
  const owned = (pod: DesiredPod): boolean => owners?.get(pod.key) === pod.source;
  // Owners first (stable otherwise), so a newcomer redeclaring a running pod is the one rejected.
  const ordered = [...pods].sort((a, b) => Number(owned(b)) - Number(owned(a)));
  for (const pod of ordered) {
    const prev = byKey.get(pod.key);
    if (prev === undefined) {
      byKey.set(pod.key, pod);
      continue;
    }
    problems.push({ file: pod.source, line: pod.line, col: 1, field: 'metadata.name', message: `pod ${pod.key} is also declared in ${prev.source}:${prev.line}` });
  }
  return problems;
}

/** Parses one file's text into pods; all problems carry file:line:col. */
export function parseManifestText(text: string, file: string): { pods: DesiredPod[]; problems: ManifestProblem[] } {
  const lc = new LineCounter();
  const problems: ManifestProblem[] = [];
  const pods: DesiredPod[] = [];
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
    return { pods, problems: [{ file, line: 1, col: 1, field: '', message: `parse: ${(err as Error).message}` }] };
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
    const locate = (fieldPath: (string | number)[]): { line: number; col: number } => {
      for (let n = fieldPath.length; n >= 0; n--) {
        const node = doc.getIn(fieldPath.slice(0, n), true);
        if (isNode(node) && node.range) return at(node.range[0]);
      }
      return { line: docLine, col: 1 };
    };
    const locateKey = (parentPath: (string | number)[], key: string): { line: number; col: number } => {
      const parent = doc.getIn(parentPath, true);
      if (isMap(parent)) {
        for (const item of parent.items) {
          if (isScalar(item.key) && item.key.value === key && item.key.range) return at(item.key.range[0]);
        }
      }
      return locate(parentPath);
    };
    const problem = (fieldPath: (string | number)[], message: string, atKey = false): void => {
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
    if (kind !== 'Pod' || apiVersion !== 'v1') {
      const k = `${String(apiVersion)}/${String(kind)}`;
      problem(kind === undefined ? [] : ['kind'], `unsupported object ${k}: this berth implements v1/Pod (ConfigMap, Secret, berth.dev/v1 Image and Container are planned)`);
      continue;
    }
    const validate = validatePod();
    if (!validate(o)) {
      for (const e of validate.errors ?? []) {
        const fp = pointerToPath(e.instancePath);
        const extra = extraProp(e);
        if (extra !== undefined) problem([...fp, extra], describeAjvError(e), true);
        else problem(fp, describeAjvError(e));
      }
      continue;
    }
    const before = problems.length;
    const pod = toDesiredPod(o, file, docLine, problem);
    if (problems.length === before && pod !== undefined) pods.push(pod);
  }
  return { pods, problems };
}

function extraProp(e: ErrorObject): string | undefined {
  return e.keyword === 'additionalProperties' ? String((e.params as { additionalProperty?: unknown }).additionalProperty) : undefined;
}

function describeAjvError(e: ErrorObject): string {
  switch (e.keyword) {
    case 'additionalProperties':
      return `unknown field (not in the subset berth implements; allowed here: ${allowedHere(e)})`;
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

function pointerToPath(ptr: string): (string | number)[] {
  if (ptr === '') return [];
  return ptr
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
}

function dotted(p: (string | number)[]): string {
  return p.reduce<string>((acc, s) => (typeof s === 'number' ? `${acc}[${s}]` : acc === '' ? s : `${acc}.${s}`), '');
}

interface PodObject {
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  spec: {
    containers: {
      name: string;
      image: string;
      imagePullPolicy?: PullPolicy;
      command?: string[];
      args?: string[];
      workingDir?: string;
      env?: { name: string; value?: string }[];
      ports?: { containerPort: number; hostPort?: number; hostIP?: string; protocol?: string }[];
      resources?: { limits?: { cpu?: string | number; memory?: string | number } };
    }[];
    restartPolicy?: RestartPolicy;
    hostNetwork?: boolean;
    terminationGracePeriodSeconds?: number;
  };
}

/** Semantic checks after the schema (rule M4), then normalisation and hashes. */
function toDesiredPod(
  raw: Record<string, unknown>,
  file: string,
  line: number,
  problem: (p: (string | number)[], m: string) => void,
): DesiredPod | undefined {
  const o = raw as unknown as PodObject;
  const name = o.metadata.name;
  const namespace = o.metadata.namespace ?? 'default';
  if (!DNS_LABEL.test(name)) problem(['metadata', 'name'], `${JSON.stringify(name)} is not a DNS label (lowercase a-z, 0-9 and '-', at most 63)`);
  if (!DNS_LABEL.test(namespace)) problem(['metadata', 'namespace'], `${JSON.stringify(namespace)} is not a DNS label`);
  const hostNetwork = o.spec.hostNetwork ?? false;
  if (!hostNetwork) {
    problem(['spec', 'hostNetwork'], 'pod networking (CNI) is not implemented yet: set hostNetwork: true');
  }
  const names = new Set<string>();
  const containers: DesiredContainer[] = [];
  const podLevel = { hostNetwork };
  const podHash = sha256hex(canonicalJson(podLevel));
  for (const [i, c] of o.spec.containers.entries()) {
    const at = (...rest: (string | number)[]): (string | number)[] => ['spec', 'containers', i, ...rest];
    if (!DNS_LABEL.test(c.name)) problem(at('name'), `${JSON.stringify(c.name)} is not a DNS label`);
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
    namespace,
    name,
    source: file,
    line,
    podHash,
    hostNetwork,
    restartPolicy: o.spec.restartPolicy ?? 'Always',
    gracePeriodMs: (o.spec.terminationGracePeriodSeconds ?? 30) * 1000,
    labels: o.metadata.labels ?? {},
    containers,
  };
}

function sha256hex(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

/**
 * The pod keys a file or directory names, read leniently for `berth delete`: only
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
      if (o.apiVersion !== 'v1' || o.kind !== 'Pod' || typeof o.metadata?.name !== 'string') continue;
      const ns = typeof o.metadata.namespace === 'string' ? o.metadata.namespace : 'default';
      keys.push({ key: `${ns}/${o.metadata.name}`, file, line: lc.linePos(doc.contents.range[0]).line });
    }
  }
  return { keys, problems };
}

import { createHash } from 'node:crypto';
import { canonicalJson, type DesiredConfig, type DesiredContainer, type DesiredPod, type Projection } from './desired.js';

/**
 * References from pods to ConfigMaps and Secrets, resolved the way the kubelet resolves them
 * when it starts a container: `env[].valueFrom` (configMapKeyRef, secretKeyRef, metadata
 * fieldRefs), `envFrom` (configMapRef, secretRef, with prefix; env wins over envFrom), and
 * configMap/secret volumes projected to files. Pure: the caller hands in every config it
 * knows (the manifests loaded now, over the ones recorded by earlier applies).
 *
 * Hashes: a container's specHash covers its resolved env, so a ConfigMap value one container
 * reads through env restarts that container only; projected files are not in any hash (a
 * volume is updated in place, as the kubelet's atomic writer does) but their digest is in the
 * pod (`projections`), so the pod is run again when they change. A missing object or key that
 * is not optional is the kubelet's CreateContainerConfigError: `configError` on the container,
 * which the planner reports instead of starting it.
 */

/**
 * The env a container gets, from its entries in the kubelet's order (`seq`; a name may repeat,
 * the last wins). Without a literal that references variables the order of first appearance is
 * kept and replaced entries are dropped. With one, the sequence is kept as it is, and an entry a
 * later one replaces stays, marked `overridden`: an expansion before the replacement still reads
 * its value, as the kubelet's does (regression env-expansion-order).
 */
export function envSequence(seq: readonly DesiredContainer['env'][number][]): DesiredContainer['env'] {
  const references = seq.some((e) => e.verbatim !== true && e.from === undefined && e.value.includes('$('));
  if (!references) {
    const at = new Map<string, number>();
    const out: DesiredContainer['env'] = [];
    for (const e of seq) {
      const i = at.get(e.name);
      if (i === undefined) {
        at.set(e.name, out.length);
        out.push(e);
      } else out[i] = e;
    }
    return out;
  }
  return seq.map((e, i) => (seq.slice(i + 1).some((x) => x.name === e.name) ? { ...e, overridden: true } : e));
}

export function configKey(kind: 'ConfigMap' | 'Secret', namespace: string, name: string): string {
  return `${kind === 'ConfigMap' ? 'configmap' : 'secret'}/${namespace}/${name}`;
}

/** What a pod's containers see of the host at start (fieldRefs that are not the pod's own metadata). */
export const RUNTIME_FIELDS = new Set(['status.podIP', 'status.podIPs', 'status.hostIP', 'status.hostIPs', 'spec.nodeName']);

/** Recorded configs (earlier applies) overlaid by the ones loaded now. */
export function mergeConfigs(recorded: readonly DesiredConfig[], loaded: readonly DesiredConfig[]): DesiredConfig[] {
  const m = new Map(recorded.map((c) => [c.key, c]));
  for (const c of loaded) m.set(c.key, c);
  return [...m.values()];
}

export function resolvePods(pods: readonly DesiredPod[], configs: readonly DesiredConfig[]): DesiredPod[] {
  const byKey = new Map(configs.map((c) => [c.key, c]));
  return pods.map((p) => resolvePod(p, byKey));
}

export function needsResolution(p: DesiredPod): boolean {
  return (p.imagePullSecrets?.length ?? 0) > 0 || (p.volumes?.some((v) => 'configMap' in v || 'secret' in v) ?? false) || [...(p.initContainers ?? []), ...p.containers].some((c) => c.envRefs !== undefined || c.envFrom !== undefined);
}

function resolvePod(pod: DesiredPod, configs: ReadonlyMap<string, DesiredConfig>): DesiredPod {
  if (!needsResolution(pod)) return pod;
  const find = (kind: 'ConfigMap' | 'Secret', name: string): DesiredConfig | undefined => configs.get(configKey(kind, pod.namespace, name));
  const containers = pod.containers.map((c) => resolveContainer(pod, c, find));
  const initContainers = pod.initContainers?.map((c) => resolveContainer(pod, c, find));
  const projections: Projection[] = [];
  const volumeErrors: string[] = [];
  for (const v of pod.volumes ?? []) {
    const src = 'configMap' in v ? { kind: 'ConfigMap' as const, name: v.configMap.name, spec: v.configMap } : 'secret' in v ? { kind: 'Secret' as const, name: v.secret.secretName, spec: v.secret } : undefined;
    if (src === undefined) continue;
    const cfg = find(src.kind, src.name);
    if (cfg === undefined) {
      if (!src.spec.optional) volumeErrors.push(`volume ${v.name}: ${src.kind} ${pod.namespace}/${src.name} not found`);
      projections.push(projection(v.name, src.kind === 'Secret', [], !src.spec.optional));
      continue;
    }
    const files: Projection['files'] = [];
    let failed = false;
    if (src.spec.items !== undefined) {
      for (const it of src.spec.items) {
        const data = cfg.data[it.key];
        if (data === undefined) {
          if (!src.spec.optional) {
            volumeErrors.push(`volume ${v.name}: ${src.kind} ${pod.namespace}/${src.name} has no key ${JSON.stringify(it.key)}`);
            failed = true;
          }
          continue;
        }
        files.push({ path: it.path, data, mode: it.mode ?? src.spec.defaultMode });
      }
    } else {
      for (const [k, data] of Object.entries(cfg.data).sort(([a], [b]) => (a < b ? -1 : 1))) files.push({ path: k, data, mode: src.spec.defaultMode });
    }
    projections.push(projection(v.name, src.kind === 'Secret', files, failed));
  }
  // A volume whose source is missing fails the kubelet's mount step for the whole pod
  // (FailedMount): no container of it starts, init containers included, whether it mounts that
  // volume or not (regression failed-volume-blocks-only-its-users).
  const withVolumeErrors = (c: DesiredContainer): DesiredContainer => {
    if (volumeErrors.length === 0) return c;
    const mounts = volumeErrors.join('; ');
    return { ...c, configError: c.configError !== undefined ? `${c.configError}; ${mounts}` : mounts };
  };
  // Pull secrets: kubernetes.io/dockerconfigjson Secrets by name; a missing one is skipped (the kubelet warns and
  // pulls anonymously), so the pull's own error says what is wrong.
  const pullCredentials = (pod.imagePullSecrets ?? []).flatMap((name) => {
    const cfg = find('Secret', name);
    const json = cfg?.data['.dockerconfigjson'];
    const legacy = cfg?.data['.dockercfg'];
    if (json !== undefined) return [{ secret: `${pod.namespace}/${name}`, configJson: Buffer.from(json, 'base64').toString('utf8') }];
    // kubernetes.io/dockercfg: the registries map without config.json's "auths" around it.
    if (legacy !== undefined) return [{ secret: `${pod.namespace}/${name}`, configJson: `{"auths":${Buffer.from(legacy, 'base64').toString('utf8')}}` }];
    return [];
  });
  return {
    ...pod,
    ...(pullCredentials.length > 0 ? { pullCredentials } : {}),
    containers: containers.map(withVolumeErrors),
    ...(initContainers !== undefined ? { initContainers: initContainers.map(withVolumeErrors) } : {}),
    ...(projections.length > 0 ? { projections } : {}),
  };
}

function projection(volume: string, secret: boolean, files: Projection['files'], failed = false): Projection {
  return { volume, secret, files, hash: sha256hex(canonicalJson(files)), ...(failed ? { failed: true } : {}) };
}

function resolveContainer(pod: DesiredPod, c: DesiredContainer, find: (kind: 'ConfigMap' | 'Secret', name: string) => DesiredConfig | undefined): DesiredContainer {
  if (c.envRefs === undefined && c.envFrom === undefined) return c;
  const errors: string[] = [];
  type Entry = DesiredContainer['env'][number];
  // The kubelet's makeEnvironmentVariables: envFrom first (a later source wins), then env in the
  // order written, each literal value expanded ($(VAR), $$) against what is defined so far — the
  // envFrom values included, even one a later env entry replaces. Values from ConfigMaps,
  // Secrets and fields are taken as they are: never expanded (`verbatim`, only set where the
  // value has a `$`, the only case where it matters). The expansion itself runs when the
  // container starts (runtime/tasks/spec.ts expandEnv), when status.podIP is known.
  const seq: Entry[] = [];
  const verbatim = (e: Entry): Entry => (e.value.includes('$') ? { ...e, verbatim: true } : e);
  const text = (b64: string): string => Buffer.from(b64, 'base64').toString('utf8');
  const skipped: string[] = [];
  for (const f of c.envFrom ?? []) {
    const ref = f.configMapRef ?? f.secretRef;
    if (ref === undefined) continue;
    const kind = f.configMapRef !== undefined ? 'ConfigMap' : 'Secret';
    const bad: string[] = [];
    const cfg = find(kind, ref.name);
    if (cfg === undefined) {
      if (!ref.optional) errors.push(`envFrom: ${kind} ${pod.namespace}/${ref.name} not found`);
      continue;
    }
    for (const [k, v] of Object.entries(cfg.data).sort(([a], [b]) => (a < b ? -1 : 1))) {
      // The kubelet reads a ConfigMap's data only, never its binaryData (regression binarydata-in-env).
      if (cfg.binaryKeys?.includes(k) === true) continue;
      const name = `${f.prefix ?? ''}${k}`;
      // As the kubelet: keys that are not valid variable names are skipped, and said so in a
      // Warning event when the container starts (regression envfrom-invalid-keys-silent).
      if (!/^[-._a-zA-Z][-._a-zA-Z0-9]*$/.test(name)) {
        bad.push(k);
        continue;
      }
      seq.push(verbatim(kind === 'Secret' ? { name, value: text(v), secret: true } : { name, value: text(v) }));
    }
    if (bad.length > 0) skipped.push(`Keys [${bad.join(', ')}] from the EnvFrom ${kind === 'Secret' ? 'secret' : 'configMap'} ${pod.namespace}/${ref.name} were skipped since they are considered invalid environment variable names.`);
  }
  const refs = new Map((c.envRefs ?? []).map((r) => [r.name, r.valueFrom]));
  // From the env as written, so resolving a recorded (already resolved) pod again gives the same result.
  for (const e of c.envWritten ?? c.env) {
    const from = refs.get(e.name);
    if (from === undefined) {
      seq.push({ name: e.name, value: e.value });
      continue;
    }
    if ('fieldRef' in from) {
      const fp = from.fieldRef.fieldPath;
      const meta = metadataField(pod, fp);
      seq.push(meta !== undefined ? verbatim({ name: e.name, value: meta }) : { name: e.name, value: '', from: fp });
      continue;
    }
    const kind = 'configMapKeyRef' in from ? 'ConfigMap' : 'Secret';
    const ref = 'configMapKeyRef' in from ? from.configMapKeyRef : from.secretKeyRef;
    const cfg = find(kind, ref.name);
    const data = cfg?.binaryKeys?.includes(ref.key) === true ? undefined : cfg?.data[ref.key];
    if (data === undefined) {
      if (!ref.optional) errors.push(`env ${e.name}: ${cfg === undefined ? `${kind} ${pod.namespace}/${ref.name} not found` : `${kind} ${pod.namespace}/${ref.name} has no key ${JSON.stringify(ref.key)}`}`);
      continue;
    }
    seq.push(verbatim(kind === 'Secret' ? { name: e.name, value: text(data), secret: true } : { name: e.name, value: text(data) }));
  }
  const env = envSequence(seq);
  const out: DesiredContainer = { ...c, env };
  if (errors.length > 0) out.configError = errors.join('; ');
  // The hash covers the resolved values (a Secret's too: it never leaves the host), so a
  // change restarts exactly the containers that read it.
  out.specHash = sha256hex(canonicalJson({ ...out, specHash: undefined, configError: undefined, envWarning: undefined, resolved: true, podHash: pod.podHash }));
  if (skipped.length > 0) out.envWarning = skipped.join(' ');
  else delete out.envWarning;
  return out;
}

/** metadata.* fieldRefs, known from the manifest; undefined for the ones the runtime fills in. */
function metadataField(pod: DesiredPod, fp: string): string | undefined {
  if (fp === 'metadata.name') return pod.name;
  if (fp === 'metadata.namespace') return pod.namespace;
  if (fp === 'metadata.uid') return sha256hex(pod.key).slice(0, 32).replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, '$1-$2-$3-$4-$5');
  if (fp === 'spec.serviceAccountName') return 'default';
  const m = /^metadata\.(labels|annotations)\['([^']+)'\]$/.exec(fp);
  if (m !== null) return (m[1] === 'labels' ? pod.labels : pod.annotations)[m[2] ?? ''] ?? '';
  return undefined;
}

function sha256hex(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

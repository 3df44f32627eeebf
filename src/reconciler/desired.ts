/**
 * Desired state: what the manifests say, normalised. Pure (types and plain functions
 * only) so that the planner and its unit tests load without SQLite or processes.
 */

export type RestartPolicy = 'Always' | 'OnFailure' | 'Never';
export type PullPolicy = 'Always' | 'IfNotPresent' | 'Never';

/** Where an env variable's value comes from, when not written inline (resolved against ConfigMaps and Secrets). */
export type EnvSource =
  | { configMapKeyRef: { name: string; key: string; optional: boolean } }
  | { secretKeyRef: { name: string; key: string; optional: boolean } }
  | { fieldRef: { fieldPath: string } };

export interface EnvFromSource {
  prefix?: string;
  configMapRef?: { name: string; optional: boolean };
  secretRef?: { name: string; optional: boolean };
}

export interface DesiredVolumeMount {
  name: string;
  mountPath: string;
  readOnly: boolean;
  subPath?: string;
}

export interface DesiredContainer {
  name: string;
  image: string; // canonical reference
  pullPolicy: PullPolicy;
  /** sha256 over the container's fields and the pod-level fields that shape it. */
  specHash: string;
  command?: string[];
  args?: string[];
  workingDir?: string;
  /**
   * Resolved variables in order: envFrom first, then env (a later name wins). `secret`: the
   * value came from a Secret and is never printed. `from`: a fieldRef resolved when the
   * container starts (status.podIP…), value empty until then.
   */
  env: { name: string; value: string; secret?: true; from?: string; verbatim?: true; overridden?: true }[];
  /** As written: the references `env` was resolved from (kept so a ConfigMap edit is re-resolved). */
  envRefs?: { name: string; valueFrom: EnvSource }[];
  /** `env` as written (references with empty values), when it has references: what resolution starts from. */
  envWritten?: { name: string; value: string }[];
  envFrom?: EnvFromSource[];
  volumeMounts?: DesiredVolumeMount[];
  /** Liveness, readiness and startup probes (run by `berth up`). */
  probes?: { liveness?: DesiredProbe; readiness?: DesiredProbe; startup?: DesiredProbe };
  /** postStart and preStop hooks. */
  lifecycle?: { postStart?: DesiredHandler; preStop?: DesiredHandler };
  /** securityContext, pod-level merged under container-level (only what is set; absent when nothing is). */
  security?: DesiredSecurity;
  /**
   * Why the container cannot be configured (the kubelet's CreateContainerConfigError): a
   * ConfigMap or Secret, or one of its keys, that is missing and not optional.
   */
  configError?: string;
  /** envFrom keys skipped as invalid variable names (the kubelet's InvalidEnvironmentVariableNames event). */
  envWarning?: string;
  ports: { containerPort: number; hostPort?: number; hostIP?: string; protocol: string }[];
  memoryBytes?: number;
  cpuMillis?: number;
  /** resources.requests as written (the effective request defaults to the limit: see qos.ts). */
  memoryRequestBytes?: number;
  cpuRequestMillis?: number;
}

/**
 * The manifest kinds that declare a pod. A berth.dev/v1 Container is shorthand for a
 * one-container Pod: it becomes the same DesiredPod (same key space, same hashes), and
 * `kind` only says how it was written, for display.
 */
export type PodKind = 'Pod' | 'Container';

/** `metadata.annotations["berth.dev/paused"]`: "true" pauses, "false" or absent does not. */
export const ANNOTATION_PAUSED = 'berth.dev/paused';

/** kubectl's annotation naming the container `logs` and `exec` pick when none is named. */
export const ANNOTATION_DEFAULT_CONTAINER = 'kubectl.kubernetes.io/default-container';

/** A host port mapping as CNI's portmap takes it (protocol in lower case). */
export interface DesiredPortMapping {
  hostPort: number;
  containerPort: number;
  protocol: 'tcp' | 'udp' | 'sctp';
  hostIP?: string;
}

/**
 * What shapes a pod's sandbox (pods without hostNetwork): a change of `hash` rebuilds the
 * sandbox and so restarts every container of the pod, as a new pod sandbox does on Kubernetes.
 */
export interface DesiredSandbox {
  hash: string;
  /** spec.hostname, else the pod's name. */
  hostname: string;
  subdomain?: string;
  dns: {
    policy: 'ClusterFirst' | 'ClusterFirstWithHostNet' | 'Default' | 'None';
    nameservers?: string[];
    searches?: string[];
    options?: { name: string; value?: string }[];
  };
  shareProcessNamespace: boolean;
  /** Every container's hostPort mappings. */
  ports: DesiredPortMapping[];
}

/** A probe or hook action; ports already resolved from names to numbers. */
export type DesiredHandler =
  | { exec: { command: string[] } }
  | { httpGet: { path: string; port: number; host?: string; headers?: { name: string; value: string }[] } }
  | { tcpSocket: { port: number; host?: string } };

export type DesiredProbe = DesiredHandler & {
  initialDelayMs: number;
  periodMs: number;
  timeoutMs: number;
  successThreshold: number;
  failureThreshold: number;
};

export interface DesiredSecurity {
  runAsUser?: number;
  runAsGroup?: number;
  runAsNonRoot?: boolean;
  supplementalGroups?: number[];
  readOnlyRootFilesystem?: boolean;
  allowPrivilegeEscalation?: boolean;
  privileged?: boolean;
  /** Capability names as CAP_X (ALL kept as ALL). */
  capAdd?: string[];
  capDrop?: string[];
  seccomp?: 'RuntimeDefault' | 'Unconfined';
  /** Pod sysctls (namespaced ones only). */
  sysctls?: { name: string; value: string }[];
}

/** A pod volume. Projected ones carry the files they project (resolved from the ConfigMap or Secret). */
export type DesiredVolume =
  | { name: string; emptyDir: { medium: '' | 'Memory'; sizeLimitBytes?: number } }
  | { name: string; hostPath: { path: string; type: string } }
  | { name: string; persistentVolumeClaim: { claimName: string; readOnly: boolean } }
  | { name: string; configMap: { name: string; items?: { key: string; path: string; mode?: number }[]; defaultMode: number; optional: boolean } }
  | { name: string; secret: { secretName: string; items?: { key: string; path: string; mode?: number }[]; defaultMode: number; optional: boolean } };

/** The files a configMap or secret volume projects: relative path → content (base64) and mode. */
export interface Projection {
  volume: string;
  secret: boolean;
  files: { path: string; data: string; mode: number }[];
  /** sha256 of the files: a change is written into the mounted volume without a restart. */
  hash: string;
  /**
   * Its required source (the object, or a key `items` names) is missing: the kubelet's volume
   * setup fails before it writes, so a running container keeps the files it has.
   */
  failed?: true;
}

/**
 * v1 ConfigMap or Secret. `data` maps keys to base64 of their bytes (ConfigMap data and
 * Secret stringData are encoded on load), so both kinds look the same to resolution.
 */
export interface DesiredConfig {
  key: string; // configmap/<ns>/<name> or secret/<ns>/<name>
  kind: 'ConfigMap' | 'Secret';
  namespace: string;
  name: string;
  type?: string;
  data: Record<string, string>;
  /** ConfigMap keys that came from binaryData (files only: env never reads them). */
  binaryKeys?: string[];
  /** `immutable: true`: once recorded its data, type and immutability cannot change (delete it first), as the API server enforces. */
  immutable?: true;
  source: string;
  line: number;
}

export interface DesiredPod {
  key: string; // namespace/name
  kind: PodKind;
  namespace: string;
  name: string;
  /** Absolute path of the manifest file that declares the pod. */
  source: string;
  /** Where in that file (1-based line of the document start). */
  line: number;
  /** sha256 over the pod-level fields that shape its containers; `paused` is not one of them. */
  podHash: string;
  hostNetwork: boolean;
  /** The pod's sandbox; absent with hostNetwork (the host's namespaces, no CNI). */
  sandbox?: DesiredSandbox;
  restartPolicy: RestartPolicy;
  gracePeriodMs: number;
  volumes?: DesiredVolume[];
  /** spec.initContainers, in order: each runs to a successful exit before the next, all before `containers`. */
  initContainers?: DesiredContainer[];
  /** spec.imagePullSecrets by name (resolved into `pullCredentials`). */
  imagePullSecrets?: string[];
  /**
   * The config.json texts of the pod's kubernetes.io/dockerconfigjson pull secrets, found by
   * resolution; outside every hash (credentials change nothing that runs).
   */
  pullCredentials?: { secret: string; configJson: string }[];
  /** What the pod's configMap and secret volumes hold now (outside every hash: updated in place). */
  projections?: Projection[];
  labels: Record<string, string>;
  annotations: Record<string, string>;
  /**
   * Intent from the `berth.dev/paused` annotation: keep the pod's containers but do not run
   * them. Deliberately outside specHash and podHash, so pausing and resuming never replaces
   * a container. A pod recorded (last-applied JSON) before this field existed lacks it: read
   * that as false.
   */
  paused: boolean;
  containers: DesiredContainer[];
}

/** An OCI platform as `os/architecture[/variant]` names it (the shape the runtime pulls by). */
export interface DesiredPlatform {
  os: string;
  architecture: string;
  variant?: string;
}

/**
 * A berth.dev/v1 Image: an image to pull ahead of any pod that uses it (and keep, for
 * edge devices that lose the registry). Keys live in their own space, `image/<ns>/<name>`.
 */
export interface DesiredImage {
  key: string; // image/namespace/name
  namespace: string;
  name: string;
  ref: string; // canonical reference
  pullPolicy: PullPolicy;
  /** Absent: the host's platform, decided by the runtime at pull time. */
  platform?: DesiredPlatform;
  /** Absolute path of the manifest file that declares the image. */
  source: string;
  /** Where in that file (1-based line of the document start). */
  line: number;
}

/** Kubernetes default: Always for `:latest` or untagged references, else IfNotPresent. */
export function defaultPullPolicy(canonicalRef: string): PullPolicy {
  if (canonicalRef.includes('@')) return 'IfNotPresent';
  const lastSlash = canonicalRef.lastIndexOf('/');
  const colon = canonicalRef.indexOf(':', lastSlash);
  const tag = colon === -1 ? 'latest' : canonicalRef.slice(colon + 1);
  return tag === 'latest' ? 'Always' : 'IfNotPresent';
}

/** JSON with sorted keys: stable input for spec hashes. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>)
      .filter(([, x]) => x !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonicalJson(x)}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

/** Kubernetes memory quantity → bytes ("64Mi", "1G", "128974848", "129e6"). */
export function parseMemory(q: string | number): number | undefined {
  if (typeof q === 'number') return Number.isSafeInteger(Math.floor(q)) && q >= 0 ? Math.floor(q) : undefined;
  const m = /^(\d+(?:\.\d+)?(?:[eE]\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E|m)?$/.exec(q);
  if (m === null) return undefined;
  const n = Number(m[1]);
  const mult: Record<string, number> = {
    Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
    k: 1e3, K: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18, m: 1e-3,
  };
  const v = Math.floor(n * (m[2] === undefined ? 1 : (mult[m[2]] ?? 1)));
  return Number.isSafeInteger(v) ? v : undefined;
}

/** Kubernetes CPU quantity → millicores ("500m", "0.5", "2"). */
export function parseCpu(q: string | number): number | undefined {
  let v: number;
  if (typeof q === 'number') {
    v = q * 1000;
  } else {
    const m = /^(\d+(?:\.\d+)?)(m)?$/.exec(q);
    if (m === null) return undefined;
    v = m[2] === 'm' ? Number(m[1]) : Number(m[1]) * 1000;
  }
  // At most a million cores: beyond that the CFS quota overflows what the kernel takes.
  return Number.isFinite(v) && v >= 1 && v <= MAX_CPU_MILLIS ? Math.round(v) : undefined;
}

const MAX_CPU_MILLIS = 1e9;

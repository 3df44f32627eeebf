/**
 * `berth describe pod NAME`: the view a user reaches for when a pod is pending or crashing —
 * where it is declared, why it is not Ready, what each container runs (the image Entrypoint
 * and Cmd as the manifest's command/args override them), how it last ended and what
 * happened recently. The service builds the data (JSON over the socket), the CLI renders it.
 */
import { tableLines } from '../lib/table.js';
import { humanAge } from '../lib/time.js';
import type { EventRecord, ObservedPod, RestartRecord } from '../runtime/index.js';
import type { DesiredContainer } from './desired.js';
import { lastAppliedPod } from './plan.js';
import { podPhase, type ContainerStatus, type PodPhaseName, type PodStatus } from './status.js';

/** What the image says a container runs, and what runs once the manifest overrides it. */
export interface ImageProcess {
  /** Manifest digest of the image the container runs (or would run); null: not pulled. */
  digest: string | null;
  /** The image's Entrypoint and Cmd; null when the image is not here. */
  entrypoint: string[] | null;
  cmd: string[] | null;
  /** Entrypoint + Cmd as command/args override them; null while that depends on an image not here. */
  effective: string[] | null;
}

export interface TerminatedState {
  exitCode: number | null;
  /** Completed, Error, OOMKilled, or the signal's name. */
  reason: string | null;
  startedAt: string | null;
  finishedAt: string | null;
}

export interface ContainerDescription {
  name: string;
  id: string | null;
  image: string;
  imageDigest: string | null;
  pullPolicy: string;
  /** As the manifest sets them; null: not set. */
  command: string[] | null;
  args: string[] | null;
  imageEntrypoint: string[] | null;
  imageCmd: string[] | null;
  effectiveCommand: string[] | null;
  workingDir: string | null;
  env: { name: string; value: string }[];
  ports: DesiredContainer['ports'];
  limits: { memoryBytes: number | null; cpuMillis: number | null };
  state: 'Running' | 'Waiting' | 'Terminated' | 'Paused' | 'Terminating';
  /** ImagePullBackOff, ContainerCreating, CrashLoopBackOff, Completed, Error, OOMKilled…; null when running. */
  stateReason: string | null;
  pid: number | null;
  startedAt: string | null;
  /** Set when the state is Terminated. */
  terminated: TerminatedState | null;
  /** The attempt before the current one (a restart), as `Last State` in kubectl. */
  lastState: TerminatedState | null;
  restarts: number;
  nextRestartAt: string | null;
}

export interface PodDescription {
  key: string;
  namespace: string;
  name: string;
  kind: string;
  source: string;
  line: number | null;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  createdAt: string;
  generation: number;
  /** Kubernetes' pod phase: Pending, Running, Succeeded, Failed, Unknown. */
  phase: PodPhaseName;
  /** berth's one-word status (`berth status`): ImagePullBackOff, CrashLoopBackOff… */
  status: string;
  /** While berth deletes the pod: when its grace period ends (Kubernetes' deletionTimestamp); else null. */
  deletionTimestamp: string | null;
  /** Why the pod is not Ready (status's LAST ERROR); empty when it is. */
  message: string;
  ready: string;
  restarts: number;
  nextTryAt: string | null;
  paused: boolean;
  restartPolicy: string | null;
  hostNetwork: boolean | null;
  terminationGracePeriodSeconds: number | null;
  mounts: { path: string; from: string; readOnly: boolean }[];
  conditions: PodStatus['conditions'];
  /** spec.initContainers, in order (empty when the pod has none). */
  initContainers: ContainerDescription[];
  containers: ContainerDescription[];
  events: EventRecord[];
}

export interface DescribeInput {
  pod: ObservedPod;
  /** buildStatus's row for this pod. */
  status: PodStatus;
  restarts: readonly RestartRecord[];
  /** Per container name. */
  images: Readonly<Record<string, ImageProcess>>;
  events: readonly EventRecord[];
}

const iso = (ms: number | null | undefined): string | null => (ms === null || ms === undefined ? null : new Date(ms).toISOString());

function describeContainer(
  o: DescribeInput,
  cs: ContainerStatus,
  spec: DesiredContainer | undefined,
  kind: { init: boolean; initializing: boolean },
): ContainerDescription {
  const s = o.status;
  const row = o.pod.containers.filter((c) => c.name === cs.name).pop();
  const r = o.restarts.find((x) => x.name === cs.name);
  const img = o.images[cs.name] ?? { digest: null, entrypoint: null, cmd: null, effective: null };
  const previous: TerminatedState | null =
    r !== undefined && r.lastId !== null && (r.lastId !== row?.id || cs.nextRestartAt !== null)
      ? { exitCode: r.lastExitCode, reason: r.lastReason, startedAt: iso(r.lastStartedAt), finishedAt: iso(r.lastFinishedAt) }
      : null;
  let state: ContainerDescription['state'];
  let reason: string | null = null;
  let terminated: TerminatedState | null = null;
  if (cs.state === 'running') state = 'Running';
  else if (cs.state === 'paused') state = 'Paused';
  else if (cs.state === 'removing') state = 'Terminating';
  else if (cs.state === 'exited' && cs.nextRestartAt !== null) {
    // As kubectl: waiting out the back-off, the exit is the last state.
    state = 'Waiting';
    reason = 'CrashLoopBackOff';
  } else if (cs.state === 'exited') {
    state = 'Terminated';
    reason = cs.reason;
    terminated = { exitCode: cs.exitCode, reason: cs.reason, startedAt: cs.startedAt, finishedAt: cs.finishedAt };
  } else {
    state = 'Waiting';
    if (cs.state === 'creating' || cs.state === 'created') reason = 'ContainerCreating';
    else if (s.paused) reason = 'Paused';
    // The kubelet's waiting reason for what has not started in a pod with init containers.
    else if (kind.init) reason = img.digest === null && s.status === 'Init:ImagePullBackOff' ? 'ImagePullBackOff' : 'PodInitializing';
    else if (kind.initializing) reason = 'PodInitializing';
    else if (img.digest === null) reason = s.status === 'ImagePullBackOff' || s.status === 'Pending' ? s.status : 'ContainerCreating';
    else reason = s.status === 'Running' ? 'ContainerCreating' : s.status;
  }
  return {
    name: cs.name,
    id: cs.id,
    image: spec?.image ?? row?.imageRef ?? '',
    imageDigest: row?.imageDigest ?? img.digest,
    pullPolicy: spec?.pullPolicy ?? '',
    command: spec?.command ?? null,
    args: spec?.args ?? null,
    imageEntrypoint: img.entrypoint,
    imageCmd: img.cmd,
    effectiveCommand: img.effective,
    workingDir: spec?.workingDir ?? null,
    env: (spec?.env ?? []).filter((e) => e.overridden !== true).map((e) => ({ name: e.name, value: e.secret === true ? '<set from a Secret>' : e.from !== undefined ? `<${e.from}>` : e.value })),
    ports: spec?.ports ?? [],
    limits: { memoryBytes: spec?.memoryBytes ?? null, cpuMillis: spec?.cpuMillis ?? null },
    state,
    stateReason: reason,
    pid: cs.pid,
    startedAt: cs.state === 'running' || cs.state === 'paused' ? cs.startedAt : null,
    terminated,
    lastState: previous,
    restarts: cs.restarts,
    nextRestartAt: cs.nextRestartAt,
  };
}

export function buildDescription(o: DescribeInput): PodDescription {
  const desired = lastAppliedPod(o.pod.spec);
  const s = o.status;
  const initializing = s.status.startsWith('Init:');
  const initContainers = s.initContainers.map((cs) => describeContainer(o, cs, desired?.initContainers?.find((c) => c.name === cs.name), { init: true, initializing }));
  const containers = s.containers.map((cs) => describeContainer(o, cs, desired?.containers.find((c) => c.name === cs.name), { init: false, initializing }));
  const hostNetwork = desired?.hostNetwork ?? null;
  return {
    key: s.key,
    namespace: s.namespace,
    name: s.name,
    kind: s.kind,
    source: s.source,
    line: desired?.line ?? null,
    labels: desired?.labels ?? {},
    annotations: desired?.annotations ?? {},
    createdAt: s.createdAt,
    generation: s.generation,
    phase: podPhase(s, desired?.restartPolicy ?? null),
    status: s.status,
    deletionTimestamp: s.deletionTimestamp,
    message: s.lastError,
    ready: s.ready,
    restarts: s.restarts,
    nextTryAt: s.nextTryAt,
    paused: s.paused,
    restartPolicy: desired?.restartPolicy ?? null,
    hostNetwork,
    terminationGracePeriodSeconds: desired !== undefined ? desired.gracePeriodMs / 1000 : null,
    // With the host network a container gets the host's name files (tasks/spec), read-only.
    mounts: hostNetwork === true ? ['/etc/hosts', '/etc/resolv.conf'].map((p) => ({ path: p, from: `host ${p}`, readOnly: true })) : [],
    conditions: s.conditions,
    initContainers,
    containers,
    events: [...o.events],
  };
}

// rendering ------------------------------------------------------------------------------

/** An argv as a shell would read it back: bare words where safe, JSON strings otherwise. */
function argv(a: readonly string[]): string {
  return a.map((x) => (/^[\w./:=@%+,-]+$/.test(x) ? x : JSON.stringify(x))).join(' ');
}

function ago(at: string | null, now: number): string {
  return at === null ? '' : `${at} (${humanAge(now - Date.parse(at))} ago)`;
}

/** Where the effective command comes from, in Kubernetes' terms. */
function commandOrigin(c: ContainerDescription): string {
  const ep = c.imageEntrypoint === null ? 'image Entrypoint <not pulled yet>' : `image Entrypoint ${JSON.stringify(c.imageEntrypoint)}`;
  const cmd = c.imageCmd === null ? 'image Cmd <not pulled yet>' : `image Cmd ${JSON.stringify(c.imageCmd)}`;
  if (c.command !== null && c.args !== null) return 'manifest command + args; image Entrypoint and Cmd replaced';
  if (c.command !== null) return 'manifest command; image Entrypoint and Cmd replaced';
  if (c.args !== null) return `${ep} + manifest args; image Cmd replaced`;
  return `${ep} + ${cmd}`;
}

function memory(bytes: number): string {
  for (const [unit, n] of [['Gi', 2 ** 30], ['Mi', 2 ** 20], ['Ki', 2 ** 10]] as const) if (bytes % n === 0) return `${bytes / n}${unit}`;
  return String(bytes);
}

function terminatedLines(t: TerminatedState, pad: string, now: number): string[] {
  const line = (k: string, v: string): string => `${pad}${`${k}:`.padEnd(14)}${v}`;
  return [
    line('Reason', t.reason ?? '-'),
    line('Exit Code', String(t.exitCode ?? '-')),
    ...(t.startedAt !== null ? [line('Started', ago(t.startedAt, now))] : []),
    ...(t.finishedAt !== null ? [line('Finished', ago(t.finishedAt, now))] : []),
  ];
}

function table(rows: string[][], indent: string): string[] {
  return tableLines(rows, 2, indent);
}

/** kubectl-describe-like text: `Key:  value` lines, containers, conditions and events. */
export function renderDescription(d: PodDescription, now: number): string {
  const out: string[] = [];
  // Labels up to "Restart Policy:" (15), then at least one space, as kubectl aligns them.
  const kv = (k: string, v: string, indent = ''): void => {
    out.push(`${indent}${(k === '' ? '' : `${k}:`).padEnd(16)}${v}`.trimEnd());
  };
  const map = (k: string, m: Record<string, string>): void => {
    const entries = Object.entries(m);
    if (entries.length === 0) kv(k, '<none>');
    entries.forEach(([a, b], i) => kv(i === 0 ? k : '', `${a}=${b}`));
  };
  kv('Name', d.name);
  kv('Namespace', d.namespace);
  kv('Kind', d.kind);
  kv('Source', d.line !== null ? `${d.source}:${d.line}` : d.source);
  map('Labels', d.labels);
  map('Annotations', d.annotations);
  kv('Created', ago(d.createdAt, now));
  kv('Generation', String(d.generation));
  // As kubectl describe: a pod being deleted (and not already ended) says so, with the time left.
  if (d.status === 'Terminating' && d.deletionTimestamp !== null) kv('Status', `Terminating (lasts ${humanAge(Math.max(0, Date.parse(d.deletionTimestamp) - now))})`);
  else kv('Status', d.phase);
  if (d.status !== d.phase && d.status !== 'Terminating') kv('Reason', d.status);
  if (d.message !== '') kv('Message', d.message);
  if (d.nextTryAt !== null) kv('Next Try', `${d.nextTryAt} (in ${humanAge(Date.parse(d.nextTryAt) - now)})`);
  kv('Ready', d.ready);
  kv('Restarts', String(d.restarts));
  if (d.restartPolicy !== null) kv('Restart Policy', d.restartPolicy);
  if (d.terminationGracePeriodSeconds !== null) kv('Grace Period', `${d.terminationGracePeriodSeconds}s`);
  if (d.hostNetwork !== null) kv('IP', d.hostNetwork ? "the host's (hostNetwork: true)" : '<none>');
  const container = (c: ContainerDescription): void => {
    const p = '    ';
    out.push(`  ${c.name}:`);
    kv('Container ID', c.id ?? '<none>', p);
    kv('Image', c.image, p);
    kv('Image Digest', c.imageDigest ?? '<not pulled>', p);
    kv('Pull Policy', c.pullPolicy, p);
    const unknown = c.imageEntrypoint === null ? '<image Entrypoint: not pulled yet>' : '';
    kv('Command', c.effectiveCommand !== null ? argv(c.effectiveCommand) : [unknown, ...(c.args !== null ? [argv(c.args)] : [])].join(' '), p);
    kv('', `(${commandOrigin(c)})`, p);
    if (c.workingDir !== null) kv('Working Dir', c.workingDir, p);
    kv('State', c.state, p);
    if (c.stateReason !== null && c.terminated === null) kv('  Reason', c.stateReason, p);
    if (c.startedAt !== null) kv('  Started', ago(c.startedAt, now), p);
    if (c.terminated !== null) out.push(...terminatedLines(c.terminated, `${p}  `, now));
    if (c.lastState !== null) {
      kv('Last State', 'Terminated', p);
      out.push(...terminatedLines(c.lastState, `${p}  `, now));
    }
    if (c.pid !== null) kv('PID', String(c.pid), p);
    kv('Restarts', String(c.restarts), p);
    if (c.nextRestartAt !== null) kv('Next Restart', `${c.nextRestartAt} (in ${humanAge(Date.parse(c.nextRestartAt) - now)})`, p);
    const ports = c.ports.map((x) => `${x.containerPort}/${x.protocol}${x.hostPort !== undefined ? ` (host ${x.hostIP !== undefined ? `${x.hostIP}:` : ''}${x.hostPort})` : ''}`);
    kv('Ports', ports.length > 0 ? ports.join(', ') : '<none>', p);
    const limits = [...(c.limits.memoryBytes !== null ? [`memory ${memory(c.limits.memoryBytes)}`] : []), ...(c.limits.cpuMillis !== null ? [`cpu ${c.limits.cpuMillis}m`] : [])];
    if (limits.length > 0) kv('Limits', limits.join(', '), p);
    if (c.env.length === 0) kv('Environment', '<none>', p);
    c.env.forEach((e, i) => kv(i === 0 ? 'Environment' : '', `${e.name}=${e.value}`, p));
    if (d.mounts.length === 0) kv('Mounts', '<none>', p);
    d.mounts.forEach((m, i) => kv(i === 0 ? 'Mounts' : '', `${m.path} from ${m.from}${m.readOnly ? ' (ro)' : ''}`, p));
  };
  if (d.initContainers.length > 0) {
    out.push('Init Containers:');
    d.initContainers.forEach(container);
  }
  out.push('Containers:');
  d.containers.forEach(container);
  out.push('Conditions:');
  if (d.conditions.length === 0) out.push('  <none: not reconciled yet>');
  else {
    out.push(
      ...table(
        [['TYPE', 'STATUS', 'REASON', 'AGE', 'MESSAGE'], ...d.conditions.map((c) => [c.type, c.status, c.reason, humanAge(now - Date.parse(c.lastTransitionTime)), c.message])],
        '  ',
      ),
    );
  }
  out.push('Events:');
  if (d.events.length === 0) out.push('  <none>');
  else out.push(...table([['AGE', 'TYPE', 'REASON', 'FROM', 'MESSAGE'], ...d.events.map((e) => [humanAge(now - e.ts), e.type, e.reason, e.key, e.message])], '  '));
  return `${out.join('\n')}\n`;
}

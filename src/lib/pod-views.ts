import { BerthError, errorLine } from './errors.js';
import { tableLines } from './table.js';
import { humanAge } from './time.js';

/**
 * What `ps` and `status` print, as text: one implementation for the commander path (in-process
 * or through the daemon) and the read fast path (lib/fast-read), so their output cannot differ.
 * Kept free of commander, the YAML library and the runtime: the fast path loads only this.
 */

/*
 * The fields printed, as lib sees them (dependencies point down: these are what the daemon's
 * PodListing, PodQuery and reconciler/status's StatusReport carry; the compiler checks that
 * those still fit where cli.ts passes them).
 */

/** `ps`/`status` NAME... or -l: daemon/service's PodQuery. */
export interface PodQuery {
  keys?: string[];
  selector?: string;
}

export interface PsPod {
  key: string;
  source: string;
  createdAt: number;
  restarts: Record<string, number>;
  containers: {
    id: string;
    name: string;
    state: string;
    pid: number | null;
    attempt: number;
    exitCode: number | null;
    reason: string | null;
    imageRef: string;
    imageDigest: string;
    createdAt: number;
    live: boolean;
  }[];
}

export interface StatusView {
  daemon: unknown;
  pods: {
    key: string;
    source: string;
    line?: number;
    ready: string;
    status: string;
    restarts: number;
    createdAt: string;
    nextTryAt: string | null;
    lastError: string;
    containers: { name: string; state: string; exitCode: number | null }[];
  }[];
}

/** The formats rendered here; `yaml` is the caller's (it needs the YAML library). */
export type TextOutput = 'table' | 'wide' | 'json';

/**
 * How a table names a pod: `namespace/name` in one POD column, or with -A (kubectl get -A) a
 * NAMESPACE column and the name under POD.
 */
function podColumns(allNamespaces: boolean | undefined): { head: string[]; cells: (key: string) => string[] } {
  if (allNamespaces !== true) return { head: ['POD'], cells: (key) => [key] };
  return {
    head: ['NAMESPACE', 'POD'],
    cells: (key) => {
      const slash = key.indexOf('/');
      return [key.slice(0, slash), key.slice(slash + 1)];
    },
  };
}

export interface ReadOutput {
  stdout: string;
  stderr: string;
  /** Set when the command fails (a named pod that does not exist): exit 1. */
  exitCode?: number;
}

export function table(rows: readonly (readonly string[])[]): string {
  return `${tableLines(rows, 3).join('\n')}\n`;
}

/**
 * `ps`/`status` NAME... and -l as a service query. Names and a selector exclude each other, as in
 * kubectl. The selector's syntax is checked by the caller or by the service.
 */
export function podQuery(what: string, names: readonly string[], o: { namespace: string; selector?: string; namespaceGiven?: boolean; allNamespaces?: boolean }): PodQuery {
  if (names.length > 0 && o.selector !== undefined) throw new BerthError('ERR_INVALID_ARGUMENT', `${what}: give pod names or -l SELECTOR, not both`);
  // kubectl get -A NAME: "a resource cannot be retrieved by name across all namespaces".
  if (names.length > 0 && o.allNamespaces === true) throw new BerthError('ERR_INVALID_ARGUMENT', `${what}: a pod cannot be named across all namespaces (-A); give NAMESPACE/NAME or -n NAMESPACE`);
  return {
    ...(names.length > 0 ? { keys: names.map((n) => (n.includes('/') ? n : `${o.namespace}/${n}`)) } : {}),
    ...(o.selector !== undefined ? { selector: o.selector } : {}),
    // An explicit -n without names lists that namespace only, as kubectl get -n does; without -n
    // every namespace is listed (berth's default: one machine's pods, kubectl get -A)
    // (regression namespace-flag-ignored-by-listings).
    // -A lists every namespace whatever -n says, as kubectl.
    ...(names.length === 0 && o.namespaceGiven === true && o.allNamespaces !== true ? { namespace: o.namespace } : {}),
  };
}

/**
 * Named pods the answer lacks: an error line each and exit 1; the pods found are still printed
 * (kubectl get). `none`: names were given and none was found, so nothing more is printed.
 */
function missing(what: string, query: PodQuery, found: readonly string[]): { stderr: string; failed: boolean; none: boolean } {
  let stderr = '';
  for (const k of query.keys ?? []) if (!found.includes(k)) stderr += errorLine('ERR_NOT_FOUND', `${what} ${k}: no such pod`);
  return { stderr, failed: stderr !== '', none: (query.keys ?? []).length > 0 && found.length === 0 };
}

/** `ps -o json|yaml`: the listing without the live-process details, with restarts per container. */
export function psData(pods: readonly PsPod[]): unknown {
  return pods.map((p) => ({ key: p.key, source: p.source, containers: p.containers.map(({ live: _l, ...c }) => ({ ...c, restarts: p.restarts[c.name] ?? 0 })) }));
}

/** `ps` in one of the text formats, given the query it answered. */
export function psOutput(pods: readonly PsPod[], query: PodQuery, o: { output: TextOutput | 'yaml'; now: number; allNamespaces?: boolean }): ReadOutput & { data?: unknown } {
  const m = missing('ps', query, pods.map((p) => p.key));
  const base = { stderr: m.stderr, ...(m.failed ? { exitCode: 1 } : {}) };
  if (m.none) return { ...base, stdout: '' };
  if (o.output === 'yaml') return { ...base, stdout: '', data: psData(pods) };
  if (o.output === 'json') return { ...base, stdout: `${JSON.stringify(psData(pods), null, 2)}\n` };
  const wide = o.output === 'wide';
  const now = o.now;
  const pod = podColumns(o.allNamespaces);
  const rows = [[...pod.head, 'CONTAINER', 'STATE', 'PID', 'ATTEMPT', ...(wide ? ['RESTARTS', 'LAST EXIT'] : []), 'IMAGE', 'DIGEST', 'AGE', ...(wide ? ['CONTAINER ID'] : [])]];
  for (const p of pods) {
    for (const c of p.containers) {
      const state = c.state === 'exited' ? `exited(${c.exitCode ?? '?'})` : c.state;
      const exit = c.exitCode !== null ? `${c.exitCode}${c.reason !== null ? ` (${c.reason})` : ''}` : '-';
      const extra = wide ? [String(p.restarts[c.name] ?? 0), exit] : [];
      rows.push([...pod.cells(p.key), c.name, state, c.state === 'running' || c.state === 'paused' ? String(c.pid ?? '-') : '-', String(c.attempt), ...extra, c.imageRef, c.imageDigest.slice(7, 19), humanAge(now - c.createdAt), ...(wide ? [c.id] : [])]);
    }
    if (p.containers.length === 0) rows.push([...pod.cells(p.key), '-', 'pending', '-', '-', ...(wide ? ['-', '-'] : []), '-', '-', humanAge(now - p.createdAt), ...(wide ? ['-'] : [])]);
  }
  return { ...base, stdout: table(rows) };
}

/** `status` in one of the text formats, given the query it answered. */
export function statusOutput(report: StatusView, query: PodQuery, o: { output: TextOutput | 'yaml'; now: number; allNamespaces?: boolean }): ReadOutput & { data?: unknown } {
  const m = missing('status', query, report.pods.map((p) => p.key));
  const base = { ...(m.failed ? { exitCode: 1 } : {}) };
  if (m.none) return { ...base, stdout: '', stderr: m.stderr };
  if (o.output === 'yaml') return { ...base, stdout: '', stderr: m.stderr, data: report };
  if (o.output === 'json') return { ...base, stdout: `${JSON.stringify(report, null, 2)}\n`, stderr: m.stderr };
  const now = o.now;
  const wide = o.output === 'wide';
  const pod = podColumns(o.allNamespaces);
  const rows = [[...pod.head, 'READY', 'STATUS', 'RESTARTS', 'AGE', ...(wide ? ['CONTAINERS', 'SOURCE', 'NEXT TRY'] : []), 'LAST ERROR']];
  for (const p of report.pods) {
    const next = p.nextTryAt !== null ? `in ${humanAge(Date.parse(p.nextTryAt) - now)}` : '';
    const extra = wide
      ? [
          p.containers.map((c) => `${c.name}:${c.state === 'exited' ? `exited(${c.exitCode ?? '?'})` : c.state}`).join(',') || '-',
          p.line !== undefined ? `${p.source}:${p.line}` : p.source,
          next || '-',
        ]
      : [];
    rows.push([...pod.cells(p.key), p.ready, wide || next === '' ? p.status : `${p.status} (next try ${next})`, String(p.restarts), humanAge(now - Date.parse(p.createdAt)), ...extra, p.lastError.split('\n')[0] ?? '']);
  }
  const note = report.daemon === null ? 'note: no berth up runs on this state; exits are noticed at the next apply or up\n' : '';
  return { ...base, stdout: table(rows), stderr: m.stderr + note };
}

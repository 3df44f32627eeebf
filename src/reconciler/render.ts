import { containerArgv } from '../lib/argv.js';
import { splitCoded } from '../lib/errors.js';
import type { FieldChange, Plan, Step } from './plan.js';

/** One line per step, the way `berth diff` and `apply --dry-run` print them. */
export function renderStep(s: Step): string {
  switch (s.kind) {
    case 'pull':
      return `~ image ${s.image}: pull (${s.reason})`;
    case 'create-pod':
      return `+ pod ${s.pod.key} (${s.pod.source}:${s.pod.line})`;
    case 'update-pod':
      return `~ pod ${s.pod.key}: update${s.changes.length > 0 ? ` (${s.changes.join(', ')})` : ''}`;
    case 'start':
      // The process that will run, image Entrypoint/Cmd included (a container that sets only
      // `args` runs them behind the image's entrypoint); as written while the image is not here.
      return `+ container ${s.pod.key}/${s.container.name}: start ${s.container.image}${s.image !== undefined ? renderCommand(startArgv(s), undefined) : renderCommand(s.container.command, s.container.args)}`;
    case 'replace':
      return `~ container ${s.pod.key}/${s.container.name}: replace ${s.oldId} (${s.reason}${s.changes.length > 0 ? `: ${s.changes.join(', ')}` : ''})`;
    case 'remove':
      return `- container ${s.podKey}/${s.name}: remove ${s.id} (${s.reason})`;
    case 'kill':
      return `~ container ${s.podKey}/${s.name}: kill ${s.id} (${s.reason})`;
    case 'delete-pod':
      return `- pod ${s.podKey}: delete (${s.reason})`;
    case 'sandbox':
      return s.replace ? `~ sandbox ${s.pod.key}: recreate (${s.reason})` : `+ sandbox ${s.pod.key}: create${s.pod.sandbox !== undefined && s.pod.sandbox.ports.length > 0 ? ` (hostPort ${s.pod.sandbox.ports.map((p) => `${p.hostIP !== undefined ? `${p.hostIP}:` : ''}${p.hostPort}→${p.containerPort}/${p.protocol}`).join(', ')})` : ''}`;
    case 'remove-sandbox':
      return `- sandbox ${s.podKey}: remove (${s.reason})`;
  }
}

/** What a start step will run when its image is here (the image Entrypoint/Cmd as command/args override them). */
function startArgv(s: Extract<Step, { kind: 'start' }>): string[] | undefined {
  return s.image === undefined ? undefined : containerArgv(s.image, s.container.command, s.container.args);
}

function renderCommand(command: string[] | undefined, args: string[] | undefined): string {
  const argv = [...(command ?? []), ...(args ?? [])];
  return argv.length === 0 ? '' : ` -- ${argv.map((a) => (/^[\w./:=-]+$/.test(a) ? a : JSON.stringify(a))).join(' ')}`;
}

/** What a masked value prints as, in text and JSON alike. */
const MASK = '***';

/** A value as `diff` prints it: compact JSON, `<unset>` for a field that is not set. */
function renderValue(v: unknown, masked: boolean, side: 'before' | 'after'): string {
  if (v === undefined) return '<unset>';
  return masked ? `${MASK} (${side})` : JSON.stringify(v);
}

/**
 * The old → new lines under a step, like `kubectl diff` shows values:
 * `    command: ["sh","-c","a"] → ["sh","-c","b"]`; a masked field never shows its values.
 */
export function renderDetails(details: readonly FieldChange[]): string[] {
  return details.map((d) => {
    const masked = d.masked === true;
    return `    ${d.field}${d.key !== undefined ? `.${d.key}` : ''}: ${renderValue(d.old, masked, 'before')} → ${renderValue(d.new, masked, 'after')}`;
  });
}

function detailsToJson(details: readonly FieldChange[]): FieldChange[] {
  return details.map((d) =>
    d.masked === true ? { ...d, ...('old' in d ? { old: MASK } : {}), ...('new' in d ? { new: MASK } : {}) } : d,
  );
}

/** The plan as `diff` and `apply --dry-run` print it: one line per step, changed values under it. */
export function renderPlan(p: Plan): string {
  const lines: string[] = [];
  for (const s of p.steps) {
    lines.push(renderStep(s));
    if (s.kind === 'replace' || s.kind === 'update-pod') lines.push(...renderDetails(s.details));
  }
  for (const b of p.blocked) lines.push(`! ${b.key}: ${b.reason}`);
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}

/** JSON form for `diff -o json`: stable keys, no functions. */
export function planToJson(p: Plan): unknown {
  return {
    steps: p.steps.map((s) => {
      switch (s.kind) {
        case 'pull':
          return { kind: s.kind, image: s.image, reason: s.reason };
        case 'create-pod':
          return { kind: s.kind, pod: s.pod.key, source: s.pod.source };
        case 'update-pod':
          return { kind: s.kind, pod: s.pod.key, changes: s.changes, details: detailsToJson(s.details) };
        case 'start':
          return { kind: s.kind, pod: s.pod.key, container: s.container.name, image: s.container.image, ...(s.image !== undefined ? { argv: startArgv(s) } : {}) };
        case 'replace':
          return { kind: s.kind, pod: s.pod.key, container: s.container.name, oldId: s.oldId, reason: s.reason, changes: s.changes, details: detailsToJson(s.details) };
        case 'remove':
        case 'kill':
          return { kind: s.kind, pod: s.podKey, container: s.name, id: s.id, reason: s.reason };
        case 'delete-pod':
          return { kind: s.kind, pod: s.podKey, reason: s.reason };
        case 'sandbox':
          return { kind: s.kind, pod: s.pod.key, reason: s.reason, replace: s.replace };
        case 'remove-sandbox':
          return { kind: s.kind, pod: s.podKey, reason: s.reason };
      }
    }),
    // Each blocked entry carries its code, as its `error ERR_…:` line does (issue 15).
    blocked: p.blocked.map((b) => {
      const c = splitCoded(b.reason, 'ERR_PRECONDITION');
      return { key: b.key, reason: b.reason, code: c.code };
    }),
  };
}

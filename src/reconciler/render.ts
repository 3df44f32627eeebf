import type { Plan, Step } from './plan.js';

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
      return `+ container ${s.pod.key}/${s.container.name}: start ${s.container.image}${renderCommand(s.container.command, s.container.args)}`;
    case 'replace':
      return `~ container ${s.pod.key}/${s.container.name}: replace ${s.oldId} (${s.reason}${s.changes.length > 0 ? `: ${s.changes.join(', ')}` : ''})`;
    case 'remove':
      return `- container ${s.podKey}/${s.name}: remove ${s.id} (${s.reason})`;
    case 'delete-pod':
      return `- pod ${s.podKey}: delete (${s.reason})`;
  }
}

function renderCommand(command: string[] | undefined, args: string[] | undefined): string {
  const argv = [...(command ?? []), ...(args ?? [])];
  return argv.length === 0 ? '' : ` -- ${argv.map((a) => (/^[\w./:=-]+$/.test(a) ? a : JSON.stringify(a))).join(' ')}`;
}

export function renderPlan(p: Plan): string {
  const lines = p.steps.map(renderStep);
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
          return { kind: s.kind, pod: s.pod.key, changes: s.changes };
        case 'start':
          return { kind: s.kind, pod: s.pod.key, container: s.container.name, image: s.container.image };
        case 'replace':
          return { kind: s.kind, pod: s.pod.key, container: s.container.name, oldId: s.oldId, reason: s.reason, changes: s.changes };
        case 'remove':
          return { kind: s.kind, pod: s.podKey, container: s.name, id: s.id, reason: s.reason };
        case 'delete-pod':
          return { kind: s.kind, pod: s.podKey, reason: s.reason };
      }
    }),
    blocked: p.blocked,
  };
}

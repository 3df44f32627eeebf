import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { REPO } from '../helpers/berth.js';

/**
 * DESIGN.md §2: imports point down only:
 *   cli → daemon → reconciler → runtime/index → runtime/* → lib
 * The reconciler sees the runtime only through runtime/index.ts; pure planner files use
 * `import type` only; no import cycles.
 */

const SRC = path.join(REPO, 'src');
const PURE = new Set(['reconciler/plan.ts', 'reconciler/desired.ts', 'reconciler/conditions.ts']);

function walk(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) out.push(...walk(full));
    else if (name.endsWith('.ts')) out.push(full);
  }
  return out;
}

function layer(rel: string): { rank: number; group: string } {
  if (rel === 'cli.ts') return { rank: 5, group: 'cli' };
  if (rel.startsWith('daemon/')) return { rank: 4, group: 'daemon' };
  if (rel.startsWith('reconciler/')) return { rank: 3, group: 'reconciler' };
  if (rel === 'runtime/index.ts') return { rank: 2, group: 'runtime/index' };
  if (rel.startsWith('runtime/')) return { rank: 1, group: `runtime/${rel.split('/')[1] ?? ''}` };
  if (rel.startsWith('lib/')) return { rank: 0, group: 'lib' };
  throw new Error(`src/${rel} is outside the layout of DESIGN.md §2`);
}

interface Imp {
  target: string;
  typeOnly: boolean;
}

/** Relative imports of one file, resolved to src-relative `.ts` paths. */
function imports(rel: string, text: string): Imp[] {
  const out: Imp[] = [];
  const re = /^\s*(import|export)\s+(type\s+)?[^'";]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/gm;
  for (const m of text.matchAll(re)) {
    const spec = m[3] ?? m[4];
    if (spec === undefined || !spec.startsWith('.')) continue;
    const target = path.posix.normalize(path.posix.join(path.posix.dirname(rel), spec)).replace(/\.js$/, '.ts');
    out.push({ target, typeOnly: m[2] !== undefined });
  }
  return out;
}

/** `sources`: src-relative path → file text. */
export function layeringViolations(sources: Map<string, string>): string[] {
  const problems: string[] = [];
  const graph = new Map<string, string[]>();
  for (const [rel, text] of sources) {
    const from = layer(rel);
    const edges: string[] = [];
    for (const imp of imports(rel, text)) {
      const to = layer(imp.target);
      edges.push(imp.target);
      if (PURE.has(rel) && !imp.typeOnly) problems.push(`${rel} is pure but imports ${imp.target} at runtime (use import type)`);
      if (to.rank > from.rank) problems.push(`${rel} (${from.group}) imports ${imp.target} (${to.group}): dependencies must point down`);
      if (from.group === 'reconciler' && to.rank === 1) problems.push(`${rel} imports ${imp.target}: the reconciler may only use runtime/index.ts`);
      if ((from.group === 'daemon' || from.group === 'cli') && to.rank === 1) problems.push(`${rel} imports ${imp.target}: only runtime/index.ts is the runtime's entry`);
    }
    graph.set(rel, edges);
    // A façade is a boundary only if nothing reaches through it: no runtime store or
    // service is touched from above runtime/ (`rt.state.…`, `this.rt['images']`, casts included).
    if (from.rank >= 3) {
      const reach = /\b(?:rt|runtime)\b(?:\s+as\s+[\w\s<>]+?)?\s*\)?\s*(?:\.\s*|\[\s*['"])(state|images|content|snapshots|tasks|registry|lock|cfg)\b/g;
      for (const m of text.matchAll(reach)) problems.push(`${rel} reaches through the runtime façade: ${m[0]} (add a façade method instead)`);
    }
  }
  const colour = new Map<string, 1 | 2>();
  const stack: string[] = [];
  const visit = (n: string): void => {
    colour.set(n, 1);
    stack.push(n);
    for (const m of graph.get(n) ?? []) {
      if (colour.get(m) === 1) problems.push(`import cycle: ${[...stack.slice(stack.indexOf(m)), m].join(' → ')}`);
      else if (colour.get(m) === undefined) visit(m);
    }
    stack.pop();
    colour.set(n, 2);
  };
  for (const n of graph.keys()) if (colour.get(n) === undefined) visit(n);
  return problems;
}

test('layering: src/ imports follow DESIGN.md §2 and form no cycle', () => {
  const files = walk(SRC);
  assert.ok(files.length > 10, 'found the sources');
  const sources = new Map(files.map((f) => [path.relative(SRC, f), readFileSync(f, 'utf8')]));
  assert.deepEqual(layeringViolations(sources), []);
});

test('layering: the checker catches upward imports, impure planners, runtime internals and cycles', () => {
  const problems = layeringViolations(
    new Map([
      ['lib/a.ts', "import { x } from '../reconciler/plan.js';\n"],
      ['reconciler/plan.ts', "import { y } from '../lib/a.js';\n"],
      ['reconciler/reconcile.ts', "import { Snapshotter } from '../runtime/snapshots/index.js';\n"],
      ['runtime/content/index.ts', "import { b } from '../state/index.js';\n"],
      ['runtime/state/index.ts', "import type { c } from '../content/index.js';\n"],
      ['daemon/up.ts', "const pods = o.rt.state.listPods();\nconst x = (rt as unknown as Hidden)['images'];\n"],
      ['reconciler/controller.ts', "const ok = this.rt.paths.state; const s = c.state;\n"],
    ]),
  );
  const text = problems.join('\n');
  assert.match(text, /lib\/a\.ts .*must point down/);
  assert.match(text, /reconciler\/plan\.ts is pure/);
  assert.match(text, /reconciler may only use runtime\/index\.ts/);
  assert.match(text, /import cycle: .*runtime\/content\/index\.ts/);
  assert.match(text, /daemon\/up\.ts reaches through the runtime façade: rt\.state/);
  assert.match(text, /daemon\/up\.ts reaches through the runtime façade: rt as unknown as Hidden\)\['images/);
  assert.doesNotMatch(text, /controller\.ts reaches through/);
});

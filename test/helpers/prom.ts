/**
 * A small parser and checker of the Prometheus text exposition format 0.0.4, for tests of
 * `GET /metrics`: `# HELP name text`, `# TYPE name type`, samples `name{label="value",…}
 * value [timestamp]`. It throws on the first problem, naming the line:
 * - a malformed line, metric or label name, label value escape or sample value;
 * - a sample whose metric has no `# TYPE` before it, a TYPE or HELP given twice, a family
 *   whose lines are not together, the same series twice;
 * - histogram: per label set the buckets in increasing `le`, cumulative counts, a `+Inf`
 *   bucket equal to `_count`, and a `_sum`.
 */

export type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';

export interface Sample {
  /** The sample's own name (`x_bucket`, `x_sum` for a histogram `x`). */
  name: string;
  labels: Record<string, string>;
  value: number;
  line: number;
}

export interface Family {
  name: string;
  type: MetricType;
  help: string | undefined;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set<string>(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

export function parsePrometheus(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const helps = new Map<string, string>();
  const closed = new Set<string>();
  const seen = new Set<string>();
  let current: string | undefined;
  const fail = (line: number, msg: string): never => {
    throw new Error(`metrics line ${line}: ${msg}`);
  };
  const enter = (family: string, line: number): void => {
    if (current === family) return;
    if (closed.has(family)) fail(line, `lines of ${family} are not together`);
    if (current !== undefined) closed.add(current);
    current = family;
  };
  if (text !== '' && !text.endsWith('\n')) fail(text.split('\n').length, 'the text must end with a newline');
  text.split('\n').forEach((raw, i) => {
    const n = i + 1;
    if (raw.trim() === '') return;
    const meta = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s+(.*))?$/.exec(raw);
    if (meta !== null) {
      const [, kind, name = '', rest = ''] = meta;
      if (!METRIC_NAME.test(name)) fail(n, `bad metric name ${JSON.stringify(name)}`);
      enter(name, n);
      if (kind === 'HELP') {
        if (helps.has(name)) fail(n, `second HELP for ${name}`);
        helps.set(name, rest);
        const f = families.get(name);
        if (f !== undefined) f.help = rest;
        return;
      }
      if (families.has(name)) fail(n, `second TYPE for ${name} (or TYPE after its samples)`);
      if (!TYPES.has(rest.trim())) fail(n, `unknown type ${JSON.stringify(rest)} for ${name}`);
      families.set(name, { name, type: rest.trim() as MetricType, help: helps.get(name), samples: [] });
      return;
    }
    if (raw.startsWith('#')) return; // a comment
    const s = parseSample(raw, n, fail);
    const family = familyOf(s.name, families);
    if (family === undefined) return fail(n, `sample ${s.name} has no # TYPE before it`);
    enter(family.name, n);
    const id = `${s.name}${JSON.stringify(Object.entries(s.labels).sort())}`;
    if (seen.has(id)) fail(n, `series ${s.name}${JSON.stringify(s.labels)} given twice`);
    seen.add(id);
    family.samples.push(s);
  });
  for (const f of families.values()) if (f.type === 'histogram') checkHistogram(f, fail);
  return families;
}

/** The family a sample belongs to: its own name, or the histogram/summary it is a part of. */
function familyOf(name: string, families: Map<string, Family>): Family | undefined {
  const own = families.get(name);
  if (own !== undefined) return own;
  const m = /^(.*)_(bucket|sum|count)$/.exec(name);
  const base = m?.[1] !== undefined ? families.get(m[1]) : undefined;
  if (base === undefined) return undefined;
  if (base.type === 'histogram') return base;
  if (base.type === 'summary' && m?.[2] !== 'bucket') return base;
  return undefined;
}

function parseSample(raw: string, n: number, fail: (line: number, msg: string) => never): Sample {
  const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(?:\s+(-?\d+))?$/.exec(raw);
  if (m === null) return fail(n, `not a sample: ${JSON.stringify(raw)}`);
  const [, name = '', body, valueText = ''] = m;
  const labels: Record<string, string> = {};
  if (body !== undefined) {
    let rest = body.slice(1, -1);
    while (rest !== '') {
      const lm = /^\s*([^=\s]+)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)/.exec(rest);
      if (lm === null) return fail(n, `bad labels ${body}`);
      const [all, key = '', escaped = ''] = lm;
      if (!LABEL_NAME.test(key)) fail(n, `bad label name ${JSON.stringify(key)}`);
      if (key in labels) fail(n, `label ${key} given twice`);
      labels[key] = escaped.replace(/\\(.)/g, (_x, c: string) => {
        if (c === 'n') return '\n';
        if (c === '\\' || c === '"') return c;
        return fail(n, `bad escape \\${c} in label ${key}`);
      });
      rest = rest.slice(all.length);
    }
  }
  const value = valueText === '+Inf' ? Infinity : valueText === '-Inf' ? -Infinity : valueText === 'NaN' ? NaN : Number(valueText);
  if (Number.isNaN(value) && valueText !== 'NaN') fail(n, `bad value ${JSON.stringify(valueText)}`);
  return { name, labels, value, line: n };
}

function checkHistogram(f: Family, fail: (line: number, msg: string) => never): void {
  const groups = new Map<string, { buckets: Sample[]; count?: Sample; sum?: Sample }>();
  for (const s of f.samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    const g = groups.get(key) ?? { buckets: [] };
    groups.set(key, g);
    if (s.name === `${f.name}_bucket`) {
      if (le === undefined) fail(s.line, `${s.name} without le`);
      g.buckets.push(s);
    } else if (s.name === `${f.name}_count`) g.count = s;
    else if (s.name === `${f.name}_sum`) g.sum = s;
    else fail(s.line, `histogram ${f.name} has a sample ${s.name}`);
  }
  for (const [key, g] of groups) {
    const where = `${f.name}${key}`;
    if (g.count === undefined || g.sum === undefined) return fail(g.buckets[0]?.line ?? 0, `${where}: _count and _sum are required`);
    const inf = g.buckets.at(-1);
    if (inf === undefined || inf.labels['le'] !== '+Inf') return fail(g.count.line, `${where}: the last bucket must be le="+Inf"`);
    let prevLe = -Infinity;
    let prev = 0;
    for (const b of g.buckets) {
      const le = Number(b.labels['le'] === '+Inf' ? Infinity : b.labels['le']);
      if (Number.isNaN(le) || le <= prevLe) fail(b.line, `${where}: le ${b.labels['le'] ?? ''} not increasing`);
      if (b.value < prev) fail(b.line, `${where}: bucket le=${b.labels['le'] ?? ''} (${b.value}) below the one before (${prev}): buckets are cumulative`);
      prevLe = le;
      prev = b.value;
    }
    if (inf.value !== g.count.value) fail(g.count.line, `${where}: +Inf bucket ${inf.value} differs from _count ${g.count.value}`);
  }
}

/** The value of one series (labels must match exactly), or undefined. */
export function sampleValue(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = JSON.stringify(Object.entries(labels).sort());
  for (const f of families.values()) {
    for (const s of f.samples) if (s.name === name && JSON.stringify(Object.entries(s.labels).sort()) === want) return s.value;
  }
  return undefined;
}

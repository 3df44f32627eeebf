/**
 * Column-aligned rows as kubectl prints tables: every column but the last padded to its widest
 * cell plus `gap` spaces, trailing blanks trimmed, each line after `indent`.
 */
export function tableLines(rows: readonly (readonly string[])[], gap: number, indent = ''): string[] {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) => `${indent}${r.map((c, i) => (i === r.length - 1 ? c : c.padEnd((widths[i] ?? 0) + gap))).join('')}`.trimEnd());
}

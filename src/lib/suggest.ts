/**
 * "Did you mean …?" for names a person typed: field names, kinds, apiVersions, enum values.
 * Pure; no I/O.
 */

/**
 * Optimal string alignment distance (Levenshtein plus adjacent transpositions): `contianers`
 * is one edit from `containers`, as a person counts it, where plain Levenshtein says two.
 */
export function editDistance(a: string, b: string): number {
  if (a === b) return 0;
  if (a.length === 0) return b.length;
  if (b.length === 0) return a.length;
  // Three rolling rows: the transposition looks two rows back.
  let prev2: number[] = [];
  let prev: number[] = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row: number[] = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min((prev[j] ?? 0) + 1, (row[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, (prev2[j - 2] ?? 0) + 1);
      row.push(d);
    }
    prev2 = prev;
    prev = row;
  }
  return prev[b.length] ?? 0;
}

/** Inputs longer than this are not names anyone misspelt; comparing them would only cost time. */
const MAX_WORD = 64;

/**
 * The candidate `word` was most likely meant to be, or undefined: a case-insensitive match
 * first (`hostnetwork` → `hostNetwork`), else the nearest within two edits — one edit for
 * names of four characters or fewer, where two edits reach unrelated names.
 * Ties go to the candidate listed first.
 */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  if (word.length > MAX_WORD) return undefined;
  const lower = word.toLowerCase();
  const sameCase = candidates.find((c) => c !== word && c.toLowerCase() === lower);
  if (sameCase !== undefined) return sameCase;
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    if (c === word || c.length > MAX_WORD) continue;
    const d = editDistance(word, c);
    if ((d <= 1 || (d === 2 && c.length > 4)) && d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best;
}

/**
 * One problem in one manifest, positioned for an editor: `file:line:col: field: message`.
 * Its own small module so that printing problems (the CLI, answers from the daemon) loads
 * neither the YAML parser nor the validator.
 */
export interface ManifestProblem {
  file: string;
  line: number;
  col: number;
  field: string; // dotted path, e.g. spec.containers[0].image
  message: string;
}

export function formatProblem(p: ManifestProblem): string {
  return `${p.file}:${p.line}:${p.col}: ${p.field !== '' ? `${p.field}: ` : ''}${p.message}`;
}

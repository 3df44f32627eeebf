import { walkCommands, type CommandSpec, type OptionSpec } from './cli-model.js';

/**
 * docs/cli.md: a man-page-like reference rendered from the program's definitions
 * (lib/cli-model.ts) by scripts/gen-cli-doc.ts; a unit test fails when the file differs from
 * what this renders now. Deterministic: definition order, nothing from the environment (no
 * version, date or path).
 */

export const CLI_DOC_PATH = 'docs/cli.md';
export const CLI_DOC_COMMAND = 'node dist/scripts/gen-cli-doc.js';

const cell = (s: string): string => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

function optionTable(options: readonly OptionSpec[]): string[] {
  const rows = ['| option | description | default |', '|---|---|---|'];
  for (const o of options) {
    const what = [o.description, o.choices !== undefined ? `one of: ${o.choices.map((c) => `\`${c}\``).join(', ')}` : '', o.mandatory ? '**required**' : '']
      .filter((x) => x !== '')
      .join('; ');
    rows.push(`| \`${cell(o.flags)}\` | ${cell(what)} | ${o.default !== undefined ? `\`${cell(o.default)}\`` : ''} |`);
  }
  return rows;
}

export function renderCliDoc(root: CommandSpec): string {
  const prog = root.name;
  const out: string[] = [
    `# ${prog}(1) — command reference`,
    '',
    `<!-- Generated from the command definitions in src/cli.ts by \`${CLI_DOC_COMMAND}\`; do not edit by hand. -->`,
    '',
    '## NAME',
    '',
    `**${prog}** — ${root.description}`,
    '',
    '## SYNOPSIS',
    '',
    `\`${prog} [global options] <command> [options] [arguments]\``,
    '',
    '## GLOBAL OPTIONS',
    '',
    'Accepted before or after the command name.',
    '',
    ...optionTable(root.options),
    '',
    '## COMMANDS',
    '',
  ];
  const all = walkCommands(root);
  for (const { path, cmd } of all) out.push(`- [\`${prog} ${path.join(' ')}\`](#${anchor([prog, ...path])}) — ${cmd.description.split('\n')[0] ?? ''}`);
  out.push('');
  for (const { path, cmd } of all) {
    out.push(`### ${prog} ${path.join(' ')}`, '', cmd.description, '');
    out.push(`**Usage:** \`${prog} ${path.join(' ')} ${cmd.usage}\``.replace(/ +`$/, '`'), '');
    if (cmd.aliases.length > 0) out.push(`**Aliases:** ${cmd.aliases.map((a) => `\`${a}\``).join(', ')}`, '');
    if (cmd.commands.length > 0) {
      out.push('**Commands:**', '');
      for (const c of cmd.commands) out.push(`- [\`${c.name}\`](#${anchor([prog, ...path, c.name])}) — ${c.description.split('\n')[0] ?? ''}`);
      out.push('');
    }
    if (cmd.arguments.length > 0) {
      out.push('**Arguments:**', '');
      for (const a of cmd.arguments) {
        const name = `${a.required ? '<' : '['}${a.name}${a.variadic ? '...' : ''}${a.required ? '>' : ']'}`;
        const choices = a.choices !== undefined ? ` (one of: ${a.choices.map((c) => `\`${c}\``).join(', ')})` : '';
        out.push(`- \`${name}\` — ${a.description}${choices}${a.required ? '' : ' (optional)'}`);
      }
      out.push('');
    }
    out.push('**Options:**', '', ...optionTable(cmd.options), '');
  }
  out.push(
    '## EXIT STATUS',
    '',
    '`0` ok · `1` runtime failure (pull, mount, runc; a pod not Ready after `apply --wait`) · `2` invalid input (manifest, flags, path).',
    `\`${prog} diff\`: \`0\` no changes · \`1\` changes pending · \`2\` error, like \`kubectl diff\`.`,
    '',
    '## SEE ALSO',
    '',
    'README.md (first pod, service, GitOps, error codes), docs/NOTES.md (design decisions).',
    '',
  );
  return out.join('\n');
}

/** The heading anchor GitHub-flavoured Markdown gives `### berth images pull`. */
function anchor(words: readonly string[]): string {
  return words.join(' ').toLowerCase().replace(/[^a-z0-9 -]/g, '').replace(/ /g, '-');
}

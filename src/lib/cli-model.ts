import type { Argument, Command, Option } from 'commander';

/**
 * The commander program as plain data: what shell completion (lib/completion.ts) and the
 * generated reference (lib/cli-doc.ts) are made from, so neither can drift from the flags
 * the CLI actually parses. Hidden options are left out; `-h, --help` is added to every
 * command as commander does. Order is definition order, so the output is deterministic.
 */

export interface OptionSpec {
  /** As written in the definition, e.g. `-f, --filename <path>`. */
  flags: string;
  short: string | undefined;
  long: string | undefined;
  /** Whether the option takes a value: `<v>` required, `[v]` optional. */
  value: 'none' | 'required' | 'optional';
  /** `path` of `<path>`. */
  valueName: string | undefined;
  choices: readonly string[] | undefined;
  /** The default as the help shows it, or undefined. */
  default: string | undefined;
  description: string;
  mandatory: boolean;
}

export interface ArgumentSpec {
  name: string;
  required: boolean;
  variadic: boolean;
  choices: readonly string[] | undefined;
  description: string;
}

export interface CommandSpec {
  name: string;
  aliases: readonly string[];
  description: string;
  /** commander's usage line after the name, e.g. `[options] <dir...>`. */
  usage: string;
  arguments: readonly ArgumentSpec[];
  options: readonly OptionSpec[];
  commands: readonly CommandSpec[];
}

const HELP: OptionSpec = {
  flags: '-h, --help',
  short: '-h',
  long: '--help',
  value: 'none',
  valueName: undefined,
  choices: undefined,
  default: undefined,
  description: 'display help for command',
  mandatory: false,
};

function optionSpec(o: Option): OptionSpec {
  const valueName = /[<[]([^>\]]+)[>\]]/.exec(o.flags)?.[1];
  const def = o.defaultValueDescription ?? (o.defaultValue === undefined ? undefined : typeof o.defaultValue === 'string' ? JSON.stringify(o.defaultValue) : String(o.defaultValue));
  return {
    flags: o.flags,
    short: o.short,
    long: o.long,
    value: o.required ? 'required' : o.optional ? 'optional' : 'none',
    valueName,
    choices: o.argChoices,
    default: def,
    description: o.description,
    mandatory: o.mandatory,
  };
}

function argumentSpec(a: Argument): ArgumentSpec {
  return { name: a.name(), required: a.required, variadic: a.variadic, choices: a.argChoices, description: a.description };
}

export function describeCommand(cmd: Command): CommandSpec {
  return {
    name: cmd.name(),
    aliases: cmd.aliases(),
    description: cmd.description(),
    usage: cmd.usage(),
    arguments: cmd.registeredArguments.map(argumentSpec),
    options: [...cmd.options.filter((o) => !o.hidden).map(optionSpec), HELP],
    commands: cmd.commands.map(describeCommand),
  };
}

/** Every command below `root` with its path of names (`['images', 'pull']`), depth first. */
export function walkCommands(root: CommandSpec): { path: string[]; cmd: CommandSpec }[] {
  const out: { path: string[]; cmd: CommandSpec }[] = [];
  const visit = (c: CommandSpec, p: string[]): void => {
    for (const sub of c.commands) {
      out.push({ path: [...p, sub.name], cmd: sub });
      visit(sub, [...p, sub.name]);
    }
  };
  visit(root, []);
  return out;
}

/** The flag spellings of an option (`-f`, `--filename`). */
export function flagNames(o: OptionSpec): string[] {
  return [o.short, o.long].filter((f): f is string => f !== undefined);
}

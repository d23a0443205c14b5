/**
 * The `--help` text of a command, generated from the same option table that `parseOptions`
 * reads: a usage line, a description, the positional arguments, and one
 * entry per option with its value's name, its help and its default (and each preset's).
 *
 * @module
 */

import type { OptionSpec, OptionTable } from "./options.ts";

/** What `--help` says about a command. */
export interface CommandHelp {
  /** The command line after `Usage: `, e.g. `deno task knn --pretrained_weights FILE [options]`. */
  readonly usage: string;
  /** What the command does: paragraphs separated by blank lines. */
  readonly about?: string;
  /** The positional arguments in order, each with its help. */
  readonly positionals?: Readonly<Record<string, string>>;
  /** The command's options. */
  readonly options: OptionTable;
  /** Text after the options: paragraphs separated by blank lines. */
  readonly epilogue?: string;
}

/** Width of the help text in columns. */
const WIDTH = 100;
/** Column where the description of an option starts. */
const COLUMN = 32;

/** The help text of a command. */
export function commandHelp(help: CommandHelp): string {
  const lines = [`Usage: ${help.usage}`, ""];
  if (help.about) lines.push(...paragraphs(help.about), "");
  for (const [name, text] of Object.entries(help.positionals ?? {})) {
    lines.push(...entry(`  ${name}`, text));
  }
  for (const [name, spec] of Object.entries(help.options)) {
    const value = spec.kind === "flag" ? "" : ` <${metavar(spec)}>`;
    lines.push(...entry(`  --${name}${value}`, describe(spec)));
  }
  if (help.epilogue) lines.push("", ...paragraphs(help.epilogue));
  return lines.join("\n");
}

/** The name of an option's value: its metavar, else its choices, else its kind. */
function metavar(spec: OptionSpec): string {
  if (spec.metavar) return spec.metavar;
  if ("choices" in spec && spec.choices) return spec.choices.join("|");
  return spec.kind;
}

/** `text` wrapped at {@link WIDTH}, paragraphs (separated by blank lines) kept apart. */
function paragraphs(text: string): string[] {
  return text.split(/\n\s*\n/).flatMap((paragraph, i) => [
    ...(i > 0 ? [""] : []),
    ...wrap("", paragraph, 0),
  ]);
}

function describe(spec: OptionSpec): string {
  const parts = [spec.help];
  if (spec.ignored) parts.push("Accepted for compatibility; no effect.");
  if (spec.kind !== "flag") {
    const shown = [spec.default, ...Object.values(spec.presets ?? {})].some(isShown);
    if (shown) {
      const presets = Object.entries(spec.presets ?? {}).map(([name, value]) =>
        `, ${name} ${show(value)}`
      );
      parts.push(`(default ${show(spec.default)}${presets.join("")})`);
    }
  }
  return parts.join(" ");
}

function isShown(value: unknown): boolean {
  return value !== undefined && value !== null;
}

function show(value: unknown): string {
  if (!isShown(value)) return "none";
  return Array.isArray(value) ? value.join(" ") : String(value);
}

/** `head` followed by `text` wrapped at {@link WIDTH} from {@link COLUMN}. */
function entry(head: string, text: string): string[] {
  if (head.length < COLUMN) return wrap(head.padEnd(COLUMN), text, COLUMN);
  return [head, ...wrap(" ".repeat(COLUMN), text, COLUMN)];
}

/** `first` followed by the words of `text`, wrapped at {@link WIDTH}, indented by `indent`. */
function wrap(first: string, text: string, indent: number): string[] {
  const lines: string[] = [];
  let line = first;
  let empty = true;
  for (const word of text.split(/\s+/).filter((w) => w !== "")) {
    if (!empty && line.length + 1 + word.length > WIDTH) {
      lines.push(line);
      line = " ".repeat(indent);
      empty = true;
    }
    line += empty ? word : ` ${word}`;
    empty = false;
  }
  lines.push(line);
  return lines;
}

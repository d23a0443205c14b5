/**
 * Command-line options declared once, as a table: each entry gives an option's official name,
 * its kind, its help and its default, and {@link parseOptions} turns a command line into a typed
 * object whose field types follow from the table ({@link OptionValues}), so no use site converts
 * or casts. Words are split by `node:util` parseArgs; the rules are argparse's, as the official
 * scripts use it:
 *
 * - `--name value` or `--name=value`; `--some-name` is the same option as `--some_name`;
 * - list kinds take every word up to the next option (`--pred_ratio 0 0.3`, argparse `nargs="+"`);
 *   a word may also hold several values separated by commas or spaces;
 * - `bool` takes on/true/1 or off/false/0 in any case (the official `bool_flag`); `flag` takes
 *   no value (argparse `store_true`);
 * - a negative number is a value, not an option;
 * - given twice, the last one counts.
 *
 * Bad input (an unknown option, a value of the wrong kind, a value outside the choices or the
 * range, a stray word) throws one sentence that names the option.
 *
 * @example
 * ```ts
 * const OPTIONS = {
 *   epochs: { kind: "int", help: "Training epochs.", default: 100, min: 1 },
 *   lr: { kind: "floats", help: "Learning rates to sweep.", default: [0.01] },
 *   device: { kind: "string", help: "Where to run.", choices: ["cpu", "cuda"], default: "cpu" },
 *   output: { kind: "string", help: "Where to write." },
 * } as const satisfies OptionTable;
 * const { values } = parseOptions(OPTIONS, ["--lr", "0.1", "0.5", "--device", "cuda"]);
 * // values: { epochs: number; lr: readonly number[]; device: "cpu" | "cuda";
 * //   output: string | undefined }
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";

/** What every kind of option declares besides its kind, default and presets. */
export interface OptionSpecBase {
  /** What the option does, for `--help` (the default is appended there). */
  readonly help: string;
  /** The value's name in `--help` (default: the choices, else the kind). */
  readonly metavar?: string;
  /** Accepted for compatibility with the official scripts but without effect here. */
  readonly ignored?: boolean;
}

/** One number: `int` must be whole. `min` and `max` bound it (inclusive), or `choices` list it. */
export interface NumberSpec extends OptionSpecBase {
  /** The kind of value. */
  readonly kind: "int" | "float";
  /** The value when the option is not given (and no preset replaces it). */
  readonly default?: number | null;
  /** Defaults by preset name, replacing `default` under that preset. */
  readonly presets?: Readonly<Record<string, number | null>>;
  /** Smallest value accepted (inclusive). */
  readonly min?: number;
  /** Largest value accepted (inclusive). */
  readonly max?: number;
  /** The only values accepted. */
  readonly choices?: readonly number[];
}

/** One or more numbers; `min` and `max` bound each. */
export interface NumbersSpec extends OptionSpecBase {
  /** The kind of value. */
  readonly kind: "ints" | "floats";
  /** The value when the option is not given (and no preset replaces it). */
  readonly default?: readonly number[];
  /** Defaults by preset name, replacing `default` under that preset. */
  readonly presets?: Readonly<Record<string, readonly number[]>>;
  /** Smallest value accepted (inclusive). */
  readonly min?: number;
  /** Largest value accepted (inclusive). */
  readonly max?: number;
}

/** One word, optionally one of `choices`. */
export interface StringSpec extends OptionSpecBase {
  /** The kind of value. */
  readonly kind: "string";
  /** The value when the option is not given (and no preset replaces it). */
  readonly default?: string | null;
  /** Defaults by preset name, replacing `default` under that preset. */
  readonly presets?: Readonly<Record<string, string | null>>;
  /** The only values accepted. */
  readonly choices?: readonly string[];
}

/** One or more words. */
export interface StringsSpec extends OptionSpecBase {
  /** The kind of value. */
  readonly kind: "strings";
  /** The value when the option is not given (and no preset replaces it). */
  readonly default?: readonly string[];
  /** Defaults by preset name, replacing `default` under that preset. */
  readonly presets?: Readonly<Record<string, readonly string[]>>;
}

/** A boolean given as a value: on/true/1 or off/false/0. */
export interface BoolSpec extends OptionSpecBase {
  /** The kind of value. */
  readonly kind: "bool";
  /** The value when the option is not given (and no preset replaces it). */
  readonly default?: boolean;
  /** Defaults by preset name, replacing `default` under that preset. */
  readonly presets?: Readonly<Record<string, boolean>>;
}

/** A switch without a value: true when given, else false. */
export interface FlagSpec extends OptionSpecBase {
  /** The kind of value. */
  readonly kind: "flag";
}

/**
 * One option. Without a `default` its value is `undefined` when not given; a `null` default
 * (argparse `default=None`) stays `null`. `presets` replace the default under a named preset.
 */
export type OptionSpec = NumberSpec | NumbersSpec | StringSpec | StringsSpec | BoolSpec | FlagSpec;

/** A command's options by official name (declare with `as const satisfies OptionTable`). */
export type OptionTable = Readonly<Record<string, OptionSpec>>;

/** The value of an option of spec `S` when given: a number, numbers, a word, words or a boolean. */
export type KindValue<S extends OptionSpec> = S extends { choices: readonly (infer C)[] } ? C
  : S extends { kind: "int" | "float" } ? number
  : S extends { kind: "ints" | "floats" } ? readonly number[]
  : S extends { kind: "strings" } ? readonly string[]
  : S extends { kind: "bool" | "flag" } ? boolean
  : string;

/** The parsed value of an option of spec `S`. */
export type OptionValue<S extends OptionSpec> = S extends { kind: "flag" } ? boolean
  : S extends { default: null } ? KindValue<S> | null
  : S extends { default: unknown } ? KindValue<S>
  : KindValue<S> | undefined;

/** The parsed values of a table's options, by name. */
export type OptionValues<T extends OptionTable> = { readonly [N in keyof T]: OptionValue<T[N]> };

/** How {@link parseOptions} reads a command line beyond the table. */
export interface ParseSettings<T extends OptionTable> {
  /** Names of the positional arguments, in order; exactly these many must be given. */
  readonly positionals?: readonly string[];
  /** The preset whose defaults apply, chosen from the options given on the command line. */
  readonly preset?: (given: Partial<OptionValues<T>>) => string;
}

/** A parsed command line. */
export interface ParsedOptions<T extends OptionTable> {
  /** Every option of the table: given, else its default (under the preset, if one applies). */
  readonly values: OptionValues<T>;
  /** The positional arguments (none unless the settings name some). */
  readonly positionals: readonly string[];
  /** `--help` or `-h` was given (positionals are then not counted). */
  readonly help: boolean;
}

/** Throws `--name is required (see --help)` when `value` is undefined; else returns it. */
export function required<V>(value: V | undefined, name: string): V {
  if (value === undefined) throw new Error(`--${name} is required (see --help)`);
  return value;
}

/** Parses `argv` against `table`. Throws one sentence on bad input. */
export function parseOptions<const T extends OptionTable>(
  table: T,
  argv: readonly string[],
  settings: ParseSettings<T> = {},
): ParsedOptions<T> {
  const names = settings.positionals ?? [];
  const { words, positionals, help } = groupWords(table, argv, names.length > 0);
  const given: Record<string, unknown> = {};
  for (const [name, list] of words) given[name] = convert(name, table[name], list);
  if (!help && positionals.length !== names.length) {
    if (names.length === 0) throw strayWord(positionals[0]);
    throw new Error(`expected ${listed(names, "and")} (see --help)`);
  }
  const preset = settings.preset?.(given as Partial<OptionValues<T>>);
  const values: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(table)) {
    values[name] = name in given ? given[name] : defaultValue(spec, preset);
  }
  return { values: values as OptionValues<T>, positionals, help };
}

/** The default of `spec` under `preset` (`false` for a flag, `undefined` when it has none). */
function defaultValue(spec: OptionSpec, preset?: string): unknown {
  if (spec.kind === "flag") return false;
  const presets: Readonly<Record<string, unknown>> | undefined = spec.presets;
  return preset !== undefined && presets !== undefined && preset in presets
    ? presets[preset]
    : spec.default;
}

/** Names joined for a sentence: `a`, `a and b`, `a, b and c`. */
function listed(names: readonly string[], conjunction: "and" | "or"): string {
  return names.length > 1
    ? `${names.slice(0, -1).join(", ")} ${conjunction} ${names.at(-1)}`
    : names.join("");
}

function isList(spec: OptionSpec): spec is NumbersSpec | StringsSpec {
  return spec.kind === "ints" || spec.kind === "floats" || spec.kind === "strings";
}

function strayWord(word: string): Error {
  return new Error(`unexpected value '${word}': values follow a --flag (see --help)`);
}

/**
 * The words of each option given (by table name, the last occurrence), the positional words, and
 * whether help was asked for. Positional words are those before any option or after `--`, and,
 * when the command `takesPositionals`, those after an option that has all the words it takes.
 */
function groupWords(
  table: OptionTable,
  argv: readonly string[],
  takesPositionals: boolean,
): { words: Map<string, string[]>; positionals: string[]; help: boolean } {
  const { tokens } = parseArgs({
    args: [...argv],
    options: { help: { type: "boolean", short: "h" } },
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  const words = new Map<string, string[]>();
  const positionals: string[] = [];
  let current = positionals;
  let capacity = Infinity;
  const add = (word: string) => {
    (takesPositionals && current.length >= capacity ? positionals : current).push(word);
  };
  let help = false;
  let lastIndex = -1;
  for (const token of tokens) {
    const seen = token.index === lastIndex;
    lastIndex = token.index;
    if (token.kind === "option-terminator") {
      [current, capacity] = [positionals, Infinity];
    } else if (token.kind === "positional") {
      add(token.value);
    } else if (!token.rawName.startsWith("--") && NEGATIVE_NUMBER.test(argv[token.index])) {
      // parseArgs splits "-0.5" into the short options -0, -. and -5: it is one value.
      if (!seen) add(argv[token.index]);
    } else if (token.name === "help") {
      help = true;
      [current, capacity] = [positionals, Infinity];
    } else {
      const name = token.name.replaceAll("-", "_");
      if (!Object.hasOwn(table, name)) {
        const raw = token.rawName.startsWith("--") ? token.rawName : argv[token.index];
        throw new Error(`unknown argument ${raw}; see --help for the list`);
      }
      const spec = table[name];
      current = token.value === undefined ? [] : [token.value];
      capacity = isList(spec) ? Infinity : spec.kind === "flag" ? 0 : 1;
      words.set(name, current);
    }
  }
  return { words, positionals, help };
}

const NEGATIVE_NUMBER = /^-\.?\d/;

function convert(name: string, spec: OptionSpec, words: readonly string[]): unknown {
  const flag = `--${name}`;
  if (spec.kind === "flag") {
    if (words.length > 0) throw new Error(`${flag} takes no value, got '${words[0]}'`);
    return true;
  }
  if (isList(spec)) {
    const items = words.flatMap((word) => word.split(/[\s,]+/)).filter((item) => item !== "");
    if (items.length === 0) {
      throw new Error(
        `${flag} expects one or more ${spec.kind === "strings" ? "values" : "numbers"}`,
      );
    }
    if (spec.kind === "strings") return items;
    return items.map((item) => number(flag, spec, item));
  }
  if (words.length !== 1) throw new Error(`${flag} takes one value, got ${words.length}`);
  const [word] = words;
  switch (spec.kind) {
    case "int":
    case "float":
      return number(flag, spec, word);
    case "bool": {
      const text = word.toLowerCase();
      if (["on", "true", "1"].includes(text)) return true;
      if (["off", "false", "0"].includes(text)) return false;
      throw new Error(`${flag} expects on/true/1 or off/false/0, got '${word}'`);
    }
    case "string":
      if (spec.choices && !spec.choices.includes(word)) {
        throw new Error(`${flag} must be ${listed(spec.choices, "or")}, got ${word}`);
      }
      return word;
  }
}

function number(flag: string, spec: NumberSpec | NumbersSpec, text: string): number {
  const whole = spec.kind === "int" || spec.kind === "ints";
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value) || (whole && !Number.isInteger(value))) {
    throw new Error(`${flag} expects ${whole ? "an integer" : "a number"}, got '${text}'`);
  }
  if (spec.kind === "int" || spec.kind === "float") {
    if (spec.choices && !spec.choices.includes(value)) {
      throw new Error(`${flag} must be ${listed(spec.choices.map(String), "or")}, got ${text}`);
    }
  }
  const { min, max } = spec;
  if ((min !== undefined && value < min) || (max !== undefined && value > max)) {
    throw new Error(`${flag} must be ${bounds(whole, min, max)}, got ${text}`);
  }
  return value;
}

/** "a positive integer", "a number in [0, 1]", "an integer ≥ 2", ... */
function bounds(whole: boolean, min?: number, max?: number): string {
  if (whole && max === undefined && (min === 0 || min === 1)) {
    return min === 1 ? "a positive integer" : "a non-negative integer";
  }
  const range = min !== undefined && max !== undefined
    ? `in [${min}, ${max}]`
    : min !== undefined
    ? `≥ ${min}`
    : `≤ ${max}`;
  return `${whole ? "an integer" : "a number"} ${range}`;
}

/**
 * The shared frame of every task: parse the command line against the task's option table, print
 * the generated help for `--help`, run the task, and exit with its code; an error is printed as
 * one line `error: <message>` with exit code 1.
 */

import { type CommandHelp, commandHelp } from "../lib/cli/help.ts";
import { type OptionTable, type OptionValues, parseOptions } from "../lib/cli/options.ts";

/** A task's command line: its help and its options (and positional arguments, if it takes any). */
export interface TaskCommand<T extends OptionTable> extends CommandHelp {
  /** The task's options by official name, parsed from the command line and listed in its help. */
  readonly options: T;
}

/** The body of a task: the parsed options and positional arguments in, the exit code out. */
export type TaskMain<T extends OptionTable> = (
  values: OptionValues<T>,
  positionals: readonly string[],
) => Promise<number> | number;

/** Parses `Deno.args` for `command`, runs `main` (or prints the help) and exits. */
export async function runTask<const T extends OptionTable>(
  command: TaskCommand<T>,
  main: TaskMain<T>,
): Promise<never> {
  try {
    const positionals = Object.keys(command.positionals ?? {});
    const parsed = parseOptions(command.options, Deno.args, { positionals });
    if (parsed.help) {
      console.log(commandHelp(command));
      Deno.exit(0);
    }
    Deno.exit(await main(parsed.values, parsed.positionals));
  } catch (error) {
    console.error(`error: ${error instanceof Error ? error.message : String(error)}`);
    Deno.exit(1);
  }
}

/**
 * The shared ending of every task: the main function's result is the exit code, and an error is
 * printed as one line `error: <message>` with exit code 1.
 */

/** Runs `main` and exits with its code, or with 1 and one line on stderr when it throws. */
export async function runTask(main: () => Promise<number> | number): Promise<never> {
  try {
    Deno.exit(await main());
  } catch (error) {
    console.error(`error: ${error instanceof Error ? error.message : String(error)}`);
    Deno.exit(1);
  }
}

/** A token of `node:util` parseArgs with `tokens: true`, as far as {@link listOptions} reads it. */
export interface ArgToken {
  readonly kind: string;
  readonly name?: string;
  readonly value?: string;
}

/**
 * The values of the list options `names`, argparse `nargs="+"` style: `--lr 0.01 0.1` gives
 * `{ lr: ["0.01", "0.1"] }` (the bare words after the flag come from parseArgs as positionals;
 * repeating the flag adds to the list). An option not given is absent. Any other bare word is an
 * error naming it.
 */
export function listOptions(
  tokens: readonly ArgToken[],
  names: readonly string[],
): Record<string, string[]> {
  const lists: Record<string, string[]> = {};
  let current: string | undefined;
  for (const token of tokens) {
    if (token.kind === "positional") {
      if (current === undefined) {
        throw new Error(`unexpected argument '${token.value}' (see --help)`);
      }
      lists[current].push(token.value ?? "");
    } else {
      current = token.kind === "option" && names.includes(token.name ?? "")
        ? token.name
        : undefined;
      if (current !== undefined) (lists[current] ??= []).push(token.value ?? "");
    }
  }
  return lists;
}

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

/**
 * What happens to the tests that need an outside tool (PyTorch for the reference comparisons,
 * Jupyter for the notebooks) where it is not installed: they are skipped (`ignore`) with a note,
 * except under `CI=true`, where CI has installed every tool, so a missing one is a failing test
 * that says what is missing.
 */

const reported = new Set<string>();

/** True when this is a CI run (`CI=true`), where every tool the tests use is installed. */
export function inCi(): boolean {
  return Deno.env.get("CI") === "true";
}

/**
 * Reports, once per `what`, that `reason` keeps the `what` tests from running here: prints
 * "<what> skipped: <reason>", or under `CI=true` registers a failing test with that reason.
 * Call it while tests are being registered (at a module's top level or in a `Deno.test`
 * option), not inside a running test.
 */
export function reportMissingTool(what: string, reason: string): void {
  if (reported.has(what)) return;
  reported.add(what);
  if (!inCi()) {
    console.log(`${what} skipped: ${reason}`);
    return;
  }
  Deno.test(`${what} can run (CI installs what it needs)`, () => {
    throw new Error(`${what} cannot run under CI=true: ${reason}`);
  });
}

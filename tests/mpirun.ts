/**
 * What the tests that start `mpirun` share: whether it is installed, and its arguments for a job
 * of Deno processes on this machine (as root, more ranks than cores allowed).
 *
 * @module
 */

/** Why the multi-process tests cannot run here, or undefined when `mpirun` is installed. */
export function mpirunMissing(): string | undefined {
  try {
    new Deno.Command("mpirun", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync();
    return undefined;
  } catch {
    return "mpirun is not installed (Debian package openmpi-bin)";
  }
}

/** `mpirun` arguments that run `deno run -A script args...` on `ranks` processes. */
export function mpirunArgs(
  ranks: number,
  script: string,
  args: readonly string[],
  mca: readonly string[] = [],
): string[] {
  return [
    "--allow-run-as-root",
    "--oversubscribe",
    ...mca,
    "-np",
    String(ranks),
    Deno.execPath(),
    "run",
    "-A",
    script,
    ...args,
  ];
}

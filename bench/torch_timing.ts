/** Helpers for benchmarks that time a PyTorch reference script beside our own step. */

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** Median of a list of numbers. */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/**
 * Runs `bench/<script>` with the settings a fair PyTorch timing needs on this CPU (OpenBLAS's
 * SkylakeX kernels, one OpenMP thread per core) and returns the number on its last output line.
 */
export async function timeTorch(
  python: string,
  script: string,
  args: string[] = [],
): Promise<number> {
  const cores = String(navigator.hardwareConcurrency);
  const { success, stdout, stderr } = await new Deno.Command(python, {
    args: [join(dirname(fileURLToPath(import.meta.url)), script), ...args],
    env: { OPENBLAS_CORETYPE: "SkylakeX", OMP_NUM_THREADS: cores },
  }).output();
  if (!success) throw new Error(`${script} failed:\n${new TextDecoder().decode(stderr)}`);
  return Number(new TextDecoder().decode(stdout).trim().split("\n").at(-1));
}

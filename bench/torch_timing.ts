/**
 * What the benchmarks that run a PyTorch reference script beside our own step share: running it
 * with the settings a fair timing needs, reading its report, and checking which BLAS it used.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** Median of a list of numbers. */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** What a benchmark process prints as its last line (JSON): its timings and its memory. */
export interface StepReport {
  /** Seconds of each timed iteration. */
  readonly seconds: number[];
  /** Peak resident memory of the process after the timed iterations, in MiB. */
  readonly peak_rss_mib: number;
}

/** What a PyTorch benchmark script reports besides its timings and memory. */
export interface TorchReport extends StepReport {
  /** Paths of the BLAS, OpenBLAS and LAPACK libraries the process mapped. */
  readonly blas: string[];
  /** Multiply-accumulates of one iteration, when the script was asked to count them. */
  readonly macs?: number;
}

/**
 * Runs `bench/<script>` with the settings a fair PyTorch timing needs on this CPU (OpenBLAS's
 * AVX-512 kernels where the CPU has them, one OpenMP thread per core) and returns its report.
 */
export async function runTorch(
  python: string,
  script: string,
  args: readonly string[] = [],
): Promise<TorchReport> {
  const cores = String(navigator.hardwareConcurrency);
  const env: Record<string, string> = { OMP_NUM_THREADS: cores };
  // OpenBLAS 0.3.21 takes AVX-512 CPUs for "Prescott" and runs SSE3 kernels on them.
  if (await hasAvx512()) env.OPENBLAS_CORETYPE = "SkylakeX";
  const { success, stdout, stderr } = await new Deno.Command(python, {
    args: [join(dirname(fileURLToPath(import.meta.url)), script), ...args],
    env,
  }).output();
  if (!success) throw new Error(`${script} failed:\n${new TextDecoder().decode(stderr)}`);
  return JSON.parse(new TextDecoder().decode(stdout).trim().split("\n").at(-1)!);
}

/** Where Debian's OpenBLAS (OpenMP variant) puts the libraries the BLAS alternatives point at. */
const OPENBLAS_OPENMP = "/usr/lib/x86_64-linux-gnu/openblas-openmp";

/**
 * Undefined when every BLAS library PyTorch mapped is OpenBLAS's OpenMP variant, the only fair
 * reference (the pthread variant fights PyTorch's OpenMP pool, the reference BLAS is tens of
 * times slower); otherwise the sentence that tells the user how to pin it.
 */
export function blasProblem(mapped: readonly string[]): string | undefined {
  const others = mapped.filter((path) => dirname(path) !== OPENBLAS_OPENMP);
  if (mapped.length > 0 && others.length === 0) return undefined;
  const found = mapped.length > 0 ? others.join(", ") : "no BLAS library";
  const pins = ["libblas.so.3", "liblapack.so.3", "libopenblas.so.0"].map((lib) =>
    `update-alternatives --set ${lib}-x86_64-linux-gnu ${OPENBLAS_OPENMP}/${lib}`
  );
  return `PyTorch used ${found}, not OpenBLAS's OpenMP variant, so no ratio is printed: ` +
    `install libopenblas0-openmp and, as root, run ${pins.join("; ")}.`;
}

/** True when the CPU reports AVX-512 Foundation (`avx512f` in /proc/cpuinfo). */
async function hasAvx512(): Promise<boolean> {
  try {
    return /\bavx512f\b/.test(await Deno.readTextFile("/proc/cpuinfo"));
  } catch {
    return false;
  }
}

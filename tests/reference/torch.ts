/** Runs the PyTorch reference scripts of the tests, when Debian's python3-torch is installed. */

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadSafetensors, saveSafetensors } from "../../lib/checkpoint/safetensors.ts";
import type { NamedTensor } from "../../lib/runtime/named_tensor.ts";
import type { Rng } from "../../lib/runtime/rng.ts";
import type { StateStore } from "../../lib/runtime/store.ts";
import { reportMissingTool } from "../missing_tool.ts";

/** The Python that sees Debian's packages (python3-torch). */
export const PYTHON = "/usr/bin/python3";

let torchFound: boolean | undefined;

/**
 * True when `import torch` works (checked once). Otherwise the PyTorch comparisons are skipped
 * with a note, or under `CI=true` a failing test says that PyTorch is missing (see
 * `reportMissingTool`); call it where tests are registered, as their `ignore` option.
 */
export function torchAvailable(): boolean {
  torchFound ??= canImportTorch();
  if (!torchFound) {
    reportMissingTool(
      "PyTorch comparison",
      `${PYTHON} cannot import torch (apt-get install python3-torch)`,
    );
  }
  return torchFound;
}

function canImportTorch(): boolean {
  try {
    const { success } = new Deno.Command(PYTHON, {
      args: ["-c", "import torch"],
      stderr: "null",
      stdout: "null",
    }).outputSync();
    return success;
  } catch {
    return false; // python3 itself is missing
  }
}

/** Runs `tests/reference/<script>` with arguments; throws with its stderr if it fails. */
export async function runTorchScript(script: string, args: string[]): Promise<void> {
  const here = dirname(fileURLToPath(import.meta.url));
  const { success, stderr } = await new Deno.Command(PYTHON, {
    args: [join(here, script), ...args],
    env: { OMP_NUM_THREADS: "1" },
    stdout: "inherit",
    stderr: "piped",
  }).output();
  if (!success) throw new Error(`${script} failed:\n${new TextDecoder().decode(stderr)}`);
}

/** Runs `tests/reference/<script>` with arguments and returns its standard output. */
export async function torchScriptOutput(
  script: string,
  args: readonly string[] = [],
): Promise<string> {
  const here = dirname(fileURLToPath(import.meta.url));
  const { success, stdout, stderr } = await new Deno.Command(PYTHON, {
    args: [join(here, script), ...args],
    env: { OMP_NUM_THREADS: "1" },
  }).output();
  const text = new TextDecoder();
  if (!success) throw new Error(`${script} failed:\n${text.decode(stderr)}`);
  return text.decode(stdout);
}

/**
 * Writes `tensors` to IN.safetensors in a temp folder, runs `tests/reference/<script> ...args IN
 * OUT` (e.g. `ibot_torch.py step IN OUT`) and returns OUT's tensors; the folder is removed after.
 */
export async function runTorchReference(
  script: string,
  args: readonly string[],
  tensors: Record<string, NamedTensor>,
): Promise<Map<string, NamedTensor>> {
  const dir = await Deno.makeTempDir();
  try {
    const [input, output] = [join(dir, "in.safetensors"), join(dir, "out.safetensors")];
    await saveSafetensors(input, tensors);
    await runTorchScript(script, [...args, input, output]);
    return (await loadSafetensors(output)).tensors;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A reader of the reference's float64 outputs by name; throws naming a tensor it did not write. */
export function float64Reader(tensors: Map<string, NamedTensor>): (name: string) => Float64Array {
  return (name) => {
    const tensor = tensors.get(name);
    if (!tensor) throw new Error(`the reference wrote no ${name}`);
    return tensor.data as Float64Array;
  };
}

/** A float32 tensor of `shape` over `data` (not copied). */
export const f32 = (data: Float32Array, shape: readonly number[]): NamedTensor => ({
  dtype: "float32",
  shape: [...shape],
  data,
});

/** An int64 scalar of shape [1]; booleans become 0 or 1. */
export const i64 = (value: number | boolean): NamedTensor => ({
  dtype: "int64",
  shape: [1],
  data: BigInt64Array.of(BigInt(Number(value))),
});

/** A float64 scalar of shape [1]. */
export const f64 = (value: number): NamedTensor => ({
  dtype: "float64",
  shape: [1],
  data: Float64Array.of(value),
});

/**
 * Overwrites every tensor of `store` with random weights (not the official init) so that every
 * parameter and gradient matters in a comparison: 1 + 0.3·N(0, 1) for norm weights, 0.3·N(0, 1)
 * elsewhere, drawn from `rng` in the store's order.
 */
export function randomizeWeights(store: StateStore, rng: Rng): void {
  for (const name of store.names()) {
    const base = name.includes("norm") && name.endsWith("weight") ? 1 : 0;
    store.get(name).forEach((_, i, a) => (a[i] = base + 0.3 * rng.normal()));
  }
}

/** Runs a Python snippet (`python -c code args...`) and returns its standard output. */
export async function runPython(code: string, args: readonly string[] = []): Promise<string> {
  const { success, stdout, stderr } = await new Deno.Command(PYTHON, {
    args: ["-c", code, ...args],
    env: { OMP_NUM_THREADS: "1" },
  }).output();
  const text = new TextDecoder();
  if (!success) throw new Error(`python failed:\n${text.decode(stderr)}`);
  return text.decode(stdout);
}

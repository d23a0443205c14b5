/**
 * Random feeds for a benchmark's graph inputs.
 *
 * @module
 */

import type { TensorData, ValueSpec } from "../lib/graph/graph.ts";
import { shapeSize } from "../lib/graph/tensor.ts";
import type { Rng } from "../lib/runtime/rng.ts";

/**
 * One feed per input of `inputs` that `skip` does not name, in the inputs' order: zeros for int64
 * inputs, standard normal draws from `rng` for the others. The callers fill masks, drop-path
 * scales and schedule scalars over these afterwards.
 */
export function randomInputs(
  inputs: readonly ValueSpec[],
  rng: Rng,
  skip: (name: string) => boolean = () => false,
): Record<string, TensorData> {
  const feeds: Record<string, TensorData> = {};
  for (const input of inputs) {
    if (skip(input.name)) continue;
    const n = shapeSize(input.shape);
    feeds[input.name] = input.dtype === "int64"
      ? new BigInt64Array(n)
      : Float32Array.from({ length: n }, () => rng.normal());
  }
  return feeds;
}

/** Runs an ONNX model once with plain onnxruntime-node, for tests of what the writer emits. */

import * as ort from "onnxruntime-node";

/** Float32 feeds by input name: values and shape. */
export type Float32Feeds = Record<string, { data: Float32Array; dims: number[] }>;

/** Runs `model` (bytes or a file path) once on float32 `feeds` and returns every output. */
export async function runOnnx(
  model: Uint8Array | string,
  feeds: Float32Feeds,
): Promise<Record<string, ort.Tensor>> {
  const options = { graphOptimizationLevel: "all", logSeverityLevel: 4 } as const;
  const session = typeof model === "string"
    ? await ort.InferenceSession.create(model, options)
    : await ort.InferenceSession.create(model, options);
  try {
    const tensors: Record<string, ort.Tensor> = {};
    for (const [name, { data, dims }] of Object.entries(feeds)) {
      tensors[name] = new ort.Tensor("float32", data, dims);
    }
    return await session.run(tensors);
  } finally {
    await session.release();
  }
}

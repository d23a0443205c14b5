/**
 * The iBOT toolkit for Deno: a differentiable graph language whose programs are plain ONNX, a
 * reverse-mode autodiff, and an onnxruntime runtime with a named state store.
 *
 * ```ts
 * import { CompiledGraph, Graph, grad, mul, sum } from "./mod.ts";
 * const g = new Graph();
 * const x = g.input("x", "float32", [3]);
 * const loss = sum(mul(x, x));
 * g.output("loss", loss);
 * g.output("dx", grad(loss, [x])[0]);
 * const out = await (await CompiledGraph.create(g)).run({ x: Float32Array.of(1, 2, 3) });
 * console.log(out.dx); // Float32Array [2, 4, 6]
 * ```
 *
 * @module
 */

export { type DType, type Shape, Tensor } from "./lib/graph/tensor.ts";
export { Graph, type InitRule, type ParamSpec } from "./lib/graph/graph.ts";
export { grad } from "./lib/graph/grad.ts";
export * from "./lib/graph/math.ts";
export * from "./lib/graph/shape.ts";
export * from "./lib/graph/reduce.ts";
export * from "./lib/graph/linalg.ts";
export * from "./lib/graph/nn.ts";
export { encodeOnnxModel, type OnnxWriteOptions, writeOnnxModel } from "./lib/graph/onnx.ts";
export {
  CompiledGraph,
  type CompileOptions,
  type ExecutionProvider,
} from "./lib/runtime/session.ts";
export { StateStore } from "./lib/runtime/store.ts";
export { Rng } from "./lib/runtime/rng.ts";
export { loadSafetensors, type NamedTensor, saveSafetensors } from "./lib/runtime/safetensors.ts";
export { layerNorm as layerNormLayer, linear as linearLayer } from "./lib/models/layers.ts";
export { attention, type BlockConfig, mlp, transformerBlock } from "./lib/models/block.ts";
export * from "./lib/optim/adamw.ts";
export { vit, VIT_SIZES, type VitConfig } from "./lib/models/vit.ts";
export {
  clsLastLayer,
  headBottleneck,
  type HeadConfig,
  patchLastLayer,
} from "./lib/models/head.ts";
export { agreement, ibotLoss, updateCenters } from "./lib/losses/ibot.ts";
export { cosineSchedule, teacherTemperatureSchedule } from "./lib/optim/schedules.ts";
export { MaskGenerator, type MaskingConfig } from "./lib/data/masking.ts";
export { evalTransform, multiCrop, type MultiCropConfig } from "./lib/data/augment.ts";
export { evalBatches, MultiCropLoader } from "./lib/data/loader.ts";
export { openSource, type RawImage, resolveDataPath } from "./lib/data/source.ts";
export { buildIbotStep, type IbotStepConfig } from "./lib/train/step.ts";
export { IbotTrainer } from "./lib/train/trainer.ts";
export { parsePretrainArgs } from "./lib/train/args.ts";
export { loadTrainingCheckpoint, saveTrainingCheckpoint } from "./lib/train/checkpoint.ts";
export { buildFeatureGraph } from "./lib/eval/features.ts";
export { evaluateKnn, extractFeatures } from "./lib/eval/knn_eval.ts";
export { knnClassify, type KnnResult } from "./lib/eval/knn.ts";
export { readPth, stateDictFromPth, writePth } from "./lib/runtime/pth.ts";

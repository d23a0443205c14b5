/**
 * The full iBOT training step at the benchmark configuration of the pre-training issue: vit_tiny
 * (width 192, depth 12, 3 heads), patch 4, 2 global crops of 32 px and 4 local crops of 16 px,
 * out_dim 1024, shared head, batch 64, drop path 0.1, masks at ratio 0.3, fp32, random inputs.
 * Shared by the `deno bench` file and the comparison with the PyTorch reference.
 */

import type { TensorData } from "../lib/graph/graph.ts";
import { shapeSize } from "../lib/graph/tensor.ts";
import { MaskGenerator } from "../lib/data/masking.ts";
import { addAdamWMoments } from "../lib/optim/adamw.ts";
import { Rng } from "../lib/runtime/rng.ts";
import { CompiledGraph, type CompileOptions } from "../lib/runtime/session.ts";
import { StateStore } from "../lib/runtime/store.ts";
import { buildIbotStep, type IbotStepConfig, stepScalarValues } from "../lib/train/step.ts";
import { fillMaskInputs } from "../lib/train/batch_inputs.ts";

/** The benchmark configuration. */
export const IBOT_BENCH: IbotStepConfig = {
  backbone: { embedDim: 192, depth: 12, heads: 3, patchSize: 4, imgSize: 32 },
  studentHead: { outDim: 1024, patchOutDim: 1024, sharedHead: true },
  teacherSharedHead: true,
  normLastLayer: false,
  useMaskedImModeling: true,
  batch: 64,
  globalCrops: 2,
  globalSize: 32,
  localCrops: 4,
  localSize: 16,
  maskSlots: 19,
  dropPath: 0.1,
  clipGrad: 3,
  lambda1: 1,
  lambda2: 1,
};

/**
 * A compiled step with random inputs, without onnxruntime's memory arena as the trainer compiles
 * it; `step()` runs one iteration and commits the state.
 */
export async function prepareIbotStep(
  options: CompileOptions = {},
): Promise<{ step(): Promise<void> }> {
  const built = buildIbotStep(IBOT_BENCH);
  const session = await CompiledGraph.create(built.graph, { memoryArena: false, ...options });
  const store = StateStore.fromParams(built.graph.params, 0);
  addAdamWMoments(store, built.trainable);
  const rng = new Rng(0);
  const feeds: Record<string, TensorData> = {};
  for (const name of store.names()) feeds[name] = store.get(name);
  for (const input of built.graph.inputs) {
    const n = shapeSize(input.shape);
    if (input.dtype === "int64") feeds[input.name] = new BigInt64Array(n);
    else feeds[input.name] = Float32Array.from({ length: n }, () => rng.normal());
  }
  const masking = new MaskGenerator({
    predRatio: 0.3,
    predRatioVar: 0,
    predShape: "block",
    predStartEpoch: 0,
  });
  const grid = IBOT_BENCH.globalSize / IBOT_BENCH.backbone.patchSize;
  const masks = Array.from(
    { length: IBOT_BENCH.globalCrops * IBOT_BENCH.batch },
    () => masking.draw(grid, grid, 0, rng),
  );
  fillMaskInputs(feeds, masks, IBOT_BENCH.maskSlots, grid * grid);
  (feeds.drop_path_global as Float32Array).fill(1);
  (feeds.drop_path_local as Float32Array).fill(1);
  let step = 0;
  return {
    async step() {
      step++;
      const scalars = stepScalarValues({
        lr: 5e-4 * 64 / 256,
        weightDecay: 0.04,
        step,
        lastLayerActive: true,
        lastLayerStep: step,
        momentum: 0.996,
        teacherTemp: 0.04,
        teacherPatchTemp: 0.04,
      });
      for (const [name, value] of Object.entries(scalars)) (feeds[name] as Float32Array)[0] = value;
      const out = await session.run(feeds);
      store.commitNext(out as Record<string, Float32Array>, built.updatedState);
    },
  };
}

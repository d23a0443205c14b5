/**
 * Times our iBOT training step on ready batches, in a process of its own: the ours side of the GPU
 * check's throughput comparison with `gpu_torch_step.py`. The recipe is `gpu_recipe.ts`'s (the
 * official ViT-S/16 one by default); the step runs through the device runtime with the state
 * resident on the device, as the trainer runs it, so each step sends up only the batch (crops,
 * masks, slots, drop-path draws) and the scalars and brings down only the statistics.
 *
 * The batch is random and made once (like the PyTorch side's), with masks drawn by the recipe's
 * mask generator; the step is compiled for the patch-slot bucket those masks need. Each step is
 * timed from the call to the end of the run (onnxruntime synchronises the device at the end of a
 * run).
 *
 * ```sh
 * deno run -A bench/gpu_step_run.ts [--arch vit_small|vit_base|vit_tiny] [--device cuda|cpu]
 *   [--precision fp16|bf16|fp32] [--batch 64] [--steps 20] [--warmup 5] [--global-size 224]
 *   [--local-size 96] [--local-crops 10] [--out-dim 8192] [--profile PREFIX]
 * ```
 *
 * Prints one JSON line: the configuration, `slots` (the bucket) and `masked` (the batch's masked
 * patches), `gmac` (multiply-accumulates per step, counted on the graph), `compile_s`, `seconds`
 * (each timed step), `s_per_step_median`, `images_per_s` (batch / median), `losses`,
 * `skipped_steps` (indices, warm-up first, of steps the loss scaler skipped) and `loss_scale`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { countMacs } from "../lib/graph/cost.ts";
import { MaskGenerator } from "../lib/data/masking.ts";
import { addAdamWMoments } from "../lib/optim/adamw.ts";
import { GradScaler } from "../lib/optim/grad_scaler.ts";
import { DeviceSession } from "../lib/runtime/device_session.ts";
import { ResidentState } from "../lib/runtime/resident_state.ts";
import { Rng } from "../lib/runtime/rng.ts";
import { StateStore } from "../lib/runtime/store.ts";
import { parsePretrainArgs } from "../lib/train/args.ts";
import { countMasked, fillMaskInputs, fillStepDropPath } from "../lib/train/batch_inputs.ts";
import { runConfigFromArgs } from "../lib/train/config.ts";
import { pickSlotBucket, slotBuckets } from "../lib/train/slot_buckets.ts";
import { buildIbotStep, FOUND_INF, stepScalarValues } from "../lib/train/step.ts";
import { recipeArgv, type RecipeOptions } from "./gpu_recipe.ts";
import { randomInputs } from "./random_inputs.ts";

const { values } = parseArgs({
  options: {
    arch: { type: "string", default: "vit_small" },
    device: { type: "string", default: "cuda" },
    precision: { type: "string", default: "fp16" },
    batch: { type: "string", default: "64" },
    steps: { type: "string", default: "20" },
    warmup: { type: "string", default: "5" },
    "global-size": { type: "string", default: "224" },
    "local-size": { type: "string", default: "96" },
    "local-crops": { type: "string", default: "10" },
    "out-dim": { type: "string", default: "8192" },
    profile: { type: "string" },
  },
});

const recipe: RecipeOptions = {
  arch: values.arch as RecipeOptions["arch"],
  device: values.device as RecipeOptions["device"],
  precision: values.precision as RecipeOptions["precision"],
  batch: Number(values.batch),
  globalSize: Number(values["global-size"]),
  localSize: Number(values["local-size"]),
  localCrops: Number(values["local-crops"]),
  outDim: Number(values["out-dim"]),
};
const steps = Number(values.steps);
const warmup = Number(values.warmup);
const { args } = parsePretrainArgs(recipeArgv(recipe));
const config = runConfigFromArgs(args);
const { step: stepConfig, maskGrid } = config;
const rows = stepConfig.globalCrops * stepConfig.batch;

// One ready batch: masks from the recipe's generator (epoch 1), random crops, drop-path draws.
const rng = new Rng(0);
const generator = new MaskGenerator(config.masking);
const masks = Array.from({ length: rows }, () => generator.draw(maskGrid, maskGrid, 1, rng));
const masked = countMasked(masks);
const slots = pickSlotBucket(
  slotBuckets(stepConfig.globalCrops * stepConfig.batch * stepConfig.maskSlots),
  masked,
);

const compileStart = performance.now();
const built = buildIbotStep({ ...stepConfig, slots });
const gmac = countMacs(built.graph) / 1e9;
const session = await DeviceSession.create(built.graph, {
  device: args.device,
  memoryArena: false,
  profilePrefix: values.profile,
});
const compileSeconds = (performance.now() - compileStart) / 1000;

const store = StateStore.fromParams(built.graph.params, 0);
addAdamWMoments(store, built.trainable);
const state = await ResidentState.create(store, built.updatedState, { device: args.device });
const feeds = randomInputs(built.graph.inputs, rng, (name) => state.has(name));
fillMaskInputs(feeds, masks, slots, maskGrid * maskGrid);
fillStepDropPath(feeds, stepConfig, rng);

const scaler = stepConfig.lossScaling ? new GradScaler() : undefined;
const seconds: number[] = [];
const losses: number[] = [];
const skipped: number[] = [];
let adamSteps = 0;
for (let k = 0; k < warmup + steps; k++) {
  const scalars = stepScalarValues({
    lr: 5e-4 * stepConfig.batch / 256,
    weightDecay: 0.04,
    step: adamSteps + 1,
    lastLayerActive: true,
    lastLayerStep: adamSteps + 1,
    momentum: 0.996,
    teacherTemp: 0.07,
    teacherPatchTemp: 0.07,
    lossScale: scaler?.scale,
  });
  for (const [name, value] of Object.entries(scalars)) feeds[name] = Float32Array.of(value);
  const start = performance.now();
  const out = await session.run(feeds, state);
  const elapsed = (performance.now() - start) / 1000;
  state.swap();
  const foundInf = scaler !== undefined && (out[FOUND_INF] as Float32Array)[0] !== 0;
  scaler?.update(foundInf);
  if (foundInf) skipped.push(k);
  else adamSteps++;
  if (k >= warmup) {
    seconds.push(elapsed);
    losses.push((out.loss as Float32Array)[0]);
  }
}
if (values.profile) session.endProfiling();
session.release();
state.release();

const median = [...seconds].sort((a, b) => a - b)[Math.floor(seconds.length / 2)];
console.log(JSON.stringify({
  side: "ours",
  ...recipe,
  steps,
  warmup,
  slots,
  masked,
  gmac,
  compile_s: compileSeconds,
  seconds,
  s_per_step_median: median,
  images_per_s: stepConfig.batch / median,
  losses,
  skipped_steps: skipped,
  loss_scale: scaler?.scale ?? null,
}));

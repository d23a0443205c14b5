/**
 * The full iBOT training step at the benchmark configuration of the pre-training issue: vit_tiny
 * (width 192, depth 12, 3 heads), patch 4, 2 global crops of 32 px and 4 local crops of 16 px,
 * out_dim 1024, shared head, batch 64, drop path 0.1, block masks at ratio 0.3, fp32, random
 * inputs. The step runs on the patch-slot bucket its masks need. Shared by the `deno bench` file
 * and the comparison with the PyTorch reference.
 */

import { patchGrid } from "../lib/models/backbone.ts";
import type { TensorData } from "../lib/graph/graph.ts";
import { MaskGenerator, type MaskingConfig } from "../lib/data/masking.ts";
import { addAdamWMoments } from "../lib/optim/adamw.ts";
import { Rng } from "../lib/runtime/rng.ts";
import { CompiledGraph, type CompileOptions } from "../lib/runtime/session.ts";
import { StateStore } from "../lib/runtime/store.ts";
import { buildIbotStep, type IbotStepConfig, stepScalarValues } from "../lib/train/step.ts";
import { countMasked, fillMaskInputs } from "../lib/train/batch_inputs.ts";
import { pickSlotBucket, slotBuckets } from "../lib/train/slot_buckets.ts";
import { randomInputs } from "./random_inputs.ts";

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

/** The benchmarks' masking: block masks at ratio 0.3. */
export const BENCH_MASKING: MaskingConfig = {
  predRatio: 0.3,
  predRatioVar: 0,
  predShape: "block",
  predStartEpoch: 0,
};

/** Side of the global crops' mask grid of `config`. */
export function benchGrid(config: IbotStepConfig = IBOT_BENCH): number {
  return config.globalSize / patchGrid(config.backbone);
}

/** The masks of `config`'s batch, one per global-crop row: {@link BENCH_MASKING}, seed 1. */
export function benchMasks(config: IbotStepConfig = IBOT_BENCH): Uint8Array[] {
  const masking = new MaskGenerator(BENCH_MASKING);
  const grid = benchGrid(config);
  const rng = new Rng(1);
  return Array.from(
    { length: config.globalCrops * config.batch },
    () => masking.draw(grid, grid, 0, rng),
  );
}

/** The patch slots of the benchmark's step, with the masked patches they hold and the buckets. */
export interface BenchSlots {
  /** S: the smallest bucket that holds the masked patches. */
  readonly slots: number;
  /** The masked patches of the benchmark's masks. */
  readonly masked: number;
  /** Every bucket of the configuration, ascending. */
  readonly buckets: readonly number[];
}

/** The bucket the masks of `config`'s batch need, as the trainer picks it. */
export function benchSlots(config: IbotStepConfig = IBOT_BENCH): BenchSlots {
  const { globalCrops, batch, maskSlots } = config;
  const buckets = slotBuckets(globalCrops * batch * maskSlots);
  const masked = countMasked(benchMasks(config));
  return { slots: pickSlotBucket(buckets, masked), masked, buckets };
}

/** The benchmark's step, compiled, with its state and random inputs. */
export interface PreparedIbotStep {
  /** S: the patch slots the step runs on. */
  readonly slots: number;
  /** The state (parameters, Adam moments, teacher, centres), updated by each step. */
  readonly store: StateStore;
  /** The state tensors each step updates, in the step's order. */
  readonly updatedState: readonly string[];
  /** Runs one iteration, commits the state and returns every output of the step. */
  step(): Promise<Record<string, TensorData>>;
}

/**
 * A compiled step with random inputs at the bucket its masks need, without onnxruntime's memory
 * arena as the trainer compiles it (`options` may add to or override that), from the state
 * seeded 0.
 */
export async function prepareIbotStep(options: CompileOptions = {}): Promise<PreparedIbotStep> {
  const { slots } = benchSlots();
  const built = buildIbotStep({ ...IBOT_BENCH, slots });
  const session = await CompiledGraph.create(built.graph, { memoryArena: false, ...options });
  const store = StateStore.fromParams(built.graph.params, 0);
  addAdamWMoments(store, built.trainable);
  const rng = new Rng(0);
  const feeds = randomInputs(built.graph.inputs, rng, (name) => store.has(name));
  for (const name of store.names()) feeds[name] = store.get(name);
  fillMaskInputs(feeds, benchMasks(), slots, benchGrid() ** 2);
  (feeds.drop_path_global as Float32Array).fill(1);
  (feeds.drop_path_local as Float32Array).fill(1);
  let step = 0;
  return {
    slots,
    store,
    updatedState: built.updatedState,
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
      return out;
    },
  };
}

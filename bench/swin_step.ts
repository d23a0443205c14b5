/**
 * The Swin iBOT training step at the benchmark configuration of the Swin issue, run as the trainer
 * runs it: Swin-T/7 (widths 96 to 768, depths 2 2 6 2, heads 3 6 12 24, drop path 0.1 as its
 * factory sets it) laid out for 64 px, 2 global crops of 64 px (a 2×2 mask grid at the last
 * stage) and 4 local crops of 32 px, out_dim 1024, shared head, norm_last_layer false, batch 32,
 * block masks at ratio 0.3, fp32, random inputs. The step is compiled with {@link DeviceSession}
 * on the CPU for the patch-slot bucket its masks need, and its state stays in a
 * {@link ResidentState}, so each step sends only the batch and the scalars.
 *
 * @module
 */

import { MaskGenerator } from "../lib/data/masking.ts";
import { SWIN_SIZES } from "../lib/models/swin.ts";
import type { TensorData } from "../lib/graph/graph.ts";
import { addAdamWMoments } from "../lib/optim/adamw.ts";
import { DeviceSession } from "../lib/runtime/device_session.ts";
import { ResidentState } from "../lib/runtime/resident_state.ts";
import { Rng } from "../lib/runtime/rng.ts";
import { StateStore } from "../lib/runtime/store.ts";
import { fillMaskInputs, fillStepDropPath } from "../lib/train/batch_inputs.ts";
import { buildIbotStep, type IbotStepConfig, stepScalarValues } from "../lib/train/step.ts";
import { BENCH_MASKING, benchGrid, benchMasks, benchSlots } from "./ibot_step.ts";
import { randomInputs } from "./random_inputs.ts";

/** The Swin benchmark configuration. */
export const SWIN_BENCH: IbotStepConfig = {
  backbone: { ...SWIN_SIZES.swin_tiny, windowSize: 7, imgSize: 64 },
  studentHead: { outDim: 1024, patchOutDim: 1024, sharedHead: true },
  teacherSharedHead: true,
  normLastLayer: false,
  useMaskedImModeling: true,
  batch: 32,
  globalCrops: 2,
  globalSize: 64,
  localCrops: 4,
  localSize: 32,
  maskSlots: new MaskGenerator(BENCH_MASKING).maxMasked(2, 2),
  dropPath: SWIN_SIZES.swin_tiny.dropPathRate,
  clipGrad: 3,
  lambda1: 1,
  lambda2: 1,
};

/** A compiled step on the device runtime, with its resident state and random inputs. */
export interface PreparedResidentStep {
  /** S: the patch slots the step runs on. */
  readonly slots: number;
  /** Runs one iteration and swaps the state; returns the step's statistics. */
  step(): Promise<Record<string, TensorData>>;
  /** Frees the session and the state. */
  release(): void;
}

/**
 * The step of `config` (the Swin benchmark's by default) on the CPU through the trainer's runtime,
 * without onnxruntime's memory arena as the trainer compiles it, at the bucket its masks need,
 * from the state seeded 0, with drop-path scales drawn once at the configuration's rate.
 */
export async function prepareResidentStep(
  config: IbotStepConfig = SWIN_BENCH,
): Promise<PreparedResidentStep> {
  const { slots } = benchSlots(config);
  const built = buildIbotStep({ ...config, slots });
  const session = await DeviceSession.create(built.graph, { device: "cpu", memoryArena: false });
  const store = StateStore.fromParams(built.graph.params, 0);
  addAdamWMoments(store, built.trainable);
  const state = await ResidentState.create(store, built.updatedState, { device: "cpu" });
  const rng = new Rng(0);
  const feeds = randomInputs(built.graph.inputs, rng, (name) => state.has(name));
  fillMaskInputs(feeds, benchMasks(config), slots, benchGrid(config) ** 2);
  fillStepDropPath(feeds, config, rng);
  let step = 0;
  return {
    slots,
    async step() {
      step++;
      const scalars = stepScalarValues({
        lr: 5e-4 * config.batch / 256,
        weightDecay: 0.04,
        step,
        lastLayerActive: true,
        lastLayerStep: step,
        momentum: 0.996,
        teacherTemp: 0.04,
        teacherPatchTemp: 0.04,
      });
      for (const [name, value] of Object.entries(scalars)) feeds[name] = Float32Array.of(value);
      const out = await session.run(feeds, state);
      state.swap();
      return out;
    },
    release() {
      session.release();
      state.release();
    },
  };
}

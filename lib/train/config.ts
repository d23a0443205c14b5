/**
 * Turns pre-training arguments into the pieces the trainer builds: the step configuration, the
 * multi-crop recipe and the masking configuration, with one clear sentence for each
 * inconsistency.
 *
 * @module
 */

import type { MultiCropConfig } from "../data/augment.ts";
import { MaskGenerator, type MaskingConfig } from "../data/masking.ts";
import { VIT_SIZES, type VitConfig } from "../models/vit.ts";
import type { PretrainArgs } from "./args.ts";
import type { IbotStepConfig } from "./step.ts";

/** Everything derived from the arguments. */
export interface RunConfig {
  /** The training graph's configuration. */
  readonly step: IbotStepConfig;
  /** The multi-crop recipe. */
  readonly crops: MultiCropConfig;
  /** The mask generation settings. */
  readonly masking: MaskingConfig;
  /** Side of the global-crop mask grid (global crop size / patch size). */
  readonly maskGrid: number;
}

const num = (args: PretrainArgs, name: string) => args[name] as number;
const bool = (args: PretrainArgs, name: string) => args[name] as boolean;
const nums = (args: PretrainArgs, name: string) => args[name] as number[];

/** The backbone the arguments describe (without the mask token flag). */
export function backboneFromArgs(args: PretrainArgs): Omit<VitConfig, "maskedImModeling"> {
  const arch = String(args.arch);
  const size = VIT_SIZES[arch];
  if (!size) {
    throw new Error(
      `--arch ${arch} is not available; choose one of ${
        Object.keys(VIT_SIZES).join(", ")
      } (Swin is not available yet)`,
    );
  }
  const patchSize = num(args, "patch_size");
  const imgSize = num(args, "img_size");
  if (imgSize % patchSize !== 0) {
    throw new Error(`--img_size ${imgSize} is not a multiple of --patch_size ${patchSize}`);
  }
  return { ...size, patchSize, imgSize };
}

/** Checks the arguments and derives the run's configuration. */
export function runConfigFromArgs(args: PretrainArgs): RunConfig {
  const backbone = backboneFromArgs(args);
  const p = backbone.patchSize;
  for (const name of ["global_crop_size", "local_crop_size"]) {
    if (num(args, name) % p !== 0) {
      throw new Error(`--${name} ${num(args, name)} is not a multiple of --patch_size ${p}`);
    }
  }
  const pairs = (name: string) => {
    const v = nums(args, name);
    if (v.length !== 2 || !(v[0] > 0 && v[0] <= v[1] && v[1] <= 1)) {
      throw new Error(`--${name} takes two numbers 0 < min ≤ max ≤ 1, got ${v.join(" ")}`);
    }
    return [v[0], v[1]] as const;
  };
  const crops: MultiCropConfig = {
    globalCropsNumber: num(args, "global_crops_number"),
    globalCropSize: num(args, "global_crop_size"),
    globalCropsScale: pairs("global_crops_scale"),
    localCropsNumber: num(args, "local_crops_number"),
    localCropSize: num(args, "local_crop_size"),
    localCropsScale: pairs("local_crops_scale"),
  };
  if (crops.globalCropsNumber < 1) throw new Error("--global_crops_number must be at least 1");
  if (crops.localCropsNumber < 0) throw new Error("--local_crops_number must not be negative");
  if (args.norm_in_head !== null && args.norm_in_head !== "none" && args.norm_in_head !== "None") {
    throw new Error("--norm_in_head: only none is available");
  }
  const masking: MaskingConfig = {
    predRatio: nums(args, "pred_ratio"),
    predRatioVar: nums(args, "pred_ratio_var"),
    predShape: args.pred_shape as "block" | "rand",
    predStartEpoch: num(args, "pred_start_epoch"),
  };
  const maskGrid = crops.globalCropSize / p;
  const maskSlots = Math.max(1, new MaskGenerator(masking).maxMasked(maskGrid, maskGrid));
  const epochs = num(args, "epochs");
  const warmup = num(args, "warmup_teacher_temp_epochs");
  const delay = num(args, "pred_start_epoch");
  if (epochs < warmup + delay) {
    throw new Error(
      `--epochs ${epochs} is shorter than --warmup_teacher_temp_epochs ${warmup} plus --pred_start_epoch ${delay}; lower the warm-up or train longer`,
    );
  }
  if (num(args, "warmup_epochs") > epochs) {
    throw new Error(
      `--warmup_epochs ${num(args, "warmup_epochs")} is longer than --epochs ${epochs}`,
    );
  }
  const batch = num(args, "batch_size_per_gpu");
  if (!(batch >= 1)) throw new Error("--batch_size_per_gpu must be at least 1");
  const step: IbotStepConfig = {
    backbone,
    studentHead: {
      outDim: num(args, "out_dim"),
      patchOutDim: num(args, "patch_out_dim"),
      sharedHead: bool(args, "shared_head"),
      hiddenDim: num(args, "head_hidden_dim"),
      bottleneckDim: num(args, "head_bottleneck_dim"),
    },
    teacherSharedHead: bool(args, "shared_head_teacher"),
    normLastLayer: bool(args, "norm_last_layer"),
    useMaskedImModeling: bool(args, "use_masked_im_modeling"),
    batch,
    globalCrops: crops.globalCropsNumber,
    globalSize: crops.globalCropSize,
    localCrops: crops.localCropsNumber,
    localSize: crops.localCropSize,
    maskSlots,
    dropPath: num(args, "drop_path"),
    clipGrad: num(args, "clip_grad"),
    lambda1: num(args, "lambda1"),
    lambda2: num(args, "lambda2"),
  };
  return { step, crops, masking, maskGrid };
}

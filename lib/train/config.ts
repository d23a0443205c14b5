/**
 * Turns pre-training arguments into the pieces the trainer builds: the step configuration, the
 * multi-crop recipe and the masking configuration, with one clear sentence for each
 * inconsistency.
 *
 * @module
 */

import type { MultiCropConfig } from "../data/augment.ts";
import { MaskGenerator, type MaskingConfig } from "../data/masking.ts";
import { VIT_SIZES } from "../models/vit.ts";
import { SWIN_PATCH_SIZE, SWIN_SIZES } from "../models/swin.ts";
import { type BackboneConfig, isSwin, patchGrid } from "../models/backbone.ts";
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
  /** Side of the global-crop mask grid (global crop size / patch size; / 32 for Swin). */
  readonly maskGrid: number;
}

/**
 * The backbone the arguments describe (without the mask token flag). A Swin's student drop path
 * is its factory's rate, whatever `--drop_path` says (the official quirk).
 */
export function backboneFromArgs(args: PretrainArgs): BackboneConfig {
  const { patch_size: patchSize, img_size: imgSize } = args;
  if (args.arch in SWIN_SIZES) {
    if (patchSize !== 4) {
      throw new Error(
        `--arch ${args.arch} needs --patch_size 4 (for Swin it sets the mask grid: 8·p px cells, the 32 px of its last stage), got ${patchSize}`,
      );
    }
    const size = SWIN_SIZES[args.arch as keyof typeof SWIN_SIZES];
    return { ...size, windowSize: args.window_size, imgSize };
  }
  const size = VIT_SIZES[args.arch];
  if (!size) {
    throw new Error(
      `--arch ${args.arch} is not available; choose one of ${
        [...Object.keys(VIT_SIZES), ...Object.keys(SWIN_SIZES)].join(", ")
      }`,
    );
  }
  if (imgSize % patchSize !== 0) {
    throw new Error(`--img_size ${imgSize} is not a multiple of --patch_size ${patchSize}`);
  }
  return { ...size, patchSize, imgSize };
}

/** Checks the arguments and derives the run's configuration. */
export function runConfigFromArgs(args: PretrainArgs): RunConfig {
  const backbone = backboneFromArgs(args);
  const grid = patchGrid(backbone);
  if (args.global_crop_size % grid !== 0) {
    throw new Error(
      `--global_crop_size ${args.global_crop_size} is not a multiple of the ${grid} px patch grid`,
    );
  }
  const localStep = isSwin(backbone) ? SWIN_PATCH_SIZE : grid;
  if (args.local_crop_size % localStep !== 0) {
    throw new Error(
      `--local_crop_size ${args.local_crop_size} is not a multiple of ${localStep} px`,
    );
  }
  const pair = (name: "global_crops_scale" | "local_crops_scale") => {
    const v = args[name];
    if (v.length !== 2 || !(v[0] > 0 && v[0] <= v[1] && v[1] <= 1)) {
      throw new Error(`--${name} takes two numbers 0 < min ≤ max ≤ 1, got ${v.join(" ")}`);
    }
    return [v[0], v[1]] as const;
  };
  const crops: MultiCropConfig = {
    globalCropsNumber: args.global_crops_number,
    globalCropSize: args.global_crop_size,
    globalCropsScale: pair("global_crops_scale"),
    localCropsNumber: args.local_crops_number,
    localCropSize: args.local_crop_size,
    localCropsScale: pair("local_crops_scale"),
  };
  const masking: MaskingConfig = {
    predRatio: args.pred_ratio,
    predRatioVar: args.pred_ratio_var,
    predShape: args.pred_shape,
    predStartEpoch: args.pred_start_epoch,
  };
  const maskGrid = crops.globalCropSize / grid;
  const maskSlots = Math.max(1, new MaskGenerator(masking).maxMasked(maskGrid, maskGrid));
  const { epochs, warmup_teacher_temp_epochs: warmup, pred_start_epoch: delay } = args;
  if (epochs < warmup + delay) {
    throw new Error(
      `--epochs ${epochs} is shorter than --warmup_teacher_temp_epochs ${warmup} plus --pred_start_epoch ${delay}; lower the warm-up or train longer`,
    );
  }
  if (args.warmup_epochs > epochs) {
    throw new Error(`--warmup_epochs ${args.warmup_epochs} is longer than --epochs ${epochs}`);
  }
  const step: IbotStepConfig = {
    backbone,
    studentHead: {
      outDim: args.out_dim,
      patchOutDim: args.patch_out_dim,
      sharedHead: args.shared_head,
      hiddenDim: args.head_hidden_dim,
      bottleneckDim: args.head_bottleneck_dim,
    },
    teacherSharedHead: args.shared_head_teacher,
    normLastLayer: args.norm_last_layer,
    useMaskedImModeling: args.use_masked_im_modeling,
    batch: args.batch_size_per_gpu,
    globalCrops: crops.globalCropsNumber,
    globalSize: crops.globalCropSize,
    localCrops: crops.localCropsNumber,
    localSize: crops.localCropSize,
    maskSlots,
    dropPath: isSwin(backbone) ? backbone.dropPathRate : args.drop_path,
    clipGrad: args.clip_grad,
    lambda1: args.lambda1,
    lambda2: args.lambda2,
    precision: args.precision,
    lossScaling: args.precision === "fp16",
  };
  return { step, crops, masking, maskGrid };
}

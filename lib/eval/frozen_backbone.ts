/**
 * What every frozen-backbone evaluation task shares: the official option names, and opening the
 * teacher or student backbone of any weights file (our checkpoint, an official `.pth`, an
 * extracted backbone) with its feature options.
 *
 * @module
 */

import {
  type BackboneFileOptions,
  backboneStore,
  defaultImageSize,
  inputStep,
  loadBackbone,
} from "../checkpoint/backbone_file.ts";
import { backboneBlocks } from "../models/backbone.ts";
import type { LoadedBackbone } from "../checkpoint/backbone_file.ts";
import type { StateStore } from "../runtime/store.ts";
import type { FeatureOptions } from "./knn_eval.ts";
import { type OptionSpec, type OptionTable, type OptionValues, required } from "../cli/options.ts";
import { readSubsetFile } from "../data/subset.ts";

/** Options naming a weights file and its backbone; every evaluation and analysis task has them. */
export const BACKBONE_FILE_OPTIONS = {
  pretrained_weights: {
    kind: "string",
    metavar: "file",
    help: "Required: our checkpoint (.safetensors), an official checkpoint (.pth), or an " +
      "extracted backbone (.pth {'state_dict'} or flat, .safetensors).",
  },
  checkpoint_key: {
    kind: "string",
    help: "Which network of a full checkpoint: teacher or student; state_dict for an extracted " +
      "backbone.",
    choices: ["teacher", "student", "state_dict"],
    default: "teacher",
  },
  arch: {
    kind: "string",
    metavar: "name",
    help: "Architecture when the file has no run arguments (default: from the weight shapes).",
  },
  patch_size: {
    kind: "int",
    help: "ViT patch size when the file has no run arguments (default: from the weights).",
    min: 1,
  },
  window_size: {
    kind: "int",
    help: "Swin window size when the file has no run arguments (default: from the weights).",
    min: 1,
  },
} as const satisfies OptionTable;

/** The values of {@link BACKBONE_FILE_OPTIONS}. */
export type BackboneFileValues = OptionValues<typeof BACKBONE_FILE_OPTIONS>;

/** {@link BACKBONE_FILE_OPTIONS} of the tasks that also need the projection head. */
export const HEAD_FILE_OPTIONS = {
  ...BACKBONE_FILE_OPTIONS,
  pretrained_weights: {
    ...BACKBONE_FILE_OPTIONS.pretrained_weights,
    help: `${BACKBONE_FILE_OPTIONS.pretrained_weights.help} It must hold the head: a full ` +
      "checkpoint.",
  },
} as const satisfies OptionTable;

/** `--device`: where every evaluation and analysis task runs its network. */
export const DEVICE_OPTIONS = {
  device: {
    kind: "string",
    help: "Where the network runs: cpu, or cuda (GPU 0, through onnxruntime's CUDA execution " +
      "provider; set it up with deno task enable-cuda).",
    choices: ["cpu", "cuda"],
    default: "cpu",
  },
} as const satisfies OptionTable;

/** The dataset options of the tasks that read one: `--data_path` and `--image_size`. */
export const DATASET_OPTIONS = {
  data_path: {
    kind: "string",
    metavar: "path",
    help: "Dataset with train and test splits (default: the one the checkpoint was trained on).",
  },
  image_size: {
    kind: "int",
    help: "Side of the images the backbone sees, a multiple of the patch size (default: the " +
      "run's global crop size, else 224).",
    min: 1,
  },
} as const satisfies OptionTable;

/**
 * `--n_last_blocks` of the tasks that take features from the last blocks, with the task's
 * official default (1 for k-NN and logistic regression, 4 for linear probing).
 */
export function nLastBlocksOption(defaultBlocks: number) {
  return {
    kind: "int",
    help: "CLS tokens of the last N blocks (Swin: pooled tokens of the last N, across stages).",
    default: defaultBlocks,
    min: 1,
  } as const satisfies OptionSpec;
}

/** The options shared by `deno task knn` and `deno task linear`. */
export const FROZEN_BACKBONE_OPTIONS = {
  ...BACKBONE_FILE_OPTIONS,
  ...DATASET_OPTIONS,
  ...DEVICE_OPTIONS,
  avgpool_patchtokens: {
    kind: "int",
    help: "Features: 0 the CLS tokens, 1 the mean patch token, 2 both.",
    choices: [0, 1, 2],
    default: 0,
  },
  num_workers: { kind: "int", help: "Data-loading workers (default: cores − 1).", min: 1 },
  train_subset: {
    kind: "string",
    metavar: "file",
    help: "Use only the train images this subset file names (one a line, as the SimCLRv2 1% and " +
      "10% files; data/fashion-mnist/subsets has the bundled data's).",
  },
} as const satisfies OptionTable;

/** The values of {@link FROZEN_BACKBONE_OPTIONS}. */
export type FrozenBackboneValues = OptionValues<typeof FROZEN_BACKBONE_OPTIONS>;

/** Loads the backbone that `--pretrained_weights` and the options beside it name. */
export async function openBackboneFile(values: BackboneFileValues): Promise<LoadedBackbone> {
  const path = required(values.pretrained_weights, "pretrained_weights");
  const options: BackboneFileOptions = {
    key: values.checkpoint_key,
    arch: values.arch,
    patchSize: values.patch_size,
    windowSize: values.window_size,
  };
  return await loadBackbone(path, options);
}

/** A file's backbone ready for feature extraction. */
export interface FrozenBackbone {
  /** The backbone as read from the file. */
  readonly loaded: LoadedBackbone;
  /** Its weights under `features.prefix`. */
  readonly store: StateStore;
  /** The dataset: `--data_path`, else the one the checkpoint was trained on. */
  readonly dataPath: string;
  /** Architecture, scope, crop size and feature variant for the extraction. */
  readonly features: FeatureOptions;
  /** `--train_subset`: the subset file that restricts the train split, if any. */
  readonly trainSubset?: string;
}

/**
 * Loads the backbone and checks the options against it (`nLastBlocks` ≥ 1 CLS tokens of the last
 * blocks) and the `--train_subset` file, if any, for being readable; a problem gets one sentence.
 */
export async function openFrozenBackbone(
  values: FrozenBackboneValues,
  nLastBlocks: number,
): Promise<FrozenBackbone> {
  const loaded = await openBackboneFile(values);
  const blocks = backboneBlocks(loaded.config);
  if (nLastBlocks > blocks) {
    throw new Error(`--n_last_blocks ${nLastBlocks} exceeds the backbone's ${blocks} blocks`);
  }
  const dataPath = dataPathOption(values.data_path, loaded);
  const size = imageSizeOption(values.image_size, loaded);
  if (values.train_subset !== undefined) await readSubsetFile(values.train_subset);
  const prefix = "model";
  return {
    loaded,
    store: backboneStore(loaded, prefix),
    dataPath,
    features: {
      backbone: loaded.config,
      prefix,
      size,
      avgpool: values.avgpool_patchtokens,
      nLastBlocks,
      workers: values.num_workers,
      device: values.device,
    },
    trainSubset: values.train_subset,
  };
}

/** `dataPath` (`--data_path`), else the dataset the checkpoint was trained on, or one sentence. */
export function dataPathOption(dataPath: string | undefined, loaded: LoadedBackbone): string {
  const path = dataPath ?? loaded.args?.data_path;
  if (path === undefined) {
    throw new Error(`${loaded.path} does not name its dataset; pass --data_path`);
  }
  return String(path);
}

/**
 * `imageSize` (`--image_size`), else {@link defaultImageSize}; a multiple of the patch size (4
 * for a Swin).
 */
export function imageSizeOption(imageSize: number | undefined, loaded: LoadedBackbone): number {
  const size = imageSize ?? defaultImageSize(loaded);
  const patch = inputStep(loaded.config);
  if (size % patch !== 0) {
    throw new Error(`--image_size ${size} is not a multiple of the patch size ${patch}`);
  }
  return size;
}

/** "the teacher of FILE (epoch N)" for progress lines. */
export function describeBackbone(loaded: LoadedBackbone): string {
  const epoch = loaded.epoch === undefined ? "" : ` (epoch ${loaded.epoch})`;
  return `the ${loaded.key} of ${loaded.path}${epoch}`;
}

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
  loadBackbone,
} from "../checkpoint/backbone_file.ts";
import type { LoadedBackbone } from "../checkpoint/backbone_file.ts";
import type { StateStore } from "../runtime/store.ts";
import type { FeatureOptions } from "./knn_eval.ts";

/** `node:util` parseArgs specs of the options shared by the evaluation and analysis tasks. */
export const BACKBONE_FILE_OPTIONS = {
  pretrained_weights: { type: "string" },
  checkpoint_key: { type: "string", default: "teacher" },
  arch: { type: "string" },
  patch_size: { type: "string" },
} as const;

/** Help lines of {@link BACKBONE_FILE_OPTIONS}. */
export const BACKBONE_FILE_HELP =
  `  --pretrained_weights FILE   our checkpoint (.safetensors), an official checkpoint (.pth), or
                              an extracted backbone (.pth {'state_dict'} or flat, .safetensors)
  --checkpoint_key KEY        teacher (default), student, or state_dict
  --arch NAME                 architecture when the file has no run arguments (default: from
                              the weight shapes)
  --patch_size P              patch size when the file has no run arguments (default: from the
                              weights)`;

/** `node:util` parseArgs specs of the options shared by `deno task knn` and `deno task linear`. */
export const FROZEN_BACKBONE_OPTIONS = {
  ...BACKBONE_FILE_OPTIONS,
  data_path: { type: "string" },
  avgpool_patchtokens: { type: "string", default: "0" },
  image_size: { type: "string" },
  num_workers: { type: "string" },
} as const;

/** Reads `--pretrained_weights`, `--checkpoint_key`, `--arch` and `--patch_size` and loads the backbone. */
export async function openBackboneFile(
  values: Readonly<Record<string, unknown>>,
): Promise<LoadedBackbone> {
  if (!values.pretrained_weights) throw new Error("--pretrained_weights is required (see --help)");
  const key = choiceOption(
    { checkpoint_key: values.checkpoint_key ?? "teacher" },
    "checkpoint_key",
    ["teacher", "student", "state_dict"],
  );
  const options: BackboneFileOptions = {
    key,
    arch: values.arch === undefined ? undefined : String(values.arch),
    patchSize: values.patch_size === undefined ? undefined : positiveInteger(values, "patch_size"),
  };
  return await loadBackbone(String(values.pretrained_weights), options);
}

/** An option that must be one of `choices`, or one sentence naming it and them. */
export function choiceOption<const T extends string>(
  values: Readonly<Record<string, unknown>>,
  name: string,
  choices: readonly T[],
): T {
  const value = String(values[name]);
  if (!(choices as readonly string[]).includes(value)) {
    const listed = choices.length > 2
      ? `${choices.slice(0, -1).join(", ")} or ${choices.at(-1)}`
      : choices.join(" or ");
    throw new Error(`--${name} must be ${listed}, got ${value}`);
  }
  return value as T;
}

/** A positive integer option, or one sentence naming it. */
export function positiveInteger(values: Readonly<Record<string, unknown>>, name: string): number {
  const value = Number(values[name]);
  if (!(Number.isInteger(value) && value >= 1)) {
    throw new Error(`--${name} must be a positive integer, got ${values[name]}`);
  }
  return value;
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
}

/** Checks the shared options and loads the backbone; bad values get one sentence. */
export async function openFrozenBackbone(
  values: Readonly<Record<string, unknown>>,
  nLastBlocks: number,
): Promise<FrozenBackbone> {
  const avgpool = Number(values.avgpool_patchtokens);
  if (![0, 1, 2].includes(avgpool)) throw new Error("--avgpool_patchtokens must be 0, 1 or 2");
  if (!(Number.isInteger(nLastBlocks) && nLastBlocks >= 1)) {
    throw new Error("--n_last_blocks must be a positive integer");
  }
  const loaded = await openBackboneFile(values);
  if (nLastBlocks > loaded.config.depth) {
    throw new Error(
      `--n_last_blocks ${nLastBlocks} exceeds the backbone's ${loaded.config.depth} blocks`,
    );
  }
  const dataPath = dataPathOption(values, loaded);
  const size = imageSizeOption(values, loaded);
  const prefix = "model";
  return {
    loaded,
    store: backboneStore(loaded, prefix),
    dataPath,
    features: {
      backbone: loaded.config,
      prefix,
      size,
      avgpool: avgpool as 0 | 1 | 2,
      nLastBlocks,
      workers: values.num_workers ? positiveInteger(values, "num_workers") : undefined,
    },
  };
}

/** `--data_path`, else the dataset the checkpoint was trained on, else one sentence. */
export function dataPathOption(
  values: Readonly<Record<string, unknown>>,
  loaded: LoadedBackbone,
): string {
  const dataPath = values.data_path ?? loaded.args?.data_path;
  if (dataPath === undefined) {
    throw new Error(`${loaded.path} does not name its dataset; pass --data_path`);
  }
  return String(dataPath);
}

/** `--image_size` (a multiple of the patch size), else {@link defaultImageSize}. */
export function imageSizeOption(
  values: Readonly<Record<string, unknown>>,
  loaded: LoadedBackbone,
): number {
  const size = values.image_size === undefined
    ? defaultImageSize(loaded)
    : positiveInteger(values, "image_size");
  const patch = loaded.config.patchSize;
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

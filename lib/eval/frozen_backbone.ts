/**
 * What every frozen-backbone evaluation task shares: the official option names, and opening a
 * training checkpoint's teacher or student backbone with its feature options.
 *
 * @module
 */

import { loadTrainingCheckpoint, type TrainingCheckpoint } from "../train/checkpoint.ts";
import { backboneFromArgs } from "../train/config.ts";
import type { FeatureOptions } from "./knn_eval.ts";

/** `node:util` parseArgs specs of the options shared by `deno task knn` and `deno task linear`. */
export const FROZEN_BACKBONE_OPTIONS = {
  pretrained_weights: { type: "string" },
  checkpoint_key: { type: "string", default: "teacher" },
  data_path: { type: "string" },
  avgpool_patchtokens: { type: "string", default: "0" },
  image_size: { type: "string" },
  num_workers: { type: "string" },
} as const;

/** A checkpoint's backbone ready for feature extraction. */
export interface FrozenBackbone {
  /** `teacher` or `student`. */
  readonly key: string;
  readonly checkpoint: TrainingCheckpoint;
  /** The dataset: `--data_path`, else the one the checkpoint was trained on. */
  readonly dataPath: string;
  readonly features: FeatureOptions;
}

/** Checks the shared options and loads the checkpoint; bad values get one sentence. */
export async function openFrozenBackbone(
  values: Readonly<Record<string, unknown>>,
  nLastBlocks: number,
): Promise<FrozenBackbone> {
  if (!values.pretrained_weights) throw new Error("--pretrained_weights is required (see --help)");
  const key = String(values.checkpoint_key);
  if (key !== "teacher" && key !== "student") {
    throw new Error(`--checkpoint_key must be teacher or student, got ${key}`);
  }
  const avgpool = Number(values.avgpool_patchtokens);
  if (![0, 1, 2].includes(avgpool)) throw new Error("--avgpool_patchtokens must be 0, 1 or 2");
  if (!(Number.isInteger(nLastBlocks) && nLastBlocks >= 1)) {
    throw new Error("--n_last_blocks must be a positive integer");
  }
  const checkpoint = await loadTrainingCheckpoint(String(values.pretrained_weights));
  return {
    key,
    checkpoint,
    dataPath: String(values.data_path ?? checkpoint.args.data_path),
    features: {
      backbone: backboneFromArgs(checkpoint.args),
      prefix: key,
      size: Number(values.image_size ?? checkpoint.args.global_crop_size),
      avgpool: avgpool as 0 | 1 | 2,
      nLastBlocks,
      workers: values.num_workers ? Number(values.num_workers) : undefined,
    },
  };
}

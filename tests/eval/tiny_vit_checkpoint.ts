/**
 * A tiny ViT training checkpoint for the evaluation tasks' end-to-end tests: vit_mini, patch 4,
 * 16 px, its run arguments naming a 48 + 16 image dataset written beside it.
 */

import { join } from "node:path";
import { writeVendoredFolder } from "../data/fixtures.ts";
import { saveTrainingCheckpoint } from "../../lib/checkpoint/training_checkpoint.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { vit, VIT_SIZES } from "../../lib/models/vit.ts";
import { StateStore } from "../../lib/runtime/store.ts";
import { parsePretrainArgs } from "../../lib/train/args.ts";

/** Writes `dir/checkpoint.safetensors` (epoch 1) and its dataset `dir/data`; returns the path. */
export async function tinyVitCheckpoint(dir: string): Promise<string> {
  const data = await writeVendoredFolder(join(dir, "data"), 48, 16);
  const { args } = parsePretrainArgs([
    ...["--arch=vit_mini", "--patch_size=4", "--img_size=16", "--global_crop_size=16"],
    `--data_path=${data}`,
  ]);
  const g = new Graph();
  const images = g.input("images", "float32", [1, 3, 16, 16]);
  for (const net of ["student", "teacher"]) {
    g.scope(net, () => {
      vit(g, { ...VIT_SIZES.vit_mini, patchSize: 4, imgSize: 16, maskedImModeling: false }, {
        images,
      });
    });
  }
  const path = join(dir, "checkpoint.safetensors");
  await saveTrainingCheckpoint(
    path,
    StateStore.fromParams(g.params, 1),
    { epoch: 1, iteration: 0, step: 3, lastLayerStep: 3 },
    args,
  );
  return path;
}

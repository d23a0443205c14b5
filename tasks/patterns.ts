/**
 * `deno task patterns`: semantic patterns (official `extract_topk_cluster.py`). The head of a
 * full checkpoint assigns every patch (`--type patch`) or image (`--type cls`) of a dataset split
 * to its argmax prototype; the memory bank of (max logit, prototype) is cached in
 * `{output_dir}/memory_{type}.safetensors` and reused while the weights file, checkpoint key,
 * data, split and image size stay the same. For the most populated prototypes, the top-k patch
 * neighbourhoods (centre patch highlighted, near-black crops skipped) or images are pasted into
 * one grid picture each, `{output_dir}/c{type}_cid{prototype}_top{topk}.png` (PNG where the
 * official writes JPEG). Images are resized (shorter side to `image_size // 7 * 8`) and
 * centre-cropped as the official does; neighbourhoods reaching past the picture are padded black.
 * A Swin's patches are its last-stage tokens (32 pixels a side), its CLS their average.
 *
 *   deno task patterns --pretrained_weights out/pretrain/checkpoint.safetensors [--type cls]
 */

import { join, resolve } from "node:path";
import { BackboneRunner, checkTokenMultiple } from "../lib/analysis/backbone_runner.ts";
import {
  buildMemoryBank,
  cachedMemoryBank,
  loadPatternImage,
  patternPicture,
  patternResize,
  topPrototypes,
  weightsIdentity,
} from "../lib/analysis/patterns.ts";
import { savePng } from "../lib/analysis/picture.ts";
import { openSource, resolveDataPath } from "../lib/data/source.ts";
import { Progress } from "../lib/runtime/progress.ts";
import {
  dataPathOption,
  DATASET_OPTIONS,
  describeBackbone,
  DEVICE_OPTIONS,
  HEAD_FILE_OPTIONS,
  imageSizeOption,
  openBackboneFile,
} from "../lib/eval/frozen_backbone.ts";
import { patchGrid } from "../lib/models/backbone.ts";
import type { OptionTable, OptionValues } from "../lib/cli/options.ts";
import { runTask } from "./run_task.ts";

const OPTIONS = {
  ...HEAD_FILE_OPTIONS,
  ...DEVICE_OPTIONS,
  type: {
    kind: "string",
    help: "Assign patch tokens or CLS tokens.",
    choices: ["patch", "cls"],
    default: "patch",
  },
  data_path: { ...DATASET_OPTIONS.data_path, help: "Dataset (default: the run's --data_path)." },
  split: {
    kind: "string",
    help: "Which split (test by default, as the official uses validation data).",
    choices: ["train", "test"],
    default: "test",
  },
  image_size: {
    ...DATASET_OPTIONS.image_size,
    help: "Centre-crop side after resizing the shorter side to S // 7 * 8 (default: the run's " +
      "global crop size, else 224).",
  },
  batch_size: { kind: "int", help: "Images per forward pass.", default: 32, min: 1 },
  show_pics: {
    kind: "int",
    help: "Pictures for the N most populated prototypes.",
    default: 20,
    min: 1,
  },
  topk: { kind: "int", help: "Cells per picture, in a ceil(√K) square grid.", default: 36, min: 1 },
  patch_window: {
    kind: "int",
    help: "Neighbourhood side in patches, patch type.",
    default: 5,
    min: 1,
  },
  output_dir: {
    kind: "string",
    metavar: "dir",
    help: "Memory bank and pictures.",
    default: "patterns",
  },
  panel_size: {
    kind: "int",
    metavar: "px",
    help: "Enlarge each grid by the smallest whole factor (nearest neighbour) that makes its " +
      "cells at least PX pixels wide (1 keeps the cells' size).",
    default: 224,
    min: 1,
  },
} as const satisfies OptionTable;

async function main(values: OptionValues<typeof OPTIONS>): Promise<number> {
  const {
    type,
    split,
    batch_size: batchSize,
    show_pics: showPics,
    topk,
    patch_window: window,
    panel_size: panelSize,
  } = values;
  const loaded = await openBackboneFile(values);
  if (loaded.head.size === 0) {
    throw new Error(
      `${loaded.path} holds no head weights; semantic patterns need a full checkpoint ` +
        `(our training .safetensors, or an official .pth with teacher and student)`,
    );
  }
  const patchSize = patchGrid(loaded.config);
  const size = imageSizeOption(values.image_size, loaded);
  checkTokenMultiple(size, loaded.config);
  const dataPath = dataPathOption(values.data_path, loaded);
  const source = await openSource(await resolveDataPath(dataPath, split));
  const outputDir = values.output_dir;
  await Deno.mkdir(outputDir, { recursive: true });

  const bankPath = join(outputDir, `memory_${type}.safetensors`);
  const key = {
    ...(await weightsIdentity(loaded.path)),
    checkpoint_key: loaded.key,
    data: resolve(dataPath),
    split,
    images: String(source.length),
  };
  const { bank, reused } = await cachedMemoryBank(bankPath, { type, imageSize: size }, key, () => {
    console.log(
      `computing the ${type} memory bank of ${describeBackbone(loaded)} on ${source.length} ` +
        `${split} images of ${dataPath} (resize ${patternResize(size)}, crop ${size})`,
    );
    const progress = new Progress({ label: `${type} memory bank`, write: console.log });
    return withRunner(loaded, values.device, async (runner) => {
      const bank = await buildMemoryBank(runner, source, {
        type,
        imageSize: size,
        batchSize,
        onProgress: (done, total) => progress.update(done, total),
      });
      progress.finish();
      return bank;
    });
  });
  console.log(`${reused ? "reusing memory bank" : "wrote memory bank"} ${bankPath}`);

  const entries = bank.maxLogit.length;
  const used = topPrototypes(bank.counts, bank.prototypes).length;
  const top = topPrototypes(bank.counts, showPics);
  console.log(
    `${entries} ${type === "patch" ? "patches" : "images"} use ${used} of ${bank.prototypes} ` +
      `prototypes; the ${top.length} most populated:`,
  );
  for (const [rank, c] of top.entries()) {
    const share = (100 * bank.counts[c] / entries).toFixed(2);
    console.log(`  #${rank} prototype ${c}: ${bank.counts[c]} (${share}%)`);
  }
  const load = (image: number) => loadPatternImage(source, image, size);
  for (const c of top) {
    const { picture, cells, dark, scale } = await patternPicture(bank, c, load, {
      patchSize,
      topk,
      window,
      panelSize,
    });
    const file = join(outputDir, `c${type}_cid${c}_top${topk}.png`);
    await savePng(file, picture);
    const skipped = type === "patch" ? `, ${dark} dark crops skipped` : "";
    const short = cells.length >= topk
      ? ""
      : type === "patch"
      ? ` (only ${cells.length} of ${topk} qualify)`
      : ` (only ${cells.length} images are assigned to it)`;
    console.log(
      `wrote ${file}: ${cells.length} cells${skipped}${short}, enlarged ${scale}× to ` +
        `${picture.width}×${picture.height} px`,
    );
  }
  return 0;
}

async function withRunner<T>(
  loaded: Parameters<typeof BackboneRunner.create>[0],
  device: BackboneRunner["device"],
  body: (runner: BackboneRunner) => Promise<T>,
): Promise<T> {
  const runner = BackboneRunner.create(loaded, { withHead: true, device });
  try {
    return await body(runner);
  } finally {
    await runner.close();
  }
}

await runTask({
  usage: "deno task patterns --pretrained_weights FILE [options]",
  about: "Semantic patterns (official extract_topk_cluster.py): the patches or images each of " +
    "the most populated prototypes of the head gathers.",
  options: OPTIONS,
}, main);

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
 *
 *   deno task patterns --pretrained_weights out/pretrain/checkpoint.safetensors [--type cls]
 */

import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { BackboneRunner } from "../lib/analysis/backbone_runner.ts";
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
import {
  BACKBONE_FILE_HELP,
  BACKBONE_FILE_OPTIONS,
  choiceOption,
  dataPathOption,
  describeBackbone,
  imageSizeOption,
  openBackboneFile,
  positiveInteger,
} from "../lib/eval/frozen_backbone.ts";
import { runTask } from "./run_task.ts";

const HELP = `Usage: deno task patterns --pretrained_weights FILE [options]

${BACKBONE_FILE_HELP}
                              (the file must hold the head: a full checkpoint)
  --type patch|cls            assign patch tokens or CLS tokens (default patch)
  --data_path PATH            dataset (default: the run's --data_path)
  --split train|test          which split (default test, as the official uses validation data)
  --image_size S              centre-crop side after resizing the shorter side to S // 7 * 8
                              (default: the run's global crop size, else 224)
  --batch_size B              images per forward pass (default 32)
  --show_pics N               pictures for the N most populated prototypes (default 20)
  --topk K                    cells per picture, in a ceil(√K) square grid (default 36)
  --patch_window W            neighbourhood side in patches, patch type (default 5)
  --output_dir DIR            memory bank and pictures (default patterns)`;

function main(): Promise<number> | number {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      ...BACKBONE_FILE_OPTIONS,
      type: { type: "string", default: "patch" },
      data_path: { type: "string" },
      split: { type: "string", default: "test" },
      image_size: { type: "string" },
      batch_size: { type: "string", default: "32" },
      show_pics: { type: "string", default: "20" },
      topk: { type: "string", default: "36" },
      patch_window: { type: "string", default: "5" },
      output_dir: { type: "string", default: "patterns" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  return run(values);
}

async function run(values: Record<string, string | boolean | undefined>): Promise<number> {
  const type = choiceOption(values, "type", ["patch", "cls"]);
  const split = choiceOption(values, "split", ["train", "test"]);
  const batchSize = positiveInteger(values, "batch_size");
  const showPics = positiveInteger(values, "show_pics");
  const topk = positiveInteger(values, "topk");
  const window = positiveInteger(values, "patch_window");
  const loaded = await openBackboneFile(values);
  if (loaded.head.size === 0) {
    throw new Error(
      `${loaded.path} holds no head weights; semantic patterns need a full checkpoint ` +
        `(our training .safetensors, or an official .pth with teacher and student)`,
    );
  }
  const patchSize = loaded.config.patchSize;
  const size = imageSizeOption(values, loaded);
  const dataPath = dataPathOption(values, loaded);
  const source = await openSource(await resolveDataPath(dataPath, split));
  const outputDir = String(values.output_dir);
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
    return withRunner(loaded, (runner) =>
      buildMemoryBank(runner, source, {
        type,
        imageSize: size,
        batchSize,
        onProgress: progress(Math.ceil(source.length / batchSize)),
      }));
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
    const { picture, cells, dark } = await patternPicture(bank, c, load, {
      patchSize,
      topk,
      window,
    });
    const file = join(outputDir, `c${type}_cid${c}_top${topk}.png`);
    await savePng(file, picture);
    const skipped = type === "patch" ? `, ${dark} dark crops skipped` : "";
    const short = cells.length >= topk
      ? ""
      : type === "patch"
      ? ` (only ${cells.length} of ${topk} qualify)`
      : ` (only ${cells.length} images are assigned to it)`;
    console.log(`wrote ${file}: ${cells.length} cells${skipped}${short}`);
  }
  return 0;
}

async function withRunner<T>(
  loaded: Parameters<typeof BackboneRunner.create>[0],
  body: (runner: BackboneRunner) => Promise<T>,
): Promise<T> {
  const runner = BackboneRunner.create(loaded, { withHead: true });
  try {
    return await body(runner);
  } finally {
    await runner.close();
  }
}

/** A progress printer for `batches` batches: about ten lines, and the last. */
function progress(batches: number) {
  const every = Math.max(1, Math.round(batches / 10));
  let batch = 0;
  return (done: number, total: number) => {
    batch++;
    if (batch % every === 0 || done === total) console.log(`  ${done}/${total} images`);
  };
}

await runTask(main);

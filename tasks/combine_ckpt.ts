/**
 * `deno task combine_ckpt`: a backbone and its best linear classifier in one file (official
 * `analysis/combine_ckpt.py`), the model the occlusion and shuffle analyses score.
 *
 *   deno task combine_ckpt --checkpoint_backbone out/pretrain/checkpoint.safetensors
 *     --checkpoint_linear out/pretrain/linear_teacher.safetensors
 *     --output_file out/pretrain/full_linear.pth
 */

import { loadBackbone } from "../lib/checkpoint/backbone_file.ts";
import { readLinearHead, writeCombinedCheckpoint } from "../lib/checkpoint/combined_checkpoint.ts";
import { type OptionTable, type OptionValues, required } from "../lib/cli/options.ts";
import { BACKBONE_FILE_OPTIONS } from "../lib/eval/frozen_backbone.ts";
import { runTask } from "./run_task.ts";

const OPTIONS = {
  checkpoint_backbone: BACKBONE_FILE_OPTIONS.pretrained_weights,
  checkpoint_key: BACKBONE_FILE_OPTIONS.checkpoint_key,
  checkpoint_linear: {
    kind: "string",
    metavar: "file",
    help: "Required: the linear head, linear_<key>.safetensors of deno task linear or an " +
      "official checkpoint_<key>_linear.pth.",
  },
  output_file: {
    kind: "string",
    metavar: "file",
    help: "Required: the combined model, .pth (the official layout) or .safetensors.",
  },
  n_last_blocks: {
    kind: "int",
    help: "Features of an official linear .pth, which does not record them: CLS tokens of the " +
      "last N blocks.",
    default: 4,
    min: 1,
  },
  avgpool_patchtokens: {
    kind: "int",
    help: "Features of an official linear .pth: 0 the CLS tokens, 1 the mean patch token, 2 both.",
    choices: [0, 1, 2],
    default: 0,
  },
} as const satisfies OptionTable;

async function main(values: OptionValues<typeof OPTIONS>): Promise<number> {
  const backbonePath = required(values.checkpoint_backbone, "checkpoint_backbone");
  const linearPath = required(values.checkpoint_linear, "checkpoint_linear");
  const output = required(values.output_file, "output_file");
  const backbone = await loadBackbone(backbonePath, { key: values.checkpoint_key });
  const head = await readLinearHead(linearPath, {
    nLastBlocks: values.n_last_blocks,
    avgpool: values.avgpool_patchtokens,
  });
  await writeCombinedCheckpoint(output, { backbone, head });
  const acc = head.top1 === undefined ? "" : ` with acc ${head.top1}`;
  console.log(
    `saved the ${backbone.key} backbone of ${backbonePath} and the linear head of ${linearPath}` +
      `${acc} (${head.classes} classes on ${head.dim} features) to ${output}`,
  );
  return 0;
}

await runTask({
  usage: "deno task combine_ckpt --checkpoint_backbone FILE --checkpoint_linear FILE " +
    "--output_file FILE",
  about: "Combines a backbone and its linear head into one file (official combine_ckpt.py).",
  options: OPTIONS,
}, main);

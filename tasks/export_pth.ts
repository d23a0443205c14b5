/**
 * `deno task export_pth`: our training checkpoint (.safetensors) as the official full
 * `checkpoint.pth` (student with `module.`, teacher, the student's AdamW state, epoch, args,
 * ibot_loss).
 *
 *   deno task export_pth CKPT OUT.pth
 */

import { toOfficialCheckpoint } from "../lib/checkpoint/official_checkpoint.ts";
import { writePth } from "../lib/checkpoint/pth.ts";
import { loadTrainingCheckpoint } from "../lib/checkpoint/training_checkpoint.ts";
import { runTask } from "./run_task.ts";

async function main(_values: unknown, positionals: readonly string[]): Promise<number> {
  const [input, output] = positionals;
  const checkpoint = await loadTrainingCheckpoint(input);
  if (checkpoint.iteration > 0) {
    console.log(
      `note: ${input} was saved ${checkpoint.iteration} batches into epoch ${checkpoint.epoch}; ` +
        `the export records epoch ${checkpoint.epoch} (completed epochs)`,
    );
  }
  await writePth(output, toOfficialCheckpoint(checkpoint));
  console.log(`wrote ${output} (epoch ${checkpoint.epoch})`);
  return 0;
}

await runTask({
  usage: "deno task export_pth CKPT OUT.pth",
  positionals: {
    CKPT: "Training checkpoint (.safetensors) written by deno task pretrain.",
    "OUT.pth":
      "The official full checkpoint layout, readable by torch.load (with the AdamW state).",
  },
  options: {},
}, main);

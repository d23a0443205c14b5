/**
 * `deno task export_pth`: our training checkpoint (.safetensors) as the official full
 * `checkpoint.pth` (student with `module.`, teacher, the student's AdamW state, epoch, args,
 * ibot_loss).
 *
 *   deno task export_pth CKPT OUT.pth
 */

import { parseArgs } from "node:util";
import { toOfficialCheckpoint } from "../lib/checkpoint/official_checkpoint.ts";
import { writePth } from "../lib/checkpoint/pth.ts";
import { loadTrainingCheckpoint } from "../lib/checkpoint/training_checkpoint.ts";
import { runTask } from "./run_task.ts";

const HELP = `Usage: deno task export_pth CKPT OUT.pth

  CKPT      training checkpoint (.safetensors) written by deno task pretrain
  OUT.pth   the official full checkpoint layout, readable by torch.load (with the AdamW state)`;

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: { help: { type: "boolean", short: "h" } },
    allowPositionals: true,
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (positionals.length !== 2) throw new Error("expected CKPT and OUT.pth (see --help)");
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

await runTask(main);

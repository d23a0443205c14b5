/**
 * `deno task extract_backbone`: the backbone of a checkpoint's teacher or student, as the root
 * `extract_backbone_weights.py` writes it (`{'state_dict': …}`, `backbone.` stripped), or as a
 * flat safetensors file.
 *
 *   deno task extract_backbone CKPT OUT [--checkpoint_key teacher|student] [--with_head]
 *     [--format pth|safetensors]
 *
 * CKPT is our training checkpoint (.safetensors) or an official full checkpoint (.pth).
 */

import { extractBackbone } from "../lib/checkpoint/official_checkpoint.ts";
import { readStateDict } from "../lib/checkpoint/weights_file.ts";
import { type PyDict, writePth } from "../lib/checkpoint/pth.ts";
import { saveSafetensors } from "../lib/checkpoint/safetensors.ts";
import type { NamedTensor } from "../lib/runtime/named_tensor.ts";
import type { OptionTable, OptionValues } from "../lib/cli/options.ts";
import { runTask } from "./run_task.ts";

const OPTIONS = {
  checkpoint_key: {
    kind: "string",
    help: "Which network.",
    choices: ["teacher", "student"],
    default: "teacher",
  },
  with_head: { kind: "flag", help: "Keep the head.* keys too." },
  format: {
    kind: "string",
    help: "pth: {'state_dict': ...}, as extract_backbone_weights.py writes; safetensors: flat.",
    choices: ["pth", "safetensors"],
    default: "pth",
  },
} as const satisfies OptionTable;

async function main(
  values: OptionValues<typeof OPTIONS>,
  positionals: readonly string[],
): Promise<number> {
  const [input, output] = positionals;
  const { checkpoint_key: key, format } = values;
  const extracted = extractBackbone(await readStateDict(input, key), values.with_head);
  const stateDict = extracted.get("state_dict") as PyDict;
  if (format === "pth") {
    await writePth(output, extracted);
  } else {
    await saveSafetensors(
      output,
      new Map([...stateDict].map(([k, t]) => [String(k), t as NamedTensor])),
    );
  }
  console.log(`wrote the ${key} backbone of ${input} (${stateDict.size} tensors) to ${output}`);
  return 0;
}

await runTask({
  usage: "deno task extract_backbone CKPT OUT [options]",
  positionals: {
    CKPT: "Training checkpoint (.safetensors) or official full checkpoint (.pth).",
    OUT: "Output file.",
  },
  options: OPTIONS,
}, main);

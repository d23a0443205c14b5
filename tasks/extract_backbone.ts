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

import { parseArgs } from "node:util";
import { extractBackbone } from "../lib/checkpoint/official_checkpoint.ts";
import { readStateDict } from "../lib/checkpoint/weights_file.ts";
import { type PyDict, writePth } from "../lib/checkpoint/pth.ts";
import { saveSafetensors } from "../lib/checkpoint/safetensors.ts";
import type { NamedTensor } from "../lib/runtime/named_tensor.ts";
import { choiceOption } from "../lib/eval/frozen_backbone.ts";
import { runTask } from "./run_task.ts";

const HELP = `Usage: deno task extract_backbone CKPT OUT [options]

  CKPT                    training checkpoint (.safetensors) or official full checkpoint (.pth)
  OUT                     output file
  --checkpoint_key KEY    teacher (default) or student
  --with_head             keep the head.* keys too
  --format F              pth (default: {'state_dict': ...}) or safetensors (flat)`;

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: {
      checkpoint_key: { type: "string", default: "teacher" },
      with_head: { type: "boolean", default: false },
      format: { type: "string", default: "pth" },
      help: { type: "boolean", short: "h" },
    },
    allowPositionals: true,
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (positionals.length !== 2) throw new Error("expected CKPT and OUT (see --help)");
  const [input, output] = positionals;
  const key = choiceOption(values, "checkpoint_key", ["teacher", "student"]);
  const format = choiceOption(values, "format", ["pth", "safetensors"]);
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

await runTask(main);

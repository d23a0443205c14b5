/**
 * `deno task export_onnx`: the teacher or student backbone of a weights file as a standalone ONNX
 * inference model (weights inside) that any onnxruntime runs at any batch and any image size that
 * is a multiple of the patch size.
 *
 *   deno task export_onnx --pretrained_weights FILE --output OUT.onnx [--checkpoint_key teacher]
 *     [--arch NAME] [--patch_size P] [--with_attention]
 */

import { parseArgs } from "node:util";
import { dirname } from "node:path";
import {
  BACKBONE_FILE_HELP,
  BACKBONE_FILE_OPTIONS,
  describeBackbone,
  openBackboneFile,
} from "../lib/eval/frozen_backbone.ts";
import { writeOnnxBackbone } from "../lib/eval/onnx_backbone.ts";
import { runTask } from "./run_task.ts";

const HELP = `Usage: deno task export_onnx --pretrained_weights FILE --output OUT.onnx [options]

Writes the ViT backbone as a standalone ONNX model with its weights inside. Input: images
[batch, 3, height, width], RGB in [0, 1] normalised with the ImageNet mean and std; any batch,
height and width multiples of the patch size (the position embedding is interpolated as in
training). Outputs after the final norm: cls_token [batch, D] and patch_tokens [batch, patches, D].

${BACKBONE_FILE_HELP}
  --output FILE               the .onnx file to write
  --with_attention            also output the last block's attention probabilities,
                              attention [batch, heads, tokens, tokens] (CLS first)`;

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      ...BACKBONE_FILE_OPTIONS,
      output: { type: "string" },
      with_attention: { type: "boolean", default: false },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (!values.output) throw new Error("--output is required (see --help)");
  const folder = dirname(values.output);
  if (!(await Deno.stat(folder).then((s) => s.isDirectory, () => false))) {
    throw new Error(`the folder ${folder} of --output does not exist`);
  }
  const loaded = await openBackboneFile(values);
  const { embedDim, depth, heads, patchSize, imgSize } = loaded.config;
  const summary = await writeOnnxBackbone(values.output, loaded.config, loaded.weights, {
    withAttention: values.with_attention,
  });
  console.log(
    `wrote ${values.output} (${(summary.bytes / 2 ** 20).toFixed(1)} MiB, ${summary.parameters} ` +
      `weights): ${describeBackbone(loaded)}, width ${embedDim}, depth ${depth}, ${heads} heads, ` +
      `patch ${patchSize}, position embedding for ${imgSize} px`,
  );
  const [input, ...outputs] = summary.signature;
  console.log(`  input   ${input}`);
  for (const output of outputs) console.log(`  output  ${output}`);
  return 0;
}

await runTask(main);

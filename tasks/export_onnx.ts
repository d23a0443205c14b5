/**
 * `deno task export_onnx`: the teacher or student backbone of a weights file as a standalone ONNX
 * inference model (weights inside) that any onnxruntime runs at any batch and any image size that
 * is a multiple of the patch size. The written model is then checked: onnxruntime runs it on
 * `--device` and its tokens must equal our forward's.
 *
 *   deno task export_onnx --pretrained_weights FILE --output OUT.onnx [--checkpoint_key teacher]
 *     [--arch NAME] [--patch_size P] [--with_attention] [--device cpu|cuda]
 */

import { dirname } from "node:path";
import {
  BACKBONE_FILE_OPTIONS,
  describeBackbone,
  DEVICE_OPTIONS,
  openBackboneFile,
} from "../lib/eval/frozen_backbone.ts";
import { requireVit } from "../lib/checkpoint/backbone_file.ts";
import { checkOnnxBackbone, writeOnnxBackbone } from "../lib/eval/onnx_backbone.ts";
import { type OptionTable, type OptionValues, required } from "../lib/cli/options.ts";
import { runTask } from "./run_task.ts";

const OPTIONS = {
  ...BACKBONE_FILE_OPTIONS,
  device: {
    ...DEVICE_OPTIONS.device,
    help: "Where onnxruntime runs the written model to check it against our forward: cpu, or " +
      "cuda (GPU 0, through its CUDA execution provider; set it up with deno task enable-cuda).",
  },
  output: { kind: "string", metavar: "file", help: "Required: the .onnx file to write." },
  with_attention: {
    kind: "flag",
    help: "Also output the last block's attention probabilities, attention [batch, heads, " +
      "tokens, tokens] (CLS first).",
  },
} as const satisfies OptionTable;

async function main(values: OptionValues<typeof OPTIONS>): Promise<number> {
  const output = required(values.output, "output");
  const folder = dirname(output);
  if (!(await Deno.stat(folder).then((s) => s.isDirectory, () => false))) {
    throw new Error(`the folder ${folder} of --output does not exist`);
  }
  const loaded = requireVit(
    await openBackboneFile(values),
    "deno task export_onnx",
    "the Swin graph has static shapes, and the exported model takes any batch and image size",
  );
  const { embedDim, depth, heads, patchSize, imgSize } = loaded.config;
  const summary = await writeOnnxBackbone(output, loaded.config, loaded.weights, {
    withAttention: values.with_attention,
  });
  console.log(
    `wrote ${output} (${(summary.bytes / 2 ** 20).toFixed(1)} MiB, ${summary.parameters} ` +
      `weights): ${describeBackbone(loaded)}, width ${embedDim}, depth ${depth}, ${heads} heads, ` +
      `patch ${patchSize}, position embedding for ${imgSize} px`,
  );
  const [input, ...outputs] = summary.signature;
  console.log(`  input   ${input}`);
  for (const signature of outputs) console.log(`  output  ${signature}`);
  const check = await checkOnnxBackbone(output, loaded.config, loaded.weights, {
    device: values.device,
  }).catch(async (error) => {
    await Deno.remove(output);
    throw error;
  });
  console.log(
    `checked on ${values.device}: onnxruntime's tokens for ${check.shape.join("×")} random ` +
      `images differ from our forward's by at most ${check.maxDifference.toExponential(1)} ` +
      `(tokens up to ${check.scale.toFixed(1)})`,
  );
  return 0;
}

await runTask({
  usage: "deno task export_onnx --pretrained_weights FILE --output OUT.onnx [options]",
  about: `Writes the ViT backbone as a standalone ONNX model with its weights inside. Input: images
[batch, 3, height, width], RGB in [0, 1] normalised with the ImageNet mean and std; any batch,
height and width multiples of the patch size (the position embedding is interpolated as in
training). Outputs after the final norm: cls_token [batch, D] and patch_tokens [batch, patches, D].
Then onnxruntime runs the written model on --device with random images at the training size, and
its tokens are compared with our forward's on the CPU; on a mismatch, or when the device cannot
run it, the file is removed and the task fails.`,
  options: OPTIONS,
}, main);

/**
 * `deno task export_onnx`: the teacher or student backbone of a weights file as a standalone ONNX
 * inference model (weights inside) that any onnxruntime runs at any batch: a ViT at any image size
 * that is a multiple of the patch size, a Swin at one image size (`--image_size`). The written
 * model is then checked: onnxruntime runs it on `--device` and its tokens must equal our forward's.
 *
 *   deno task export_onnx --pretrained_weights FILE --output OUT.onnx [--checkpoint_key teacher]
 *     [--arch NAME] [--patch_size P] [--window_size W] [--with_attention] [--image_size S]
 *     [--device cpu|cuda]
 */

import { dirname } from "node:path";
import {
  BACKBONE_FILE_OPTIONS,
  describeBackbone,
  DEVICE_OPTIONS,
  openBackboneFile,
} from "../lib/eval/frozen_backbone.ts";
import { isSwin } from "../lib/models/backbone.ts";
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
    help: "ViT only: also output the last block's attention probabilities, attention [batch, " +
      "heads, tokens, tokens] (CLS first).",
  },
  image_size: {
    kind: "int",
    metavar: "pixels",
    help: "Swin only: the side of the square images the model takes, a multiple of 4 (default: " +
      "the size its windows are laid out for).",
    min: 4,
  },
} as const satisfies OptionTable;

async function main(values: OptionValues<typeof OPTIONS>): Promise<number> {
  const output = required(values.output, "output");
  const folder = dirname(output);
  if (!(await Deno.stat(folder).then((s) => s.isDirectory, () => false))) {
    throw new Error(`the folder ${folder} of --output does not exist`);
  }
  const loaded = await openBackboneFile(values);
  const summary = await writeOnnxBackbone(output, loaded.config, loaded.weights, {
    withAttention: values.with_attention,
    imageSize: values.image_size,
  });
  const config = loaded.config;
  const layout = isSwin(config)
    ? `width ${config.embedDim}, depths ${config.depths.join(" ")}, heads ` +
      `${config.heads.join(" ")}, window ${config.windowSize}, windows laid out for ` +
      `${config.imgSize} px`
    : `width ${config.embedDim}, depth ${config.depth}, ${config.heads} heads, patch ` +
      `${config.patchSize}, position embedding for ${config.imgSize} px`;
  console.log(
    `wrote ${output} (${(summary.bytes / 2 ** 20).toFixed(1)} MiB, ${summary.parameters} ` +
      `weights): ${describeBackbone(loaded)}, ${layout}`,
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
  about: `Writes the ViT or Swin backbone as a standalone ONNX model with its weights inside. Input:
images [batch, 3, height, width], RGB in [0, 1] normalised with the ImageNet mean and std; any
batch. A ViT takes any height and width that are multiples of the patch size (the position
embedding is interpolated as in training); a Swin takes square images of --image_size pixels
(its window partition is computed for that size). Outputs after the final norm: cls_token
[batch, D] (the Swin's average-pooled last-stage token) and patch_tokens [batch, patches, D].
Then onnxruntime runs the written model on --device with random images at its size (a ViT's
training size), and its tokens are compared with our forward's on the CPU; on a mismatch, or when
the device cannot run it, the file is removed and the task fails.`,
  options: OPTIONS,
}, main);

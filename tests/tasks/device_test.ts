/**
 * `--device` of the evaluation and analysis tasks. Where the CUDA execution provider cannot run
 * (no provider libraries or no CUDA libraries, as on a CPU-only machine), `--device cuda` ends each
 * task with the one sentence that says why, as `error: <sentence>`, exit code 1 and no stack
 * trace. `--device cpu` is the default that the tasks' own tests run.
 */

import * as ort from "onnxruntime-node";
import { join } from "node:path";
import sharp from "sharp";
import { saveSafetensors } from "../../lib/checkpoint/safetensors.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { clsLastLayer, headBottleneck, type HeadConfig } from "../../lib/models/head.ts";
import { vit, VIT_SIZES } from "../../lib/models/vit.ts";
import { prepareCuda } from "../../lib/runtime/cuda_libraries.ts";
import type { NamedTensor } from "../../lib/runtime/named_tensor.ts";
import { ortBindingDir } from "../../lib/runtime/session.ts";
import { StateStore } from "../../lib/runtime/store.ts";
import { assert } from "../assert.ts";
import { withTempDir, writeVendoredSubset } from "../data/fixtures.ts";
import { runDenoTask } from "../task_runner.ts";

/** The sentence the CUDA preparation throws on this machine, or undefined where CUDA is usable. */
function cudaRefusal(): string | undefined {
  try {
    prepareCuda(ortBindingDir(), ort.env.versions.common);
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}

const refusal = cudaRefusal();

/** A random vit_mini (patch 4, 16 px) with a shared head of 6 prototypes, as flat tensors. */
function tinyModel(): Map<string, NamedTensor> {
  const head: HeadConfig = {
    outDim: 6,
    patchOutDim: 6,
    sharedHead: true,
    hiddenDim: 24,
    bottleneckDim: 8,
  };
  const g = new Graph("tiny");
  const images = g.input("images", "float32", [1, 3, 16, 16]);
  g.scope("model", () => {
    const config = { ...VIT_SIZES.vit_mini, patchSize: 4, imgSize: 16, maskedImModeling: false };
    const out = vit(g, config, { images });
    clsLastLayer(g, head, headBottleneck(g, head, out.tokens));
  });
  const tensors = new Map<string, NamedTensor>();
  for (const [name, t] of StateStore.fromParams(g.params, 7).toNamedTensors()) {
    tensors.set(name.slice("model.".length), t);
  }
  return tensors;
}

Deno.test({
  name: "--device cuda without a usable CUDA provider: each task prints the one sentence why",
  ignore: refusal === undefined,
  async fn() {
    await withTempDir(async (dir) => {
      const weights = join(dir, "tiny.safetensors");
      await saveSafetensors(weights, tinyModel());
      const data = join(dir, "data");
      await Deno.mkdir(data);
      for (const split of ["train", "t10k"] as const) {
        await writeVendoredSubset(
          split,
          8,
          join(data, `${split}-images-idx3-ubyte`),
          join(data, `${split}-labels-idx1-ubyte`),
        );
      }
      const image = join(dir, "image.png");
      await sharp(new Uint8Array(16 * 16 * 3).fill(90), {
        raw: { width: 16, height: 16, channels: 3 },
      }).png().toFile(image);
      const onnx = join(dir, "backbone.onnx");
      const common = ["--pretrained_weights", weights, "--device", "cuda"];
      const dataset = ["--data_path", data, "--image_size", "16"];
      const runs: [string, string[]][] = [
        ["knn", [...dataset, "--nb_knn", "2", "--batch_size_per_gpu", "4", "--num_workers", "1"]],
        ["linear", [
          ...dataset,
          "--epochs",
          "1",
          "--batch_size_per_gpu",
          "4",
          "--num_workers",
          "1",
        ]],
        ["attention", ["--image_path", image, "--output_dir", join(dir, "attention")]],
        ["correspondence", [...dataset, "--topk", "2", "--output_path", join(dir, "corr")]],
        ["patterns", [...dataset, "--batch_size", "4", "--output_dir", join(dir, "patterns")]],
        ["export_onnx", ["--output", onnx]],
      ];
      const lines = new Set<string>();
      for (const [task, args] of runs) {
        const run = await runDenoTask(task, [...common, ...args]);
        assert.equal(run.code, 1, `${task}: ${run.stdout}${run.stderr}`);
        assert.match(run.stderr, /^error: [^\n]*CUDA[^\n]*\.\n$/, task);
        lines.add(run.stderr);
      }
      // The same sentence from every task (the tasks' permissions may word it differently from
      // this test's: the search of python3's pip packages needs --allow-run).
      assert.equal(lines.size, 1, [...lines].join(""));
      assert.match(refusal!, /CUDA/);
      // export_onnx wrote the model before checking it on the device; a failed check removes it.
      assert.equal(await Deno.stat(onnx).then(() => true, () => false), false);
    });
  },
});

Deno.test("--help of each evaluation and analysis task lists --device cpu|cuda, default cpu", async () => {
  for (const task of ["knn", "linear", "attention", "correspondence", "patterns", "export_onnx"]) {
    const help = await runDenoTask(task, ["--help"]);
    assert.equal(help.code, 0, help.stderr);
    const option = help.stdout.match(/^ {2}--device <cpu\|cuda> [^]*?(?=^ {2}--|$(?![^]))/m);
    assert(option, `${task}: no --device <cpu|cuda> in\n${help.stdout}`);
    assert.match(option[0], /cuda \(GPU 0, through /, task);
    assert.match(option[0], /\(default cpu\)\n$/, task);
  }
});

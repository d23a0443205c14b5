import { join } from "node:path";
import { assert } from "../assert.ts";
import { runDenoTask } from "../task_runner.ts";
import { saveSafetensors } from "../../lib/checkpoint/safetensors.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { vit, VIT_SIZES } from "../../lib/models/vit.ts";
import type { NamedTensor } from "../../lib/runtime/named_tensor.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { withTempDir, writeVendoredSubset } from "../data/fixtures.ts";
import { f32 } from "../reference/torch.ts";
import { readPng } from "./blocks.ts";

/** A random vit_mini (patch 8, 32 px) backbone and a linear head on its last 2 CLS tokens. */
async function writeFixture(dir: string): Promise<{ backbone: string; linear: string }> {
  const rng = new Rng(7);
  const config = { ...VIT_SIZES.vit_mini, patchSize: 8, imgSize: 32, mlpRatio: 4 };
  const g = new Graph("mini");
  const images = g.input("images", "float32", [1, 3, 32, 32]);
  vit(g, { ...config, maskedImModeling: false }, { images });
  const tensors = new Map<string, NamedTensor>();
  for (const p of g.params) {
    const size = p.shape.reduce((a, b) => a * b, 1);
    const name = p.name.slice("backbone.".length);
    const base = name.includes("norm") && name.endsWith("weight") ? 1 : 0;
    tensors.set(
      name,
      f32(Float32Array.from({ length: size }, () => base + 0.1 * rng.normal()), p.shape),
    );
  }
  const backbone = join(dir, "backbone.safetensors");
  await saveSafetensors(backbone, tensors);
  const linear = join(dir, "linear_state_dict.safetensors");
  const dim = 2 * config.embedDim;
  await saveSafetensors(linear, {
    "linear.weight": f32(Float32Array.from({ length: 10 * dim }, () => rng.normal()), [10, dim]),
    "linear.bias": f32(new Float32Array(10), [10]),
  }, { format: "ibot-deno-linear-1", n_last_blocks: "2", avgpool_patchtokens: "0", top1: "10" });
  return { backbone, linear };
}

Deno.test("tasks: combine_ckpt, occlusion, shuffle and linear_part run end to end", async () => {
  await withTempDir(async (dir) => {
    const data = join(dir, "data");
    await Deno.mkdir(data);
    await writeVendoredSubset(
      "t10k",
      24,
      join(data, "t10k-images-idx3-ubyte"),
      join(data, "t10k-labels-idx1-ubyte"),
    );
    await writeVendoredSubset(
      "train",
      48,
      join(data, "train-images-idx3-ubyte"),
      join(data, "train-labels-idx1-ubyte"),
    );
    const { backbone, linear } = await writeFixture(dir);
    const full = join(dir, "full.pth");
    const run = async (task: string, args: string[]) => {
      const result = await runDenoTask(task, args);
      assert.equal(result.code, 0, `${task} failed:\n${result.stderr}`);
      return result.stdout;
    };
    const combined = await run("combine_ckpt", [
      "--checkpoint_backbone",
      backbone,
      "--checkpoint_key",
      "state_dict",
      "--checkpoint_linear",
      linear,
      "--output_file",
      full,
    ]);
    assert.match(combined, /with acc 10 \(10 classes on 192 features\)/);
    const common = [
      "--pretrained_weights",
      full,
      "--test_data",
      data,
      "--img_size",
      "32",
      "--batch_size",
      "16",
      "--num_workers",
      "1",
      "--save_path",
      dir,
    ];
    const occlusion = await run("occlusion", [
      ...common,
      "--random_drop",
      "--dino",
      "--saliency_head",
      "2",
    ]);
    assert.equal(occlusion.match(/dropped .* Top1/g)?.length, 30, occlusion);
    const shuffle = await run("shuffle", [...common, "--shuffle_size", "2", "4", "8"]);
    assert.match(shuffle, /unshuffled +1 pieces/);
    assert.match(shuffle, /8×8 grid +64 pieces +Top1/);
    for (const name of ["occlusion.png", "shuffle.png"]) {
      const picture = await readPng(join(dir, name));
      assert.deepEqual([picture.width, picture.height], [480, 320], name);
    }
    const part = await run("linear_part", [
      "--pretrained_weights",
      backbone,
      "--checkpoint_key",
      "state_dict",
      "--data_path",
      data,
      "--image_size",
      "32",
      "--topk",
      "1",
      "4",
      "--epochs",
      "2",
      "--num_workers",
      "1",
      "--output_dir",
      dir,
    ]);
    assert.match(part, /top +1 patches: Top1 [\d.]+/);
    assert.match(part, /top +4 patches: Top1 [\d.]+/);
    const refused = await runDenoTask("occlusion", common);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /error: choose --random_drop, --dino or both/);
  });
});

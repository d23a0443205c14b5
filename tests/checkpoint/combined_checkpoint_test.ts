import { join } from "node:path";
import { assert } from "../assert.ts";
import { loadBackbone } from "../../lib/checkpoint/backbone_file.ts";
import {
  type LinearHead,
  readCombinedCheckpoint,
  readLinearHead,
  writeCombinedCheckpoint,
} from "../../lib/checkpoint/combined_checkpoint.ts";
import { PyDict, writePth } from "../../lib/checkpoint/pth.ts";
import { saveSafetensors } from "../../lib/checkpoint/safetensors.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { vit, VIT_SIZES } from "../../lib/models/vit.ts";
import type { NamedTensor } from "../../lib/runtime/named_tensor.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { withTempDir } from "../data/fixtures.ts";
import { f32, runPython, torchAvailable } from "../reference/torch.ts";

const CONFIG = { ...VIT_SIZES.vit_mini, patchSize: 8, imgSize: 32, mlpRatio: 4 };

/** A vit_mini backbone with random weights, written as a flat safetensors file. */
async function writeBackbone(path: string): Promise<void> {
  const rng = new Rng(1);
  const g = new Graph("mini");
  const images = g.input("images", "float32", [1, 3, 32, 32]);
  vit(g, { ...CONFIG, maskedImModeling: false }, { images });
  const tensors = new Map<string, NamedTensor>();
  for (const p of g.params) {
    const size = p.shape.reduce((a, b) => a * b, 1);
    tensors.set(
      p.name.slice("backbone.".length),
      f32(Float32Array.from({ length: size }, () => rng.normal()), p.shape),
    );
  }
  await saveSafetensors(path, tensors);
}

function randomHead(seed: number, nLastBlocks: number): LinearHead {
  const rng = new Rng(seed);
  const dim = nLastBlocks * CONFIG.embedDim;
  return {
    weight: Float32Array.from({ length: 10 * dim }, () => rng.normal()),
    bias: Float32Array.from({ length: 10 }, () => rng.normal()),
    classes: 10,
    dim,
    nLastBlocks,
    avgpool: 0,
    top1: 71.25,
    epoch: 42,
  };
}

for (const extension of ["pth", "safetensors"]) {
  Deno.test(`combined checkpoint (.${extension}): backbone, head, recipe and run arguments read back`, async () => {
    await withTempDir(async (dir) => {
      const backbonePath = join(dir, "backbone.safetensors");
      await writeBackbone(backbonePath);
      const loaded = await loadBackbone(backbonePath);
      const args = { arch: "vit_mini", data_path: "data/x", global_crop_size: 32 };
      const head = randomHead(2, 3);
      const out = join(dir, `full.${extension}`);
      await writeCombinedCheckpoint(out, { backbone: { ...loaded, args }, head });
      const back = await readCombinedCheckpoint(out);
      assert.equal(back.backbone.path, out);
      assert.deepEqual(back.backbone.config, loaded.config);
      assert.deepEqual([...back.backbone.weights.keys()].sort(), [...loaded.weights.keys()].sort());
      for (const [name, tensor] of loaded.weights) {
        assert.deepEqual(back.backbone.weights.get(name)!.data, tensor.data, name);
      }
      assert.deepEqual(back.backbone.args, args);
      assert.deepEqual(back.head, head);
    });
  });
}

Deno.test({
  name: "combined checkpoint (.pth): torch.load sees the official layout",
  ignore: !torchAvailable(),
  fn: async () => {
    await withTempDir(async (dir) => {
      const backbonePath = join(dir, "backbone.safetensors");
      await writeBackbone(backbonePath);
      const out = join(dir, "full.pth");
      await writeCombinedCheckpoint(out, {
        backbone: await loadBackbone(backbonePath),
        head: randomHead(3, 4),
      });
      const printed = await runPython(
        `import sys, torch
ckpt = torch.load(sys.argv[1])
sd = ckpt["state_dict"]
print(type(sd).__name__, ckpt["epoch"], ckpt["best_acc"], ckpt["best_acc_hidx"])
print(tuple(sd["linear.weight"].shape), tuple(sd["linear.bias"].shape), len(sd))
print("blocks.5.mlp.fc2.weight" in sd, "cls_token" in sd, ckpt["n_last_blocks"])`,
        [out],
      );
      const lines = printed.trim().split("\n");
      assert.equal(lines[0], "OrderedDict 42 71.25 0");
      // vit_mini: 4 + 6 blocks × 12 + 2 (final norm) backbone tensors, plus the head's 2.
      assert.equal(lines[1], "(10, 384) (10,) 80");
      assert.equal(lines[2], "True True 4");
    });
  },
});

Deno.test("readLinearHead: an official linear checkpoint gives its best_acc_hidx classifier", async () => {
  await withTempDir(async (dir) => {
    const tensor = (value: number, shape: number[]) =>
      f32(new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(value), shape);
    const path = join(dir, "checkpoint_teacher_linear.pth");
    await writePth(
      path,
      new PyDict([
        [
          "state_dict",
          new PyDict([
            ["0.module.linear.weight", tensor(1, [3, 8])],
            ["0.module.linear.bias", tensor(2, [3])],
            ["1.module.linear.weight", tensor(3, [3, 8])],
            ["1.module.linear.bias", tensor(4, [3])],
          ], true),
        ],
        ["epoch", 100],
        ["best_acc", 77.5],
        ["best_acc_hidx", 1],
      ]),
    );
    const head = await readLinearHead(path, { nLastBlocks: 1, avgpool: 2 });
    assert.equal(head.classes, 3);
    assert.equal(head.dim, 8);
    assert(head.weight.every((v) => v === 3) && head.bias.every((v) => v === 4));
    assert.deepEqual([head.nLastBlocks, head.avgpool, head.top1, head.epoch], [1, 2, 77.5, 100]);
  });
});

Deno.test("readLinearHead and writeCombinedCheckpoint: wrong files get one sentence", async () => {
  await withTempDir(async (dir) => {
    const other = join(dir, "other.safetensors");
    await saveSafetensors(other, { x: f32(Float32Array.of(1), [1]) });
    await assert.rejects(
      () => readLinearHead(other),
      /is not a linear head written by deno task linear/,
    );
    await assert.rejects(() => readLinearHead(join(dir, "missing.pth")), /does not exist/);
    const backbonePath = join(dir, "backbone.safetensors");
    await writeBackbone(backbonePath);
    const backbone = await loadBackbone(backbonePath);
    await assert.rejects(
      () => writeCombinedCheckpoint(join(dir, "full.bin"), { backbone, head: randomHead(4, 1) }),
      /must end in \.pth or \.safetensors/,
    );
    await assert.rejects(() => readCombinedCheckpoint(backbonePath), /holds no linear\.weight/);
  });
});

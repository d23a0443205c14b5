import { assert, assertClose } from "../assert.ts";
import {
  groupScalarValues,
  layerScales,
  parameterGroups,
  skipsWeightDecay,
  swinLayerId,
  vitLayerId,
} from "../../lib/optim/layer_decay.ts";
import { finetuneParameterGroups } from "../../lib/eval/finetune_step.ts";
import type { ClassifierConfig } from "../../lib/models/classifier.ts";
import { torchAvailable, torchScriptOutput } from "../reference/torch.ts";

Deno.test("ViT layer ids: embeddings 0, block j → j + 1, the rest L + 1", () => {
  const ids = [
    "cls_token",
    "pos_embed",
    "patch_embed.proj.weight",
    "blocks.0.attn.qkv.weight",
    "blocks.11.mlp.fc2.bias",
    "norm.weight",
    "fc_norm.bias",
    "head.weight",
  ].map((name) => vitLayerId(name, 12));
  assert.deepEqual(ids, [0, 0, 0, 1, 12, 13, 13, 13]);
});

Deno.test("Swin layer ids count blocks across stages; a patch merging is its stage's last block", () => {
  const depths = [2, 2, 6, 2];
  assert.equal(swinLayerId("patch_embed.norm.weight", depths), 0);
  assert.equal(swinLayerId("layers.0.blocks.1.attn.qkv.weight", depths), 2);
  assert.equal(swinLayerId("layers.0.downsample.reduction.weight", depths), 2);
  assert.equal(swinLayerId("layers.2.blocks.0.norm1.weight", depths), 5);
  assert.equal(swinLayerId("layers.2.downsample.norm.bias", depths), 10);
  assert.equal(swinLayerId("layers.3.blocks.1.mlp.fc1.weight", depths), 12);
  assert.equal(swinLayerId("norm.weight", depths), 13);
});

Deno.test("layer scales are decay^(L + 1 − id)", () => {
  assertClose(layerScales(0.5, 2), [0.125, 0.25, 0.5, 1], 0, 0);
});

Deno.test("weight decay skips 1-D parameters, biases and the skip list", () => {
  assert.equal(skipsWeightDecay("blocks.0.attn.qkv.weight", [12, 4]), false);
  assert.equal(skipsWeightDecay("blocks.0.norm1.weight", [4]), true);
  assert.equal(skipsWeightDecay("head.bias", [3]), true);
  assert.equal(skipsWeightDecay("pos_embed", [1, 5, 4]), true);
  assert.equal(skipsWeightDecay("cls_token", [1, 1, 4]), true);
});

Deno.test("without layer decay there are two groups at scale 1", () => {
  const groups = parameterGroups([
    { name: "cls_token", shape: [1, 1, 4] },
    { name: "blocks.0.attn.qkv.weight", shape: [12, 4] },
    { name: "head.bias", shape: [3] },
  ], { layerDecay: 1, layers: 1 });
  assert.deepEqual(groups.map((g) => [g.name, g.lrScale, g.decay, g.params]), [
    ["no_decay", 1, false, ["cls_token", "head.bias"]],
    ["decay", 1, true, ["blocks.0.attn.qkv.weight"]],
  ]);
});

Deno.test("group AdamW factors use each group's lr·scale, in float64", () => {
  const groups = parameterGroups([
    { name: "pos_embed", shape: [1, 5, 4] },
    { name: "head.weight", shape: [3, 4] },
  ], { layerDecay: 0.5, layers: 2 });
  const values = groupScalarValues(groups, 0.1, 0.05, 1);
  assertClose([values["step_size.layer_0_no_decay"]], [0.125 * 0.1 / 0.1], 1e-15, 0);
  assertClose([values["step_size.layer_3_decay"]], [0.1 / 0.1], 1e-15, 0);
  assertClose([values["decay_factor.layer_3_decay"]], [1 - 0.1 * 0.05], 1e-15, 0);
  assert.equal(values["decay_factor.layer_0_no_decay"], undefined);
  assertClose([values["bias_correction2_sqrt"]], [Math.sqrt(0.001)], 1e-12, 0);
});

const TINY = { embedDim: 8, depth: 2, heads: 2, patchSize: 4, imgSize: 8 };

for (const useCls of [true, false]) {
  Deno.test({
    name: `parameter groups equal the official ones (PyTorch, ${useCls ? "CLS" : "mean pooling"})`,
    ignore: !torchAvailable(),
    async fn() {
      const model: ClassifierConfig = { backbone: TINY, numClasses: 3, useCls };
      const ours = finetuneParameterGroups(model, 8, 0.75);
      const text = await torchScriptOutput("finetune_torch.py", [
        "groups",
        "2",
        "8",
        "2",
        "4",
        "8",
        "3",
        useCls ? "1" : "0",
        "0.75",
        "0.05",
      ]);
      const official = JSON.parse(text) as {
        name: string;
        lr_scale: number;
        weight_decay: number;
        params: string[];
      }[];
      assert.deepEqual(ours.map((g) => g.name), official.map((g) => g.name));
      official.forEach((o, i) => {
        assert.deepEqual(ours[i].params, o.params, o.name);
        assertClose([ours[i].lrScale], [o.lr_scale], 1e-14, 0, o.name);
        assert.equal(ours[i].decay ? 0.05 : 0, o.weight_decay, o.name);
      });
    },
  });
}

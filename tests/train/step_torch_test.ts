import { torchAvailable } from "../reference/torch.ts";
import { compareSteps, OUT_DIM, type StepModel } from "./step_torch_compare.ts";

/**
 * A tiny iBOT: ViT of width 32, depth 2, 2 heads, patch 4 on 16 px images; 4 images with 2 global
 * crops of 16 px (4×4 patches) and 2 local crops of 8 px each.
 */
const VIT: StepModel = {
  backbone: { embedDim: 32, depth: 2, heads: 2, patchSize: 4, imgSize: 16 },
  batch: 4,
  globalSize: 16,
  localSize: 8,
  noise: 0.1,
};

Deno.test({
  name: "two iBOT iterations with a shared head, trainable weight_g and clipping match PyTorch",
  ignore: !torchAvailable(),
  async fn() {
    await compareSteps(VIT, {
      sharedHead: true,
      teacherSharedHead: true,
      patchOutDim: OUT_DIM,
      normLastLayer: false,
      clipGrad: 3,
      epoch: 0,
      freezeLastLayer: 0,
      dropPath: 0,
    }, 1);
  },
});

Deno.test({
  name:
    "two iBOT iterations with a separate student head, a shared teacher head and fixed weight_g " +
    "match PyTorch",
  ignore: !torchAvailable(),
  async fn() {
    await compareSteps(VIT, {
      sharedHead: false,
      teacherSharedHead: true,
      patchOutDim: OUT_DIM,
      normLastLayer: true,
      clipGrad: 0,
      epoch: 0,
      freezeLastLayer: 0,
      dropPath: 0,
    }, 2);
  },
});

Deno.test({
  name:
    "two iBOT iterations in a frozen-last-layer epoch leave both last layers untouched as PyTorch",
  ignore: !torchAvailable(),
  async fn() {
    await compareSteps(VIT, {
      sharedHead: false,
      teacherSharedHead: false,
      patchOutDim: 24,
      normLastLayer: false,
      clipGrad: 3,
      epoch: 0,
      freezeLastLayer: 1,
      dropPath: 0,
    }, 3);
  },
});

Deno.test({
  name: "two iBOT iterations with drop path 0.1 match PyTorch fed the same per-sample keep draws",
  ignore: !torchAvailable(),
  async fn() {
    await compareSteps(VIT, {
      sharedHead: true,
      teacherSharedHead: true,
      patchOutDim: OUT_DIM,
      normLastLayer: true,
      clipGrad: 3,
      epoch: 0,
      freezeLastLayer: 0,
      dropPath: 0.1,
    }, 4);
  },
});

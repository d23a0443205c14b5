import { SWIN_SIZES } from "../../lib/models/swin.ts";
import { torchAvailable } from "../reference/torch.ts";
import { compareSteps, OUT_DIM, type StepModel } from "./step_torch_compare.ts";

/**
 * A swin_mini laid out for 224 px (stage grids 56, 28, 14, 7) with `windowSize`, on 4 images with
 * 2 global crops of 64 px (a 2×2 mask grid at the last stage) and 2 local crops of `localSize` px.
 * Its weights are the official init plus N(0, 0.03²): at 0.05 float32 itself (PyTorch's as ours)
 * strays 1.1e-5 of scale from float64 in some Adam moments; at 0.03 ours stays within 5e-6.
 */
function swinMini(windowSize: number, localSize: number): StepModel {
  return {
    backbone: { ...SWIN_SIZES.swin_mini, windowSize, imgSize: 224 },
    batch: 4,
    globalSize: 64,
    localSize,
    noise: 0.03,
  };
}

Deno.test({
  name: "two iBOT iterations of a swin_mini/7 with masks, drop path, a shared head and clipping " +
    "match PyTorch",
  ignore: !torchAvailable(),
  async fn() {
    // Window 7 pads every stage of the 64 px crops (grids 16, 8, 4, 2) and of the 32 px local
    // crops (8, 4, 2, 1); the shifted block of stage 2 shifts a 4×4 grid padded to 7×7.
    await compareSteps(swinMini(7, 32), {
      sharedHead: true,
      teacherSharedHead: true,
      patchOutDim: OUT_DIM,
      normLastLayer: false,
      clipGrad: 3,
      epoch: 0,
      freezeLastLayer: 0,
      dropPath: SWIN_SIZES.swin_mini.dropPathRate,
    }, 11);
  },
});

Deno.test({
  name: "two iBOT iterations of a swin_mini/3 with a separate student head and 40 px local crops " +
    "match PyTorch",
  ignore: !torchAvailable(),
  async fn() {
    // Window 3 pads and shifts the 64 px crops' stage-2 grid (4 → 6); the 40 px local crops
    // (grids 10, 5, 3, 2) pad for patch merging at the odd grids.
    await compareSteps(swinMini(3, 40), {
      sharedHead: false,
      teacherSharedHead: true,
      patchOutDim: OUT_DIM,
      normLastLayer: true,
      clipGrad: 0,
      epoch: 0,
      freezeLastLayer: 0,
      dropPath: SWIN_SIZES.swin_mini.dropPathRate,
    }, 12);
  },
});

Deno.test({
  name:
    "two iBOT iterations of a swin_mini/7 without drop path, separate heads and a frozen last " +
    "layer match PyTorch",
  ignore: !torchAvailable(),
  async fn() {
    await compareSteps(swinMini(7, 32), {
      sharedHead: false,
      teacherSharedHead: false,
      patchOutDim: 24,
      normLastLayer: false,
      clipGrad: 3,
      epoch: 0,
      freezeLastLayer: 1,
      dropPath: 0,
    }, 13);
  },
});

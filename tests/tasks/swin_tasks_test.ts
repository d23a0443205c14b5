/**
 * The file-based tasks on a Swin training checkpoint: `deno task knn` and `deno task linear` run
 * (the linear probe on the official n_last_blocks 4: the pooled tokens of the last four blocks
 * across stages). The other tasks' Swin cases are beside their own tests (export_onnx in
 * tests/eval/onnx_backbone_test.ts, the analyses in tests/analysis/swin_analysis_test.ts).
 */

import { join } from "node:path";
import { assert } from "../assert.ts";
import { writeVendoredFolder } from "../data/fixtures.ts";
import { runDenoTask } from "../task_runner.ts";
import { loadSafetensors } from "../../lib/checkpoint/safetensors.ts";
import { saveTrainingCheckpoint } from "../../lib/checkpoint/training_checkpoint.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { clsLastLayer, headBottleneck, patchLastLayer } from "../../lib/models/head.ts";
import { swin, SWIN_SIZES } from "../../lib/models/swin.ts";
import { StateStore } from "../../lib/runtime/store.ts";
import { parsePretrainArgs } from "../../lib/train/args.ts";

/**
 * A swin_mini training checkpoint laid out for 32 px (initial weights, zero centres) with a
 * 48 + 16 image dataset beside it; returns the checkpoint's path.
 */
async function swinCheckpoint(dir: string): Promise<string> {
  const data = await writeVendoredFolder(join(dir, "data"), 48, 16);
  const { args } = parsePretrainArgs([
    ...["--arch=swin_mini", "--patch_size=4", "--window_size=7", "--img_size=32"],
    ...["--global_crop_size=32", "--local_crop_size=16", "--out_dim=16", "--patch_out_dim=16"],
    ...["--head_hidden_dim=16", "--head_bottleneck_dim=8", `--data_path=${data}`],
  ]);
  const g = new Graph();
  const config = { ...SWIN_SIZES.swin_mini, windowSize: 7, imgSize: 32 };
  const images = g.input("images", "float32", [1, 3, 32, 32]);
  const head = { outDim: 16, patchOutDim: 16, hiddenDim: 16, bottleneckDim: 8, sharedHead: true };
  for (const net of ["student", "teacher"]) {
    g.scope(net, () => {
      const { tokens } = swin(g, { ...config, maskedImModeling: net === "student" }, { images });
      const bottleneck = headBottleneck(g, head, tokens);
      clsLastLayer(g, head, bottleneck);
      patchLastLayer(g, head, bottleneck);
    });
  }
  const store = StateStore.fromParams(g.params, 1);
  store.set("ibot_loss.center", new Float32Array(16), [1, 16]);
  store.set("ibot_loss.center2", new Float32Array(16), [1, 1, 16]);
  const path = join(dir, "checkpoint.safetensors");
  await saveTrainingCheckpoint(
    path,
    store,
    { epoch: 1, iteration: 0, step: 3, lastLayerStep: 3 },
    args,
  );
  return path;
}

Deno.test("deno task knn and deno task linear evaluate a Swin checkpoint", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const checkpoint = await swinCheckpoint(dir);
    const knn = await runDenoTask("knn", [
      ...["--pretrained_weights", checkpoint, "--nb_knn", "1", "5"],
      ...["--batch_size_per_gpu", "16", "--num_workers", "1"],
    ]);
    assert.equal(knn.code, 0, knn.stderr);
    const results = knn.stdout.split("\n").filter((line) => line.includes("Top1"));
    assert.deepEqual(
      results.map((line) =>
        line.match(/^(\d+)-NN classifier result: Top1: [\d.]+, Top5: [\d.]+$/)?.[1]
      ),
      ["1", "5"],
    );

    const linear = await runDenoTask("linear", [
      ...["--pretrained_weights", checkpoint, "--epochs", "2", "--lr", "0.1"],
      ...["--batch_size_per_gpu", "16", "--num_workers", "1"],
    ]);
    assert.equal(linear.code, 0, linear.stderr);
    // The last 4 of swin_mini's blocks (1, 1, 2, 1 per stage): widths 64 + 128 + 128 + 256.
    assert.match(linear.stdout, /train and 16 test rows of dim 576/);
    const saved = await loadSafetensors(join(dir, "linear_teacher.safetensors"));
    assert.deepEqual(saved.tensors.get("linear.weight")?.shape, [10, 576]);
    assert.equal(saved.metadata.n_last_blocks, "4");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

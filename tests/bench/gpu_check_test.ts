/**
 * The GPU check's own plumbing, run on the CPU at its toy size (`--smoke`): every part runs and
 * writes its figures. What it must show on a GPU is checked there, not here.
 */

import { join } from "node:path";
import { assert } from "../assert.ts";
import { PYTHON, torchAvailable } from "../reference/torch.ts";
import { runDeno } from "../task_runner.ts";

Deno.test({
  name: "bench/gpu_check.ts --smoke runs its four parts and records their figures",
  ignore: !torchAvailable(),
  async fn() {
    const out = await Deno.makeTempDir({ prefix: "gpu_check_test_" });
    try {
      const run = await runDeno([
        ...["run", "-A", "bench/gpu_check.ts", "--smoke", "--out", out, "--python", PYTHON],
      ]);
      assert.equal(run.code, 0, run.stderr);
      for (
        const part of ["a. parity", "b. fp16 vs fp32", "c. vit_tiny ours", "d. whole pipeline"]
      ) {
        assert(run.stdout.includes(part), `no "${part}" line in:\n${run.stdout}`);
      }
      const figures = JSON.parse(await Deno.readTextFile(join(out, "gpu_check.json")));
      // On the CPU both sides of a and b are the same computation: identical results.
      assert.equal(figures.a_parity.pass, true);
      assert.equal(figures.a_parity.worst[0][1], 0);
      assert.equal(figures.b_fp16.fp32_losses.length, 50);
      assert.equal(figures.b_fp16.largest_gap, 0);
      assert(figures.c_throughput.best["vit_tiny/ours"] > 0);
      assert(figures.c_throughput.best["vit_tiny/torch_official"] > 0);
      assert(figures.c_throughput.profile.length > 0, "the profile summary is empty");
      assert(figures.d_pipeline.images_per_s > 0);
      assert(typeof figures.finished === "string");
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});

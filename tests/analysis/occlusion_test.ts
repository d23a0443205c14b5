import { assert, assertCloseToScale } from "../assert.ts";
import {
  officialDropCounts,
  randomCells,
  randomDropCurve,
  saliencyDropCurves,
  salientPatches,
  zeroCells,
} from "../../lib/analysis/occlusion.ts";
import { BackboneRunner } from "../../lib/analysis/backbone_runner.ts";
import { correctCount, LinearProbeModel } from "../../lib/analysis/linear_probe_model.ts";
import type { EvalBatch } from "../../lib/data/loader.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { f64, float64Reader, runTorchReference, torchAvailable } from "../reference/torch.ts";
import { TINY_CLASSES, TINY_SIZE, tinyCombinedModel, tinyImages } from "./linear_probe_fixture.ts";

Deno.test("officialDropCounts: k·cells // 10 for k = 0 … 9, as the official loop", () => {
  assert.deepEqual(officialDropCounts(196), [0, 19, 39, 58, 78, 98, 117, 137, 156, 176]);
  assert.deepEqual(officialDropCounts(16), [0, 1, 3, 4, 6, 8, 9, 11, 12, 14]);
});

Deno.test("randomCells: distinct cells in range, every cell reachable", () => {
  const rng = new Rng(3);
  const seen = new Set<number>();
  for (let t = 0; t < 200; t++) {
    const cells = randomCells(rng, 16, 5);
    assert.equal(cells.length, 5);
    assert.equal(new Set(cells).size, 5, "cells repeat");
    for (const c of cells) {
      assert(c >= 0 && c < 16, `cell ${c} is outside the grid`);
      seen.add(c);
    }
  }
  assert.equal(seen.size, 16, "some cell is never drawn");
  assert.throws(() => randomCells(rng, 4, 5), /cannot choose 5 of 4 cells/);
});

Deno.test("zeroCells: zeroes exactly the chosen cells of every channel and image", () => {
  const size = 4;
  const images = Float32Array.from({ length: 2 * 3 * size * size }, (_, i) => i + 1);
  zeroCells(images, 2, size, [2, 2], [1, 2]);
  for (let plane = 0; plane < 6; plane++) {
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const cell = (y < 2 ? 0 : 2) + (x < 2 ? 0 : 1);
        const v = images[plane * 16 + y * size + x];
        if (cell === 1 || cell === 2) assert.equal(v, 0, `plane ${plane} (${x}, ${y})`);
        else assert.equal(v, plane * 16 + y * size + x + 1, `plane ${plane} (${x}, ${y})`);
      }
    }
  }
  assert.throws(() => zeroCells(images, 1, size, [3, 3], [0]), /does not divide/);
});

Deno.test("salientPatches: the patches holding the top λ of the attention mass, by hand", () => {
  const attention = [0.1, 0.4, 0.2, 0.3];
  // Ascending 0.1, 0.2, 0.3, 0.4 cumulate to 0.1, 0.3, 0.6, 1.0.
  assert.deepEqual([...salientPatches(attention, 0.5)], [0, 1, 0, 1]); // > 0.5: 0.6, 1.0
  assert.deepEqual([...salientPatches(attention, 0.3)], [0, 1, 0, 0]); // > 0.7: 1.0
  assert.deepEqual([...salientPatches(attention, 0.75)], [0, 1, 1, 1]); // > 0.25: 0.3, 0.6, 1.0
  assert.deepEqual([...salientPatches(attention, 1)], [1, 1, 1, 1]);
  // Unnormalised rows are normalised first.
  assert.deepEqual([...salientPatches([1, 4, 2, 3], 0.5)], [0, 1, 0, 1]);
});

Deno.test({
  name: "salientPatches: the official threshold in PyTorch",
  ignore: !torchAvailable(),
  fn: async () => {
    const rng = new Rng(11);
    const rows = 6, n = 49;
    const attention = Float32Array.from({ length: rows * n }, () => Math.exp(2 * rng.normal()));
    for (const lambda of [0.1, 0.6, 0.9]) {
      const read = float64Reader(
        await runTorchReference("occlusion_torch.py", ["saliency"], {
          attention: { dtype: "float32", shape: [rows, n], data: attention },
          lambda: f64(lambda),
        }),
      );
      const expected = read("salient");
      for (let r = 0; r < rows; r++) {
        const ours = salientPatches(attention.subarray(r * n, (r + 1) * n), lambda);
        assert.deepEqual([...ours], [...expected.subarray(r * n, (r + 1) * n)], `λ ${lambda}`);
      }
    }
  },
});

/** Batches of `images` with labels from `labels`, `batch` rows each, the last one padded. */
async function* batchesOf(
  images: Float32Array,
  labels: Int32Array,
  batch: number,
): AsyncIterable<EvalBatch> {
  const per = 3 * TINY_SIZE * TINY_SIZE;
  const total = labels.length;
  for (let start = 0; start < total; start += batch) {
    const count = Math.min(batch, total - start);
    const rows = new Float32Array(batch * per);
    rows.set(images.subarray(start * per, (start + count) * per));
    const rowLabels = new Int32Array(batch).fill(-1);
    rowLabels.set(labels.subarray(start, start + count));
    yield {
      images: rows,
      labels: rowLabels,
      indices: Int32Array.from({ length: count }, (_, i) => start + i),
      count,
      total,
    };
  }
}

Deno.test("occlusion curves: the official share grid, 100 % when nothing is dropped, complementary saliency shares", async () => {
  const combined = tinyCombinedModel(21);
  const n = 10;
  const images = tinyImages(22, n);
  const model = await LinearProbeModel.create(combined, { batch: 4, size: TINY_SIZE });
  const runner = BackboneRunner.create(combined.backbone);
  try {
    // Labels: the clean predictions, so that the clean accuracy is 100 %.
    const labels = new Int32Array(n);
    for await (const b of batchesOf(images, new Int32Array(n), 4)) {
      const logits = await model.logits(b.images);
      for (let i = 0; i < b.count; i++) {
        let best = 0;
        for (let c = 1; c < TINY_CLASSES; c++) {
          if (logits[i * TINY_CLASSES + c] > logits[i * TINY_CLASSES + best]) best = c;
        }
        labels[b.indices[i]] = best;
      }
    }
    for (const mode of ["zero", "remove"] as const) {
      const curve = await randomDropCurve(model, batchesOf(images, labels, 4), { mode });
      assert.deepEqual(curve.map((p) => p.dropped), officialDropCounts(16).map((c) => c / 16));
      assert.equal(curve[0].top1, 100, `${mode}: nothing dropped`);
      assert(curve.some((p) => p.top1 < 100), `${mode}: dropping never changed a prediction`);
    }
    const curves = await saliencyDropCurves(model, runner, batchesOf(images, labels, 4));
    assert.equal(curves.foreground.length, 10);
    const last = curves.foreground.at(-1)!;
    assert.equal(last.lambda, 1);
    assert.equal(last.dropped, 1, "λ = 1 takes every patch as foreground");
    assert.equal(curves.background.at(-1)!.dropped, 0, "λ = 1 leaves no background");
    assert.equal(curves.background.at(-1)!.top1, 100, "dropping no background is clean");
    for (let l = 0; l < 10; l++) {
      assertCloseToScale(
        curves.foreground[l].dropped + curves.background[l].dropped,
        1,
        `λ ${curves.foreground[l].lambda}: foreground and background shares`,
        1e-9,
      );
    }
  } finally {
    await model.close();
    await runner.close();
  }
});

Deno.test("correctCount: counts the rows whose label has the largest logit", () => {
  const logits = Float32Array.of(1, 3, 2, 5, 0, 1, 0, 0, 9);
  assert.equal(correctCount(logits, [1, 0, 2], 3, 3), 3);
  assert.equal(correctCount(logits, [1, 0, 0], 3, 3), 2);
  assert.equal(correctCount(logits, [0, 0, 2], 2, 3), 1);
});

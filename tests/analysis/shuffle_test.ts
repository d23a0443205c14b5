import { assert, assertCloseToScale } from "../assert.ts";
import {
  OFFICIAL_SHUFFLE_GRIDS,
  randomPermutation,
  shuffleCurve,
  shufflePieces,
} from "../../lib/analysis/shuffle.ts";
import { LinearProbeModel } from "../../lib/analysis/linear_probe_model.ts";
import type { EvalBatch } from "../../lib/data/loader.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { float64Reader, i64, runTorchReference, torchAvailable } from "../reference/torch.ts";
import { TINY_SIZE, tinyCombinedModel, tinyImages, torchInputs } from "./linear_probe_fixture.ts";

Deno.test("randomPermutation: a permutation, every order reachable", () => {
  const rng = new Rng(1);
  const seen = new Set<string>();
  for (let t = 0; t < 400; t++) {
    const order = randomPermutation(rng, 4);
    assert.deepEqual([...order].sort(), [0, 1, 2, 3]);
    seen.add(order.join(","));
  }
  assert.equal(seen.size, 24, "not every order of 4 pieces was drawn");
});

Deno.test("shufflePieces: piece i comes from piece order[i]; the inverse order restores the image", () => {
  const size = 8;
  const images = Float32Array.from({ length: 2 * 3 * size * size }, (_, i) => i);
  const grid: [number, number] = [2, 4];
  const order = [5, 0, 7, 2, 1, 6, 3, 4];
  const out = shufflePieces(images, 2, 3, size, grid, order);
  for (let plane = 0; plane < 6; plane++) {
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const piece = Math.floor(y / 4) * 4 + Math.floor(x / 2);
        const from = order[piece];
        const sy = Math.floor(from / 4) * 4 + (y % 4);
        const sx = (from % 4) * 2 + (x % 2);
        assert.equal(out[plane * 64 + y * size + x], images[plane * 64 + sy * size + sx]);
      }
    }
  }
  const inverse = new Array<number>(order.length);
  order.forEach((from, to) => (inverse[from] = to));
  assert.deepEqual(shufflePieces(out, 2, 3, size, grid, inverse), images);
  const identity = Array.from({ length: 8 }, (_, i) => i);
  assert.deepEqual(shufflePieces(images, 2, 3, size, grid, identity), images);
  assert.throws(() => shufflePieces(images, 2, 3, size, [3, 3], identity), /does not divide/);
});

Deno.test("official shuffle grids: the pairs of eval_shuffle.sh", () => {
  assert.deepEqual(OFFICIAL_SHUFFLE_GRIDS.map((g) => g[0]), [2, 2, 4, 4, 8, 14, 16]);
  assert.deepEqual(OFFICIAL_SHUFFLE_GRIDS.map((g) => g[1]), [2, 4, 4, 8, 8, 14, 16]);
});

Deno.test({
  name: "shuffle: the pieces and the shuffled forward match the official rearrange in PyTorch",
  ignore: !torchAvailable(),
  fn: async () => {
    const combined = tinyCombinedModel(31);
    const batch = 2;
    const images = tinyImages(32, batch);
    // A 2×8 grid: pieces of 8×2 pixels, cutting across the 4-pixel patches.
    const grid: [number, number] = [2, 8];
    const order = randomPermutation(new Rng(33), 16);
    const read = float64Reader(
      await runTorchReference("occlusion_torch.py", ["shuffle"], {
        ...torchInputs(combined, images, batch),
        grid_h: i64(grid[0]),
        grid_w: i64(grid[1]),
        order: { dtype: "int64", shape: [16], data: BigInt64Array.from(order, BigInt) },
      }),
    );
    const shuffled = shufflePieces(images, batch, 3, TINY_SIZE, grid, order);
    assertCloseToScale(shuffled, read("shuffled"), "shuffled images", 1e-7);
    const model = await LinearProbeModel.create(combined, { batch, size: TINY_SIZE });
    try {
      assertCloseToScale(await model.logits(shuffled), read("shuffled_logits"), "logits", 1e-4);
    } finally {
      await model.close();
    }
  },
});

Deno.test("shuffleCurve: the 1×1 grid is the clean accuracy; a grid must divide the image", async () => {
  const combined = tinyCombinedModel(41);
  const batch = 4;
  const images = tinyImages(42, batch);
  const model = await LinearProbeModel.create(combined, { batch, size: TINY_SIZE });
  try {
    const logits = await model.logits(images);
    const labels = Int32Array.from({ length: batch }, (_, i) => {
      const row = logits.subarray(i * 5, i * 5 + 5);
      return row.indexOf(Math.max(...row));
    });
    const batches = async function* (): AsyncIterable<EvalBatch> {
      yield { images, labels, indices: Int32Array.of(0, 1, 2, 3), count: batch, total: batch };
    };
    const points = await shuffleCurve(model, batches(), [[1, 1], [4, 4], [16, 16]], { runs: 2 });
    assert.deepEqual(points.map((p) => p.pieces), [1, 16, 256]);
    assert.equal(points[0].top1, 100);
    assert(points.every((p) => p.top1 >= 0 && p.top1 <= 100));
    await assert.rejects(() => shuffleCurve(model, batches(), [[3, 3]]), /does not divide/);
  } finally {
    await model.close();
  }
});

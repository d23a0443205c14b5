import { join } from "node:path";
import sharp from "sharp";
import {
  classBatches,
  correspondPair,
  drawCorrespondences,
  groundTruthMatches,
  instanceBatches,
  instanceView,
  matchAccuracy,
  matchPatches,
  meanClsAttention,
  overlapMask,
  patchCentres,
  pooledSimilarity,
  topPatches,
  viewBox,
} from "../../lib/analysis/correspondence.ts";
import { BackboneRunner } from "../../lib/analysis/backbone_runner.ts";
import { drawLine } from "../../lib/analysis/draw.ts";
import { blankPicture } from "../../lib/analysis/picture.ts";
import { cropAndResize, normalize } from "../../lib/data/augment.ts";
import type { LoadedBackbone, VitBackboneConfig } from "../../lib/checkpoint/backbone_file.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { vit, VIT_SIZES } from "../../lib/models/vit.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { saveSafetensors } from "../../lib/checkpoint/safetensors.ts";
import type { NamedTensor } from "../../lib/runtime/named_tensor.ts";
import { StateStore } from "../../lib/runtime/store.ts";
import { assert, assertClose } from "../assert.ts";
import { withTempDir, writeVendoredSubset } from "../data/fixtures.ts";
import { runDenoTask } from "../task_runner.ts";

/** Randomly initialised backbone weights of `config`, keys without `backbone.`. */
function randomBackbone(config: VitBackboneConfig, seed: number): Map<string, NamedTensor> {
  const g = new Graph("tiny");
  const images = g.input("images", "float32", [1, 3, config.imgSize, config.imgSize]);
  vit(g, { ...config, maskedImModeling: false }, { images });
  const store = StateStore.fromParams(g.params, seed);
  const weights = new Map<string, NamedTensor>();
  for (const name of store.names()) {
    weights.set(name.slice("backbone.".length), {
      dtype: "float32",
      shape: [...store.shape(name)],
      data: store.get(name),
    });
  }
  return weights;
}

function isRed(data: Uint8Array, pixel: number): boolean {
  return data[3 * pixel] === 255 && data[3 * pixel + 1] === 0 && data[3 * pixel + 2] === 0;
}

Deno.test("viewBox normalises a crop box and swaps left and right when flipped", () => {
  const box = { left: 2, top: 1, width: 6, height: 6 };
  assert.deepEqual(viewBox(box, 10, 10, false), { top: 0.1, left: 0.2, bottom: 0.7, right: 0.8 });
  assert.deepEqual(viewBox(box, 10, 10, true), { top: 0.1, left: 0.8, bottom: 0.7, right: 0.2 });
});

Deno.test("patch centres, overlap and ground truth match hand-computed values", () => {
  const full = viewBox({ left: 0, top: 0, width: 10, height: 10 }, 10, 10, false);
  const flipped = viewBox({ left: 2, top: 1, width: 6, height: 6 }, 10, 10, true);
  const c1 = patchCentres(full, 4);
  const c2 = patchCentres(flipped, 4);
  // Rows 0.1 + 0.6·(2i+1)/8; columns 0.8 − 0.6·(2j+1)/8 (flipped: the view's left is column 0.8).
  assertClose(c2.filter((_, i) => i % 2 === 0).slice(0, 4), [0.175, 0.175, 0.175, 0.175]);
  assertClose(c2.filter((_, i) => i % 2 === 1).slice(0, 4), [0.725, 0.575, 0.425, 0.275]);
  assertClose(c2.filter((_, i) => i % 2 === 0).filter((_, i) => i % 4 === 0), [
    0.175,
    0.325,
    0.475,
    0.625,
  ]);
  assertClose(c1.slice(0, 4), [0.125, 0.125, 0.125, 0.375]);
  // Nearest view-2 row of view-1 rows .125 .375 .625 .875: 0 1 3 3; nearest column: 3 2 1 0.
  const rows = [0, 1, 3, 3];
  const cols = [3, 2, 1, 0];
  const expected = Array.from({ length: 16 }, (_, p) => rows[p >> 2] * 4 + cols[p % 4]);
  assert.deepEqual([...groundTruthMatches(c1, c2)], expected);
  // eps = ⌊4/2⌋/16 = 0.125: view-1 rows 0–2 reach rows [0.175, 0.625], columns 1–2 [0.275, 0.725].
  const overlap = [...overlapMask(c1, c2, 4, 16)];
  assert.deepEqual(overlap.flatMap((v, p) => v ? [p] : []), [1, 2, 5, 6, 9, 10]);
  // Patch 5 gives the same eps (⌊5/2⌋ = 2); patch 8 gives 0.25, reaching columns 0 and 3 too.
  assert.deepEqual([...overlapMask(c1, c2, 5, 16)], overlap);
  const wide = [...overlapMask(c1, c2, 8, 16)];
  assert.deepEqual(wide.flatMap((v, p) => v ? [p] : []), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
});

Deno.test("matchPatches takes the argmax of plain dot products, not of cosines", () => {
  const x1 = Float32Array.from([1, 0, 0, 1]);
  const x2 = Float32Array.from([2, 2, 1, 0, 0, 3]);
  const { index, value } = matchPatches(x1, x2, 2, 3, 2);
  // Patch 0: dots 2, 1, 0 (cosine would pick [1, 0]); patch 1: dots 2, 0, 3.
  assert.deepEqual([...index], [0, 2]);
  assert.deepEqual([...value], [2, 3]);
  assert.throws(() => matchPatches(x1, x2, 2, 2, 2), /expected 2×2 and 2×2 values/);
});

Deno.test("matchAccuracy counts overlapping matches within the radius in row and column", () => {
  const truth = Int32Array.from({ length: 16 }, (_, p) => p);
  // Patch 0 exact, 1 one column off, 2 two rows off, 3 one row and one column off,
  // 4 exact but not overlapping, 5 (row 1, column 1) predicted at (2, 3).
  const predicted = Int32Array.from(truth);
  predicted[1] = 2;
  predicted[2] = 10;
  predicted[3] = 6;
  predicted[5] = 11;
  const overlap = Uint8Array.from({ length: 16 }, (_, p) => (p <= 3 || p === 5 ? 1 : 0));
  assert.deepEqual(matchAccuracy(predicted, truth, overlap, 4, 0), { correct: 1, overlapping: 5 });
  assert.deepEqual(matchAccuracy(predicted, truth, overlap, 4, 1), { correct: 3, overlapping: 5 });
  assert.deepEqual(matchAccuracy(predicted, truth, overlap, 4, 2), { correct: 5, overlapping: 5 });
});

Deno.test("meanClsAttention averages the CLS row over heads; topPatches orders ties by index", () => {
  // 2 heads, 3 tokens: CLS rows [.2 .5 .3] and [.4 .1 .5].
  const attention = new Float32Array(18);
  attention.set([0.2, 0.5, 0.3], 0);
  attention.set([0.4, 0.1, 0.5], 9);
  attention.fill(9, 3, 9); // other rows are ignored
  assertClose(meanClsAttention(attention, 2, 3), [0.3, 0.4]);
  assert.deepEqual(topPatches([1, 3, 3, 0], 3), [1, 2, 0]);
});

Deno.test("pooledSimilarity: each patch token's dot product with the pooled token", () => {
  // dim 2: pooled (1, 2), patches (3, 0), (-1, 1), (0.5, 0.5).
  const tokens = Float32Array.from([1, 2, 3, 0, -1, 1, 0.5, 0.5]);
  assertClose(pooledSimilarity(tokens, 3, 2), [3, 1, 1.5]);
});

Deno.test("drawLine sets exactly the Bresenham pixels, endpoints included, clipped", () => {
  const picture = blankPicture(10, 6);
  drawLine(picture, 1, 1, 8, 4);
  // y = 1 + round(3·(x − 1)/7), no ties.
  const expected = [[1, 1], [2, 1], [3, 2], [4, 2], [5, 3], [6, 3], [7, 4], [8, 4]];
  const red = [];
  for (let p = 0; p < 60; p++) if (isRed(picture.data, p)) red.push([p % 10, Math.floor(p / 10)]);
  assert.deepEqual(red, expected);
  const dot = blankPicture(3, 3);
  drawLine(dot, 1.7, 1.2, 1.7, 1.2, [0, 255, 0]);
  assert.deepEqual([...dot.data.subarray(12, 15)], [0, 255, 0]);
  assert.equal(dot.data.reduce((a, b) => a + b, 0), 255);
  const clipped = blankPicture(4, 4);
  drawLine(clipped, -3, 0, 6, 0);
  assert.deepEqual([0, 1, 2, 3].map((x) => isRed(clipped.data, x)), [true, true, true, true]);
  assert.equal(clipped.data.subarray(12).reduce((a, b) => a + b, 0), 0);
});

Deno.test("drawCorrespondences joins patch centres across the side-by-side views", () => {
  const view = blankPicture(8, 8);
  const picture = drawCorrespondences(view, view, [0], [3], 2, 4, { panelSize: 0 });
  assert.equal(picture.width, 16);
  assert.equal(picture.height, 8);
  // From the centre (2, 2) of patch 0 to the centre (6, 6) of view 2's patch 3, shifted by 8.
  assert(isRed(picture.data, 2 * 16 + 2));
  assert(isRed(picture.data, 6 * 16 + 14));
  let red = 0;
  for (let p = 0; p < 16 * 8; p++) red += isRed(picture.data, p) ? 1 : 0;
  assert.equal(red, 13);
});

Deno.test("drawCorrespondences enlarges the views, then draws thin lines at the scaled centres", () => {
  // Two 8×8 views of 2×2 patches of 4 pixels, in colours that are never pure red.
  const view = (shift: number) => ({
    data: Uint8Array.from({ length: 8 * 8 * 3 }, (_, i) => (17 * i + shift) % 200),
    width: 8,
    height: 8,
  });
  const [view1, view2] = [view(0), view(5)];
  // Panel size 20 needs 3 times: 24×24 views, patch centres at (6, 6), (18, 6), (6, 18), (18, 18).
  const picture = drawCorrespondences(view1, view2, [0, 3], [3, 1], 2, 4, { panelSize: 20 });
  assert.deepEqual([picture.width, picture.height], [48, 24]);
  // The lines are exactly one-pixel Bresenham lines between the scaled centres, view 2 shifted by
  // its enlarged width 24: (6, 6) → (18 + 24, 18) and (18, 18) → (18 + 24, 6).
  const lines = blankPicture(48, 24);
  drawLine(lines, 6, 6, 42, 18);
  drawLine(lines, 18, 18, 42, 6);
  for (let y = 0; y < 24; y++) {
    for (let x = 0; x < 48; x++) {
      const p = y * 48 + x;
      if (isRed(lines.data, p)) {
        assert(isRed(picture.data, p), `line pixel (${x}, ${y})`);
        continue;
      }
      // Every other pixel is its view's pixel under a 3×3 nearest-neighbour block.
      const [source, sx] = x < 24 ? [view1, x] : [view2, x - 24];
      const from = 3 * (Math.floor(y / 3) * 8 + Math.floor(sx / 3));
      assert.deepEqual(
        [...picture.data.subarray(3 * p, 3 * p + 3)],
        [...source.data.subarray(from, from + 3)],
        `pixel (${x}, ${y})`,
      );
    }
  }
  // The default panel size enlarges 8-pixel views 28 times.
  const readable = drawCorrespondences(view1, view2, [0], [3], 2, 4);
  assert.deepEqual([readable.width, readable.height], [2 * 28 * 8, 28 * 8]);
});

Deno.test("an image and its exact copy correspond by the identity with 100% accuracy", async () => {
  const config = { embedDim: 16, depth: 1, heads: 2, patchSize: 4, imgSize: 16, mlpRatio: 4 };
  const loaded: LoadedBackbone = {
    path: "tiny",
    key: "flat",
    config,
    weights: randomBackbone(config, 3),
    head: new Map(),
  };
  const rng = new Rng(5);
  const image = {
    data: Uint8Array.from({ length: 16 * 16 * 3 }, () => rng.int(256)),
    width: 16,
    height: 16,
  };
  const box = { left: 0, top: 0, width: 16, height: 16 };
  const pixels = await cropAndResize(image, box, 16);
  const input = normalize(pixels, 16, 16);
  const batch = new Float32Array(2 * input.length);
  batch.set(input, 0);
  batch.set(input, input.length);
  const runner = BackboneRunner.create(loaded);
  try {
    const run = await runner.run(batch, 2, 16, 16);
    const perImage = 17 * 16;
    const scores = meanClsAttention(run.attention!.subarray(0, 2 * 17 * 17), 2, 17);
    const same = viewBox(box, 16, 16, false);
    const pair = correspondPair({
      tokens1: run.tokens.subarray(0, perImage),
      tokens2: run.tokens.subarray(perImage, 2 * perImage),
      scores1: scores,
      grid: 4,
      dim: 16,
      topk: 5,
      instance: { box1: same, box2: same, patchSize: 4, imageSize: 16, radius: 0 },
    });
    const identity = Array.from({ length: 16 }, (_, p) => p);
    assert.deepEqual([...pair.matches.index], identity);
    assert.deepEqual([...pair.truth!], identity);
    assert.deepEqual([...pair.overlap!], new Array(16).fill(1));
    assert.deepEqual(pair.count, { correct: 16, overlapping: 16 });
    // Each patch's best value is its own squared norm; the chosen patches are the most attended.
    const x = run.tokens.subarray(16, perImage);
    const norms = identity.map((p) =>
      x.subarray(16 * p, 16 * p + 16).reduce((a, v) => a + v * v, 0)
    );
    assertClose(pair.matches.value, norms, 1e-5);
    assert.deepEqual(pair.chosen, [...identity].sort((a, b) => scores[b] - scores[a]).slice(0, 5));
  } finally {
    await runner.close();
  }
});

Deno.test("instanceView boxes follow the pixels: a flipped view runs right to left", async () => {
  // A gray ramp brightening to the right: jitter keeps it gray and monotone.
  const width = 64;
  const data = new Uint8Array(width * 48 * 3);
  for (let p = 0; p < width * 48; p++) {
    data.fill(40 + Math.round(160 * (p % width) / (width - 1)), 3 * p, 3 * p + 3);
  }
  const rng = new Rng(11);
  let flips = 0;
  for (let i = 0; i < 8; i++) {
    const view = await instanceView({ data, width, height: 48 }, 16, rng);
    const { top, left, bottom, right } = view.box;
    const area = (bottom - top) * Math.abs(right - left);
    assert(area >= 0.39 && area <= 1, `view area ${area}`);
    const first = view.pixels[3 * 8 * 16];
    const last = view.pixels[3 * (8 * 16 + 15)];
    assert.equal(left > right, first > last, `view ${i}: box ${JSON.stringify(view.box)}`);
    if (left > right) flips++;
  }
  assert(flips > 0 && flips < 8, `${flips} of 8 views flipped`);
});

Deno.test("batches: class batches keep one class and drop remainders; instance covers all", () => {
  const batches = classBatches([0, 1, 0, 0, 1, 2], 2, new Rng(0));
  assert.deepEqual(batches.map((b) => b.join()).sort(), ["0,2", "1,4"]);
  const all = instanceBatches(5, 2, new Rng(0));
  assert.deepEqual(all.map((b) => b.length), [2, 2, 1]);
  assert.deepEqual(all.flat().sort(), [0, 1, 2, 3, 4]);
});

Deno.test("deno task correspondence writes pictures of 2·S × S with red lines", async () => {
  await withTempDir(async (dir) => {
    const config = { ...VIT_SIZES.vit_mini, patchSize: 8, imgSize: 32, mlpRatio: 4 };
    const weights = join(dir, "backbone.safetensors");
    await saveSafetensors(weights, randomBackbone(config, 1));
    // The first four test images are labelled 9, 2, 1, 1: one class batch of two.
    await writeVendoredSubset(
      "t10k",
      4,
      join(dir, "t10k-images-idx3-ubyte"),
      join(dir, "t10k-labels-idx1-ubyte"),
    );
    const common = ["--pretrained_weights", weights, "--data_path", dir, "--image_size", "32"];
    const instance = join(dir, "instance");
    let r = await runDenoTask("correspondence", [
      ...common,
      "--sample_type",
      "instance",
      "--show_nums",
      "3",
      "--output_path",
      instance,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /mean match accuracy \(eval_radius 0\) over 4 pairs in 2 batches: \d+\.\d\d%/,
    );
    const names = [...Deno.readDirSync(instance)].map((e) => e.name).sort();
    assert.equal(names.length, 3);
    names.forEach((name, i) =>
      assert.match(name, new RegExp(`^instance_corresp${i}_cls[129]\\.png$`))
    );
    assert.match(r.stdout, /32-pixel views, 4×4 patches, pictures enlarged 7×/);
    const { data, info } = await sharp(join(instance, names[0])).raw().toBuffer({
      resolveWithObject: true,
    });
    // Two 32-pixel views enlarged 7 times to the default panel size of 224 pixels.
    assert.deepEqual([info.width, info.height, info.channels], [448, 224, 3]);
    let red = 0;
    for (let p = 0; p < 448 * 224; p++) red += isRed(data, p) ? 1 : 0;
    // Gray images: red pixels are line pixels, one-pixel lines of at least 28 pixels each (the
    // centres of distinct patches lie 56 pixels apart or more).
    assert(red >= 28, `only ${red} red pixels`);
    // Away from the lines, every 7×7 block is one view pixel.
    let blocks = 0;
    for (let by = 0; by < 32; by++) {
      for (let bx = 0; bx < 64; bx++) {
        const block = Array.from({ length: 49 }, (_, k) =>
          (7 * by + Math.floor(k / 7)) * 448 +
          7 * bx + (k % 7));
        if (block.some((p) => isRed(data, p))) continue;
        blocks++;
        for (const p of block) {
          assert.deepEqual(
            [...data.subarray(3 * p, 3 * p + 3)],
            [...data.subarray(3 * block[0], 3 * block[0] + 3)],
            `block (${bx}, ${by})`,
          );
        }
      }
    }
    assert(blocks > 1024, `only ${blocks} of 2048 blocks are clear of the lines`);

    const byClass = join(dir, "class");
    r = await runDenoTask("correspondence", [...common, "--output_path", byClass, "--topk", "3"]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual([...Deno.readDirSync(byClass)].map((e) => e.name).sort(), [
      "class_corresp0_cls1.png",
      "class_corresp1_cls1.png",
    ]);
  });
});

Deno.test("deno task correspondence rejects bad input with one sentence", async () => {
  await withTempDir(async (dir) => {
    for (
      const [args, message] of [
        [["--pretrained_weights", join(dir, "missing.safetensors")], /does not exist/],
        [
          ["--pretrained_weights", "x", "--sample_type", "pairs"],
          /--sample_type must be instance or class/,
        ],
        [["--pretrained_weights", "x", "--bogus"], /bogus/],
      ] as const
    ) {
      const r = await runDenoTask("correspondence", [...args]);
      assert.equal(r.code, 1);
      const lines = r.stderr.trim().split("\n");
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0], /^error: /);
      assert.match(lines[0], message);
    }
  });
});

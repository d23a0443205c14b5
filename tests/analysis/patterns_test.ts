import { join } from "node:path";
import { assert, assertClose } from "../assert.ts";
import {
  assignPrototypes,
  cachedMemoryBank,
  evalPicture,
  highlightSquare,
  loadMemoryBank,
  loadPatternImage,
  meanValue,
  type MemoryBank,
  neighbourhood,
  patternCells,
  patternGrid,
  patternPicture,
  patternResize,
  prototypeCounts,
  rankHits,
  saveMemoryBank,
  topPrototypes,
} from "../../lib/analysis/patterns.ts";
import { BackboneRunner } from "../../lib/analysis/backbone_runner.ts";
import { blankPicture } from "../../lib/analysis/picture.ts";
import { evalTransform, normalize } from "../../lib/data/augment.ts";
import type { RawImage } from "../../lib/data/source.ts";
import { openSource } from "../../lib/data/source.ts";
import { loadBackbone } from "../../lib/checkpoint/backbone_file.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { clsLastLayer, headBottleneck, type HeadConfig } from "../../lib/models/head.ts";
import { vit } from "../../lib/models/vit.ts";
import { saveSafetensors } from "../../lib/checkpoint/safetensors.ts";
import type { NamedTensor } from "../../lib/runtime/named_tensor.ts";
import { StateStore } from "../../lib/runtime/store.ts";
import { withTempDir, writeVendoredSubset } from "../data/fixtures.ts";
import { runDenoTask } from "../task_runner.ts";
import { readPng, shrinkBlocks } from "./blocks.ts";

/** A picture whose every pixel is `rgb`. */
function flat(width: number, height: number, rgb: number[]): RawImage {
  return blankPicture(width, height, rgb);
}

/** The RGB triple at (x, y). */
function pixel(picture: RawImage, x: number, y: number): number[] {
  const i = 3 * (y * picture.width + x);
  return [...picture.data.subarray(i, i + 3)];
}

/** A patch bank over a 2 × 2 grid from explicit (logit, prototype) entries. */
function patchBank(entries: [number, number][], prototypes: number): MemoryBank {
  const prototype = Int32Array.from(entries, (e) => e[1]);
  return {
    type: "patch",
    images: entries.length / 4,
    imageSize: 8,
    grid: [2, 2],
    prototypes,
    maxLogit: Float32Array.from(entries, (e) => e[0]),
    prototype,
    counts: prototypeCounts(prototype, prototypes),
  };
}

Deno.test("assignPrototypes: max and argmax per row, ties to the lower id; counts", () => {
  const logits = new Float32Array([
    ...[0.1, 0.7, -2],
    ...[-1, -3, -0.5],
    ...[4, 4, 1], // tie: prototype 0
    ...[0, 0, 9],
  ]);
  const { maxLogit, prototype } = assignPrototypes(logits, 4, 3);
  assertClose(maxLogit, [0.7, -0.5, 4, 9]);
  assert.deepEqual([...prototype], [1, 2, 0, 2]);
  assert.deepEqual([...prototypeCounts(prototype, 4)], [1, 1, 2, 0]);
  assert.throws(() => assignPrototypes(logits, 3, 3), /expected 3×3 logits/);
  assert.throws(() => prototypeCounts(Int32Array.of(4), 4), /not below 4/);
});

Deno.test("topPrototypes: by population, ties to the lower id, empty prototypes left out", () => {
  const counts = Int32Array.of(3, 0, 7, 3, 1, 0);
  assert.deepEqual(topPrototypes(counts, 3), [2, 0, 3]);
  assert.deepEqual(topPrototypes(counts, 10), [2, 0, 3, 4]);
});

Deno.test("rankHits: each image's best assigned patch, images ranked by its logit", () => {
  // Three images of 2 × 2 patches; prototype 1 owns patches in images 0 and 2 only.
  const bank = patchBank([
    ...[[0.5, 1], [0.9, 0], [0.8, 1], [0.1, 2]] as [number, number][],
    ...[[5, 0], [6, 0], [7, 2], [8, 2]] as [number, number][],
    ...[[0.2, 0], [0.3, 2], [0.4, 2], [0.95, 1]] as [number, number][],
  ], 3);
  const hits = rankHits(bank, 1);
  assert.deepEqual(hits.map((h) => [h.image, h.row, h.col]), [[2, 1, 1], [0, 1, 0]]);
  assertClose(hits.map((h) => h.logit), [0.95, 0.8]);
  // Ties: the lower image first.
  const tied = rankHits(
    patchBank([[1, 0], [1, 1], [1, 1], [1, 1], [1, 0], [0, 1], [0, 1], [0, 1]], 2),
    0,
  );
  assert.deepEqual(tied.map((h) => h.image), [0, 1]);
});

Deno.test("neighbourhood: a window of patches around a patch, black outside the picture", () => {
  // A 4 × 4 picture (patch 2, grid 2 × 2) whose pixel (x, y) is (x, y, 100).
  const picture = blankPicture(4, 4);
  for (let y = 0; y < 4; y++) {
    for (let x = 0; x < 4; x++) picture.data.set([x, y, 100], 3 * (4 * y + x));
  }
  const crop = neighbourhood(picture, 1, 0, 2, 3); // patch row 1, col 0; 3 × 3 patches = 6 px
  assert.equal(crop.width, 6);
  assert.equal(crop.height, 6);
  // The crop starts at picture pixel (−2, 0): its columns 0–1 are outside, rows 4–5 too.
  assert.deepEqual(pixel(crop, 0, 0), [0, 0, 0]);
  assert.deepEqual(pixel(crop, 2, 0), [0, 0, 100]);
  assert.deepEqual(pixel(crop, 5, 3), [3, 3, 100]);
  assert.deepEqual(pixel(crop, 3, 4), [0, 0, 0]);
});

Deno.test("meanValue and highlightSquare: HSV value mean, PIL's integer blend with orange", () => {
  const picture = flat(2, 1, [10, 50, 30]);
  picture.data.set([90, 0, 0], 3);
  assert.equal(meanValue(picture), (50 + 90) / 2);
  const square = flat(4, 4, [255, 255, 255]);
  square.data.set([0, 0, 0], 3 * 5); // pixel (1, 1) black
  highlightSquare(square, 1, 1, 2);
  // round((255·128 + (200, 100, 0)·127) / 255) and round((0·128 + (200, 100, 0)·127) / 255).
  assert.deepEqual(pixel(square, 1, 1), [100, 50, 0]);
  assert.deepEqual(pixel(square, 2, 2), [228, 178, 128]);
  assert.deepEqual(pixel(square, 0, 0), [255, 255, 255]);
  assert.deepEqual(pixel(square, 3, 2), [255, 255, 255]);
});

Deno.test("patternGrid: cells row by row in a ceil(√topk) square, the rest black", () => {
  const cells = [1, 2, 3, 4, 5].map((v) => flat(3, 3, [v, v, v]));
  const grid = patternGrid(cells, 4, 3); // 2 × 2 grid: the fifth cell is not shown
  assert.equal(grid.width, 6);
  assert.equal(grid.height, 6);
  assert.deepEqual([pixel(grid, 0, 0), pixel(grid, 5, 2), pixel(grid, 2, 3), pixel(grid, 4, 4)], [
    [1, 1, 1],
    [2, 2, 2],
    [3, 3, 3],
    [4, 4, 4],
  ]);
  const partial = patternGrid(cells.slice(0, 2), 5, 3); // 3 × 3 grid, two cells
  assert.equal(partial.width, 9);
  assert.deepEqual(pixel(partial, 4, 1), [2, 2, 2]);
  assert.deepEqual(pixel(partial, 7, 1), [0, 0, 0]);
  assert.deepEqual(pixel(partial, 1, 4), [0, 0, 0]);
});

Deno.test("patternCells: best patches first, near-black crops skipped, centre highlighted", async () => {
  // Four images of 2 × 2 patches of 2 px (4 × 4 pictures), window 1 (no highlight) and 3.
  // Prototype 0's best patches, best first: image 3, 1, 0, 2 (patches (1, 1), (0, 1), (0, 0),
  // (1, 0)). Mean HSV values: image 1's patch is 40, exactly dark.
  const bank = patchBank([
    ...[[0.6, 0], [0, 1], [0, 1], [0, 1]] as [number, number][],
    ...[[0, 1], [0.7, 0], [0, 1], [0, 1]] as [number, number][],
    ...[[0, 1], [0, 1], [0.5, 0], [0, 1]] as [number, number][],
    ...[[0, 1], [0, 1], [0, 1], [0.9, 0]] as [number, number][],
  ], 2);
  const pictures = [
    flat(4, 4, [180, 180, 180]),
    flat(4, 4, [0, 40, 0]),
    flat(4, 4, [0, 0, 91]),
    flat(4, 4, [90, 90, 90]),
  ];
  const loaded: number[] = [];
  const load = (i: number) => {
    loaded.push(i);
    return Promise.resolve(pictures[i]);
  };
  const one = await patternCells(bank, 0, load, { patchSize: 2, topk: 2, window: 1 });
  assert.deepEqual(one.hits.map((h) => h.image), [3, 0]);
  assert.equal(one.dark, 1);
  assert.deepEqual(loaded, [3, 1, 0]); // stops once topk cells qualify
  assert.deepEqual(one.cells.map((c) => [c.width, ...pixel(c, 1, 1)]), [
    [2, 90, 90, 90],
    [2, 180, 180, 180],
  ]);

  // Window 3: each 6 × 6 crop holds the whole 4 × 4 picture and 20 black pixels, so its mean
  // value is 16/36 of the picture's: 40 for image 3 (dark), 40.4 for image 2 (kept).
  const three = await patternCells(bank, 0, load, { patchSize: 2, topk: 10, window: 3 });
  assert.deepEqual(three.hits.map((h) => h.image), [0, 2]);
  assert.equal(three.dark, 2);
  // Image 0's patch (0, 0): the picture sits at crop pixels 2–5; the centre patch (2–3) blends
  // orange over grey, round((180·128 + (200, 100, 0)·127) / 255).
  const [cell] = three.cells;
  assert.equal(cell.width, 6);
  assert.deepEqual(pixel(cell, 0, 0), [0, 0, 0]);
  assert.deepEqual(pixel(cell, 1, 2), [0, 0, 0]);
  assert.deepEqual(pixel(cell, 2, 2), [190, 140, 90]);
  assert.deepEqual(pixel(cell, 3, 3), [190, 140, 90]);
  assert.deepEqual(pixel(cell, 4, 3), [180, 180, 180]);
  assert.deepEqual(pixel(cell, 5, 5), [180, 180, 180]);
  assert.deepEqual(pictures[0].data, flat(4, 4, [180, 180, 180]).data); // not drawn on

  // The cls type shows whole pictures, dark or not.
  const cls: MemoryBank = {
    type: "cls",
    images: 4,
    imageSize: 4,
    grid: [1, 1],
    prototypes: 2,
    maxLogit: Float32Array.of(0.3, 0.8, 0.1, 0.9),
    prototype: Int32Array.of(1, 1, 0, 1),
    counts: Int32Array.of(1, 3),
  };
  const images = await patternCells(cls, 1, load, { patchSize: 2, topk: 36 });
  assert.deepEqual(images.hits.map((h) => h.image), [3, 1, 0]);
  assert.deepEqual(images.cells, [pictures[3], pictures[1], pictures[0]]);

  // The grid picture: 6-px cells need 38 times to reach 224 pixels (37 · 6 = 222 falls short);
  // a 4 × 4 grid of 24 px becomes 912 px of exact 38 × 38 blocks.
  const grid = await patternPicture(bank, 0, load, { patchSize: 2, topk: 10, window: 3 });
  assert.equal(grid.scale, 38);
  assert.deepEqual([grid.picture.width, grid.picture.height], [912, 912]);
  assert.deepEqual(shrinkBlocks(grid.picture, 38), patternGrid(three.cells, 10, 6));
  const own = await patternPicture(cls, 1, load, { patchSize: 2, topk: 4, panelSize: 0 });
  assert.equal(own.scale, 1);
  assert.deepEqual(own.picture, patternGrid(images.cells, 4, 4));
});

Deno.test("evalPicture: the official resize and centre crop, the pixels evalTransform normalises", async () => {
  assert.equal(patternResize(224), 256);
  assert.equal(patternResize(32), 32);
  assert.equal(patternResize(20), 20);
  const image = blankPicture(27, 19);
  for (let i = 0; i < image.data.length; i++) image.data[i] = (i * 37) % 256;
  const picture = await evalPicture(image, 16);
  assert.equal(picture.width, 16);
  assert.equal(picture.height, 16);
  assert.deepEqual(normalize(picture.data, 16, 16), await evalTransform(image, 16, 16));
  const wider = await evalPicture(image, 14, 17);
  assert.deepEqual(normalize(wider.data, 14, 14), await evalTransform(image, 14, 17));
});

Deno.test("memory bank files read back identically; the cache is reused only on a match", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "memory_patch.safetensors");
    const bank = patchBank([[0.5, 1], [-0.25, 0], [3, 2], [1e-3, 2], [7, 0], [2, 1], [1, 1], [
      0,
      0,
    ]], 4);
    let builds = 0;
    const build = () => {
      builds++;
      return Promise.resolve(bank);
    };
    const key = { weights: "w.safetensors", split: "test" };
    const request = { type: "patch", imageSize: 8 } as const;
    const first = await cachedMemoryBank(path, request, key, build);
    assert.equal(first.reused, false);
    const second = await cachedMemoryBank(path, request, key, build);
    assert.equal(second.reused, true);
    assert.equal(builds, 1);
    assert.deepEqual(second.bank, bank);
    const read = await loadMemoryBank(path);
    assert.deepEqual(read.key, key);
    assert.deepEqual(read.bank, bank);
    // A changed field, an extra field, another image size: recomputed.
    assert.equal(
      (await cachedMemoryBank(path, request, { ...key, split: "train" }, build)).reused,
      false,
    );
    assert.equal(
      (await cachedMemoryBank(path, request, { ...key, split: "train", x: "1" }, build)).reused,
      false,
    );
    await assert.rejects(
      cachedMemoryBank(path, { type: "patch", imageSize: 16 }, key, build),
      /not of the requested type and image size/,
    );
    assert.equal(builds, 4);
    // A foreign file is recomputed, not trusted.
    await Deno.writeTextFile(path, "not a bank");
    assert.equal((await cachedMemoryBank(path, request, key, build)).reused, false);
    assert.equal((await cachedMemoryBank(path, request, key, build)).reused, true);
    await assert.rejects(saveMemoryBank(path, bank, { type: "cls" }), /field name "type"/);
  });
});

const HEAD: HeadConfig = {
  outDim: 6,
  patchOutDim: 6,
  sharedHead: true,
  hiddenDim: 24,
  bottleneckDim: 8,
};

/** A random vit_mini (patch 4, 16 px) with a shared head of 6 prototypes, as flat tensors. */
function tinyModel(withHead: boolean): Map<string, NamedTensor> {
  const g = new Graph("tiny");
  const images = g.input("images", "float32", [1, 3, 16, 16]);
  g.scope("model", () => {
    const config = {
      embedDim: 96,
      depth: 6,
      heads: 3,
      patchSize: 4,
      imgSize: 16,
      maskedImModeling: false,
    };
    const out = vit(g, config, { images });
    clsLastLayer(g, HEAD, headBottleneck(g, HEAD, out.tokens));
  });
  const tensors = new Map<string, NamedTensor>();
  for (const [name, t] of StateStore.fromParams(g.params, 7).toNamedTensors()) {
    if (withHead || !name.startsWith("model.head.")) tensors.set(name.slice("model.".length), t);
  }
  return tensors;
}

Deno.test("deno task patterns: a tiny model with a head, end to end; no head is one sentence", async () => {
  await withTempDir(async (dir) => {
    const data = join(dir, "data");
    await Deno.mkdir(data);
    const spec = await writeVendoredSubset(
      "t10k",
      10,
      join(data, "t10k-images-idx3-ubyte"),
      join(data, "t10k-labels-idx1-ubyte"),
    );
    const weights = join(dir, "tiny.safetensors");
    await saveSafetensors(weights, tinyModel(true));
    const output = join(dir, "patterns");
    const args = [
      ...["--pretrained_weights", weights, "--data_path", data, "--image_size", "16"],
      ...["--batch_size", "4", "--show_pics", "2", "--topk", "4", "--output_dir", output],
    ];
    const first = await runDenoTask("patterns", args);
    assert.equal(first.code, 0, first.stdout + first.stderr);
    assert.match(first.stdout, /wrote memory bank .*memory_patch\.safetensors/);

    // The bank holds the head's argmax over every patch of every image, computed here afresh.
    const { bank } = await loadMemoryBank(join(output, "memory_patch.safetensors"));
    const source = await openSource(spec);
    const runner = BackboneRunner.create(await loadBackbone(weights), { withHead: true });
    const pictures = await Promise.all(
      Array.from({ length: 10 }, (_, i) => loadPatternImage(source, i, 16)),
    );
    const images = new Float32Array(10 * 3 * 256);
    pictures.forEach((p, i) => images.set(normalize(p.data, 16, 16), i * 3 * 256));
    const run = await runner.run(images, 10, 16, 16);
    await runner.close();
    const expected = assignPrototypes(run.patchLogits!, 160, 6);
    assert.deepEqual([bank.images, ...bank.grid, bank.prototypes], [10, 4, 4, 6]);
    assertClose(bank.maxLogit, expected.maxLogit, 1e-4, 1e-5);
    assert.deepEqual(bank.prototype, expected.prototype);
    assert.deepEqual(bank.counts, prototypeCounts(expected.prototype, 6));

    // One 2 × 2 grid of 20-px cells per shown prototype, the first cell the best crop, enlarged
    // 12 times so that each cell reaches the default panel size of 224 pixels.
    const top = topPrototypes(bank.counts, 2);
    for (const c of top) {
      const file = join(output, `cpatch_cid${c}_top4.png`);
      const png = await readPng(file);
      assert.deepEqual([png.width, png.height], [480, 480]);
      const { cells } = await patternCells(bank, c, (i) => Promise.resolve(pictures[i]), {
        patchSize: 4,
        topk: 4,
        window: 5,
      });
      const picture = patternGrid(cells, 4, 20);
      assert.deepEqual(shrinkBlocks(png, 12, file).data, picture.data, `cpatch_cid${c}_top4.png`);
      assert(cells.length > 0, `prototype ${c} shows no cell`);
      assert.match(first.stdout, new RegExp(`prototype ${c}: ${bank.counts[c]} \\(`));
      assert.match(
        first.stdout,
        new RegExp(`cpatch_cid${c}_top4\\.png: .*enlarged 12× to 480×480 px`),
      );
    }

    const again = await runDenoTask("patterns", [...args, "--show_pics", "1", "--panel_size", "1"]);
    assert.equal(again.code, 0, again.stdout + again.stderr);
    assert.match(again.stdout, /reusing memory bank/);
    const own = await readPng(join(output, `cpatch_cid${top[0]}_top4.png`));
    assert.deepEqual([own.width, own.height], [40, 40], "--panel_size 1 keeps the cells' size");
    const changed = await runDenoTask("patterns", [
      ...args,
      "--show_pics",
      "1",
      "--image_size",
      "8",
    ]);
    assert.equal(changed.code, 0, changed.stdout + changed.stderr);
    assert.match(changed.stdout, /wrote memory bank/);
    assert.deepEqual((await loadMemoryBank(join(output, "memory_patch.safetensors"))).bank.grid, [
      2,
      2,
    ]);

    const bare = join(dir, "bare.safetensors");
    await saveSafetensors(bare, tinyModel(false));
    const failed = await runDenoTask("patterns", [...args, "--pretrained_weights", bare]);
    assert.equal(failed.code, 1);
    assert.equal(
      failed.stderr.trim(),
      `error: ${bare} holds no head weights; semantic patterns need a full checkpoint ` +
        `(our training .safetensors, or an official .pth with teacher and student)`,
    );
  });
});

/**
 * The analyses on a Swin backbone: the runner's tokens against the Swin feature graph, and the
 * correspondence and patterns tasks end to end on a tiny Swin checkpoint; attention maps refuse
 * a Swin with one sentence.
 */

import { join } from "node:path";
import { assert, assertClose } from "../assert.ts";
import { attentionMaps } from "../../lib/analysis/attention.ts";
import { BackboneRunner } from "../../lib/analysis/backbone_runner.ts";
import {
  classBatches,
  correspondBatch,
  drawCorrespondences,
} from "../../lib/analysis/correspondence.ts";
import {
  assignPrototypes,
  loadMemoryBank,
  loadPatternImage,
  patternCells,
  patternGrid,
  prototypeCounts,
  topPrototypes,
} from "../../lib/analysis/patterns.ts";
import { blankPicture } from "../../lib/analysis/picture.ts";
import { backboneStore, loadBackbone } from "../../lib/checkpoint/backbone_file.ts";
import { saveSafetensors } from "../../lib/checkpoint/safetensors.ts";
import { normalize } from "../../lib/data/augment.ts";
import { openSource } from "../../lib/data/source.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { buildFeatureGraph } from "../../lib/models/features.ts";
import { clsLastLayer, headBottleneck, type HeadConfig } from "../../lib/models/head.ts";
import { swin, type SwinConfig } from "../../lib/models/swin.ts";
import type { NamedTensor } from "../../lib/runtime/named_tensor.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { CompiledGraph } from "../../lib/runtime/session.ts";
import { StateStore } from "../../lib/runtime/store.ts";
import { withTempDir, writeVendoredSubset } from "../data/fixtures.ts";
import { runDenoTask } from "../task_runner.ts";
import { readPng, shrinkBlocks } from "./blocks.ts";

/**
 * A tiny Swin laid out for 64 px: stage grids 16, 8, 4, 2 with window 4 (a shifted block in
 * stage 0, windows 4, 4, 4, 2), last-stage width 64.
 */
const TINY_SWIN: SwinConfig = {
  embedDim: 8,
  depths: [2, 1, 1, 1],
  heads: [1, 1, 2, 2],
  dropPathRate: 0,
  windowSize: 4,
  imgSize: 64,
  mlpRatio: 2,
  maskedImModeling: false,
};

const HEAD: HeadConfig = {
  outDim: 5,
  patchOutDim: 5,
  sharedHead: true,
  hiddenDim: 16,
  bottleneckDim: 8,
};

/** Random weights of {@link TINY_SWIN} with `backbone.` keys and, `withHead`, `head.` keys. */
function tinySwin(withHead: boolean): Map<string, NamedTensor> {
  const g = new Graph("tiny_swin");
  const images = g.input("images", "float32", [1, 3, 64, 64]);
  g.scope("model", () => {
    const out = swin(g, TINY_SWIN, { images });
    if (withHead) clsLastLayer(g, HEAD, headBottleneck(g, HEAD, out.tokens));
  });
  const tensors = new Map<string, NamedTensor>();
  for (const [name, t] of StateStore.fromParams(g.params, 11).toNamedTensors()) {
    tensors.set(name.slice("model.".length), t);
  }
  return tensors;
}

/** `count` random normalised-looking images [count, 3, size, size]. */
function randomImages(count: number, size: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: count * 3 * size * size }, () => 2 * rng.uniform() - 1);
}

Deno.test("a Swin through the runner: the pooled token is the Swin feature graph's", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "swin.safetensors");
    await saveSafetensors(path, tinySwin(true));
    const loaded = await loadBackbone(path);
    assert.equal(loaded.config.imgSize, 64);
    const runner = BackboneRunner.create(loaded, { withHead: true });
    try {
      assert.equal(runner.patchSize, 32);
      assert.equal(runner.width, 64);
      for (const size of [64, 96]) {
        const batch = 2;
        const images = randomImages(batch, size, size);
        const run = await runner.run(images, batch, size, size);
        const grid = size / 32;
        const n = grid * grid;
        assert.deepEqual(run.grid, [grid, grid]);
        assert.equal(run.attention, undefined, "a Swin has no CLS attention");
        assert.equal(run.tokens.length, batch * (1 + n) * 64);
        assert.equal(run.clsLogits!.length, batch * 5);
        assert.equal(run.patchLogits!.length, batch * n * 5);

        const { graph, dim } = buildFeatureGraph({
          backbone: loaded.config,
          batch,
          size,
          avgpool: 0,
          nLastBlocks: 1,
          prefix: "model",
        });
        assert.equal(dim, 64);
        const store = backboneStore(loaded, "model");
        const feeds: Record<string, Float32Array> = { images };
        for (const param of graph.params) feeds[param.name] = store.get(param.name);
        const session = await CompiledGraph.create(graph);
        const features = (await session.run(feeds)).features as Float32Array;
        await session.release();

        const pooled = new Float32Array(batch * dim);
        const meanPatch = new Float32Array(batch * dim);
        for (let b = 0; b < batch; b++) {
          const tokens = run.tokens.subarray(b * (1 + n) * dim, (b + 1) * (1 + n) * dim);
          pooled.set(tokens.subarray(0, dim), b * dim);
          for (let p = 1; p <= n; p++) {
            for (let d = 0; d < dim; d++) meanPatch[b * dim + d] += tokens[p * dim + d] / n;
          }
        }
        assertClose(pooled, features, 1e-4, 1e-5, `${size} px: pooled token`);
        assertClose(meanPatch, features, 1e-4, 1e-5, `${size} px: mean of the patch tokens`);
      }
      await assert.rejects(
        () => runner.run(randomImages(1, 48, 1), 1, 48, 48),
        Error,
        "an image of 48×48 pixels is not a multiple of 32, the pixels of a patch token",
      );
    } finally {
      await runner.close();
    }
  });
});

Deno.test("deno task correspondence on a Swin draws the library's pictures", async () => {
  await withTempDir(async (dir) => {
    const weights = join(dir, "swin.safetensors");
    await saveSafetensors(weights, tinySwin(false));
    // The first four test images are labelled 9, 2, 1, 1: one class batch of two.
    const spec = await writeVendoredSubset(
      "t10k",
      4,
      join(dir, "t10k-images-idx3-ubyte"),
      join(dir, "t10k-labels-idx1-ubyte"),
    );
    const common = ["--pretrained_weights", weights, "--data_path", dir, "--image_size", "96"];
    const byClass = join(dir, "class");
    let r = await runDenoTask("correspondence", [
      ...common,
      "--output_path",
      byClass,
      "--topk",
      "3",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /96-pixel views, 3×3 patches, pictures enlarged 3×/);
    const names = [...Deno.readDirSync(byClass)].map((e) => e.name).sort();
    assert.deepEqual(names, ["class_corresp0_cls1.png", "class_corresp1_cls1.png"]);

    // The same pairs through the library: classBatches with the task's seed, then the runner.
    const source = await openSource(spec);
    const labels = Array.from({ length: source.length }, (_, i) => source.label(i));
    const [batch] = classBatches(labels, 2, new Rng(1));
    const images = await Promise.all(batch.map((i) => source.load(i)));
    const runner = BackboneRunner.create(await loadBackbone(weights));
    try {
      const result = await correspondBatch(runner, images, {
        sampleType: "class",
        size: 96,
        topk: 3,
        radius: 0,
        rng: new Rng(0),
      });
      for (const [b, pair] of result.pairs.entries()) {
        assert.equal(pair.chosen.length, 3);
        const expected = drawCorrespondences(
          { data: result.views1[b], width: 96, height: 96 },
          { data: result.views2[b], width: 96, height: 96 },
          pair.chosen,
          pair.chosen.map((p) => pair.matches.index[p]),
          3,
          32,
        );
        const png = await readPng(join(byClass, names[b]));
        assert.deepEqual([png.width, png.height], [576, 288]);
        assert.deepEqual(png.data, expected.data, names[b]);
      }
    } finally {
      await runner.close();
    }

    const instance = join(dir, "instance");
    r = await runDenoTask("correspondence", [
      ...common,
      ...["--sample_type", "instance", "--topk", "2", "--output_path", instance],
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /mean match accuracy \(eval_radius 0\) over 4 pairs in 2 batches: /);
    assert.equal([...Deno.readDirSync(instance)].length, 4);

    r = await runDenoTask("correspondence", [...common.slice(0, -1), "48"]);
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr.trim(),
      "error: --image_size 48 is not a multiple of 32, the pixels of one last-stage token of " +
        "the Swin",
    );
  });
});

Deno.test("deno task patterns on a Swin: the head's last-stage and pooled banks", async () => {
  await withTempDir(async (dir) => {
    const data = join(dir, "data");
    await Deno.mkdir(data);
    const spec = await writeVendoredSubset(
      "t10k",
      6,
      join(data, "t10k-images-idx3-ubyte"),
      join(data, "t10k-labels-idx1-ubyte"),
    );
    const weights = join(dir, "swin.safetensors");
    await saveSafetensors(weights, tinySwin(true));
    const source = await openSource(spec);
    const pictures = await Promise.all(
      Array.from({ length: 6 }, (_, i) => loadPatternImage(source, i, 64)),
    );
    const images = new Float32Array(6 * 3 * 64 * 64);
    pictures.forEach((p, i) => images.set(normalize(p.data, 64, 64), i * 3 * 64 * 64));
    const runner = BackboneRunner.create(await loadBackbone(weights), { withHead: true });
    const run = await runner.run(images, 6, 64, 64);
    await runner.close();

    for (const type of ["patch", "cls"] as const) {
      const output = join(dir, type);
      const r = await runDenoTask("patterns", [
        ...["--pretrained_weights", weights, "--data_path", data, "--image_size", "64"],
        ...["--type", type, "--batch_size", "4", "--show_pics", "2", "--topk", "4"],
        ...["--patch_window", "1", "--output_dir", output],
      ]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const { bank } = await loadMemoryBank(join(output, `memory_${type}.safetensors`));
      const rows = type === "patch" ? 6 * 4 : 6;
      const expected = assignPrototypes(
        type === "patch" ? run.patchLogits! : run.clsLogits!,
        rows,
        5,
      );
      assert.deepEqual(bank.grid, type === "patch" ? [2, 2] : [1, 1]);
      assert.equal(bank.prototypes, 5);
      assertClose(bank.maxLogit, expected.maxLogit, 1e-4, 1e-5, `${type} max logits`);
      assert.deepEqual(bank.prototype, expected.prototype);
      assert.deepEqual(bank.counts, prototypeCounts(expected.prototype, 5));

      // A 2 × 2 grid of 32-px last-stage cells (or 64-px images), enlarged to the panel size.
      const unit = type === "patch" ? 32 : 64;
      const scale = Math.ceil(224 / unit);
      for (const c of topPrototypes(bank.counts, 2)) {
        const file = join(output, `c${type}_cid${c}_top4.png`);
        const png = await readPng(file);
        assert.deepEqual([png.width, png.height], [2 * unit * scale, 2 * unit * scale]);
        const { cells } = await patternCells(bank, c, (i) => Promise.resolve(pictures[i]), {
          patchSize: 32,
          topk: 4,
          window: 1,
        });
        assert(cells.length > 0, `prototype ${c} shows no cell`);
        assert.deepEqual(shrinkBlocks(png, scale, file).data, patternGrid(cells, 4, unit).data);
      }
    }
  });
});

Deno.test("attention maps refuse a Swin with one sentence, in the library and the task", async () => {
  await withTempDir(async (dir) => {
    const weights = join(dir, "swin.safetensors");
    await saveSafetensors(weights, tinySwin(false));
    const runner = BackboneRunner.create(await loadBackbone(weights));
    try {
      await assert.rejects(
        () => attentionMaps(runner, blankPicture(64, 64, [90, 90, 90])),
        Error,
        `attention maps need a ViT: ${weights} holds a Swin, which has no CLS token and ` +
          "attends within windows",
      );
    } finally {
      await runner.close();
    }
    const r = await runDenoTask("attention", [
      ...["--pretrained_weights", weights, "--image_path", weights],
    ]);
    assert.equal(r.code, 1);
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], /^error: .*Swin.*no CLS token/);
  });
});

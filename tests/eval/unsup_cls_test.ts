import { join } from "node:path";
import { assert } from "../assert.ts";
import {
  assignClusters,
  buildClusterGraph,
  clsHeadConfig,
  prototypeCountWarning,
  scoreClusters,
} from "../../lib/eval/unsup_cls.ts";
import { clusterMetrics } from "../../lib/train/cluster_metrics.ts";
import { BackboneRunner } from "../../lib/analysis/backbone_runner.ts";
import { loadBackbone } from "../../lib/checkpoint/backbone_file.ts";
import { saveSafetensors } from "../../lib/checkpoint/safetensors.ts";
import { evalTransform } from "../../lib/data/augment.ts";
import { openSource } from "../../lib/data/source.ts";
import type { HeadConfig } from "../../lib/models/head.ts";
import type { BackboneConfig } from "../../lib/models/backbone.ts";
import type { NamedTensor } from "../../lib/runtime/named_tensor.ts";
import { StateStore } from "../../lib/runtime/store.ts";
import { withTempDir, writeVendoredSubset } from "../data/fixtures.ts";
import { runDenoTask } from "../task_runner.ts";

const HEAD: HeadConfig = {
  outDim: 6,
  patchOutDim: 6,
  sharedHead: true,
  hiddenDim: 24,
  bottleneckDim: 8,
};

const TINY_VIT: BackboneConfig = {
  embedDim: 96,
  depth: 6,
  heads: 3,
  patchSize: 4,
  imgSize: 16,
};

/** A tiny Swin laid out for 64 px (stage grids 16, 8, 4, 2; window 4), last-stage width 64. */
const TINY_SWIN: BackboneConfig = {
  embedDim: 8,
  depths: [2, 1, 1, 1],
  heads: [1, 1, 2, 2],
  dropPathRate: 0,
  windowSize: 4,
  imgSize: 64,
  mlpRatio: 2,
};

/** Random weights of `backbone` (input side `size`) with a 6-prototype head, as a flat file dict. */
function tinyModel(
  withHead: boolean,
  backbone: BackboneConfig = TINY_VIT,
  size = 16,
): Record<string, NamedTensor> {
  const graph = buildClusterGraph(backbone, HEAD, 1, size);
  const tensors: Record<string, NamedTensor> = {};
  for (const [name, t] of StateStore.fromParams(graph.params, 3).toNamedTensors()) {
    if (withHead || !name.startsWith("model.head.")) tensors[name.slice("model.".length)] = t;
  }
  return tensors;
}

/**
 * Asserts that {@link assignClusters} gives, for the first `count` vendored test images at `size`
 * pixels, the argmax of the CLS logits the analysis runner computes on the same eval-transformed
 * images, and their labels.
 */
async function assertRunnerArgmax(
  dir: string,
  weights: string,
  size: number,
  count: number,
): Promise<void> {
  const spec = await writeVendoredSubset(
    "t10k",
    count,
    join(dir, "t10k-images-idx3-ubyte"),
    join(dir, "t10k-labels-idx1-ubyte"),
  );
  const loaded = await loadBackbone(weights);
  assert.deepEqual(clsHeadConfig(loaded), HEAD);
  const assigned = await assignClusters(loaded, spec, { size, batch: 5, workers: 1 });
  assert.equal(assigned.outDim, 6);

  const source = await openSource(spec);
  const plane = 3 * size * size;
  const images = new Float32Array(count * plane);
  for (let i = 0; i < count; i++) {
    images.set(await evalTransform(await source.load(i), size), i * plane);
  }
  const runner = BackboneRunner.create(loaded, { withHead: true });
  const logits = (await runner.run(images, count, size, size)).clsLogits!;
  await runner.close();
  const expected = Array.from({ length: count }, (_, i) => {
    const row = Array.from(logits.subarray(6 * i, 6 * i + 6));
    return row.indexOf(Math.max(...row));
  });
  assert.deepEqual([...assigned.clusters], expected);
  assert.deepEqual([...assigned.labels], Array.from({ length: count }, (_, i) => source.label(i)));
  assert(new Set(expected).size > 1, "the tiny head sends every image to one prototype");
}

Deno.test("scoreClusters: the official four numbers and the sizes behind them", () => {
  const clusters = [4, 4, 4, 1, 1, 9, 9, 9];
  const labels = [0, 0, 1, 1, 1, 2, 2, 0];
  const result = scoreClusters(clusters, labels);
  // Matching 4 → 0, 1 → 1, 9 → 2 agrees on 2 + 2 + 2 = 6 of 8 images.
  assert.deepEqual(result, {
    ...clusterMetrics(clusters, labels),
    acc: 6 / 8,
    images: 8,
    classes: 3,
    occupied: 3,
  });
  assert.equal(scoreClusters([2, 2, 0, 1], [0, 0, 1, 2]).acc, 1);
});

Deno.test("prototypeCountWarning: silent when out_dim equals the class count", () => {
  assert.equal(prototypeCountWarning(10, 10), undefined);
  assert.match(
    prototypeCountWarning(512, 10)!,
    /^the head has 512 prototypes for 10 classes, so the one-to-one matching pairs at most 10 clusters with classes/,
  );
  assert.match(prototypeCountWarning(6, 10)!, /at most 6 classes can be matched/);
});

Deno.test("assignClusters: a ViT's head argmax for every image, as the analysis runner's", async () => {
  await withTempDir(async (dir) => {
    const weights = join(dir, "tiny.safetensors");
    await saveSafetensors(weights, tinyModel(true));
    await assertRunnerArgmax(dir, weights, 16, 24);

    await saveSafetensors(join(dir, "bare.safetensors"), tinyModel(false));
    const bare = await loadBackbone(join(dir, "bare.safetensors"));
    assert.throws(
      () => clsHeadConfig(bare),
      /bare\.safetensors holds no head weights \(head\.last_layer\.weight_v is missing\); unsupervised classification needs a full checkpoint/,
    );
  });
});

Deno.test("assignClusters: a Swin's pooled token through the head, as the analysis runner's", async () => {
  await withTempDir(async (dir) => {
    const weights = join(dir, "swin.safetensors");
    await saveSafetensors(weights, tinyModel(true, TINY_SWIN, 64));
    await assertRunnerArgmax(dir, weights, 64, 12);
  });
});

Deno.test("tasks/unsup_cls.ts: prints the official line, warns on out_dim, checks --out_dim", async () => {
  await withTempDir(async (dir) => {
    const data = join(dir, "data");
    await Deno.mkdir(data);
    const spec = await writeVendoredSubset(
      "t10k",
      30,
      join(data, "t10k-images-idx3-ubyte"),
      join(data, "t10k-labels-idx1-ubyte"),
    );
    const weights = join(dir, "tiny.safetensors");
    await saveSafetensors(weights, tinyModel(true));
    const args = [
      ...["--pretrained_weights", weights],
      ...["--data_path", data, "--image_size", "16", "--batch_size_per_gpu", "8"],
      ...["--num_workers", "1"],
    ];
    const run = await runDenoTask("unsup_cls", args);
    assert.equal(run.code, 0, run.stdout + run.stderr);
    const assigned = await assignClusters(await loadBackbone(weights), spec, { size: 16 });
    const r = scoreClusters(assigned.clusters, assigned.labels);
    assert.match(
      run.stdout,
      new RegExp(`^NMI: ${r.nmi}, ARI: ${r.ari}, F: ${r.fscore}, ACC: ${r.acc}$`, "m"),
    );
    assert.match(
      run.stdout,
      new RegExp(`30 images of ${r.classes} classes fell into ${r.occupied} of the 6 clusters`),
    );
    assert.match(run.stderr, new RegExp(`warning: the head has 6 prototypes for ${r.classes}`));

    const wrong = await runDenoTask("unsup_cls", [...args, "--out_dim", "10"]);
    assert.equal(wrong.code, 1);
    assert.equal(
      wrong.stderr.trim(),
      "error: --out_dim 10 differs from the head's 6 prototypes",
    );
  });
});

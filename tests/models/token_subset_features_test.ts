import { assert, assertCloseToScale } from "../assert.ts";
import { buildFeatureGraph, FEATURE_IO } from "../../lib/models/features.ts";
import { buildTokenSubsetGraph } from "../../lib/models/token_subset_features.ts";
import { backboneStore } from "../../lib/checkpoint/backbone_file.ts";
import { LinearProbeModel } from "../../lib/analysis/linear_probe_model.ts";
import { CompiledGraph } from "../../lib/runtime/session.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { randomPermutation } from "../../lib/analysis/shuffle.ts";
import { zeroCells } from "../../lib/analysis/occlusion.ts";
import type { CombinedModel } from "../../lib/checkpoint/combined_checkpoint.ts";
import { float64Reader, i64, runTorchReference, torchAvailable } from "../reference/torch.ts";
import {
  TINY_SIZE,
  TINY_VIT,
  tinyCombinedModel,
  tinyImages,
  torchInputs,
} from "../analysis/linear_probe_fixture.ts";

const BATCH = 3;
const PATCHES = (TINY_SIZE / TINY_VIT.patchSize) ** 2;

/** The logits of features.ts's graph (all patches, in order) followed by the linear head. */
async function fullLogits(model: CombinedModel, images: Float32Array): Promise<Float32Array> {
  const { head } = model;
  const { graph, dim } = buildFeatureGraph({
    backbone: model.backbone.config,
    batch: BATCH,
    size: TINY_SIZE,
    avgpool: head.avgpool,
    nLastBlocks: head.nLastBlocks,
    prefix: "model",
  });
  const store = backboneStore(model.backbone, "model");
  const session = await CompiledGraph.create(graph);
  const feeds: Record<string, Float32Array> = { [FEATURE_IO.images]: images };
  for (const p of graph.params) feeds[p.name] = store.get(p.name);
  const features = (await session.run(feeds))[FEATURE_IO.features] as Float32Array;
  await session.release();
  const logits = new Float32Array(BATCH * head.classes);
  for (let b = 0; b < BATCH; b++) {
    for (let c = 0; c < head.classes; c++) {
      let s = head.bias[c];
      for (let d = 0; d < dim; d++) s += features[b * dim + d] * head.weight[c * dim + d];
      logits[b * head.classes + c] = s;
    }
  }
  return logits;
}

for (const avgpool of [0, 1, 2] as const) {
  Deno.test(`token subset graph: every patch in place equals the feature graph (avgpool ${avgpool})`, async () => {
    const base = tinyCombinedModel(1);
    const dim = avgpool === 1
      ? TINY_VIT.embedDim
      : (base.head.nLastBlocks + (avgpool === 2 ? 1 : 0)) * TINY_VIT.embedDim;
    const rng = new Rng(2);
    const model: CombinedModel = {
      backbone: base.backbone,
      head: {
        ...base.head,
        avgpool,
        dim,
        weight: Float32Array.from({ length: base.head.classes * dim }, () => rng.normal()),
      },
    };
    const images = tinyImages(3, BATCH);
    const expected = await fullLogits(model, images);
    const probe = await LinearProbeModel.create(model, { batch: BATCH, size: TINY_SIZE });
    try {
      assertCloseToScale(await probe.logits(images), expected, "all tokens", 1e-5);
      // Attention is equivariant to the order of the tokens: the same tokens in another order
      // give the same CLS tokens and the same mean patch token.
      const order = randomPermutation(new Rng(4), PATCHES);
      assertCloseToScale(await probe.logits(images, order, order), expected, "reordered", 1e-5);
    } finally {
      await probe.close();
    }
  });
}

Deno.test("token subset graph: the kept-token count is symbolic, one graph for every share", () => {
  const model = tinyCombinedModel(1);
  const { graph } = buildTokenSubsetGraph({
    backbone: TINY_VIT,
    batch: BATCH,
    size: TINY_SIZE,
    avgpool: 0,
    nLastBlocks: 2,
    classes: model.head.classes,
    prefix: "model",
  });
  const index = graph.inputs.find((v) => v.name === "patch_index")!;
  assert.equal(typeof index.dims[0], "object", "patch_index has a symbolic length");
  const names = graph.params.map((p) => p.name).sort();
  const official = [...model.backbone.weights.keys()].map((k) => `model.backbone.${k}`);
  assert.deepEqual(names, [...official, "model.linear.bias", "model.linear.weight"].sort());
});

Deno.test("token subset graph: removing a patch changes the logits, and differs from zeroing it", async () => {
  const model = tinyCombinedModel(5);
  const images = tinyImages(6, BATCH);
  const probe = await LinearProbeModel.create(model, { batch: BATCH, size: TINY_SIZE });
  const largest = (a: Float32Array, b: Float32Array) =>
    a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
  try {
    const all = await probe.logits(images);
    const removed = await probe.logits(
      images,
      Array.from({ length: PATCHES - 1 }, (_, i) => i + 1),
    );
    const zeroedImages = images.slice();
    zeroCells(zeroedImages, BATCH, TINY_SIZE, [4, 4], [0]);
    const zeroed = await probe.logits(zeroedImages);
    assert(largest(all, removed) > 1e-3, "removing patch 0 left the logits unchanged");
    assert(largest(all, zeroed) > 1e-3, "zeroing patch 0 left the logits unchanged");
    assert(largest(removed, zeroed) > 1e-3, "removing patch 0 gave the logits of zeroing it");
  } finally {
    await probe.close();
  }
});

Deno.test({
  name: "token subset graph: removed tokens, zeroed cells and shuffled patches match PyTorch",
  ignore: !torchAvailable(),
  fn: async () => {
    const model = tinyCombinedModel(7);
    const images = tinyImages(8, BATCH);
    const keep = [0, 2, 3, 6, 9, 10, 15];
    const dropped = Array.from({ length: PATCHES }, (_, p) => p).filter((p) => !keep.includes(p));
    const inputs = {
      ...torchInputs(model, images, BATCH),
      grid_h: i64(4),
      grid_w: i64(4),
    };
    const subset = float64Reader(
      await runTorchReference("occlusion_torch.py", ["subset"], {
        ...inputs,
        keep: { dtype: "int64", shape: [keep.length], data: BigInt64Array.from(keep, BigInt) },
      }),
    );
    const zeroedRef = float64Reader(
      await runTorchReference("occlusion_torch.py", ["subset"], {
        ...inputs,
        keep: {
          dtype: "int64",
          shape: [dropped.length],
          data: BigInt64Array.from(dropped, BigInt),
        },
      }),
    );
    const order = randomPermutation(new Rng(9), PATCHES);
    const shuffled = float64Reader(
      await runTorchReference("occlusion_torch.py", ["shuffle"], {
        ...inputs,
        order: { dtype: "int64", shape: [PATCHES], data: BigInt64Array.from(order, BigInt) },
      }),
    );
    const probe = await LinearProbeModel.create(model, { batch: BATCH, size: TINY_SIZE });
    try {
      assertCloseToScale(
        await probe.logits(images, keep),
        subset("removed_logits"),
        "removed tokens",
        1e-4,
      );
      const zeroed = images.slice();
      zeroCells(zeroed, BATCH, TINY_SIZE, [4, 4], dropped);
      assertCloseToScale(
        await probe.logits(zeroed),
        zeroedRef("zeroed_logits"),
        "zeroed cells",
        1e-4,
      );
      // Shuffling the image on the patch grid moves whole patches: the graph on the unshuffled
      // image with patch j's content at position i = order[i]'s place equals PyTorch on the
      // shuffled image.
      const positions = Array.from({ length: PATCHES }, (_, i) => i);
      assertCloseToScale(
        await probe.logits(images, order, positions),
        shuffled("shuffled_logits"),
        "shuffled patches",
        1e-4,
      );
    } finally {
      await probe.close();
    }
  },
});

Deno.test("LinearProbeModel: a head whose width does not fit the features is refused", async () => {
  const model = tinyCombinedModel(1, 2);
  await assert.rejects(
    () =>
      LinearProbeModel.create(
        { ...model, head: { ...model.head, nLastBlocks: 1 } },
        { batch: 1, size: TINY_SIZE },
      ),
    /the linear head reads 32 features, but 1 last blocks with avgpool 0 of this backbone give 16/,
  );
  await assert.rejects(
    () => LinearProbeModel.create(model, { batch: 1, size: 18 }),
    /image size 18 is not a multiple of the patch size 4/,
  );
});

Deno.test("LinearProbeModel: a Swin backbone is refused in one sentence", async () => {
  const model = tinyCombinedModel(1);
  const swin = {
    ...model.backbone,
    config: { embedDim: 16, depths: [2], heads: [2], windowSize: 2, imgSize: 16, dropPathRate: 0 },
  } as unknown as CombinedModel["backbone"];
  await assert.rejects(
    () => LinearProbeModel.create({ ...model, backbone: swin }, { batch: 1, size: TINY_SIZE }),
    /the occlusion and shuffle model does not take a Swin backbone yet \(a Swin merges patches/,
  );
});

import { join } from "node:path";
import { assert } from "../assert.ts";
import {
  backboneStore,
  defaultImageSize,
  loadBackbone,
} from "../../lib/checkpoint/backbone_file.ts";
import { buildFeatureGraph } from "../../lib/models/features.ts";
import { VIT_SIZES } from "../../lib/models/vit.ts";
import { saveSafetensors } from "../../lib/checkpoint/safetensors.ts";
import type { NamedTensor } from "../../lib/runtime/named_tensor.ts";
import { StateStore } from "../../lib/runtime/store.ts";

/** Backbone weights of a vit_mini with patch 8 laid out for 16 px (a 2×2 grid), `backbone.` keys. */
function miniWeights(): Map<string, NamedTensor> {
  const { graph } = buildFeatureGraph({
    backbone: { ...VIT_SIZES.vit_mini, patchSize: 8, imgSize: 16 },
    batch: 1,
    size: 16,
    avgpool: 0,
    nLastBlocks: 1,
    prefix: "x",
  });
  const store = StateStore.fromParams(graph.params, 3);
  return new Map(
    [...store.toNamedTensors()].map(([name, t]) => [name.replace(/^x\./, ""), t]),
  );
}

async function withFile(
  weights: Map<string, NamedTensor>,
  f: (path: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "backbone.safetensors");
    await saveSafetensors(path, weights);
    await f(path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("a flat backbone file gets its architecture from the weight shapes", async () => {
  const weights = miniWeights();
  weights.set("head.mlp.0.weight", {
    dtype: "float32",
    shape: [2, 96],
    data: new Float32Array(192),
  });
  await withFile(weights, async (path) => {
    const loaded = await loadBackbone(path);
    assert.deepEqual(loaded.config, {
      ...VIT_SIZES.vit_mini,
      patchSize: 8,
      imgSize: 16,
      mlpRatio: 4,
    });
    assert.equal(loaded.key, "flat");
    assert.deepEqual([...loaded.head.keys()], ["mlp.0.weight"]);
    assert.equal(loaded.weights.size, weights.size - 1);
    assert.equal(defaultImageSize(loaded), 224);
    const store = backboneStore(loaded, "model");
    const original = weights.get("backbone.blocks.5.mlp.fc2.weight")!.data as Float32Array;
    assert.deepEqual(store.get("model.backbone.blocks.5.mlp.fc2.weight"), original);
    assert.notStrictEqual(store.get("model.backbone.blocks.5.mlp.fc2.weight"), original);
  });
});

Deno.test("a backbone that does not fit its architecture is one sentence naming the file", async () => {
  await withFile(miniWeights(), async (path) => {
    await assert.rejects(
      () => loadBackbone(path, { arch: "vit_tiny" }),
      Error,
      `${path} holds a ViT of width 96 and depth 6, not vit_tiny (width 192, depth 12)`,
    );
    await assert.rejects(
      () => loadBackbone(path, { patchSize: 16 }),
      Error,
      `${path} holds a patch embedding of 8×8 pixels, not 16`,
    );
    await assert.rejects(
      () => loadBackbone(path, { arch: "vit_huge" }),
      Error,
      `${path}: architecture vit_huge is not available`,
    );
  });
  const missing = miniWeights();
  missing.delete("backbone.blocks.2.attn.proj.bias");
  missing.set("backbone.fc_norm.weight", missing.get("backbone.norm.weight")!);
  await withFile(missing, async (path) => {
    await assert.rejects(
      () => loadBackbone(path),
      Error,
      `${path}: the weights do not fit the backbone: missing blocks.2.attn.proj.bias; unexpected fc_norm.weight`,
    );
  });
  const misshapen = miniWeights();
  misshapen.set("backbone.blocks.1.mlp.fc1.bias", {
    dtype: "float32",
    shape: [100],
    data: new Float32Array(100),
  });
  await withFile(misshapen, async (path) => {
    await assert.rejects(
      () => loadBackbone(path),
      Error,
      `${path}: blocks.1.mlp.fc1.bias is [100], the architecture needs [384]`,
    );
  });
  const odd = miniWeights();
  odd.set("backbone.pos_embed", {
    dtype: "float32",
    shape: [1, 4, 96],
    data: new Float32Array(384),
  });
  await withFile(odd, async (path) => {
    await assert.rejects(
      () => loadBackbone(path),
      Error,
      `${path}: pos_embed has 4 entries, not 1 + a square grid`,
    );
  });
  await assert.rejects(
    () => loadBackbone("no/such/file.safetensors"),
    Error,
    "no/such/file.safetensors does not exist",
  );
});

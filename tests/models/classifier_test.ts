import { assert } from "../assert.ts";
import { Graph } from "../../lib/graph/graph.ts";
import {
  classifier,
  type ClassifierConfig,
  classifierKey,
  classifierParamName,
  fixInitWeight,
} from "../../lib/models/classifier.ts";
import { StateStore } from "../../lib/runtime/store.ts";

const BACKBONE = { embedDim: 8, depth: 2, heads: 2, patchSize: 4, imgSize: 8 };

function keysOf(config: ClassifierConfig): string[] {
  const g = new Graph("keys");
  const logits = classifier(g, config, { images: g.input("images", "float32", [2, 3, 8, 8]) });
  assert.deepEqual(logits.shape, [2, config.numClasses]);
  return g.params.map((p) => classifierKey(p.name));
}

Deno.test("the classifier's keys are the official fine-tuning model's", () => {
  const cls = keysOf({ backbone: BACKBONE, numClasses: 5, useCls: true });
  assert.deepEqual(cls.slice(0, 4), [
    "cls_token",
    "pos_embed",
    "patch_embed.proj.weight",
    "patch_embed.proj.bias",
  ]);
  assert.deepEqual(cls.slice(-4), ["norm.weight", "norm.bias", "head.weight", "head.bias"]);
  const pooled = keysOf({ backbone: BACKBONE, numClasses: 5, useCls: false });
  assert.deepEqual(pooled.slice(-4), [
    "fc_norm.weight",
    "fc_norm.bias",
    "head.weight",
    "head.bias",
  ]);
  assert(!pooled.includes("norm.weight"), "mean pooling has no final norm");
  const semi = keysOf({ backbone: BACKBONE, numClasses: 5, useCls: true, projectionHidden: 16 });
  assert.deepEqual(semi.slice(-4), [
    "head.mlp.0.weight",
    "head.mlp.0.bias",
    "head.cls_head.weight",
    "head.cls_head.bias",
  ]);
  for (const key of [...cls, ...pooled, ...semi]) {
    assert.equal(classifierKey(classifierParamName(key)), key);
  }
});

Deno.test("the head starts at trunc-normal 0.02 times init_scale, its bias at 0", () => {
  const g = new Graph("init");
  const config = { backbone: BACKBONE, numClasses: 50, useCls: true, initScale: 0.001 };
  classifier(g, config, { images: g.input("images", "float32", [1, 3, 8, 8]) });
  const store = StateStore.fromParams(g.params, 0);
  const weight = store.get("head.weight");
  const std = Math.sqrt(weight.reduce((s, v) => s + v * v, 0) / weight.length);
  assert(std > 0.015e-3 && std < 0.025e-3, `head weight std ${std}`);
  assert(weight.every((v) => Math.abs(v) <= 2e-3));
  assert(store.get("head.bias").every((v) => v === 0));
});

Deno.test("fix_init_weight divides block i's proj and fc2 weights by √(2(i + 1))", () => {
  const values = new Map<string, Float32Array>();
  for (const i of [0, 1]) {
    for (const part of ["attn.proj", "mlp.fc2"]) {
      values.set(`backbone.blocks.${i}.${part}.weight`, Float32Array.of(4, -4));
    }
  }
  fixInitWeight({ get: (name) => values.get(name)! }, 2);
  assert.deepEqual(
    values.get("backbone.blocks.0.mlp.fc2.weight"),
    Float32Array.of(4 / Math.sqrt(2), -4 / Math.sqrt(2)),
  );
  assert.deepEqual(values.get("backbone.blocks.1.attn.proj.weight"), Float32Array.of(2, -2));
});

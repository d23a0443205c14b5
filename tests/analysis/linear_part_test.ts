import { assert, assertCloseToScale } from "../assert.ts";
import {
  buildPartGraph,
  partFeature,
  type PartFeatures,
  probeParts,
} from "../../lib/analysis/linear_part.ts";
import { backboneStore } from "../../lib/checkpoint/backbone_file.ts";
import { CompiledGraph } from "../../lib/runtime/session.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { float64Reader, i64, runTorchReference, torchAvailable } from "../reference/torch.ts";
import {
  TINY_SIZE,
  TINY_VIT,
  tinyCombinedModel,
  tinyImages,
  torchInputs,
} from "./linear_probe_fixture.ts";

Deno.test("partFeature: the mean of the k most (or least) attended tokens, by hand", () => {
  // Four patches of width 2; attention ranks them 2, 0, 3, 1.
  const tokens = Float32Array.of(1, 10, 2, 20, 3, 30, 4, 40);
  const attention = [0.3, 0.1, 0.4, 0.2];
  const out = new Float32Array(2);
  partFeature(tokens, attention, 2, 1, false, out);
  assert.deepEqual([...out], [3, 30]);
  partFeature(tokens, attention, 2, 2, false, out);
  assert.deepEqual([...out], [2, 20]);
  partFeature(tokens, attention, 2, 2, true, out);
  assert.deepEqual([...out], [3, 30]);
  partFeature(tokens, attention, 2, 4, false, out);
  assert.deepEqual([...out], [2.5, 25]);
  assert.throws(() => partFeature(tokens, attention, 2, 5, false, out), /outside \[1, 4\]/);
});

Deno.test({
  name: "part features: the graph and the top-k mean match the official code in PyTorch",
  ignore: !torchAvailable(),
  fn: async () => {
    const combined = tinyCombinedModel(51);
    const batch = 3;
    const images = tinyImages(52, batch);
    const graph = buildPartGraph(combined.backbone, batch, TINY_SIZE);
    const store = backboneStore(combined.backbone, "model");
    const feeds: Record<string, Float32Array> = { images };
    for (const p of graph.params) feeds[p.name] = store.get(p.name);
    const session = await CompiledGraph.create(graph);
    const out = await session.run(feeds);
    const tokens = (out.patch_tokens as Float32Array).slice();
    const attention = (out.cls_attention as Float32Array).slice();
    await session.release();
    const dim = TINY_VIT.embedDim;
    const n = 16;
    for (const k of [1, 3, 16]) {
      const read = float64Reader(
        await runTorchReference("occlusion_torch.py", ["part"], {
          ...torchInputs(combined, images, batch),
          topk: i64(k),
        }),
      );
      const ours = new Float32Array(batch * dim);
      for (let b = 0; b < batch; b++) {
        partFeature(
          tokens.subarray(b * n * dim, (b + 1) * n * dim),
          attention.subarray(b * n, (b + 1) * n),
          dim,
          k,
          false,
          ours.subarray(b * dim, (b + 1) * dim),
        );
      }
      assertCloseToScale(ours, read("part_features"), `top ${k}`, 1e-4);
    }
  },
});

Deno.test("probeParts: one sweep per k; separable features are learned", async () => {
  const rng = new Rng(61);
  const dim = 4;
  const make = (n: number): PartFeatures => {
    const labels = Int32Array.from({ length: n }, (_, i) => i % 2);
    const separable = Float32Array.from(
      { length: n * dim },
      (_, i) => (labels[Math.floor(i / dim)] === 1 ? 2 : -2) + 0.1 * rng.normal(),
    );
    const noise = Float32Array.from({ length: n * dim }, () => rng.normal());
    return { dim, labels, features: new Map([[1, noise], [4, separable]]) };
  };
  const results = await probeParts(make(64), make(32), { epochs: 5, lrs: [0.1, 1] });
  assert.deepEqual(results.map((r) => r.k), [1, 4]);
  assert.equal(results[1].best.top1, 100);
  assert(results[0].best.top1 < 100, "noise features were classified perfectly");
});

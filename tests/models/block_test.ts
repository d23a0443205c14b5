import { assert, assertCloseToScale } from "../assert.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { grad } from "../../lib/graph/grad.ts";
import { mul } from "../../lib/graph/math.ts";
import { sum } from "../../lib/graph/reduce.ts";
import { transformerBlock } from "../../lib/models/block.ts";
import {
  adamwScalars,
  adamwScalarValues,
  addAdamWMoments,
  applyAdamW,
} from "../../lib/optim/adamw.ts";
import { CompiledGraph } from "../../lib/runtime/session.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { StateStore } from "../../lib/runtime/store.ts";
import type { NamedTensor } from "../../lib/runtime/named_tensor.ts";
import {
  f32,
  f64,
  float64Reader,
  i64,
  randomizeWeights,
  runTorchReference,
  torchAvailable,
} from "../reference/torch.ts";

const [B, N, D, HEADS, HIDDEN] = [2, 5, 12, 3, 48];
const STEPS = 3;
const LR = 0.01;
const WD = 0.05;

Deno.test({
  name: "a pre-norm block's forward, backward and AdamW steps match PyTorch autograd",
  ignore: !torchAvailable(),
  async fn() {
    const g = new Graph("block");
    const x = g.input("x", "float32", [B, N, D]);
    const r = g.input("r", "float32", [B, N, D]);
    const y = transformerBlock(g, x, { heads: HEADS, mlpHidden: HIDDEN }).out;
    const loss = sum(mul(y, r));
    const params = g.params.map((p) => g.paramTensor(p.name));
    const grads = grad(loss, [...params, x]);
    g.output("y", y);
    grads.forEach((gi, i) => g.output(`grad.${i < params.length ? params[i].name : "x"}`, gi));
    applyAdamW(
      g,
      params.map((p, i) => ({
        param: p,
        grad: grads[i],
        decay: p.rank > 1 && !p.name.endsWith(".bias"),
      })),
      adamwScalars(g),
    );
    const session = await CompiledGraph.create(g);

    const rng = new Rng(7);
    const store = StateStore.fromParams(g.params, 3);
    randomizeWeights(store, rng);
    const stateNames = addAdamWMoments(store, store.names());
    const data = (n: number) => Float32Array.from({ length: n }, () => rng.normal());
    const xs = data(B * N * D);
    const rs = data(B * N * D);

    const tensors: Record<string, NamedTensor> = {
      x: f32(xs, [B, N, D]),
      r: f32(rs, [B, N, D]),
      heads: i64(HEADS),
      steps: i64(STEPS),
      lr: f64(LR),
      weight_decay: f64(WD),
    };
    for (const p of g.params) tensors[p.name] = f32(store.get(p.name).slice(), p.shape);
    const ref = float64Reader(await runTorchReference("block_torch.py", [], tensors));

    for (let step = 1; step <= STEPS; step++) {
      const feeds: Record<string, Float32Array> = {
        x: xs,
        r: rs,
      };
      for (const [name, value] of Object.entries(adamwScalarValues(LR, WD, step))) {
        feeds[name] = Float32Array.of(value);
      }
      for (const name of stateNames) feeds[name] = store.get(name);
      const out = await session.run(feeds);
      if (step === 1) {
        assertCloseToScale(out.y as Float32Array, ref("y"), "y");
        for (const p of g.params) {
          assertCloseToScale(
            out[`grad.${p.name}`] as Float32Array,
            ref(`grad.${p.name}`),
            `grad.${p.name}`,
          );
        }
        assertCloseToScale(out["grad.x"] as Float32Array, ref("grad.x"), "grad.x");
      }
      store.commitNext(out as Record<string, Float32Array>, stateNames);
    }
    for (const p of g.params) {
      const ours = store.get(p.name);
      const theirs = ref(`final.${p.name}`);
      if (p.name !== "attn.qkv.bias") {
        assertCloseToScale(ours, theirs, `final.${p.name}`);
        continue;
      }
      // The key bias cannot change the softmax, so its true gradient is 0 and Adam turns rounding
      // noise (1e-17 in PyTorch's float64, 1e-8 here) into steps of up to lr: compare q and v only.
      assertCloseToScale(ours.subarray(0, D), theirs.subarray(0, D), "final q bias");
      assertCloseToScale(ours.subarray(2 * D), theirs.subarray(2 * D), "final v bias");
    }
  },
});

Deno.test("the block's training graph decodes with the expected fused-friendly nodes", async () => {
  const { fromBinary } = await import("@bufbuild/protobuf");
  const { ModelProtoSchema } = await import("onnx-buf");
  const { encodeOnnxModel } = await import("../../lib/graph/onnx.ts");
  const g = new Graph("block");
  const x = g.input("x", "float32", [2, 5, 12]);
  const loss = sum(transformerBlock(g, x, { heads: 3, mlpHidden: 48 }).out);
  g.output("loss", loss);
  const params = g.params.map((p) => g.paramTensor(p.name));
  grad(loss, params).forEach((gi, i) => g.output(`grad.${params[i].name}`, gi));
  const model = fromBinary(ModelProtoSchema, encodeOnnxModel(g).model);
  const count = (op: string) => model.graph!.node.filter((n) => n.opType === op).length;
  assert.equal(count("LayerNormalization"), 2);
  assert.equal(count("Gelu"), 1);
  assert.equal(count("Softmax"), 1);
  assert.equal(count("Erf"), 1); // the GELU backward recomputes Φ(x) from x
  assert(count("FusedMatMul") >= 2, "attention products use FusedMatMul");
  assert.deepEqual(
    model.graph!.input.map((i) => i.name).slice(0, 4),
    ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias"],
  );
  await CompiledGraph.create(g); // loads with graphOptimizationLevel "all"
});

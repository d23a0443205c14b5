import { assert } from "../assert.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { grad } from "../../lib/graph/grad.ts";
import { mul } from "../../lib/graph/math.ts";
import { sum } from "../../lib/graph/reduce.ts";
import { transformerBlock } from "../../lib/models/block.ts";
import { adamwScalars, addAdamWMoments, applyAdamW } from "../../lib/optim/adamw.ts";
import { CompiledGraph } from "../../lib/runtime/session.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { StateStore } from "../../lib/runtime/store.ts";
import {
  loadSafetensors,
  type NamedTensor,
  saveSafetensors,
} from "../../lib/runtime/safetensors.ts";
import { runTorchScript, torchAvailable } from "../reference/torch.ts";

const [B, N, D, HEADS, HIDDEN] = [2, 5, 12, 3, 48];
const STEPS = 3;
const LR = 0.01;
const WD = 0.05;

/** max |a − b| ≤ 1e-5 · max |b|: agreement relative to the tensor's scale. */
function assertRelative(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string) {
  assert.equal(actual.length, expected.length, what);
  let worst = 0;
  let scale = 0;
  for (let i = 0; i < expected.length; i++) {
    worst = Math.max(worst, Math.abs(actual[i] - expected[i]));
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  assert(worst <= 1e-5 * scale, `${what}: max difference ${worst} exceeds 1e-5 × ${scale}`);
}

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

    // Random weights (not the official init) so that every gradient is non-trivial.
    const rng = new Rng(7);
    const store = StateStore.fromParams(g.params, 3);
    for (const name of store.names()) {
      const base = name.includes("norm") && name.endsWith("weight") ? 1 : 0;
      store.get(name).forEach((_, i, a) => (a[i] = base + 0.3 * rng.normal()));
    }
    const stateNames = addAdamWMoments(store, store.names());
    const data = (n: number) => Float32Array.from({ length: n }, () => rng.normal());
    const xs = data(B * N * D);
    const rs = data(B * N * D);

    const dir = await Deno.makeTempDir();
    const tensors: Record<string, NamedTensor> = {
      x: { dtype: "float32", shape: [B, N, D], data: xs },
      r: { dtype: "float32", shape: [B, N, D], data: rs },
      heads: { dtype: "int64", shape: [1], data: BigInt64Array.of(BigInt(HEADS)) },
      steps: { dtype: "int64", shape: [1], data: BigInt64Array.of(BigInt(STEPS)) },
      lr: { dtype: "float64", shape: [1], data: Float64Array.of(LR) },
      weight_decay: { dtype: "float64", shape: [1], data: Float64Array.of(WD) },
    };
    for (const p of g.params) {
      tensors[p.name] = { dtype: "float32", shape: [...p.shape], data: store.get(p.name).slice() };
    }
    await saveSafetensors(`${dir}/in.safetensors`, tensors);
    await runTorchScript("block_torch.py", [`${dir}/in.safetensors`, `${dir}/out.safetensors`]);
    const reference = (await loadSafetensors(`${dir}/out.safetensors`)).tensors;
    const ref = (name: string) => reference.get(name)!.data as Float64Array;

    for (let step = 1; step <= STEPS; step++) {
      const feeds: Record<string, Float32Array> = {
        x: xs,
        r: rs,
        lr: Float32Array.of(LR),
        weight_decay: Float32Array.of(WD),
        step: Float32Array.of(step),
      };
      for (const name of stateNames) feeds[name] = store.get(name);
      const out = await session.run(feeds);
      if (step === 1) {
        assertRelative(out.y as Float32Array, ref("y"), "y");
        for (const p of g.params) {
          assertRelative(
            out[`grad.${p.name}`] as Float32Array,
            ref(`grad.${p.name}`),
            `grad.${p.name}`,
          );
        }
        assertRelative(out["grad.x"] as Float32Array, ref("grad.x"), "grad.x");
      }
      store.commitNext(out as Record<string, Float32Array>, stateNames);
    }
    for (const p of g.params) {
      const ours = store.get(p.name);
      const theirs = ref(`final.${p.name}`);
      if (p.name !== "attn.qkv.bias") {
        assertRelative(ours, theirs, `final.${p.name}`);
        continue;
      }
      // The key bias cannot change the softmax, so its true gradient is 0 and Adam turns rounding
      // noise (1e-17 in PyTorch's float64, 1e-8 here) into steps of up to lr: compare q and v only.
      assertRelative(ours.subarray(0, D), theirs.subarray(0, D), "final q bias");
      assertRelative(ours.subarray(2 * D), theirs.subarray(2 * D), "final v bias");
    }
    await Deno.remove(dir, { recursive: true });
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

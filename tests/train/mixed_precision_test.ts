import * as ort from "onnxruntime-node";
import { assert, assertCloseToScale } from "../assert.ts";
import type { Graph, NodeSpec, TensorData } from "../../lib/graph/graph.ts";
import { encodeOnnxModel } from "../../lib/graph/onnx.ts";
import { shapeSize } from "../../lib/graph/tensor.ts";
import { expAvgName, expAvgSqName } from "../../lib/optim/adamw.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { nextStateName, StateStore } from "../../lib/runtime/store.ts";
import {
  buildIbotStep,
  CENTER_NAMES,
  FOUND_INF,
  type IbotStep,
  STEP_INPUTS,
  stepScalarValues,
  STUDENT,
  TEACHER,
} from "../../lib/train/step.ts";
import { tinyStepConfig } from "./tiny_step.ts";

/** The tiny iBOT with one shared head, 3 mask slots per crop and no drop path. */
const CONFIG = tinyStepConfig({ sharedHead: true, maskSlots: 3, dropPath: 0 });
const MOMENTUM = 0.9;

const PRODUCTS = ["Gemm", "MatMul", "FusedMatMul"];
const FLOAT32_OPS = ["Softmax", "LogSoftmax", "LayerNormalization"];

function build(precision: "fp32" | "fp16" | "bf16", lossScaling: boolean): IbotStep {
  return buildIbotStep({ ...CONFIG, precision, lossScaling });
}

/** The dtypes of a node's inputs (omitted optional inputs left out). */
function inputDTypes(g: Graph, node: NodeSpec): string[] {
  return node.inputs.filter((name) => name !== "").map((name) => g.dtypeOf(name));
}

/** True for nodes of the backward pass (emitted in `grad`'s scope). */
const isBackward = (node: NodeSpec) => node.name.startsWith("grad/");

/**
 * The nodes some graph output depends on: those onnxruntime runs (a rule may compute the gradient
 * of an operand nothing needs, like a constant's, which is then dropped).
 */
function liveNodes(g: Graph): NodeSpec[] {
  const producer = new Map(g.nodes.flatMap((n) => n.outputs.map((o) => [o, n] as const)));
  const live = new Set<NodeSpec>();
  const pending = g.outputs.map((o) => o.name);
  for (let name = pending.pop(); name !== undefined; name = pending.pop()) {
    const node = producer.get(name);
    if (!node || live.has(node)) continue;
    live.add(node);
    pending.push(...node.inputs.filter((input) => input !== ""));
  }
  return g.nodes.filter((n) => live.has(n));
}

for (const [precision, low] of [["fp16", "float16"], ["bf16", "bfloat16"]] as const) {
  Deno.test(`the ${precision} step runs its matrix products in ${low}, the rest in float32`, () => {
    const { graph: g } = build(precision, precision === "fp16");
    const constants = new Set(g.constants.map((c) => c.name));
    const nodes = liveNodes(g);
    const lowProducts = nodes.filter((n) => PRODUCTS.includes(n.opType)).filter((n) => {
      const dtypes = inputDTypes(g, n);
      if (dtypes.every((d) => d === low)) return true;
      // The float32 products are reductions (Σ over leading axes as a row of ones times the
      // gradient) and the bicubic interpolation of the position embedding, both with a constant
      // operand; PyTorch runs these in float32 under autocast too.
      assert(dtypes.every((d) => d === "float32"), `${n.name} mixes ${dtypes}`);
      assert(n.inputs.some((name) => constants.has(name)), `${n.name} is a float32 product`);
      return false;
    });
    const forward = lowProducts.filter((n) => !isBackward(n));
    const backward = lowProducts.filter(isBackward);
    // Every linear layer and attention product of teacher and student, and their gradients.
    assert(forward.length >= 2 * 2 * 6, `${forward.length} products in ${low}`);
    assert(backward.length > forward.length, `${backward.length} backward products in ${low}`);

    for (const node of nodes) {
      const dtypes = inputDTypes(g, node);
      // (A reduction's second input is its int64 axes.)
      if (FLOAT32_OPS.includes(node.opType) || node.opType.startsWith("Reduce")) {
        assert.equal(dtypes[0], "float32", `${node.name} runs in ${dtypes[0]}`);
        assert(dtypes.every((d) => d === "float32" || d === "int64"), node.name);
      }
      if (node.name.startsWith("adamw/")) {
        assert(dtypes.every((d) => d !== low), `the AdamW node ${node.name} runs in ${low}`);
      }
      // The low precision lives between the casts around the products, nowhere else.
      if (dtypes.includes(low)) {
        assert(
          [...PRODUCTS, "Reshape", "Cast"].includes(node.opType),
          `${node.opType} ${node.name} takes ${low}`,
        );
      }
    }

    // Casts where autocast puts them: in the forward pass one per product operand going in and
    // one per product coming out; in the backward pass one per gradient crossing back.
    const casts = (toLow: boolean, ofBackward: boolean) =>
      nodes.filter((n) =>
        n.opType === "Cast" && isBackward(n) === ofBackward &&
        g.dtypeOf(toLow ? n.outputs[0] : n.inputs[0]) === low
      ).length;
    const operands = forward.reduce((count, n) => count + n.inputs.length, 0);
    assert.equal(casts(true, false), operands);
    assert.equal(casts(false, false), forward.length);
    assert(casts(true, true) > 0 && casts(false, true) > 0);
    // Each float32 gradient a cast back produces belongs to a forward cast to the low precision.
    assert(casts(false, true) <= operands);
  });
}

Deno.test("the fp32 step carries no float16 or bfloat16 anywhere", () => {
  for (const lossScaling of [false, true]) {
    const { graph: g } = build("fp32", lossScaling);
    const low = (dtype: string) => dtype === "float16" || dtype === "bfloat16";
    assert(!g.constants.some((c) => low(c.dtype)));
    for (const node of g.nodes) {
      assert(![...node.inputs, ...node.outputs].some((name) => name && low(g.dtypeOf(name))));
    }
    assert.equal(g.outputs.some((o) => o.name === FOUND_INF), lossScaling);
    assert.equal(g.inputs.some((i) => i.name === STEP_INPUTS.lossScale), lossScaling);
  }
});

/** Feeds of one iteration: a random state with Adam moments after some steps, random crops. */
function randomFeeds(step: IbotStep, seed: number): Record<string, TensorData> {
  const rng = new Rng(seed);
  const store = StateStore.fromParams(step.graph.params, seed);
  const feeds: Record<string, TensorData> = {};
  for (const name of store.names()) {
    feeds[name] = store.get(name).map((v) => v + 0.1 * rng.normal());
  }
  for (const name of step.trainable) {
    const size = feeds[name].length;
    feeds[expAvgName(name)] = Float32Array.from({ length: size }, () => 0.003 * rng.normal());
    feeds[expAvgSqName(name)] = Float32Array.from({ length: size }, () => 1e-5 * rng.uniform());
  }
  const scalars = stepScalarValues({
    lr: 0.005,
    weightDecay: 0.04,
    step: 5,
    lastLayerActive: true,
    lastLayerStep: 5,
    momentum: MOMENTUM,
    teacherTemp: 0.04,
    teacherPatchTemp: 0.07,
    lossScale: 2 ** 16,
  });
  for (const input of step.graph.inputs) {
    if (input.name in feeds) continue;
    const n = shapeSize(input.shape);
    if (input.name in scalars) feeds[input.name] = Float32Array.of(scalars[input.name]);
    else if (input.dtype === "int64") feeds[input.name] = new BigInt64Array(n);
    else if (input.name === STEP_INPUTS.masks) {
      feeds[input.name] = Float32Array.from({ length: n }, () => (rng.uniform() < 0.3 ? 1 : 0));
    } else feeds[input.name] = Float32Array.from({ length: n }, () => rng.normal());
  }
  return feeds;
}

/** Runs `step` once with onnxruntime's CPU provider on `feeds` (extra feeds are ignored). */
async function runStep(
  step: IbotStep,
  feeds: Record<string, TensorData>,
  lossScale?: number,
): Promise<Record<string, TensorData>> {
  const g = step.graph;
  const session = await ort.InferenceSession.create(encodeOnnxModel(g).model, {
    logSeverityLevel: 4,
  });
  try {
    const tensors: Record<string, ort.Tensor> = {};
    for (const value of [...g.params, ...g.inputs]) {
      const data = value.name === STEP_INPUTS.lossScale && lossScale !== undefined
        ? Float32Array.of(lossScale)
        : feeds[value.name];
      tensors[value.name] = new ort.Tensor(
        value.dtype as "float32" | "int64",
        data as Float32Array | BigInt64Array,
        [...value.shape],
      );
    }
    const out = await session.run(tensors);
    return Object.fromEntries(Object.entries(out).map(([k, t]) => [k, t.data as TensorData]));
  } finally {
    await session.release();
  }
}

const float32 = (data: TensorData | undefined) => data as Float32Array;

Deno.test("loss scaling by 2^16 gives the unscaled step's updates", async () => {
  const plain = build("fp32", false);
  const scaled = build("fp32", true);
  const feeds = randomFeeds(scaled, 1);
  const expected = await runStep(plain, feeds);
  const out = await runStep(scaled, feeds, 2 ** 16);
  assert.equal(float32(out[FOUND_INF])[0], 0);
  assert.equal(float32(out.loss)[0], float32(expected.loss)[0]);
  assert.deepEqual(scaled.updatedState, plain.updatedState);
  for (const name of plain.updatedState) {
    const next = nextStateName(name);
    assertCloseToScale(float32(out[next]), float32(expected[next]), name, 1e-6);
  }
  // The step did move the student.
  const moved = scaled.trainable.filter((n) =>
    float32(out[nextStateName(n)]).some((v, i) => v !== float32(feeds[n])[i])
  );
  assert.equal(moved.length, scaled.trainable.length);
});

/**
 * Checks a step that found an inf or a NaN: the student and its moments unchanged bit for bit,
 * the teacher moved by the EMA toward the unchanged student, the centres as in `ordinary`.
 */
function assertSkipped(
  step: IbotStep,
  feeds: Record<string, TensorData>,
  out: Record<string, TensorData>,
  ordinary: Record<string, TensorData>,
): void {
  assert.equal(float32(out[FOUND_INF])[0], 1);
  assert(Number.isFinite(float32(out.loss)[0]));
  for (const name of step.trainable) {
    for (const state of [name, expAvgName(name), expAvgSqName(name)]) {
      assert.deepEqual(float32(out[nextStateName(state)]), float32(feeds[state]), state);
    }
  }
  const teachers = step.updatedState.filter((n) => n.startsWith(`${TEACHER}.`));
  assert(teachers.length > 0);
  for (const name of teachers) {
    const teacher = float32(feeds[name]);
    const student = float32(feeds[`${STUDENT}.${name.slice(TEACHER.length + 1)}`]);
    const rate = Math.fround(1 - Math.fround(MOMENTUM));
    const expected = teacher.map((t, i) =>
      Math.fround(t + Math.fround(Math.fround(student[i] - t) * rate))
    );
    const next = float32(out[nextStateName(name)]);
    assertCloseToScale(next, expected, name, 1e-7);
    assert(next.some((v, i) => v !== teacher[i]), `${name} moved`);
  }
  for (const name of Object.values(CENTER_NAMES)) {
    const next = nextStateName(name);
    assertCloseToScale(float32(out[next]), float32(ordinary[next]), name, 1e-6);
    assert(float32(out[next]).some((v, i) => v !== float32(feeds[name])[i]), `${name} moved`);
  }
}

Deno.test("an overflowing loss scale skips the step: found_inf, student and moments kept", async () => {
  const plain = build("fp32", false);
  const scaled = build("fp32", true);
  const feeds = randomFeeds(scaled, 2);
  const ordinary = await runStep(plain, feeds);
  // loss·scale and the gradients of the heads overflow float32 at this scale.
  const out = await runStep(scaled, feeds, 3e38);
  assertSkipped(scaled, feeds, out, ordinary);
});

Deno.test({
  name: "the fp16 step tracks the fp32 one, and skips when float16 overflows",
  async fn() {
    // onnxruntime's CPU provider runs the float16 nodes it has no kernel for in float32 between
    // casts, so this checks the graph's roundings to float16, not the GPU's kernels.
    const plain = build("fp32", false);
    const half = build("fp16", true);
    const feeds = randomFeeds(half, 3);
    const expected = await runStep(plain, feeds);
    const out = await runStep(half, feeds, 2 ** 10);
    assert.equal(float32(out[FOUND_INF])[0], 0);
    assertCloseToScale(float32(out.loss)[0], float32(expected.loss)[0], "loss", 1e-2);
    // The gradient each step saw, from the first moment: m₁ = β₁·m + (1 − β₁)·g.
    const gradient = (result: Record<string, TensorData>, name: string) => {
      const m = float32(feeds[expAvgName(name)]);
      return float32(result[nextStateName(expAvgName(name))]).map((m1, i) =>
        (m1 - 0.9 * m[i]) / 0.1
      );
    };
    for (const name of half.trainable) {
      assertCloseToScale(gradient(out, name), gradient(expected, name), name, 2e-2);
    }
    // A scale at which the float16 gradients overflow: the step is skipped.
    assertSkipped(half, feeds, await runStep(half, feeds, 2 ** 24), out);
  },
});

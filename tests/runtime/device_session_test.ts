/**
 * The C-API runtime on the CPU: DeviceSession with ResidentState gives the same results as
 * CompiledGraph (onnxruntime-node) step after step, state swaps and round trips are right, and
 * bad feeds, allocation failures and a CUDA request without CUDA are one sentence each.
 */

import { assert } from "../assert.ts";
import { Graph, type TensorData } from "../../lib/graph/graph.ts";
import { encodeOnnxModel } from "../../lib/graph/onnx.ts";
import { symbolicDim } from "../../lib/graph/dim.ts";
import { grad } from "../../lib/graph/grad.ts";
import { linear } from "../../lib/graph/linalg.ts";
import { mul, sub } from "../../lib/graph/math.ts";
import { argMax, mean } from "../../lib/graph/reduce.ts";
import {
  adamwScalars,
  adamwScalarValues,
  addAdamWMoments,
  applyAdamW,
} from "../../lib/optim/adamw.ts";
import { DeviceSession } from "../../lib/runtime/device_session.ts";
import { ortApi } from "../../lib/runtime/ort_api.ts";
import { OrtSession } from "../../lib/runtime/ort_session.ts";
import { DeviceTensor } from "../../lib/runtime/ort_value.ts";
import { ResidentState } from "../../lib/runtime/resident_state.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { CompiledGraph } from "../../lib/runtime/session.ts";
import { StateStore } from "../../lib/runtime/store.ts";
import { buildIbotStep, type IbotStep } from "../../lib/train/step.ts";
import { randomTinyMasks, tinyBatchFeeds, tinyStepConfig } from "../train/tiny_step.ts";

const BATCH = 8;
const IN = 6;
const OUT = 4;

/**
 * A linear layer trained by AdamW on a squared error, with a read-only `scale` parameter:
 * outputs `loss`, `prediction` (int64 argmax) and `<name>.next` for the weights and moments.
 */
function linearStep(lossWeight = 1): { graph: Graph; updated: string[]; store: StateStore } {
  const g = new Graph("linear_step");
  const x = g.input("x", "float32", [BATCH, IN]);
  const target = g.input("target", "float32", [BATCH, OUT]);
  const weight = g.param("layer.weight", [OUT, IN], { kind: "normal", std: 0.5 });
  const bias = g.param("layer.bias", [OUT], { kind: "normal", std: 0.5 });
  const scale = g.param("scale", [1], { kind: "constant", value: 1.5 });
  const y = mul(linear(x, weight, bias), scale);
  const loss = mul(mean(mul(sub(y, target), sub(y, target))), lossWeight);
  const [gw, gb] = grad(loss, [weight, bias]);
  applyAdamW(
    g,
    [{ param: weight, grad: gw, decay: true }, { param: bias, grad: gb, decay: false }],
    adamwScalars(g),
  );
  g.output("loss", loss);
  g.output("prediction", argMax(y, -1));
  const store = StateStore.fromParams(g.params, 11);
  const updated = addAdamWMoments(store, ["layer.weight", "layer.bias"]);
  return { graph: g, updated, store };
}

/** Batch `k` (x, target) and the AdamW scalars of step k + 1, as host feeds. */
function batchFeeds(k: number): Record<string, TensorData> {
  const rng = new Rng(100 + k);
  const feeds: Record<string, TensorData> = {
    x: Float32Array.from({ length: BATCH * IN }, () => rng.normal()),
    target: Float32Array.from({ length: BATCH * OUT }, () => rng.normal()),
  };
  for (const [name, value] of Object.entries(adamwScalarValues(0.05, 0.1, k + 1))) {
    feeds[name] = Float32Array.of(value);
  }
  return feeds;
}

/** A deep copy of a store. */
function cloneStore(store: StateStore): StateStore {
  const copy = new StateStore();
  for (const name of store.names()) copy.set(name, store.get(name).slice(), store.shape(name));
  return copy;
}

/** `steps` steps through CompiledGraph with the host store; returns the losses. */
async function referenceSteps(
  graph: Graph,
  store: StateStore,
  updated: readonly string[],
  steps: number,
): Promise<number[]> {
  const session = await CompiledGraph.create(graph, { threads: 1, memoryArena: false });
  const losses: number[] = [];
  for (let k = 0; k < steps; k++) {
    const feeds: Record<string, TensorData> = { ...batchFeeds(k) };
    for (const name of store.names()) feeds[name] = store.get(name);
    const out = await session.run(feeds);
    losses.push((out.loss as Float32Array)[0]);
    store.commitNext(out as Record<string, Float32Array>, updated);
  }
  await session.release();
  return losses;
}

function assertStoresEqual(actual: StateStore, expected: StateStore): void {
  assert.deepEqual(actual.names(), expected.names());
  for (const name of expected.names()) {
    assert.deepEqual(actual.get(name), expected.get(name), name);
  }
}

Deno.test("DeviceSession with resident state equals CompiledGraph bit for bit over 4 steps", async () => {
  const { graph, updated, store } = linearStep();
  const expected = cloneStore(store);
  const expectedLosses = await referenceSteps(graph, expected, updated, 4);

  const session = await DeviceSession.create(graph, {
    device: "cpu",
    threads: 1,
    memoryArena: false,
  });
  const state = await ResidentState.create(store, updated);
  const losses: number[] = [];
  for (let k = 0; k < 4; k++) {
    const out = await session.run(batchFeeds(k), state);
    assert.deepEqual(Object.keys(out).sort(), ["loss", "prediction"]);
    assert(out.prediction instanceof BigInt64Array);
    losses.push((out.loss as Float32Array)[0]);
    state.swap();
  }
  assert.deepEqual(losses, expectedLosses);
  assert(losses[3] < losses[0], `the loss falls: ${losses}`);
  const result = cloneStore(store);
  for (const name of result.names()) result.get(name).fill(NaN);
  await state.download(result);
  assertStoresEqual(result, expected);
  assert.deepEqual(result.get("scale"), Float32Array.of(1.5));
  state.release();
  session.release();
});

Deno.test("two sessions share one resident state; only written tensors swap", async () => {
  const first = linearStep(1);
  const second = linearStep(2);
  const expected = cloneStore(first.store);
  const reference = [
    await CompiledGraph.create(first.graph, { threads: 1 }),
    await CompiledGraph.create(second.graph, { threads: 1 }),
  ];
  const sessions = [
    await DeviceSession.create(first.graph, { device: "cpu", threads: 1 }),
    await DeviceSession.create(second.graph, { device: "cpu", threads: 1 }),
  ];
  const state = await ResidentState.create(first.store, first.updated);
  for (let k = 0; k < 4; k++) {
    const which = k % 2;
    const feeds: Record<string, TensorData> = { ...batchFeeds(k) };
    for (const name of expected.names()) feeds[name] = expected.get(name);
    const want = await reference[which].run(feeds);
    expected.commitNext(want as Record<string, Float32Array>, first.updated);
    const got = await sessions[which].run(batchFeeds(k), state);
    assert.deepEqual(got.loss, want.loss, `step ${k}`);
    state.swap();
  }
  const result = cloneStore(first.store);
  await state.download(result);
  assertStoresEqual(result, expected);

  // A run that writes nothing (no state passed, all fed from the host) leaves the state alone.
  const feeds: Record<string, TensorData> = { ...batchFeeds(9) };
  for (const name of result.names()) feeds[name] = result.get(name);
  await sessions[0].run(feeds);
  state.swap();
  const again = cloneStore(first.store);
  await state.download(again);
  assertStoresEqual(again, expected);
  state.release();
  for (const s of sessions) s.release();
  for (const s of reference) await s.release();
});

Deno.test("swap alternates the buffers and upload replaces the current values", async () => {
  const { graph, updated, store } = linearStep();
  const session = await DeviceSession.create(graph, { device: "cpu", threads: 1 });
  const state = await ResidentState.create(store, updated);
  const weight = "layer.weight";
  const before = state.current(weight);
  const target = state.next(weight);
  assert.notEqual(before, target);
  assert.equal(state.current("scale"), state.current("scale"));
  assert.equal(state.isUpdated("scale"), false);
  assert.throws(() => state.next("scale"), /state tensor scale is resident read-only/);

  await session.run(batchFeeds(0), state);
  assert.equal(state.current(weight), before, "a run does not swap");
  state.swap();
  assert.equal(state.current(weight), target);
  assert.equal(state.next(weight), before);
  state.swap();
  assert.equal(state.current(weight), target, "a swap with nothing written changes nothing");

  const edited = cloneStore(store);
  edited.get(weight).fill(0.25);
  edited.get("scale")[0] = -2;
  await state.upload(edited, [weight, "scale"]);
  const back = cloneStore(store);
  await state.download(back);
  assert.deepEqual(back.get(weight), new Float32Array(OUT * IN).fill(0.25));
  assert.deepEqual(back.get("scale"), Float32Array.of(-2));
  assert.notDeepEqual(back.get("layer.bias"), store.get("layer.bias"), "the step changed the bias");

  await assert.rejects(
    () => state.download(back, ["nope"]),
    /the resident state on cpu has no tensor named nope/,
  );
  await assert.rejects(
    () => ResidentState.create(store, ["layer.weight", "nothing", "nada"]),
    /^Error: the updated state tensors nothing, nada are not in the state store$/,
  );
  const wrongShape = new StateStore();
  wrongShape.set(weight, new Float32Array(OUT * IN), [IN, OUT]);
  await assert.rejects(
    () => state.upload(wrongShape, [weight]),
    /cannot copy state tensor layer.weight: the store holds \[6,4\], the cpu buffer \[4,6\]/,
  );
  state.release();
  session.release();
});

Deno.test("a bad feed is one sentence naming the input", async () => {
  const { graph, updated, store } = linearStep();
  const session = await DeviceSession.create(graph, { device: "cpu", threads: 1 });
  const state = await ResidentState.create(store, updated);
  const feeds = batchFeeds(0);
  await assert.rejects(
    () => session.run({ ...feeds, x: new Float32Array(3) }, state),
    /^Error: run: input x expects 48 float32 values \(shape \[8,6\]\), got 3 in a Float32Array$/,
  );
  await assert.rejects(
    () => session.run({ ...feeds, x: new Float64Array(BATCH * IN) }, state),
    /run: input x expects 48 float32 values \(shape \[8,6\]\), got 48 in a Float64Array/,
  );
  const { target: _, ...withoutTarget } = feeds;
  await assert.rejects(
    () => session.run(withoutTarget, state),
    /run: no value fed for input target\[8,4\]/,
  );
  await assert.rejects(
    () => session.run({ ...feeds, extra: Float32Array.of(1) }, state),
    /run: the graph has no input named extra/,
  );
  await assert.rejects(
    () => session.run({ ...feeds, scale: Float32Array.of(1) }, state),
    /run: input scale is both fed and resident in the state/,
  );
  await assert.rejects(
    () => session.run(feeds),
    /run: no value fed for input layer.weight\[4,6\]/,
  );
  const readOnly = await ResidentState.create(store, []);
  await assert.rejects(
    () => session.run(feeds, readOnly),
    /state tensor layer.weight is resident read-only/,
  );
  readOnly.release();
  const out = await session.run(feeds, state);
  assert(Number.isFinite((out.loss as Float32Array)[0]), "the session still runs");
  state.release();
  session.release();
});

Deno.test("an allocation failure names the tensor, its size and the device", async () => {
  const api = ortApi();
  const session = await OrtSession.create(api, encodeOnnxModel(linearStep().graph).model, {
    device: "cpu",
  });
  assert.throws(
    () => DeviceTensor.allocate(api, session.allocator(), "huge", [2 ** 25, 2 ** 25]),
    /^Error: cannot allocate huge \(4294967296\.0 MiB\) on cpu: [^\n]+$/,
  );
  const small = DeviceTensor.allocate(api, session.allocator(), "small", [2, 3]);
  small.release();
  session.release();
});

Deno.test("a graph with a symbolic axis is refused in one sentence", async () => {
  const g = new Graph("symbolic");
  g.output("y", g.input("x", "float32", [symbolicDim("batch"), 2]));
  await assert.rejects(
    () => DeviceSession.create(g),
    /^Error: DeviceSession: x\[batch,2\] has a symbolic axis; it runs graphs of static shapes only$/,
  );
});

Deno.test("asking for CUDA on a machine without it is one sentence about CUDA", async () => {
  const error = await DeviceSession.create(linearStep().graph, { device: "cuda" }).then(
    () => undefined,
    (e: Error) => e,
  );
  assert(error instanceof Error, "this machine has no CUDA provider");
  assert.match(error.message, /CUDA/);
  assert.doesNotMatch(error.message, /\n/);
});

const TINY_IBOT = tinyStepConfig();

/** Random batch inputs (crops, masks, drop-path draws) and the scalars of step `k` (from 1). */
function ibotBatch(step: IbotStep, k: number): Record<string, TensorData> {
  const rng = new Rng(500 + k);
  const rows = TINY_IBOT.globalCrops * TINY_IBOT.batch;
  const masks = randomTinyMasks(rows, rng);
  return tinyBatchFeeds(step, TINY_IBOT, masks, rows * TINY_IBOT.maskSlots, k, rng);
}

Deno.test("three iBOT steps through DeviceSession equal CompiledGraph with the store", async () => {
  const step = buildIbotStep(TINY_IBOT);
  const store = StateStore.fromParams(step.graph.params, 3);
  addAdamWMoments(store, step.trainable);
  const expected = cloneStore(store);
  const reference = await CompiledGraph.create(step.graph, { threads: 1, memoryArena: false });
  const session = await DeviceSession.create(step.graph, {
    device: "cpu",
    threads: 1,
    memoryArena: false,
  });
  const state = await ResidentState.create(store, step.updatedState);
  for (let k = 1; k <= 3; k++) {
    const batch = ibotBatch(step, k);
    const feeds: Record<string, TensorData> = { ...batch };
    for (const name of expected.names()) feeds[name] = expected.get(name);
    const want = await reference.run(feeds);
    expected.commitNext(want as Record<string, Float32Array>, step.updatedState);
    const got = await session.run(batch, state);
    state.swap();
    for (const name of Object.keys(got)) {
      assert.deepEqual(got[name], want[name], `${name}, step ${k}`);
    }
    assert(Number.isFinite((got.loss as Float32Array)[0]));
  }
  const result = cloneStore(store);
  await state.download(result);
  assertStoresEqual(result, expected);
  state.release();
  session.release();
  await reference.release();
});

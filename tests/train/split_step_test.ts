/**
 * The split step (gradient graph, then update graph) against the fused step: the same results on
 * one rank, and on two ranks of B images each, their gradients and centre sums summed as the
 * all-reduce sums them, the fused step's results at batch 2B.
 */

import { backboneBlocks } from "../../lib/models/backbone.ts";
import { assert, assertCloseToScale } from "../assert.ts";
import type { Graph, TensorData } from "../../lib/graph/graph.ts";
import { encodeOnnxModel } from "../../lib/graph/onnx.ts";
import { shapeSize } from "../../lib/graph/tensor.ts";
import { dropPathRates } from "../../lib/models/vit.ts";
import { expAvgName, expAvgSqName } from "../../lib/optim/adamw.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { CompiledGraph } from "../../lib/runtime/session.ts";
import { nextStateName, StateStore } from "../../lib/runtime/store.ts";
import { fillDropPath, fillMaskInputs } from "../../lib/train/batch_inputs.ts";
import {
  buildIbotGradientStep,
  buildSplitIbotStep,
  SPLIT_STEP_VALUES,
  splitStepDivisors,
} from "../../lib/train/split_step.ts";
import {
  buildIbotStep,
  FOUND_INF,
  type IbotStepConfig,
  STEP_INPUTS,
  STEP_OUTPUTS,
  stepScalarValues,
  TEACHER_PREDICTION,
} from "../../lib/train/step.ts";
import { TINY_PATCHES, tinyStepConfig } from "./tiny_step.ts";

/** The tiny iBOT with drop path, local crops and separate patch heads, 2 images per crop. */
const DROP_PATH: IbotStepConfig = { ...tinyStepConfig({ maskSlots: 6, dropPath: 0.2 }), batch: 2 };

/**
 * Loss scaling, frozen last-layer gains, a shared head, no local crops, and no clipping (so that
 * `found_inf` takes the last-layer gate into account).
 */
const LOSS_SCALING: IbotStepConfig = {
  ...tinyStepConfig({ sharedHead: true, maskSlots: 6, dropPath: 0.2 }),
  batch: 2,
  normLastLayer: true,
  localCrops: 0,
  clipGrad: 0,
  lossScaling: true,
};

type Feeds = Record<string, TensorData>;
const float32 = (data: TensorData) => data as Float32Array;

/** One batch of `batch` images per crop: crops crop-major, a mask per global-crop row. */
interface Batch {
  readonly batch: number;
  readonly globals: Float32Array;
  readonly locals: Float32Array;
  readonly masks: readonly Uint8Array[];
  readonly dropPathGlobal: Float32Array;
  readonly dropPathLocal: Float32Array;
}

/** Random crops, 1 to `maskSlots` masked patches per row, and drop-path factors. */
function randomBatch(config: IbotStepConfig, batch: number, rng: Rng): Batch {
  const G = config.globalCrops;
  const L = config.localCrops;
  const normal = (n: number) => Float32Array.from({ length: n }, () => rng.normal());
  const masks = Array.from({ length: G * batch }, () => {
    const mask = new Uint8Array(TINY_PATCHES);
    const draws = 1 + rng.int(config.maskSlots);
    for (let k = 0; k < draws; k++) mask[rng.int(TINY_PATCHES)] = 1;
    return mask;
  });
  const rates = dropPathRates(config.dropPath, backboneBlocks(config.backbone));
  const dropPathGlobal = new Float32Array(backboneBlocks(config.backbone) * 2 * G * batch);
  const dropPathLocal = new Float32Array(backboneBlocks(config.backbone) * 2 * L * batch);
  fillDropPath(dropPathGlobal, rates, G * batch, rng);
  fillDropPath(dropPathLocal, rates, L * batch, rng);
  return {
    batch,
    globals: normal(G * batch * 3 * config.globalSize ** 2),
    locals: normal(L * batch * 3 * config.localSize ** 2),
    masks,
    dropPathGlobal,
    dropPathLocal,
  };
}

/**
 * Rank `rank`'s share of a batch of 2B images per crop, dealt to two ranks as the sharded loader
 * deals them: its image b is image 2b + rank of the whole batch, in every crop, with its masks and
 * drop-path factors.
 */
function shareOf(full: Batch, config: IbotStepConfig, rank: number): Batch {
  // Rows of 2B images per crop (and per drop-path slab): keep every other row from `rank`.
  const take = (data: Float32Array, rowSize: number): Float32Array => {
    const out = new Float32Array(data.length / 2);
    for (let row = rank, at = 0; row < data.length / rowSize; row += 2, at += rowSize) {
      out.set(data.subarray(row * rowSize, (row + 1) * rowSize), at);
    }
    return out;
  };
  return {
    batch: full.batch / 2,
    globals: take(full.globals, 3 * config.globalSize ** 2),
    locals: take(full.locals, 3 * config.localSize ** 2),
    masks: full.masks.filter((_, row) => row % 2 === rank),
    dropPathGlobal: take(full.dropPathGlobal, 1),
    dropPathLocal: take(full.dropPathLocal, 1),
  };
}

/** The batch inputs of a step built with `config.batch` = `b.batch` and the default slots. */
function batchFeeds(config: IbotStepConfig, b: Batch): Feeds {
  const feeds: Feeds = { [STEP_INPUTS.globals]: b.globals };
  if (config.localCrops > 0) feeds[STEP_INPUTS.locals] = b.locals;
  fillMaskInputs(feeds, b.masks, config.globalCrops * b.batch * config.maskSlots, TINY_PATCHES);
  if (config.dropPath > 0) {
    feeds[STEP_INPUTS.dropPathGlobal] = b.dropPathGlobal;
    if (config.localCrops > 0) feeds[STEP_INPUTS.dropPathLocal] = b.dropPathLocal;
  }
  return feeds;
}

/**
 * A random state: the initial parameters and centres plus noise, and Adam moments as after a few
 * steps (zero moments with `zeroMoments`).
 */
function randomState(config: IbotStepConfig, seed: number, zeroMoments = false): Feeds {
  const step = buildIbotStep(config);
  const rng = new Rng(seed);
  const store = StateStore.fromParams(step.graph.params, seed);
  const feeds: Feeds = {};
  for (const name of store.names()) {
    feeds[name] = store.get(name).map((v) => v + 0.1 * rng.normal());
  }
  for (const name of step.trainable) {
    const size = feeds[name].length;
    const moment = (std: number, draw: () => number) =>
      Float32Array.from({ length: size }, () => (zeroMoments ? 0 : std * draw()));
    feeds[expAvgName(name)] = moment(0.003, () => rng.normal());
    feeds[expAvgSqName(name)] = moment(1e-5, () => rng.uniform());
  }
  return feeds;
}

/** The step scalars of iteration 5, with `lossScale` for a step built with loss scaling. */
function scalarFeeds(config: IbotStepConfig, lossScale: number): Feeds {
  const values = stepScalarValues({
    lr: 0.005,
    weightDecay: 0.04,
    step: 5,
    lastLayerActive: true,
    lastLayerStep: 5,
    momentum: 0.99,
    teacherTemp: 0.04,
    teacherPatchTemp: 0.07,
    lossScale: config.lossScaling ? lossScale : undefined,
  });
  return Object.fromEntries(Object.entries(values).map(([k, v]) => [k, Float32Array.of(v)]));
}

/** Compiles `graph` once and runs it on each of `feedsList` (each may hold extra values). */
async function runEach(graph: Graph, feedsList: readonly Feeds[]): Promise<Feeds[]> {
  const session = await CompiledGraph.create(graph, { threads: 1 });
  try {
    const results: Feeds[] = [];
    for (const feeds of feedsList) {
      const own = Object.fromEntries(session.inputNames.map((name) => [name, feeds[name]]));
      results.push(structuredClone(await session.run(own)));
    }
    return results;
  } finally {
    await session.release();
  }
}

/** The fused step of `config` on `state` and one batch. */
async function fusedStep(
  config: IbotStepConfig,
  state: Feeds,
  batch: Batch,
  lossScale: number,
): Promise<Feeds> {
  const step = buildIbotStep({ ...config, batch: batch.batch });
  const feeds = { ...state, ...batchFeeds(config, batch), ...scalarFeeds(config, lossScale) };
  return (await runEach(step.graph, [feeds]))[0];
}

/**
 * The split step of `config` on `state`, one rank per batch: each rank's gradient graph, the
 * float32 sums of their `grads` and centre sums (an all-reduce), then the update graph once.
 */
async function splitStep(
  config: IbotStepConfig,
  state: Feeds,
  batches: readonly Batch[],
  lossScale: number,
): Promise<{ update: Feeds; ranks: Feeds[] }> {
  const perRank = { ...config, batch: batches[0].batch };
  const step = buildSplitIbotStep(perRank);
  const scalars = scalarFeeds(config, lossScale);
  const ranks = await runEach(
    step.gradient,
    batches.map((b) => ({ ...state, ...batchFeeds(config, b), ...scalars })),
  );
  const summed: Feeds = {};
  for (
    const name of [
      SPLIT_STEP_VALUES.grads,
      SPLIT_STEP_VALUES.centerSum,
      SPLIT_STEP_VALUES.center2Sum,
    ]
  ) {
    const total = new Float32Array(ranks[0][name].length);
    for (const rank of ranks) float32(rank[name]).forEach((v, i) => (total[i] += v));
    summed[name] = total;
  }
  const divisors = Object.fromEntries(
    Object.entries(splitStepDivisors(perRank, batches.length)).map((
      [k, v],
    ) => [k, Float32Array.of(v)]),
  );
  const [update] = await runEach(step.update, [{ ...state, ...scalars, ...summed, ...divisors }]);
  return { update, ranks };
}

/**
 * Asserts the updated state of `actual` equals that of `expected`, to `tolerance` of each
 * tensor's scale (0: bit for bit), and that the step moved every trainable parameter.
 */
function assertSameUpdate(
  config: IbotStepConfig,
  state: Feeds,
  actual: Feeds,
  expected: Feeds,
  tolerance: number,
): void {
  const step = buildSplitIbotStep(config);
  const fused = buildIbotStep(config);
  assert.deepEqual(step.updatedState, fused.updatedState);
  assert.deepEqual(
    step.update.outputs.map((o) => o.name).sort(),
    [...fused.updatedState.map(nextStateName), ...(config.lossScaling ? [FOUND_INF] : [])].sort(),
  );
  for (const name of fused.updatedState) {
    const next = nextStateName(name);
    if (tolerance === 0) assert.deepEqual(actual[next], expected[next], name);
    else assertCloseToScale(float32(actual[next]), float32(expected[next]), name, tolerance);
  }
  if (config.lossScaling) assert.deepEqual(actual[FOUND_INF], expected[FOUND_INF]);
  if (expected[FOUND_INF] && float32(expected[FOUND_INF])[0] === 1) return;
  const moved = step.trainable.filter((name) =>
    float32(actual[nextStateName(name)]).some((v, i) => v !== float32(state[name])[i])
  );
  assert.deepEqual(moved, step.trainable);
}

for (
  const [label, config, lossScale] of [["with drop path", DROP_PATH, 1], [
    "with loss scaling",
    LOSS_SCALING,
    2 ** 16,
  ]] as const
) {
  Deno.test(`one rank: the gradient and update graphs give the fused step's results, ${label}`, async () => {
    const state = randomState(config, 1);
    const batch = randomBatch(config, config.batch, new Rng(2));
    const expected = await fusedStep(config, state, batch, lossScale);
    const { update, ranks: [gradient] } = await splitStep(config, state, [batch], lossScale);
    if (config.lossScaling) assert.equal(float32(update[FOUND_INF])[0], 0);
    assertSameUpdate(config, state, update, expected, 0);
    for (const name of [...STEP_OUTPUTS, TEACHER_PREDICTION]) {
      assert.deepEqual(gradient[name], expected[name], name);
    }
  });
}

Deno.test("one rank: an overflowing loss scale skips the step in both, bit for bit", async () => {
  const state = randomState(LOSS_SCALING, 3);
  const batch = randomBatch(LOSS_SCALING, LOSS_SCALING.batch, new Rng(4));
  const expected = await fusedStep(LOSS_SCALING, state, batch, 3e38);
  const { update } = await splitStep(LOSS_SCALING, state, [batch], 3e38);
  assert.equal(float32(expected[FOUND_INF])[0], 1);
  assertSameUpdate(LOSS_SCALING, state, update, expected, 0);
});

for (
  const [label, config, lossScale] of [["with drop path", DROP_PATH, 1], [
    "with loss scaling",
    LOSS_SCALING,
    2 ** 10,
  ]] as const
) {
  Deno.test(`two ranks of B images equal one rank of 2B (1e-5), ${label}`, async () => {
    const state = randomState(config, 5);
    const full = randomBatch(config, 2 * config.batch, new Rng(6));
    const expected = await fusedStep(config, state, full, lossScale);
    const shares = [0, 1].map((rank) => shareOf(full, config, rank));
    const { update, ranks } = await splitStep(config, state, shares, lossScale);
    if (config.lossScaling) assert.equal(float32(update[FOUND_INF])[0], 0);
    assertSameUpdate({ ...config, batch: 2 * config.batch }, state, update, expected, 1e-5);
    // Each rank's loss is the mean over its B images: their mean is the loss of the 2B batch.
    for (const name of STEP_OUTPUTS) {
      const mean = (float32(ranks[0][name])[0] + float32(ranks[1][name])[0]) / 2;
      assertCloseToScale(mean, float32(expected[name])[0], name, 1e-5);
    }
    const predictions = ranks.map((rank) => [...rank[TEACHER_PREDICTION]]);
    assert.deepEqual(
      predictions[0].flatMap((p, b) => [p, predictions[1][b]]),
      [...expected[TEACHER_PREDICTION]],
    );
  });
}

Deno.test("each trainable gradient lies in `grads` where the layout says", async () => {
  const config = { ...DROP_PATH, clipGrad: 0 };
  const step = buildSplitIbotStep(config);
  let offset = 0;
  for (const slice of step.layout) {
    assert.equal(slice.offset, offset, slice.name);
    assert.equal(slice.size, shapeSize(slice.shape), slice.name);
    offset += slice.size;
  }
  assert.deepEqual(step.trainable, buildIbotStep(config).trainable);
  const grads = step.gradient.outputs.find((o) => o.name === SPLIT_STEP_VALUES.grads)!;
  assert.deepEqual(grads.shape, [offset]);

  // From zero moments and without clipping, the fused step's first moment is (1 − β₁)·gradient.
  const state = randomState(config, 7, true);
  const batch = randomBatch(config, config.batch, new Rng(8));
  const fused = await fusedStep(config, state, batch, 1);
  const { ranks: [gradient] } = await splitStep(config, state, [batch], 1);
  const flat = float32(gradient[SPLIT_STEP_VALUES.grads]);
  const share = Math.fround(1 - 0.9);
  for (const { name, offset, size } of step.layout) {
    const firstMoment = flat.subarray(offset, offset + size).map((g) => g * share);
    const expected = float32(fused[nextStateName(expAvgName(name))]);
    assert(expected.some((v) => v !== 0), `${name} has a gradient`);
    assertCloseToScale(firstMoment, expected, name, 1e-6);
  }
});

Deno.test("the update graph is the same for every slot count and batch size", () => {
  const model = (config: IbotStepConfig) =>
    encodeOnnxModel(buildSplitIbotStep(config).update).model;
  const reference = model(DROP_PATH);
  assert.deepEqual(model({ ...DROP_PATH, slots: 5 }), reference);
  assert.deepEqual(model({ ...DROP_PATH, batch: 3 }), reference);
  // The gradient graph does depend on them.
  const inputs = (config: IbotStepConfig) =>
    buildIbotGradientStep(config).graph.inputs.map((i) => `${i.name}${i.shape}`);
  assert.notDeepEqual(inputs({ ...DROP_PATH, slots: 5 }), inputs(DROP_PATH));
});

Deno.test("splitStepDivisors: the rank count and the global-crop rows of all ranks", () => {
  assert.deepEqual(splitStepDivisors(DROP_PATH, 3), {
    [SPLIT_STEP_VALUES.gradDivisor]: 3,
    [SPLIT_STEP_VALUES.centerRows]: 2 * 2 * 3,
  });
  assert.throws(
    () => splitStepDivisors(DROP_PATH, 0),
    /the world size must be a positive integer, got 0/,
  );
});

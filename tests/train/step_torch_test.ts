import { assert, assertCloseToScale } from "../assert.ts";
import type { ParamSpec, TensorData } from "../../lib/graph/graph.ts";
import { shapeSize } from "../../lib/graph/tensor.ts";
import { dropPathRates } from "../../lib/models/vit.ts";
import { addAdamWMoments, expAvgName, expAvgSqName } from "../../lib/optim/adamw.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import type { NamedTensor } from "../../lib/runtime/named_tensor.ts";
import { CompiledGraph } from "../../lib/runtime/session.ts";
import { StateStore } from "../../lib/runtime/store.ts";
import { countMasked, fillDropPath, fillMaskInputs } from "../../lib/train/batch_inputs.ts";
import { pickSlotBucket, slotBuckets } from "../../lib/train/slot_buckets.ts";
import {
  buildIbotStep,
  CENTER_NAMES,
  type IbotStepConfig,
  STEP_INPUTS,
  STEP_OUTPUTS,
  stepScalarValues,
  STUDENT,
  TEACHER,
} from "../../lib/train/step.ts";
import {
  f32,
  f64,
  float64Reader,
  i64,
  runTorchReference,
  torchAvailable,
} from "../reference/torch.ts";

// A tiny iBOT: ViT of width 32, depth 2, 2 heads, patch 4 on 16 px images; 2 global crops of
// 16 px (4×4 patches) and 2 local crops of 8 px per image; head 48 → 16 → 32 prototypes.
const [DIM, DEPTH, HEADS, PATCH, IMG] = [32, 2, 2, 4, 16];
const [BATCH, GLOBAL_CROPS, LOCAL_CROPS, GLOBAL_SIZE, LOCAL_SIZE] = [4, 2, 2, 16, 8];
const [OUT_DIM, HEAD_HIDDEN, HEAD_BOTTLENECK] = [32, 48, 16];
const PATCHES = (GLOBAL_SIZE / PATCH) ** 2;
const LR = 0.005;
const WEIGHT_DECAY = 0.04;
const MOMENTUM = 0.9;
const TEACHER_TEMP = 0.04;
const TEACHER_PATCH_TEMP = 0.07;
const LAMBDA1 = 1;
const LAMBDA2 = 0.5;

/**
 * Iterations of each comparison. AdamW resumes from its state after one step (step count 1, the
 * moments of a previous gradient g₀ with |g₀| in [0.015, 0.045]), so that every update depends on
 * the values of the gradients, not only on their signs. (Adam's first step from zero moments moves
 * each entry by lr·g/(|g| + eps), about lr·sign(g) however small g is, so float32 noise in a
 * gradient that is truly 0, like the key part of every `qkv.bias`, or 1e-7 of its tensor's
 * largest, would set the step's sign and the runs would part ways.)
 */
const ITERATIONS = 2;

/** What varies between the cases: head sharing, last-layer handling, clipping, epoch, drop path. */
interface StepCase {
  readonly sharedHead: boolean;
  readonly teacherSharedHead: boolean;
  readonly patchOutDim: number;
  readonly normLastLayer: boolean;
  readonly clipGrad: number;
  readonly epoch: number;
  readonly freezeLastLayer: number;
  readonly dropPath: number;
}

/** One iteration's drop-path scales as our step takes them, [depth, 2, rows] per crop kind. */
interface DropPathDraws {
  readonly global: Float32Array;
  readonly local: Float32Array;
}

/**
 * Sets the AdamW moments of `name` in `store` to those after one step with a gradient g₀ drawn
 * away from zero: m = (1 − β₁)·g₀, v = (1 − β₂)·g₀².
 */
function resumeMoments(store: StateStore, name: string, rng: Rng): void {
  const m = store.get(expAvgName(name));
  const v = store.get(expAvgSqName(name));
  for (let i = 0; i < m.length; i++) {
    const g0 = 0.03 * (0.5 + rng.uniform()) * (rng.uniform() < 0.5 ? -1 : 1);
    m[i] = 0.1 * g0;
    v[i] = 0.001 * g0 * g0;
  }
}

/** Random masks of the global crops, crop-major; image 1 of crop 0 has no masked patch. */
function randomMasks(rng: Rng): Uint8Array[] {
  const masks = Array.from(
    { length: GLOBAL_CROPS * BATCH },
    () => Uint8Array.from({ length: PATCHES }, () => (rng.uniform() < 0.35 ? 1 : 0)),
  );
  masks[0][5] = 1;
  masks[1].fill(0);
  return masks;
}

/** The step for masks of at most `maskSlots` masked patches per crop, with `slots` slots. */
function stepConfig(c: StepCase, maskSlots: number, slots: number): IbotStepConfig {
  return {
    backbone: { embedDim: DIM, depth: DEPTH, heads: HEADS, patchSize: PATCH, imgSize: IMG },
    studentHead: {
      outDim: OUT_DIM,
      patchOutDim: c.patchOutDim,
      sharedHead: c.sharedHead,
      hiddenDim: HEAD_HIDDEN,
      bottleneckDim: HEAD_BOTTLENECK,
    },
    teacherSharedHead: c.teacherSharedHead,
    normLastLayer: c.normLastLayer,
    useMaskedImModeling: true,
    batch: BATCH,
    globalCrops: GLOBAL_CROPS,
    globalSize: GLOBAL_SIZE,
    localCrops: LOCAL_CROPS,
    localSize: LOCAL_SIZE,
    maskSlots,
    slots,
    dropPath: c.dropPath,
    clipGrad: c.clipGrad,
    lambda1: LAMBDA1,
    lambda2: LAMBDA2,
  };
}

/**
 * `ibot_torch.py step` for {@link ITERATIONS} iterations from the same state (student, teacher,
 * centres, AdamW after one step), crops, masks and drop-path draws as our step's feeds, under the
 * official names; returns its outputs.
 */
async function referenceSteps(
  c: StepCase,
  feeds: Record<string, TensorData>,
  params: readonly ParamSpec[],
  masks: readonly Uint8Array[],
  dropPaths: readonly DropPathDraws[],
): Promise<Map<string, NamedTensor>> {
  const tensors: Record<string, NamedTensor> = {
    embed_dim: i64(DIM),
    depth: i64(DEPTH),
    heads: i64(HEADS),
    patch_size: i64(PATCH),
    img_size: i64(IMG),
    out_dim: i64(OUT_DIM),
    patch_out_dim: i64(c.patchOutDim),
    head_hidden: i64(HEAD_HIDDEN),
    head_bottleneck: i64(HEAD_BOTTLENECK),
    shared_head: i64(c.sharedHead),
    shared_head_teacher: i64(c.teacherSharedHead),
    norm_last_layer: i64(c.normLastLayer),
    n_global: i64(GLOBAL_CROPS),
    epoch: i64(c.epoch),
    freeze_last_layer: i64(c.freezeLastLayer),
    steps: i64(ITERATIONS),
    optimizer_step: i64(1),
    drop_path: f64(c.dropPath),
    lr: f64(LR),
    wd: f64(WEIGHT_DECAY),
    momentum: f64(MOMENTUM),
    teacher_temp: f64(TEACHER_TEMP),
    teacher_patch_temp: f64(TEACHER_PATCH_TEMP),
    lambda1: f64(LAMBDA1),
    lambda2: f64(LAMBDA2),
    clip_grad: f64(c.clipGrad),
    center: f32(feeds[CENTER_NAMES.center] as Float32Array, [1, OUT_DIM]),
    center2: f32(feeds[CENTER_NAMES.center2] as Float32Array, [1, 1, c.patchOutDim]),
  };
  for (const p of params) {
    tensors[p.name] = f32(feeds[p.name] as Float32Array, p.shape);
    for (const moment of [expAvgName(p.name), expAvgSqName(p.name)]) {
      const data = feeds[moment] as Float32Array | undefined;
      if (data?.some((v) => v !== 0)) tensors[moment] = f32(data, p.shape);
    }
  }
  const crops = [
    { data: feeds[STEP_INPUTS.globals] as Float32Array, count: GLOBAL_CROPS, size: GLOBAL_SIZE },
    { data: feeds[STEP_INPUTS.locals] as Float32Array, count: LOCAL_CROPS, size: LOCAL_SIZE },
  ];
  let crop = 0;
  for (const { data, count, size } of crops) {
    const n = BATCH * 3 * size * size;
    for (let i = 0; i < count; i++) {
      tensors[`crops.${crop++}`] = f32(data.subarray(i * n, (i + 1) * n), [BATCH, 3, size, size]);
    }
  }
  for (let i = 0; i < GLOBAL_CROPS; i++) {
    const rows = masks.slice(i * BATCH, (i + 1) * BATCH);
    tensors[`masks.${i}`] = f32(Float32Array.from(rows.flatMap((m) => [...m])), [BATCH, PATCHES]);
  }
  dropPaths.forEach(({ global, local }, k) => {
    tensors[`drop_path.${k}.global`] = f32(global, [DEPTH, 2, GLOBAL_CROPS * BATCH]);
    tensors[`drop_path.${k}.local`] = f32(local, [DEPTH, 2, LOCAL_CROPS * BATCH]);
  });
  return await runTorchReference("ibot_torch.py", ["step"], tensors);
}

/**
 * Runs {@link ITERATIONS} iterations of our step and of `ibot_torch.py step` from the same random
 * state, crops, masks and drop-path draws, and compares everything the iterations produce: the
 * last iteration's statistics, and the final parameters, moments and centres.
 */
async function compareSteps(c: StepCase, seed: number): Promise<void> {
  const rng = new Rng(seed);
  const masks = randomMasks(rng);
  // The bucket the trainer would pick: it pads the batch's masked patches with some slots.
  const maskSlots = Math.max(...masks.map((m) => countMasked([m])));
  const slots = pickSlotBucket(
    slotBuckets(GLOBAL_CROPS * BATCH * maskSlots),
    countMasked(masks),
  );
  assert(slots > countMasked(masks), "the slots include padding");
  const step = buildIbotStep(stepConfig(c, maskSlots, slots));
  const session = await CompiledGraph.create(step.graph);

  // The official init plus noise, so that no parameter sits at a special value; the teacher is
  // the student plus a little noise (as after some training), so that the teacher's and the
  // student's predictions agree on some images and "acc" is informative. AdamW has taken one
  // step, except for a frozen last layer.
  const store = StateStore.fromParams(step.graph.params, seed);
  for (const name of store.names()) {
    store.get(name).forEach((v, i, a) => (a[i] = v + 0.1 * rng.normal()));
  }
  for (const name of store.names().filter((n) => n.startsWith(`${TEACHER}.`))) {
    const source = store.get(`${STUDENT}.${name.slice(TEACHER.length + 1)}`);
    store.get(name).forEach((_, i, a) => (a[i] = source[i] + 0.01 * rng.normal()));
  }
  addAdamWMoments(store, step.trainable);
  const lastLayerActive = c.epoch >= c.freezeLastLayer;
  const stepped = step.trainable.filter((n) => lastLayerActive || !n.includes("last_layer"));
  for (const name of stepped) resumeMoments(store, name, rng);
  const initial = new Map(store.names().map((name) => [name, store.get(name).slice()]));

  const feeds: Record<string, TensorData> = {};
  for (const name of store.names()) feeds[name] = store.get(name);
  fillMaskInputs(feeds, masks, slots, PATCHES);
  for (const input of step.graph.inputs) {
    if (feeds[input.name]) continue;
    const n = shapeSize(input.shape);
    feeds[input.name] = input.dtype === "int64"
      ? new BigInt64Array(n)
      : Float32Array.from({ length: n }, () => rng.normal());
  }
  // Global crop 1 is a slightly different view of the same images as crop 0.
  const globals = feeds[STEP_INPUTS.globals] as Float32Array;
  const cropSize = BATCH * 3 * GLOBAL_SIZE * GLOBAL_SIZE;
  for (let i = 0; i < cropSize; i++) globals[cropSize + i] = globals[i] + 0.01 * rng.normal();
  const referenceFeeds = { ...feeds, ...Object.fromEntries(initial) };
  const dropPaths: DropPathDraws[] = [];
  let out: Record<string, TensorData> = {};
  for (let k = 1; k <= ITERATIONS; k++) {
    const scalars = stepScalarValues({
      lr: LR,
      weightDecay: WEIGHT_DECAY,
      step: 1 + k,
      lastLayerActive,
      lastLayerStep: lastLayerActive ? 1 + k : 0,
      momentum: MOMENTUM,
      teacherTemp: TEACHER_TEMP,
      teacherPatchTemp: TEACHER_PATCH_TEMP,
    });
    for (const [name, value] of Object.entries(scalars)) (feeds[name] as Float32Array)[0] = value;
    if (c.dropPath > 0) dropPaths.push(drawDropPath(c.dropPath, feeds, rng));
    out = await session.run(feeds);
    store.commitNext(out as Record<string, Float32Array>, step.updatedState);
  }

  const params = step.graph.params.filter((p) =>
    p.name.startsWith(`${STUDENT}.`) || p.name.startsWith(`${TEACHER}.`)
  );
  const reference = await referenceSteps(c, referenceFeeds, params, masks, dropPaths);
  const ref = float64Reader(reference);

  for (const name of STEP_OUTPUTS) {
    assertCloseToScale((out[name] as Float32Array)[0], ref(name)[0], name);
  }
  assertCloseToScale(store.get(CENTER_NAMES.center), ref("center"), "center");
  assertCloseToScale(store.get(CENTER_NAMES.center2), ref("center2"), "center2");

  // Same parameter names on both sides, in order (the reference lists a shared module once).
  const names = [...reference.keys()];
  for (const network of [STUDENT, TEACHER]) {
    const ofNetwork = (n: string) => n.startsWith(`${network}.`);
    assert.deepEqual(names.filter(ofNetwork), params.map((p) => p.name).filter(ofNetwork));
  }
  for (const p of params) assertCloseToScale(store.get(p.name), ref(p.name), p.name);

  // Moments of every parameter AdamW stepped; frozen ones have none and stay zero, untouched.
  assert.deepEqual(names.filter((n) => n.startsWith("exp_avg.")), stepped.map(expAvgName));
  assert.deepEqual(names.filter((n) => n.startsWith("exp_avg_sq.")), stepped.map(expAvgSqName));
  for (const name of stepped) {
    for (const moment of [expAvgName(name), expAvgSqName(name)]) {
      assertCloseToScale(store.get(moment), ref(moment), moment);
    }
  }
  if (c.clipGrad > 0) {
    const norms = stepped.map((n) => Math.hypot(...ref(`grad.0.${n}`)));
    assert(norms.some((n) => Math.abs(n - c.clipGrad) < 1e-5), "some gradients are clipped");
    assert(norms.some((n) => n < c.clipGrad - 1e-2), "some gradients are not clipped");
  }
  for (const name of step.trainable.filter((n) => !stepped.includes(n))) {
    assert(!reference.has(`grad.0.${name}`), `${name} has no gradient while frozen`);
    assert.deepEqual(store.get(name), initial.get(name), `${name} is frozen`);
    for (const moment of [expAvgName(name), expAvgSqName(name)]) {
      assert(store.get(moment).every((v) => v === 0), moment);
    }
  }
  await session.release();
}

/**
 * Draws one iteration's drop-path scales into the step's feeds (as the trainer does) and returns
 * copies of them; checks that some rows of the drop-path blocks are dropped and some kept.
 */
function drawDropPath(rate: number, feeds: Record<string, TensorData>, rng: Rng): DropPathDraws {
  const rates = dropPathRates(rate, DEPTH);
  const global = feeds[STEP_INPUTS.dropPathGlobal] as Float32Array;
  const local = feeds[STEP_INPUTS.dropPathLocal] as Float32Array;
  fillDropPath(global, rates, GLOBAL_CROPS * BATCH, rng);
  fillDropPath(local, rates, LOCAL_CROPS * BATCH, rng);
  const scales = [...global, ...local];
  assert(scales.includes(0) && scales.some((s) => s > 1), "some rows are dropped, some kept");
  return { global: global.slice(), local: local.slice() };
}

Deno.test({
  name: "two iBOT iterations with a shared head, trainable weight_g and clipping match PyTorch",
  ignore: !torchAvailable(),
  async fn() {
    await compareSteps({
      sharedHead: true,
      teacherSharedHead: true,
      patchOutDim: OUT_DIM,
      normLastLayer: false,
      clipGrad: 3,
      epoch: 0,
      freezeLastLayer: 0,
      dropPath: 0,
    }, 1);
  },
});

Deno.test({
  name:
    "two iBOT iterations with a separate student head, a shared teacher head and fixed weight_g " +
    "match PyTorch",
  ignore: !torchAvailable(),
  async fn() {
    await compareSteps({
      sharedHead: false,
      teacherSharedHead: true,
      patchOutDim: OUT_DIM,
      normLastLayer: true,
      clipGrad: 0,
      epoch: 0,
      freezeLastLayer: 0,
      dropPath: 0,
    }, 2);
  },
});

Deno.test({
  name:
    "two iBOT iterations in a frozen-last-layer epoch leave both last layers untouched as PyTorch",
  ignore: !torchAvailable(),
  async fn() {
    await compareSteps({
      sharedHead: false,
      teacherSharedHead: false,
      patchOutDim: 24,
      normLastLayer: false,
      clipGrad: 3,
      epoch: 0,
      freezeLastLayer: 1,
      dropPath: 0,
    }, 3);
  },
});

Deno.test({
  name: "two iBOT iterations with drop path 0.1 match PyTorch fed the same per-sample keep draws",
  ignore: !torchAvailable(),
  async fn() {
    await compareSteps({
      sharedHead: true,
      teacherSharedHead: true,
      patchOutDim: OUT_DIM,
      normLastLayer: true,
      clipGrad: 3,
      epoch: 0,
      freezeLastLayer: 0,
      dropPath: 0.1,
    }, 4);
  },
});

import { assert, assertCloseToScale } from "../assert.ts";
import type { ParamSpec, TensorData } from "../../lib/graph/graph.ts";
import { shapeSize } from "../../lib/graph/tensor.ts";
import { addAdamWMoments, expAvgName, expAvgSqName } from "../../lib/optim/adamw.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import type { NamedTensor } from "../../lib/runtime/named_tensor.ts";
import { CompiledGraph } from "../../lib/runtime/session.ts";
import { nextStateName, StateStore } from "../../lib/runtime/store.ts";
import { fillMaskInputs } from "../../lib/train/batch_inputs.ts";
import {
  buildIbotStep,
  CENTER_NAMES,
  type IbotStepConfig,
  STEP_INPUTS,
  STEP_OUTPUTS,
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

/** What varies between the cases: head sharing, last-layer handling, clipping, epoch. */
interface StepCase {
  readonly sharedHead: boolean;
  readonly teacherSharedHead: boolean;
  readonly patchOutDim: number;
  readonly normLastLayer: boolean;
  readonly clipGrad: number;
  readonly epoch: number;
  readonly freezeLastLayer: number;
}

/**
 * Checks a parameter after one step against the reference, given the reference's first moment
 * (0.1 × the clipped gradient) of the student parameter behind it when AdamW stepped one, and
 * returns how many entries were undetermined.
 *
 * Adam's first step moves each entry by lr·g/(|g| + 1e-8), about lr however small g is. Where
 * |g| is below 1e-5 of the tensor's largest gradient (the accuracy asked of the gradients
 * themselves), float32 does not determine that step's size or sign, so there the two may differ
 * by up to 2·lr·share more (share: 1 for the student, 1 − momentum for the teacher, which gets
 * the student's step through the EMA). This covers the key part of every `qkv.bias`, whose true
 * gradient is 0 because it cannot change the softmax (1e-19 in PyTorch's float64, 1e-10 here),
 * and the few entries whose gradient happens to be 1e-7 of the tensor's largest. Every entry must
 * agree to 1e-5 of the tensor's scale besides.
 */
function assertParameter(
  name: string,
  ours: Float32Array,
  theirs: Float64Array,
  moment: Float64Array | undefined,
  share: number,
): number {
  assert.equal(ours.length, theirs.length, name);
  const scale = theirs.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  const largest = moment?.reduce((m, v) => Math.max(m, Math.abs(v)), 0) ?? 0;
  let undetermined = 0;
  for (let i = 0; i < theirs.length; i++) {
    const loose = moment !== undefined && Math.abs(moment[i]) < 1e-5 * largest;
    if (loose) undetermined++;
    const bound = 1e-5 * scale + (loose ? 2 * LR * share : 0);
    assert(
      Math.abs(ours[i] - theirs[i]) <= bound,
      `${name}[${i}]: ${ours[i]} differs from the reference ${theirs[i]} by more than ${bound}`,
    );
  }
  return undetermined;
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

function stepConfig(c: StepCase, maskSlots: number): IbotStepConfig {
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
    dropPath: 0,
    clipGrad: c.clipGrad,
    lambda1: LAMBDA1,
    lambda2: LAMBDA2,
  };
}

/**
 * `ibot_torch.py step` on the same state (student, teacher, centres), crops and masks as our
 * step's feeds, under the official names; returns its outputs.
 */
async function referenceStep(
  c: StepCase,
  feeds: Record<string, TensorData>,
  params: readonly ParamSpec[],
  masks: readonly Uint8Array[],
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
  for (const p of params) tensors[p.name] = f32(feeds[p.name] as Float32Array, p.shape);
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
  return await runTorchReference("ibot_torch.py", ["step"], tensors);
}

/**
 * Runs one iteration of our step and of `ibot_torch.py step` from the same random state, crops
 * and masks, and compares everything the iteration produces.
 */
async function compareOneStep(c: StepCase, seed: number): Promise<void> {
  const rng = new Rng(seed);
  const masks = randomMasks(rng);
  const slots = Math.max(...masks.map((m) => m.reduce((a, b) => a + b, 0)));
  const step = buildIbotStep(stepConfig(c, slots));
  const session = await CompiledGraph.create(step.graph);

  // The official init plus noise, so that no parameter sits at a special value; the teacher is
  // the student plus a little noise (as after some training), so that the teacher's and the
  // student's predictions agree on some images and "acc" is informative.
  const store = StateStore.fromParams(step.graph.params, seed);
  for (const name of store.names()) {
    store.get(name).forEach((v, i, a) => (a[i] = v + 0.1 * rng.normal()));
  }
  for (const name of store.names().filter((n) => n.startsWith(`${TEACHER}.`))) {
    const source = store.get(`${STUDENT}.${name.slice(TEACHER.length + 1)}`);
    store.get(name).forEach((_, i, a) => (a[i] = source[i] + 0.01 * rng.normal()));
  }
  addAdamWMoments(store, step.trainable);

  const feeds: Record<string, TensorData> = {};
  for (const name of store.names()) feeds[name] = store.get(name);
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
  fillMaskInputs(feeds, masks, slots, PATCHES);
  const lastLayerActive = c.epoch >= c.freezeLastLayer ? 1 : 0;
  const scalars: Record<string, number> = {
    lr: LR,
    weight_decay: WEIGHT_DECAY,
    step: 1,
    [STEP_INPUTS.momentum]: MOMENTUM,
    [STEP_INPUTS.teacherTemp]: TEACHER_TEMP,
    [STEP_INPUTS.teacherPatchTemp]: TEACHER_PATCH_TEMP,
    [STEP_INPUTS.lastLayerActive]: lastLayerActive,
    [STEP_INPUTS.lastLayerStep]: 1,
  };
  for (const [name, value] of Object.entries(scalars)) (feeds[name] as Float32Array)[0] = value;
  const out = await session.run(feeds);

  const params = step.graph.params.filter((p) =>
    p.name.startsWith(`${STUDENT}.`) || p.name.startsWith(`${TEACHER}.`)
  );
  const reference = await referenceStep(c, feeds, params, masks);
  const ref = float64Reader(reference);

  for (const name of STEP_OUTPUTS) {
    assertCloseToScale((out[name] as Float32Array)[0], ref(name)[0], name);
  }
  assertCloseToScale(
    out[nextStateName(CENTER_NAMES.center)] as Float32Array,
    ref("center"),
    "center",
  );
  assertCloseToScale(
    out[nextStateName(CENTER_NAMES.center2)] as Float32Array,
    ref("center2"),
    "center2",
  );

  // Same parameter names on both sides, in order (the reference lists a shared module once).
  const names = [...reference.keys()];
  for (const network of [STUDENT, TEACHER]) {
    const ofNetwork = (n: string) => n.startsWith(`${network}.`);
    assert.deepEqual(names.filter(ofNetwork), params.map((p) => p.name).filter(ofNetwork));
  }
  const updated = (name: string) =>
    (out[nextStateName(name)] as Float32Array | undefined) ?? store.get(name);
  let entries = 0;
  let undetermined = 0;
  for (const p of params) {
    const isStudent = p.name.startsWith(`${STUDENT}.`);
    const studentName = isStudent ? p.name : `${STUDENT}.${p.name.slice(TEACHER.length + 1)}`;
    const moment = reference.get(expAvgName(studentName))?.data as Float64Array | undefined;
    const share = isStudent ? 1 : 1 - MOMENTUM;
    const loose = assertParameter(p.name, updated(p.name), ref(p.name), moment, share);
    if (isStudent) {
      entries += shapeSize(p.shape);
      undetermined += loose;
    }
  }
  assert(undetermined <= 0.01 * entries, `${undetermined} of ${entries} entries undetermined`);

  // Moments of every parameter AdamW stepped; frozen ones have none and stay zero, untouched.
  const stepped = step.trainable.filter((n) => lastLayerActive || !n.includes("last_layer"));
  assert.deepEqual(names.filter((n) => n.startsWith("exp_avg.")), stepped.map(expAvgName));
  assert.deepEqual(names.filter((n) => n.startsWith("exp_avg_sq.")), stepped.map(expAvgSqName));
  for (const name of stepped) {
    for (const moment of [expAvgName(name), expAvgSqName(name)]) {
      assertCloseToScale(out[nextStateName(moment)] as Float32Array, ref(moment), moment);
    }
  }
  if (c.clipGrad > 0) {
    const norms = stepped.map((n) => Math.hypot(...ref(expAvgName(n))));
    const limit = 0.1 * c.clipGrad; // exp_avg = (1 − β₁)·g after one step
    assert(norms.some((n) => Math.abs(n - limit) < 1e-6), "some gradients are clipped");
    assert(norms.some((n) => n < limit - 1e-3), "some gradients are not clipped");
  }
  for (const name of step.trainable.filter((n) => !stepped.includes(n))) {
    assert.deepEqual(out[nextStateName(name)], store.get(name), `${name} is frozen`);
    for (const moment of [expAvgName(name), expAvgSqName(name)]) {
      assert((out[nextStateName(moment)] as Float32Array).every((v) => v === 0), moment);
    }
  }
}

Deno.test({
  name: "one iBOT step with a shared head, trainable weight_g and clipping matches PyTorch",
  ignore: !torchAvailable(),
  async fn() {
    await compareOneStep({
      sharedHead: true,
      teacherSharedHead: true,
      patchOutDim: OUT_DIM,
      normLastLayer: false,
      clipGrad: 3,
      epoch: 0,
      freezeLastLayer: 0,
    }, 1);
  },
});

Deno.test({
  name: "one iBOT step with a separate student head, a shared teacher head and fixed weight_g " +
    "matches PyTorch",
  ignore: !torchAvailable(),
  async fn() {
    await compareOneStep({
      sharedHead: false,
      teacherSharedHead: true,
      patchOutDim: OUT_DIM,
      normLastLayer: true,
      clipGrad: 0,
      epoch: 0,
      freezeLastLayer: 0,
    }, 2);
  },
});

Deno.test({
  name: "one iBOT step in a frozen-last-layer epoch leaves both last layers untouched as PyTorch",
  ignore: !torchAvailable(),
  async fn() {
    await compareOneStep({
      sharedHead: false,
      teacherSharedHead: false,
      patchOutDim: 24,
      normLastLayer: false,
      clipGrad: 3,
      epoch: 0,
      freezeLastLayer: 1,
    }, 3);
  },
});

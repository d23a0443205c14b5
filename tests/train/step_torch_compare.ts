/**
 * Compares iterations of our iBOT training step with the PyTorch reference's (`ibot_torch.py step`
 * for a ViT, `swin_torch.py step` for a Swin) from the same state, crops, masks and drop-path
 * draws: the statistics, every updated parameter, the AdamW moments and the centres.
 *
 * @module
 */

import { assert, assertCloseToScale } from "../assert.ts";
import type { ParamSpec, TensorData } from "../../lib/graph/graph.ts";
import { shapeSize } from "../../lib/graph/tensor.ts";
import {
  backboneBlocks,
  type BackboneConfig,
  isSwin,
  patchGrid,
} from "../../lib/models/backbone.ts";
import { addAdamWMoments, expAvgName, expAvgSqName } from "../../lib/optim/adamw.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import type { NamedTensor } from "../../lib/runtime/named_tensor.ts";
import { CompiledGraph } from "../../lib/runtime/session.ts";
import { StateStore } from "../../lib/runtime/store.ts";
import { countMasked, fillMaskInputs, fillStepDropPath } from "../../lib/train/batch_inputs.ts";
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
import { f32, f64, float64Reader, i64, runTorchReference } from "../reference/torch.ts";

/** CLS prototypes (`out_dim`) of the compared heads (MLP 48 → 16 wide). */
export const OUT_DIM = 32;
const [HEAD_HIDDEN, HEAD_BOTTLENECK] = [48, 16];
const [GLOBAL_CROPS, LOCAL_CROPS] = [2, 2];
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

/** The network and the batch of a comparison (two global and two local crops per image). */
export interface StepModel {
  /** The backbone of both networks; a Swin's `dropPathRate` is ignored (the case's is used). */
  readonly backbone: BackboneConfig;
  /** Images per crop. */
  readonly batch: number;
  /** Side of the global crops in pixels. */
  readonly globalSize: number;
  /** Side of the local crops in pixels. */
  readonly localSize: number;
  /**
   * Std of the noise added to every entry of the official init (the teacher is the student plus
   * N(0, 0.01²)); small enough that float32 agrees with float64 to 1e-5 of scale.
   */
  readonly noise: number;
}

/** What varies between the cases: head sharing, last-layer handling, clipping, epoch, drop path. */
export interface StepCase {
  /** The student's `shared_head`. */
  readonly sharedHead: boolean;
  /** The teacher's `shared_head_teacher`. */
  readonly teacherSharedHead: boolean;
  /** Patch prototypes (`patch_out_dim`). */
  readonly patchOutDim: number;
  /** Student last-layer gains frozen at 1. */
  readonly normLastLayer: boolean;
  /** Per-tensor gradient clip; 0 disables. */
  readonly clipGrad: number;
  /** The epoch of both iterations. */
  readonly epoch: number;
  /** Epochs during which the last layer is frozen. */
  readonly freezeLastLayer: number;
  /** The student's stochastic-depth rate (a Swin's factory rate). */
  readonly dropPath: number;
}

/** One iteration's drop-path scales as our step takes them, [blocks, 2, rows] per crop kind. */
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

/**
 * Random masks of `rows` global-crop rows of `patches` patches, crop-major; row 0 masks patch 5
 * (its last on grids of fewer patches), row 1 none.
 */
function randomMasks(rows: number, patches: number, rng: Rng): Uint8Array[] {
  const masks = Array.from(
    { length: rows },
    () => Uint8Array.from({ length: patches }, () => (rng.uniform() < 0.35 ? 1 : 0)),
  );
  masks[0][Math.min(5, patches - 1)] = 1;
  masks[1].fill(0);
  return masks;
}

/** The step for masks of at most `maskSlots` masked patches per crop, with `slots` slots. */
function stepConfig(
  model: StepModel,
  c: StepCase,
  maskSlots: number,
  slots: number,
): IbotStepConfig {
  return {
    backbone: model.backbone,
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
    batch: model.batch,
    globalCrops: GLOBAL_CROPS,
    globalSize: model.globalSize,
    localCrops: LOCAL_CROPS,
    localSize: model.localSize,
    maskSlots,
    slots,
    dropPath: c.dropPath,
    clipGrad: c.clipGrad,
    lambda1: LAMBDA1,
    lambda2: LAMBDA2,
  };
}

/** The reference script of `backbone` and its inputs describing it at drop-path rate `dropPath`. */
function referenceBackbone(
  backbone: BackboneConfig,
  dropPath: number,
): { script: string; tensors: Record<string, NamedTensor> } {
  if (!isSwin(backbone)) {
    return {
      script: "ibot_torch.py",
      tensors: {
        embed_dim: i64(backbone.embedDim),
        depth: i64(backbone.depth),
        heads: i64(backbone.heads),
        patch_size: i64(backbone.patchSize),
        img_size: i64(backbone.imgSize),
        drop_path: f64(dropPath),
      },
    };
  }
  const vector = (values: readonly number[]): NamedTensor => ({
    dtype: "int64",
    shape: [values.length],
    data: BigInt64Array.from(values, BigInt),
  });
  return {
    script: "swin_torch.py",
    tensors: {
      embed_dim: i64(backbone.embedDim),
      depths: vector(backbone.depths),
      heads: vector(backbone.heads),
      window_size: i64(backbone.windowSize),
      img_size: i64(backbone.imgSize),
      drop_path_rate: f64(dropPath),
    },
  };
}

/**
 * The reference's {@link ITERATIONS} iterations from the same state (student, teacher, centres,
 * AdamW after one step), crops, masks and drop-path draws as our step's feeds, under the official
 * names; returns its outputs.
 */
async function referenceSteps(
  model: StepModel,
  c: StepCase,
  feeds: Record<string, TensorData>,
  params: readonly ParamSpec[],
  masks: readonly Uint8Array[],
  dropPaths: readonly DropPathDraws[],
): Promise<Map<string, NamedTensor>> {
  const { batch, globalSize, localSize } = model;
  const blocks = backboneBlocks(model.backbone);
  const { script, tensors: backbone } = referenceBackbone(model.backbone, c.dropPath);
  const tensors: Record<string, NamedTensor> = {
    ...backbone,
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
    { data: feeds[STEP_INPUTS.globals] as Float32Array, count: GLOBAL_CROPS, size: globalSize },
    { data: feeds[STEP_INPUTS.locals] as Float32Array, count: LOCAL_CROPS, size: localSize },
  ];
  let crop = 0;
  for (const { data, count, size } of crops) {
    const n = batch * 3 * size * size;
    for (let i = 0; i < count; i++) {
      tensors[`crops.${crop++}`] = f32(data.subarray(i * n, (i + 1) * n), [batch, 3, size, size]);
    }
  }
  const patches = masks[0].length;
  for (let i = 0; i < GLOBAL_CROPS; i++) {
    const rows = masks.slice(i * batch, (i + 1) * batch);
    tensors[`masks.${i}`] = f32(Float32Array.from(rows.flatMap((m) => [...m])), [batch, patches]);
  }
  dropPaths.forEach(({ global, local }, k) => {
    tensors[`drop_path.${k}.global`] = f32(global, [blocks, 2, GLOBAL_CROPS * batch]);
    tensors[`drop_path.${k}.local`] = f32(local, [blocks, 2, LOCAL_CROPS * batch]);
  });
  return await runTorchReference(script, ["step"], tensors);
}

/**
 * Runs {@link ITERATIONS} iterations of our step and of the reference's from the same random
 * state, crops, masks and drop-path draws, and compares everything the iterations produce: the
 * last iteration's statistics, and the final parameters, moments and centres, each to 1e-5 of
 * its scale.
 */
export async function compareSteps(
  model: StepModel,
  c: StepCase,
  seed: number,
): Promise<void> {
  const { batch, globalSize } = model;
  const rng = new Rng(seed);
  const patches = (globalSize / patchGrid(model.backbone)) ** 2;
  const masks = randomMasks(GLOBAL_CROPS * batch, patches, rng);
  // The bucket the trainer would pick: it pads the batch's masked patches with some slots.
  const maskSlots = Math.max(...masks.map((m) => countMasked([m])));
  const slots = pickSlotBucket(
    slotBuckets(GLOBAL_CROPS * batch * maskSlots),
    countMasked(masks),
  );
  assert(slots > countMasked(masks), "the slots include padding");
  const config = stepConfig(model, c, maskSlots, slots);
  const step = buildIbotStep(config);
  const session = await CompiledGraph.create(step.graph);

  // The official init plus noise, so that no parameter sits at a special value; the teacher is
  // the student plus a little noise (as after some training), so that the teacher's and the
  // student's predictions agree on some images and "acc" is informative. AdamW has taken one
  // step, except for a frozen last layer.
  const store = StateStore.fromParams(step.graph.params, seed);
  for (const name of store.names()) {
    store.get(name).forEach((v, i, a) => (a[i] = v + model.noise * rng.normal()));
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
  fillMaskInputs(feeds, masks, slots, patches);
  for (const input of step.graph.inputs) {
    if (feeds[input.name]) continue;
    const n = shapeSize(input.shape);
    feeds[input.name] = input.dtype === "int64"
      ? new BigInt64Array(n)
      : Float32Array.from({ length: n }, () => rng.normal());
  }
  // Global crop 1 is a slightly different view of the same images as crop 0.
  const globals = feeds[STEP_INPUTS.globals] as Float32Array;
  const cropSize = batch * 3 * globalSize * globalSize;
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
    if (c.dropPath > 0) dropPaths.push(drawDropPath(config, feeds, rng));
    out = await session.run(feeds);
    store.commitNext(out as Record<string, Float32Array>, step.updatedState);
  }

  const params = step.graph.params.filter((p) =>
    p.name.startsWith(`${STUDENT}.`) || p.name.startsWith(`${TEACHER}.`)
  );
  const reference = await referenceSteps(model, c, referenceFeeds, params, masks, dropPaths);
  const ref = float64Reader(reference);

  for (const name of STEP_OUTPUTS) {
    assertCloseToScale((out[name] as Float32Array)[0], ref(name)[0], name);
  }
  assert(ref("patch")[0] > 0, "the patch term is on");
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
    const norms = stepped.map((n) => l2(ref(`grad.0.${n}`)));
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
function drawDropPath(
  config: IbotStepConfig,
  feeds: Record<string, TensorData>,
  rng: Rng,
): DropPathDraws {
  fillStepDropPath(feeds, config, rng);
  const global = feeds[STEP_INPUTS.dropPathGlobal] as Float32Array;
  const local = feeds[STEP_INPUTS.dropPathLocal] as Float32Array;
  const scales = [...global, ...local];
  assert(scales.includes(0) && scales.some((s) => s > 1), "some rows are dropped, some kept");
  return { global: global.slice(), local: local.slice() };
}

/** The Euclidean norm of `values`. */
function l2(values: Float64Array): number {
  let sum = 0;
  for (const v of values) sum += v * v;
  return Math.sqrt(sum);
}

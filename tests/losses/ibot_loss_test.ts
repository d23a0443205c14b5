import { assert, assertCloseToScale } from "../assert.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { mean } from "../../lib/graph/reduce.ts";
import { ibotLoss, updateCenters } from "../../lib/losses/ibot.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { CompiledGraph } from "../../lib/runtime/session.ts";
import { f32, f64, float64Reader, runTorchReference, torchAvailable } from "../reference/torch.ts";

const [B, N, K, KP] = [4, 9, 16, 16];
const TEACHER_TEMP = 0.04;
const TEACHER_PATCH_TEMP = 0.07;
const LAMBDA1 = 1;
const LAMBDA2 = 0.5;

/** Random loss inputs for G global and Lc local crops of B images each. */
interface LossCase {
  readonly globalCrops: number;
  readonly localCrops: number;
  /** [(G + Lc)·B, K]. */
  readonly studentCls: Float32Array;
  /** [G·B, N, Kp]. */
  readonly studentPatch: Float32Array;
  /** [G·B, K]. */
  readonly teacherCls: Float32Array;
  /** [G·B, N, Kp]. */
  readonly teacherPatch: Float32Array;
  /** [G·B, N], 0/1; the second image of crop 0 has no masked patch. */
  readonly masks: Float32Array;
  /** [1, K] and [1, 1, Kp]. */
  readonly center: Float32Array;
  readonly center2: Float32Array;
}

/** The patch slots our loss consumes: S slots across the batch, each with its weight. */
interface Slots {
  readonly count: number;
  /** [S, Kp]. */
  readonly student: Float32Array;
  readonly teacher: Float32Array;
  /** [S]. */
  readonly weights: Float32Array;
}

interface LossValues {
  readonly loss: number;
  readonly cls: number;
  readonly patch: number;
  readonly center: ArrayLike<number>;
  readonly center2: ArrayLike<number>;
}

function randomCase(globalCrops: number, localCrops: number, seed: number): LossCase {
  const rng = new Rng(seed);
  const rows = globalCrops * B;
  const values = (n: number, std: number) =>
    Float32Array.from({ length: n }, () => std * rng.normal());
  const masks = Float32Array.from({ length: rows * N }, () => (rng.uniform() < 0.4 ? 1 : 0));
  masks.fill(0, N, 2 * N);
  masks[0] = 1;
  return {
    globalCrops,
    localCrops,
    studentCls: values((globalCrops + localCrops) * B * K, 1),
    studentPatch: values(rows * N * KP, 1),
    teacherCls: values(rows * K, 0.3),
    teacherPatch: values(rows * N * KP, 0.3),
    masks,
    center: values(K, 0.1),
    center2: values(KP, 0.1),
  };
}

/**
 * The weight of a masked patch of `row` in the patch term: 1 / (max(masked count of the row, 1)
 * · rows), the official mean over the row's masked patches, then over the rows.
 */
function maskedWeight(c: LossCase, row: number): number {
  const count = c.masks.subarray(row * N, (row + 1) * N).reduce((a, b) => a + b, 0);
  return 1 / (Math.max(1, count) * c.globalCrops * B);
}

/** Every patch is a slot, weighted by its mask: the official formula as is. */
function allPatchSlots(c: LossCase): Slots {
  const rows = c.globalCrops * B;
  const weights = Float32Array.from(
    { length: rows * N },
    (_, k) => c.masks[k] * maskedWeight(c, Math.floor(k / N)),
  );
  return { count: rows * N, student: c.studentPatch, teacher: c.teacherPatch, weights };
}

/**
 * Only the masked patches, row by row, then `padding` zero-weight slots holding large random
 * logits (which must not matter).
 */
function maskedPatchSlots(c: LossCase, padding: number, seed: number): Slots {
  const rng = new Rng(seed);
  const rows = c.globalCrops * B;
  const count = c.masks.reduce((a, b) => a + b, 0) + padding;
  const student = Float32Array.from({ length: count * KP }, () => 5 * rng.normal());
  const teacher = Float32Array.from({ length: count * KP }, () => 5 * rng.normal());
  const weights = new Float32Array(count);
  let slot = 0;
  for (let r = 0; r < rows; r++) {
    for (let n = 0; n < N; n++) {
      if (!c.masks[r * N + n]) continue;
      const from = (r * N + n) * KP;
      student.set(c.studentPatch.subarray(from, from + KP), slot * KP);
      teacher.set(c.teacherPatch.subarray(from, from + KP), slot * KP);
      weights[slot] = maskedWeight(c, r);
      slot++;
    }
  }
  assert(count < rows * N, "the gathered case must be smaller than all patches");
  return { count, student, teacher, weights };
}

/** Our in-graph loss and centre update on the slots; the patch centre uses all patches. */
async function ours(c: LossCase, slots: Slots): Promise<LossValues> {
  const g = new Graph("ibot_loss");
  const rows = c.globalCrops * B;
  const S = slots.count;
  const input = (name: string, shape: number[]) => g.input(name, "float32", shape);
  const teacherCls = input("teacher_cls", [rows, K]);
  const teacherPatchAll = input("teacher_patch_all", [rows, N, KP]);
  const center = input("center", [1, K]);
  const center2 = input("center2", [1, 1, KP]);
  const terms = ibotLoss({
    studentCls: input("student_cls", [(c.globalCrops + c.localCrops) * B, K]),
    studentPatch: input("student_slots", [S, KP]),
    teacherCls,
    teacherPatch: input("teacher_slots", [S, KP]),
    slotWeights: input("slot_weights", [S]),
    center,
    center2,
    teacherTemp: input("teacher_temp", []),
    teacherPatchTemp: input("teacher_patch_temp", []),
    globalCrops: c.globalCrops,
    lambda1: LAMBDA1,
    lambda2: LAMBDA2,
  });
  const centers = updateCenters(center, center2, teacherCls, mean(teacherPatchAll, [1]));
  g.output("loss", terms.loss);
  g.output("cls", terms.cls);
  g.output("patch", terms.patch);
  g.output("center.next", centers.center);
  g.output("center2.next", centers.center2);
  const session = await CompiledGraph.create(g);
  const out = await session.run({
    teacher_cls: c.teacherCls,
    teacher_patch_all: c.teacherPatch,
    center: c.center,
    center2: c.center2,
    student_cls: c.studentCls,
    student_slots: slots.student,
    teacher_slots: slots.teacher,
    slot_weights: slots.weights,
    teacher_temp: Float32Array.of(TEACHER_TEMP),
    teacher_patch_temp: Float32Array.of(TEACHER_PATCH_TEMP),
  });
  const scalar = (name: string) => (out[name] as Float32Array)[0];
  return {
    loss: scalar("loss"),
    cls: scalar("cls"),
    patch: scalar("patch"),
    center: (out["center.next"] as Float32Array).slice(),
    center2: (out["center2.next"] as Float32Array).slice(),
  };
}

/** `ibot_torch.py loss` on the same inputs (all patches with the mask, as the official loss). */
async function reference(c: LossCase): Promise<LossValues> {
  const rows = c.globalCrops * B;
  const get = float64Reader(
    await runTorchReference("ibot_torch.py", ["loss"], {
      student_cls: f32(c.studentCls, [(c.globalCrops + c.localCrops) * B, K]),
      student_patch: f32(c.studentPatch, [rows, N, KP]),
      teacher_cls: f32(c.teacherCls, [rows, K]),
      teacher_patch: f32(c.teacherPatch, [rows, N, KP]),
      masks: f32(c.masks, [rows, N]),
      center: f32(c.center, [1, K]),
      center2: f32(c.center2, [1, 1, KP]),
      n_global: f64(c.globalCrops),
      teacher_temp: f64(TEACHER_TEMP),
      teacher_patch_temp: f64(TEACHER_PATCH_TEMP),
      lambda1: f64(LAMBDA1),
      lambda2: f64(LAMBDA2),
    }),
  );
  return {
    loss: get("loss")[0],
    cls: get("cls")[0],
    patch: get("patch")[0],
    center: get("center"),
    center2: get("center2"),
  };
}

function assertMatches(actual: LossValues, expected: LossValues): void {
  assertCloseToScale(actual.loss, expected.loss, "loss");
  assertCloseToScale(actual.cls, expected.cls, "cls");
  assertCloseToScale(actual.patch, expected.patch, "patch");
  assertCloseToScale(actual.center, expected.center, "center");
  assertCloseToScale(actual.center2, expected.center2, "center2");
}

Deno.test({
  name: "iBOT loss with every patch as a slot matches the official loss and centre update",
  ignore: !torchAvailable(),
  async fn() {
    const c = randomCase(2, 3, 1);
    const expected = await reference(c);
    assert(expected.cls > 0 && expected.patch > 0, "both terms are non-trivial");
    assertMatches(await ours(c, allPatchSlots(c)), expected);
  },
});

Deno.test({
  name: "iBOT loss on only the masked patches, padded with zero-weight slots, is the same loss",
  ignore: !torchAvailable(),
  async fn() {
    const c = randomCase(2, 3, 2);
    const expected = await reference(c);
    const gathered = await ours(c, maskedPatchSlots(c, 5, 3));
    assertMatches(gathered, expected);
    assertMatches(gathered, await ours(c, allPatchSlots(c)));
    assertMatches(await ours(c, maskedPatchSlots(c, 0, 4)), expected);
  },
});

Deno.test({
  name:
    "iBOT loss with one global and no local crop: cls is 0 where the official code divides 0 by 0",
  ignore: !torchAvailable(),
  async fn() {
    // The official loss has no cross-view pair here and fails with 0 / 0 (ZeroDivisionError).
    const alone = randomCase(1, 0, 4);
    await assert.rejects(reference(alone), /ZeroDivisionError/);
    // The patch term and the centres do not depend on local crops: add one for the reference.
    const rng = new Rng(5);
    const localCls = Array.from({ length: B * K }, () => rng.normal());
    const withLocal = {
      ...alone,
      localCrops: 1,
      studentCls: Float32Array.of(...alone.studentCls, ...localCls),
    };
    const expected = await reference(withLocal);
    assertMatches(await ours(withLocal, allPatchSlots(withLocal)), expected);
    const got = await ours(alone, allPatchSlots(alone));
    assert(got.cls === 0, `cls is ${got.cls}`);
    assert.equal(got.loss, got.patch);
    assertCloseToScale(got.patch, expected.patch, "patch");
    assertCloseToScale(got.center, expected.center, "center");
    assertCloseToScale(got.center2, expected.center2, "center2");
  },
});

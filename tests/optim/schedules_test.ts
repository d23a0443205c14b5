import { assert, assertClose } from "../assert.ts";
import {
  cosineSchedule,
  linspace,
  scaledLearningRate,
  teacherTemperatureSchedule,
} from "../../lib/optim/schedules.ts";

function isIncreasing(values: ArrayLike<number>): boolean {
  for (let i = 1; i < values.length; i++) {
    if (!(values[i] > values[i - 1])) return false;
  }
  return true;
}

Deno.test("linspace follows numpy: both end points included, num = 1 gives [start]", () => {
  assert.deepEqual(Array.from(linspace(0, 1, 5)), [0, 0.25, 0.5, 0.75, 1]);
  assert.deepEqual(Array.from(linspace(0.04, 0.07, 1)), [0.04]);
  assert.deepEqual(Array.from(linspace(0.04, 0.07, 0)), []);
  assert.deepEqual(Array.from(linspace(2, 2, 3)), [2, 2, 2]);
  // np.linspace(0, 0.3, 7) computes i·step + start (0.24999999999999997, not 0.25) and sets the
  // last value to stop.
  assert.deepEqual(Array.from(linspace(0, 0.3, 7)), [
    0,
    0.049999999999999996,
    0.09999999999999999,
    0.15,
    0.19999999999999998,
    0.24999999999999997,
    0.3,
  ]);
  assert.throws(() => linspace(0, 1, -1), /non-negative integer/);
});

Deno.test("cosineSchedule reproduces utils.cosine_scheduler's worked example", () => {
  const expected = [0, .3333, .6667, 1, 1, .9657, .8682, .7222, .55, .3778, .2318, .1343];
  const schedule = cosineSchedule(1, 0.1, 3, 4, 1);
  assertClose(schedule, expected, 0, 1e-4, "schedule");
  assert.equal(schedule[3], 1, "the last warm-up value is base");
  assert.equal(schedule[4], 1, "the first cosine value is base too");
});

Deno.test("cosineSchedule warms up linearly from startWarmupValue", () => {
  const schedule = cosineSchedule(0.3, 0.01, 7, 3, 2, 0.05);
  assert.equal(schedule.length, 21);
  assertClose(schedule.subarray(0, 6), [0.05, 0.1, 0.15, 0.2, 0.25, 0.3], 0, 1e-15, "warm-up");
  assert.equal(schedule[6], 0.3);
});

Deno.test("learning rate: peak scaled by total batch / 256, warm-up from 0, ends above min_lr", () => {
  const peak = scaledLearningRate(0.0005, 1024);
  assertClose([peak], [0.002], 1e-12, 0, "peak");
  const schedule = cosineSchedule(peak, 1e-6, 100, 50, 10);
  assert.equal(schedule.length, 5000);
  assert.equal(schedule[0], 0);
  assert.equal(schedule[499], peak);
  assert.equal(schedule[500], peak);
  assert(isIncreasing(schedule.subarray(0, 500)));
  assert(schedule[4999] > 1e-6 && schedule[4999] < 1.01e-6, `last lr ${schedule[4999]}`);
});

Deno.test("teacher momentum rises from 0.996 monotonically toward 1", () => {
  const epochs = 100;
  const niter = 50;
  const schedule = cosineSchedule(0.996, 1, epochs, niter);
  const total = epochs * niter;
  assert.equal(schedule[0], 0.996);
  assert(isIncreasing(schedule), "the momentum increases every iteration");
  assert(schedule[total - 1] < 1 && schedule[total - 1] > 0.99999, "it approaches 1");
  const formula = Array.from(
    { length: total },
    (_, it) => 1 - (1 - 0.996) * 0.5 * (1 + Math.cos(Math.PI * it / total)),
  );
  assertClose(schedule, formula, 0, 1e-15, "momentum");
});

Deno.test("weight decay rises from 0.04 toward 0.4", () => {
  const schedule = cosineSchedule(0.04, 0.4, 100, 50);
  assertClose([schedule[0]], [0.04], 0, 1e-15, "first wd");
  assert(isIncreasing(schedule), "the weight decay increases every iteration");
  assert(schedule[4999] < 0.4 && schedule[4999] > 0.3999, `last wd ${schedule[4999]}`);
});

Deno.test("cosineSchedule rejects a warm-up longer than the run", () => {
  assert.throws(() => cosineSchedule(1, 0, 3, 4, 4), /exceeds/);
  assert.throws(() => cosineSchedule(1, 0, 2.5, 4), /non-negative integer/);
});

Deno.test("teacher temperatures: CLS warm-up and the patch warm-up delayed by pred_start_epoch", () => {
  const cls = teacherTemperatureSchedule(0.04, 0.07, 3, 10);
  assertClose(cls, [0.04, 0.055, 0.07, 0.07, 0.07, 0.07, 0.07, 0.07, 0.07, 0.07], 0, 1e-15, "cls");
  const patch = teacherTemperatureSchedule(0.04, 0.07, 3, 10, 2);
  assertClose(patch, [0.04, 0.04, 0.04, 0.055, 0.07, 0.07, 0.07, 0.07, 0.07, 0.07], 0, 1e-15, "p");
  assert.equal(cls[2], 0.07, "linspace includes its end point");
});

Deno.test("teacher temperatures for a long run: 30 warm-up epochs starting at epoch 50", () => {
  const patch = teacherTemperatureSchedule(0.04, 0.07, 30, 800, 50);
  assert.equal(patch.length, 800);
  assert(patch.subarray(0, 51).every((t) => t === 0.04), "warm value through epoch 50");
  assertClose([patch[60]], [0.04 + 0.03 * 10 / 29], 0, 1e-15, "epoch 60");
  assert(patch.subarray(79).every((t) => t === 0.07), "final value from epoch 79");
  assert.deepEqual(
    teacherTemperatureSchedule(0.04, 0.07, 30, 800, 0),
    teacherTemperatureSchedule(0.04, 0.07, 30, 800),
  );
});

Deno.test("teacher temperatures need at least warm-up + start epochs, like numpy", () => {
  assert.throws(() => teacherTemperatureSchedule(0.04, 0.07, 3, 4, 2), /at least 5 epochs/);
  assert.throws(() => teacherTemperatureSchedule(0.04, 0.07, 30, 20), /at least 30 epochs/);
  assert.equal(teacherTemperatureSchedule(0.04, 0.07, 3, 5, 2).length, 5);
});

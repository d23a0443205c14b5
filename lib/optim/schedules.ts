/**
 * Host-side training schedules of iBOT: the per-iteration cosine schedules of learning rate,
 * weight decay and teacher momentum (`utils.cosine_scheduler`), the per-epoch teacher
 * temperatures (`iBOTLoss`), and the batch-size scaling of the learning rate. Values follow the
 * official numpy code, including `linspace`'s rounding.
 *
 * @module
 */

/** Throws unless `value` is a non-negative integer. */
function checkCount(value: number, what: string): void {
  if (!Number.isInteger(value) || value < 0) {
    throw new Error(`${what} must be a non-negative integer, got ${value}`);
  }
}

/**
 * `num` evenly spaced values from `start` to `stop`, both included (numpy `linspace`): value i
 * is i·step + start with step = (stop − start)/(num − 1), and the last value is exactly `stop`.
 * `num` = 1 gives [start]; `num` = 0 gives an empty array. Units are those of `start`.
 */
export function linspace(start: number, stop: number, num: number): Float64Array {
  checkCount(num, "linspace num");
  const values = new Float64Array(num);
  if (num === 0) return values;
  const step = num > 1 ? (stop - start) / (num - 1) : 0;
  for (let i = 0; i < num; i++) values[i] = i * step + start;
  if (num > 1) values[num - 1] = stop;
  return values;
}

/**
 * A per-iteration schedule (`utils.cosine_scheduler`), one value per iteration
 * it = epoch · itersPerEpoch + step: a linear warm-up from `startWarmupValue` to `base` over
 * `warmupEpochs` epochs (both ends included), then final + ½(base − final)(1 + cos(π·j/L)) for
 * j = 0…L−1, L being the remaining iterations, so `final` is approached but not reached. Units
 * are those of `base` (a learning rate, a weight decay or an EMA momentum).
 */
export function cosineSchedule(
  base: number,
  final: number,
  epochs: number,
  itersPerEpoch: number,
  warmupEpochs = 0,
  startWarmupValue = 0,
): Float64Array {
  checkCount(epochs, "cosineSchedule epochs");
  checkCount(itersPerEpoch, "cosineSchedule itersPerEpoch");
  checkCount(warmupEpochs, "cosineSchedule warmupEpochs");
  if (warmupEpochs > epochs) {
    throw new Error(`cosineSchedule warm-up (${warmupEpochs} epochs) exceeds ${epochs} epochs`);
  }
  const warmupIters = warmupEpochs * itersPerEpoch;
  const cosineIters = epochs * itersPerEpoch - warmupIters;
  const schedule = new Float64Array(warmupIters + cosineIters);
  schedule.set(linspace(startWarmupValue, base, warmupIters));
  for (let j = 0; j < cosineIters; j++) {
    schedule[warmupIters + j] = final +
      0.5 * (base - final) * (1 + Math.cos(Math.PI * j / cosineIters));
  }
  return schedule;
}

/**
 * A teacher temperature per epoch (`iBOTLoss`; dimensionless, divides the teacher logits):
 * linspace(warm, final, warmupEpochs) then `final`. With `startEpoch` S > 0 (the patch
 * temperature under `--pred_start_epoch`), `warm` is first repeated S times, which delays the
 * warm-up by S epochs. Throws when `epochs` < warmupEpochs + S, where numpy fails as well.
 */
export function teacherTemperatureSchedule(
  warm: number,
  final: number,
  warmupEpochs: number,
  epochs: number,
  startEpoch = 0,
): Float64Array {
  checkCount(warmupEpochs, "teacherTemperatureSchedule warmupEpochs");
  checkCount(epochs, "teacherTemperatureSchedule epochs");
  checkCount(startEpoch, "teacherTemperatureSchedule startEpoch");
  if (epochs < warmupEpochs + startEpoch) {
    throw new Error(
      `teacherTemperatureSchedule needs at least ${warmupEpochs + startEpoch} epochs ` +
        `(${startEpoch} delayed + ${warmupEpochs} warm-up), got ${epochs}`,
    );
  }
  const schedule = new Float64Array(epochs).fill(final);
  schedule.fill(warm, 0, startEpoch);
  schedule.set(linspace(warm, final, warmupEpochs), startEpoch);
  return schedule;
}

/**
 * The peak learning rate for a total batch (images per step over all workers): the reference
 * `lr` for a batch of 256, scaled linearly, lr · totalBatch / 256.
 */
export function scaledLearningRate(lr: number, totalBatch: number): number {
  return lr * totalBatch / 256;
}

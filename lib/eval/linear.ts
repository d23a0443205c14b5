/**
 * Linear probing on frozen features (§6.2): a sweep of linear classifiers (one per learning rate,
 * as `eval_linear_multi.py` does) trained in plain TypeScript. Every classifier is
 * `Linear(dim, numClasses)` with weight ~ N(0, 0.01) and bias 0, trained with SGD (momentum 0.9,
 * PyTorch semantics), cross-entropy loss and a per-epoch cosine annealing of the lr to 0
 * (`CosineAnnealingLR(T_max = epochs, eta_min = 0)`). All classifiers see the same shuffled
 * mini-batches, so a classifier's result does not depend on which other learning rates are swept
 * with it.
 *
 * {@link LinearProbeSweep} holds the classifiers and trains them one epoch at a time on whatever
 * features it is given; two drivers share it:
 * - {@link trainLinearProbes}, the "fast path for small data": features extracted once through the
 *   evaluation transform (no augmentation), the same features every epoch;
 * - {@link trainLinearProbesPerEpoch}, the official protocol: each epoch trains on features of
 *   freshly augmented training images (RandomResizedCrop + flip, see `randomCropBatches` in
 *   `lib/data/loader.ts`), extracted by the caller.
 *
 * @module
 */

import { Rng } from "../runtime/rng.ts";

/** Cached features [n, dim] (row-major) and their labels [n]. */
export interface LabelledFeatures {
  /** [n, dim], row-major. */
  readonly features: Float32Array;
  /** [n] class indices. */
  readonly labels: Int32Array;
}

/** The 45 base learning rates of `eval_linear_multi.py`: {1…9} × {1e-4, 1e-3, 1e-2, 1e-1, 1}. */
export const OFFICIAL_LRS: readonly number[] = [1e-4, 1e-3, 1e-2, 1e-1, 1].flatMap((scale) =>
  [1, 2, 3, 4, 5, 6, 7, 8, 9].map((k) => k * scale)
);

/**
 * The default sweep: {1, 2, 5} × {1e-3, 1e-2, 1e-1} and 1, ten base learning rates spanning the
 * useful part of the official grid at a quarter of its cost.
 */
export const DEFAULT_LRS: readonly number[] = [
  0.001,
  0.002,
  0.005,
  0.01,
  0.02,
  0.05,
  0.1,
  0.2,
  0.5,
  1,
];

/** Options of {@link LinearProbeSweep} and its drivers. */
export interface LinearProbeOptions {
  /** Training epochs (default 100). */
  readonly epochs?: number;
  /** Mini-batch size (default 256); every base lr is scaled by batchSize / 256. */
  readonly batchSize?: number;
  /** Base learning rates of the sweep (default {@link DEFAULT_LRS}). */
  readonly lrs?: readonly number[];
  /** SGD momentum (default 0.9). */
  readonly momentum?: number;
  /** SGD weight decay, applied to weights and biases as PyTorch does (default 0). */
  readonly weightDecay?: number;
  /** Seed of the weight initialisation and of the batch order (default 0). */
  readonly seed?: number;
  /** Validate every `valFreq` epochs (default 1); the last epoch is always validated. */
  readonly valFreq?: number;
  /** Called after each validation with the epoch (1-based) and the per-lr results so far. */
  readonly onEpoch?: (epoch: number, results: readonly LinearProbeResult[]) => void;
}

/** The outcome of one classifier of the sweep. */
export interface LinearProbeResult {
  /** Base learning rate (before the batchSize / 256 scaling). */
  readonly lr: number;
  /** Best top-1 over the validated epochs, in percent. */
  readonly top1: number;
  /** Top-5 of the epoch with the best top-1, in percent. */
  readonly top5: number;
  /** The 1-based epoch of the best top-1 (the first one on ties); 0 before any validation. */
  readonly bestEpoch: number;
}

/** A trained classifier: weight [numClasses, dim] (PyTorch's (out, in) layout) and bias. */
export interface LinearClassifier {
  /** [numClasses, dim], row-major. */
  readonly weight: Float32Array;
  /** [numClasses]. */
  readonly bias: Float32Array;
}

/** The results of a sweep ({@link LinearProbeSweep.report}). */
export interface LinearProbeReport {
  /** One entry per learning rate, in the order given. */
  readonly results: LinearProbeResult[];
  /** The entry with the highest top-1 (the first one on ties). */
  readonly best: LinearProbeResult;
  /** The best classifier's parameters at its best epoch. */
  readonly bestClassifier: LinearClassifier;
  /** Every classifier's parameters after the last epoch, per lr. */
  readonly final: LinearClassifier[];
  /** Mean cross-entropy over the training rows in the last epoch, per lr. */
  readonly finalLoss: number[];
}

function checkData(name: string, data: LabelledFeatures, dim: number, classes: number): number {
  const n = data.labels.length;
  if (data.features.length !== n * dim) {
    throw new Error(
      `${name} features hold ${data.features.length} values, expected ${n} × ${dim}`,
    );
  }
  for (const label of data.labels) {
    if (!Number.isInteger(label) || label < 0 || label >= classes) {
      throw new Error(`${name} label ${label} is outside [0, ${classes})`);
    }
  }
  return n;
}

/** lr of 0-based epoch `epoch` under CosineAnnealingLR(T_max = epochs, eta_min = 0). */
export function cosineLr(baseLr: number, epoch: number, epochs: number): number {
  return baseLr * 0.5 * (1 + Math.cos(Math.PI * epoch / epochs));
}

/** Top-1 and top-5 (percent) of `rows` [n, classes] of logits; ties rank the lower class first. */
function accuracy(
  logits: Float64Array,
  labels: Int32Array,
  classes: number,
  offset: number,
  stride: number,
): { top1: number; top5: number } {
  const n = labels.length;
  if (n === 0) return { top1: 0, top5: 0 };
  let top1 = 0;
  let top5 = 0;
  for (let i = 0; i < n; i++) {
    const base = i * stride + offset;
    const y = labels[i];
    const target = logits[base + y];
    let rank = 0;
    for (let c = 0; c < classes; c++) {
      const v = logits[base + c];
      if (v > target || (v === target && c < y)) rank++;
    }
    if (rank === 0) top1++;
    if (rank < 5) top5++;
  }
  return { top1: 100 * top1 / n, top5: 100 * top5 / n };
}

/** Checks the sweep options; returns them with their defaults. */
function sweepSettings(dim: number, numClasses: number, options: LinearProbeOptions) {
  const settings = {
    epochs: options.epochs ?? 100,
    batchSize: options.batchSize ?? 256,
    lrs: options.lrs ?? DEFAULT_LRS,
    momentum: options.momentum ?? 0.9,
    weightDecay: options.weightDecay ?? 0,
    valFreq: options.valFreq ?? 1,
  };
  if (!Number.isInteger(dim) || dim < 1) throw new Error(`dim must be a positive integer`);
  if (!Number.isInteger(numClasses) || numClasses < 1) {
    throw new Error(`numClasses must be a positive integer`);
  }
  const { epochs, batchSize, valFreq, lrs } = settings;
  if (!Number.isInteger(epochs) || epochs < 1) throw new Error(`epochs must be ≥ 1`);
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`batchSize must be ≥ 1`);
  if (!Number.isInteger(valFreq) || valFreq < 1) throw new Error(`valFreq must be ≥ 1`);
  if (!(settings.momentum >= 0 && settings.momentum < 1)) {
    throw new Error(`momentum must be in [0, 1)`);
  }
  if (!(settings.weightDecay >= 0 && Number.isFinite(settings.weightDecay))) {
    throw new Error(`weightDecay must be a finite number ≥ 0`);
  }
  if (lrs.length === 0 || lrs.some((lr) => !(lr > 0) || !Number.isFinite(lr))) {
    throw new Error(`lrs must be a non-empty list of positive numbers`);
  }
  return settings;
}

/**
 * The sweep of linear classifiers trained one epoch at a time: {@link LinearProbeSweep.trainEpoch}
 * takes one epoch of SGD on whatever features it is given (the same cached features every epoch,
 * or freshly augmented ones), {@link LinearProbeSweep.validate} scores every classifier and keeps
 * each one's best epoch. One seeded generator draws the initial weights, then each epoch's batch
 * order, so the same seed and the same features give the same classifiers.
 */
export class LinearProbeSweep {
  /** Feature width. */
  readonly dim: number;
  /** Number of classes. */
  readonly numClasses: number;
  /** Epochs of the cosine schedule (T_max). */
  readonly epochs: number;
  /** Base learning rates of the sweep. */
  readonly lrs: readonly number[];
  readonly #settings: ReturnType<typeof sweepSettings>;
  readonly #onEpoch: LinearProbeOptions["onEpoch"];
  readonly #rng: Rng;
  // The arithmetic is in float64 (the initial weights are float32 draws); the sweep's classifiers
  // are stacked as rows l·C + c of one [L·C, dim] matrix.
  readonly #weight: Float64Array;
  readonly #bias: Float64Array;
  readonly #bufW: Float64Array;
  readonly #bufB: Float64Array;
  readonly #gradW: Float64Array;
  readonly #gradB: Float64Array;
  readonly #logits: Float64Array;
  readonly #xb: Float64Array;
  readonly #best: LinearProbeResult[];
  readonly #bestW: Float32Array[];
  readonly #bestB: Float32Array[];
  readonly #lossSum: Float64Array;
  #order = new Int32Array(0);
  #lossRows = 0;
  #epoch = 0;

  /** Draws the initial classifiers (all equal: weight ~ N(0, 0.01) from `seed`, bias 0). */
  constructor(dim: number, numClasses: number, options: LinearProbeOptions = {}) {
    this.#settings = sweepSettings(dim, numClasses, options);
    this.dim = dim;
    this.numClasses = numClasses;
    this.epochs = this.#settings.epochs;
    this.lrs = this.#settings.lrs;
    this.#onEpoch = options.onEpoch;
    const { batchSize, lrs } = this.#settings;
    const L = lrs.length;
    const C = numClasses;
    const rowsLC = L * C;
    this.#rng = new Rng(options.seed ?? 0);
    // Every classifier starts from the same draw, so its result does not depend on the sweep.
    const init = new Float32Array(C * dim);
    for (let i = 0; i < init.length; i++) init[i] = this.#rng.normal(0, 0.01);
    this.#weight = new Float64Array(rowsLC * dim);
    for (let l = 0; l < L; l++) this.#weight.set(init, l * C * dim);
    this.#bias = new Float64Array(rowsLC);
    this.#bufW = new Float64Array(rowsLC * dim);
    this.#bufB = new Float64Array(rowsLC);
    this.#gradW = new Float64Array(rowsLC * dim);
    this.#gradB = new Float64Array(rowsLC);
    this.#logits = new Float64Array(batchSize * rowsLC);
    this.#xb = new Float64Array(batchSize * dim);
    this.#best = lrs.map((lr) => ({ lr, top1: -1, top5: 0, bestEpoch: 0 }));
    this.#bestW = lrs.map(() => init.slice());
    this.#bestB = lrs.map(() => new Float32Array(C));
    this.#lossSum = new Float64Array(L);
  }

  /** Epochs trained so far. */
  get epoch(): number {
    return this.#epoch;
  }

  /** Whether the epoch just trained is one to validate: every `valFreq`-th and the last. */
  get validationDue(): boolean {
    const e = this.#epoch;
    return e > 0 && (e % this.#settings.valFreq === 0 || e === this.epochs);
  }

  /**
   * One epoch of SGD for every classifier on `train`, shuffled into mini-batches, at this epoch's
   * cosine lr. Returns the mean cross-entropy over the rows, per lr.
   */
  trainEpoch(train: LabelledFeatures): number[] {
    if (this.#epoch >= this.epochs) throw new Error(`all ${this.epochs} epochs are trained`);
    const { dim, numClasses: C } = this;
    const { batchSize, momentum, weightDecay: wd, lrs } = this.#settings;
    const n = checkData("train", train, dim, C);
    if (n === 0) throw new Error("train has no rows");
    const L = lrs.length;
    const rowsLC = L * C;
    const weight = this.#weight, bias = this.#bias, bufW = this.#bufW, bufB = this.#bufB;
    const logits = this.#logits, xb = this.#xb, lossSum = this.#lossSum;
    const rng = this.#rng;
    // The permutation carries over from epoch to epoch (reshuffled each time), as one list would.
    if (this.#order.length !== n) this.#order = Int32Array.from({ length: n }, (_, i) => i);
    const order = this.#order;
    for (let i = n - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      const t = order[i];
      order[i] = order[j];
      order[j] = t;
    }
    const x = train.features;
    lossSum.fill(0);
    for (let start = 0; start < n; start += batchSize) {
      const count = Math.min(batchSize, n - start);
      for (let b = 0; b < count; b++) {
        const xo = order[start + b] * dim;
        for (let d = 0; d < dim; d++) xb[b * dim + d] = x[xo + d];
      }
      forward(xb, count, dim, weight, bias, rowsLC, logits);
      // Softmax − one-hot, divided by the batch (mean cross-entropy), in place.
      for (let b = 0; b < count; b++) {
        const y = train.labels[order[start + b]];
        for (let l = 0; l < L; l++) {
          const o = b * rowsLC + l * C;
          let max = -Infinity;
          for (let c = 0; c < C; c++) if (logits[o + c] > max) max = logits[o + c];
          let z = 0;
          for (let c = 0; c < C; c++) z += Math.exp(logits[o + c] - max);
          lossSum[l] += Math.log(z) + max - logits[o + y];
          for (let c = 0; c < C; c++) {
            logits[o + c] = (Math.exp(logits[o + c] - max) / z - (c === y ? 1 : 0)) / count;
          }
        }
      }
      backward(xb, count, dim, logits, rowsLC, this.#gradW, this.#gradB);
      // SGD (PyTorch): g += wd·p; buf = g on the first step, else m·buf + g; p −= lr·buf.
      const keep = this.#epoch === 0 && start === 0 ? 0 : momentum;
      const gradW = this.#gradW, gradB = this.#gradB;
      for (let l = 0; l < L; l++) {
        const lr = cosineLr(lrs[l] * batchSize / 256, this.#epoch, this.epochs);
        const w0 = l * C * dim;
        for (let i = w0; i < w0 + C * dim; i++) {
          const buf = keep * bufW[i] + (gradW[i] + wd * weight[i]);
          bufW[i] = buf;
          weight[i] -= lr * buf;
        }
        for (let i = l * C; i < (l + 1) * C; i++) {
          const buf = keep * bufB[i] + (gradB[i] + wd * bias[i]);
          bufB[i] = buf;
          bias[i] -= lr * buf;
        }
      }
    }
    this.#epoch++;
    this.#lossRows = n;
    return Array.from(lossSum, (sum) => sum / n);
  }

  /**
   * Scores every classifier on `test`, keeps each one's best top-1 (with its parameters, tagged
   * with the epochs trained so far), calls `onEpoch` and returns the best results so far.
   */
  validate(test: LabelledFeatures): LinearProbeResult[] {
    const { dim, numClasses: C } = this;
    const nTest = checkData("test", test, dim, C);
    const L = this.lrs.length;
    const rowsLC = L * C;
    const testLogits = predictAll(test.features, nTest, dim, this.#weight, this.#bias, rowsLC);
    for (let l = 0; l < L; l++) {
      const acc = accuracy(testLogits, test.labels, C, l * C, rowsLC);
      if (acc.top1 > this.#best[l].top1) {
        this.#best[l] = { lr: this.lrs[l], top1: acc.top1, top5: acc.top5, bestEpoch: this.#epoch };
        this.#bestW[l].set(this.#weight.subarray(l * C * dim, (l + 1) * C * dim));
        this.#bestB[l].set(this.#bias.subarray(l * C, (l + 1) * C));
      }
    }
    this.#onEpoch?.(this.#epoch, this.#best.slice());
    return this.#best.slice();
  }

  /** The results so far: per-lr bests, the overall best classifier, the current parameters. */
  report(): LinearProbeReport {
    const { dim, numClasses: C } = this;
    const best = this.#best.slice();
    let bestIndex = 0;
    for (let l = 1; l < best.length; l++) if (best[l].top1 > best[bestIndex].top1) bestIndex = l;
    return {
      results: best,
      best: best[bestIndex],
      bestClassifier: {
        weight: this.#bestW[bestIndex].slice(),
        bias: this.#bestB[bestIndex].slice(),
      },
      final: this.lrs.map((_, l) => ({
        weight: Float32Array.from(this.#weight.subarray(l * C * dim, (l + 1) * C * dim)),
        bias: Float32Array.from(this.#bias.subarray(l * C, (l + 1) * C)),
      })),
      finalLoss: Array.from(this.#lossSum, (sum) => this.#lossRows > 0 ? sum / this.#lossRows : 0),
    };
  }
}

/**
 * Trains one linear classifier per base lr on the same mini-batches of `train` and validates them
 * on `test`, all epochs on the same cached features. Labels are integers in [0, numClasses).
 */
export function trainLinearProbes(
  train: LabelledFeatures,
  test: LabelledFeatures,
  dim: number,
  numClasses: number,
  options: LinearProbeOptions = {},
): LinearProbeReport {
  const sweep = new LinearProbeSweep(dim, numClasses, options);
  checkData("train", train, dim, numClasses);
  checkData("test", test, dim, numClasses);
  while (sweep.epoch < sweep.epochs) {
    sweep.trainEpoch(train);
    if (sweep.validationDue) sweep.validate(test);
  }
  return sweep.report();
}

/**
 * Like {@link trainLinearProbes}, but epoch `e` (0-based) trains on `trainFeatures(e)`: fresh
 * features of augmented training images each epoch (the official protocol). The labels must
 * describe the rows each call returns.
 */
export async function trainLinearProbesPerEpoch(
  trainFeatures: (epoch: number) => Promise<LabelledFeatures>,
  test: LabelledFeatures,
  dim: number,
  numClasses: number,
  options: LinearProbeOptions = {},
): Promise<LinearProbeReport> {
  const sweep = new LinearProbeSweep(dim, numClasses, options);
  checkData("test", test, dim, numClasses);
  while (sweep.epoch < sweep.epochs) {
    sweep.trainEpoch(await trainFeatures(sweep.epoch));
    if (sweep.validationDue) sweep.validate(test);
  }
  return sweep.report();
}

/**
 * out[b, r] = xs_b · W_r + bias_r for `n` rows of `xs` [n, dim] and stacked weights [rows, dim];
 * four weight rows at a time, so every feature value is loaded once per four dot products.
 */
function forward(
  xs: Float64Array,
  n: number,
  dim: number,
  weight: Float64Array,
  bias: Float64Array,
  rows: number,
  out: Float64Array,
): void {
  const rows4 = rows - (rows % 4);
  for (let b = 0; b < n; b++) {
    const xo = b * dim;
    const oo = b * rows;
    let r = 0;
    for (; r < rows4; r += 4) {
      const w0 = r * dim, w1 = w0 + dim, w2 = w1 + dim, w3 = w2 + dim;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let d = 0; d < dim; d++) {
        const v = xs[xo + d];
        s0 += v * weight[w0 + d];
        s1 += v * weight[w1 + d];
        s2 += v * weight[w2 + d];
        s3 += v * weight[w3 + d];
      }
      out[oo + r] = s0 + bias[r];
      out[oo + r + 1] = s1 + bias[r + 1];
      out[oo + r + 2] = s2 + bias[r + 2];
      out[oo + r + 3] = s3 + bias[r + 3];
    }
    for (; r < rows; r++) {
      const wo = r * dim;
      let s = 0;
      for (let d = 0; d < dim; d++) s += xs[xo + d] * weight[wo + d];
      out[oo + r] = s + bias[r];
    }
  }
}

/**
 * gradW[r] = Σ_b g[b, r] · xs_b and gradB[r] = Σ_b g[b, r] (overwritten), four batch rows at a
 * time, so every gradient value is loaded and stored once per four samples.
 */
function backward(
  xs: Float64Array,
  n: number,
  dim: number,
  g: Float64Array,
  rows: number,
  gradW: Float64Array,
  gradB: Float64Array,
): void {
  gradW.fill(0);
  gradB.fill(0);
  const n4 = n - (n % 4);
  for (let r = 0; r < rows; r++) {
    const wo = r * dim;
    let b = 0;
    let gb = 0;
    for (; b < n4; b += 4) {
      const g0 = g[b * rows + r], g1 = g[(b + 1) * rows + r];
      const g2 = g[(b + 2) * rows + r], g3 = g[(b + 3) * rows + r];
      gb += g0 + g1 + g2 + g3;
      const x0 = b * dim, x1 = x0 + dim, x2 = x1 + dim, x3 = x2 + dim;
      for (let d = 0; d < dim; d++) {
        gradW[wo + d] += g0 * xs[x0 + d] + g1 * xs[x1 + d] + g2 * xs[x2 + d] + g3 * xs[x3 + d];
      }
    }
    for (; b < n; b++) {
      const gv = g[b * rows + r];
      gb += gv;
      const xo = b * dim;
      for (let d = 0; d < dim; d++) gradW[wo + d] += gv * xs[xo + d];
    }
    gradB[r] = gb;
  }
}

/** Logits [n, rows] of `features` [n, dim] under stacked weights [rows, dim] and biases [rows]. */
function predictAll(
  features: Float32Array,
  n: number,
  dim: number,
  weight: Float64Array,
  bias: Float64Array,
  rows: number,
): Float64Array {
  const out = new Float64Array(n * rows);
  const chunk = 256;
  const xs = new Float64Array(chunk * dim);
  for (let start = 0; start < n; start += chunk) {
    const count = Math.min(chunk, n - start);
    xs.set(features.subarray(start * dim, (start + count) * dim));
    forward(xs, count, dim, weight, bias, rows, out.subarray(start * rows));
  }
  return out;
}

/** Logits [n, numClasses] of a trained classifier on features [n, dim]. */
export function linearPredict(
  classifier: LinearClassifier,
  features: Float32Array,
  dim: number,
): Float32Array {
  const classes = classifier.bias.length;
  const logits = predictAll(
    features,
    features.length / dim,
    dim,
    Float64Array.from(classifier.weight),
    Float64Array.from(classifier.bias),
    classes,
  );
  return Float32Array.from(logits);
}

/**
 * Linear probing on frozen features (§6.2): a sweep of linear classifiers (one per learning rate,
 * as `eval_linear_multi.py` does) trained by graphs on the runtime. Every classifier is
 * `Linear(dim, numClasses)` with weight ~ N(0, 0.01) and bias 0, trained with SGD (momentum 0.9,
 * PyTorch semantics), cross-entropy loss and a per-epoch cosine annealing of the lr to 0
 * (`CosineAnnealingLR(T_max = epochs, eta_min = 0)`). All classifiers see the same shuffled
 * mini-batches, so a classifier's result does not depend on which other learning rates are swept
 * with it. The forward pass, our autodiff's backward pass and the SGD update of the whole sweep
 * are one graph (`linear_graph.ts`), run by onnxruntime in float32 on the CPU or CUDA with the
 * classifiers resident on the device.
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

import { DeviceSession } from "../runtime/device_session.ts";
import type { Device } from "../runtime/ort_session.ts";
import { ResidentState } from "../runtime/resident_state.ts";
import { Rng } from "../runtime/rng.ts";
import { StateStore } from "../runtime/store.ts";
import {
  buildLinearEvalGraph,
  buildLinearStepGraph,
  LINEAR_IO,
  LINEAR_STATE,
} from "./linear_graph.ts";

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

/**
 * The sweep named by a task's `--lr` words: positive numbers, or "official" for
 * {@link OFFICIAL_LRS}; {@link DEFAULT_LRS} when not given.
 */
export function parseLrs(words: readonly string[] | undefined): readonly number[] {
  if (!words) return DEFAULT_LRS;
  if (words.length === 1 && words[0] === "official") return OFFICIAL_LRS;
  const lrs = words.map(Number);
  if (lrs.some((lr) => !(lr > 0) || !Number.isFinite(lr))) {
    throw new Error(`--lr takes positive numbers or "official", got ${words.join(" ")}`);
  }
  return lrs;
}

/** The feeds of a block of rows: features [rows, dim], labels [rows] and row weights [rows]. */
export interface RowBlock {
  readonly features: Float32Array;
  readonly labels: BigInt64Array;
  readonly rowWeights: Float32Array;
}

/**
 * Fills `block` with rows start … start + count − 1 of `data` (row weights 1); the block's rows
 * past `count` are zero, with weight 0.
 */
export function fillRowBlock(
  block: RowBlock,
  data: LabelledFeatures,
  start: number,
  count: number,
): void {
  const { features, labels, rowWeights } = block;
  const dim = features.length / labels.length;
  features.set(data.features.subarray(start * dim, (start + count) * dim));
  features.fill(0, count * dim);
  for (let i = 0; i < labels.length; i++) {
    labels[i] = i < count ? BigInt(data.labels[start + i]) : 0n;
  }
  rowWeights.fill(1, 0, count);
  rowWeights.fill(0, count);
}

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
  /** Where the graphs run (default `cpu`); `cuda` keeps the classifiers on GPU 0. */
  readonly device?: Device;
  /** onnxruntime intra-op threads on the CPU (default: every core). */
  readonly threads?: number;
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

/** Rows of a validation chunk: at most 2^24 logits per run, and at most 1024 rows. */
function evalChunkRows(rowsLC: number): number {
  return Math.max(1, Math.min(1024, Math.floor(2 ** 24 / rowsLC)));
}

/**
 * The sweep of linear classifiers trained one epoch at a time on the runtime:
 * {@link LinearProbeSweep.trainEpoch} takes one epoch of SGD on whatever features it is given
 * (the same cached features every epoch, or freshly augmented ones),
 * {@link LinearProbeSweep.validate} scores every classifier and keeps each one's best epoch. One
 * seeded generator draws the initial weights, then each epoch's batch order, so the same seed and
 * the same features give the same classifiers.
 *
 * Each step runs the graph of `linear_graph.ts` (forward, our autodiff's backward and the SGD
 * update of every classifier at once) in float32 through onnxruntime, with the stacked weights
 * and momentum buffers resident on the device between steps; only the mini-batch goes in and the
 * losses come out. Call {@link LinearProbeSweep.close} when done.
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
  readonly #store: StateStore;
  readonly #state: ResidentState;
  readonly #step: DeviceSession;
  readonly #eval: DeviceSession;
  readonly #evalRows: number;
  readonly #best: LinearProbeResult[];
  readonly #bestW: Float32Array[];
  readonly #bestB: Float32Array[];
  readonly #lossSum: Float64Array;
  #order = new Int32Array(0);
  #lossRows = 0;
  #epoch = 0;

  private constructor(
    dim: number,
    numClasses: number,
    options: LinearProbeOptions,
    settings: ReturnType<typeof sweepSettings>,
    rng: Rng,
    init: Float32Array,
    store: StateStore,
    runtime: { state: ResidentState; step: DeviceSession; eval: DeviceSession; evalRows: number },
  ) {
    this.dim = dim;
    this.numClasses = numClasses;
    this.#settings = settings;
    this.epochs = settings.epochs;
    this.lrs = settings.lrs;
    this.#onEpoch = options.onEpoch;
    this.#rng = rng;
    this.#store = store;
    this.#state = runtime.state;
    this.#step = runtime.step;
    this.#eval = runtime.eval;
    this.#evalRows = runtime.evalRows;
    this.#best = settings.lrs.map((lr) => ({ lr, top1: -1, top5: 0, bestEpoch: 0 }));
    this.#bestW = settings.lrs.map(() => init.slice());
    this.#bestB = settings.lrs.map(() => new Float32Array(numClasses));
    this.#lossSum = new Float64Array(settings.lrs.length);
  }

  /**
   * Draws the initial classifiers (all equal: weight ~ N(0, 0.01) from `seed`, bias 0), compiles
   * the step and evaluation graphs and places the state on `options.device`.
   */
  static async create(
    dim: number,
    numClasses: number,
    options: LinearProbeOptions = {},
  ): Promise<LinearProbeSweep> {
    const settings = sweepSettings(dim, numClasses, options);
    const L = settings.lrs.length;
    const rowsLC = L * numClasses;
    const rng = new Rng(options.seed ?? 0);
    // Every classifier starts from the same draw, so its result does not depend on the sweep.
    const init = new Float32Array(numClasses * dim);
    for (let i = 0; i < init.length; i++) init[i] = rng.normal(0, 0.01);
    const store = new StateStore();
    const weight = new Float32Array(rowsLC * dim);
    for (let l = 0; l < L; l++) weight.set(init, l * numClasses * dim);
    store.set(LINEAR_STATE.weight, weight, [rowsLC, dim]);
    store.set(LINEAR_STATE.bias, new Float32Array(rowsLC), [rowsLC]);
    store.set(LINEAR_STATE.weightMomentum, new Float32Array(rowsLC * dim), [rowsLC, dim]);
    store.set(LINEAR_STATE.biasMomentum, new Float32Array(rowsLC), [rowsLC]);
    const placement = { device: options.device ?? "cpu" } as const;
    const compile = { ...placement, threads: options.threads };
    const shape = { dim, classes: numClasses, sweep: L };
    const evalRows = evalChunkRows(rowsLC);
    const state = await ResidentState.create(store, Object.values(LINEAR_STATE), placement);
    try {
      const step = await DeviceSession.create(
        buildLinearStepGraph({ ...shape, rows: settings.batchSize }, settings),
        compile,
      );
      const evaluation = await DeviceSession.create(
        buildLinearEvalGraph({ ...shape, rows: evalRows }),
        compile,
      ).catch((error) => {
        step.release();
        throw error;
      });
      return new LinearProbeSweep(dim, numClasses, options, settings, rng, init, store, {
        state,
        step,
        eval: evaluation,
        evalRows,
      });
    } catch (error) {
      state.release();
      throw error;
    }
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
  async trainEpoch(train: LabelledFeatures): Promise<number[]> {
    if (this.#epoch >= this.epochs) throw new Error(`all ${this.epochs} epochs are trained`);
    const { dim, numClasses: C } = this;
    const { batchSize, lrs } = this.#settings;
    const n = checkData("train", train, dim, C);
    if (n === 0) throw new Error("train has no rows");
    const L = lrs.length;
    // The permutation carries over from epoch to epoch (reshuffled each time), as one list would.
    if (this.#order.length !== n) this.#order = Int32Array.from({ length: n }, (_, i) => i);
    const order = this.#order;
    for (let i = n - 1; i > 0; i--) {
      const j = this.#rng.int(i + 1);
      const t = order[i];
      order[i] = order[j];
      order[j] = t;
    }
    const lr = new Float32Array(L * C);
    for (let l = 0; l < L; l++) {
      lr.fill(cosineLr(lrs[l] * batchSize / 256, this.#epoch, this.epochs), l * C, (l + 1) * C);
    }
    const features = new Float32Array(batchSize * dim);
    const labels = new BigInt64Array(batchSize);
    const rowWeights = new Float32Array(batchSize);
    const feeds = {
      [LINEAR_IO.features]: features,
      [LINEAR_IO.labels]: labels,
      [LINEAR_IO.rowWeights]: rowWeights,
      [LINEAR_IO.lr]: lr,
    };
    const lossSum = this.#lossSum;
    lossSum.fill(0);
    for (let start = 0; start < n; start += batchSize) {
      const count = Math.min(batchSize, n - start);
      for (let b = 0; b < count; b++) {
        const row = order[start + b];
        features.set(train.features.subarray(row * dim, (row + 1) * dim), b * dim);
        labels[b] = BigInt(train.labels[row]);
      }
      features.fill(0, count * dim);
      labels.fill(0n, count);
      rowWeights.fill(1 / count, 0, count);
      rowWeights.fill(0, count);
      const out = await this.#step.run(feeds, this.#state);
      this.#state.swap();
      const loss = out[LINEAR_IO.loss] as Float32Array;
      for (let l = 0; l < L; l++) lossSum[l] += loss[l] * count;
    }
    this.#epoch++;
    this.#lossRows = n;
    return Array.from(lossSum, (sum) => sum / n);
  }

  /**
   * Scores every classifier on `test`, keeps each one's best top-1 (with its parameters, tagged
   * with the epochs trained so far), calls `onEpoch` and returns the best results so far.
   */
  async validate(test: LabelledFeatures): Promise<LinearProbeResult[]> {
    const { dim, numClasses: C } = this;
    const nTest = checkData("test", test, dim, C);
    const L = this.lrs.length;
    const rows = this.#evalRows;
    const features = new Float32Array(rows * dim);
    const labels = new BigInt64Array(rows);
    const rowWeights = new Float32Array(rows);
    const feeds = {
      [LINEAR_IO.features]: features,
      [LINEAR_IO.labels]: labels,
      [LINEAR_IO.rowWeights]: rowWeights,
    };
    const top1 = new Float64Array(L);
    const top5 = new Float64Array(L);
    for (let start = 0; start < nTest; start += rows) {
      const count = Math.min(rows, nTest - start);
      fillRowBlock({ features, labels, rowWeights }, test, start, count);
      const out = await this.#eval.run(feeds, this.#state);
      const hits1 = out[LINEAR_IO.top1] as Float32Array;
      const hits5 = out[LINEAR_IO.top5] as Float32Array;
      for (let l = 0; l < L; l++) {
        top1[l] += hits1[l];
        top5[l] += hits5[l];
      }
    }
    const percent = (hits: number) => nTest === 0 ? 0 : 100 * hits / nTest;
    const improved = this.lrs.map((_, l) => percent(top1[l]) > this.#best[l].top1);
    if (improved.some((better) => better)) {
      await this.#download();
      const weight = this.#store.get(LINEAR_STATE.weight);
      const bias = this.#store.get(LINEAR_STATE.bias);
      this.lrs.forEach((lr, l) => {
        if (!improved[l]) return;
        this.#best[l] = {
          lr,
          top1: percent(top1[l]),
          top5: percent(top5[l]),
          bestEpoch: this.#epoch,
        };
        this.#bestW[l].set(weight.subarray(l * C * dim, (l + 1) * C * dim));
        this.#bestB[l].set(bias.subarray(l * C, (l + 1) * C));
      });
    }
    this.#onEpoch?.(this.#epoch, this.#best.slice());
    return this.#best.slice();
  }

  /** The results so far: per-lr bests, the overall best classifier, the current parameters. */
  async report(): Promise<LinearProbeReport> {
    const { dim, numClasses: C } = this;
    await this.#download();
    const weight = this.#store.get(LINEAR_STATE.weight);
    const bias = this.#store.get(LINEAR_STATE.bias);
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
        weight: weight.slice(l * C * dim, (l + 1) * C * dim),
        bias: bias.slice(l * C, (l + 1) * C),
      })),
      finalLoss: Array.from(this.#lossSum, (sum) => this.#lossRows > 0 ? sum / this.#lossRows : 0),
    };
  }

  /** Releases the compiled graphs and the device state. */
  close(): void {
    this.#step.release();
    this.#eval.release();
    this.#state.release();
  }

  /** Copies the current weights and biases from the device into the host store. */
  async #download(): Promise<void> {
    await this.#state.download(this.#store, [LINEAR_STATE.weight, LINEAR_STATE.bias]);
  }
}

/** Trains `sweep` to its last epoch on `trainFeatures(e)` for epoch e, then reports and closes. */
async function runSweep(
  sweep: LinearProbeSweep,
  trainFeatures: (epoch: number) => Promise<LabelledFeatures> | LabelledFeatures,
  test: LabelledFeatures,
): Promise<LinearProbeReport> {
  try {
    while (sweep.epoch < sweep.epochs) {
      await sweep.trainEpoch(await trainFeatures(sweep.epoch));
      if (sweep.validationDue) await sweep.validate(test);
    }
    return await sweep.report();
  } finally {
    sweep.close();
  }
}

/**
 * Trains one linear classifier per base lr on the same mini-batches of `train` and validates them
 * on `test`, all epochs on the same cached features. Labels are integers in [0, numClasses).
 */
export async function trainLinearProbes(
  train: LabelledFeatures,
  test: LabelledFeatures,
  dim: number,
  numClasses: number,
  options: LinearProbeOptions = {},
): Promise<LinearProbeReport> {
  sweepSettings(dim, numClasses, options);
  checkData("train", train, dim, numClasses);
  checkData("test", test, dim, numClasses);
  return await runSweep(await LinearProbeSweep.create(dim, numClasses, options), () => train, test);
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
  sweepSettings(dim, numClasses, options);
  checkData("test", test, dim, numClasses);
  return await runSweep(
    await LinearProbeSweep.create(dim, numClasses, options),
    trainFeatures,
    test,
  );
}

/** Logits [n, numClasses] of a trained classifier on features [n, dim]. */
export function linearPredict(
  classifier: LinearClassifier,
  features: Float32Array,
  dim: number,
): Float32Array {
  const { weight, bias } = classifier;
  const classes = bias.length;
  const n = features.length / dim;
  const logits = new Float32Array(n * classes);
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < classes; c++) {
      let s = bias[c];
      for (let d = 0; d < dim; d++) s += features[i * dim + d] * weight[c * dim + d];
      logits[i * classes + c] = s;
    }
  }
  return logits;
}

/**
 * Fine-tuning with layer-wise learning-rate decay (official `classification_layer_decay`,
 * BEiT's recipe) and, with a projection-head classifier, the semi-supervised fine-tuning of
 * `semi_supervised/eval_cls.py`: the step artifact of `finetune_step.ts` run by onnxruntime every
 * iteration with its per-iteration schedule values (linear warm-up from 0, then cosine to
 * `min_lr`, as the official `cosine_scheduler`), mixup/cutmix with label smoothing (or smoothed
 * one-hot targets), drop path drawn on the host; top-1/top-5 on the validation split every
 * epoch; `checkpoint.safetensors` (every epoch, atomically, with the AdamW moments) and
 * `checkpoint-best.safetensors` (best top-1) kept; a `log.txt` JSON line per epoch.
 *
 * Randomness: epoch e's mixup and drop-path draws come from `new Rng(seed).fork("finetune:<e>")`,
 * and the data's augmentation from the loader's own seed and epoch, so a run resumed at an epoch
 * boundary continues exactly.
 *
 * @module
 */

import { join } from "node:path";
import { bicubicMatrix } from "../graph/nn.ts";
import { loadSafetensors, saveSafetensors } from "../checkpoint/safetensors.ts";
import { readStateDict } from "../checkpoint/weights_file.ts";
import { type Mixup, smoothedOneHot } from "../data/mixup.ts";
import {
  type ClassifierConfig,
  classifierKey,
  classifierParamName,
  fixInitWeight,
} from "../models/classifier.ts";
import { dropPathRates } from "../models/vit.ts";
import { ADAMW_DEFAULTS, addAdamWMoments, expAvgName, expAvgSqName } from "../optim/adamw.ts";
import { groupScalarValues, type ParameterGroup } from "../optim/layer_decay.ts";
import { cosineSchedule } from "../optim/schedules.ts";
import type { NamedTensor } from "../runtime/named_tensor.ts";
import { Rng } from "../runtime/rng.ts";
import { CompiledGraph, type ExecutionProvider } from "../runtime/session.ts";
import { StateStore } from "../runtime/store.ts";
import { fillDropPath } from "../train/batch_inputs.ts";
import {
  buildFinetuneEval,
  buildFinetuneStep,
  classifierParams,
  FINETUNE_INPUTS,
  finetuneParameterGroups,
} from "./finetune_step.ts";

/** Format tag of fine-tuning checkpoints. */
export const FINETUNE_CHECKPOINT_FORMAT = "ibot-deno-finetune-1";

/** The fixed settings of a fine-tuning run. */
export interface FinetuneConfig {
  /** The classifier. */
  readonly model: ClassifierConfig;
  /** Image side S. */
  readonly imageSize: number;
  /** Training images per step B (`--batch_size`). */
  readonly batchSize: number;
  /** Validation images per run of the evaluation graph (officially 1.5·B). */
  readonly evalBatchSize: number;
  /** Training epochs. */
  readonly epochs: number;
  /** Epochs of linear warm-up from 0. */
  readonly warmupEpochs: number;
  /** Peak learning rate (not scaled by the batch size, as officially). */
  readonly lr: number;
  /** Final learning rate of the cosine. */
  readonly minLr: number;
  /** Weight decay of the decayed groups. */
  readonly weightDecay: number;
  /** Final weight decay of a cosine weight-decay schedule (default: constant). */
  readonly weightDecayEnd?: number;
  /** Layer-wise lr decay (1: none). */
  readonly layerDecay: number;
  /** Stochastic-depth rate. */
  readonly dropPath: number;
  /** Clip the global gradient norm to this; omitted: no clipping. */
  readonly clipGrad?: number;
  /** Label smoothing of the targets when `mixup` is not given. */
  readonly smoothing: number;
  /** Seed of the mixup and drop-path draws (and of a random initialisation). */
  readonly seed: number;
  /** Execution provider (default cpu). */
  readonly device?: ExecutionProvider;
}

/** The state of a run between steps. */
export interface FinetuneProgress {
  /** Completed epochs. */
  readonly epoch: number;
  /** AdamW steps taken. */
  readonly step: number;
  /** Best validation top-1 so far, in percent. */
  readonly maxAccuracy: number;
}

/** Validation results, in percent, and the mean cross-entropy. */
export interface EvalStats {
  /** Top-1 accuracy (%). */
  readonly acc1: number;
  /** Top-5 accuracy (%). */
  readonly acc5: number;
  /** Mean cross-entropy of the true class (nats). */
  readonly loss: number;
}

/** A labelled batch; rows from `count` on (when given) are padding. */
export interface LabelledBatch {
  /** [B, 3, S, S] normalised images. */
  readonly images: Float32Array;
  /** [B] class indices. */
  readonly labels: Int32Array;
  /** Real rows (default: all). */
  readonly count?: number;
}

/** Where a run's data comes from. */
export interface FinetuneData {
  /** Steps per epoch (full batches only, as the official drop_last). */
  readonly itersPerEpoch: number;
  /** Epoch `epoch`'s training batches, augmented, each of `batchSize` rows. */
  train(epoch: number): AsyncIterable<LabelledBatch>;
  /** The validation batches, each of `evalBatchSize` rows (the last one padded). */
  validation(): AsyncIterable<LabelledBatch>;
}

/**
 * A classifier's compiled training step and evaluation graph with its state: parameters (graph
 * names) and AdamW moments.
 */
export class FinetuneRunner {
  /** The run's settings. */
  readonly config: FinetuneConfig;
  /** The parameter groups of layer-wise lr decay. */
  readonly groups: readonly ParameterGroup[];
  /** Parameters and moments, by graph name. */
  readonly store: StateStore;
  /** AdamW steps taken. */
  step = 0;
  readonly #train: CompiledGraph;
  readonly #eval: CompiledGraph;
  readonly #stateNames: string[];
  readonly #feeds: Record<string, Float32Array> = {};

  private constructor(
    config: FinetuneConfig,
    groups: ParameterGroup[],
    store: StateStore,
    train: CompiledGraph,
    evaluation: CompiledGraph,
    stateNames: string[],
  ) {
    this.config = config;
    this.groups = groups;
    this.store = store;
    this.#train = train;
    this.#eval = evaluation;
    this.#stateNames = stateNames;
    for (const name of stateNames) this.#feeds[name] = store.get(name);
  }

  /**
   * Compiles the step and the evaluation graph for `config`. `params` holds every trained
   * parameter by graph name (see {@link initialClassifierStore}); moments start at zero unless
   * `moments` holds them (a resumed run).
   */
  static async create(
    config: FinetuneConfig,
    params: StateStore,
    moments?: StateStore,
  ): Promise<FinetuneRunner> {
    const groups = finetuneParameterGroups(config.model, config.imageSize, config.layerDecay);
    const step = buildFinetuneStep({
      model: config.model,
      batch: config.batchSize,
      imageSize: config.imageSize,
      dropPath: config.dropPath,
      groups,
      clipGrad: config.clipGrad,
    });
    const evaluation = buildFinetuneEval(config.model, config.evalBatchSize, config.imageSize);
    const names = evaluation.params.map((p) => p.name);
    const store = new StateStore();
    for (const name of names) store.set(name, params.get(name).slice(), params.shape(name));
    const stateNames = addAdamWMoments(store, names);
    if (moments) store.copyFrom(moments, stateNames.slice(names.length));
    const options = { executionProviders: [config.device ?? "cpu"] } as const;
    return new FinetuneRunner(
      config,
      groups,
      store,
      await CompiledGraph.create(step, options),
      await CompiledGraph.create(evaluation, options),
      stateNames,
    );
  }

  /**
   * One AdamW step on `images` [B, 3, S, S] with soft `targets` [B, C] at learning rate `lr` and
   * weight decay `weightDecay`; `dropPath` [depth, 2, B] when the rate is > 0. Returns the loss.
   */
  async trainStep(
    images: Float32Array,
    targets: Float32Array,
    lr: number,
    weightDecay: number,
    dropPath?: Float32Array,
  ): Promise<number> {
    const feeds: Record<string, Float32Array> = { ...this.#feeds };
    feeds[FINETUNE_INPUTS.images] = images;
    feeds[FINETUNE_INPUTS.targets] = targets;
    if (dropPath) feeds[FINETUNE_INPUTS.dropPath] = dropPath;
    const values = groupScalarValues(this.groups, lr, weightDecay, this.step + 1, ADAMW_DEFAULTS);
    for (const [name, value] of Object.entries(values)) feeds[name] = Float32Array.of(value);
    const out = await this.#train.run(feeds);
    const loss = (out.loss as Float32Array)[0];
    this.store.commitNext(out as Record<string, Float32Array>, this.#stateNames);
    this.step++;
    return loss;
  }

  /** The logits [B, C] of a batch of `evalBatchSize` images, no drop path (a fresh copy). */
  async logits(images: Float32Array): Promise<Float32Array> {
    const feeds: Record<string, Float32Array> = { [FINETUNE_INPUTS.images]: images };
    for (const name of this.#eval.inputNames) {
      if (name !== FINETUNE_INPUTS.images) feeds[name] = this.store.get(name);
    }
    return ((await this.#eval.run(feeds)).logits as Float32Array).slice();
  }

  /** Top-1, top-5 and the cross-entropy over the validation batches. */
  async evaluate(batches: AsyncIterable<LabelledBatch>): Promise<EvalStats> {
    const classes = this.config.model.numClasses;
    let [n, top1, top5, lossSum] = [0, 0, 0, 0];
    for await (const batch of batches) {
      const logits = await this.logits(batch.images);
      const count = batch.count ?? batch.labels.length;
      for (let i = 0; i < count; i++) {
        const row = logits.subarray(i * classes, (i + 1) * classes);
        const y = batch.labels[i];
        let rank = 0;
        for (let c = 0; c < classes; c++) {
          if (row[c] > row[y] || (row[c] === row[y] && c < y)) rank++;
        }
        const max = Math.max(...row);
        const logSum = max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
        lossSum += logSum - row[y];
        if (rank === 0) top1++;
        if (rank < 5) top5++;
        n++;
      }
    }
    if (n === 0) throw new Error("the validation split holds no images");
    return { acc1: 100 * top1 / n, acc5: 100 * top5 / n, loss: lossSum / n };
  }

  /** The model's tensors by official key, and the moments as `exp_avg.<key>`, `exp_avg_sq.<key>`. */
  namedTensors(): Map<string, NamedTensor> {
    const out = new Map<string, NamedTensor>();
    const add = (name: string, key: string) =>
      out.set(key, {
        dtype: "float32",
        shape: [...this.store.shape(name)],
        data: this.store.get(name),
      });
    const params = this.#stateNames.filter((name) => !name.startsWith("exp_avg"));
    for (const name of params) add(name, classifierKey(name));
    for (const name of params) {
      add(expAvgName(name), expAvgName(classifierKey(name)));
      add(expAvgSqName(name), expAvgSqName(classifierKey(name)));
    }
    return out;
  }

  /** Releases both sessions. */
  async release(): Promise<void> {
    await this.#train.release();
    await this.#eval.release();
  }
}

/**
 * The initial parameters of a classifier by graph name: the graph's init rules drawn from
 * `seed` with the official `fix_init_weight`, then every tensor of `pretrained` (official keys,
 * e.g. a backbone's `blocks.0.attn.qkv.weight` or the projection head's `head.mlp.0.weight`)
 * that the classifier has, shapes checked. Returns the store and the keys taken.
 */
export function initialClassifierStore(
  model: ClassifierConfig,
  imageSize: number,
  seed: number,
  pretrained: ReadonlyMap<string, NamedTensor> = new Map(),
): { store: StateStore; loaded: string[] } {
  const params = buildFinetuneEval(model, 1, imageSize).params;
  const store = StateStore.fromParams(params, seed);
  fixInitWeight(store, model.backbone.depth);
  const loaded: string[] = [];
  for (const { name, shape } of params) {
    const key = classifierKey(name);
    const given = pretrained.get(key);
    if (!given) continue;
    const tensor = key === "pos_embed" && given.shape[1] !== shape[1]
      ? resizePositionEmbedding(given, Math.round(Math.sqrt(shape[1] - 1)))
      : given;
    if (tensor.shape.join(",") !== shape.join(",")) {
      throw new Error(
        `pretrained ${key} has shape [${tensor.shape}], the classifier needs [${shape}]`,
      );
    }
    store.get(name).set(Float32Array.from(tensor.data as Float32Array));
    loaded.push(key);
  }
  return { store, loaded };
}

/**
 * A position embedding [1, 1 + n², D] resized to [1, 1 + m², D] as the official fine-tuning
 * loads one for another input size: the CLS entry kept, the n×n patch table resized to m×m with
 * PyTorch's bicubic interpolation (`size=(m, m)`, align_corners False), in float64.
 */
export function resizePositionEmbedding(posEmbed: NamedTensor, m: number): NamedTensor {
  const [, tokens, dim] = posEmbed.shape;
  const n = Math.round(Math.sqrt(tokens - 1));
  if (n * n !== tokens - 1) throw new Error(`pos_embed has ${tokens} entries, not 1 + a square`);
  const source = posEmbed.data as Float32Array | Float64Array;
  const weights = bicubicMatrix(n, m / n);
  if (weights.outSize !== m) {
    throw new Error(`cannot resize a ${n}×${n} position table to ${m}×${m}`);
  }
  const table = new Float64Array(m * m * dim);
  const rows = new Float64Array(m * n * dim);
  for (let i = 0; i < m; i++) {
    for (let k = 0; k < n; k++) {
      const w = weights.data[i * n + k];
      if (w === 0) continue;
      for (let c = 0; c < n * dim; c++) rows[i * n * dim + c] += w * source[dim + k * n * dim + c];
    }
  }
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < m; j++) {
      for (let k = 0; k < n; k++) {
        const w = weights.data[j * n + k];
        if (w === 0) continue;
        for (let c = 0; c < dim; c++) {
          table[(i * m + j) * dim + c] += w * rows[(i * n + k) * dim + c];
        }
      }
    }
  }
  const out = new Float32Array((1 + m * m) * dim);
  out.set(source.subarray(0, dim));
  out.set(table, dim);
  return { dtype: "float32", shape: [1, 1 + m * m, dim], data: out };
}

/** Writes a fine-tuning checkpoint atomically: model and moments by official key, and progress. */
export async function saveFinetuneCheckpoint(
  path: string,
  runner: FinetuneRunner,
  progress: FinetuneProgress,
  args: unknown,
): Promise<void> {
  await saveSafetensors(path, runner.namedTensors(), {
    format: FINETUNE_CHECKPOINT_FORMAT,
    epoch: String(progress.epoch),
    step: String(progress.step),
    max_accuracy: String(progress.maxAccuracy),
    args: JSON.stringify(args ?? {}),
  });
}

/** A loaded fine-tuning checkpoint: parameters and moments by graph name, and progress. */
export interface FinetuneCheckpoint {
  /** Parameters by graph name. */
  readonly params: StateStore;
  /** Moments `exp_avg.<graph name>`, `exp_avg_sq.<graph name>`. */
  readonly moments: StateStore;
  /** Where the run stood. */
  readonly progress: FinetuneProgress;
  /** The run's arguments. */
  readonly args: Record<string, unknown>;
}

/** Reads a checkpoint of {@link saveFinetuneCheckpoint}; a wrong file is one sentence. */
export async function loadFinetuneCheckpoint(path: string): Promise<FinetuneCheckpoint> {
  const { tensors, metadata } = await loadSafetensors(path);
  if (metadata.format !== FINETUNE_CHECKPOINT_FORMAT) {
    throw new Error(`${path} is not a fine-tuning checkpoint of this toolkit`);
  }
  const params = new StateStore();
  const moments = new StateStore();
  for (const [key, t] of tensors) {
    const data = t.data as Float32Array;
    for (const prefix of ["exp_avg_sq.", "exp_avg."]) {
      if (key.startsWith(prefix)) {
        moments.set(prefix + classifierParamName(key.slice(prefix.length)), data, t.shape);
      }
    }
    if (!key.startsWith("exp_avg")) params.set(classifierParamName(key), data, t.shape);
  }
  return {
    params,
    moments,
    progress: {
      epoch: Number(metadata.epoch),
      step: Number(metadata.step),
      maxAccuracy: Number(metadata.max_accuracy),
    },
    args: JSON.parse(metadata.args ?? "{}"),
  };
}

/**
 * A classifier's weights by graph name from a fine-tuned model file: our fine-tuning checkpoint,
 * or an official one (`.pth` with the state dict under `model`, or a flat state dict), official
 * keys (`module.` stripped). Every trained parameter of `model` must be there with its shape.
 */
export async function loadClassifierWeights(
  path: string,
  model: ClassifierConfig,
  imageSize: number,
): Promise<StateStore> {
  const dict = await readStateDict(path, "model");
  const store = new StateStore();
  for (const { key, name, shape } of classifierParams(model, imageSize)) {
    const tensor = dict.get(key) ?? dict.get(`module.${key}`);
    if (!tensor) throw new Error(`${path} has no ${key} for the classifier`);
    if (tensor.shape.join(",") !== shape.join(",")) {
      throw new Error(
        `${path}: ${key} has shape [${tensor.shape}], the classifier needs [${shape}]`,
      );
    }
    store.set(name, Float32Array.from(tensor.data as Float32Array | Float64Array), shape);
  }
  return store;
}

/** What a fine-tuning run returns. */
export interface FinetuneResult {
  /** The last epoch's validation results. */
  readonly last: EvalStats;
  /** The best top-1 over the epochs (%). */
  readonly maxAccuracy: number;
  /** One entry per epoch trained in this call: the log.txt line. */
  readonly log: Record<string, number>[];
}

/** Where a run writes and how it reports. */
export interface FinetuneOutput {
  /** Folder of `checkpoint.safetensors`, `checkpoint-best.safetensors` and `log.txt`; none: no files. */
  readonly outputDir?: string;
  /** The run's arguments, stored in checkpoints. */
  readonly args?: unknown;
  /** Progress lines. */
  readonly log?: (line: string) => void;
  /** Print a progress line every this many steps (default 10, as officially). */
  readonly printFreq?: number;
  /** Stop once this many epochs are complete (default: all); the schedules stay the whole run's. */
  readonly endEpoch?: number;
}

/**
 * Trains `runner` from `progress` (epoch 0 for a new run) to `config.epochs`, evaluating each
 * epoch; `mixup` mixes every batch (else smoothed one-hot targets).
 */
export async function finetune(
  runner: FinetuneRunner,
  data: FinetuneData,
  mixup: Mixup | undefined,
  progress: FinetuneProgress,
  output: FinetuneOutput = {},
): Promise<FinetuneResult> {
  const { config } = runner;
  const { batchSize: B, imageSize: S, epochs } = config;
  const classes = config.model.numClasses;
  const iters = data.itersPerEpoch;
  if (iters < 1) throw new Error(`an epoch has no full batch of ${B} images`);
  const lrSchedule = cosineSchedule(config.lr, config.minLr, epochs, iters, config.warmupEpochs);
  const wdSchedule = cosineSchedule(
    config.weightDecay,
    config.weightDecayEnd ?? config.weightDecay,
    epochs,
    iters,
  );
  const depth = config.model.backbone.depth;
  const rates = dropPathRates(config.dropPath, depth);
  const dropPath = config.dropPath > 0 ? new Float32Array(depth * 2 * B) : undefined;
  const log = output.log ?? (() => {});
  const printFreq = output.printFreq ?? 10;
  const nParameters = classifierParams(config.model, S)
    .reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
  const minScale = Math.min(...runner.groups.map((g) => g.lrScale));
  runner.step = progress.step;
  let maxAccuracy = progress.maxAccuracy;
  let last: EvalStats | undefined;
  const lines: Record<string, number>[] = [];
  for (let epoch = progress.epoch; epoch < (output.endEpoch ?? epochs); epoch++) {
    const rng = new Rng(config.seed).fork(`finetune:${epoch}`);
    let [done, lossSum, lrSum, wdSum] = [0, 0, 0, 0];
    const start = performance.now();
    for await (const batch of data.train(epoch)) {
      if (done >= iters) break;
      const it = epoch * iters + done;
      const lr = lrSchedule[it];
      const mixed = mixup ? mixup.mix(batch.images, batch.labels, B, S, rng) : {
        images: batch.images,
        targets: smoothedOneHot(batch.labels, classes, config.smoothing),
      };
      if (dropPath) fillDropPath(dropPath, rates, B, rng);
      const loss = await runner.trainStep(
        mixed.images,
        mixed.targets,
        lr,
        wdSchedule[it],
        dropPath,
      );
      if (!Number.isFinite(loss)) {
        throw new Error(`the loss is ${loss} at epoch ${epoch}, step ${done}`);
      }
      lossSum += loss;
      lrSum += lr;
      wdSum += wdSchedule[it];
      done++;
      if (done % printFreq === 0 || done === iters) {
        const seconds = (performance.now() - start) / 1000;
        log(
          `Epoch: [${epoch}] [${done}/${iters}] lr ${lr.toExponential(3)} loss ${
            loss.toFixed(4)
          } ` +
            `(mean ${(lossSum / done).toFixed(4)}) ${(done * B / seconds).toFixed(1)} images/s`,
        );
      }
    }
    if (done < iters) throw new Error(`epoch ${epoch} delivered ${done} of ${iters} batches`);
    last = await runner.evaluate(data.validation());
    log(
      `* Acc@1 ${last.acc1.toFixed(3)} Acc@5 ${last.acc5.toFixed(3)} loss ${last.loss.toFixed(3)}`,
    );
    const best = last.acc1 > maxAccuracy;
    maxAccuracy = Math.max(maxAccuracy, last.acc1);
    log(`Max accuracy: ${maxAccuracy.toFixed(2)}%`);
    const line = {
      train_lr: lrSum / done,
      train_min_lr: minScale * lrSum / done,
      train_weight_decay: wdSum / done,
      train_loss: lossSum / done,
      test_loss: last.loss,
      test_acc1: last.acc1,
      test_acc5: last.acc5,
      epoch,
      n_parameters: nParameters,
    };
    lines.push(line);
    if (output.outputDir) {
      const state = { epoch: epoch + 1, step: runner.step, maxAccuracy };
      await Deno.mkdir(output.outputDir, { recursive: true });
      if (best) {
        await saveFinetuneCheckpoint(
          join(output.outputDir, "checkpoint-best.safetensors"),
          runner,
          state,
          output.args,
        );
      }
      await saveFinetuneCheckpoint(
        join(output.outputDir, "checkpoint.safetensors"),
        runner,
        state,
        output.args,
      );
      await Deno.writeTextFile(join(output.outputDir, "log.txt"), JSON.stringify(line) + "\n", {
        append: true,
      });
    }
  }
  if (!last) throw new Error(`nothing to train: the run already completed ${epochs} epochs`);
  return { last, maxAccuracy, log: lines };
}

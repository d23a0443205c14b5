/**
 * The iBOT training loop (`train_ibot`, `train_one_epoch`): schedules, masks and drop-path draws
 * on the host, one compiled training step per iteration, a progress line, `log.txt` with one JSON
 * line per epoch, an atomic checkpoint every epoch (numbered copies every `saveckp_freq`),
 * automatic resume from the output directory, a clean stop on Ctrl-C, and a clear stop on a
 * non-finite loss.
 *
 * @module
 */

import { maskStream } from "../data/streams.ts";
import { join } from "node:path";
import type { TensorData } from "../graph/graph.ts";
import { shapeSize } from "../graph/tensor.ts";
import { type MultiCropBatch, MultiCropLoader } from "../data/loader.ts";
import { MaskGenerator } from "../data/masking.ts";
import { resolveDataPath } from "../data/source.ts";
import type { BackboneConfig } from "../models/backbone.ts";
import { addAdamWMoments } from "../optim/adamw.ts";
import { GradScaler } from "../optim/grad_scaler.ts";
import {
  cosineSchedule,
  scaledLearningRate,
  teacherTemperatureSchedule,
} from "../optim/schedules.ts";
import { Rng } from "../runtime/rng.ts";
import { anyRank, type Communicator, worldCommunicator } from "../runtime/mpi.ts";
import { ResidentState } from "../runtime/resident_state.ts";
import { StateStore } from "../runtime/store.ts";
import type { PretrainArgs } from "./args.ts";
import { countMasked, fillMaskInputs, fillStepDropPath } from "./batch_inputs.ts";
import {
  loadTrainingCheckpoint,
  saveTrainingCheckpoint,
  type TrainingProgress,
} from "../checkpoint/training_checkpoint.ts";
import { EpochMeter, type EpochMeterState, type EpochStats } from "./epoch_meter.ts";
import { type RunConfig, runConfigFromArgs } from "./config.ts";
import { pickSlotBucket, slotBuckets } from "./slot_buckets.ts";
import { StepRunner } from "./step_runner.ts";
import {
  buildIbotStep,
  type IbotStep,
  STEP_INPUTS,
  stepScalarValues,
  STUDENT,
  TEACHER,
} from "./step.ts";

/** Name of the rolling checkpoint in the output directory. */
export const CHECKPOINT_FILE = "checkpoint.safetensors";

/** How a call to {@link IbotTrainer.train} ended. */
export type TrainOutcome = "finished" | "interrupted";

/** Raised when the loss stops being finite; the last good checkpoint is kept. */
export class NonFiniteLossError extends Error {}

/** Options of {@link IbotTrainer.create}. */
export interface TrainerOptions {
  /**
   * The job's processes for data-parallel training (default: `worldCommunicator()`, MPI under
   * `mpirun`, else one process).
   */
  readonly communicator?: Communicator;
}

/** Where progress lines go. */
export type Log = (line: string) => void;

/** What {@link IbotTrainer.train} reports after each iteration (for live plots). */
export interface IterationReport {
  /** The epoch (0-based). */
  readonly epoch: number;
  /** Iterations completed in this epoch (1 after the first). */
  readonly iteration: number;
  /** Iterations per epoch. */
  readonly itersPerEpoch: number;
  /** The total loss, `cls + patch`. */
  readonly loss: number;
  /** The CLS (cross-view distillation) term, times lambda1. */
  readonly cls: number;
  /** The masked-patch term, times lambda2. */
  readonly patch: number;
  /** The learning rate of the iteration. */
  readonly lr: number;
  /** Whether the fp16 loss scaler found an inf or NaN gradient and skipped the update. */
  readonly skipped: boolean;
  /** The patch slots of the step that ran (the bucket of the batch's masked patches). */
  readonly slots: number;
}

/** Called after each iteration; training waits for a returned promise. */
export type IterationCallback = (report: IterationReport) => void | Promise<void>;

/**
 * A prepared pre-training run: data, the step (compiled per patch-slot bucket on first use),
 * state (fresh or resumed) and schedules.
 */
export class IbotTrainer {
  #drawsCache?: { root: Rng; generator: MaskGenerator };
  /** The iteration (the fused step, or the data-parallel pair), compiled per bucket. */
  readonly #runner: StepRunner;
  /** The patch-slot buckets, ascending; the last is the step's (largest) slot count. */
  readonly #buckets: readonly number[];
  /** The dynamic loss scaler of fp16 runs (`torch.cuda.amp.GradScaler`). */
  readonly #scaler?: GradScaler;

  private constructor(
    readonly args: PretrainArgs,
    readonly config: RunConfig,
    /**
     * The run's state on the host. During {@link train} the state lives on the device (two
     * buffers per updated tensor, swapped each step) and this store is brought up to date at each
     * checkpoint and when `train` returns; `train` starts from what the store holds then.
     */
    readonly store: StateStore,
    readonly outputDir: string,
    private progress: TrainingProgress<EpochMeterState>,
    private readonly loader: MultiCropLoader,
    private readonly step: IbotStep,
    private readonly state: ResidentState,
    /** The job's ranks: rank 0 alone logs and writes files. */
    readonly communicator: Communicator,
    private readonly log: Log,
  ) {
    const { globalCrops, batch, maskSlots } = config.step;
    this.#buckets = slotBuckets(globalCrops * batch * maskSlots);
    this.#runner = new StepRunner({
      config: config.step,
      placement: state.placement,
      threads: threadsPerRank(args.threads, communicator.localSize),
      communicator,
      log,
    }, this.#buckets);
    if (config.step.lossScaling) {
      this.#scaler = progress.fp16Scaler
        ? GradScaler.fromStateDict(progress.fp16Scaler)
        : new GradScaler();
    }
  }

  /**
   * Prepares a run: opens the data, builds the step (compiled for each patch-slot bucket when a
   * batch first needs it), restores the state from `output_dir/checkpoint.safetensors` (or
   * `--load_from`) when there is one, else initialises it, and places it on `--device`.
   */
  static async create(
    args: PretrainArgs,
    log: Log,
    options: TrainerOptions = {},
  ): Promise<IbotTrainer> {
    const comm = options.communicator ?? worldCommunicator();
    const say: Log = comm.rank === 0 ? log : () => {};
    const config = runConfigFromArgs(args);
    const outputDir = args.output_dir;
    const source = await resolveDataPath(args.data_path, "train");
    await Deno.mkdir(outputDir, { recursive: true });
    const loader = await MultiCropLoader.create({
      source,
      crops: config.crops,
      batchSize: config.step.batch,
      workers: args.num_workers > 0 ? args.num_workers : undefined,
      seed: args.seed,
      rank: comm.rank,
      worldSize: comm.size,
    });
    if (loader.itersPerEpoch === 0) {
      loader.close();
      throw new Error(
        `${args.data_path} has ${loader.length} images, fewer than one batch of ${config.step.batch}`,
      );
    }
    try {
      const step = buildIbotStep(config.step);
      const resumeFrom = await findCheckpoint(args, outputDir);
      let store: StateStore;
      let progress: TrainingProgress<EpochMeterState> = {
        epoch: 0,
        iteration: 0,
        step: 0,
        lastLayerStep: 0,
      };
      if (resumeFrom) {
        const checkpoint = await loadTrainingCheckpoint<PretrainArgs, EpochMeterState>(resumeFrom);
        store = checkpoint.store;
        const { epoch, step: steps, lastLayerStep, meter, fp16Scaler } = checkpoint;
        const written = checkpoint.worldSize ?? 1;
        // Mid-epoch, the iteration counts batches of the writer's world: resume after the same
        // number of images.
        const iteration = Math.floor(checkpoint.iteration * written / comm.size);
        progress = { epoch, iteration, step: steps, lastLayerStep, meter, fp16Scaler };
        checkStateFits(store, step, resumeFrom);
        say(
          `Resuming from ${resumeFrom}: epoch ${progress.epoch}, iteration ${progress.iteration}`,
        );
        if (written !== comm.size) {
          say(
            `The checkpoint was written by ${written} process(es) and this run has ${comm.size}: ` +
              `the global batch goes from ${written * config.step.batch} to ${
                comm.size * config.step.batch
              } images and the learning rate scales with it.`,
          );
        }
      } else {
        store = initialState(step, config, args.seed);
      }
      const state = await ResidentState.create(store, step.updatedState, {
        device: args.device,
        deviceId: args.device === "cuda" ? comm.localRank : undefined,
      });
      return new IbotTrainer(
        args,
        config,
        store,
        outputDir,
        progress,
        loader,
        step,
        state,
        comm,
        say,
      );
    } catch (error) {
      loader.close();
      throw error;
    }
  }

  /** Completed epochs and batches so far, and the optimizer step counts. */
  get position(): Omit<TrainingProgress, "meter"> {
    const { epoch, iteration, step, lastLayerStep } = this.progress;
    return { epoch, iteration, step, lastLayerStep };
  }

  /** The training graph at the largest patch-slot bucket, and its state names. */
  get stepArtifact(): IbotStep {
    return this.step;
  }

  /** The backbone of the networks, for feature extraction. */
  get backbone(): BackboneConfig {
    return this.config.step.backbone;
  }

  /**
   * Trains until `epochs` or until `signal` aborts (checked after each iteration; the state is
   * then saved with the iteration reached, and after an epoch's last iteration the epoch is first
   * completed: its checkpoint and log.txt line). `onIteration` is called after each iteration,
   * before that check, so it may abort `signal` itself. Returns how it ended.
   */
  async train(signal?: AbortSignal, onIteration?: IterationCallback): Promise<TrainOutcome> {
    await this.state.upload(this.store);
    try {
      return await this.#train(signal, onIteration);
    } finally {
      await this.state.download(this.store);
    }
  }

  /** {@link train} on the device-resident state. */
  async #train(signal?: AbortSignal, onIteration?: IterationCallback): Promise<TrainOutcome> {
    const { args, config } = this;
    const ranks = this.communicator.size;
    const epochs = args.epochs;
    const iters = this.loader.itersPerEpoch;
    const globalBatch = config.step.batch * ranks;
    const { lr, wd, momentum, clsTemp, patchTemp } = schedules(args, iters, globalBatch);
    const feeds = this.#allocateFeeds();
    let stopping = false;
    for (let epoch = this.progress.epoch; epoch < epochs; epoch++) {
      const start = epoch === this.progress.epoch ? this.progress.iteration : 0;
      const meter = new EpochMeter(start > 0 ? this.progress.meter : undefined);
      const lastLayerActive = epoch >= args.freeze_last_layer ? 1 : 0;
      let startedAt = performance.now();
      let timedImages = 0;
      let i = start;
      for await (const data of this.loader.epoch(epoch, start)) {
        const it = epoch * iters + i;
        const slots = this.#fillBatchInputs(feeds, data, epoch, it);
        const step = this.progress.step + 1;
        const lastLayerStep = this.progress.lastLayerStep + lastLayerActive;
        setScalars(
          feeds,
          stepScalarValues({
            lr: lr[it],
            weightDecay: wd[it],
            step,
            lastLayerActive: lastLayerActive === 1,
            lastLayerStep,
            momentum: momentum[it],
            teacherTemp: clsTemp[epoch],
            teacherPatchTemp: patchTemp[epoch],
            lossScale: this.#scaler?.scale,
          }),
        );

        const compiling = this.#runner.needsCompile(slots);
        const beforeRun = performance.now();
        const out = await this.#runner.run(feeds, data.labels, slots, this.state);
        // A bucket's compilation is not training time: keep it out of the img/s figure.
        if (compiling) startedAt += performance.now() - beforeRun;
        const { loss, cls, patch, acc } = out;
        if (!Number.isFinite(loss)) {
          const checkpoint = join(this.outputDir, CHECKPOINT_FILE);
          const kept = await Deno.stat(checkpoint).then(
            () => `the last good checkpoint is ${checkpoint}`,
            () => "no checkpoint had been written yet",
          );
          throw new NonFiniteLossError(
            `the loss is ${loss} at epoch ${epoch}, iteration ${i}: training stopped; ${kept}`,
          );
        }
        this.state.swap();
        // A step the scaler skipped left the student and its moments as they were: it is no AdamW
        // step (torch's optimizer step count does not advance either).
        const skipped = this.#scaler !== undefined && out.foundInf;
        this.#scaler?.update(skipped);
        i++;
        meter.add({ loss, cls, patch, acc, lr: lr[it], wd: wd[it] }, out.predictions, out.labels);
        this.progress = {
          epoch,
          iteration: i,
          step: skipped ? step - 1 : step,
          lastLayerStep: skipped ? lastLayerStep - lastLayerActive : lastLayerStep,
          meter: meter.state(),
          fp16Scaler: this.#scaler?.stateDict(),
          worldSize: ranks,
        };
        await onIteration?.({
          epoch,
          iteration: i,
          itersPerEpoch: iters,
          loss,
          cls,
          patch,
          lr: lr[it],
          skipped,
          slots,
        });
        timedImages += globalBatch;
        if (i % args.print_freq === 0 || i === iters) {
          const seconds = (performance.now() - startedAt) / 1000;
          const rate = timedImages / seconds;
          const remaining = ((epochs - epoch) * iters - i) * globalBatch / rate;
          this.log(
            `Epoch [${epoch}/${epochs}] [${String(i).padStart(String(iters).length)}/${iters}]  ` +
              `loss ${loss.toFixed(4)}  cls ${cls.toFixed(4)}  patch ${patch.toFixed(4)}  ` +
              `lr ${lr[it].toExponential(2)}  wd ${wd[it].toFixed(4)}  ${
                this.#scaler ? `loss scale ${this.#scaler.scale}  ` : ""
              }${rate.toFixed(1)} img/s  eta ${formatDuration(remaining)}`,
          );
          startedAt = performance.now();
          timedImages = 0;
        }
        // Every rank stops after the same iteration when any was asked to.
        stopping = await anyRank(this.communicator, signal?.aborted ?? false);
        if (stopping && i < iters) {
          await this.#save();
          return "interrupted";
        }
      }
      this.progress = { ...this.progress, epoch: epoch + 1, iteration: 0, meter: undefined };
      await this.#endEpoch(epoch, meter.summary());
      if (stopping && epoch + 1 < epochs) return "interrupted";
    }
    return "finished";
  }

  /** The run's seeded root generator and mask generator, built once. */
  get #draws(): { root: Rng; generator: MaskGenerator } {
    this.#drawsCache ??= {
      root: new Rng(this.args.seed),
      generator: new MaskGenerator(this.config.masking),
    };
    return this.#drawsCache;
  }

  /**
   * Writes one batch's inputs: the crops, a mask per global crop of each image (drawn from a
   * generator forked by epoch, image and crop, so a resumed run draws the same masks) with their
   * patch slots, and the drop-path scales of the iteration (this rank's rows of the whole
   * data-parallel step's draws). Returns the slot count: the smallest bucket that holds the
   * batch's masked patches.
   */
  #fillBatchInputs(
    feeds: Record<string, TensorData>,
    data: MultiCropBatch,
    epoch: number,
    it: number,
  ): number {
    const { step, maskGrid } = this.config;
    const { root, generator } = this.#draws;
    feeds[STEP_INPUTS.globals] = data.globals;
    if (step.localCrops > 0) feeds[STEP_INPUTS.locals] = data.locals;
    const masks: Uint8Array[] = [];
    for (let crop = 0; crop < step.globalCrops; crop++) {
      for (const index of data.indices) {
        masks.push(
          generator.draw(maskGrid, maskGrid, epoch, maskStream(root, epoch, index, crop)),
        );
      }
    }
    const slots = pickSlotBucket(this.#buckets, countMasked(masks));
    fillMaskInputs(feeds, masks, slots, maskGrid * maskGrid);
    fillStepDropPath(feeds, step, root.fork(`drop_path:${it}`), {
      rank: this.communicator.rank,
      worldSize: this.communicator.size,
    });
    return slots;
  }

  /** Stops the data workers and releases the compiled steps and the device-resident state. */
  close(): void {
    this.loader.close();
    this.#runner.release();
    this.state.release();
  }

  /** Brings the store up to date from the device and writes the rolling checkpoint (rank 0). */
  async #save(): Promise<void> {
    if (this.communicator.rank !== 0) return;
    await this.state.download(this.store);
    await saveTrainingCheckpoint(
      join(this.outputDir, CHECKPOINT_FILE),
      this.store,
      this.progress,
      this.args,
    );
  }

  /** Rank 0 writes the epoch's checkpoints and its log.txt line. */
  async #endEpoch(epoch: number, stats: EpochStats): Promise<void> {
    await this.#save();
    if (this.communicator.rank !== 0) return;
    const freq = this.args.saveckp_freq;
    if (freq > 0 && epoch % freq === 0 && epoch !== 0) {
      const numbered = join(
        this.outputDir,
        `checkpoint${String(epoch).padStart(4, "0")}.safetensors`,
      );
      await saveTrainingCheckpoint(numbered, this.store, this.progress, this.args);
    }
    const line: Record<string, number> = {};
    for (const [key, value] of Object.entries(stats)) line[`train_${key}`] = value;
    line.train_adjacc = -1;
    line.epoch = epoch;
    await Deno.writeTextFile(join(this.outputDir, "log.txt"), JSON.stringify(line) + "\n", {
      append: true,
    });
    this.log(
      `Epoch ${epoch} done: loss ${stats.loss.toFixed(4)}  cls ${stats.cls.toFixed(4)}  patch ${
        stats.patch.toFixed(4)
      }  acc ${stats.acc.toFixed(3)}  nmi ${stats.nmi.toFixed(3)}  (checkpoint saved)`,
    );
  }

  /** Host buffers for the step's data and scalar inputs (the state is resident, not fed). */
  #allocateFeeds(): Record<string, TensorData> {
    const feeds: Record<string, TensorData> = {};
    for (const input of this.step.graph.inputs) {
      if (this.state.has(input.name)) continue;
      const n = shapeSize(input.shape);
      feeds[input.name] = input.dtype === "int64" ? new BigInt64Array(n) : new Float32Array(n);
    }
    return feeds;
  }
}

/**
 * onnxruntime's intra-op threads for one rank: `--threads` when given, else the machine's cores
 * shared by the job's processes on it (a rank waiting in MPI keeps a core busy).
 */
function threadsPerRank(threads: number, localSize: number): number | undefined {
  if (threads > 0) return threads;
  return localSize > 1
    ? Math.max(1, Math.floor(navigator.hardwareConcurrency / localSize))
    : undefined;
}

/**
 * The run's schedules: lr (batch-scaled, warm-up then cosine), weight decay (rising cosine) and
 * teacher momentum (cosine to 1) per iteration; CLS and patch teacher temperatures per epoch.
 */
function schedules(args: PretrainArgs, iters: number, globalBatch: number) {
  const { epochs, warmup_teacher_temp_epochs: warmup } = args;
  return {
    lr: cosineSchedule(
      scaledLearningRate(args.lr, globalBatch),
      args.min_lr,
      epochs,
      iters,
      args.warmup_epochs,
    ),
    wd: cosineSchedule(args.weight_decay, args.weight_decay_end, epochs, iters),
    momentum: cosineSchedule(args.momentum_teacher, 1, epochs, iters),
    clsTemp: teacherTemperatureSchedule(
      args.warmup_teacher_temp,
      args.teacher_temp,
      warmup,
      epochs,
    ),
    patchTemp: teacherTemperatureSchedule(
      args.warmup_teacher_patch_temp,
      args.teacher_patch_temp,
      warmup,
      epochs,
      args.pred_start_epoch,
    ),
  };
}

function setScalars(feeds: Record<string, TensorData>, values: Record<string, number>): void {
  for (const [name, value] of Object.entries(values)) (feeds[name] as Float32Array)[0] = value;
}

/** `--load_from` (joined to the output directory unless absolute), else an existing checkpoint. */
async function findCheckpoint(args: PretrainArgs, outputDir: string): Promise<string | undefined> {
  if (args.load_from) {
    const path = args.load_from.startsWith("/") ? args.load_from : join(outputDir, args.load_from);
    try {
      await Deno.stat(path);
    } catch {
      throw new Error(`--load_from: ${path} does not exist`);
    }
    return path;
  }
  const rolling = join(outputDir, CHECKPOINT_FILE);
  try {
    await Deno.stat(rolling);
    return rolling;
  } catch {
    return undefined;
  }
}

/** Refuses a checkpoint whose tensors do not match the step's state, naming the first mismatch. */
function checkStateFits(store: StateStore, step: IbotStep, path: string): void {
  const specs = [
    ...step.graph.params,
    ...step.trainable.flatMap((name) => {
      const spec = step.graph.params.find((p) => p.name === name)!;
      return [{ ...spec, name: `exp_avg.${name}` }, { ...spec, name: `exp_avg_sq.${name}` }];
    }),
  ];
  for (const spec of specs) {
    if (!store.has(spec.name)) {
      throw new Error(
        `${path} does not fit this run: it has no ${spec.name} (different arguments?)`,
      );
    }
    const shape = store.shape(spec.name);
    if (shape.join(",") !== spec.shape.join(",")) {
      throw new Error(
        `${path} does not fit this run: ${spec.name} is [${shape}] there and [${spec.shape}] here`,
      );
    }
  }
}

/**
 * A fresh state: the student from its init rules, the teacher loaded from the student by name
 * (with the official quirk: a shared teacher head over a separate student head gets the student's
 * `last_layer2`), zero moments and centres.
 */
function initialState(step: IbotStep, config: RunConfig, seed: number): StateStore {
  const store = StateStore.fromParams(
    step.graph.params.filter((p) => !p.name.startsWith(`${TEACHER}.`)),
    seed,
  );
  const quirk = config.step.teacherSharedHead && !config.step.studentHead.sharedHead;
  for (const spec of step.graph.params.filter((p) => p.name.startsWith(`${TEACHER}.`))) {
    let source = `${STUDENT}.${spec.name.slice(TEACHER.length + 1)}`;
    if (quirk && source.includes(".head.last_layer.")) {
      source = source.replace(".last_layer.", ".last_layer2.");
    }
    const data = store.has(source)
      ? store.get(source).slice()
      : StateStore.fromParams([spec], seed).get(spec.name);
    store.set(spec.name, data, spec.shape);
  }
  addAdamWMoments(store, step.trainable);
  return store;
}

/** `h:mm:ss`. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 3600)}:${String(Math.floor(s / 60) % 60).padStart(2, "0")}:${
    String(s % 60).padStart(2, "0")
  }`;
}

/**
 * Training checkpoints: the whole training state in one safetensors file, written atomically.
 *
 * Tensors: `student.<official key>` and `teacher.<official key>` (keys of §8.2 and §8.4 without
 * the `module.` prefix), the AdamW moments `exp_avg.student.<key>` and `exp_avg_sq.student.<key>`,
 * and the loss centres `ibot_loss.center` [1, K] and `ibot_loss.center2` [1, 1, Kp].
 * Metadata (JSON strings): the format tag, `epoch` (completed epochs, as the official checkpoint),
 * `iteration` (batches done in the current epoch, 0 at an epoch boundary), the optimizer step
 * counts, the run's arguments, and within an epoch its running statistics.
 *
 * @module
 */

import type { GradScalerState } from "../optim/grad_scaler.ts";
import { StateStore } from "../runtime/store.ts";
import { loadSafetensors, saveSafetensors } from "./safetensors.ts";

/** Format tag written into every checkpoint's metadata. */
export const CHECKPOINT_FORMAT = "ibot-deno-checkpoint-1";

/**
 * Where a run stands, besides its tensors. `Meter` is the trainer's record of an unfinished
 * epoch's running statistics, stored as JSON.
 */
export interface TrainingProgress<Meter = unknown> {
  /** Completed epochs. */
  readonly epoch: number;
  /** Batches done in epoch `epoch` (0 when the checkpoint is at an epoch boundary). */
  readonly iteration: number;
  /** AdamW steps taken by the parameters outside the last layer. */
  readonly step: number;
  /** AdamW steps taken by the last layer (it does not step while frozen). */
  readonly lastLayerStep: number;
  /** The running statistics of an unfinished epoch (when `iteration` > 0). */
  readonly meter?: Meter;
  /** The fp16 loss scaler's state (torch's `GradScaler.state_dict()`), in fp16 runs only. */
  readonly fp16Scaler?: GradScalerState;
  /** The number of data-parallel processes that wrote it (1 when absent). */
  readonly worldSize?: number;
}

/** A run's arguments as a checkpoint stores them: JSON values by official argument name. */
export type StoredArgs = Readonly<
  Record<string, string | number | boolean | null | readonly number[] | readonly string[]>
>;

/** A loaded checkpoint; `Args` is the run's arguments as the trainer stored them (JSON). */
export interface TrainingCheckpoint<Args = StoredArgs, Meter = unknown>
  extends TrainingProgress<Meter> {
  /** Every tensor of the run's state. */
  readonly store: StateStore;
  /** The arguments of the run that wrote it. */
  readonly args: Args;
}

/** Writes the state and progress to `path` atomically (temporary file, then rename). */
export async function saveTrainingCheckpoint(
  path: string,
  store: StateStore,
  progress: TrainingProgress,
  args: unknown,
): Promise<void> {
  await saveSafetensors(path, store.toNamedTensors(), {
    format: CHECKPOINT_FORMAT,
    epoch: String(progress.epoch),
    iteration: String(progress.iteration),
    step: String(progress.step),
    last_layer_step: String(progress.lastLayerStep),
    args: JSON.stringify(args),
    ...(progress.meter ? { epoch_meter: JSON.stringify(progress.meter) } : {}),
    ...(progress.fp16Scaler ? { fp16_scaler: JSON.stringify(progress.fp16Scaler) } : {}),
    world_size: String(progress.worldSize ?? 1),
  });
}

/**
 * Reads a checkpoint written by {@link saveTrainingCheckpoint}; bad files get one clear sentence.
 * The caller names the types its arguments and statistics were written with.
 */
export async function loadTrainingCheckpoint<
  Args = StoredArgs,
  Meter = unknown,
>(path: string): Promise<TrainingCheckpoint<Args, Meter>> {
  const { tensors, metadata } = await loadSafetensors(path);
  if (metadata.format !== CHECKPOINT_FORMAT) {
    throw new Error(
      `${path} is not a training checkpoint of this toolkit (format '${
        metadata.format ?? "none"
      }')`,
    );
  }
  const integer = (key: string) => {
    const value = Number(metadata[key]);
    if (!Number.isInteger(value) || value < 0) {
      throw new Error(`${path} has an invalid '${key}' entry`);
    }
    return value;
  };
  let args: Args;
  let meter: Meter | undefined;
  let fp16Scaler: GradScalerState | undefined;
  try {
    args = JSON.parse(metadata.args);
    meter = metadata.epoch_meter ? JSON.parse(metadata.epoch_meter) : undefined;
    fp16Scaler = metadata.fp16_scaler ? JSON.parse(metadata.fp16_scaler) : undefined;
  } catch {
    throw new Error(`${path} has unreadable run arguments or statistics`);
  }
  return {
    store: StateStore.fromNamedTensors(tensors),
    epoch: integer("epoch"),
    iteration: integer("iteration"),
    step: integer("step"),
    lastLayerStep: integer("last_layer_step"),
    meter,
    fp16Scaler,
    worldSize: metadata.world_size === undefined ? 1 : integer("world_size"),
    args,
  };
}

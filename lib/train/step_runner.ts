/**
 * Running one training iteration on the device-resident state: the fused step in a single process,
 * or, in a data-parallel job, the gradient graph, one all-reduce of the flat gradients and of the
 * centres' batch sums, and the update graph (the official order: DDP averages, then clip, step and
 * EMA; `update_center` all-reduces the teacher's batch sums). Either way the step is compiled per
 * patch-slot bucket on first use, and the statistics come back averaged over the ranks.
 *
 * @module
 */

import type { TensorData } from "../graph/graph.ts";
import { DeviceSession, type Placement } from "../runtime/device_session.ts";
import type { Communicator } from "../runtime/mpi.ts";
import type { ResidentState } from "../runtime/resident_state.ts";
import {
  buildIbotGradientStep,
  buildSplitIbotStep,
  SPLIT_STEP_VALUES,
  splitStepDivisors,
} from "./split_step.ts";
import { buildIbotStep, FOUND_INF, type IbotStepConfig, TEACHER_PREDICTION } from "./step.ts";

/** What one iteration returns: the statistics (averaged over the ranks) and the predictions. */
export interface IterationResult {
  /** The total loss, `cls + patch`. */
  readonly loss: number;
  /** The CLS term. */
  readonly cls: number;
  /** The patch term. */
  readonly patch: number;
  /** The official "acc" statistic. */
  readonly acc: number;
  /** The teacher's CLS argmax on global crop 0 of every rank's images, rank after rank. */
  readonly predictions: ArrayLike<bigint>;
  /** The true labels of the same images, in the same order. */
  readonly labels: ArrayLike<number>;
  /** Whether the loss scaler found an inf or NaN gradient (the update was skipped). */
  readonly foundInf: boolean;
}

/** How to compile and run the step. */
export interface StepRunnerOptions {
  /** The step's structure (its `slots` is ignored: each bucket is compiled as needed). */
  readonly config: IbotStepConfig;
  /** Where the sessions run (the resident state's device). */
  readonly placement: Placement;
  /** onnxruntime intra-op threads (default: all cores). */
  readonly threads?: number;
  /** The job's ranks; one rank runs the fused step. */
  readonly communicator: Communicator;
  /** Called with one line when a bucket is compiled. */
  readonly log: (line: string) => void;
}

/** The training iteration, compiled per patch-slot bucket on first use. */
export class StepRunner {
  readonly #options: StepRunnerOptions;
  readonly #buckets: readonly number[];
  /** The fused step (one rank) or the gradient graph (several), per bucket. */
  readonly #sessions = new Map<number, DeviceSession>();
  #update?: DeviceSession;

  /** A runner for the step of `options.config` at the patch-slot `buckets` (ascending). */
  constructor(options: StepRunnerOptions, buckets: readonly number[]) {
    this.#options = options;
    this.#buckets = buckets;
  }

  /** Whether `bucket` still has to be compiled (its first run takes longer). */
  needsCompile(bucket: number): boolean {
    return !this.#sessions.has(bucket);
  }

  /**
   * Runs one iteration at `bucket` patch slots: `feeds` holds the batch and the scalars of the
   * fused step (each graph takes its own), `labels` the batch's true labels; the state's `.next`
   * buffers receive the update (the caller swaps). Statistics that are not finite on any rank come
   * back not finite on every rank.
   */
  async run(
    feeds: Record<string, TensorData>,
    labels: ArrayLike<number>,
    bucket: number,
    state: ResidentState,
  ): Promise<IterationResult> {
    const comm = this.#options.communicator;
    const session = await this.#sessionFor(bucket);
    const out = await session.run(pick(feeds, session, state), state);
    const stats = Float64Array.of(...["loss", "cls", "patch", "acc"].map((k) => statistic(out, k)));
    const local = out[TEACHER_PREDICTION] as BigInt64Array;
    if (comm.size === 1) {
      return {
        loss: stats[0],
        cls: stats[1],
        patch: stats[2],
        acc: stats[3],
        predictions: local,
        labels,
        foundInf: FOUND_INF in out && statistic(out, FOUND_INF) !== 0,
      };
    }
    const grads = out[SPLIT_STEP_VALUES.grads] as Float32Array;
    const centers = out[SPLIT_STEP_VALUES.centerSum] as Float32Array;
    const centers2 = out[SPLIT_STEP_VALUES.center2Sum] as Float32Array;
    await comm.allreduceSum(grads);
    await comm.allreduceSum(centers);
    await comm.allreduceSum(centers2);
    await comm.allreduceSum(stats);
    const gathered = await comm.allgather(Float32Array.from(local, Number));
    const gatheredLabels = await comm.allgather(Float32Array.from(labels));
    const update = await this.#updateSession();
    const divisors = splitStepDivisors(this.#options.config, comm.size);
    const updateFeeds: Record<string, TensorData> = {
      ...pick(feeds, update, state),
      [SPLIT_STEP_VALUES.grads]: grads,
      [SPLIT_STEP_VALUES.centerSum]: centers,
      [SPLIT_STEP_VALUES.center2Sum]: centers2,
    };
    for (const [name, value] of Object.entries(divisors)) {
      updateFeeds[name] = Float32Array.of(value);
    }
    const updated = await update.run(updateFeeds, state);
    const n = comm.size;
    return {
      loss: stats[0] / n,
      cls: stats[1] / n,
      patch: stats[2] / n,
      acc: stats[3] / n,
      predictions: BigInt64Array.from(gathered.flatMap((g) => Array.from(g, BigInt))),
      labels: gatheredLabels.flatMap((g) => Array.from(g)),
      foundInf: FOUND_INF in updated && statistic(updated, FOUND_INF) !== 0,
    };
  }

  /** Releases every compiled graph. */
  release(): void {
    for (const session of this.#sessions.values()) session.release();
    this.#sessions.clear();
    this.#update?.release();
    this.#update = undefined;
  }

  async #sessionFor(bucket: number): Promise<DeviceSession> {
    let session = this.#sessions.get(bucket);
    if (!session) {
      const started = performance.now();
      const config = { ...this.#options.config, slots: bucket };
      const graph = this.#options.communicator.size === 1
        ? buildIbotStep(config).graph
        : buildIbotGradientStep(config).graph;
      session = await this.#compile(graph);
      this.#sessions.set(bucket, session);
      this.#options.log(
        `Compiled the training step for ${bucket} patch slots (bucket ${
          this.#buckets.indexOf(bucket) + 1
        } of ${this.#buckets.length}) in ${((performance.now() - started) / 1000).toFixed(1)} s`,
      );
    }
    return session;
  }

  async #updateSession(): Promise<DeviceSession> {
    this.#update ??= await this.#compile(buildSplitIbotStep(this.#options.config).update);
    return this.#update;
  }

  #compile(graph: Parameters<typeof DeviceSession.create>[0]): Promise<DeviceSession> {
    return DeviceSession.create(graph, {
      ...this.#options.placement,
      threads: this.#options.threads,
      memoryArena: false,
    });
  }
}

/** The feeds `session` takes that are not resident in `state`. */
function pick(
  feeds: Record<string, TensorData>,
  session: DeviceSession,
  state: ResidentState,
): Record<string, TensorData> {
  const picked: Record<string, TensorData> = {};
  for (const name of session.inputNames) {
    if (!state.has(name) && name in feeds) picked[name] = feeds[name];
  }
  return picked;
}

function statistic(out: Readonly<Record<string, TensorData>>, name: string): number {
  return (out[name] as Float32Array)[0];
}

/**
 * Running sums of one epoch's statistics (loss terms, acc, lr, wd) and the teacher's
 * pseudo-labels with the true labels, for the epoch's `log.txt` line. Serialisable, so an epoch
 * interrupted and resumed still logs the averages of all its iterations.
 *
 * @module
 */

import { clusterMetrics } from "./cluster_metrics.ts";

/** The plain-JSON state of an {@link EpochMeter}. */
export interface EpochMeterState {
  /** Sums of each statistic over the iterations so far. */
  readonly sums: Readonly<Record<StatName, number>>;
  /** Iterations so far. */
  readonly count: number;
  /** The teacher's argmax on global crop 0, per image so far. */
  readonly predictions: readonly number[];
  /** The true labels of the same images. */
  readonly labels: readonly number[];
}

/** The averaged statistics of `log.txt` (official keys without the `train_` prefix). */
export type StatName = "loss" | "cls" | "patch" | "lr" | "wd" | "acc";

/** An epoch's `log.txt` values: the averages plus the pseudo-label clustering metrics. */
export type EpochStats = Readonly<Record<StatName | "nmi" | "ari" | "fscore", number>>;

/** In the order of the official log.txt keys. */
const STATS: readonly StatName[] = ["loss", "cls", "patch", "lr", "wd", "acc"];

/** Accumulates an epoch's statistics. */
export class EpochMeter {
  #sums: Record<StatName, number>;
  #count: number;
  #predictions: number[];
  #labels: number[];

  constructor(state?: EpochMeterState) {
    this.#sums = { loss: 0, cls: 0, patch: 0, lr: 0, wd: 0, acc: 0, ...state?.sums };
    this.#count = state?.count ?? 0;
    this.#predictions = [...(state?.predictions ?? [])];
    this.#labels = [...(state?.labels ?? [])];
  }

  /** Adds one iteration: its statistics, and the teacher's predictions with the true labels. */
  add(
    values: Readonly<Record<StatName, number>>,
    predictions: ArrayLike<bigint>,
    labels: ArrayLike<number>,
  ): void {
    for (const name of STATS) this.#sums[name] += values[name];
    this.#count++;
    for (let i = 0; i < predictions.length; i++) this.#predictions.push(Number(predictions[i]));
    for (let i = 0; i < labels.length; i++) this.#labels.push(labels[i]);
  }

  /** Averages plus NMI, ARI and F of the pseudo-labels against the labels. */
  summary(): EpochStats {
    const n = Math.max(1, this.#count);
    const averages = Object.fromEntries(STATS.map((s) => [s, this.#sums[s] / n])) as Record<
      StatName,
      number
    >;
    return { ...averages, ...clusterMetrics(this.#predictions, this.#labels) };
  }

  /** The state, for a checkpoint's metadata. */
  state(): EpochMeterState {
    return {
      sums: { ...this.#sums },
      count: this.#count,
      predictions: this.#predictions,
      labels: this.#labels,
    };
  }
}

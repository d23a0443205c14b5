/**
 * The graphs of the weighted k-NN classifier (iBOT `knn_classifier`) that onnxruntime runs: the
 * block graph finds the nearest train rows of a chunk of test rows within one block of the train
 * bank and merges them into the running nearest neighbours, and the vote graph turns the final
 * neighbours into each test row's rank of its true class.
 *
 * @module
 */

import { Graph } from "../graph/graph.ts";
import { matmul } from "../graph/linalg.ts";
import { cast, div, equal, exp, greater, less, logicalAnd, logicalOr } from "../graph/math.ts";
import { sum, topK } from "../graph/reduce.ts";
import { gatherElements, scatterAdd } from "../graph/scatter.ts";
import { concat, gather, slice } from "../graph/shape.ts";

/** Input and output names of {@link buildKnnBlockGraph}. */
export const KNN_BLOCK_IO = {
  /** float32 [chunk, dim]: L2-normalised test rows (zero rows past the real ones). */
  test: "test",
  /** float32 [block, dim]: L2-normalised train rows. */
  train: "train",
  /** int64 [block]: the class of each train row. */
  trainLabels: "train_labels",
  /** float32 [chunk, k]: the running nearest similarities, descending (−∞ before any block). */
  bestSims: "best_sims",
  /** int64 [chunk, k]: the classes of the running nearest neighbours. */
  bestLabels: "best_labels",
  /** Output float32 [chunk, k]: the nearest similarities after this block, descending. */
  nextSims: "next_sims",
  /** Output int64 [chunk, k]: their classes. */
  nextLabels: "next_labels",
} as const;

/** Sizes of {@link buildKnnBlockGraph}. */
export interface KnnBlockSizes {
  /** Test rows per run. */
  readonly chunk: number;
  /** Train rows per run. */
  readonly block: number;
  /** Feature width. */
  readonly dim: number;
  /** Neighbours kept per test row (the largest k asked for). */
  readonly k: number;
}

/**
 * One step of the nearest-neighbour search: similarities s = test·trainᵀ [chunk, block]
 * (one MatMul), the min(k, block) largest of each row (TopK) with their train classes, then the
 * k largest of the running neighbours followed by this block's (TopK again over the
 * concatenation). Among equal similarities TopK keeps the lower position first, and the running
 * neighbours (earlier blocks) come first in the concatenation, so on onnxruntime's CPU kernels the
 * lower train row wins every tie, as in a search over the whole bank at once.
 */
export function buildKnnBlockGraph(sizes: KnnBlockSizes): Graph {
  const { chunk, block, dim, k } = sizes;
  const io = KNN_BLOCK_IO;
  const g = new Graph("knn_block");
  const test = g.input(io.test, "float32", [chunk, dim]);
  const train = g.input(io.train, "float32", [block, dim]);
  const trainLabels = g.input(io.trainLabels, "int64", [block]);
  const bestSims = g.input(io.bestSims, "float32", [chunk, k]);
  const bestLabels = g.input(io.bestLabels, "int64", [chunk, k]);

  const sims = matmul(test, train, { transB: true });
  const [blockSims, blockRows] = topK(sims, Math.min(k, block));
  const blockLabels = gather(trainLabels, blockRows, 0);
  const [nextSims, picked] = topK(concat([bestSims, blockSims], 1), k);
  g.output(io.nextSims, nextSims);
  g.output(io.nextLabels, gatherElements(concat([bestLabels, blockLabels], 1), picked, 1));
  return g;
}

/** Input and output names of {@link buildKnnVoteGraph}. */
export const KNN_VOTE_IO = {
  /** float32 [chunk, k]: the nearest similarities of each test row, descending. */
  sims: "sims",
  /** int64 [chunk, k]: their classes. */
  labels: "labels",
  /** int64 [chunk, 1]: the true class of each test row. */
  targets: "targets",
  /** Output float32 [chunk, checkpoints]: the 0-based rank of the true class at each checkpoint. */
  ranks: "ranks",
} as const;

/** Sizes and settings of {@link buildKnnVoteGraph}. */
export interface KnnVoteSizes {
  /** Test rows per run. */
  readonly chunk: number;
  /** Neighbours per test row. */
  readonly k: number;
  /** Number of classes. */
  readonly numClasses: number;
  /** Neighbour counts to rank at, ascending, each in 1..k. */
  readonly checkpoints: readonly number[];
  /** T of the vote weights exp(s / T). */
  readonly temperature: number;
}

/**
 * The weighted vote of the official `knn_classifier` at several neighbour counts: weights
 * exp(s / T) in float32 (as `distances.div_(T).exp_()`), class scores Σ_j weight_j·[class_j = c]
 * accumulated neighbour by neighbour (ScatterElements add, the first checkpoint's neighbours, then
 * the next ones on top), and the rank of the true class: the number of classes that score higher,
 * or equal with a lower class index. Rank 0 is a top-1 hit, rank < 5 a top-5 hit.
 */
export function buildKnnVoteGraph(sizes: KnnVoteSizes): Graph {
  const { chunk, k, numClasses, checkpoints, temperature } = sizes;
  const io = KNN_VOTE_IO;
  const g = new Graph("knn_vote");
  const sims = g.input(io.sims, "float32", [chunk, k]);
  const labels = g.input(io.labels, "int64", [chunk, k]);
  const targets = g.input(io.targets, "int64", [chunk, 1]);

  const weights = exp(div(sims, temperature));
  const classes = g.constant(Array.from({ length: numClasses }, (_, c) => c), "int64", [
    1,
    numClasses,
  ]);
  const lowerClass = less(classes, targets);
  let scores = g.filled(0, "float32", [chunk, numClasses]);
  let done = 0;
  const ranks = checkpoints.map((upTo) => {
    scores = scatterAdd(
      scores,
      slice(labels, [done], [upTo], [1]),
      slice(weights, [done], [upTo], [1]),
      1,
    );
    done = upTo;
    const own = gatherElements(scores, targets, 1);
    const ahead = logicalOr(greater(scores, own), logicalAnd(equal(scores, own), lowerClass));
    return sum(cast(ahead, "float32"), [1], true);
  });
  g.output(io.ranks, concat(ranks, 1));
  return g;
}

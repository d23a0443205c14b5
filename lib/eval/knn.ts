/**
 * Weighted k-nearest-neighbour classification of frozen features, as in iBOT's
 * `evaluation/eval_knn.py` (`knn_classifier`, inherited from DINO), run as graphs by onnxruntime
 * on all cores (or on CUDA).
 *
 * Every test feature votes with its k most similar train features (cosine similarity s_j of
 * L2-normalised rows): class c scores Σ_j exp(s_j / T)·[y_j = c], classes are ranked by score, and
 * top-1 / top-5 accuracy is reported in percent.
 *
 * The test rows are taken a chunk at a time and the train bank a block at a time (either may be
 * in memory or in a file on disk, see {@link FeatureBank}): each (chunk, block) step runs the
 * similarity MatMul, a TopK within the block and a TopK merge into the chunk's running nearest
 * neighbours (`buildKnnBlockGraph`); after the last block the vote graph ranks the true class at
 * every k (`buildKnnVoteGraph`). Memory is bounded by chunk × block similarities plus one chunk
 * and one block of features, whatever the sizes of the splits (only the labels, 4 bytes a row,
 * are held whole).
 *
 * Deterministic tie rules (PyTorch leaves them unspecified): among train rows with equal
 * similarity the lower row index is the nearer neighbour, and among classes with equal score the
 * lower class index ranks first. The second rule matters for classes that got no vote at all:
 * they all score 0 and fill the ranking after the voted classes in class-index order, so a target
 * class without votes can still count for top-5, as it does in the official `probs.sort`. The
 * class rule is computed exactly on every device; the row rule holds on the CPU, whose TopK keeps
 * the lower index first among equal values, but onnxruntime's CUDA TopK does not promise that
 * order, so there equal similarities at the k-th place may be broken the other way. Weights and
 * scores are float32 and summed neighbour by neighbour, as in the official float32 vote.
 *
 * @module
 */

import { CompiledGraph, type ExecutionProvider } from "../runtime/session.ts";
import type { FeatureBank } from "./feature_bank.ts";
import { buildKnnBlockGraph, buildKnnVoteGraph, KNN_BLOCK_IO, KNN_VOTE_IO } from "./knn_graphs.ts";

/** Accuracy of the k-NN classifier for one k. */
export interface KnnResult {
  /** The k that was asked for; the vote uses min(k, number of train rows) neighbours. */
  k: number;
  /** Top-1 accuracy over all test rows, in percent (0–100). */
  top1: number;
  /** Top-5 accuracy over all test rows, in percent (0–100). */
  top5: number;
}

/** Options of {@link knnClassify}. */
export interface KnnOptions {
  /** Neighbour counts to evaluate (default 10 20 100 200); k > train rows is clamped. */
  readonly ks?: readonly number[];
  /** T of the vote weights exp(s / T), positive (default 0.07, the official one). */
  readonly temperature?: number;
  /** Number of classes (default: one more than the largest label of either bank). */
  readonly numClasses?: number;
  /** Test rows per run (default 512): memory grows with chunk × block. */
  readonly chunkSize?: number;
  /** Train rows per run (default 65536). */
  readonly blockSize?: number;
  /** onnxruntime intra-op threads (default: every core). */
  readonly threads?: number;
  /** Where the graphs run (default `cpu`). */
  readonly device?: ExecutionProvider;
  /** Called after each chunk of test rows with the test rows done and the total. */
  readonly onProgress?: (done: number, total: number) => void;
}

/** Default test rows per run. */
export const DEFAULT_KNN_CHUNK = 512;
/**
 * Default train rows per run. Long blocks pay off: onnxruntime's TopK costs a fixed amount per row
 * besides its cost per entry (k = 200 of 65 536 entries took about half the time per entry of
 * k = 200 of 16 384), so the same similarities in fewer, longer rows are selected faster.
 */
export const DEFAULT_KNN_BLOCK = 65536;

/**
 * Weighted k-NN accuracy of `test`'s rows against `train`'s (iBOT `knn_classifier`), both banks
 * holding L2-normalised rows. The nearest neighbours are found once for the largest k and each
 * smaller k uses a prefix of them; a test row counts for top-1 when its label ranks first and for
 * top-5 when it ranks within the first five (with fewer than five classes, always). The tie rules
 * are in the module documentation.
 *
 * @returns one result per entry of `ks`, in the same order.
 */
export async function knnClassify(
  train: FeatureBank,
  test: FeatureBank,
  options: KnnOptions = {},
): Promise<KnnResult[]> {
  const { ks = [10, 20, 100, 200], temperature = 0.07 } = options;
  const nTrain = train.rows;
  const nTest = test.rows;
  const dim = train.dim;
  if (nTrain === 0 || nTest === 0) {
    throw new Error(`k-NN needs train and test rows, got ${nTrain} and ${nTest}`);
  }
  if (test.dim !== dim) {
    throw new Error(`the test features have width ${test.dim}, the train features ${dim}`);
  }
  for (const k of ks) {
    if (!Number.isInteger(k) || k < 1) {
      throw new Error(`every k must be a positive integer, got ${k}`);
    }
  }
  if (!(temperature > 0)) throw new Error(`temperature must be positive, got ${temperature}`);
  const numClasses = options.numClasses ?? 1 + Math.max(maxOf(train.labels), maxOf(test.labels));
  if (!Number.isInteger(numClasses) || numClasses < 1) {
    throw new Error(`numClasses must be a positive integer, got ${numClasses}`);
  }
  checkLabels(train.labels, numClasses, "train");
  checkLabels(test.labels, numClasses, "test");
  const chunk = Math.min(positive(options.chunkSize ?? DEFAULT_KNN_CHUNK, "chunkSize"), nTest);
  const block = Math.min(positive(options.blockSize ?? DEFAULT_KNN_BLOCK, "blockSize"), nTrain);
  if (ks.length === 0) return [];

  // The distinct neighbour counts actually used, ascending: the votes are ranked at each one.
  const checkpoints = [...new Set(ks.map((k) => Math.min(k, nTrain)))].sort((a, b) => a - b);
  const k = checkpoints[checkpoints.length - 1];
  const compile = { threads: options.threads, executionProviders: [options.device ?? "cpu"] };
  // Full blocks, and the last, shorter block when the bank does not divide into blocks.
  const blockGraph = await CompiledGraph.create(
    buildKnnBlockGraph({ chunk, block, dim, k }),
    compile,
  );
  const tail = nTrain % block;
  const tailGraph = tail === 0
    ? blockGraph
    : await CompiledGraph.create(buildKnnBlockGraph({ chunk, block: tail, dim, k }), compile);
  const voteGraph = await CompiledGraph.create(
    buildKnnVoteGraph({ chunk, k, numClasses, checkpoints, temperature }),
    compile,
  );
  const top1Hits = new Array<number>(checkpoints.length).fill(0);
  const top5Hits = new Array<number>(checkpoints.length).fill(0);
  try {
    const testRows = new Float32Array(chunk * dim);
    const trainRows = new Float32Array(block * dim);
    const trainLabels = new BigInt64Array(block);
    const bestSims = new Float32Array(chunk * k);
    const bestLabels = new BigInt64Array(chunk * k);
    const targets = new BigInt64Array(chunk);
    for (let first = 0; first < nTest; first += chunk) {
      const rows = Math.min(chunk, nTest - first);
      testRows.fill(0);
      await test.read(first, rows, testRows);
      bestSims.fill(-Infinity);
      bestLabels.fill(0n);
      for (let start = 0; start < nTrain; start += block) {
        const count = Math.min(block, nTrain - start);
        await train.read(start, count, trainRows);
        for (let j = 0; j < count; j++) trainLabels[j] = BigInt(train.labels[start + j]);
        const out = await (count === block ? blockGraph : tailGraph).run({
          [KNN_BLOCK_IO.test]: testRows,
          [KNN_BLOCK_IO.train]: trainRows.subarray(0, count * dim),
          [KNN_BLOCK_IO.trainLabels]: trainLabels.subarray(0, count),
          [KNN_BLOCK_IO.bestSims]: bestSims,
          [KNN_BLOCK_IO.bestLabels]: bestLabels,
        });
        bestSims.set(out[KNN_BLOCK_IO.nextSims] as Float32Array);
        bestLabels.set(out[KNN_BLOCK_IO.nextLabels] as BigInt64Array);
      }
      targets.fill(0n);
      for (let r = 0; r < rows; r++) targets[r] = BigInt(test.labels[first + r]);
      const { [KNN_VOTE_IO.ranks]: ranks } = await voteGraph.run({
        [KNN_VOTE_IO.sims]: bestSims,
        [KNN_VOTE_IO.labels]: bestLabels,
        [KNN_VOTE_IO.targets]: targets,
      });
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < checkpoints.length; c++) {
          const rank = ranks[r * checkpoints.length + c] as number;
          if (rank === 0) top1Hits[c]++;
          if (rank < 5) top5Hits[c]++;
        }
      }
      options.onProgress?.(first + rows, nTest);
    }
  } finally {
    await blockGraph.release();
    if (tailGraph !== blockGraph) await tailGraph.release();
    await voteGraph.release();
  }
  return ks.map((k) => {
    const c = checkpoints.indexOf(Math.min(k, nTrain));
    return { k, top1: (top1Hits[c] * 100) / nTest, top5: (top5Hits[c] * 100) / nTest };
  });
}

function maxOf(labels: Int32Array): number {
  let max = 0;
  for (const label of labels) max = Math.max(max, label);
  return max;
}

/** Checks that every label is a class index. */
function checkLabels(labels: Int32Array, numClasses: number, what: string): void {
  for (const label of labels) {
    if (label < 0 || label >= numClasses) {
      throw new Error(`the ${what} labels hold class ${label}, outside [0, ${numClasses})`);
    }
  }
}

function positive(value: number, name: string): number {
  if (!Number.isInteger(value) || value < 1) {
    throw new Error(`${name} must be a positive integer, got ${value}`);
  }
  return value;
}

/**
 * The k-NN classifier this toolkit had before it ran on onnxruntime: the weighted vote of iBOT's
 * `knn_classifier` computed in plain single-threaded TypeScript, kept as an independent reference
 * for the tests and the benchmark of `lib/eval/knn.ts`.
 *
 * Tie rules: among train rows with equal similarity the lower row index is the nearer neighbour;
 * among classes with equal score the lower class index ranks first. Scores are summed in float64.
 *
 * @module
 */

import type { KnnResult } from "../../lib/eval/knn.ts";

/** Test rows scored together; the similarity buffer holds this many rows of train similarities. */
const TEST_CHUNK = 32;
/** Test rows per dot-product micro-kernel step; TEST_CHUNK is a multiple of it. */
const KERNEL_ROWS = 4;
/** Train rows per block, reused by every test row of a chunk while they are in cache. */
const TRAIN_BLOCK = 256;

/**
 * Weighted k-NN accuracy of test features against train features (iBOT `knn_classifier`).
 *
 * For every test row: cosine similarities to all train rows (plain dot products, since the rows
 * are expected to be L2-normalised already); the top-k neighbours are
 * picked once for the largest k, and each smaller k uses a prefix of them; class c scores
 * Σ_j exp(s_j / temperature)·[y_j = c]; the test row counts for top-1 when its label ranks first
 * and for top-5 when it ranks within the first five. With fewer than five classes every class is
 * within the first five, so top-5 is 100%. The tie rules are in the module documentation.
 *
 * Cost: nTest·nTrain·dim multiply-adds on one thread, plus an O(nTrain) selection per test row.
 *
 * @param train row-major train features, shape (nTrain, dim), L2-normalised rows.
 * @param trainLabels class of each train row, shape (nTrain), each in [0, numClasses).
 * @param test row-major test features, shape (nTest, dim), L2-normalised rows.
 * @param testLabels class of each test row, shape (nTest), each in [0, numClasses).
 * @param dim feature dimension.
 * @param numClasses number of classes.
 * @param ks neighbour counts to evaluate (positive integers); k > nTrain is clamped to nTrain.
 * @param temperature T of the vote weights exp(s / T), positive (the official default 0.07).
 * @param onProgress called after each chunk of test rows with the test rows done and nTest.
 * @returns one result per entry of `ks`, in the same order.
 */
export function knnClassifyJs(
  train: Float32Array,
  trainLabels: Int32Array,
  test: Float32Array,
  testLabels: Int32Array,
  dim: number,
  numClasses: number,
  ks: readonly number[] = [10, 20, 100, 200],
  temperature = 0.07,
  onProgress?: (done: number, total: number) => void,
): KnnResult[] {
  const nTrain = rowCount(train, dim, "train");
  const nTest = rowCount(test, dim, "test");
  if (nTrain === 0 || nTest === 0) {
    throw new Error(`knnClassifyJs needs train and test rows, got ${nTrain} and ${nTest}`);
  }
  if (!Number.isInteger(numClasses) || numClasses < 1) {
    throw new Error(`numClasses must be a positive integer, got ${numClasses}`);
  }
  checkLabels(trainLabels, nTrain, numClasses, "trainLabels");
  checkLabels(testLabels, nTest, numClasses, "testLabels");
  for (const k of ks) {
    if (!Number.isInteger(k) || k < 1) {
      throw new Error(`every k must be a positive integer, got ${k}`);
    }
  }
  if (!(temperature > 0)) throw new Error(`temperature must be positive, got ${temperature}`);
  if (ks.length === 0) return [];

  // The distinct neighbour counts actually used, ascending: the votes are checked at each one.
  const checkpoints = [...new Set(ks.map((k) => Math.min(k, nTrain)))].sort((a, b) => a - b);
  const kMax = checkpoints[checkpoints.length - 1];
  const top1Hits = new Array<number>(checkpoints.length).fill(0);
  const top5Hits = new Array<number>(checkpoints.length).fill(0);

  const chunk = new Float32Array(TEST_CHUNK * dim);
  const similarities = new Float32Array(TEST_CHUNK * nTrain);
  const neighbourSims = new Float32Array(kMax);
  const neighbourRows = new Int32Array(kMax);
  const scores = new Float64Array(numClasses);

  for (let first = 0; first < nTest; first += TEST_CHUNK) {
    const rows = Math.min(TEST_CHUNK, nTest - first);
    chunk.fill(0);
    chunk.set(test.subarray(first * dim, (first + rows) * dim));
    chunkSimilarities(chunk, train, nTrain, dim, similarities);

    for (let r = 0; r < rows; r++) {
      const row = similarities.subarray(r * nTrain, (r + 1) * nTrain);
      selectTopK(row, kMax, neighbourSims, neighbourRows);
      const target = testLabels[first + r];
      scores.fill(0);
      let next = 0;
      for (let n = 0; n < kMax; n++) {
        scores[trainLabels[neighbourRows[n]]] += Math.exp(neighbourSims[n] / temperature);
        if (n + 1 === checkpoints[next]) {
          const rank = classRank(scores, target);
          if (rank === 0) top1Hits[next]++;
          if (rank < 5) top5Hits[next]++;
          next++;
        }
      }
    }
    onProgress?.(first + rows, nTest);
  }

  return ks.map((k) => {
    const c = checkpoints.indexOf(Math.min(k, nTrain));
    return { k, top1: (top1Hits[c] * 100) / nTest, top5: (top5Hits[c] * 100) / nTest };
  });
}

/** Number of rows of a row-major matrix, checking that its length is a multiple of `dim`. */
function rowCount(matrix: Float32Array, dim: number, what: string): number {
  if (!Number.isInteger(dim) || dim < 1) {
    throw new Error(`dim must be a positive integer, got ${dim}`);
  }
  if (matrix.length % dim !== 0) {
    throw new Error(`${what} has ${matrix.length} values, not a multiple of dim ${dim}`);
  }
  return matrix.length / dim;
}

/** Checks that there is one label per row and that every label is a class index. */
function checkLabels(labels: Int32Array, rows: number, numClasses: number, what: string): void {
  if (labels.length !== rows) {
    throw new Error(`${what} has ${labels.length} labels for ${rows} rows`);
  }
  for (const label of labels) {
    if (label < 0 || label >= numClasses) {
      throw new Error(`${what} holds class ${label}, outside [0, ${numClasses})`);
    }
  }
}

/**
 * Dot products of the TEST_CHUNK rows of `chunk` (zero rows past the real ones) with every train
 * row, into `out` (TEST_CHUNK, nTrain). The train rows are walked in blocks that stay in cache
 * while all chunk rows use them, and each step multiplies KERNEL_ROWS test rows by one train row
 * so that every loaded train value serves several accumulators.
 */
function chunkSimilarities(
  chunk: Float32Array,
  train: Float32Array,
  nTrain: number,
  dim: number,
  out: Float32Array,
): void {
  for (let blockStart = 0; blockStart < nTrain; blockStart += TRAIN_BLOCK) {
    const blockEnd = Math.min(blockStart + TRAIN_BLOCK, nTrain);
    for (let r = 0; r < TEST_CHUNK; r += KERNEL_ROWS) {
      const a0 = r * dim;
      const a1 = a0 + dim;
      const a2 = a1 + dim;
      const a3 = a2 + dim;
      for (let j = blockStart; j < blockEnd; j++) {
        const b = j * dim;
        let s0 = 0;
        let s1 = 0;
        let s2 = 0;
        let s3 = 0;
        for (let d = 0; d < dim; d++) {
          const x = train[b + d];
          s0 += chunk[a0 + d] * x;
          s1 += chunk[a1 + d] * x;
          s2 += chunk[a2 + d] * x;
          s3 += chunk[a3 + d] * x;
        }
        out[r * nTrain + j] = s0;
        out[(r + 1) * nTrain + j] = s1;
        out[(r + 2) * nTrain + j] = s2;
        out[(r + 3) * nTrain + j] = s3;
      }
    }
  }
}

/**
 * Writes the k largest entries of `row` and their indices into `sims` and `indices`, nearest
 * first (ties: lower index first). Uses a size-k heap whose root is the worst kept neighbour, so a
 * scan costs O(n) plus O(log k) per replacement; a final heap sort orders the k kept entries.
 */
function selectTopK(row: Float32Array, k: number, sims: Float32Array, indices: Int32Array): void {
  for (let i = 0; i < k; i++) {
    sims[i] = row[i];
    indices[i] = i;
  }
  for (let i = (k >> 1) - 1; i >= 0; i--) siftDown(sims, indices, i, k);
  // Later rows lose ties against kept ones, so only a strictly larger similarity gets in.
  for (let i = k; i < row.length; i++) {
    if (row[i] > sims[0]) {
      sims[0] = row[i];
      indices[0] = i;
      siftDown(sims, indices, 0, k);
    }
  }
  for (let end = k - 1; end > 0; end--) {
    swap(sims, indices, 0, end);
    siftDown(sims, indices, 0, end);
  }
}

/** Whether heap entry a is a worse neighbour than entry b (smaller similarity, or equal and later). */
function worse(sims: Float32Array, indices: Int32Array, a: number, b: number): boolean {
  return sims[a] < sims[b] || (sims[a] === sims[b] && indices[a] > indices[b]);
}

/** Restores the worst-at-root heap order below `pos` within the first `size` entries. */
function siftDown(sims: Float32Array, indices: Int32Array, pos: number, size: number): void {
  for (;;) {
    const left = 2 * pos + 1;
    if (left >= size) return;
    const right = left + 1;
    const child = right < size && worse(sims, indices, right, left) ? right : left;
    if (!worse(sims, indices, child, pos)) return;
    swap(sims, indices, pos, child);
    pos = child;
  }
}

function swap(sims: Float32Array, indices: Int32Array, a: number, b: number): void {
  const s = sims[a];
  sims[a] = sims[b];
  sims[b] = s;
  const i = indices[a];
  indices[a] = indices[b];
  indices[b] = i;
}

/** 0-based rank of `target` when classes are sorted by score, descending, lower index first on ties. */
function classRank(scores: Float64Array, target: number): number {
  const own = scores[target];
  let rank = 0;
  for (let c = 0; c < scores.length; c++) {
    if (scores[c] > own || (scores[c] === own && c < target)) rank++;
  }
  return rank;
}

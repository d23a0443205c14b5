/**
 * The linear assignment problem and the clustering accuracy built on it. `linearSumAssignment`
 * pairs rows with columns one to one (min(rows, cols) pairs) so that the summed cost is smallest
 * (or largest), as `scipy.optimize.linear_sum_assignment` does; it is the shortest augmenting
 * path form of the Hungarian method (Jonker–Volgenant), O(n²·m) for n ≤ m. `hungarianAccuracy` is
 * the adjusted accuracy of the official `eval_pred` (`unsup_cls.py`): clusters are matched one to
 * one with classes so that the most images agree, and the agreeing share is the accuracy.
 *
 * ```ts
 * import { hungarianAccuracy } from "./hungarian.ts";
 * hungarianAccuracy([2, 2, 0, 0, 1], [0, 0, 1, 1, 1]); // 0.8: 2 → 0 and 0 → 1 match 4 of 5
 * ```
 *
 * @module
 */

/** An optimal assignment: `rows[k]` is paired with `cols[k]`, rows ascending. */
export interface Assignment {
  /** Row of each pair, ascending. */
  readonly rows: Int32Array;
  /** Column of each pair. */
  readonly cols: Int32Array;
  /** Summed cost (or weight) of the pairs. */
  readonly total: number;
}

/**
 * The optimal one-to-one assignment of the `rows` × `cols` matrix `cost` (row-major): min(rows,
 * cols) pairs, each row and each column used at most once, whose summed entries are smallest
 * (largest with `maximize`). Every entry must be finite; under ties one optimum is returned.
 */
export function linearSumAssignment(
  cost: ArrayLike<number>,
  rows: number,
  cols: number,
  maximize = false,
): Assignment {
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0) {
    throw new Error(`a cost matrix needs non-negative integer sizes, got ${rows}×${cols}`);
  }
  if (cost.length !== rows * cols) {
    throw new Error(
      `a ${rows}×${cols} cost matrix needs ${rows * cols} entries, got ${cost.length}`,
    );
  }
  for (let k = 0; k < cost.length; k++) {
    if (!Number.isFinite(cost[k])) {
      const [i, j] = [Math.floor(k / cols), k % cols];
      throw new Error(`cost matrix entry (${i}, ${j}) is ${cost[k]}; every entry must be finite`);
    }
  }
  // The working matrix has no more rows than columns, and is minimised.
  const transposed = rows > cols;
  const n = transposed ? cols : rows;
  const m = transposed ? rows : cols;
  const work = new Float64Array(n * m);
  const sign = maximize ? -1 : 1;
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      work[transposed ? j * m + i : i * m + j] = sign * cost[i * cols + j];
    }
  }
  const rowOfCol = shortestAugmentingPaths(work, n, m);

  const pairs: [number, number][] = [];
  for (let j = 0; j < m; j++) {
    if (rowOfCol[j] < 0) continue;
    pairs.push(transposed ? [j, rowOfCol[j]] : [rowOfCol[j], j]);
  }
  pairs.sort((a, b) => a[0] - b[0]);
  let total = 0;
  for (const [i, j] of pairs) total += cost[i * cols + j];
  return {
    rows: Int32Array.from(pairs, (p) => p[0]),
    cols: Int32Array.from(pairs, (p) => p[1]),
    total,
  };
}

/**
 * Minimum-cost assignment of every one of the `n` rows of `cost` (n × m, row-major, m ≥ n) to a
 * distinct column: the row of each column, −1 where a column is left free. Rows are added one at
 * a time; each addition follows a shortest augmenting path in reduced costs
 * cost(i, j) − u[i] − v[j] ≥ 0 (Dijkstra over the columns), then updates the potentials u and v
 * so that reduced costs stay non-negative.
 */
function shortestAugmentingPaths(cost: Float64Array, n: number, m: number): Int32Array {
  // Index 0 of the column arrays is a virtual column that holds the row being added.
  const u = new Float64Array(n + 1);
  const v = new Float64Array(m + 1);
  const rowOf = new Int32Array(m + 1); // 1-based row of column j, 0 when free
  const previous = new Int32Array(m + 1);
  const distance = new Float64Array(m + 1);
  const done = new Uint8Array(m + 1);
  for (let row = 1; row <= n; row++) {
    rowOf[0] = row;
    distance.fill(Infinity);
    done.fill(0);
    let column = 0;
    do {
      done[column] = 1;
      const i = rowOf[column];
      const offset = (i - 1) * m - 1; // cost[offset + j] is cost(i − 1, j − 1)
      const ui = u[i];
      let delta = Infinity;
      let next = 0;
      for (let j = 1; j <= m; j++) {
        if (done[j]) continue;
        const reduced = cost[offset + j] - ui - v[j];
        if (reduced < distance[j]) {
          distance[j] = reduced;
          previous[j] = column;
        }
        // Among equally near columns a free one wins: the path ends there (few steps on ties).
        const freeTie = distance[j] === delta && rowOf[j] === 0 && rowOf[next] !== 0;
        if (distance[j] < delta || freeTie) {
          delta = distance[j];
          next = j;
        }
      }
      for (let j = 0; j <= m; j++) {
        if (done[j]) {
          u[rowOf[j]] += delta;
          v[j] -= delta;
        } else {
          distance[j] -= delta;
        }
      }
      column = next;
    } while (rowOf[column] !== 0);
    while (column !== 0) {
      const before = previous[column];
      rowOf[column] = rowOf[before];
      column = before;
    }
  }
  return Int32Array.from(rowOf.subarray(1), (row) => row - 1);
}

/** The one-to-one matching of clusters with classes that the most images agree with. */
export interface ClusterMatching {
  /** Each matched cluster id and its class; unmatched clusters are absent. */
  readonly classOf: ReadonlyMap<number, number>;
  /** Images whose cluster is matched with their class. */
  readonly correct: number;
  /** `correct` over the number of images (0 for none). */
  readonly accuracy: number;
}

/**
 * Matches the cluster ids of `predicted` one to one with the labels of `truth` (any integers,
 * same length) so that the most images agree: a maximum-weight assignment on the contingency
 * table, min(clusters, classes) pairs. With as many clusters as classes this is the official
 * `get_y_preds`; with more clusters the images of the unmatched ones count as wrong.
 */
export function matchClusters(
  predicted: ArrayLike<number>,
  truth: ArrayLike<number>,
): ClusterMatching {
  const n = predicted.length;
  if (n !== truth.length) {
    throw new Error(`matchClusters: ${n} predictions for ${truth.length} labels`);
  }
  const clusters = distinctSorted(predicted);
  const classes = distinctSorted(truth);
  const clusterIndex = new Map(clusters.map((c, k) => [c, k]));
  const classIndex = new Map(classes.map((c, k) => [c, k]));
  const counts = new Float64Array(clusters.length * classes.length);
  for (let i = 0; i < n; i++) {
    counts[clusterIndex.get(predicted[i])! * classes.length + classIndex.get(truth[i])!]++;
  }
  const best = linearSumAssignment(counts, clusters.length, classes.length, true);
  const classOf = new Map<number, number>();
  for (let k = 0; k < best.rows.length; k++) {
    classOf.set(clusters[best.rows[k]], classes[best.cols[k]]);
  }
  return { classOf, correct: best.total, accuracy: n === 0 ? 0 : best.total / n };
}

/**
 * The official adjusted accuracy (`eval_pred(..., calc_acc=True)`): the share of images whose
 * cluster is matched, one to one, with their class (see {@link matchClusters}); in [0, 1].
 */
export function hungarianAccuracy(predicted: ArrayLike<number>, truth: ArrayLike<number>): number {
  return matchClusters(predicted, truth).accuracy;
}

function distinctSorted(values: ArrayLike<number>): number[] {
  return [...new Set(Array.from(values))].sort((a, b) => a - b);
}

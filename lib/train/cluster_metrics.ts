/**
 * The end-of-epoch clustering metrics of the official training log (`eval_pred` with sklearn):
 * normalised mutual information (arithmetic mean normalisation), adjusted Rand index and the
 * Fowlkes–Mallows score between the teacher's argmax "pseudo-labels" and the true labels.
 *
 * @module
 */

/** Clustering agreement between predicted cluster ids and true labels. */
export interface ClusterMetrics {
  /** Normalised mutual information (arithmetic-mean normalisation), 0–1. */
  readonly nmi: number;
  /** Adjusted Rand index, 1 for identical partitions, about 0 for chance. */
  readonly ari: number;
  /** Fowlkes–Mallows score, 0–1. */
  readonly fscore: number;
}

/** Counts of each (predicted, true) pair and of each predicted and each true label. */
function contingency(predicted: ArrayLike<number>, truth: ArrayLike<number>) {
  const cells = new Map<string, { predicted: number; truth: number; count: number }>();
  const rows = new Map<number, number>();
  const cols = new Map<number, number>();
  for (let i = 0; i < predicted.length; i++) {
    const key = `${predicted[i]},${truth[i]}`;
    const cell = cells.get(key) ?? { predicted: predicted[i], truth: truth[i], count: 0 };
    cell.count++;
    cells.set(key, cell);
    rows.set(predicted[i], (rows.get(predicted[i]) ?? 0) + 1);
    cols.set(truth[i], (cols.get(truth[i]) ?? 0) + 1);
  }
  return { cells: [...cells.values()], rows, cols };
}

const pairs = (n: number) => (n * (n - 1)) / 2;

function entropy(counts: Iterable<number>, n: number): number {
  let h = 0;
  for (const c of counts) h -= (c / n) * Math.log(c / n);
  return h;
}

function sumPairs(counts: Iterable<number>): number {
  let s = 0;
  for (const c of counts) s += pairs(c);
  return s;
}

/** NMI, ARI and Fowlkes–Mallows F of `predicted` against `truth` (same length, any integer ids). */
export function clusterMetrics(
  predicted: ArrayLike<number>,
  truth: ArrayLike<number>,
): ClusterMetrics {
  const n = predicted.length;
  if (n !== truth.length) {
    throw new Error(`clusterMetrics: ${n} predictions for ${truth.length} labels`);
  }
  if (n === 0) return { nmi: 0, ari: 0, fscore: 0 };
  const { cells, rows, cols } = contingency(predicted, truth);

  let mutual = 0;
  for (const cell of cells) {
    mutual += (cell.count / n) *
      Math.log((cell.count * n) / (rows.get(cell.predicted)! * cols.get(cell.truth)!));
  }
  const meanEntropy = (entropy(rows.values(), n) + entropy(cols.values(), n)) / 2;
  const nmi = meanEntropy === 0 ? 1 : Math.max(0, mutual / meanEntropy);

  const sumCells = sumPairs(cells.map((c) => c.count));
  const sumRows = sumPairs(rows.values());
  const sumCols = sumPairs(cols.values());
  const expected = n > 1 ? (sumRows * sumCols) / pairs(n) : 0;
  const maximum = (sumRows + sumCols) / 2;
  const ari = maximum === expected ? 1 : (sumCells - expected) / (maximum - expected);
  const fscore = sumRows === 0 || sumCols === 0 ? 0 : sumCells / Math.sqrt(sumRows * sumCols);
  return { nmi, ari, fscore };
}

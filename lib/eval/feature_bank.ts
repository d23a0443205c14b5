/**
 * Labelled feature rows that a classifier reads a range at a time, wherever they live: in memory
 * ({@link memoryBank}) or in a file on disk (`openFeatureFile`), and the row normalisation of
 * `F.normalize(x, dim=1, p=2)` that both apply.
 *
 * @module
 */

/** Norm floor of `torch.nn.functional.normalize`: rows are divided by max(‖x‖, eps). */
const NORM_EPS = 1e-12;

/** Rows of features with one class label each, read a range at a time. */
export interface FeatureBank {
  /** Number of rows. */
  readonly rows: number;
  /** Feature width. */
  readonly dim: number;
  /** The class of each row, shape (rows). */
  readonly labels: Int32Array;
  /**
   * Copies rows [first, first + count) into the start of `into` (count·dim values, row-major);
   * the rest of `into` is left as it is.
   */
  read(first: number, count: number, into: Float32Array): Promise<void>;
}

/**
 * A {@link FeatureBank} over row-major features (rows, dim) held in memory (not copied).
 *
 * @param features row-major matrix of shape (rows, dim).
 * @param labels one class per row.
 * @param dim feature width.
 */
export function memoryBank(features: Float32Array, labels: Int32Array, dim: number): FeatureBank {
  const rows = rowCount(features, dim, "features");
  if (labels.length !== rows) {
    throw new Error(`${labels.length} labels were given for ${rows} rows`);
  }
  return {
    rows,
    dim,
    labels,
    read(first, count, into) {
      checkRange(first, count, rows, into, dim);
      into.set(features.subarray(first * dim, (first + count) * dim));
      return Promise.resolve();
    },
  };
}

/** Checks that rows [first, first + count) exist and fit into `into`, or throws one sentence. */
export function checkRange(
  first: number,
  count: number,
  rows: number,
  into: Float32Array,
  dim: number,
): void {
  if (!Number.isInteger(first) || !Number.isInteger(count) || first < 0 || first + count > rows) {
    throw new Error(`rows [${first}, ${first + count}) are not within the bank's ${rows} rows`);
  }
  if (into.length < count * dim) {
    throw new Error(`${count} rows of width ${dim} do not fit into ${into.length} values`);
  }
}

/**
 * L2-normalises each row of a row-major (rows, dim) matrix **in place** and returns the same
 * array, like `F.normalize(x, dim=1, p=2)`: every row is divided by max(‖row‖₂, 1e-12), so
 * all-zero rows stay zero.
 *
 * @param features row-major matrix of shape (rows, dim); its length must be a multiple of `dim`.
 * @param dim the row length (feature dimension).
 * @returns `features` itself, now with unit-norm (or zero) rows.
 */
export function l2NormalizeRows(features: Float32Array, dim: number): Float32Array {
  const rows = rowCount(features, dim, "features");
  for (let r = 0; r < rows; r++) {
    const start = r * dim;
    let sumSq = 0;
    for (let d = 0; d < dim; d++) sumSq += features[start + d] * features[start + d];
    const denominator = Math.max(Math.sqrt(sumSq), NORM_EPS);
    for (let d = 0; d < dim; d++) features[start + d] /= denominator;
  }
  return features;
}

/** Number of rows of a row-major matrix, checking that its length is a multiple of `dim`. */
export function rowCount(matrix: Float32Array, dim: number, what: string): number {
  if (!Number.isInteger(dim) || dim < 1) {
    throw new Error(`dim must be a positive integer, got ${dim}`);
  }
  if (matrix.length % dim !== 0) {
    throw new Error(`${what} has ${matrix.length} values, not a multiple of dim ${dim}`);
  }
  return matrix.length / dim;
}

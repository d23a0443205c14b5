import { assert, assertClose } from "../assert.ts";
import { clusterMetrics } from "../../lib/train/cluster_metrics.ts";

/** Asserts NMI, ARI and Fowlkes–Mallows F of `predicted` against `truth` to 1e-12. */
function assertMetrics(
  predicted: number[],
  truth: number[],
  expected: { nmi: number; ari: number; fscore: number },
): void {
  const m = clusterMetrics(predicted, truth);
  assertClose([m.nmi, m.ari, m.fscore], [expected.nmi, expected.ari, expected.fscore], 0, 1e-12);
}

Deno.test("clusterMetrics: a perfect match up to relabeling scores 1, 1, 1", () => {
  const truth = [0, 0, 1, 1, 1, 2, 2, 3];
  assertMetrics(truth, truth, { nmi: 1, ari: 1, fscore: 1 });
  // The same partition under other, non-contiguous ids.
  assertMetrics([7, 7, -1, -1, -1, 40, 40, 5], truth, { nmi: 1, ari: 1, fscore: 1 });
  // Typed arrays work as well.
  const m = clusterMetrics(new Int32Array([2, 2, 0, 0]), new Uint8Array([5, 5, 9, 9]));
  assert.deepEqual(m, { nmi: 1, ari: 1, fscore: 1 });
});

Deno.test("clusterMetrics: a hand-computed example with two clusters against three classes", () => {
  // predicted 0 0 0 1 1 1, truth 0 0 1 1 2 2 (n = 6). Contingency table (rows: predicted):
  //   [2 1 0]
  //   [0 1 2]   row sums a = (3, 3), column sums b = (2, 2, 2).
  // NMI (arithmetic): MI = Σ n_ij/n · ln(n·n_ij / (a_i·b_j)) = 2 · (2/6)·ln(6·2/(3·2)) +
  //   2 · (1/6)·ln(6·1/(3·2)) = (2/3)·ln 2; H(pred) = ln 2, H(truth) = ln 3;
  //   NMI = MI / ((H(pred) + H(truth)) / 2) = (4/3)·ln 2 / ln 6.
  // ARI: Σ C(n_ij, 2) = 1 + 1 = 2; Σ C(a_i, 2) = 3 + 3 = 6; Σ C(b_j, 2) = 1 + 1 + 1 = 3;
  //   expected = 6·3 / C(6, 2) = 18/15 = 1.2; max = (6 + 3)/2 = 4.5;
  //   ARI = (2 − 1.2) / (4.5 − 1.2) = 8/33.
  // Fowlkes–Mallows: Σ C(n_ij, 2) / √(Σ C(a_i, 2) · Σ C(b_j, 2)) = 2 / √18 = √2 / 3.
  assertMetrics([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2], {
    nmi: (4 / 3) * Math.log(2) / Math.log(6),
    ari: 8 / 33,
    fscore: Math.SQRT2 / 3,
  });
});

Deno.test("clusterMetrics: the scores are symmetric in the two labelings", () => {
  const a = [0, 0, 0, 1, 1, 1, 2, 2, 0];
  const b = [1, 1, 0, 0, 2, 2, 2, 1, 1];
  const ab = clusterMetrics(a, b);
  const ba = clusterMetrics(b, a);
  assertClose([ab.nmi, ab.ari, ab.fscore], [ba.nmi, ba.ari, ba.fscore], 0, 1e-12);
});

Deno.test("clusterMetrics: independent labelings have NMI 0 and ARI at or below 0", () => {
  // Each (predicted, truth) pair of a 2×2 grid occurs once: MI = 0.
  // ARI: Σ C(n_ij, 2) = 0; Σ C(a_i, 2) = Σ C(b_j, 2) = 2; expected = 2·2 / C(4, 2) = 2/3;
  //   max = 2; ARI = (0 − 2/3) / (2 − 2/3) = −1/2. F = 0 (no pair is together in both).
  assertMetrics([0, 0, 1, 1], [0, 1, 0, 1], { nmi: 0, ari: -0.5, fscore: 0 });
  // Each pair three times (n = 12): MI = 0; Σ C(n_ij, 2) = 4·3 = 12;
  //   Σ C(a_i, 2) = Σ C(b_j, 2) = 2·15 = 30; expected = 900 / C(12, 2) = 150/11; max = 30;
  //   ARI = (12 − 150/11) / (30 − 150/11) = (−18/11) / (180/11) = −0.1; F = 12 / 30 = 0.4.
  const predicted = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1];
  const truth = [0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1];
  assertMetrics(predicted, truth, { nmi: 0, ari: -0.1, fscore: 0.4 });
  // One cluster against two classes carries no information: MI = 0; Σ C(n_ij, 2) = 2,
  //   Σ C(a_i, 2) = 6, Σ C(b_j, 2) = 2, expected = 6·2 / 6 = 2 = Σ C(n_ij, 2), so ARI = 0;
  //   F = 2 / √(6·2) = 1/√3.
  assertMetrics([3, 3, 3, 3], [0, 1, 0, 1], { nmi: 0, ari: 0, fscore: 1 / Math.sqrt(3) });
});

Deno.test("clusterMetrics: degenerate inputs follow sklearn's conventions", () => {
  // One cluster and one class: both partitions are identical.
  assertMetrics([1, 1, 1], [4, 4, 4], { nmi: 1, ari: 1, fscore: 1 });
  // All singletons on both sides: identical partitions; no pair is together anywhere (F = 0).
  assertMetrics([0, 1, 2], [5, 6, 7], { nmi: 1, ari: 1, fscore: 0 });
  assert.deepEqual(clusterMetrics([], []), { nmi: 0, ari: 0, fscore: 0 });
  assert.throws(() => clusterMetrics([0, 1], [0]), /2 predictions for 1 labels/);
});

import { join } from "node:path";
import { assert, assertClose } from "../assert.ts";
import {
  type Assignment,
  hungarianAccuracy,
  linearSumAssignment,
  matchClusters,
} from "../../lib/eval/hungarian.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { PYTHON, torchScriptOutput } from "../reference/torch.ts";
import { reportMissingTool } from "../missing_tool.ts";
import { withTempDir } from "../data/fixtures.ts";

/** True when python3 can import scipy.optimize; otherwise the scipy comparison is reported. */
function scipyAvailable(): boolean {
  let found = false;
  try {
    found = new Deno.Command(PYTHON, {
      args: ["-c", "from scipy.optimize import linear_sum_assignment"],
      stdout: "null",
      stderr: "null",
    }).outputSync().success;
  } catch {
    found = false;
  }
  if (!found) {
    reportMissingTool(
      "scipy comparison",
      `${PYTHON} cannot import scipy.optimize (apt-get install python3-scipy)`,
    );
  }
  return found;
}

/** Asserts that `a` pairs distinct rows with distinct columns, min(rows, cols) times, summing to total. */
function assertValid(a: Assignment, cost: number[], rows: number, cols: number): void {
  assert.equal(a.rows.length, Math.min(rows, cols));
  assert.equal(new Set(a.rows).size, a.rows.length, "a row is used twice");
  assert.equal(new Set(a.cols).size, a.cols.length, "a column is used twice");
  for (let k = 1; k < a.rows.length; k++) assert(a.rows[k - 1] < a.rows[k], "rows not ascending");
  let total = 0;
  for (let k = 0; k < a.rows.length; k++) total += cost[a.rows[k] * cols + a.cols[k]];
  assertClose([a.total], [total], 0, 1e-12);
}

/** The optimum by trying every injection of the smaller side into the larger (small sizes only). */
function bruteForce(cost: number[], rows: number, cols: number, maximize: boolean): number {
  const at = (i: number, j: number) => rows <= cols ? cost[i * cols + j] : cost[j * cols + i];
  const [n, m] = rows <= cols ? [rows, cols] : [cols, rows];
  let best = maximize ? -Infinity : Infinity;
  const used = new Array<boolean>(m).fill(false);
  const visit = (i: number, sum: number) => {
    if (i === n) {
      best = maximize ? Math.max(best, sum) : Math.min(best, sum);
      return;
    }
    for (let j = 0; j < m; j++) {
      if (used[j]) continue;
      used[j] = true;
      visit(i + 1, sum + at(i, j));
      used[j] = false;
    }
  };
  visit(0, 0);
  return best;
}

Deno.test("linearSumAssignment: hand-made square and rectangular cases", () => {
  // The classic 3 × 3 example: rows 0, 1, 2 take columns 1, 0, 2 for 1 + 2 + 2 = 5.
  const cost = [4, 1, 3, 2, 0, 5, 3, 2, 2];
  const min = linearSumAssignment(cost, 3, 3);
  assert.deepEqual([...min.rows], [0, 1, 2]);
  assert.deepEqual([...min.cols], [1, 0, 2]);
  assert.equal(min.total, 5);
  // Maximising: 4 + 5 + 2 = 11 (rows 0, 1, 2 take columns 0, 2, 1).
  const max = linearSumAssignment(cost, 3, 3, true);
  assert.deepEqual([...max.cols], [0, 2, 1]);
  assert.equal(max.total, 11);
  // 2 × 3: row 0 takes column 2 (1), row 1 column 0 (2); column 1 stays free.
  const wide = linearSumAssignment([5, 9, 1, 2, 8, 7], 2, 3);
  assert.deepEqual([[...wide.rows], [...wide.cols], wide.total], [[0, 1], [2, 0], 3]);
  // Its transpose, 3 × 2: rows 2 and 0 are used, row 1 is left out.
  const tall = linearSumAssignment([5, 2, 9, 8, 1, 7], 3, 2);
  assert.deepEqual([[...tall.rows], [...tall.cols], tall.total], [[0, 2], [1, 0], 3]);
  // All ties: any permutation is optimal.
  const tied = linearSumAssignment(new Array(16).fill(3), 4, 4);
  assertValid(tied, new Array(16).fill(3), 4, 4);
  assert.equal(tied.total, 12);
  // Empty and degenerate sizes.
  assert.equal(linearSumAssignment([], 0, 3).rows.length, 0);
  assert.deepEqual([...linearSumAssignment([-2], 1, 1).cols], [0]);
});

Deno.test("linearSumAssignment: bad input is one sentence", () => {
  assert.throws(
    () => linearSumAssignment([1, 2, 3], 2, 2),
    /2×2 cost matrix needs 4 entries, got 3/,
  );
  assert.throws(
    () => linearSumAssignment([1, NaN, 3, 4], 2, 2),
    /cost matrix entry \(0, 1\) is NaN; every entry must be finite/,
  );
  assert.throws(() => linearSumAssignment([], -1, 0), /non-negative integer sizes, got -1×0/);
});

Deno.test("linearSumAssignment: random matrices reach the brute-force optimum", () => {
  const rng = new Rng(11);
  for (let trial = 0; trial < 200; trial++) {
    const rows = 1 + rng.int(6);
    const cols = 1 + rng.int(6);
    // Small integer entries make ties common.
    const cost = Array.from({ length: rows * cols }, () => rng.int(4) - 1);
    for (const maximize of [false, true]) {
      const a = linearSumAssignment(cost, rows, cols, maximize);
      assertValid(a, cost, rows, cols);
      assert.equal(a.total, bruteForce(cost, rows, cols, maximize), `trial ${trial}`);
    }
  }
});

Deno.test("matchClusters and hungarianAccuracy: hand-made cases", () => {
  // Clusters 7 → class 1 (3 images agree) and 3 → class 0 (2 agree): 5 of 6.
  const m = matchClusters([7, 7, 7, 3, 3, 7], [1, 1, 1, 0, 0, 0]);
  assert.deepEqual([...m.classOf], [[3, 0], [7, 1]]);
  assert.equal(m.correct, 5);
  assert.equal(m.accuracy, 5 / 6);
  // A relabelled perfect clustering scores 1.
  assert.equal(hungarianAccuracy([2, 2, 0, 0, 1, 1], [0, 0, 1, 1, 2, 2]), 1);
  // More clusters than classes: only two clusters can be matched; clusters 2 and 3 count wrong.
  assert.equal(hungarianAccuracy([0, 0, 1, 1, 2, 3], [0, 0, 1, 1, 1, 0]), 4 / 6);
  // One cluster for two classes: the larger class is matched.
  assert.equal(hungarianAccuracy([5, 5, 5, 5, 5], [0, 1, 1, 0, 1]), 3 / 5);
  assert.equal(hungarianAccuracy([], []), 0);
  assert.throws(() => matchClusters([0, 1], [0]), /2 predictions for 1 labels/);
});

Deno.test({
  name: "linearSumAssignment and hungarianAccuracy agree with scipy (and the official eval_pred)",
  ignore: !scipyAvailable(),
  fn: async () => {
    const rng = new Rng(5);
    const matrices: { cost: number[][]; maximize: boolean }[] = [];
    for (let trial = 0; trial < 60; trial++) {
      const rows = 1 + rng.int(12);
      const cols = trial % 3 === 0 ? rows : 1 + rng.int(12);
      // Every fourth matrix has small integers (many ties), the others uniform reals.
      const value = () => trial % 4 === 0 ? rng.int(3) : rng.uniformRange(-5, 5);
      const cost = Array.from({ length: rows }, () => Array.from({ length: cols }, value));
      matrices.push({ cost, maximize: trial % 2 === 1 });
    }
    // Two larger ones: a wide matrix of few distinct integers (ties everywhere), a tall real one.
    for (
      const [rows, cols, value] of [[150, 600, () => rng.int(5)], [
        500,
        120,
        () => rng.uniform(),
      ]] as const
    ) {
      const cost = Array.from({ length: rows }, () => Array.from({ length: cols }, value));
      matrices.push({ cost, maximize: rows < cols });
    }
    const clusterings: { label: number[]; pred: number[] }[] = [];
    for (let trial = 0; trial < 30; trial++) {
      const k = 2 + rng.int(9);
      const n = 20 + rng.int(200);
      const label = Array.from({ length: n }, (_, i) => i < k ? i : rng.int(k));
      // Noisy clusters: a fixed permutation of the label, or a random id for a share of images.
      const permutation = Array.from({ length: k }, (_, i) => (i * 3 + trial) % k);
      const noise = rng.uniform();
      const pred = label.map((l, i) =>
        i === 0 ? 0 : rng.uniform() < noise ? rng.int(k) : permutation[l]
      );
      clusterings.push({ label, pred });
    }
    const reference = await withTempCases({ assignments: matrices, accuracies: clusterings });
    matrices.forEach(({ cost, maximize }, t) => {
      const rows = cost.length;
      const cols = cost[0].length;
      const ours = linearSumAssignment(cost.flat(), rows, cols, maximize);
      assertValid(ours, cost.flat(), rows, cols);
      const theirs = reference.assignments[t];
      assert.equal(ours.rows.length, theirs.rows.length, `matrix ${t}: pairs`);
      assertClose([ours.total], [theirs.total], 0, 1e-9, `matrix ${t}: optimum`);
    });
    clusterings.forEach(({ label, pred }, t) => {
      assertClose([hungarianAccuracy(pred, label)], [reference.accuracies[t]], 0, 1e-12, `${t}`);
    });
  },
});

/** Runs the scipy reference on `cases` written to a temp file and returns its parsed output. */
async function withTempCases(cases: unknown): Promise<{
  assignments: { total: number; rows: number[]; cols: number[] }[];
  accuracies: number[];
}> {
  let output = "";
  await withTempDir(async (dir) => {
    const file = join(dir, "cases.json");
    await Deno.writeTextFile(file, JSON.stringify(cases));
    output = await torchScriptOutput("hungarian_scipy.py", [file]);
  });
  return JSON.parse(output);
}

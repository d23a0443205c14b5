import { assert, assertClose } from "../assert.ts";
import { knnClassify, type KnnOptions, type KnnResult } from "../../lib/eval/knn.ts";
import { l2NormalizeRows, memoryBank } from "../../lib/eval/feature_bank.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { knnClassifyJs } from "./knn_js.ts";

/** k-NN on the runtime over in-memory rows, with the old positional arguments. */
function classify(
  train: Float32Array,
  trainLabels: Int32Array,
  test: Float32Array,
  testLabels: Int32Array,
  dim: number,
  numClasses: number,
  ks?: readonly number[],
  temperature?: number,
  options: KnnOptions = {},
): Promise<KnnResult[]> {
  return knnClassify(memoryBank(train, trainLabels, dim), memoryBank(test, testLabels, dim), {
    ...options,
    ks,
    temperature,
    numClasses,
  });
}

// Six unit vectors in 2-D. Against the query (1, 0) their similarities are
// 1, 0.8, 0.6, 0, −0.6, −1 and their classes 0, 1, 1, 2, 2, 2.
const HAND_TRAIN = new Float32Array([1, 0, 0.8, 0.6, 0.6, 0.8, 0, 1, -0.6, 0.8, -1, 0]);
const HAND_LABELS = new Int32Array([0, 1, 1, 2, 2, 2]);
const QUERY = new Float32Array([1, 0]);

/** k-NN result for the single test row `QUERY` labelled `label`. */
async function classifyQuery(label: number, k: number, temperature: number, numClasses: number) {
  const [result] = await classify(
    HAND_TRAIN,
    HAND_LABELS,
    QUERY,
    new Int32Array([label]),
    2,
    numClasses,
    [k],
    temperature,
  );
  return result;
}

/** Checks top-1/top-5 of the query for every possible label against the expected class ranking. */
async function assertRanking(k: number, temperature: number, ranking: number[]): Promise<void> {
  for (let label = 0; label < ranking.length; label++) {
    const rank = ranking.indexOf(label);
    const result = await classifyQuery(label, k, temperature, ranking.length);
    const what = `k=${k} T=${temperature} label ${label}`;
    assert.equal(result.top1, rank === 0 ? 100 : 0, `${what}: top1`);
    assert.equal(result.top5, rank < 5 ? 100 : 0, `${what}: top5`);
  }
}

Deno.test("knnClassify: k = 1 follows the single nearest neighbour", async () => {
  // Classes 3–6 have no train rows: they score 0 and rank after the voted classes by index.
  await assertRanking(1, 0.07, [0, 1, 2, 3, 4, 5, 6]);
});

Deno.test("knnClassify: k = 3 weights the votes by exp(s / T)", async () => {
  // Class 0 scores e^(1/T), class 1 scores e^(0.8/T) + e^(0.6/T). With x = e^(0.2/T), class 0
  // wins exactly when x² > x + 1, i.e. x > golden ratio, i.e. T < 0.2 / ln(1.618…) ≈ 0.4156.
  await assertRanking(3, 0.07, [0, 1, 2, 3, 4, 5, 6]);
  await assertRanking(3, 0.41, [0, 1, 2, 3, 4, 5, 6]);
  await assertRanking(3, 0.42, [1, 0, 2, 3, 4, 5, 6]);
  // k = 4 adds the similarity-0 neighbour of class 2 with weight e^0 = 1.
  await assertRanking(4, 1, [1, 0, 2, 3, 4, 5, 6]);
});

Deno.test("knnClassify: accuracies are percentages over all test rows", async () => {
  // Three copies of the query labelled 0, 1 and 2; at T = 1 and k = 3 class 1 wins.
  const results = await classify(
    HAND_TRAIN,
    HAND_LABELS,
    new Float32Array([1, 0, 1, 0, 1, 0]),
    new Int32Array([0, 1, 2]),
    2,
    3,
    [1, 3],
    1,
  );
  // With fewer than five classes every class is within the top five.
  assert.deepEqual(results, [
    { k: 1, top1: 100 / 3, top5: 100 },
    { k: 3, top1: 100 / 3, top5: 100 },
  ]);
});

Deno.test("knnClassify: ties go to the lower train row, then to the lower class", async () => {
  // All five train rows have the same similarity 1/√2 to the query.
  const train = new Float32Array([0, 1, 1, 0, 0, 1, 1, 0, 0, 1]);
  const trainLabels = new Int32Array([2, 1, 0, 0, 0]);
  const query = l2NormalizeRows(new Float32Array([1, 1]), 2);
  // Blocks of 1 and 2 rows put tied rows in different blocks: the merge must keep the earlier.
  for (const blockSize of [1, 2, 5]) {
    // One call for all k, so the smaller k use prefixes of the same ordered neighbour list.
    const winners = [-1, -1, -1];
    for (let label = 0; label < 3; label++) {
      const results = await classify(
        train,
        trainLabels,
        query,
        new Int32Array([label]),
        2,
        3,
        [1, 2, 3],
        0.07,
        { blockSize },
      );
      results.forEach((result, i) => {
        if (result.top1 === 100) winners[i] = label;
      });
    }
    const what = `blocks of ${blockSize}`;
    assert.equal(winners[0], 2, `${what}: k=1 takes train row 0`);
    assert.equal(winners[1], 1, `${what}: k=2: classes 2 and 1 tie, the lower class ranks first`);
    assert.equal(winners[2], 0, `${what}: k=3: all three classes tie`);
  }
});

Deno.test("knnClassify: k above the number of train rows is clamped, order of ks is kept", async () => {
  const test = new Float32Array([1, 0, 0, 1, -1, 0]);
  const testLabels = new Int32Array([0, 2, 2]);
  const clamped = await classify(HAND_TRAIN, HAND_LABELS, test, testLabels, 2, 3, [
    200,
    6,
    1,
    200,
  ]);
  assert.deepEqual(clamped.map((r) => r.k), [200, 6, 1, 200]);
  assert.deepEqual(clamped[0], { ...clamped[1], k: 200 });
  assert.deepEqual(clamped[3], clamped[0]);
  assert.deepEqual(clamped[2], { k: 1, top1: 100, top5: 100 });
});

Deno.test("knnClassify: rejects inconsistent inputs", async () => {
  const test = new Float32Array([1, 0]);
  assert.throws(
    () => classify(HAND_TRAIN, HAND_LABELS, test, new Int32Array([0, 1]), 2, 3),
    /2 labels were given for 1 rows/,
  );
  await assert.rejects(
    () => classify(HAND_TRAIN, HAND_LABELS, test, new Int32Array([3]), 2, 3),
    /the test labels hold class 3, outside \[0, 3\)/,
  );
  await assert.rejects(
    () => classify(HAND_TRAIN, HAND_LABELS, test, new Int32Array([0]), 2, 3, [0]),
    /every k must be a positive integer, got 0/,
  );
  await assert.rejects(
    () =>
      classify(HAND_TRAIN, HAND_LABELS, test, new Int32Array([0]), 2, 3, [1], 0.1, {
        chunkSize: 0,
      }),
    /chunkSize must be a positive integer, got 0/,
  );
  assert.throws(
    () => classify(HAND_TRAIN, HAND_LABELS, new Float32Array(3), new Int32Array([0]), 2, 3),
    /features has 3 values, not a multiple of dim 2/,
  );
  await assert.rejects(
    () =>
      knnClassify(
        memoryBank(HAND_TRAIN, HAND_LABELS, 2),
        memoryBank(new Float32Array(3), new Int32Array([0]), 3),
      ),
    /the test features have width 3, the train features 2/,
  );
});

/** Straightforward weighted k-NN: full sorts everywhere, one test row at a time. */
function bruteForceKnn(
  train: Float32Array,
  trainLabels: Int32Array,
  test: Float32Array,
  testLabels: Int32Array,
  dim: number,
  numClasses: number,
  ks: number[],
  temperature: number,
): KnnResult[] {
  const nTrain = trainLabels.length;
  const nTest = testLabels.length;
  return ks.map((k) => {
    let top1 = 0;
    let top5 = 0;
    for (let t = 0; t < nTest; t++) {
      const neighbours = [];
      for (let j = 0; j < nTrain; j++) {
        let dot = 0;
        for (let d = 0; d < dim; d++) dot += test[t * dim + d] * train[j * dim + d];
        neighbours.push({ sim: Math.fround(dot), row: j });
      }
      neighbours.sort((a, b) => b.sim - a.sim || a.row - b.row);
      const scores = new Array<number>(numClasses).fill(0);
      for (const { sim, row } of neighbours.slice(0, k)) {
        scores[trainLabels[row]] += Math.exp(sim / temperature);
      }
      const classes = scores.map((score, c) => ({ score, c }));
      classes.sort((a, b) => b.score - a.score || a.c - b.c);
      const rank = classes.findIndex(({ c }) => c === testLabels[t]);
      if (rank === 0) top1++;
      if (rank < 5) top5++;
    }
    return { k, top1: (top1 * 100) / nTest, top5: (top5 * 100) / nTest };
  });
}

/** Normalised features around random class centres, with noise large enough to confuse classes. */
function clusteredData(rng: Rng, n: number, dim: number, centres: Float32Array) {
  const numClasses = centres.length / dim;
  const features = new Float32Array(n * dim);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    labels[i] = rng.int(numClasses);
    for (let d = 0; d < dim; d++) {
      features[i * dim + d] = centres[labels[i] * dim + d] + 1.5 * rng.normal();
    }
  }
  return { features: l2NormalizeRows(features, dim), labels };
}

for (
  const { nTrain, nTest, temperature } of [
    { nTrain: 500, nTest: 50, temperature: 0.07 },
    { nTrain: 700, nTest: 130, temperature: 0.5 },
  ]
) {
  Deno.test(`knnClassify matches a brute-force k-NN and the JS classifier (${nTrain} × ${nTest}, T=${temperature})`, async () => {
    const dim = 16;
    const numClasses = 10;
    const ks = [10, 20, 100, 200];
    const rng = new Rng(nTrain);
    const centres = new Float32Array(numClasses * dim).map(() => rng.normal());
    const train = clusteredData(rng, nTrain, dim, centres);
    const test = clusteredData(rng, nTest, dim, centres);
    const args = [
      train.features,
      train.labels,
      test.features,
      test.labels,
      dim,
      numClasses,
      ks,
      temperature,
    ] as const;
    const expected = bruteForceKnn(...args);
    assert.deepEqual(knnClassifyJs(...args), expected, "the JS classifier");
    for (const field of ["top1", "top5"] as const) {
      const values = expected.map((r) => r[field]);
      assert(values.some((v) => v > 0 && v < 100), `${field}: the data should not be trivial`);
    }
    // One chunk and one block; small chunks and blocks (blocks smaller than k, ragged ends).
    for (const sizes of [{}, { chunkSize: 16, blockSize: 64 }, { chunkSize: 7, blockSize: 300 }]) {
      const actual = await classify(...args, sizes);
      assert.deepEqual(actual.map((r) => r.k), ks);
      for (const field of ["top1", "top5"] as const) {
        const values = expected.map((r) => r[field]);
        assertClose(
          actual.map((r) => r[field]),
          values,
          0,
          1e-9,
          `${field} ${JSON.stringify(sizes)}`,
        );
      }
    }
  });
}

Deno.test("l2NormalizeRows divides each row by max(norm, 1e-12) in place", () => {
  const features = new Float32Array([3, 4, 0, 0, 1e-20, 0, -2, 0]);
  const normalised = l2NormalizeRows(features, 2);
  assert(normalised === features, "normalises in place");
  assertClose(features, [0.6, 0.8, 0, 0, 1e-8, 0, -1, 0], 1e-6, 0);
  assert.throws(() => l2NormalizeRows(new Float32Array(5), 2), /not a multiple of dim 2/);
});

Deno.test("knnClassify reports the test rows done after each chunk", async () => {
  const dim = 4;
  const rng = new Rng(3);
  const centres = new Float32Array(3 * dim).map(() => rng.normal());
  const train = clusteredData(rng, 90, dim, centres);
  const test = clusteredData(rng, 70, dim, centres);
  const banks = [
    memoryBank(train.features, train.labels, dim),
    memoryBank(test.features, test.labels, dim),
  ] as const;
  const calls: [number, number][] = [];
  const withProgress = await knnClassify(...banks, {
    ks: [5],
    temperature: 0.1,
    chunkSize: 32,
    onProgress: (done, total) => calls.push([done, total]),
  });
  assert.deepEqual(calls, [[32, 70], [64, 70], [70, 70]]);
  assert.deepEqual(withProgress, await knnClassify(...banks, { ks: [5], temperature: 0.1 }));
});

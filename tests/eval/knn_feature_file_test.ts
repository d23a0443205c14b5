import { join } from "node:path";
import { assert, assertClose } from "../assert.ts";
import { withTempDir, writeVendoredFolder } from "../data/fixtures.ts";
import { runDenoTask } from "../task_runner.ts";
import { decodeSafetensors } from "../../lib/checkpoint/safetensors.ts";
import { l2NormalizeRows, memoryBank } from "../../lib/eval/feature_bank.ts";
import { FeatureFile, FeatureFileWriter } from "../../lib/eval/feature_file.ts";
import { knnClassify } from "../../lib/eval/knn.ts";
import {
  evaluateKnn,
  evaluateKnnOnFiles,
  FEATURE_FILES,
  type FeatureOptions,
} from "../../lib/eval/knn_eval.ts";
import { buildFeatureGraph } from "../../lib/models/features.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { StateStore } from "../../lib/runtime/store.ts";

/** Random rows around `classes` centres, not normalised. */
function randomRows(rng: Rng, rows: number, dim: number, classes: number) {
  const centres = Float32Array.from({ length: classes * dim }, () => rng.normal());
  const labels = Int32Array.from({ length: rows }, () => rng.int(classes));
  const features = Float32Array.from(
    { length: rows * dim },
    (_, i) => centres[labels[Math.floor(i / dim)] * dim + (i % dim)] + rng.normal(),
  );
  return { features, labels };
}

/** Writes `features` and `labels` to a feature file in appends of the given row counts. */
async function writeFile(
  path: string,
  features: Float32Array,
  labels: Int32Array,
  dim: number,
  appends: readonly number[],
): Promise<void> {
  const writer = await FeatureFileWriter.create(path, labels.length, dim);
  let row = 0;
  for (const count of appends) {
    await writer.append(
      features.slice(row * dim, (row + count) * dim),
      labels.subarray(row, row + count),
    );
    row += count;
  }
  assert.equal(writer.written, labels.length);
  await writer.close();
}

Deno.test("a feature file holds normalised rows and labels as safetensors, read by ranges", async () => {
  await withTempDir(async (dir) => {
    const dim = 5;
    const { features, labels } = randomRows(new Rng(1), 23, dim, 4);
    const path = join(dir, "feat.safetensors");
    await writeFile(path, features, labels, dim, [8, 8, 7]);
    const normalised = l2NormalizeRows(features.slice(), dim);

    // An independent decoder reads the same tensors.
    const { tensors, metadata } = decodeSafetensors(await Deno.readFile(path), path);
    assert.deepEqual([...tensors.keys()], ["features", "labels"]);
    assert.deepEqual(tensors.get("features")!.shape, [23, dim]);
    assert.equal(tensors.get("labels")!.dtype, "int64");
    assertClose(tensors.get("features")!.data as Float32Array, normalised, 0, 0);
    assert.deepEqual(Array.from(tensors.get("labels")!.data as BigInt64Array, Number), [...labels]);
    assert.deepEqual(metadata, { content: "l2-normalised features" });

    const file = await FeatureFile.open(path);
    try {
      assert.equal(file.rows, 23);
      assert.equal(file.dim, dim);
      assert.deepEqual(file.labels, labels);
      const into = new Float32Array(6 * dim).fill(7);
      await file.read(17, 4, into);
      assertClose(into.subarray(0, 4 * dim), normalised.subarray(17 * dim, 21 * dim), 0, 0);
      assertClose(into.subarray(4 * dim), new Float32Array(2 * dim).fill(7), 0, 0);
      await assert.rejects(() => file.read(20, 4, into), /rows \[20, 24\) are not within/);
    } finally {
      file.close();
    }
  });
});

Deno.test("feature files refuse wrong row counts and files of another layout", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "feat.safetensors");
    const short = await FeatureFileWriter.create(path, 3, 2);
    await short.append(new Float32Array([1, 0, 0, 1]), [0, 1]);
    await assert.rejects(() => short.append(new Float32Array(4), [0, 1]), /holds 3 rows; 4 were/);
    await assert.rejects(() => short.close(), /closed after 2 of its 3 rows/);

    await writeFile(path, new Float32Array([1, 0, 0, 1]), new Int32Array([0, 1]), 2, [2]);
    const bytes = await Deno.readFile(path);
    await Deno.writeFile(path, bytes.subarray(0, bytes.length - 8));
    await assert.rejects(() => FeatureFile.open(path), /not the \d+ its header describes/);
    await Deno.writeFile(path, new Uint8Array(16));
    await assert.rejects(() => FeatureFile.open(path), /is not a feature file/);
  });
});

Deno.test("knnClassify reads feature files block by block as it reads memory", async () => {
  await withTempDir(async (dir) => {
    const dim = 8;
    const all = randomRows(new Rng(2), 370, dim, 6);
    const train = { features: all.features.slice(0, 300 * dim), labels: all.labels.slice(0, 300) };
    const test = { features: all.features.slice(300 * dim), labels: all.labels.slice(300) };
    await writeFile(join(dir, "train"), train.features, train.labels, dim, [128, 128, 44]);
    await writeFile(join(dir, "test"), test.features, test.labels, dim, [70]);
    const options = { ks: [1, 10, 50], temperature: 0.1, chunkSize: 16, blockSize: 45 };
    const inMemory = await knnClassify(
      memoryBank(l2NormalizeRows(train.features, dim), train.labels, dim),
      memoryBank(l2NormalizeRows(test.features, dim), test.labels, dim),
      options,
    );
    const trainFile = await FeatureFile.open(join(dir, "train"));
    const testFile = await FeatureFile.open(join(dir, "test"));
    try {
      assert.deepEqual(await knnClassify(trainFile, testFile, options), inMemory);
    } finally {
      trainFile.close();
      testFile.close();
    }
    assert(inMemory.some((r) => r.top1 > 20 && r.top1 < 100), "the data should not be trivial");
  });
});

Deno.test("evaluateKnn streams features to a folder and the task classifies it again", async () => {
  await withTempDir(async (dir) => {
    const data = await writeVendoredFolder(join(dir, "data"), 40, 12);
    const backbone = { embedDim: 24, depth: 1, heads: 2, patchSize: 4, imgSize: 16 };
    const features: FeatureOptions = {
      backbone,
      prefix: "model",
      size: 16,
      batch: 8,
      workers: 1,
      threads: 1,
    };
    const { graph } = buildFeatureGraph({ ...features, batch: 8, avgpool: 0, nLastBlocks: 1 });
    const store = StateStore.fromParams(graph.params, 3);
    const knn = { ks: [1, 5, 20], chunkSize: 5, blockSize: 16 };
    const inMemory = await evaluateKnn(store, data, { ...features, ...knn });
    const folder = join(dir, "features");
    const streamed = await evaluateKnn(store, data, { ...features, ...knn, dumpFeatures: folder });
    assert.deepEqual(streamed, inMemory);
    const train = await FeatureFile.open(join(folder, FEATURE_FILES.train));
    assert.equal(train.rows, 40);
    assert.equal(train.dim, 24);
    train.close();
    assert.deepEqual(await evaluateKnnOnFiles(folder, knn), inMemory);

    const task = await runDenoTask("knn", ["--load_features", folder, "--nb_knn", "5"]);
    assert.equal(task.code, 0, task.stderr);
    const line = `5-NN classifier result: Top1: ${inMemory[1].top1.toFixed(2)}, Top5: ${
      inMemory[1].top5.toFixed(2)
    }`;
    assert(task.stdout.includes(line), `${task.stdout} lacks ${line}`);
    const missing = await runDenoTask("knn", ["--load_features", data]);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /trainfeat\.safetensors/);
  });
});

import { join } from "node:path";
import sharp from "sharp";
import { assert } from "../assert.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { evalTransform, multiCrop } from "../../lib/data/augment.ts";
import {
  epochOrder,
  type EvalBatch,
  evalBatches,
  type MultiCropBatch,
  MultiCropLoader,
} from "../../lib/data/loader.ts";
import { openSource, type SourceSpec } from "../../lib/data/source.ts";
import { SMALL_CROPS, withTempDir, writeVendoredSubset } from "./fixtures.ts";

const IMAGES = 100;
const BATCH = 16;

/** Writes the first `IMAGES` vendored training images as an IDX pair in a temp folder. */
function smallIdx(dir: string): Promise<{ kind: "idx"; images: string; labels: string }> {
  return writeVendoredSubset("train", IMAGES, join(dir, "images"), join(dir, "labels"));
}

async function collect<T>(iterator: AsyncIterable<T>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of iterator) items.push(item);
  return items;
}

async function epochWith(
  source: SourceSpec,
  workers: number,
  epoch: number,
): Promise<MultiCropBatch[]> {
  const loader = await MultiCropLoader.create({
    source,
    crops: SMALL_CROPS,
    batchSize: BATCH,
    workers,
    seed: 5,
    prefetchBatches: 1,
  });
  try {
    assert.equal(loader.length, IMAGES);
    assert.equal(loader.itersPerEpoch, 6);
    assert.equal(loader.classes.length, 10);
    return await collect(loader.epoch(epoch));
  } finally {
    loader.close();
  }
}

Deno.test("MultiCropLoader: itersPerEpoch batches, shapes, independent of workers", async () => {
  await withTempDir(async (dir) => {
    const spec = await smallIdx(dir);
    const one = await epochWith(spec, 1, 0);
    const two = await epochWith(spec, 2, 0);
    assert.equal(one.length, 6);
    for (const batch of one) {
      assert.equal(batch.globals.length, 2 * BATCH * 3 * 32 * 32);
      assert.equal(batch.locals.length, 4 * BATCH * 3 * 16 * 16);
      assert.equal(batch.labels.length, BATCH);
      assert.equal(batch.indices.length, BATCH);
    }
    one.forEach((batch, k) => {
      assert.deepEqual(batch.indices, two[k].indices, `batch ${k} indices`);
      assert.deepEqual(batch.labels, two[k].labels, `batch ${k} labels`);
      assert.deepEqual(batch.globals, two[k].globals, `batch ${k} globals`);
      assert.deepEqual(batch.locals, two[k].locals, `batch ${k} locals`);
    });

    const order = epochOrder(IMAGES, 5, 0);
    const visited = one.flatMap((batch) => [...batch.indices]);
    assert.deepEqual(visited, [...order.subarray(0, 6 * BATCH)]);
    const source = await openSource(spec);
    for (const batch of one) {
      batch.indices.forEach((index, b) => assert.equal(batch.labels[b], source.label(index)));
    }

    // Crop-major layout: global crop g of image b is row g·B + b; the crops are multiCrop's.
    const b = 3;
    const index = one[1].indices[b];
    const views = await multiCrop(
      await source.load(index),
      SMALL_CROPS,
      new Rng(5).fork(`0:${index}`),
    );
    const globalSize = 3 * 32 * 32;
    const localSize = 3 * 16 * 16;
    for (let g = 0; g < 2; g++) {
      const row = (g * BATCH + b) * globalSize;
      assert.deepEqual(one[1].globals.subarray(row, row + globalSize), views[g]);
    }
    for (let l = 0; l < 4; l++) {
      const row = (l * BATCH + b) * localSize;
      assert.deepEqual(one[1].locals.subarray(row, row + localSize), views[2 + l]);
    }

    const next = await epochWith(spec, 2, 1);
    assert.equal(next.length, 6);
    assert.notDeepEqual(next[0].indices, one[0].indices);
    assert.deepEqual(
      next.flatMap((batch) => [...batch.indices]),
      [...epochOrder(IMAGES, 5, 1).subarray(0, 6 * BATCH)],
    );
  });
});

Deno.test("epochOrder is a permutation that changes with the epoch and the seed", () => {
  const order = epochOrder(1000, 1, 0);
  assert.deepEqual([...order].sort((a, b) => a - b), [...Array(1000).keys()]);
  assert.notDeepEqual(order, epochOrder(1000, 1, 1));
  assert.notDeepEqual(order, epochOrder(1000, 2, 0));
  assert.deepEqual(order, epochOrder(1000, 1, 0));
});

Deno.test("MultiCropLoader: a worker decode error rejects the epoch, naming the file", async () => {
  await withTempDir(async (root) => {
    await Deno.mkdir(join(root, "a"));
    const image = new Uint8Array(8 * 8 * 3).fill(120);
    for (const name of ["0.png", "1.png", "2.png"]) {
      await sharp(image, { raw: { width: 8, height: 8, channels: 3 } }).png()
        .toFile(join(root, "a", name));
    }
    const broken = join(root, "a", "3.png");
    await Deno.writeTextFile(broken, "not a png");
    const loader = await MultiCropLoader.create({
      source: { kind: "folder", root },
      crops: SMALL_CROPS,
      batchSize: 4,
      workers: 2,
      seed: 0,
    });
    try {
      await assert.rejects(collect(loader.epoch(0)), (error: Error) => {
        assert.match(error.message, new RegExp(`^cannot decode ${broken}: `));
        return true;
      });
    } finally {
      loader.close();
    }
  });
});

Deno.test("MultiCropLoader: open errors and a source smaller than one batch", async () => {
  await withTempDir(async (dir) => {
    const spec = await smallIdx(dir);
    await assert.rejects(
      MultiCropLoader.create({
        source: spec,
        crops: SMALL_CROPS,
        batchSize: 101,
        workers: 1,
        seed: 0,
      }),
      /the data source has 100 images, fewer than one batch of 101/,
    );
    await assert.rejects(
      MultiCropLoader.create({
        source: { kind: "idx", images: join(dir, "missing"), labels: spec.labels },
        crops: SMALL_CROPS,
        batchSize: 4,
        workers: 1,
        seed: 0,
      }),
      new RegExp(`IDX file ${join(dir, "missing")} does not exist`),
    );
    assert.throws(
      () => new MultiCropLoader({ source: spec, crops: SMALL_CROPS, batchSize: 0, seed: 0 }),
      /batchSize must be a positive integer, got 0/,
    );
    const unopened = new MultiCropLoader({
      source: spec,
      crops: SMALL_CROPS,
      batchSize: 4,
      seed: 0,
    });
    assert.throws(() => unopened.itersPerEpoch, /not open: call open\(\) or create\(\) first/);
  });
});

Deno.test("evalBatches: dataset order, padded last batch, evalTransform values", async () => {
  await withTempDir(async (dir) => {
    const spec = await smallIdx(dir);
    const batches: EvalBatch[] = await collect(evalBatches(spec, 24, 32, 2));
    assert.deepEqual(batches.map((b) => b.count), [32, 32, 32, 4]);
    const source = await openSource(spec);
    const imageSize = 3 * 24 * 24;
    for (const [k, batch] of batches.entries()) {
      assert.equal(batch.images.length, 32 * imageSize);
      assert.equal(batch.labels.length, 32);
      assert.deepEqual(
        [...batch.indices],
        Array.from({ length: batch.count }, (_, i) => 32 * k + i),
      );
      for (let b = 0; b < batch.count; b++) {
        assert.equal(batch.labels[b], source.label(32 * k + b));
      }
    }
    const last = batches[3];
    assert.deepEqual([...last.labels.subarray(4)], new Array(28).fill(-1));
    assert(last.images.subarray(4 * imageSize).every((v) => v === 0));
    const expected = await evalTransform(await source.load(97), 24);
    assert.deepEqual(last.images.subarray(imageSize, 2 * imageSize), expected);
  });
});

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
import { writeIdx } from "../../lib/data/idx.ts";
import { openSource, resolveDataPath, type SourceSpec } from "../../lib/data/source.ts";
import { shardIndices } from "../../lib/data/shard.ts";
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

/** Rank `rank` of `worldSize`'s loader over `source`, seed 5, one worker. */
function rankLoader(
  source: SourceSpec,
  rank: number,
  worldSize: number,
  batchSize: number,
): Promise<MultiCropLoader> {
  return MultiCropLoader.create({
    source,
    crops: SMALL_CROPS,
    batchSize,
    rank,
    worldSize,
    workers: 1,
    seed: 5,
    prefetchBatches: 1,
  });
}

/** The batches of `epoch` from `start` on of every rank of `worldSize`, rank by rank. */
async function everyRank(
  source: SourceSpec,
  worldSize: number,
  batchSize: number,
  epoch: number,
  start = 0,
): Promise<MultiCropBatch[][]> {
  const ranks: MultiCropBatch[][] = [];
  for (let rank = 0; rank < worldSize; rank++) {
    const loader = await rankLoader(source, rank, worldSize, batchSize);
    try {
      ranks.push(await collect(loader.epoch(epoch, start)));
    } finally {
      loader.close();
    }
  }
  return ranks;
}

const sorted = (values: Iterable<number>) => [...values].sort((a, b) => a - b);

Deno.test("MultiCropLoader: two ranks read their shards, disjoint, with per-image crops", async () => {
  await withTempDir(async (dir) => {
    const spec = await smallIdx(dir);
    const loader = await rankLoader(spec, 1, 2, BATCH);
    try {
      assert.equal(loader.length, IMAGES);
      assert.equal(loader.shardLength, 50);
      assert.equal(loader.itersPerEpoch, 3);
    } finally {
      loader.close();
    }
    const ranks = await everyRank(spec, 2, BATCH, 0);
    const order = epochOrder(IMAGES, 5, 0);
    ranks.forEach((batches, rank) => {
      assert.equal(batches.length, 3, `rank ${rank} batches`);
      assert.deepEqual(
        batches.flatMap((batch) => [...batch.indices]),
        [...shardIndices(order, rank, 2).subarray(0, 3 * BATCH)],
        `rank ${rank} indices`,
      );
    });
    const seen = ranks.flat().flatMap((batch) => [...batch.indices]);
    assert.equal(new Set(seen).size, 2 * 3 * BATCH, "the two ranks share an image");
    // Step k of the two ranks covers batch k of one rank with batches of 2B.
    for (let k = 0; k < 3; k++) {
      assert.deepEqual(
        sorted([...ranks[0][k].indices, ...ranks[1][k].indices]),
        sorted(order.subarray(2 * BATCH * k, 2 * BATCH * (k + 1))),
        `step ${k}`,
      );
    }
    // A rank's crops are the image's, as with one rank: keyed by seed, epoch and image.
    const source = await openSource(spec);
    const b = 5;
    const index = ranks[1][2].indices[b];
    assert.equal(ranks[1][2].labels[b], source.label(index));
    const views = await multiCrop(
      await source.load(index),
      SMALL_CROPS,
      new Rng(5).fork(`0:${index}`),
    );
    const globalSize = 3 * 32 * 32;
    const row = (BATCH + b) * globalSize;
    assert.deepEqual(ranks[1][2].globals.subarray(row, row + globalSize), views[1]);
  });
});

Deno.test("MultiCropLoader: three ranks pad with the first images and resume per rank", async () => {
  await withTempDir(async (dir) => {
    const spec = await smallIdx(dir);
    // ⌈100 / 3⌉ = 34 images per rank, 2 of them padding; batches of 17 visit all 34.
    const ranks = await everyRank(spec, 3, 17, 1);
    const order = epochOrder(IMAGES, 5, 1);
    for (const batches of ranks) assert.equal(batches.length, 2);
    const seen = ranks.flat().flatMap((batch) => [...batch.indices]);
    assert.deepEqual(sorted(seen), sorted([...order, order[0], order[1]]));
    assert.equal(ranks[1][1].indices[16], order[0]);
    assert.equal(ranks[2][1].indices[16], order[1]);

    const resumed = await everyRank(spec, 3, 17, 1, 1);
    resumed.forEach((batches, rank) => {
      assert.equal(batches.length, 1, `rank ${rank} resumed batches`);
      const [batch] = batches;
      const whole = ranks[rank][1];
      assert.deepEqual(batch.indices, whole.indices, `rank ${rank} indices`);
      assert.deepEqual(batch.labels, whole.labels, `rank ${rank} labels`);
      assert.deepEqual(batch.globals, whole.globals, `rank ${rank} globals`);
      assert.deepEqual(batch.locals, whole.locals, `rank ${rank} locals`);
    });
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
    await assert.rejects(
      rankLoader(spec, 3, 4, 26),
      /the data source has 100 images, 25 per rank over 4 ranks, fewer than one batch of 26/,
    );
    assert.throws(
      () =>
        new MultiCropLoader({
          source: spec,
          crops: SMALL_CROPS,
          batchSize: 4,
          rank: 2,
          worldSize: 2,
          seed: 0,
        }),
      /rank must be an integer from 0 to 1 \(worldSize 2\), got 2/,
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

Deno.test("evalBatches: a batch that never comes ends the iteration, naming it and the workers", async () => {
  await withTempDir(async (root) => {
    await Deno.mkdir(join(root, "a"));
    const image = new Uint8Array(8 * 8 * 3).fill(90);
    const names = Array.from({ length: 20 }, (_, i) => `${String(i).padStart(2, "0")}.png`);
    for (const name of names) {
      await sharp(image, { raw: { width: 8, height: 8, channels: 3 } }).png()
        .toFile(join(root, "a", name));
    }
    // Once the folder is listed, image 10 becomes a named pipe without a writer: reading it
    // blocks the worker for good, as a hung network file system would.
    const pipe = join(root, "a", names[10]);
    const batches = evalBatches({ kind: "folder", root }, 8, 1, 1, 1);
    const start = performance.now();
    let received = 0;
    try {
      await assert.rejects(
        (async () => {
          for await (const _ of batches) {
            if (received++ === 0) {
              await Deno.remove(pipe);
              const made = await new Deno.Command("mkfifo", { args: [pipe] }).output();
              assert(made.success, "mkfifo failed");
            }
          }
        })(),
        (error: Error) => {
          const expected = `the data loader waited 1 s for batch 11 of 20 of the ImageFolder ` +
            `${root} and stopped (2 requests in flight): worker 1 has been on it for S s; ` +
            `1 request is queued; worker 1: busy with batch 11 of 20 for S s, answers pings`;
          assert.equal(error.message.replace(/for \d+\.\d s/g, "for S s"), expected);
          return true;
        },
      );
      assert.equal(received, 10);
      const seconds = (performance.now() - start) / 1000;
      assert(seconds < 10, `the stall was reported after ${seconds.toFixed(1)} s`);
    } finally {
      // Give the blocked read a writer and an end of file, so that no thread stays blocked.
      (await Deno.open(pipe, { write: true })).close();
    }
  });
});

Deno.test("MultiCropLoader: a source that never opens is reported after stallSeconds", async () => {
  await withTempDir(async (dir) => {
    const spec = await smallIdx(dir);
    const pipe = join(dir, "images-pipe");
    const made = await new Deno.Command("mkfifo", { args: [pipe] }).output();
    assert(made.success, "mkfifo failed");
    const start = performance.now();
    try {
      await assert.rejects(
        MultiCropLoader.create({
          source: { ...spec, images: pipe },
          crops: SMALL_CROPS,
          batchSize: 4,
          workers: 1,
          seed: 0,
          stallSeconds: 0.5,
        }),
        (error: Error) => {
          assert.equal(
            error.message.replace(/for \d+\.\d s/g, "for S s"),
            `the data loader waited 0.5 s for the opening of ${pipe} and stopped (1 request ` +
              "in flight): worker 1 has been on it for S s; no request is queued; worker 1: " +
              "busy with the opening for S s, answers pings",
          );
          return true;
        },
      );
      const seconds = (performance.now() - start) / 1000;
      assert(seconds < 10, `the stall was reported after ${seconds.toFixed(1)} s`);
    } finally {
      (await Deno.open(pipe, { write: true })).close();
    }
  });
});

Deno.test("evalBatches: the full Fashion-MNIST layout, train then test, runs to the end", async () => {
  // The k-NN path at full size: gzipped IDX splits of 60 000 and 10 000 images read one after the
  // other, batches of 128 (469 and 79, the last ones partial) from one worker. The images are
  // 2×2 pixels so that the test takes seconds.
  await withTempDir(async (dir) => {
    const side = 2;
    for (const [prefix, count] of [["train", 60000], ["t10k", 10000]] as const) {
      const pixels = Uint8Array.from({ length: count * side * side }, (_, i) => (i * 37) % 256);
      const labels = Uint8Array.from({ length: count }, (_, i) => (i * 7) % 10);
      await writeIdx(join(dir, `${prefix}-images-idx3-ubyte.gz`), {
        dims: [count, side, side],
        data: pixels,
      });
      await writeIdx(join(dir, `${prefix}-labels-idx1-ubyte.gz`), { dims: [count], data: labels });
    }
    for (const [split, count, batches] of [["train", 60000, 469], ["test", 10000, 79]] as const) {
      const spec = await resolveDataPath(dir, split);
      let next = 0;
      let seen = 0;
      for await (const batch of evalBatches(spec, side, 128, 1)) {
        assert.equal(batch.total, count);
        assert.equal(batch.count, Math.min(128, count - next), `${split} batch ${seen}`);
        assert.equal(batch.indices[0], next);
        assert.equal(batch.indices[batch.count - 1], next + batch.count - 1);
        assert.equal(batch.labels[batch.count - 1], ((next + batch.count - 1) * 7) % 10);
        next += batch.count;
        seen++;
      }
      assert.equal(seen, batches, `${split} batches`);
      assert.equal(next, count, `${split} images`);
    }
  });
});

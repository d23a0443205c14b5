import { join } from "node:path";
import { assert } from "../assert.ts";
import { VENDORED, withTempDir } from "./fixtures.ts";
import { writeIdx } from "../../lib/data/idx.ts";
import { evalBatches } from "../../lib/data/loader.ts";
import { writeSubsetFile } from "../../lib/data/subset.ts";
import { describeSource, openSource, resolveDataPath } from "../../lib/data/source.ts";

Deno.test("resolveDataPath finds the vendored Fashion-MNIST splits", async () => {
  const train = await resolveDataPath(VENDORED);
  assert.deepEqual(train, {
    kind: "idx",
    images: join(VENDORED, "train-images-idx3-ubyte.gz"),
    labels: join(VENDORED, "train-labels-idx1-ubyte.gz"),
  });
  const test = await resolveDataPath(VENDORED, "test");
  assert.deepEqual(test, {
    kind: "idx",
    images: join(VENDORED, "t10k-images-idx3-ubyte.gz"),
    labels: join(VENDORED, "t10k-labels-idx1-ubyte.gz"),
  });

  const trainSource = await openSource(train);
  assert.equal(trainSource.length, 10_000);
  assert.equal(trainSource.classes.length, 10);
  const counts = new Array(10).fill(0);
  for (let i = 0; i < trainSource.length; i++) counts[trainSource.label(i)]++;
  assert.deepEqual(counts, [942, 1027, 1016, 1019, 974, 989, 1021, 1022, 990, 1000]);
  const first = await trainSource.load(0);
  assert.equal(first.width, 28);
  assert.equal(first.height, 28);
  assert.equal(first.data.length, 28 * 28 * 3);
  assert.equal(trainSource.label(0), 9);
  assert.equal((await openSource(test)).length, 2_000);
});

Deno.test("resolveDataPath: ImageFolder roots and the train/val layout", async () => {
  await withTempDir(async (root) => {
    await Deno.mkdir(join(root, "cat"));
    await Deno.mkdir(join(root, "dog"));
    assert.deepEqual(await resolveDataPath(root), { kind: "folder", root });
    await assert.rejects(
      resolveDataPath(root, "test"),
      new RegExp(`data path ${root} has an unrecognised layout; expected a val/ or test/`),
    );
  });
  await withTempDir(async (root) => {
    await Deno.mkdir(join(root, "train", "cat"), { recursive: true });
    await Deno.mkdir(join(root, "val", "cat"), { recursive: true });
    assert.deepEqual(await resolveDataPath(root), { kind: "folder", root: join(root, "train") });
    assert.deepEqual(await resolveDataPath(root, "test"), {
      kind: "folder",
      root: join(root, "val"),
    });
  });
});

Deno.test("resolveDataPath: plain IDX files, and .gz preferred", async () => {
  await withTempDir(async (root) => {
    const labels = { dims: [1], data: Uint8Array.of(0) };
    await writeIdx(join(root, "train-images-idx3-ubyte"), {
      dims: [1, 1, 1],
      data: Uint8Array.of(0),
    });
    await writeIdx(join(root, "train-labels-idx1-ubyte"), labels);
    await writeIdx(join(root, "train-labels-idx1-ubyte.gz"), labels);
    assert.deepEqual(await resolveDataPath(root), {
      kind: "idx",
      images: join(root, "train-images-idx3-ubyte"),
      labels: join(root, "train-labels-idx1-ubyte.gz"),
    });
    await assert.rejects(resolveDataPath(root, "test"), /unrecognised layout/);
  });
});

Deno.test("resolveDataPath: bad paths give one sentence naming the path", async () => {
  await withTempDir(async (root) => {
    const missing = join(root, "nowhere");
    await assert.rejects(
      resolveDataPath(missing),
      new RegExp(
        `^Error: data path ${missing} does not exist; expected a folder of class ` +
          `sub-folders \\(ImageFolder\\) or of MNIST-style IDX files`,
      ),
    );
    await assert.rejects(resolveDataPath(root), new RegExp(`${root} is an empty folder; expected`));
    const file = join(root, "notes.txt");
    await Deno.writeTextFile(file, "hello");
    await assert.rejects(resolveDataPath(file), new RegExp(`${file} is a file; expected`));
    await assert.rejects(
      resolveDataPath(root),
      new RegExp(`${root} has an unrecognised layout; expected a folder of class sub-folders`),
    );
    await writeIdx(join(root, "train-images-idx3-ubyte.gz"), {
      dims: [1, 1, 1],
      data: Uint8Array.of(0),
    });
    await assert.rejects(
      resolveDataPath(root),
      /has train-images-idx3-ubyte\.gz but no train-labels-idx1-ubyte\[\.gz\] beside it/,
    );
  });
});

Deno.test("resolveDataPath with a subset file: the workers see the subset, messages name it", async () => {
  await withTempDir(async (dir) => {
    const spec = await resolveDataPath(VENDORED, "test");
    const subset = join(dir, "few.txt");
    await writeSubsetFile(subset, ["t10k-000007", "t10k-001500", "t10k-000002"]);
    const subsetSpec = await resolveDataPath(VENDORED, "test", subset);
    assert.deepEqual(subsetSpec, { ...spec, subset });
    const whole = await openSource(spec);
    const labels: number[] = [];
    const totals = new Set<number>();
    for await (const batch of evalBatches(subsetSpec, 28, 2, 1)) {
      labels.push(...batch.labels.subarray(0, batch.count));
      totals.add(batch.total);
    }
    assert.deepEqual(labels, [2, 7, 1500].map((i) => whole.label(i)));
    assert.deepEqual([...totals], [3]);
    assert.equal(
      describeSource({ ...spec, subset }),
      `${join(VENDORED, "t10k-images-idx3-ubyte.gz")} (subset ${subset})`,
    );
  });
});

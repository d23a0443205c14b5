import { join } from "node:path";
import sharp from "sharp";
import { assert } from "../assert.ts";
import { VENDORED, withTempDir, writeVendoredSubset } from "./fixtures.ts";
import { openSource, resolveDataPath } from "../../lib/data/source.ts";
import {
  balancedSubset,
  idxImageName,
  openNamedSource,
  readSubsetFile,
  selectByName,
  subsetView,
  writeSubsetFile,
} from "../../lib/data/subset.ts";
import { openIdxSource } from "../../lib/data/idx.ts";
import type { ImageSource } from "../../lib/data/source.ts";
import { Rng } from "../../lib/runtime/rng.ts";

/** Images per class of `source`. */
function classCounts(source: ImageSource): number[] {
  const counts = new Array<number>(source.classes.length).fill(0);
  for (let i = 0; i < source.length; i++) counts[source.label(i)]++;
  return counts;
}

Deno.test("readSubsetFile and writeSubsetFile: one name a line, blanks and repeats dropped", async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, "subset.txt");
    await Deno.writeTextFile(file, "b.JPEG\n\n  a.JPEG \r\nb.JPEG\nc.JPEG");
    assert.deepEqual(await readSubsetFile(file), ["b.JPEG", "a.JPEG", "c.JPEG"]);
    await writeSubsetFile(file, ["x", "y"]);
    assert.equal(await Deno.readTextFile(file), "x\ny\n");
    await Deno.writeTextFile(file, "\n \n");
    await assert.rejects(readSubsetFile(file), new RegExp(`subset file ${file} lists no image`));
    const missing = join(dir, "none.txt");
    await assert.rejects(
      readSubsetFile(missing),
      new RegExp(`subset file ${missing} does not exist`),
    );
  });
});

Deno.test("idxImageName: the images file's prefix and the zero-based index, six digits", () => {
  assert.equal(idxImageName("/data/train-images-idx3-ubyte.gz", 42), "train-000042");
  assert.equal(idxImageName("t10k-images-idx3-ubyte", 0), "t10k-000000");
  assert.equal(idxImageName("train-images-idx3-ubyte", 1_234_567), "train-1234567");
});

Deno.test("selectByName: indices in dataset order; unknown and shared names are one sentence", () => {
  const names = ["a", "b", "c", "d", "b2"];
  assert.deepEqual([...selectByName(names, ["d", "a", "b2"], "f")], [0, 3, 4]);
  assert.throws(
    () => selectByName(names, ["a", "q1", "q2", "q3", "q4", "q5", "q6"], "subset file f"),
    /^Error: subset file f names 6 image\(s\) the dataset does not have: q1, q2, q3, q4, q5, …$/,
  );
  assert.throws(
    () => selectByName(["x", "y", "x"], ["y", "x"], "subset file f"),
    /^Error: subset file f names 1 image\(s\) that several class folders hold: x$/,
  );
});

Deno.test("subsetView: labels and images of the kept indices, all classes kept", async () => {
  const source = await openSource(await resolveDataPath(VENDORED, "test"));
  const view = subsetView(source, Int32Array.of(5, 17, 1999));
  assert.equal(view.length, 3);
  assert.equal(view.classes, source.classes);
  assert.deepEqual([0, 1, 2].map((i) => view.label(i)), [5, 17, 1999].map((i) => source.label(i)));
  assert.deepEqual((await view.load(2)).data, (await source.load(1999)).data);
  assert.throws(() => view.label(3), /image index 3 is outside \[0, 3\)/);
});

Deno.test("an IDX spec with a subset opens only the named images, in dataset order", async () => {
  await withTempDir(async (dir) => {
    const spec = await writeVendoredSubset(
      "train",
      50,
      join(dir, "train-images-idx3-ubyte"),
      join(dir, "train-labels-idx1-ubyte"),
    );
    const whole = await openIdxSource(spec.images, spec.labels);
    const file = join(dir, "some.txt");
    await writeSubsetFile(file, ["train-000049", "train-000003", "train-000010"]);
    const subset = await openSource({ ...spec, subset: file });
    assert.equal(subset.length, 3);
    assert.deepEqual(subset.classes, whole.classes);
    for (const [i, original] of [3, 10, 49].entries()) {
      assert.equal(subset.label(i), whole.label(original));
      assert.deepEqual((await subset.load(i)).data, (await whole.load(original)).data);
    }
    await writeSubsetFile(file, ["train-000001", "train-000050", "t10k-000002"]);
    await assert.rejects(
      openSource({ ...spec, subset: file }),
      new RegExp(
        `subset file ${file} names 2 image\\(s\\) the dataset does not have: ` +
          `train-000050, t10k-000002`,
      ),
    );
  });
});

Deno.test("an ImageFolder spec with a subset: file names select, shared names are refused", async () => {
  await withTempDir(async (root) => {
    const write = (path: string, value: number) =>
      sharp({ create: { width: 2, height: 2, channels: 3, background: { r: value, g: 0, b: 0 } } })
        .png().toFile(join(root, path));
    for (const name of ["cat", "dog"]) await Deno.mkdir(join(root, name));
    await write("cat/n1_1.png", 10);
    await write("cat/n1_2.png", 20);
    await write("dog/n2_1.png", 30);
    await write("dog/n2_2.png", 40);
    await write("dog/shared.png", 50);
    await write("cat/shared.png", 60);
    const spec = await resolveDataPath(root);
    assert.deepEqual((await openNamedSource(spec)).names, [
      "n1_1.png",
      "n1_2.png",
      "shared.png",
      "n2_1.png",
      "n2_2.png",
      "shared.png",
    ]);
    // A file beside the class folders is not part of the dataset.
    const file = join(root, "subset.txt");
    await writeSubsetFile(file, ["n2_2.png", "n1_1.png"]);
    const subset = await openSource({ ...spec, subset: file });
    assert.deepEqual(subset.classes, ["cat", "dog"]);
    assert.deepEqual([subset.label(0), subset.label(1)], [0, 1]);
    assert.deepEqual([(await subset.load(0)).data[0], (await subset.load(1)).data[0]], [10, 40]);
    await writeSubsetFile(file, ["shared.png"]);
    await assert.rejects(
      openSource({ ...spec, subset: file }),
      /names 1 image\(s\) that several class folders hold: shared\.png/,
    );
  });
});

Deno.test("balancedSubset: the same count of every class, seeded, sorted", async () => {
  const source = await openSource(await resolveDataPath(VENDORED, "test"));
  const picked = balancedSubset(source, 7, new Rng(3));
  const view = subsetView(source, picked);
  assert.deepEqual(classCounts(view), new Array(10).fill(7));
  for (let k = 1; k < picked.length; k++) assert(picked[k - 1] < picked[k]);
  assert.deepEqual(balancedSubset(source, 7, new Rng(3)), picked);
  assert.notDeepEqual(balancedSubset(source, 7, new Rng(4)), picked);
  const smallest = Math.min(...classCounts(source));
  assert.throws(
    () => balancedSubset(source, smallest + 1, new Rng(0)),
    new RegExp(`has ${smallest} image\\(s\\), fewer than the ${smallest + 1} per class asked for`),
  );
  assert.throws(() => balancedSubset(source, 0, new Rng(0)), /positive whole number per class/);
});

Deno.test("the bundled 1% and 10% subsets: 10 and 100 training images of each class", async () => {
  const spec = await resolveDataPath(VENDORED);
  for (const [percent, perClass] of [[1, 10], [10, 100]]) {
    const subset = await openSource({
      ...spec,
      subset: join(VENDORED, "subsets", `${percent}percent.txt`),
    });
    assert.equal(subset.length, 10 * perClass);
    assert.deepEqual(classCounts(subset), new Array(10).fill(perClass), `${percent}%`);
  }
});

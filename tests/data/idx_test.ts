import { join } from "node:path";
import { assert } from "../assert.ts";
import { withTempDir } from "./fixtures.ts";
import {
  encodeIdx,
  grayToRgb,
  gzip,
  openIdxSource,
  parseIdx,
  readIdx,
  writeIdx,
} from "../../lib/data/idx.ts";

/** Three 2×3 images with pixel value 10·n + p, and labels 2, 0, 1. */
const IMAGES = {
  dims: [3, 2, 3],
  data: Uint8Array.from({ length: 18 }, (_, i) => i + 4 * Math.floor(i / 6)),
};
const LABELS = { dims: [3], data: Uint8Array.of(2, 0, 1) };

async function rejectsWith(promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (error: Error) => {
    assert.match(error.message, pattern);
    return true;
  });
}

Deno.test("encodeIdx writes the big-endian magic number, sizes and data", () => {
  const bytes = encodeIdx(IMAGES);
  assert.deepEqual([...bytes.subarray(0, 16)], [0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 3]);
  assert.deepEqual([...bytes.subarray(16)], [...IMAGES.data]);
  assert.deepEqual([...encodeIdx(LABELS)], [0, 0, 8, 1, 0, 0, 0, 3, 2, 0, 1]);
});

Deno.test("IDX files round-trip plain and gzipped", async () => {
  await withTempDir(async (dir) => {
    for (const name of ["images-idx3-ubyte", "images-idx3-ubyte.gz"]) {
      const path = join(dir, name);
      await writeIdx(path, IMAGES);
      const bytes = await Deno.readFile(path);
      assert.equal(bytes[0] === 0x1f && bytes[1] === 0x8b, name.endsWith(".gz"));
      const back = await readIdx(path);
      assert.deepEqual(back.dims, IMAGES.dims);
      assert.deepEqual([...back.data], [...IMAGES.data]);
    }
  });
});

Deno.test("gzip is detected by magic bytes, not by the file name", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "labels-without-extension");
    await Deno.writeFile(path, await gzip(encodeIdx(LABELS)));
    assert.deepEqual([...(await readIdx(path)).data], [2, 0, 1]);
  });
});

Deno.test("an IDX source replicates grayscale to RGB and reports labels and classes", async () => {
  await withTempDir(async (dir) => {
    await writeIdx(join(dir, "i.gz"), IMAGES);
    await writeIdx(join(dir, "l.gz"), LABELS);
    const source = await openIdxSource(join(dir, "i.gz"), join(dir, "l.gz"));
    assert.equal(source.length, 3);
    assert.deepEqual(source.classes, ["0", "1", "2"]);
    assert.deepEqual([0, 1, 2].map((i) => source.label(i)), [2, 0, 1]);
    const image = await source.load(1);
    assert.equal(image.width, 3);
    assert.equal(image.height, 2);
    assert.deepEqual([...image.data], [...grayToRgb(IMAGES.data.subarray(6, 12))]);
    assert.deepEqual([...image.data.subarray(0, 6)], [10, 10, 10, 11, 11, 11]);
    assert.throws(() => source.label(3), /image index 3 is outside \[0, 3\)/);
  });
});

Deno.test("corrupt and truncated IDX files are named in one clear sentence", async () => {
  const bytes = encodeIdx(IMAGES);
  assert.throws(() => parseIdx(bytes.subarray(0, 3), "x.idx"), /^Error: x\.idx is not an IDX file/);
  assert.throws(
    () => parseIdx(Uint8Array.of(0, 0, 0x0d, 3, ...bytes.subarray(4)), "x.idx"),
    /x\.idx is not an unsigned-byte IDX file: magic number 0x00000d03/,
  );
  assert.throws(() => parseIdx(bytes.subarray(0, 10), "x.idx"), /x\.idx is truncated: .* header/);
  assert.throws(
    () => parseIdx(bytes.subarray(0, bytes.length - 5), "x.idx"),
    /x\.idx is truncated: its header promises 3×2×3 = 18 bytes of data, only 13 follow/,
  );
  assert.throws(
    () => parseIdx(Uint8Array.of(...bytes, 7), "x.idx"),
    /x\.idx is corrupt: 1 bytes follow/,
  );

  await withTempDir(async (dir) => {
    const path = join(dir, "cut.gz");
    const zipped = await gzip(bytes);
    await Deno.writeFile(path, zipped.subarray(0, zipped.length - 12));
    await rejectsWith(readIdx(path), new RegExp(`${path} is corrupt or truncated gzip data`));
  });
});

Deno.test("an IDX source rejects mismatched image and label counts", async () => {
  await withTempDir(async (dir) => {
    await writeIdx(join(dir, "i"), IMAGES);
    await writeIdx(join(dir, "l"), { dims: [2], data: Uint8Array.of(0, 1) });
    await rejectsWith(openIdxSource(join(dir, "i"), join(dir, "l")), /l has 2 labels but i has 3/);
    await rejectsWith(
      openIdxSource(join(dir, "l"), join(dir, "l")),
      /holds a 1-dimensional array, expected N×H×W images/,
    );
  });
});

import { join } from "node:path";
import sharp from "sharp";
import { assert } from "../assert.ts";
import { withTempDir } from "./fixtures.ts";
import { decodeImage, openImageFolder, scanImageFolder } from "../../lib/data/image_folder.ts";

/** Writes a `width` × `height` PNG of one colour; `channels` 1 (gray), 3 (RGB) or 4 (RGBA). */
async function writePng(
  path: string,
  value: number[],
  width = 4,
  height = 3,
): Promise<void> {
  const channels = value.length as 1 | 3 | 4;
  const data = new Uint8Array(width * height * channels);
  for (let i = 0; i < data.length; i++) data[i] = value[i % channels];
  await sharp(data, { raw: { width, height, channels } }).png().toFile(path);
}

Deno.test("ImageFolder: sorted classes, files sorted per folder, extensions filtered", async () => {
  await withTempDir(async (root) => {
    for (const name of ["dog", "cat", "ant", "b_nested"]) await Deno.mkdir(join(root, name));
    await Deno.mkdir(join(root, "b_nested", "inner"));
    await writePng(join(root, "dog", "2.png"), [1, 1, 1]);
    await writePng(join(root, "dog", "10.PNG"), [2, 2, 2]);
    await Deno.writeTextFile(join(root, "dog", "notes.txt"), "not an image");
    await writePng(join(root, "cat", "b.png"), [3, 3, 3]);
    await sharp({ create: { width: 2, height: 2, channels: 3, background: "#040404" } })
      .jpeg().toFile(join(root, "cat", "a.JPG"));
    await writePng(join(root, "ant", "x.png"), [5, 5, 5]);
    await writePng(join(root, "b_nested", "inner", "deep.png"), [6, 6, 6]);
    await writePng(join(root, "b_nested", "top.png"), [7, 7, 7]);
    await sharp({ create: { width: 2, height: 2, channels: 3, background: "#080808" } })
      .webp({ lossless: true }).toFile(join(root, "b_nested", "w.webp"));

    const { classes, samples } = await scanImageFolder(root);
    assert.deepEqual(classes, ["ant", "b_nested", "cat", "dog"]);
    const relative = samples.map(({ path, label }) => [path.slice(root.length + 1), label]);
    assert.deepEqual(relative, [
      ["ant/x.png", 0],
      ["b_nested/top.png", 1],
      ["b_nested/w.webp", 1],
      ["b_nested/inner/deep.png", 1],
      ["cat/a.JPG", 2],
      ["cat/b.png", 2],
      ["dog/10.PNG", 3],
      ["dog/2.png", 3],
    ]);

    const source = await openImageFolder(root);
    assert.equal(source.length, 8);
    assert.deepEqual([...Array(8).keys()].map((i) => source.label(i)), [0, 1, 1, 1, 2, 2, 3, 3]);
    const image = await source.load(6);
    assert.equal(image.width, 4);
    assert.equal(image.height, 3);
    assert.deepEqual([...image.data], new Array(36).fill(2));
    assert.deepEqual([...(await source.load(2)).data], new Array(12).fill(8));
  });
});

Deno.test("decodeImage gives RGB for gray and RGBA files", async () => {
  await withTempDir(async (dir) => {
    await writePng(join(dir, "gray.png"), [77]);
    await writePng(join(dir, "rgba.png"), [10, 20, 30, 128]);
    const gray = await decodeImage(join(dir, "gray.png"));
    assert.deepEqual([...gray.data.subarray(0, 6)], [77, 77, 77, 77, 77, 77]);
    assert.equal(gray.data.length, 4 * 3 * 3);
    const rgba = await decodeImage(join(dir, "rgba.png"));
    assert.deepEqual([...rgba.data.subarray(0, 6)], [10, 20, 30, 10, 20, 30]);
    assert.equal(rgba.data.length, 4 * 3 * 3);
  });
});

Deno.test("an undecodable file throws `cannot decode <path>: <reason>`", async () => {
  await withTempDir(async (root) => {
    await Deno.mkdir(join(root, "a"));
    const path = join(root, "a", "broken.png");
    await Deno.writeTextFile(path, "this is not a PNG");
    const source = await openImageFolder(root);
    await assert.rejects(source.load(0), (error: Error) => {
      assert.match(error.message, new RegExp(`^cannot decode ${path}: \\S`));
      return true;
    });
  });
});

Deno.test("ImageFolder errors name the folder", async () => {
  await withTempDir(async (root) => {
    await assert.rejects(scanImageFolder(root), /has no class sub-folders/);
    await Deno.mkdir(join(root, "full"));
    await Deno.mkdir(join(root, "empty"));
    await writePng(join(root, "full", "x.png"), [1, 2, 3]);
    await assert.rejects(
      scanImageFolder(root),
      new RegExp(`${root} has class folders without any .* file: empty`),
    );
  });
});

/**
 * Writes the vendored Fashion-MNIST subset: the first `--train` training images (default 10,000)
 * and the first `--test` test images (default 2,000) of the full dataset, as gzipped IDX files with
 * the standard names, and prints the class balance of each split.
 *
 * The full dataset comes from Debian's `dataset-fashion-mnist` package
 * (`apt-get install dataset-fashion-mnist`, files in /usr/share/datasets/fashion-mnist).
 *
 * ```sh
 * deno run --allow-read --allow-write scripts/make_fashion_mnist_subset.ts \
 *   [--from /usr/share/datasets/fashion-mnist] [--to data/fashion-mnist] \
 *   [--train 10000] [--test 2000]
 * ```
 *
 * @module
 */

import { join } from "node:path";
import { parseArgs } from "node:util";
import { readIdx, writeIdx } from "../lib/data/idx.ts";

const { values } = parseArgs({
  options: {
    from: { type: "string", default: "/usr/share/datasets/fashion-mnist" },
    to: { type: "string", default: "data/fashion-mnist" },
    train: { type: "string", default: "10000" },
    test: { type: "string", default: "2000" },
  },
});

/** Copies the first `count` images and labels of split `prefix` from `from` to `to`. */
async function subset(prefix: string, count: number, from: string, to: string): Promise<void> {
  const images = await readIdx(join(from, `${prefix}-images-idx3-ubyte.gz`));
  const labels = await readIdx(join(from, `${prefix}-labels-idx1-ubyte.gz`));
  const [total, height, width] = images.dims;
  if (!(count >= 1 && count <= total)) {
    throw new Error(`${prefix}: asked for ${count} images, the source has ${total}`);
  }
  await writeIdx(join(to, `${prefix}-images-idx3-ubyte.gz`), {
    dims: [count, height, width],
    data: images.data.slice(0, count * height * width),
  });
  const kept = labels.data.slice(0, count);
  await writeIdx(join(to, `${prefix}-labels-idx1-ubyte.gz`), { dims: [count], data: kept });

  const perClass = new Array<number>(10).fill(0);
  for (const label of kept) perClass[label]++;
  const balance = perClass.map((n, c) => `${c}: ${n}`).join(", ");
  console.log(
    `${prefix}: first ${count} of ${total} images (${height}×${width}); per class ${balance}`,
  );
}

await Deno.mkdir(values.to, { recursive: true });
await subset("train", Number(values.train), values.from, values.to);
await subset("t10k", Number(values.test), values.from, values.to);

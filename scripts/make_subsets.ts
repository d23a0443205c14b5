/**
 * Writes class-balanced label subsets of a dataset's train split, as the SimCLRv2 ImageNet split
 * files are laid out (one image name a line; see lib/data/subset.ts for the names): for each
 * percentage p, `<output_dir>/<p>percent.txt` holds round(p% · images / classes) images of every
 * class, drawn with the seed, listed in dataset order. Each file is opened again as a subset to
 * check it before the script reports it.
 *
 * ```sh
 * deno run --allow-read --allow-write --allow-env --allow-ffi --allow-sys scripts/make_subsets.ts \
 *   [--data_path data/fashion-mnist] [--output_dir <data_path>/subsets] \
 *   [--percents 1,10] [--seed 0]
 * ```
 *
 * @module
 */

import { join } from "node:path";
import { parseArgs } from "node:util";
import { resolveDataPath } from "../lib/data/source.ts";
import {
  balancedSubset,
  openNamedSource,
  openSubset,
  writeSubsetFile,
} from "../lib/data/subset.ts";
import { Rng } from "../lib/runtime/rng.ts";

const { values } = parseArgs({
  options: {
    data_path: { type: "string", default: "data/fashion-mnist" },
    output_dir: { type: "string" },
    percents: { type: "string", default: "1,10" },
    seed: { type: "string", default: "0" },
  },
});

const percents = values.percents.split(",").map(Number);
if (percents.some((p) => !(p > 0 && p <= 100))) {
  throw new Error(`--percents must list numbers in (0, 100], got ${values.percents}`);
}
const seed = Number(values.seed);
if (!Number.isSafeInteger(seed)) throw new Error(`--seed must be an integer, got ${values.seed}`);
const outputDir = values.output_dir ?? join(values.data_path, "subsets");

const spec = await resolveDataPath(values.data_path, "train");
const { source, names } = await openNamedSource(spec);
await Deno.mkdir(outputDir, { recursive: true });
for (const percent of percents) {
  const perClass = Math.max(
    1,
    Math.round(percent / 100 * source.length / source.classes.length),
  );
  const indices = balancedSubset(source, perClass, new Rng(seed).fork(`subset:${percent}`));
  const file = join(outputDir, `${percent}percent.txt`);
  await writeSubsetFile(file, Array.from(indices, (i) => names[i]));
  const check = await openSubset(spec, file);
  console.log(
    `${file}: ${check.length} of ${source.length} images, ${perClass} of each of the ` +
      `${source.classes.length} classes (seed ${seed})`,
  );
}

/**
 * Label subsets (the semi-supervised 1% and 10% splits): a subset file lists image names, one a
 * line, as SimCLRv2's ImageNet split files do, and the subset is the view of a source holding
 * only those images, in the source's order, with the source's full class list.
 *
 * The name of an image:
 * - in an ImageFolder, its file name, e.g. `n01440764_10026.JPEG` (the SimCLRv2 files' names);
 *   a listed name that several class folders share is an error;
 * - in an IDX pair, the images file's name up to its first `-` (`train`, `t10k`), a `-` and the
 *   zero-based image index padded to six digits: `train-000042` is image 42 of
 *   `train-images-idx3-ubyte.gz`.
 *
 * Blank lines and spaces around a name are ignored; a name listed twice counts once.
 *
 * ```ts
 * import { openSource, resolveDataPath } from "./source.ts";
 * const subset = "data/fashion-mnist/subsets/1percent.txt";
 * const labelled = await openSource(await resolveDataPath("data/fashion-mnist", "train", subset));
 * labelled.length; // 100
 * ```
 *
 * @module
 */

import { basename } from "node:path";
import { openIdxSource } from "./idx.ts";
import { folderSource, scanImageFolder } from "./image_folder.ts";
import type { ImageSource, SourceSpec } from "./source.ts";
import type { Rng } from "../runtime/rng.ts";

/** The names a subset file lists, in file order, each once. */
export async function readSubsetFile(path: string): Promise<string[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error(`subset file ${path} does not exist`);
    }
    throw error;
  }
  const names = [...new Set(text.split("\n").map((line) => line.trim()).filter(Boolean))];
  if (names.length === 0) throw new Error(`subset file ${path} lists no image`);
  return names;
}

/** Writes `names` as a subset file, one a line. */
export async function writeSubsetFile(path: string, names: readonly string[]): Promise<void> {
  await Deno.writeTextFile(path, names.map((name) => `${name}\n`).join(""));
}

/** The name of image `index` of the IDX images file `imagesPath` (e.g. `train-000042`). */
export function idxImageName(imagesPath: string, index: number): string {
  const prefix = basename(imagesPath).split("-")[0];
  return `${prefix}-${String(index).padStart(6, "0")}`;
}

/**
 * The dataset indices (ascending) of the images `wanted` names among `names` (the name of each
 * image, in dataset order). Unknown or ambiguous names are one sentence naming the first few and
 * `what` (the subset file).
 */
export function selectByName(
  names: readonly string[],
  wanted: readonly string[],
  what: string,
): Int32Array {
  const indexOf = new Map<string, number>();
  const shared = new Set<string>();
  for (const [i, name] of names.entries()) {
    if (indexOf.has(name)) shared.add(name);
    indexOf.set(name, i);
  }
  const unknown = wanted.filter((name) => !indexOf.has(name));
  if (unknown.length > 0) {
    throw new Error(
      `${what} names ${unknown.length} image(s) the dataset does not have: ${firstFew(unknown)}`,
    );
  }
  const ambiguous = wanted.filter((name) => shared.has(name));
  if (ambiguous.length > 0) {
    throw new Error(
      `${what} names ${ambiguous.length} image(s) that several class folders hold: ` +
        firstFew(ambiguous),
    );
  }
  return Int32Array.from(wanted, (name) => indexOf.get(name)!).sort();
}

/** The view of `source` holding its images `indices` (in that order), with all its classes. */
export function subsetView(source: ImageSource, indices: Int32Array): ImageSource {
  const original = (i: number): number => {
    if (!Number.isInteger(i) || i < 0 || i >= indices.length) {
      throw new RangeError(`image index ${i} is outside [0, ${indices.length})`);
    }
    return indices[i];
  };
  return {
    length: indices.length,
    classes: source.classes,
    label: (i) => source.label(original(i)),
    load: (i) => source.load(original(i)),
  };
}

/** A whole source (its spec's `subset` ignored) and the name of each of its images. */
export interface NamedSource {
  /** Every image of the spec's dataset. */
  readonly source: ImageSource;
  /** The name of each image, in dataset order. */
  readonly names: readonly string[];
}

/** Opens every image of `spec` (its `subset` field ignored) with the name of each. */
export async function openNamedSource(spec: SourceSpec): Promise<NamedSource> {
  if (spec.kind === "idx") {
    const source = await openIdxSource(spec.images, spec.labels);
    const names = Array.from({ length: source.length }, (_, i) => idxImageName(spec.images, i));
    return { source, names };
  }
  const index = await scanImageFolder(spec.root);
  return {
    source: folderSource(index),
    names: index.samples.map((sample) => basename(sample.path)),
  };
}

/**
 * Opens the images of `spec` (its `subset` field ignored) that the subset file `subsetPath` names,
 * as an {@link ImageSource} in dataset order.
 */
export async function openSubset(spec: SourceSpec, subsetPath: string): Promise<ImageSource> {
  const wanted = await readSubsetFile(subsetPath);
  const { source, names } = await openNamedSource(spec);
  return subsetView(source, selectByName(names, wanted, `subset file ${subsetPath}`));
}

/**
 * A class-balanced random subset of `source`: `perClass` images of every class, drawn without
 * replacement by `rng`; their dataset indices, ascending. A class with fewer images is one
 * sentence.
 */
export function balancedSubset(source: ImageSource, perClass: number, rng: Rng): Int32Array {
  if (!Number.isInteger(perClass) || perClass < 1) {
    throw new Error(`a balanced subset needs a positive whole number per class, got ${perClass}`);
  }
  const byClass: number[][] = source.classes.map(() => []);
  for (let i = 0; i < source.length; i++) byClass[source.label(i)].push(i);
  const chosen: number[] = [];
  for (const [c, members] of byClass.entries()) {
    if (members.length < perClass) {
      throw new Error(
        `class ${source.classes[c]} has ${members.length} image(s), fewer than the ${perClass} ` +
          `per class asked for`,
      );
    }
    // A partial Fisher–Yates shuffle: the first perClass entries become a uniform sample.
    for (let k = 0; k < perClass; k++) {
      const j = k + rng.int(members.length - k);
      [members[k], members[j]] = [members[j], members[k]];
    }
    chosen.push(...members.slice(0, perClass));
  }
  return Int32Array.from(chosen).sort();
}

function firstFew(names: readonly string[]): string {
  const shown = names.slice(0, 5).join(", ");
  return names.length > 5 ? `${shown}, …` : shown;
}

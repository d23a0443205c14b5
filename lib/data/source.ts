/**
 * Image sources: a uniform view (`length`, `classes`, `label(i)`, `load(i)`) over an ImageFolder
 * tree or a pair of IDX files, described by a serialisable {@link SourceSpec} so that loader
 * workers can open the same source themselves.
 *
 * ```ts
 * import { openSource, resolveDataPath } from "./source.ts";
 * const source = await openSource(await resolveDataPath("data/fashion-mnist"));
 * const image = await source.load(0); // { data: Uint8Array (28·28·3), width: 28, height: 28 }
 * ```
 *
 * @module
 */

import { join } from "node:path";
import { openIdxSource } from "./idx.ts";
import { openImageFolder } from "./image_folder.ts";
import { openSubset } from "./subset.ts";

/** A decoded image: `data` is HWC RGB uint8, `height · width · 3` bytes, row-major. */
export interface RawImage {
  /** HWC RGB bytes, row-major. */
  data: Uint8Array;
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
}

/**
 * Where images come from, as plain JSON (it crosses to workers by `postMessage`):
 * `idx` is a pair of IDX files (images N×H×W uint8, labels N uint8); `folder` is an ImageFolder
 * root (one sub-folder per class). With `subset`, a subset file (one image name a line, see
 * `subset.ts`), only the images it names are kept, in dataset order, with all the classes.
 */
export type SourceSpec =
  | { kind: "idx"; images: string; labels: string; subset?: string }
  | { kind: "folder"; root: string; subset?: string };

/** An indexed, labelled collection of images. */
export interface ImageSource {
  /** Number of images. */
  readonly length: number;
  /** Class names; a label is an index into this list. */
  readonly classes: readonly string[];
  /** The class index of image `i` (0 ≤ i < length). */
  label(i: number): number;
  /** Decodes image `i` (0 ≤ i < length) to RGB. */
  load(i: number): Promise<RawImage>;
}

/**
 * Opens the source a spec describes (reads IDX files, or lists an ImageFolder tree), restricted
 * to the images of its subset file when it names one.
 */
export async function openSource(spec: SourceSpec): Promise<ImageSource> {
  if (spec.subset !== undefined) return await openSubset(spec, spec.subset);
  switch (spec.kind) {
    case "idx":
      return await openIdxSource(spec.images, spec.labels);
    case "folder":
      return await openImageFolder(spec.root);
    default:
      throw new Error(
        `unknown source kind ${JSON.stringify((spec as { kind: unknown }).kind)}; ` +
          `expected "idx" or "folder"`,
      );
  }
}

/**
 * A source for messages: the images file of an IDX pair, or `the ImageFolder <root>`, followed by
 * ` (subset <file>)` when it has one.
 */
export function describeSource(spec: SourceSpec): string {
  const base = spec.kind === "idx" ? spec.images : `the ImageFolder ${spec.root}`;
  return spec.subset === undefined ? base : `${base} (subset ${spec.subset})`;
}

/** The split names accepted by {@link resolveDataPath}. */
export type Split = "train" | "test";

const IDX_PREFIX: Record<Split, string> = { train: "train", test: "t10k" };
const FOLDER_SPLITS: Record<Split, readonly string[]> = { train: ["train"], test: ["val", "test"] };

const EXPECTED = "a folder of class sub-folders (ImageFolder) or of MNIST-style IDX files " +
  "(train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz], t10k-* for the test split)";

/**
 * Decides what a user's data path holds, for the given split:
 * - a folder with `<prefix>-images-idx3-ubyte[.gz]` and `<prefix>-labels-idx1-ubyte[.gz]` (prefix
 *   `train`, or `t10k` for the test split) gives an `idx` spec (the `.gz` file wins if both exist);
 * - a folder with a sub-folder named after the split (`train`; `val` or `test` for the test split)
 *   that itself has sub-folders gives a `folder` spec on that sub-folder (the ImageNet layout);
 * - otherwise, for the train split, a folder with sub-folders is itself the ImageFolder root.
 *
 * A missing path, a file, an empty folder or any other layout throws one sentence naming the path
 * and what was expected. With `subset` (a subset file), the spec keeps only the images it names.
 */
export async function resolveDataPath(
  path: string,
  split: Split = "train",
  subset?: string,
): Promise<SourceSpec> {
  const spec = await resolveSplit(path, split);
  return subset === undefined ? spec : { ...spec, subset };
}

/** {@link resolveDataPath} without a subset. */
async function resolveSplit(path: string, split: Split): Promise<SourceSpec> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error(`data path ${path} does not exist; expected ${EXPECTED}`);
    }
    throw error;
  }
  if (!info.isDirectory) {
    throw new Error(`data path ${path} is a file; expected ${EXPECTED}`);
  }
  const { files, folders } = await listFolder(path);
  if (files.length === 0 && folders.length === 0) {
    throw new Error(`data path ${path} is an empty folder; expected ${EXPECTED}`);
  }

  const prefix = IDX_PREFIX[split];
  const images = pickIdxFile(files, `${prefix}-images-idx3-ubyte`);
  const labels = pickIdxFile(files, `${prefix}-labels-idx1-ubyte`);
  if (images && labels) {
    return { kind: "idx", images: join(path, images), labels: join(path, labels) };
  }
  if (images || labels) {
    const missing = images
      ? `${prefix}-labels-idx1-ubyte[.gz]`
      : `${prefix}-images-idx3-ubyte[.gz]`;
    throw new Error(`data path ${path} has ${images ?? labels} but no ${missing} beside it`);
  }

  for (const name of FOLDER_SPLITS[split]) {
    if (folders.includes(name) && (await listFolder(join(path, name))).folders.length > 0) {
      return { kind: "folder", root: join(path, name) };
    }
  }
  if (split === "train" && folders.length > 0) {
    return { kind: "folder", root: path };
  }
  const wanted = split === "train"
    ? EXPECTED
    : `a val/ or test/ ImageFolder sub-folder, or t10k-images-idx3-ubyte[.gz] and ` +
      `t10k-labels-idx1-ubyte[.gz], for the test split`;
  throw new Error(`data path ${path} has an unrecognised layout; expected ${wanted}`);
}

/** The `name.gz` or `name` entry of `files`, preferring the gzipped one; undefined if neither. */
function pickIdxFile(files: readonly string[], name: string): string | undefined {
  return [`${name}.gz`, name].find((candidate) => files.includes(candidate));
}

/**
 * Names of the files and of the sub-folders directly in `path`, following symbolic links (a
 * broken link counts as a file).
 */
async function listFolder(path: string): Promise<{ files: string[]; folders: string[] }> {
  const files: string[] = [];
  const folders: string[] = [];
  for await (const entry of Deno.readDir(path)) {
    const isDirectory = entry.isSymlink
      ? await Deno.stat(join(path, entry.name)).then((info) => info.isDirectory, () => false)
      : entry.isDirectory;
    (isDirectory ? folders : files).push(entry.name);
  }
  return { files, folders };
}

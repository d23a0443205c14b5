/**
 * torchvision `ImageFolder` semantics: `root/<class>/…/<image>`. The classes are the sorted names
 * of root's sub-folders (label = position in that list); each class folder is walked recursively,
 * folders in sorted path order and files sorted by name within each folder, keeping files whose
 * extension is jpg, jpeg, png or webp (any letter case). Images decode with sharp to 8-bit RGB.
 *
 * @module
 */

import { extname, join } from "node:path";
import sharp from "sharp";
import type { ImageSource, RawImage } from "./source.ts";

/** File extensions (lower case, with the dot) an ImageFolder keeps. */
export const IMAGE_EXTENSIONS: readonly string[] = [".jpg", ".jpeg", ".png", ".webp"];

/** One image file of an ImageFolder and its class index. */
export interface FolderSample {
  /** Path of the image file (root joined with the relative path). */
  path: string;
  /** Class index: the position of its class folder in the sorted class list. */
  label: number;
}

/** The listing of an ImageFolder tree: its classes and its images in dataset order. */
export interface FolderIndex {
  /** Sorted class-folder names. */
  classes: string[];
  /** Every image, class by class, in torchvision's order. */
  samples: FolderSample[];
}

/**
 * Lists an ImageFolder tree. A root without class sub-folders, or a class without any image,
 * throws one sentence naming the folder.
 */
export async function scanImageFolder(root: string): Promise<FolderIndex> {
  const top = await readFolder(root);
  const classes = top.folders.sort();
  if (classes.length === 0) {
    throw new Error(`${root} has no class sub-folders; expected root/<class>/<image files>`);
  }
  const samples: FolderSample[] = [];
  const empty: string[] = [];
  for (const [label, name] of classes.entries()) {
    const files = await listImages(join(root, name));
    if (files.length === 0) empty.push(name);
    for (const path of files) samples.push({ path, label });
  }
  if (empty.length > 0) {
    throw new Error(
      `${root} has class folders without any ${IMAGE_EXTENSIONS.join("/")} file: ` +
        empty.join(", "),
    );
  }
  return { classes, samples };
}

/**
 * Decodes an image file with sharp to 8-bit RGB (alpha dropped, other colour spaces converted to
 * sRGB, grayscale replicated). A file sharp cannot read throws `cannot decode <path>: <reason>`.
 */
export async function decodeImage(path: string): Promise<RawImage> {
  try {
    const { data, info } = await sharp(path)
      .removeAlpha()
      .toColourspace("srgb")
      .raw({ depth: "uchar" })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) {
      throw new Error(`it decoded to ${info.channels} channels instead of 3`);
    }
    const pixels = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    return { data: pixels, width: info.width, height: info.height };
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new Error(`cannot decode ${path}: ${reason.trim()}`);
  }
}

/** Opens an ImageFolder tree as an {@link ImageSource}; images decode on `load`. */
export async function openImageFolder(root: string): Promise<ImageSource> {
  return folderSource(await scanImageFolder(root));
}

/** The {@link ImageSource} of a scanned ImageFolder tree; images decode on `load`. */
export function folderSource({ classes, samples }: FolderIndex): ImageSource {
  return {
    length: samples.length,
    classes,
    label: (i) => sampleAt(samples, i).label,
    load: (i) => decodeImage(sampleAt(samples, i).path),
  };
}

function sampleAt(samples: readonly FolderSample[], i: number): FolderSample {
  if (!Number.isInteger(i) || i < 0 || i >= samples.length) {
    throw new RangeError(`image index ${i} is outside [0, ${samples.length})`);
  }
  return samples[i];
}

/**
 * The image files under `folder`, recursively, in torchvision's order: folders sorted by their
 * full path, files sorted by name within each folder.
 */
async function listImages(folder: string): Promise<string[]> {
  const folders = [folder];
  for (let k = 0; k < folders.length; k++) {
    const { folders: children } = await readFolder(folders[k]);
    folders.push(...children.map((name) => join(folders[k], name)));
  }
  folders.sort();
  const images: string[] = [];
  for (const path of folders) {
    const { files } = await readFolder(path);
    const kept = files.filter((name) => IMAGE_EXTENSIONS.includes(extname(name).toLowerCase()));
    images.push(...kept.sort().map((name) => join(path, name)));
  }
  return images;
}

/** Names of the files and sub-folders directly in `path`, following symbolic links. */
async function readFolder(path: string): Promise<{ files: string[]; folders: string[] }> {
  const files: string[] = [];
  const folders: string[] = [];
  for await (const entry of Deno.readDir(path)) {
    let { isDirectory, isFile } = entry;
    if (entry.isSymlink) {
      const target = await Deno.stat(join(path, entry.name)).catch(() => null);
      isDirectory = target?.isDirectory ?? false;
      isFile = target?.isFile ?? false;
    }
    if (isDirectory) folders.push(entry.name);
    else if (isFile) files.push(entry.name);
  }
  return { files, folders };
}

/**
 * IDX files (the MNIST / Fashion-MNIST format), plain or gzipped: a big-endian magic number
 * `0x0000TTDD` (TT = 0x08 for unsigned bytes, DD = number of dimensions), DD big-endian uint32
 * sizes, then the row-major data. Images are `0x00000803` (N × H × W), labels `0x00000801` (N).
 *
 * @module
 */

import { basename } from "node:path";
import type { ImageSource, RawImage } from "./source.ts";

/** An unsigned-byte IDX array: its sizes (`[N, H, W]` for images, `[N]` for labels) and data. */
export interface IdxArray {
  /** Size of each dimension, outermost first. */
  dims: number[];
  /** Row-major values, `dims` multiplied together bytes long. */
  data: Uint8Array;
}

const UBYTE = 0x08;
const GZIP_MAGIC = [0x1f, 0x8b];

/** Whether `bytes` starts with the gzip magic bytes 1f 8b. */
export function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === GZIP_MAGIC[0] && bytes[1] === GZIP_MAGIC[1];
}

/** Decompresses gzip bytes; a corrupt or truncated stream throws, naming `name`. */
export async function gunzip(bytes: Uint8Array, name: string): Promise<Uint8Array> {
  const input = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream();
  try {
    const output = input.pipeThrough(new DecompressionStream("gzip"));
    return new Uint8Array(await new Response(output).arrayBuffer());
  } catch (error) {
    throw new Error(`${name} is corrupt or truncated gzip data (${messageOf(error)})`);
  }
}

/** Compresses bytes with gzip. */
export async function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  const input = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream();
  const output = input.pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(output).arrayBuffer());
}

/**
 * Parses the bytes of an (uncompressed) unsigned-byte IDX file. A wrong magic number, a short
 * header, or data shorter or longer than the header promises throws one sentence naming `name`.
 */
export function parseIdx(bytes: Uint8Array, name: string): IdxArray {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 4) {
    throw new Error(`${name} is not an IDX file: it has only ${bytes.length} bytes`);
  }
  const magic = view.getUint32(0);
  const rank = magic & 0xff;
  if (magic >>> 16 !== 0 || (magic >>> 8 & 0xff) !== UBYTE || rank === 0) {
    const hex = magic.toString(16).padStart(8, "0");
    throw new Error(
      `${name} is not an unsigned-byte IDX file: magic number 0x${hex}, expected 0x00000801 ` +
        `(labels) or 0x00000803 (images)`,
    );
  }
  const headerBytes = 4 + 4 * rank;
  if (bytes.length < headerBytes) {
    throw new Error(
      `${name} is truncated: its ${rank}-dimensional IDX header needs ${headerBytes} bytes, ` +
        `the file has ${bytes.length}`,
    );
  }
  const dims = Array.from({ length: rank }, (_, d) => view.getUint32(4 + 4 * d));
  const expected = dims.reduce((a, b) => a * b, 1);
  const actual = bytes.length - headerBytes;
  if (actual < expected) {
    throw new Error(
      `${name} is truncated: its header promises ${dims.join("×")} = ${expected} bytes of data, ` +
        `only ${actual} follow`,
    );
  }
  if (actual > expected) {
    throw new Error(
      `${name} is corrupt: ${actual - expected} bytes follow the ${dims.join("×")} data its ` +
        `header describes`,
    );
  }
  return { dims, data: bytes.subarray(headerBytes) };
}

/** Encodes an unsigned-byte IDX array (magic, sizes, data) as uncompressed bytes. */
export function encodeIdx(array: IdxArray): Uint8Array {
  const expected = array.dims.reduce((a, b) => a * b, 1);
  if (array.data.length !== expected) {
    throw new Error(
      `IDX data has ${array.data.length} bytes, dims ${array.dims.join("×")} need ${expected}`,
    );
  }
  const headerBytes = 4 + 4 * array.dims.length;
  const bytes = new Uint8Array(headerBytes + expected);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, (UBYTE << 8) | array.dims.length);
  array.dims.forEach((size, d) => view.setUint32(4 + 4 * d, size));
  bytes.set(array.data, headerBytes);
  return bytes;
}

/** Reads an unsigned-byte IDX file, gzipped (detected by its magic bytes) or not. */
export async function readIdx(path: string): Promise<IdxArray> {
  let bytes: Uint8Array<ArrayBuffer>;
  try {
    bytes = await Deno.readFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) throw new Error(`IDX file ${path} does not exist`);
    throw error;
  }
  return parseIdx(isGzip(bytes) ? await gunzip(bytes, path) : bytes, path);
}

/** Writes an unsigned-byte IDX file, gzipped when `path` ends in `.gz`. */
export async function writeIdx(path: string, array: IdxArray): Promise<void> {
  const bytes = encodeIdx(array);
  await Deno.writeFile(path, path.endsWith(".gz") ? await gzip(bytes) : bytes);
}

/** Replicates a grayscale image (H·W bytes) into HWC RGB (H·W·3 bytes). */
export function grayToRgb(gray: Uint8Array): Uint8Array {
  const rgb = new Uint8Array(gray.length * 3);
  for (let p = 0; p < gray.length; p++) {
    rgb[3 * p] = rgb[3 * p + 1] = rgb[3 * p + 2] = gray[p];
  }
  return rgb;
}

/**
 * Opens an images file (N × H × W) and a labels file (N) as an {@link ImageSource}. Images are
 * grayscale, replicated to RGB on load; the classes are `"0"`, `"1"`, … up to the largest label.
 */
export async function openIdxSource(imagesPath: string, labelsPath: string): Promise<ImageSource> {
  const [images, labels] = await Promise.all([readIdx(imagesPath), readIdx(labelsPath)]);
  if (images.dims.length !== 3) {
    throw new Error(
      `${imagesPath} holds a ${images.dims.length}-dimensional array, expected N×H×W images`,
    );
  }
  if (labels.dims.length !== 1) {
    throw new Error(
      `${labelsPath} holds a ${labels.dims.length}-dimensional array, expected N labels`,
    );
  }
  const [count, height, width] = images.dims;
  if (labels.dims[0] !== count) {
    throw new Error(
      `${basename(labelsPath)} has ${labels.dims[0]} labels but ${basename(imagesPath)} has ` +
        `${count} images`,
    );
  }
  const classCount = labels.data.reduce((a, b) => Math.max(a, b + 1), 0);
  return new IdxSource(images.data, labels.data, count, width, height, classCount);
}

/** Grayscale IDX images and their labels as an {@link ImageSource}. */
class IdxSource implements ImageSource {
  readonly length: number;
  readonly classes: readonly string[];
  #pixels: Uint8Array;
  #labels: Uint8Array;
  #width: number;
  #height: number;

  constructor(
    pixels: Uint8Array,
    labels: Uint8Array,
    length: number,
    width: number,
    height: number,
    classCount: number,
  ) {
    this.length = length;
    this.classes = Array.from({ length: classCount }, (_, c) => String(c));
    this.#pixels = pixels;
    this.#labels = labels;
    this.#width = width;
    this.#height = height;
  }

  label(i: number): number {
    this.#check(i);
    return this.#labels[i];
  }

  load(i: number): Promise<RawImage> {
    this.#check(i);
    const size = this.#width * this.#height;
    const gray = this.#pixels.subarray(i * size, (i + 1) * size);
    return Promise.resolve({ data: grayToRgb(gray), width: this.#width, height: this.#height });
  }

  #check(i: number): void {
    if (!Number.isInteger(i) || i < 0 || i >= this.length) {
      throw new RangeError(`image index ${i} is outside [0, ${this.length})`);
    }
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

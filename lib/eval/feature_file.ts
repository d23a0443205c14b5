/**
 * Features of a dataset split on disk, written while they are extracted and read back a block of
 * rows at a time, so that a bank larger than memory can be classified.
 *
 * The file is a safetensors file (8-byte little-endian header length, JSON header padded with
 * spaces to a multiple of 8, then the data) holding two tensors in this order: `features`, F32
 * [rows, dim], every row L2-normalised as by `F.normalize(x, dim=1, p=2)`, and `labels`, I64
 * [rows], the class of each row; its metadata says `{"content": "l2-normalised features"}`. The
 * header is written first (the row count is known when extraction starts), then the rows as they
 * come, then the labels; PyTorch reads it with `safetensors.torch.load_file`.
 *
 * @module
 */

import { checkRange, type FeatureBank, l2NormalizeRows, rowCount } from "./feature_bank.ts";

/** What the metadata of a feature file says. */
const CONTENT = "l2-normalised features";

/** The JSON header of a feature file with `rows` rows of width `dim`. */
function headerJson(rows: number, dim: number): string {
  const featureBytes = rows * dim * 4;
  return JSON.stringify({
    __metadata__: { content: CONTENT },
    features: { dtype: "F32", shape: [rows, dim], data_offsets: [0, featureBytes] },
    labels: { dtype: "I64", shape: [rows], data_offsets: [featureBytes, featureBytes + rows * 8] },
  });
}

/** The header length field and the header, padded with spaces to a multiple of 8. */
function encodeHeader(rows: number, dim: number): Uint8Array {
  const json = new TextEncoder().encode(headerJson(rows, dim));
  const length = Math.ceil(json.length / 8) * 8;
  const bytes = new Uint8Array(8 + length).fill(0x20);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(length), true);
  bytes.set(json, 8);
  return bytes;
}

/** Writes all of `bytes` to `file` at its current position. */
async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) done += await file.write(bytes.subarray(done));
}

/** Fills `bytes` from `file` at its current position, or throws naming `path` at the end of file. */
async function readFull(file: Deno.FsFile, bytes: Uint8Array, path: string): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const n = await file.read(bytes.subarray(done));
    if (n === null) throw new Error(`${path} ended early: it is truncated`);
    done += n;
  }
}

/** The bytes of a typed array's view. */
function bytesOf(array: Float32Array | BigInt64Array): Uint8Array {
  return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
}

/**
 * Writes a feature file row block by row block: {@link FeatureFileWriter.create} with the row
 * count and width, {@link FeatureFileWriter.append} for each batch in order, then
 * {@link FeatureFileWriter.close}. Holds only the labels (8 bytes a row) in memory.
 */
export class FeatureFileWriter {
  /** The file's path. */
  readonly path: string;
  /** Feature width. */
  readonly dim: number;
  readonly #file: Deno.FsFile;
  readonly #labels: BigInt64Array;
  #written = 0;

  private constructor(path: string, file: Deno.FsFile, rows: number, dim: number) {
    this.path = path;
    this.#file = file;
    this.#labels = new BigInt64Array(rows);
    this.dim = dim;
  }

  /** Creates (or truncates) `path` for `rows` rows of width `dim` and writes the header. */
  static async create(path: string, rows: number, dim: number): Promise<FeatureFileWriter> {
    if (!Number.isInteger(rows) || rows < 1) {
      throw new Error(`a feature file needs a positive number of rows, got ${rows}`);
    }
    if (!Number.isInteger(dim) || dim < 1) {
      throw new Error(`a feature file needs a positive width, got ${dim}`);
    }
    const file = await Deno.open(path, { write: true, create: true, truncate: true });
    try {
      await writeAll(file, encodeHeader(rows, dim));
    } catch (error) {
      file.close();
      throw error;
    }
    return new FeatureFileWriter(path, file, rows, dim);
  }

  /** Rows written so far. */
  get written(): number {
    return this.#written;
  }

  /**
   * Appends rows (row-major, count·dim values, not yet normalised) and their labels: the rows are
   * L2-normalised **in place** and written after the previous ones.
   */
  async append(features: Float32Array, labels: ArrayLike<number>): Promise<void> {
    const count = rowCount(features, this.dim, "the appended features");
    if (labels.length !== count) {
      throw new Error(`${labels.length} labels were appended with ${count} feature rows`);
    }
    if (this.#written + count > this.#labels.length) {
      throw new Error(
        `${this.path} holds ${this.#labels.length} rows; ${this.#written + count} were appended`,
      );
    }
    await writeAll(this.#file, bytesOf(l2NormalizeRows(features, this.dim)));
    for (let i = 0; i < count; i++) this.#labels[this.#written + i] = BigInt(labels[i]);
    this.#written += count;
  }

  /** Closes the file unfinished (after a failed extraction); it is then no feature file. */
  abandon(): void {
    this.#file.close();
  }

  /** Writes the labels and closes the file; every row must have been appended. */
  async close(): Promise<void> {
    try {
      if (this.#written !== this.#labels.length) {
        throw new Error(
          `${this.path} was closed after ${this.#written} of its ${this.#labels.length} rows`,
        );
      }
      await writeAll(this.#file, bytesOf(this.#labels));
    } finally {
      this.#file.close();
    }
  }
}

/** A feature file opened for reading: a {@link FeatureBank} whose rows stay on disk. */
export class FeatureFile implements FeatureBank {
  /** The file's path. */
  readonly path: string;
  /** Number of rows. */
  readonly rows: number;
  /** Feature width. */
  readonly dim: number;
  /** The class of each row (read into memory when the file is opened). */
  readonly labels: Int32Array;
  readonly #file: Deno.FsFile;
  readonly #dataStart: number;

  private constructor(
    path: string,
    file: Deno.FsFile,
    rows: number,
    dim: number,
    labels: Int32Array,
    dataStart: number,
  ) {
    this.path = path;
    this.#file = file;
    this.rows = rows;
    this.dim = dim;
    this.labels = labels;
    this.#dataStart = dataStart;
  }

  /** Opens a file written by {@link FeatureFileWriter}, checks its layout and reads its labels. */
  static async open(path: string): Promise<FeatureFile> {
    const file = await Deno.open(path, { read: true });
    try {
      const size = (await file.stat()).size;
      const lengthBytes = new Uint8Array(8);
      await readFull(file, lengthBytes, path);
      const headerLength = Number(new DataView(lengthBytes.buffer).getBigUint64(0, true));
      if (headerLength > size - 8) throw new Error(`${path} is not a feature file: bad header`);
      const headerBytes = new Uint8Array(headerLength);
      await readFull(file, headerBytes, path);
      const { rows, dim } = parseHeader(new TextDecoder().decode(headerBytes), path);
      const dataStart = 8 + headerLength;
      const featureBytes = rows * dim * 4;
      if (size !== dataStart + featureBytes + rows * 8) {
        throw new Error(
          `${path} has ${size} bytes, not the ${
            dataStart + featureBytes + rows * 8
          } its header describes`,
        );
      }
      await file.seek(dataStart + featureBytes, Deno.SeekMode.Start);
      const labels64 = new BigInt64Array(rows);
      await readFull(file, bytesOf(labels64), path);
      return new FeatureFile(path, file, rows, dim, Int32Array.from(labels64, Number), dataStart);
    } catch (error) {
      file.close();
      throw error;
    }
  }

  /** Copies rows [first, first + count) into the start of `into`. */
  async read(first: number, count: number, into: Float32Array): Promise<void> {
    checkRange(first, count, this.rows, into, this.dim);
    await this.#file.seek(this.#dataStart + first * this.dim * 4, Deno.SeekMode.Start);
    await readFull(this.#file, bytesOf(into.subarray(0, count * this.dim)), this.path);
  }

  /** Closes the file. */
  close(): void {
    this.#file.close();
  }
}

/**
 * Rows and width from a feature file's header, which must be the one {@link FeatureFileWriter}
 * writes, or one sentence saying what is wrong.
 */
function parseHeader(text: string, path: string): { rows: number; dim: number } {
  const wrong = `${path} is not a feature file: it must hold F32 features [rows, dim] then I64 ` +
    `labels [rows], as the feature extraction writes them`;
  let shape: unknown;
  try {
    shape = JSON.parse(text)?.features?.shape;
  } catch {
    throw new Error(wrong);
  }
  const [rows, dim] = Array.isArray(shape) ? shape : [];
  const valid = Number.isInteger(rows) && Number.isInteger(dim) && rows > 0 && dim > 0;
  if (!valid || text.trimEnd() !== headerJson(rows, dim)) throw new Error(wrong);
  return { rows, dim };
}

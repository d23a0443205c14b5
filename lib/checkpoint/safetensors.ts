/**
 * The safetensors file format: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
 * (padded with spaces to a multiple of 8) describing each tensor's dtype, shape and byte range,
 * then the tensor bytes, little-endian, row-major, packed back to back with no holes.
 *
 * @module
 */

import { formatShape, shapeSize } from "../graph/tensor.ts";
import type { NamedTensor, NamedTensorDType, NamedTensors } from "../runtime/named_tensor.ts";

type ArrayConstructor =
  | Float32ArrayConstructor
  | Float64ArrayConstructor
  | BigInt64ArrayConstructor
  | Uint8ArrayConstructor
  | Uint16ArrayConstructor;

const FORMATS: Record<NamedTensorDType, { code: string; array: ArrayConstructor }> = {
  float32: { code: "F32", array: Float32Array },
  float64: { code: "F64", array: Float64Array },
  int64: { code: "I64", array: BigInt64Array },
  bool: { code: "BOOL", array: Uint8Array },
  float16: { code: "F16", array: Uint16Array },
};

const DTYPE_OF_CODE = new Map(
  Object.entries(FORMATS).map(([dtype, f]) => [f.code, dtype as NamedTensorDType]),
);

const METADATA_KEY = "__metadata__";

/**
 * Encodes tensors (in the given order) and optional string metadata as safetensors bytes.
 * `__metadata__` is written only when `metadata` has entries. Assumes a little-endian host, as
 * every platform Deno runs on is.
 */
export function encodeSafetensors(
  tensors: NamedTensors,
  metadata?: Record<string, string>,
): Uint8Array {
  const entries = tensors instanceof Map ? [...tensors] : Object.entries(tensors);
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) {
    for (const [key, value] of Object.entries(metadata)) {
      if (typeof value !== "string") {
        throw new Error(`safetensors metadata "${key}" must be a string, got ${typeof value}`);
      }
    }
    header[METADATA_KEY] = metadata;
  }
  let offset = 0;
  for (const [name, tensor] of entries) {
    checkTensor(name, tensor);
    const end = offset + tensor.data.byteLength;
    header[name] = {
      dtype: FORMATS[tensor.dtype].code,
      shape: tensor.shape,
      data_offsets: [offset, end],
    };
    offset = end;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const headerLength = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + headerLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLength), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLength);
  let position = 8 + headerLength;
  for (const [, { data }] of entries) {
    out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), position);
    position += data.byteLength;
  }
  return out;
}

function checkTensor(name: string, tensor: NamedTensor): void {
  if (name === METADATA_KEY || name === "") {
    throw new Error(`"${name}" cannot be a safetensors tensor name`);
  }
  const format = FORMATS[tensor.dtype];
  if (!format) throw new Error(`tensor "${name}" has unsupported dtype "${tensor.dtype}"`);
  if (!(tensor.data instanceof format.array)) {
    throw new Error(
      `tensor "${name}" is ${tensor.dtype} and needs a ${format.array.name}, got a ${tensor.data.constructor.name}`,
    );
  }
  if (!tensor.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new Error(`tensor "${name}" has an invalid shape ${formatShape(tensor.shape)}`);
  }
  if (tensor.data.length !== shapeSize(tensor.shape)) {
    throw new Error(
      `tensor "${name}" has shape ${formatShape(tensor.shape)} (${
        shapeSize(tensor.shape)
      } elements) but ${tensor.data.length} values`,
    );
  }
}

/** A tensor as described by the header, before its bytes are read. */
interface HeaderEntry {
  name: string;
  dtype: NamedTensorDType;
  shape: number[];
  begin: number;
  end: number;
}

/**
 * Decodes safetensors bytes. Tensors come back in data order; each array is a view into `bytes`
 * when its offset is aligned for its element type and a copy otherwise. `source` names the data
 * in error messages (a file path, say); every error is one sentence naming it.
 */
export function decodeSafetensors(
  bytes: Uint8Array,
  source = "safetensors data",
): { tensors: Map<string, NamedTensor>; metadata: Record<string, string> } {
  if (bytes.length < 8) {
    throw new Error(
      `${source} is truncated: it has ${bytes.length} bytes, fewer than the 8-byte header length`,
    );
  }
  const headerLength = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (headerLength > BigInt(bytes.length - 8)) {
    throw new Error(
      `${source} is truncated: the header length field promises ${headerLength} bytes of header but the file has ${
        bytes.length - 8
      } after it`,
    );
  }
  const dataStart = 8 + Number(headerLength);
  const header = parseHeader(bytes.subarray(8, dataStart), source);
  const metadata = parseMetadata(header[METADATA_KEY], source);
  const entries = Object.entries(header)
    .filter(([name]) => name !== METADATA_KEY)
    .map(([name, value]) => parseEntry(name, value, source))
    .sort((x, y) => x.begin - y.begin || x.end - y.end);
  checkLayout(entries, bytes.length - dataStart, source);

  const tensors = new Map<string, NamedTensor>();
  for (const { name, dtype, shape, begin, end } of entries) {
    const array = FORMATS[dtype].array;
    const start = bytes.byteOffset + dataStart + begin;
    const count = (end - begin) / array.BYTES_PER_ELEMENT;
    const data = start % array.BYTES_PER_ELEMENT === 0
      ? new array(bytes.buffer as ArrayBuffer, start, count)
      : new array(bytes.slice(dataStart + begin, dataStart + end).buffer);
    tensors.set(name, { dtype, shape, data });
  }
  return { tensors, metadata };
}

function parseHeader(headerBytes: Uint8Array, source: string): Record<string, unknown> {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
  } catch {
    throw new Error(`${source} has a malformed header: it is not valid UTF-8`);
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (error) {
    throw new Error(`${source} has a malformed header: ${(error as Error).message}`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    throw new Error(`${source} has a malformed header: it is not a JSON object`);
  }
  return header as Record<string, unknown>;
}

function parseMetadata(value: unknown, source: string): Record<string, string> {
  if (value === undefined) return {};
  const valid = typeof value === "object" && value !== null && !Array.isArray(value) &&
    Object.values(value).every((v) => typeof v === "string");
  if (!valid) {
    throw new Error(`${source} has a malformed header: __metadata__ must map strings to strings`);
  }
  return { ...value } as Record<string, string>;
}

function parseEntry(name: string, value: unknown, source: string): HeaderEntry {
  const { dtype: code, shape, data_offsets: offsets } = (value ?? {}) as Record<string, unknown>;
  if (
    typeof code !== "string" || !Array.isArray(shape) || !Array.isArray(offsets) ||
    !shape.every((d) => Number.isSafeInteger(d) && d >= 0)
  ) {
    throw new Error(
      `${source} has a malformed header: tensor "${name}" needs a string dtype, a shape of non-negative integers and data_offsets`,
    );
  }
  const dtype = DTYPE_OF_CODE.get(code);
  if (!dtype) {
    throw new Error(
      `${source} has tensor "${name}" of unknown dtype "${code}" (supported: ${
        [...DTYPE_OF_CODE.keys()].join(", ")
      })`,
    );
  }
  const [begin, end] = offsets;
  if (
    offsets.length !== 2 || !Number.isSafeInteger(begin) || !Number.isSafeInteger(end) ||
    begin < 0 || end < begin
  ) {
    throw new Error(
      `${source} has data_offsets out of range for tensor "${name}": ${JSON.stringify(offsets)}`,
    );
  }
  const expected = shapeSize(shape) * FORMATS[dtype].array.BYTES_PER_ELEMENT;
  if (end - begin !== expected) {
    throw new Error(
      `${source} has tensor "${name}" of shape ${
        formatShape(shape)
      } and dtype ${code} (${expected} bytes) but its data_offsets span ${end - begin} bytes`,
    );
  }
  return { name, dtype, shape, begin, end };
}

/** Checks that entries (sorted by offset) tile the data buffer exactly, as the format requires. */
function checkLayout(entries: HeaderEntry[], dataLength: number, source: string): void {
  const dataEnd = entries.reduce((max, e) => Math.max(max, e.end), 0);
  if (dataEnd > dataLength) {
    throw new Error(
      `${source} is truncated: the header promises ${dataEnd} bytes of tensor data but the file has ${dataLength}`,
    );
  }
  let position = 0;
  let previous: HeaderEntry | undefined;
  for (const entry of entries) {
    if (previous && entry.begin < position) {
      throw new Error(
        `${source} has overlapping tensors "${previous.name}" [${previous.begin}, ${previous.end}] and "${entry.name}" [${entry.begin}, ${entry.end}]`,
      );
    }
    if (entry.begin > position) {
      throw new Error(
        `${source} has data_offsets out of range: bytes ${position} to ${entry.begin} of the data belong to no tensor`,
      );
    }
    position = entry.end;
    previous = entry;
  }
  if (position < dataLength) {
    throw new Error(
      `${source} has data_offsets out of range: the last ${
        dataLength - position
      } bytes of the data belong to no tensor`,
    );
  }
}

let saveCounter = 0;

/**
 * Writes tensors and metadata to `path` atomically: the bytes go to a temporary file beside it
 * (`<path>.tmp-<pid>-<n>`), are flushed to disk, then renamed over `path`. On any failure the
 * temporary file is removed and `path` keeps its previous contents.
 */
export async function saveSafetensors(
  path: string,
  tensors: NamedTensors,
  metadata?: Record<string, string>,
): Promise<void> {
  const tmp = `${path}.tmp-${Deno.pid}-${saveCounter++}`;
  try {
    const bytes = encodeSafetensors(tensors, metadata);
    const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
    try {
      let written = 0;
      while (written < bytes.length) written += await file.write(bytes.subarray(written));
      await file.sync();
    } finally {
      file.close();
    }
    await Deno.rename(tmp, path);
  } catch (error) {
    await Deno.remove(tmp).catch(() => {});
    throw new Error(`could not save ${path}: ${(error as Error).message}`, { cause: error });
  }
}

/** Reads and decodes a safetensors file; errors are one sentence naming `path`. */
export async function loadSafetensors(
  path: string,
): Promise<{ tensors: Map<string, NamedTensor>; metadata: Record<string, string> }> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) throw new Error(`${path} does not exist`);
    throw new Error(`could not read ${path}: ${(error as Error).message}`, { cause: error });
  }
  return decodeSafetensors(bytes, path);
}

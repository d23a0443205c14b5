/**
 * PyTorch checkpoints (`torch.save`'s zip format, §8.5 of the reference) read and written without
 * Python: a zip archive holding `<name>/data.pkl` (a protocol-2 pickle, read by the restricted
 * unpickler of `pickle.ts`), `<name>/data/<key>` (raw little-endian storages) and `<name>/version`.
 * The legacy format of PyTorch before 1.6 (pickles and storages one after another) is read too.
 *
 * @module
 */

import { basename, dirname, join } from "node:path";
import type { NamedTensor, NamedTensorDType } from "../runtime/named_tensor.ts";
import {
  isTensor,
  pickle,
  type PickleStorage,
  type PthValue,
  PyDict,
  type TensorLoader,
  unpickle,
  unpickleAt,
} from "./pickle.ts";

export { isTensor, PyDict, PyNamespace, PyTuple } from "./pickle.ts";
export type { PthValue } from "./pickle.ts";

const ARRAYS = {
  float32: Float32Array,
  float64: Float64Array,
  int64: BigInt64Array,
  bool: Uint8Array,
  float16: Uint16Array,
} as const;

// ---------------------------------------------------------------------------------------------
// Zip reading (stored and deflated entries, zip64 when present).

interface ZipEntry {
  method: number;
  compressedSize: number;
  size: number;
  localOffset: number;
}

function readZipDirectory(bytes: Uint8Array, file: string): Map<string, ZipEntry> {
  const bad = (why: string): never => {
    throw new Error(`${file} is not a readable PyTorch zip checkpoint: ${why}`);
  };
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let eocd = -1;
  for (let i = bytes.length - 22; i >= Math.max(0, bytes.length - 22 - 65535); i--) {
    if (view.getUint32(i, true) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) {
    bad("its end-of-archive record is missing (the file is truncated, or not a zip file)");
  }
  let count = view.getUint16(eocd + 10, true);
  let dirOffset = view.getUint32(eocd + 16, true);
  if (count === 0xffff || dirOffset === 0xffffffff) {
    const loc = eocd - 20;
    if (loc < 0 || view.getUint32(loc, true) !== 0x07064b50) bad("its zip64 locator is missing");
    const z = Number(view.getBigUint64(loc + 8, true));
    if (z + 56 > bytes.length || view.getUint32(z, true) !== 0x06064b50) {
      bad("its zip64 end-of-archive record is missing");
    }
    count = Number(view.getBigUint64(z + 32, true));
    dirOffset = Number(view.getBigUint64(z + 48, true));
  }
  const entries = new Map<string, ZipEntry>();
  let p = dirOffset;
  for (let n = 0; n < count; n++) {
    if (p + 46 > bytes.length || view.getUint32(p, true) !== 0x02014b50) {
      bad("its central directory is damaged");
    }
    const method = view.getUint16(p + 10, true);
    let compressedSize = view.getUint32(p + 20, true);
    let size = view.getUint32(p + 24, true);
    const nameLen = view.getUint16(p + 28, true);
    const extraLen = view.getUint16(p + 30, true);
    const commentLen = view.getUint16(p + 32, true);
    let localOffset = view.getUint32(p + 42, true);
    const name = new TextDecoder().decode(bytes.subarray(p + 46, p + 46 + nameLen));
    // zip64 extended information (id 1) replaces the fields that are all ones, in this order.
    let e = p + 46 + nameLen;
    const extraEnd = e + extraLen;
    while (e + 4 <= extraEnd) {
      const id = view.getUint16(e, true);
      const len = view.getUint16(e + 2, true);
      if (id === 1) {
        let q = e + 4;
        const next = () => (q += 8, Number(view.getBigUint64(q - 8, true)));
        if (size === 0xffffffff) size = next();
        if (compressedSize === 0xffffffff) compressedSize = next();
        if (localOffset === 0xffffffff) localOffset = next();
      }
      e += 4 + len;
    }
    entries.set(name, { method, compressedSize, size, localOffset });
    p = extraEnd + commentLen;
  }
  return entries;
}

async function readZipEntry(
  bytes: Uint8Array,
  file: string,
  name: string,
  entry: ZipEntry,
): Promise<Uint8Array> {
  const bad = (why: string): never => {
    throw new Error(`${file} is not a readable PyTorch zip checkpoint: ${why}`);
  };
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const p = entry.localOffset;
  if (p + 30 > bytes.length || view.getUint32(p, true) !== 0x04034b50) {
    bad(`the entry ${name} is damaged`);
  }
  const start = p + 30 + view.getUint16(p + 26, true) + view.getUint16(p + 28, true);
  const end = start + entry.compressedSize;
  if (end > bytes.length) bad(`the entry ${name} is cut off (the file is truncated)`);
  const raw = bytes.subarray(start, end);
  if (entry.method === 0) return raw;
  if (entry.method !== 8) bad(`the entry ${name} uses zip compression method ${entry.method}`);
  try {
    const stream = new Blob([raw.slice()]).stream().pipeThrough(
      new DecompressionStream("deflate-raw"),
    );
    const out = new Uint8Array(await new Response(stream).arrayBuffer());
    if (out.length !== entry.size) throw new Error("size mismatch");
    return out;
  } catch {
    return bad(`the entry ${name} does not inflate`);
  }
}

// ---------------------------------------------------------------------------------------------
// Reading.

/**
 * The dtype of a tensor rebuilt over `storage` with `size` and `stride`; throws for the dtypes and
 * the non-contiguous layouts that are not supported.
 */
function tensorDType(
  file: string,
  storage: PickleStorage,
  size: number[],
  stride: number[],
): NamedTensorDType {
  if (storage.dtype === "int32" || storage.dtype === "bfloat16") {
    throw new Error(`${file} holds a ${storage.dtype} tensor, which is not supported here`);
  }
  let expected = 1;
  for (let i = size.length - 1; i >= 0; i--) {
    if (size[i] !== 1 && stride[i] !== expected) {
      throw new Error(
        `${file} holds a non-contiguous tensor (size [${size}], stride [${stride}]), which is not supported here`,
      );
    }
    expected *= size[i];
  }
  return storage.dtype;
}

/**
 * The values of a contiguous tensor of `size` starting `offset` elements into `storage`, copied
 * out of `raw` (the bytes of the stored storage); `bad` throws the reader's sentence.
 */
function tensorData(
  raw: Uint8Array,
  storage: PickleStorage,
  dtype: NamedTensorDType,
  offset: number,
  size: number[],
  bad: (why: string) => never,
): NamedTensor["data"] {
  const Array = ARRAYS[dtype];
  const width = Array.BYTES_PER_ELEMENT;
  const numel = size.reduce((a, b) => a * b, 1);
  const start = offset + (storage.view?.offset ?? 0);
  const limit = storage.view ? storage.view.offset + storage.view.numel : raw.length / width;
  if (numel > 0 && (start + numel > limit || start + numel > raw.length / width)) {
    bad(`storage ${storage.key} is shorter than its tensor`);
  }
  return new Array(raw.slice(start * width, (start + numel) * width).buffer);
}

/** Decodes the bytes of a `.pth` checkpoint (zip or legacy); `file` names it in error messages. */
export async function decodePth(bytes: Uint8Array, file = "checkpoint"): Promise<PthValue> {
  if (bytes[0] === 0x80) return decodeLegacyPth(bytes, file);
  const entries = readZipDirectory(bytes, file);
  const pkl = [...entries.keys()].find((n) => n.endsWith("data.pkl") && !n.includes("/data/"));
  if (pkl === undefined) {
    throw new Error(`${file} is not a readable PyTorch zip checkpoint: it has no data.pkl`);
  }
  const bad = (why: string): never => {
    throw new Error(`${file} is not a readable PyTorch zip checkpoint: ${why}`);
  };
  const prefix = pkl.slice(0, pkl.length - "data.pkl".length);
  const pickleBytes = await readZipEntry(bytes, file, pkl, entries.get(pkl)!);
  const storages = new Map<string, Uint8Array>();
  const loadStorage = (storage: PickleStorage): Uint8Array => {
    let data = storages.get(storage.key);
    if (data) return data;
    const name = `${prefix}data/${storage.key}`;
    const entry = entries.get(name);
    if (!entry || entry.method !== 0) bad(`${name} is missing`);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const p = entry!.localOffset;
    if (p + 30 > bytes.length || view.getUint32(p, true) !== 0x04034b50) bad(`${name} is damaged`);
    const start = p + 30 + view.getUint16(p + 26, true) + view.getUint16(p + 28, true);
    if (start + entry!.size > bytes.length) bad(`${name} is cut off (the file is truncated)`);
    data = bytes.subarray(start, start + entry!.size);
    storages.set(storage.key, data);
    return data;
  };
  // Deflated storages (torch never writes them, but other zip tools may) are inflated up front.
  for (const [name, entry] of entries) {
    if (name.startsWith(`${prefix}data/`) && entry.method !== 0) {
      storages.set(name.slice(prefix.length + 5), await readZipEntry(bytes, file, name, entry));
    }
  }
  return unpickle(pickleBytes, file, (storage, offset, size, stride) => {
    const dtype = tensorDType(file, storage, size, stride);
    const data = tensorData(loadStorage(storage), storage, dtype, offset, size, bad);
    return { dtype, shape: size, data } as NamedTensor;
  });
}

/** The first pickle of a legacy checkpoint, and its protocol version (the second). */
const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;
const LEGACY_PROTOCOL = 1001;

/**
 * Decodes the legacy format (`torch.save` before PyTorch 1.6, or with
 * `_use_new_zipfile_serialization=False`): pickles one after another (magic number, protocol
 * version, system information, the object, the list of storage keys), then each storage in the
 * order of that list as an int64 element count and its raw bytes.
 */
function decodeLegacyPth(bytes: Uint8Array, file: string): PthValue {
  const bad = (why: string): never => {
    throw new Error(`${file} is not a readable legacy PyTorch checkpoint: ${why}`);
  };
  let pos = 0;
  const next = (
    loadTensor: TensorLoader = () => bad("a tensor appears outside the saved object"),
  ): PthValue => {
    const { value, end } = unpickleAt(bytes, pos, file, loadTensor);
    pos = end;
    return value;
  };
  if (next() !== LEGACY_MAGIC) bad("it does not start with PyTorch's magic number");
  if (next() !== LEGACY_PROTOCOL) bad("its protocol version is not 1001");
  const sysInfo = next();
  if (!(sysInfo instanceof PyDict)) bad("its system information is not a dict");
  if ((sysInfo as PyDict).get("little_endian") !== true) {
    throw new Error(`${file} was written on a big-endian machine, which is not supported here`);
  }

  // Tensors come before their storages: each is filled in once the storages have been read.
  const dtypes = new Map<string, NamedTensorDType>();
  const pending: { tensor: NamedTensor; storage: PickleStorage; offset: number }[] = [];
  const value = next((storage, offset, size, stride) => {
    const dtype = tensorDType(file, storage, size, stride);
    if ((dtypes.get(storage.key) ?? dtype) !== dtype) {
      bad(`storage ${storage.key} is used with two element types`);
    }
    dtypes.set(storage.key, dtype);
    const tensor = { dtype, shape: size, data: new ARRAYS[dtype](0) } as NamedTensor;
    pending.push({ tensor, storage, offset });
    return tensor;
  });
  const keys = next();
  if (!Array.isArray(keys) || !keys.every((k) => typeof k === "string")) {
    bad("its list of storages is malformed");
  }

  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const storages = new Map<string, Uint8Array>();
  for (const key of keys as string[]) {
    const dtype = dtypes.get(key);
    if (dtype === undefined) bad(`storage ${key} belongs to no tensor`);
    if (pos + 8 > bytes.length) bad(`storage ${key} is cut off (the file is truncated)`);
    const numel = view.getBigInt64(pos, true);
    const nbytes = Number(numel) * ARRAYS[dtype!].BYTES_PER_ELEMENT;
    if (numel < 0n || pos + 8 + nbytes > bytes.length) {
      bad(`storage ${key} is cut off (the file is truncated)`);
    }
    storages.set(key, bytes.subarray(pos + 8, pos + 8 + nbytes));
    pos += 8 + nbytes;
  }
  for (const { tensor, storage, offset } of pending) {
    const raw = storages.get(storage.key);
    if (raw === undefined) bad(`storage ${storage.key} is missing`);
    if (raw!.length / tensor.data.BYTES_PER_ELEMENT !== storage.numel) {
      bad(`storage ${storage.key} holds a different number of values than its tensors expect`);
    }
    tensor.data = tensorData(raw!, storage, tensor.dtype, offset, tensor.shape, bad);
  }
  return value;
}

/** Reads a `.pth` checkpoint written by `torch.save`: zip (PyTorch ≥ 1.6) or legacy format. */
export async function readPth(path: string): Promise<PthValue> {
  return decodePth(await Deno.readFile(path), path);
}

// ---------------------------------------------------------------------------------------------
// Writing.

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(b: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < b.length; i++) c = CRC_TABLE[(c ^ b[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** Encodes a stored (uncompressed) zip; entry data is aligned to 64 bytes as torch does. */
function encodeZip(files: [string, Uint8Array][]): Uint8Array {
  const enc = new TextEncoder();
  const chunks: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let offset = 0;
  for (const [name, data] of files) {
    const nameBytes = enc.encode(name);
    const headerEnd = offset + 30 + nameBytes.length + 4;
    const pad = (64 - (headerEnd % 64)) % 64;
    const local = new Uint8Array(30 + nameBytes.length + 4 + pad);
    const lv = new DataView(local.buffer);
    const crc = crc32(data);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint16(4, 20, true);
    lv.setUint32(14, crc, true);
    lv.setUint32(18, data.length, true);
    lv.setUint32(22, data.length, true);
    lv.setUint16(26, nameBytes.length, true);
    lv.setUint16(28, 4 + pad, true);
    local.set(nameBytes, 30);
    lv.setUint16(30 + nameBytes.length, 0x4246, true); // "FB" padding field, as torch writes
    lv.setUint16(32 + nameBytes.length, pad, true);
    const cd = new Uint8Array(46 + nameBytes.length);
    const cv = new DataView(cd.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(4, 20, true);
    cv.setUint16(6, 20, true);
    cv.setUint32(16, crc, true);
    cv.setUint32(20, data.length, true);
    cv.setUint32(24, data.length, true);
    cv.setUint16(28, nameBytes.length, true);
    cv.setUint32(42, offset, true);
    cd.set(nameBytes, 46);
    chunks.push(local, data);
    central.push(cd);
    offset += local.length + data.length;
    if (offset >= 0xffffffff) {
      throw new Error("writePth: checkpoints of 4 GiB or more (zip64) are not supported yet");
    }
  }
  const cdSize = central.reduce((a, c) => a + c.length, 0);
  const end = new Uint8Array(22);
  const ev = new DataView(end.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, files.length, true);
  ev.setUint16(10, files.length, true);
  ev.setUint32(12, cdSize, true);
  ev.setUint32(16, offset, true);
  const out = new Uint8Array(offset + cdSize + 22);
  let p = 0;
  for (const c of [...chunks, ...central, end]) {
    out.set(c, p);
    p += c.length;
  }
  return out;
}

/** Encodes `value` as a zip checkpoint `torch.load` reads (archive folder `archive/`). */
export function encodePth(value: PthValue): Uint8Array {
  const keys = new Map<NamedTensor["data"], string>();
  const storages: [string, Uint8Array][] = [];
  const data = pickle(value, (tensor) => {
    let key = keys.get(tensor.data);
    if (key === undefined) {
      key = String(keys.size);
      keys.set(tensor.data, key);
      const d = tensor.data;
      storages.push([`archive/data/${key}`, new Uint8Array(d.buffer, d.byteOffset, d.byteLength)]);
    }
    return key;
  });
  return encodeZip([
    ["archive/data.pkl", data],
    ...storages,
    ["archive/version", new TextEncoder().encode("3\n")],
  ]);
}

/** Writes `value` to `path` as a `torch.load`-able checkpoint, atomically (temp file + rename). */
export async function writePth(path: string, value: PthValue): Promise<void> {
  const bytes = encodePth(value);
  const temp = join(dirname(path), `.${basename(path)}.${crypto.randomUUID()}.tmp`);
  try {
    await Deno.writeFile(temp, bytes);
    await Deno.rename(temp, path);
  } catch (error) {
    await Deno.remove(temp).catch(() => {});
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------
// State dicts.

function describeKeys(dict: PyDict): string {
  return [...dict.keys()].map((k) => String(k)).join(", ") || "nothing";
}

/**
 * The tensors of a state dict in a loaded checkpoint, keys as stored (the student's keep their
 * `module.` prefix). With `key` (e.g. "teacher", "student", "state_dict") that entry is taken and
 * must exist. Without it: a `{'state_dict': …}` file gives its state dict, a flat dict of tensors
 * gives itself, and a full training checkpoint (with `student` and `teacher`) throws, asking for a
 * key, so that the wrong network is never picked silently (gotcha 19).
 */
export function stateDictFromPth(value: PthValue, key?: string): Map<string, NamedTensor> {
  if (!(value instanceof PyDict)) throw new Error("the checkpoint does not hold a dict");
  let dict: PthValue = value;
  if (key !== undefined) {
    if (!value.has(key)) {
      throw new Error(`the checkpoint has no "${key}" entry; it holds ${describeKeys(value)}`);
    }
    dict = value.get(key)!;
  } else if (value.has("state_dict")) {
    dict = value.get("state_dict")!;
  } else if (value.has("teacher") || value.has("student")) {
    throw new Error(
      `the checkpoint is a full training checkpoint; choose its "teacher" or "student" state dict`,
    );
  }
  if (!(dict instanceof PyDict)) {
    throw new Error(`the checkpoint's ${key ?? "state dict"} entry is not a dict`);
  }
  const out = new Map<string, NamedTensor>();
  for (const [name, tensor] of dict) {
    if (typeof name !== "string" || !isTensor(tensor)) {
      throw new Error(
        `the checkpoint's ${key ?? "state dict"} entry "${String(name)}" is not a tensor`,
      );
    }
    out.set(name, tensor);
  }
  return out;
}

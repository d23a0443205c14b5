/**
 * A restricted reader and writer for the subset of Python's pickle format (protocol 2, plus the few
 * protocol 3–4 opcodes a newer writer may add) that `torch.save` produces for checkpoints.
 *
 * Nothing is ever executed: GLOBAL may name only the classes and functions a checkpoint needs
 * (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter`,
 * the typed `torch.*Storage` classes, `argparse.Namespace`, `torch.Size`), and each is mapped to a
 * plain value here. Any other name makes the load fail before anything else happens.
 *
 * @module
 */

import type { NamedTensor, NamedTensorDType } from "../runtime/named_tensor.ts";

/** A Python tuple. */
export class PyTuple {
  /** A tuple of the given items. */
  constructor(readonly items: PthValue[]) {}
}

/** A Python dict; `ordered` marks a `collections.OrderedDict` (as state dicts are). */
export class PyDict extends Map<PthValue, PthValue> {
  /** True for `collections.OrderedDict`. */
  ordered: boolean;
  /** Attributes set on the object by BUILD (a state dict's `_metadata`); not written back. */
  attrs?: PthValue;
  /** A dict of the given entries, ordered (an `OrderedDict`) or not. */
  constructor(entries?: Iterable<readonly [PthValue, PthValue]>, ordered = false) {
    super(entries);
    this.ordered = ordered;
  }
}

/** An `argparse.Namespace`: attribute name → value. */
export class PyNamespace {
  /** A namespace with the given attributes. */
  constructor(readonly attrs: Map<string, PthValue> = new Map()) {}
}

/**
 * A value of a checkpoint. Python int → number (bigint beyond ±2^53), float → number, list → array,
 * bytes → Uint8Array, tensor → NamedTensor. An integral number is written back as a Python int.
 */
export type PthValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | NamedTensor
  | PthValue[]
  | PyTuple
  | PyDict
  | PyNamespace;

/** Element types of torch storages (int32 and bfloat16 are recognised but not loaded). */
export type StorageDType = NamedTensorDType | "int32" | "bfloat16";

/**
 * A storage named by a persistent id `('storage', torch.XStorage, key, location, numel)`; the legacy
 * (pre-1.6) format adds a sixth item, `view_metadata`: None, or `(view_key, offset, numel)` for a
 * storage that is a slice of the stored storage `key`.
 */
export interface PickleStorage {
  /** Element type. */
  dtype: StorageDType;
  /** The key of the stored storage that holds the data. */
  key: string;
  /** Elements in the stored storage `key`. */
  numel: number;
  /** For a legacy storage view: where it starts in storage `key` and its length, in elements. */
  view?: { offset: number; numel: number };
}

const STORAGE_DTYPES: Record<string, StorageDType> = {
  FloatStorage: "float32",
  DoubleStorage: "float64",
  LongStorage: "int64",
  IntStorage: "int32",
  BoolStorage: "bool",
  HalfStorage: "float16",
  BFloat16Storage: "bfloat16",
};

const STORAGE_NAMES: Record<NamedTensorDType, string> = {
  float32: "FloatStorage",
  float64: "DoubleStorage",
  int64: "LongStorage",
  bool: "BoolStorage",
  float16: "HalfStorage",
};

/** A class or function named by GLOBAL, from the allow-list. */
class PyGlobal {
  constructor(readonly module: string, readonly name: string) {}
}

const ALLOWED = new Set([
  "collections.OrderedDict",
  "torch._utils._rebuild_tensor_v2",
  "torch._utils._rebuild_parameter",
  "argparse.Namespace",
  "torch.Size",
  ...Object.keys(STORAGE_DTYPES).map((n) => `torch.${n}`),
]);

const MARK = Symbol("mark");

/** Rebuilds a tensor from its storage, element offset, size and stride. */
export type TensorLoader = (
  storage: PickleStorage,
  offset: number,
  size: number[],
  stride: number[],
) => NamedTensor;

/** True when `value` is a NamedTensor (rather than another object of a checkpoint). */
export function isTensor(value: unknown): value is NamedTensor {
  return typeof value === "object" && value !== null && !(value instanceof PyTuple) &&
    !(value instanceof Map) && !(value instanceof PyNamespace) && !Array.isArray(value) &&
    !(value instanceof Uint8Array) && "dtype" in value && "shape" in value && "data" in value;
}

/**
 * Reads a pickle. `file` names the pickle in error messages; `loadTensor` rebuilds each tensor.
 * Throws "refusing to load <file>: it references <module>.<name>, which a checkpoint does not
 * need" for any other global, and one sentence naming the file for a truncated or malformed pickle.
 */
export function unpickle(bytes: Uint8Array, file: string, loadTensor: TensorLoader): PthValue {
  return unpickleAt(bytes, 0, file, loadTensor).value;
}

/**
 * Reads the pickle that starts at byte `start` of `bytes` (one of several written one after
 * another, as in the legacy checkpoint format), like `unpickle`; `end` is the byte after its STOP.
 */
export function unpickleAt(
  bytes: Uint8Array,
  start: number,
  file: string,
  loadTensor: TensorLoader,
): { value: PthValue; end: number } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  let pos = start;
  const stack: unknown[] = [];
  const memo = new Map<number, unknown>();
  const fail = (why: string): never => {
    throw new Error(`cannot load ${file}: ${why}`);
  };
  const need = (n: number) => {
    if (pos + n > bytes.length) fail("the pickle ends early (the file is truncated or corrupt)");
  };
  const u8 = () => (need(1), bytes[pos++]);
  const u16 = () => (need(2), pos += 2, view.getUint16(pos - 2, true));
  const u32 = () => (need(4), pos += 4, view.getUint32(pos - 4, true));
  const take = (n: number) => (need(n), pos += n, bytes.subarray(pos - n, pos));
  const pop = (): unknown => {
    if (stack.length === 0 || stack[stack.length - 1] === MARK) fail("the pickle is malformed");
    return stack.pop();
  };
  const top = (): unknown => {
    if (stack.length === 0 || stack[stack.length - 1] === MARK) fail("the pickle is malformed");
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const at = stack.lastIndexOf(MARK);
    if (at < 0) fail("the pickle is malformed (no MARK)");
    const items = stack.splice(at);
    items.shift();
    return items;
  };
  const text = (b: Uint8Array) => {
    try {
      return utf8.decode(b);
    } catch {
      return fail("the pickle holds a string that is not UTF-8");
    }
  };
  const global = (module: string, name: string): PyGlobal => {
    const full = `${module}.${name}`;
    if (!ALLOWED.has(full)) {
      throw new Error(
        `refusing to load ${file}: it references ${full}, which a checkpoint does not need`,
      );
    }
    return new PyGlobal(module, name);
  };
  const setItems = (dict: unknown, items: unknown[]) => {
    if (!(dict instanceof PyDict) || items.length % 2 !== 0) fail("the pickle is malformed");
    for (let i = 0; i < items.length; i += 2) {
      (dict as PyDict).set(items[i] as PthValue, items[i + 1] as PthValue);
    }
  };
  const ints = (v: unknown): number[] => {
    if (!(v instanceof PyTuple) || !v.items.every((x) => typeof x === "number")) {
      return fail("a tensor's size or stride is not a tuple of ints");
    }
    return v.items as number[];
  };
  const call = (fn: unknown, args: unknown): unknown => {
    if (!(fn instanceof PyGlobal) || !(args instanceof PyTuple)) {
      return fail("the pickle calls something that is not an allowed global");
    }
    const a = args.items;
    switch (`${fn.module}.${fn.name}`) {
      case "collections.OrderedDict":
        if (a.length !== 0) fail("OrderedDict is built with arguments");
        return new PyDict(undefined, true);
      case "torch._utils._rebuild_tensor_v2": {
        const storage = a[0] as unknown;
        if (a.length < 4 || typeof a[1] !== "number" || !isStorage(storage)) {
          return fail("_rebuild_tensor_v2 gets unexpected arguments");
        }
        return loadTensor(storage, a[1], ints(a[2]), ints(a[3]));
      }
      case "torch._utils._rebuild_parameter":
        if (!isTensor(a[0])) fail("_rebuild_parameter gets something that is not a tensor");
        return a[0];
      case "torch.Size":
        return new PyTuple(a.length === 0 ? [] : ints(a[0]));
      case "argparse.Namespace":
        return new PyNamespace();
    }
    return fail(`the pickle calls ${fn.module}.${fn.name}, which cannot be called here`);
  };

  for (;;) {
    const op = u8();
    switch (op) {
      case 0x80: // PROTO
        if (u8() > 5) fail("the pickle uses an unknown protocol");
        break;
      case 0x95: // FRAME
        take(8);
        break;
      case 0x2e: { // STOP
        const value = pop();
        if (stack.length !== 0) fail("the pickle is malformed (values left on the stack)");
        return { value: value as PthValue, end: pos };
      }
      case 0x28: // MARK
        stack.push(MARK);
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new PyDict());
        break;
      case 0x5d: // EMPTY_LIST
        stack.push([]);
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push(new PyTuple([]));
        break;
      case 0x4a: // BININT
        need(4);
        stack.push(view.getInt32(pos, true));
        pos += 4;
        break;
      case 0x4b: // BININT1
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        stack.push(u16());
        break;
      case 0x8a: // LONG1
        stack.push(long(take(u8())));
        break;
      case 0x8b: // LONG4
        stack.push(long(take(u32())));
        break;
      case 0x47: // BINFLOAT (big-endian)
        need(8);
        stack.push(view.getFloat64(pos, false));
        pos += 8;
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(text(take(u8())));
        break;
      case 0x58: // BINUNICODE
        stack.push(text(take(u32())));
        break;
      case 0x8d: { // BINUNICODE8
        need(8);
        const n = Number(view.getBigUint64(pos, true));
        pos += 8;
        stack.push(text(take(n)));
        break;
      }
      case 0x55: // SHORT_BINSTRING (latin-1)
        stack.push(String.fromCharCode(...take(u8())));
        break;
      case 0x54: // BINSTRING
        stack.push(new TextDecoder("latin1").decode(take(u32())));
        break;
      case 0x43: // SHORT_BINBYTES
        stack.push(take(u8()).slice());
        break;
      case 0x42: // BINBYTES
        stack.push(take(u32()).slice());
        break;
      case 0x71: // BINPUT
        memo.set(u8(), top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(u32(), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x68: // BINGET
      case 0x6a: { // LONG_BINGET
        const key = op === 0x68 ? u8() : u32();
        if (!memo.has(key)) fail("the pickle refers to a value it never stored");
        stack.push(memo.get(key));
        break;
      }
      case 0x73: { // SETITEM
        const value = pop();
        const key = pop();
        setItems(top(), [key, value]);
        break;
      }
      case 0x75: { // SETITEMS
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x61: { // APPEND
        const value = pop();
        const list = top();
        if (!Array.isArray(list)) fail("the pickle appends to something that is not a list");
        (list as unknown[]).push(value);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark();
        const list = top();
        if (!Array.isArray(list)) fail("the pickle appends to something that is not a list");
        (list as unknown[]).push(...items);
        break;
      }
      case 0x74: // TUPLE
        stack.push(new PyTuple(popMark() as PthValue[]));
        break;
      case 0x85: // TUPLE1
        stack.push(new PyTuple([pop() as PthValue]));
        break;
      case 0x86: { // TUPLE2
        const b = pop();
        stack.push(new PyTuple([pop(), b] as PthValue[]));
        break;
      }
      case 0x87: { // TUPLE3
        const c = pop();
        const b = pop();
        stack.push(new PyTuple([pop(), b, c] as PthValue[]));
        break;
      }
      case 0x63: { // GLOBAL "module\nname\n"
        const line = () => {
          const end = bytes.indexOf(0x0a, pos);
          if (end < 0) fail("the pickle ends early (the file is truncated or corrupt)");
          const s = new TextDecoder("latin1").decode(bytes.subarray(pos, end));
          pos = end + 1;
          return s;
        };
        const module = line();
        stack.push(global(module, line()));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== "string" || typeof name !== "string") fail("bad STACK_GLOBAL");
        stack.push(global(module as string, name as string));
        break;
      }
      case 0x52: // REDUCE
      case 0x81: { // NEWOBJ
        const args = pop();
        stack.push(call(pop(), args));
        break;
      }
      case 0x62: { // BUILD
        const state = pop() as PthValue;
        const obj = top();
        if (obj instanceof PyNamespace && state instanceof PyDict) {
          for (const [k, v] of state) obj.attrs.set(String(k), v);
        } else if (obj instanceof PyDict) {
          obj.attrs = state;
        } else if (!isTensor(obj)) {
          fail("the pickle sets the state of an unexpected object");
        }
        break;
      }
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x51: { // BINPERSID
        const pid = pop();
        const items = pid instanceof PyTuple ? pid.items as unknown[] : [];
        const cls = items[1];
        const viewItems = items[5] instanceof PyTuple ? items[5].items : [];
        if (
          (items.length !== 5 && items.length !== 6) || items[0] !== "storage" ||
          !(cls instanceof PyGlobal) || !(cls.name in STORAGE_DTYPES) ||
          typeof items[2] !== "string" || typeof items[4] !== "number" ||
          (items.length === 6 && items[5] !== null &&
            (viewItems.length !== 3 || typeof viewItems[0] !== "string" ||
              typeof viewItems[1] !== "number" || typeof viewItems[2] !== "number"))
        ) {
          fail("the pickle names a persistent object that is not a torch storage");
        }
        const storage: PickleStorage = {
          dtype: STORAGE_DTYPES[(cls as PyGlobal).name],
          key: items[2] as string,
          numel: items[4] as number,
        };
        if (viewItems.length === 3) {
          storage.view = { offset: viewItems[1] as number, numel: viewItems[2] as number };
        }
        stack.push(storage);
        break;
      }
      case 0x30: // POP
        if (stack.pop() === undefined) fail("the pickle is malformed");
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(top());
        break;
      default:
        fail(
          `the pickle uses opcode 0x${op.toString(16).padStart(2, "0")} at byte ${
            pos - 1
          }, which a checkpoint does not need`,
        );
    }
  }

  function long(b: Uint8Array): number | bigint {
    let v = 0n;
    for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
    if (b.length > 0 && b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)
      ? Number(v)
      : v;
  }
}

function isStorage(v: unknown): v is PickleStorage {
  return typeof v === "object" && v !== null && "numel" in v && "key" in v && "dtype" in v &&
    !("shape" in v);
}

/** Growable byte buffer for the writer. */
class Bytes {
  buf = new Uint8Array(1024);
  length = 0;
  private grow(n: number) {
    if (this.length + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.length + n));
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
  }
  byte(...b: number[]) {
    this.grow(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }
  raw(b: Uint8Array) {
    this.grow(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }
  u32(v: number) {
    this.byte(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff);
  }
}

/**
 * Writes `value` as a protocol-2 pickle that `torch.load` accepts. Each tensor becomes
 * `_rebuild_tensor_v2` over a storage whose key `storageKey(tensor)` gives (contiguous, offset 0,
 * on "cpu"). Integral numbers become Python ints, other numbers floats; Uint8Array (bytes) is not
 * supported by protocol 2 and throws.
 */
export function pickle(value: PthValue, storageKey: (tensor: NamedTensor) => string): Uint8Array {
  const out = new Bytes();
  const enc = new TextEncoder();
  const str = (s: string) => {
    const b = enc.encode(s);
    out.byte(0x58);
    out.u32(b.length);
    out.raw(b);
  };
  const global = (module: string, name: string) => {
    out.byte(0x63);
    out.raw(enc.encode(`${module}\n${name}\n`));
  };
  const int = (v: number | bigint) => {
    if (typeof v === "number" && v >= -(2 ** 31) && v < 2 ** 31) {
      out.byte(0x4a);
      out.u32(v | 0);
      return;
    }
    let big = BigInt(v);
    const b: number[] = [];
    for (;;) {
      b.push(Number(big & 0xffn));
      big >>= 8n;
      const sign = b[b.length - 1] & 0x80;
      if ((big === 0n && !sign) || (big === -1n && sign)) break;
    }
    if (b.length > 255) throw new Error("pickle: integer too large");
    out.byte(0x8a, b.length, ...b);
  };
  const tuple = (items: (() => void)[]) => {
    if (items.length === 0) return out.byte(0x29);
    if (items.length > 3) out.byte(0x28);
    for (const w of items) w();
    out.byte(items.length <= 3 ? 0x84 + items.length : 0x74);
  };
  const dictItems = (entries: Iterable<[PthValue, PthValue]>) => {
    out.byte(0x28);
    for (const [k, v] of entries) {
      write(k);
      write(v);
    }
    out.byte(0x75);
  };
  const write = (v: PthValue): void => {
    if (v === null) return out.byte(0x4e);
    if (v === true) return out.byte(0x88);
    if (v === false) return out.byte(0x89);
    if (typeof v === "bigint") return int(v);
    if (typeof v === "number") {
      if (Number.isSafeInteger(v) && !Object.is(v, -0)) return int(v);
      const b = new Uint8Array(8);
      new DataView(b.buffer).setFloat64(0, v, false);
      out.byte(0x47);
      return out.raw(b);
    }
    if (typeof v === "string") return str(v);
    if (v instanceof Uint8Array) throw new Error("pickle: bytes values are not supported");
    if (Array.isArray(v)) {
      out.byte(0x5d, 0x28);
      for (const x of v) write(x);
      return out.byte(0x65);
    }
    if (v instanceof PyTuple) return tuple(v.items.map((x) => () => write(x)));
    if (v instanceof PyDict) {
      if (v.ordered) {
        global("collections", "OrderedDict");
        out.byte(0x29, 0x52);
      } else out.byte(0x7d);
      return dictItems(v);
    }
    if (v instanceof PyNamespace) {
      global("argparse", "Namespace");
      out.byte(0x29, 0x81, 0x7d);
      dictItems(v.attrs);
      return out.byte(0x62);
    }
    if (isTensor(v)) {
      const numel = v.shape.reduce((a, b) => a * b, 1);
      if (v.data.length !== numel) {
        throw new Error(`pickle: a tensor of shape [${v.shape}] has ${v.data.length} values`);
      }
      const stride = v.shape.map((_, i) => v.shape.slice(i + 1).reduce((a, b) => a * b, 1));
      global("torch._utils", "_rebuild_tensor_v2");
      out.byte(0x28);
      tuple([
        () => str("storage"),
        () => global("torch", STORAGE_NAMES[v.dtype]),
        () => str(storageKey(v)),
        () => str("cpu"),
        () => int(numel),
      ]);
      out.byte(0x51);
      int(0);
      tuple(v.shape.map((s) => () => int(s)));
      tuple(stride.map((s) => () => int(s)));
      out.byte(0x89);
      global("collections", "OrderedDict");
      out.byte(0x29, 0x52, 0x74, 0x52);
      return;
    }
    throw new Error(`pickle: cannot write a value of type ${typeof v}`);
  };
  out.byte(0x80, 0x02);
  write(value);
  out.byte(0x2e);
  return out.buf.slice(0, out.length);
}

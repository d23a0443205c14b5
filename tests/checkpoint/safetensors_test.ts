import assert from "node:assert/strict";
import {
  decodeSafetensors,
  encodeSafetensors,
  loadSafetensors,
  saveSafetensors,
} from "../../lib/checkpoint/safetensors.ts";
import type { NamedTensor } from "../../lib/runtime/named_tensor.ts";

/** One tensor of every dtype, with odd byte lengths so later tensors start unaligned. */
function everyDtype(): Map<string, NamedTensor> {
  return new Map<string, NamedTensor>([
    ["mask", { dtype: "bool", shape: [3], data: new Uint8Array([1, 0, 1]) }],
    ["half", { dtype: "float16", shape: [1], data: new Uint16Array([0x3c00]) }],
    ["weight", {
      dtype: "float32",
      shape: [2, 3],
      data: new Float32Array([1, -2, 3.5, 0, 1e-7, 6]),
    }],
    ["double", { dtype: "float64", shape: [2], data: new Float64Array([Math.PI, -1e300]) }],
    ["steps", { dtype: "int64", shape: [2], data: new BigInt64Array([-1n, 2n ** 62n]) }],
    ["scalar", { dtype: "float32", shape: [], data: new Float32Array([7]) }],
    ["empty", { dtype: "float32", shape: [0, 4], data: new Float32Array(0) }],
  ]);
}

const METADATA = { format: "pt", epoch: "3", note: "ünïcode ✓" };

/** Builds a file from a raw JSON header and data buffer, padding the header like the writer. */
function rawFile(header: unknown, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  let json = JSON.stringify(header);
  while (new TextEncoder().encode(json).length % 8 !== 0) json += " ";
  const headerBytes = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + headerBytes.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  out.set(data, 8 + headerBytes.length);
  return out;
}

function assertSameTensors(actual: Map<string, NamedTensor>, expected: Map<string, NamedTensor>) {
  assert.deepEqual([...actual.keys()], [...expected.keys()]);
  for (const [name, t] of expected) {
    const got = actual.get(name)!;
    assert.equal(got.dtype, t.dtype, name);
    assert.deepEqual(got.shape, t.shape, name);
    assert.deepEqual(got.data, t.data, name);
    assert.equal(got.data.byteOffset % got.data.BYTES_PER_ELEMENT, 0, name);
  }
}

Deno.test("round trip of every dtype with metadata, arrays aligned", () => {
  const tensors = everyDtype();
  const bytes = encodeSafetensors(tensors, METADATA);
  const decoded = decodeSafetensors(bytes);
  assertSameTensors(decoded.tensors, tensors);
  assert.deepEqual(decoded.metadata, METADATA);
});

Deno.test("decoding works from an unaligned view into a larger buffer", () => {
  const bytes = encodeSafetensors(everyDtype());
  const shifted = new Uint8Array(bytes.length + 3);
  shifted.set(bytes, 3);
  const decoded = decodeSafetensors(shifted.subarray(3));
  assertSameTensors(decoded.tensors, everyDtype());
  assert.deepEqual(decoded.metadata, {});
});

Deno.test("a Record input keeps its key order", () => {
  const bytes = encodeSafetensors({
    b: { dtype: "float32", shape: [1], data: new Float32Array([1]) },
    a: { dtype: "float32", shape: [1], data: new Float32Array([2]) },
  });
  assert.deepEqual([...decodeSafetensors(bytes).tensors.keys()], ["b", "a"]);
});

Deno.test("the byte layout follows the format exactly", () => {
  const weight = new Float32Array([1.5, -2]);
  const steps = new BigInt64Array([5n]);
  const bytes = encodeSafetensors(
    new Map<string, NamedTensor>([
      ["w", { dtype: "float32", shape: [2, 1], data: weight }],
      ["steps", { dtype: "int64", shape: [], data: steps }],
    ]),
    { epoch: "1" },
  );
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(view.getBigUint64(0, true));
  assert.equal(n % 8, 0);
  assert.equal(bytes.length, 8 + n + 16);
  const headerText = new TextDecoder().decode(bytes.subarray(8, 8 + n));
  assert.match(headerText, /^\{.*\} *$/);
  assert.deepEqual(JSON.parse(headerText), {
    __metadata__: { epoch: "1" },
    w: { dtype: "F32", shape: [2, 1], data_offsets: [0, 8] },
    steps: { dtype: "I64", shape: [], data_offsets: [8, 16] },
  });
  assert.equal(view.getFloat32(8 + n, true), 1.5);
  assert.equal(view.getFloat32(8 + n + 4, true), -2);
  assert.equal(view.getBigInt64(8 + n + 8, true), 5n);
});

Deno.test("no __metadata__ entry is written without metadata", () => {
  const bytes = encodeSafetensors({ x: { dtype: "bool", shape: [1], data: new Uint8Array([1]) } });
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  assert.deepEqual(Object.keys(header), ["x"]);
});

Deno.test("encoding rejects inconsistent tensors", () => {
  assert.throws(
    () => encodeSafetensors({ w: { dtype: "float32", shape: [2, 2], data: new Float32Array(3) } }),
    /tensor "w" has shape \[2,2\] \(4 elements\) but 3 values/,
  );
  assert.throws(
    () => encodeSafetensors({ w: { dtype: "float64", shape: [1], data: new Float32Array(1) } }),
    /tensor "w" is float64 and needs a Float64Array, got a Float32Array/,
  );
  assert.throws(
    () =>
      encodeSafetensors({ __metadata__: { dtype: "bool", shape: [], data: new Uint8Array(1) } }),
    /"__metadata__" cannot be a safetensors tensor name/,
  );
});

Deno.test("saveSafetensors writes a file loadSafetensors reads back, leaving no temporary", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/checkpoint.safetensors`;
    await saveSafetensors(path, everyDtype(), METADATA);
    const loaded = await loadSafetensors(path);
    assertSameTensors(loaded.tensors, everyDtype());
    assert.deepEqual(loaded.metadata, METADATA);
    assert.deepEqual(
      (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name),
      ["checkpoint.safetensors"],
    );
    await saveSafetensors(path, {
      x: { dtype: "float32", shape: [1], data: new Float32Array([9]) },
    });
    assert.deepEqual([...(await loadSafetensors(path)).tensors.keys()], ["x"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a failed save leaves the previous file intact and no temporary behind", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/checkpoint.safetensors`;
    await saveSafetensors(path, everyDtype(), METADATA);
    const before = await Deno.readFile(path);

    await assert.rejects(
      saveSafetensors(path, { w: { dtype: "float32", shape: [2], data: new Float32Array(3) } }),
      /could not save .*checkpoint\.safetensors: tensor "w" has shape \[2\]/,
    );
    assert.deepEqual(await Deno.readFile(path), before);

    const blocked = `${dir}/blocked.safetensors`;
    await Deno.mkdir(`${blocked}/occupied`, { recursive: true });
    await assert.rejects(
      saveSafetensors(blocked, everyDtype()),
      /could not save .*blocked\.safetensors: /,
    );
    assert((await Deno.stat(blocked)).isDirectory);

    assert.deepEqual(
      (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort(),
      ["blocked.safetensors", "checkpoint.safetensors"],
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an interrupted save (temporary written, never renamed) leaves the target readable", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/checkpoint.safetensors`;
    await saveSafetensors(path, everyDtype(), METADATA);
    const partial = encodeSafetensors(everyDtype()).subarray(0, 20);
    await Deno.writeFile(`${path}.tmp-${Deno.pid}-999`, partial);
    assertSameTensors((await loadSafetensors(path)).tensors, everyDtype());
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the target always decodes while a large save is in flight", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/checkpoint.safetensors`;
    const small = { w: { dtype: "float32" as const, shape: [1], data: new Float32Array([1]) } };
    const large = {
      w: { dtype: "float32" as const, shape: [1 << 24], data: new Float32Array(1 << 24).fill(2) },
    };
    await saveSafetensors(path, small);
    let done = false;
    const saving = saveSafetensors(path, large).finally(() => done = true);
    const seen = new Set<number>();
    while (!done) {
      const w = (await loadSafetensors(path)).tensors.get("w")!;
      seen.add(w.data.length);
    }
    await saving;
    assert([...seen].every((n) => n === 1 || n === 1 << 24), "every read saw a whole file");
    assert.equal((await loadSafetensors(path)).tensors.get("w")!.data.length, 1 << 24);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loading a missing file names it", async () => {
  await assert.rejects(
    loadSafetensors("/nonexistent/dir/checkpoint.safetensors"),
    { message: "/nonexistent/dir/checkpoint.safetensors does not exist" },
  );
});

Deno.test("a truncated file is reported with the promised and actual sizes", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/checkpoint.safetensors`;
    const tensors = { w: { dtype: "float32" as const, shape: [250], data: new Float32Array(250) } };
    await saveSafetensors(path, tensors);
    const bytes = await Deno.readFile(path);
    await Deno.writeFile(path, bytes.subarray(0, bytes.length - 100));
    await assert.rejects(loadSafetensors(path), {
      message:
        `${path} is truncated: the header promises 1000 bytes of tensor data but the file has 900`,
    });
    await Deno.writeFile(path, bytes.subarray(0, 20));
    await assert.rejects(loadSafetensors(path), {
      message: new RegExp(
        `^${path} is truncated: the header length field promises \\d+ bytes of header but the file has 12 after it$`,
      ),
    });
    await Deno.writeFile(path, bytes.subarray(0, 5));
    await assert.rejects(loadSafetensors(path), {
      message: `${path} is truncated: it has 5 bytes, fewer than the 8-byte header length`,
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("malformed headers are reported in one sentence naming the source", () => {
  const bad = (bytes: Uint8Array, message: RegExp) =>
    assert.throws(() => decodeSafetensors(bytes, "model.safetensors"), message);
  const notJson = rawFile({});
  notJson.set(new TextEncoder().encode("{oops"), 8);
  bad(notJson, /^Error: model\.safetensors has a malformed header: .*JSON/);
  bad(rawFile([1, 2]), /model\.safetensors has a malformed header: it is not a JSON object/);
  bad(
    rawFile({ __metadata__: { epoch: 3 } }),
    /model\.safetensors has a malformed header: __metadata__ must map strings to strings/,
  );
  bad(
    rawFile({ w: { dtype: "F32", shape: [-1], data_offsets: [0, 0] } }),
    /model\.safetensors has a malformed header: tensor "w" needs a string dtype, a shape of non-negative integers and data_offsets/,
  );
  bad(
    rawFile({ w: "F32" }),
    /model\.safetensors has a malformed header: tensor "w" needs/,
  );
  const invalidUtf8 = rawFile({});
  invalidUtf8[8] = 0xff;
  bad(invalidUtf8, /model\.safetensors has a malformed header: it is not valid UTF-8/);
});

Deno.test("an unknown dtype is named with the supported ones", () => {
  assert.throws(
    () =>
      decodeSafetensors(
        rawFile({ w: { dtype: "BF16", shape: [2], data_offsets: [0, 4] } }, new Uint8Array(4)),
        "model.safetensors",
      ),
    {
      message:
        'model.safetensors has tensor "w" of unknown dtype "BF16" (supported: F32, F64, I64, BOOL, F16)',
    },
  );
});

Deno.test("data_offsets out of range, overlapping or leaving holes are rejected", () => {
  const bad = (header: unknown, dataLength: number, message: string | RegExp) =>
    assert.throws(
      () => decodeSafetensors(rawFile(header, new Uint8Array(dataLength)), "model.safetensors"),
      typeof message === "string" ? { message } : message,
    );
  bad(
    { w: { dtype: "F32", shape: [1], data_offsets: [8, 4] } },
    8,
    'model.safetensors has data_offsets out of range for tensor "w": [8,4]',
  );
  bad(
    { w: { dtype: "F32", shape: [1], data_offsets: [0, 4, 8] } },
    8,
    /data_offsets out of range for tensor "w": \[0,4,8\]/,
  );
  bad(
    { w: { dtype: "F32", shape: [1], data_offsets: [-4, 0] } },
    8,
    /data_offsets out of range for tensor "w"/,
  );
  bad(
    {
      a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
      b: { dtype: "F32", shape: [2], data_offsets: [4, 12] },
    },
    12,
    'model.safetensors has overlapping tensors "a" [0, 8] and "b" [4, 12]',
  );
  bad(
    { a: { dtype: "F32", shape: [1], data_offsets: [4, 8] } },
    8,
    "model.safetensors has data_offsets out of range: bytes 0 to 4 of the data belong to no tensor",
  );
  bad(
    { a: { dtype: "F32", shape: [1], data_offsets: [0, 4] } },
    8,
    "model.safetensors has data_offsets out of range: the last 4 bytes of the data belong to no tensor",
  );
});

Deno.test("a shape that does not match the byte length is rejected", () => {
  assert.throws(
    () =>
      decodeSafetensors(
        rawFile({ w: { dtype: "F32", shape: [2, 3], data_offsets: [0, 20] } }, new Uint8Array(20)),
        "model.safetensors",
      ),
    {
      message:
        'model.safetensors has tensor "w" of shape [2,3] and dtype F32 (24 bytes) but its data_offsets span 20 bytes',
    },
  );
});

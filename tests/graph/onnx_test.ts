import assert from "node:assert/strict";
import { fromBinary } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import {
  AttributeProto_AttributeType,
  type ModelProto,
  ModelProtoSchema,
  type TensorProto,
  TensorProto_DataLocation,
  type ValueInfoProto,
} from "onnx-buf";
import { mulDims, symbolicDim } from "../../lib/graph/dim.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { encodeOnnxModel, writeOnnxModel } from "../../lib/graph/onnx.ts";
import { reshape } from "../../lib/graph/shape.ts";
import { ProtoWriter, REFERENCE_THRESHOLD_BYTES } from "../../lib/graph/protobuf.ts";
import { runOnnx } from "./run_onnx.ts";

function decode(bytes: Uint8Array): ModelProto {
  return fromBinary(ModelProtoSchema, bytes);
}

function initializer(model: ModelProto, name: string): TensorProto {
  const tensor = model.graph!.initializer.find((t) => t.name === name);
  assert(tensor, `no initializer ${name}`);
  return tensor;
}

function describeValue(value: ValueInfoProto): { name: string; elemType: number; dims: number[] } {
  assert.deepEqual(value.type?.value.case, "tensorType");
  const tensorType = value.type!.value.value!;
  assert("elemType" in tensorType);
  const dims = tensorType.shape!.dim.map((d) => {
    assert.deepEqual(d.value.case, "dimValue");
    return Number(d.value.value);
  });
  return { name: value.name, elemType: tensorType.elemType, dims };
}

function iota(size: number, scale = 1, shift = 0): Float32Array {
  return Float32Array.from({ length: size }, (_, i) => (i - shift) * scale);
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance = 1e-5) {
  assert.equal(actual.length, expected.length);
  for (let i = 0; i < expected.length; i++) {
    const error = Math.abs(actual[i] - expected[i]);
    assert.ok(error <= tolerance, `element ${i}: ${actual[i]} != ${expected[i]}`);
  }
}

function assertThrowsWith(
  fn: () => unknown,
  errorClass: new (...args: never[]) => Error,
  messagePart: string,
): void {
  assert.throws(fn, (error) => {
    assert.ok(error instanceof errorClass, `expected ${errorClass.name}, got ${error}`);
    assert.ok(error.message.includes(messagePart), `unexpected message: ${error.message}`);
    return true;
  });
}

/** Row-major `a [m,k] · b [k,n]`. */
function matmul(a: Float32Array, b: Float32Array, m: number, k: number, n: number): number[] {
  const out = new Array<number>(m * n).fill(0);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      for (let p = 0; p < k; p++) out[i * n + j] += a[i * k + p] * b[p * n + j];
    }
  }
  return out;
}

Deno.test("protobuf: varints, negative int64, floats, doubles and packed fields decode", () => {
  const writer = new ProtoWriter();
  writer.varint(1, 300);
  writer.varint(2, -1);
  writer.varint(3, 2n ** 62n);
  writer.varint(4, 2 ** 53 - 1);
  writer.float(5, 1.5);
  writer.double(6, Math.PI);
  writer.string(7, "héllo");
  writer.packedInt64s(8, [1, -2, 2n ** 40n]);
  writer.packedFloats(9, [0.25, -4]);
  const bytes = writer.finish();
  assert.deepEqual(bytes.length, writer.length);

  const reader = new BinaryReader(bytes);
  const next = (field: number, wireType: WireType) =>
    assert.deepEqual(reader.tag(), [field, wireType]);
  next(1, WireType.Varint);
  assert.deepEqual(reader.int64(), 300n);
  next(2, WireType.Varint);
  const negativeStart = reader.pos;
  assert.deepEqual(reader.int64(), -1n);
  assert.deepEqual(reader.pos - negativeStart, 10);
  next(3, WireType.Varint);
  assert.deepEqual(reader.int64(), 2n ** 62n);
  next(4, WireType.Varint);
  assert.deepEqual(reader.int64(), BigInt(2 ** 53 - 1));
  next(5, WireType.Bit32);
  assert.deepEqual(reader.float(), 1.5);
  next(6, WireType.Bit64);
  assert.deepEqual(reader.double(), Math.PI);
  next(7, WireType.LengthDelimited);
  assert.deepEqual(reader.string(), "héllo");
  next(8, WireType.LengthDelimited);
  const packedInts = new BinaryReader(reader.bytes());
  assert.deepEqual([packedInts.int64(), packedInts.int64(), packedInts.int64()], [
    1n,
    -2n,
    2n ** 40n,
  ]);
  next(9, WireType.LengthDelimited);
  const packedFloats = new BinaryReader(reader.bytes());
  assert.deepEqual([packedFloats.float(), packedFloats.float()], [0.25, -4]);
  assert.deepEqual(reader.pos, bytes.length);
});

Deno.test("protobuf: large payloads are kept by reference until finish", () => {
  const payload = new Uint8Array(REFERENCE_THRESHOLD_BYTES).fill(7);
  const inner = new ProtoWriter();
  inner.bytes(1, payload);
  const outer = new ProtoWriter();
  outer.message(2, inner);
  assert(outer.chunks().includes(payload));
  const reader = new BinaryReader(outer.finish());
  assert.deepEqual(reader.tag(), [2, WireType.LengthDelimited]);
  const innerReader = new BinaryReader(reader.bytes());
  assert.deepEqual(innerReader.tag(), [1, WireType.LengthDelimited]);
  assert.deepEqual(innerReader.bytes(), payload);
});

Deno.test("protobuf: rejects unsafe integers and out-of-range values", () => {
  const writer = new ProtoWriter();
  assertThrowsWith(() => writer.varint(1, 2 ** 53), RangeError, "safe integer");
  assertThrowsWith(() => writer.varint(1, 2n ** 64n), RangeError, "64 bits");
  assertThrowsWith(() => writer.varint(0, 1), RangeError, "field number");
});

Deno.test("onnx: model header, opsets, inputs, outputs and initializers decode", () => {
  const g = new Graph("header");
  const x = g.input("x", "float32", [2, 3]);
  const flag = g.input("flag", "bool", []);
  const w = g.param("w", [2, 3], { kind: "zeros" });
  const b = g.param("b", [3], { kind: "zeros" });
  const floats = g.constant([1.5, -2, 3.25], "float32", [3]);
  const ints = g.constant([-1, 0, 2 ** 40], "int64", [3]);
  const bools = g.constant([1, 0, 1, 1], "bool", [2, 2]);
  const sum = g.emit1("Add", [x, w], "float32", [2, 3]);
  g.output("y", g.emit1("Add", [sum, b], "float32", [2, 3]));
  g.output("flag_out", flag);
  g.output("floats_out", g.emit1("Identity", [floats], "float32", [3]));
  g.output("ints_out", g.emit1("Identity", [ints], "int64", [3]));
  g.output("bools_out", g.emit1("Identity", [bools], "bool", [2, 2]));

  const bValues = Float32Array.from([7, 8, 9]);
  const { model: bytes, externalData } = encodeOnnxModel(g, {
    initializers: new Map([["b", bValues], ["not.a.param", new Float32Array(1)]]),
    producerName: "tests",
    docString: "a doc",
  });
  assert.deepEqual(externalData, undefined);
  const model = decode(bytes);
  assert.deepEqual(model.irVersion, 10n);
  assert.deepEqual(model.producerName, "tests");
  assert.deepEqual(model.docString, "a doc");
  assert.deepEqual(model.opsetImport.map((o) => [o.domain, o.version]), [["", 21n]]);
  const graph = model.graph!;
  assert.deepEqual(graph.name, "header");

  assert.deepEqual(graph.input.map(describeValue), [
    { name: "w", elemType: 1, dims: [2, 3] },
    { name: "x", elemType: 1, dims: [2, 3] },
    { name: "flag", elemType: 9, dims: [] },
  ]);
  assert.deepEqual(graph.output.map(describeValue), [
    { name: "y", elemType: 1, dims: [2, 3] },
    { name: "flag_out", elemType: 9, dims: [] },
    { name: "floats_out", elemType: 1, dims: [3] },
    { name: "ints_out", elemType: 7, dims: [3] },
    { name: "bools_out", elemType: 9, dims: [2, 2] },
  ]);

  assert.deepEqual(graph.initializer.map((t) => t.name), [floats.name, ints.name, bools.name, "b"]);
  const floatTensor = initializer(model, floats.name);
  assert.deepEqual([floatTensor.dataType, floatTensor.dims], [1, [3n]]);
  assert.deepEqual(
    new Float32Array(floatTensor.rawData.slice().buffer),
    Float32Array.from([1.5, -2, 3.25]),
  );
  const intTensor = initializer(model, ints.name);
  assert.deepEqual([intTensor.dataType, intTensor.rawData.length], [7, 24]);
  assert.deepEqual(Array.from(new BigInt64Array(intTensor.rawData.slice().buffer)), [
    -1n,
    0n,
    2n ** 40n,
  ]);
  const boolTensor = initializer(model, bools.name);
  assert.deepEqual([boolTensor.dataType, boolTensor.dims], [9, [2n, 2n]]);
  assert.deepEqual(Array.from(boolTensor.rawData), [1, 0, 1, 1]);
  const baked = initializer(model, "b");
  assert.deepEqual(new Float32Array(baked.rawData.slice().buffer), bValues);
  assert.deepEqual(baked.dataLocation, TensorProto_DataLocation.DEFAULT);
});

Deno.test("onnx: nodes carry names, domains, inputs, outputs and every attribute type", () => {
  const g = new Graph("attributes");
  const a = g.input("a", "float32", [2, 3]);
  const fillValue = {
    name: "fill",
    dtype: "float32" as const,
    shape: [1],
    data: new Float32Array([0.5]),
  };
  const fill = g.emit1("ConstantOfShape", [g.int64s([2, 2])], "float32", [2, 2], {
    value: { t: fillValue },
  });
  const scale = g.emit1("Constant", [], "float32", [3], { value_floats: { floats: [1, -2.5, 3] } });
  const shape = g.emit1("Constant", [], "int64", [2], { value_ints: { ints: [3, -1] } });
  const gelu = g.emit1("Gelu", [a], "float32", [2, 3], { approximate: { s: "tanh" } });
  const gemm = g.emit1("Gemm", [a, a, null], "float32", [2, 2], {
    alpha: { f: 0.25 },
    transB: { i: 1 },
  });
  const fused = g.emit1("FusedMatMul", [a, a], "float32", [2, 2], { transB: { i: 1 } });
  for (const [i, t] of [fill, scale, shape, gelu, gemm, fused].entries()) g.output(`out${i}`, t);

  const model = decode(encodeOnnxModel(g).model);
  assert.deepEqual(model.opsetImport.map((o) => [o.domain, o.version]), [
    ["", 21n],
    ["com.microsoft", 1n],
  ]);
  const nodes = model.graph!.node;
  // The Identity nodes that name the outputs are folded away: producers write the outputs.
  const named = new Map(
    g.nodes.filter((n) => n.opType === "Identity").map((n) => [n.inputs[0], n.outputs[0]]),
  );
  assert.deepEqual(
    nodes.map((n) => [n.name, n.opType, n.domain, n.input, n.output]),
    g.nodes.filter((n) => n.opType !== "Identity").map((n) => [
      n.name,
      n.opType,
      n.domain,
      n.inputs,
      n.outputs.map((o) => named.get(o) ?? o),
    ]),
  );
  assert.equal(nodes.filter((n) => n.opType === "Identity").length, 0);
  assert.deepEqual(nodes.find((n) => n.opType === "Gemm")!.input, ["a", "a", ""]);

  const attribute = (opType: string, name: string) => {
    const found = nodes.filter((n) => n.opType === opType).flatMap((n) => n.attribute)
      .find((x) => x.name === name);
    assert(found, `${opType}.${name}`);
    return found;
  };
  const t = attribute("ConstantOfShape", "value");
  assert.deepEqual(t.type, AttributeProto_AttributeType.TENSOR);
  assert.deepEqual([t.t!.name, t.t!.dataType, t.t!.dims], ["fill", 1, [1n]]);
  assert.deepEqual(new Float32Array(t.t!.rawData.slice().buffer), new Float32Array([0.5]));
  const floats = attribute("Constant", "value_floats");
  assert.deepEqual([floats.type, floats.floats], [AttributeProto_AttributeType.FLOATS, [
    1,
    -2.5,
    3,
  ]]);
  const ints = attribute("Constant", "value_ints");
  assert.deepEqual([ints.type, ints.ints], [AttributeProto_AttributeType.INTS, [3n, -1n]]);
  const s = attribute("Gelu", "approximate");
  assert.deepEqual([s.type, new TextDecoder().decode(s.s)], [
    AttributeProto_AttributeType.STRING,
    "tanh",
  ]);
  const f = attribute("Gemm", "alpha");
  assert.deepEqual([f.type, f.f], [AttributeProto_AttributeType.FLOAT, 0.25]);
  const i = attribute("Gemm", "transB");
  assert.deepEqual([i.type, i.i], [AttributeProto_AttributeType.INT, 1n]);
  assert.deepEqual(nodes.find((n) => n.opType === "FusedMatMul")!.domain, "com.microsoft");
});

Deno.test("onnx: a wrong initializer length names the parameter and both sizes", () => {
  const g = new Graph("bad");
  const w = g.param("encoder.w", [2, 3], { kind: "zeros" });
  g.output("y", g.emit1("Neg", [w], "float32", [2, 3]));
  assertThrowsWith(
    () => encodeOnnxModel(g, { initializers: { "encoder.w": new Float32Array(5) } }),
    Error,
    "encoder.w has shape [2,3] (6 values) but was given 5 values",
  );
});

Deno.test("onnx: external data locations must stay beside the model", () => {
  const g = new Graph("outside");
  g.output("y", g.emit1("Neg", [g.input("x", "float32", [1])], "float32", [1]));
  for (const location of ["../w.data", "/tmp/w.data", ""]) {
    assertThrowsWith(
      () => encodeOnnxModel(g, { externalData: { location } }),
      Error,
      "relative path",
    );
  }
});

Deno.test("onnx runtime: Add of an input and a parameter, fed and baked", async () => {
  const g = new Graph("add");
  const x = g.input("x", "float32", [2, 3]);
  const w = g.param("w", [2, 3], { kind: "zeros" });
  g.output("y", g.emit1("Add", [x, w], "float32", [2, 3]));
  const xData = iota(6);
  const wData = iota(6, 0.5, 3);
  const expected = xData.map((v, i) => v + wData[i]);

  const fed = await runOnnx(encodeOnnxModel(g).model, {
    x: { data: xData, dims: [2, 3] },
    w: { data: wData, dims: [2, 3] },
  });
  assert.deepEqual(fed.y.dims, [2, 3]);
  assertClose(fed.y.data as Float32Array, expected);

  const baked = await runOnnx(encodeOnnxModel(g, { initializers: { w: wData } }).model, {
    x: { data: xData, dims: [2, 3] },
  });
  assertClose(baked.y.data as Float32Array, expected);
});

Deno.test("onnx runtime: Gemm, FusedMatMul, Transpose, Gelu and attribute-driven constants", async () => {
  const g = new Graph("attributes_run");
  const a = g.input("a", "float32", [2, 3]);
  const b = g.param("b", [4, 3], { kind: "zeros" });
  const c = g.param("c", [4], { kind: "zeros" });
  g.output(
    "gemm",
    g.emit1("Gemm", [a, b, c], "float32", [2, 4], {
      alpha: { f: 2 },
      beta: { f: 0.5 },
      transB: { i: 1 },
    }),
  );
  g.output(
    "fused",
    g.emit1("FusedMatMul", [a, b], "float32", [2, 4], { alpha: { f: -1 }, transB: { i: 1 } }),
  );
  const scale = g.emit1("Constant", [], "float32", [3], { value_floats: { floats: [1, 2, 3] } });
  const fill = g.emit1("ConstantOfShape", [g.int64s([2, 3])], "float32", [2, 3], {
    value: { t: { name: "fill", dtype: "float32", shape: [1], data: new Float32Array([0.5]) } },
  });
  const scaled = g.emit1("Mul", [a, scale], "float32", [2, 3]);
  const shifted = g.emit1("Add", [scaled, fill], "float32", [2, 3]);
  const mask = g.constant([1, 0, 1, 0, 1, 0], "bool", [2, 3]);
  const masked = g.emit1("Where", [mask, shifted, g.scalar(-1)], "float32", [2, 3]);
  g.output("reshaped", g.emit1("Reshape", [masked, g.int64s([3, -1])], "float32", [3, 2]));
  const transposed = g.emit1("Transpose", [a], "float32", [3, 2], { perm: { ints: [1, 0] } });
  g.output(
    "gelu",
    g.emit1("Gelu", [transposed], "float32", [3, 2], { approximate: { s: "tanh" } }),
  );

  const aData = iota(6, 1, 2);
  const bData = iota(12, 0.25, 5);
  const cData = Float32Array.from([1, 2, 3, 4]);
  const outputs = await runOnnx(encodeOnnxModel(g, { initializers: { c: cData } }).model, {
    a: { data: aData, dims: [2, 3] },
    b: { data: bData, dims: [4, 3] },
  });

  const bTransposed = Float32Array.from(
    { length: 12 },
    (_, i) => bData[(i % 4) * 3 + Math.floor(i / 4)],
  );
  const product = matmul(aData, bTransposed, 2, 3, 4);
  assert.deepEqual(outputs.gemm.dims, [2, 4]);
  assertClose(outputs.gemm.data as Float32Array, product.map((v, i) => 2 * v + 0.5 * cData[i % 4]));
  assertClose(outputs.fused.data as Float32Array, product.map((v) => -v));
  const expectedMasked = Array.from(aData, (v, i) => (i % 2 === 0 ? v * (1 + (i % 3)) + 0.5 : -1));
  assert.deepEqual(outputs.reshaped.dims, [3, 2]);
  assertClose(outputs.reshaped.data as Float32Array, expectedMasked);
  const geluTanh = (v: number) =>
    0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
  assert.deepEqual(outputs.gelu.dims, [3, 2]);
  assertClose(outputs.gelu.data as Float32Array, [0, 3, 1, 4, 2, 5].map((i) => geluTanh(aData[i])));
});

Deno.test("onnx runtime: external data written beside the model is loaded from the path", async () => {
  const g = new Graph("external");
  const x = g.input("x", "float32", [2, 64]);
  const w = g.param("proj.weight", [64, 32], { kind: "zeros" });
  const bias = g.param("proj.bias", [32], { kind: "zeros" });
  const offsetValues = iota(2 * 32, 0.01);
  const offset = g.constant(offsetValues, "float32", [2, 32]);
  const projected = g.emit1("MatMul", [x, w], "float32", [2, 32]);
  const biased = g.emit1("Add", [projected, bias], "float32", [2, 32]);
  g.output("y", g.emit1("Add", [biased, offset], "float32", [2, 32]));

  const wData = iota(64 * 32, 1 / 512, 1000);
  const biasData = iota(32, 0.5);
  const options = {
    initializers: { "proj.weight": wData, "proj.bias": biasData },
    externalData: { location: "external.weights", thresholdBytes: 256 },
  };
  const dir = await Deno.makeTempDir();
  try {
    const modelPath = `${dir}/external.onnx`;
    await writeOnnxModel(g, modelPath, options);
    assert.deepEqual(
      [...Deno.readDirSync(dir)].map((e) => e.name).sort(),
      ["external.onnx", "external.weights"],
    );

    const model = decode(await Deno.readFile(modelPath));
    assert.deepEqual(model.graph!.input.map((i) => i.name), ["x"]);
    const blob = await Deno.readFile(`${dir}/external.weights`);
    const entries = (tensor: TensorProto) =>
      Object.fromEntries(tensor.externalData.map((e) => [e.key, e.value]));
    const weight = initializer(model, "proj.weight");
    assert.deepEqual(weight.dataLocation, TensorProto_DataLocation.EXTERNAL);
    assert.deepEqual(weight.rawData.length, 0);
    const offsetTensor = initializer(model, offset.name);
    assert.deepEqual(entries(offsetTensor), {
      location: "external.weights",
      offset: "0",
      length: "256",
    });
    assert.deepEqual(entries(weight), {
      location: "external.weights",
      offset: "4096",
      length: "8192",
    });
    assert.deepEqual(new Float32Array(blob.slice(4096, 4096 + 8192).buffer), wData);
    assert.deepEqual(blob.length, 4096 + 8192);
    const smallBias = initializer(model, "proj.bias");
    assert.deepEqual(smallBias.dataLocation, TensorProto_DataLocation.DEFAULT);
    assert.deepEqual(smallBias.rawData.length, 128);

    const encoded = encodeOnnxModel(g, options);
    assert.deepEqual(encoded.model, await Deno.readFile(modelPath));
    assert.deepEqual(encoded.externalData, blob);

    const xData = iota(2 * 64, 0.1, 64);
    const outputs = await runOnnx(modelPath, { x: { data: xData, dims: [2, 64] } });
    const expected = matmul(xData, wData, 2, 64, 32).map((v, i) =>
      v + biasData[i % 32] + offsetValues[i]
    );
    assertClose(outputs.y.data as Float32Array, expected, 1e-3);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("onnx: symbolic axes are written as dim_param, under their text or a given name", () => {
  const g = new Graph("dyn");
  const batch = symbolicDim("batch");
  const x = g.input("x", "float32", [batch, 3]);
  g.output("y", g.emit1("Relu", [x], "float32", [batch, 3]));
  g.output("z", reshape(x, [mulDims(batch, 3)]));
  const model = decode(encodeOnnxModel(g, { axisNames: { y: { 0: "rows" } } }).model);
  const dims = (value: ValueInfoProto) => {
    const type = value.type!.value.value!;
    assert("shape" in type);
    return type.shape!.dim.map((d) => [d.value.case, d.value.value]);
  };
  assert.deepEqual(dims(model.graph!.input[0]), [["dimParam", "batch"], ["dimValue", 3n]]);
  assert.deepEqual(dims(model.graph!.output[0]), [["dimParam", "rows"], ["dimValue", 3n]]);
  assert.deepEqual(dims(model.graph!.output[1]), [["dimParam", "3*batch"]]);
  assert.throws(
    () => encodeOnnxModel(g, { axisNames: { w: { 0: "batch" } } }),
    /axisNames: w is not a graph input or output/,
  );
  assert.throws(
    () => encodeOnnxModel(g, { axisNames: { x: { 2: "width" } } }),
    /axisNames: x \[batch,3\] has no axis 2 to call 'width'/,
  );
  assert.throws(
    () => encodeOnnxModel(g, { axisNames: { x: { 1: "channels" } } }),
    /axisNames: axis 1 of x \[batch,3\] has the fixed size 3; record it with a symbolic size to name it 'channels'/,
  );
});

/**
 * Serializes a recorded {@link Graph} as an ONNX model (IR version 10, opset 21), optionally
 * baking parameter values in as initializers and moving large tensors to an external data file.
 *
 * Graph input order: the parameters that are not baked, in declaration order, then the data
 * inputs ({@link Graph.inputs}), in declaration order. Constants and baked parameters are
 * initializers, not graph inputs.
 *
 * @module
 */

import type {
  Attribute,
  ConstantSpec,
  Graph,
  GraphValueSpec,
  NodeSpec,
  TensorData,
} from "./graph.ts";
import { concatenateChunks, ProtoWriter } from "./protobuf.ts";
import { type Dims, isSymbolic } from "./dim.ts";
import { type DType, formatShape, onnxElemType, shapeSize } from "./tensor.ts";

/** Options of {@link encodeOnnxModel} and {@link writeOnnxModel}. */
export interface OnnxWriteOptions {
  /**
   * Parameter values to bake into the model as initializers, by full parameter name. Baked
   * parameters are not graph inputs; the others stay graph inputs. Each array must hold exactly
   * as many values as the parameter's shape. Names that are not parameters of the graph are
   * ignored, so a whole state store may be passed.
   */
  initializers?: ReadonlyMap<string, Float32Array> | Record<string, Float32Array>;
  /**
   * Write tensors (constants and baked parameters) of at least `thresholdBytes` bytes (default
   * 1024) to a separate blob, referenced from the model by `location`: a file name relative to
   * the model file. Each tensor starts at an offset aligned to 4096 bytes. Node attribute
   * tensors always stay inside the model.
   */
  externalData?: { location: string; thresholdBytes?: number };
  /**
   * Names (`dim_param`) of symbolic axes of graph inputs and outputs, by value name and axis:
   * `{ patch_tokens: { 1: "patches" } }`. A symbolic axis without a name here is written under
   * its size's text (`batch`, `height/16*width/16`). Axes of a fixed size cannot be named: the
   * graph was recorded for that size only.
   */
  axisNames?: Readonly<Record<string, Readonly<Record<number, string>>>>;
  /** `producer_name` of the model; default `ibot-deno`. */
  producerName?: string;
  /** `doc_string` of the model. */
  docString?: string;
}

/** An encoded model, plus the external data blob when tensors were moved out of it. */
export interface EncodedOnnxModel {
  /** The serialized `ModelProto`. */
  model: Uint8Array;
  /** The bytes to store at the external data location, beside the model file. */
  externalData?: Uint8Array;
}

/** ONNX IR version written into every model. */
export const ONNX_IR_VERSION = 10;
/** Version of the default `ai.onnx` operator set the graph's ops are written against. */
export const ONNX_OPSET_VERSION = 21;
/** Version of the `com.microsoft` operator set, imported only when a node uses it. */
export const MICROSOFT_OPSET_VERSION = 1;

const DEFAULT_EXTERNAL_THRESHOLD_BYTES = 1024;
const EXTERNAL_DATA_ALIGNMENT = 4096;
/** Protobuf refuses messages of 2 GiB or more. */
const PROTOBUF_MAX_BYTES = 2 ** 31 - 1;

/** `AttributeProto.AttributeType` codes. */
const ATTRIBUTE_TYPE = { FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, FLOATS: 6, INTS: 7 } as const;

const DATA_LOCATION_EXTERNAL = 1;

/** Field numbers of onnx.proto, by message. */
const MODEL = { irVersion: 1, producerName: 2, docString: 6, graph: 7, opsetImport: 8 } as const;
const OPERATOR_SET_ID = { domain: 1, version: 2 } as const;
const GRAPH = { node: 1, name: 2, initializer: 5, input: 11, output: 12 } as const;
const NODE = { input: 1, output: 2, name: 3, opType: 4, attribute: 5, domain: 7 } as const;
const ATTRIBUTE = {
  name: 1,
  f: 2,
  i: 3,
  s: 4,
  t: 5,
  floats: 7,
  ints: 8,
  type: 20,
} as const;
const TENSOR = {
  dims: 1,
  dataType: 2,
  name: 8,
  rawData: 9,
  externalData: 13,
  dataLocation: 14,
} as const;
const STRING_STRING_ENTRY = { key: 1, value: 2 } as const;
const VALUE_INFO = { name: 1, type: 2 } as const;
const TYPE = { tensorType: 1 } as const;
const TENSOR_TYPE = { elemType: 1, shape: 2 } as const;
const TENSOR_SHAPE = { dim: 1 } as const;
const DIMENSION = { dimValue: 1, dimParam: 2 } as const;

/**
 * Encodes `graph` as an ONNX `ModelProto`.
 *
 * When the model would reach protobuf's 2 GiB limit and `options.externalData` is not given,
 * tensors of 1024 bytes or more are moved to external data automatically, with location
 * `<graph.name>.data` (characters other than letters, digits, `.`, `_` and `-` replaced by `_`);
 * store the returned `externalData` under that name beside the model.
 */
export function encodeOnnxModel(graph: Graph, options: OnnxWriteOptions = {}): EncodedOnnxModel {
  const { model, externalData } = encodeModelChunks(graph, options);
  return {
    model: model.finish(),
    externalData: externalData && concatenateChunks(externalData.chunks()),
  };
}

/**
 * Writes `graph` as an ONNX model file at `path` (see {@link encodeOnnxModel}), and the external
 * data file beside it when tensors were moved out. Each file is written to `<file>.tmp-<pid>`
 * and renamed into place; the external data is written first, so a model file never refers to
 * missing data.
 */
export async function writeOnnxModel(
  graph: Graph,
  path: string,
  options: OnnxWriteOptions = {},
): Promise<void> {
  const { model, externalData } = encodeModelChunks(graph, options);
  if (externalData) {
    await writeFileAtomically(siblingPath(path, externalData.location), externalData.chunks());
  }
  await writeFileAtomically(path, model.chunks());
}

interface ModelChunks {
  model: ProtoWriter;
  externalData?: ExternalDataBlob;
}

/** Encodes the model, retrying with external data when it is too large for protobuf. */
function encodeModelChunks(graph: Graph, options: OnnxWriteOptions): ModelChunks {
  const encoded = encodeModelWith(graph, options);
  if (options.externalData || encoded.model.length <= PROTOBUF_MAX_BYTES) return encoded;
  const location = `${graph.name.replace(/[^\w.-]/g, "_")}.data`;
  return encodeModelWith(graph, { ...options, externalData: { location } });
}

function encodeModelWith(graph: Graph, options: OnnxWriteOptions): ModelChunks {
  const location = options.externalData?.location;
  const blob = location !== undefined ? new ExternalDataBlob(location) : undefined;
  const threshold = options.externalData?.thresholdBytes ?? DEFAULT_EXTERNAL_THRESHOLD_BYTES;

  const nodes = foldOutputIdentities(graph, liveNodes(graph));
  const used = new Set(nodes.flatMap((n) => n.inputs));
  const graphProto = new ProtoWriter();
  for (const node of nodes) graphProto.message(GRAPH.node, encodeNode(node));
  graphProto.string(GRAPH.name, graph.name);
  const initializers = [
    ...graph.constants.filter((c) => used.has(c.name)),
    ...bakedParameters(graph, options.initializers),
  ];
  for (const tensor of initializers) {
    const data = tensorBytes(tensor.data);
    const proto = blob && data.length >= threshold
      ? encodeExternalTensor(tensor, blob.location, blob.append(data), data.length)
      : encodeTensor(tensor);
    graphProto.message(GRAPH.initializer, proto);
  }
  const bakedNames = new Set(initializers.map((t) => t.name));
  const unbakedParams = graph.params.filter((p) => !bakedNames.has(p.name));
  const axisNames = options.axisNames ?? {};
  checkAxisNames(axisNames, [...graph.inputs, ...graph.outputs]);
  for (const param of unbakedParams) {
    graphProto.message(GRAPH.input, encodeValueInfo({ ...param, dims: param.shape }));
  }
  for (const value of graph.inputs) {
    graphProto.message(GRAPH.input, encodeValueInfo(value, axisNames[value.name]));
  }
  for (const value of graph.outputs) {
    graphProto.message(GRAPH.output, encodeValueInfo(value, axisNames[value.name]));
  }

  const model = new ProtoWriter();
  model.varint(MODEL.irVersion, ONNX_IR_VERSION);
  model.string(MODEL.producerName, options.producerName ?? "ibot-deno");
  if (options.docString !== undefined) model.string(MODEL.docString, options.docString);
  model.message(MODEL.graph, graphProto);
  model.message(MODEL.opsetImport, encodeOpsetImport("", ONNX_OPSET_VERSION));
  if (nodes.some((n) => n.domain === "com.microsoft")) {
    model.message(MODEL.opsetImport, encodeOpsetImport("com.microsoft", MICROSOFT_OPSET_VERSION));
  }
  return { model, externalData: blob };
}

/**
 * The nodes that contribute to some graph output, in emission order. Backward rules compute the
 * gradients of every operand; the ones nobody asked for are dropped here.
 */
function liveNodes(graph: Graph): NodeSpec[] {
  const needed = new Set(graph.outputs.map((o) => o.name));
  const live: NodeSpec[] = [];
  for (let i = graph.nodes.length - 1; i >= 0; i--) {
    const node = graph.nodes[i];
    if (!node.outputs.some((o) => needed.has(o))) continue;
    live.push(node);
    for (const input of node.inputs) if (input) needed.add(input);
  }
  return live.reverse();
}

/**
 * Lets a node write a graph output directly instead of through the Identity node that
 * {@link Graph.output} adds to name it: the producer's output is renamed to the output name
 * everywhere and the Identity is dropped, which saves a copy of the tensor on every run.
 */
function foldOutputIdentities(graph: Graph, nodes: readonly NodeSpec[]): NodeSpec[] {
  const outputs = new Set(graph.outputs.map((o) => o.name));
  const produced = new Set(nodes.flatMap((n) => n.outputs));
  const renames = new Map<string, string>();
  const dropped = new Set<NodeSpec>();
  for (const node of nodes) {
    const [source] = node.inputs;
    const [target] = node.outputs;
    if (
      node.opType === "Identity" && outputs.has(target) && produced.has(source) &&
      !outputs.has(source) && !renames.has(source)
    ) {
      renames.set(source, target);
      dropped.add(node);
    }
  }
  const rename = (name: string) => renames.get(name) ?? name;
  return nodes.filter((n) => !dropped.has(n)).map((n) => ({
    ...n,
    inputs: n.inputs.map(rename),
    outputs: n.outputs.map(rename),
  }));
}

/** The parameters given values in `initializers`, as constants; checks dtypes and sizes. */
function bakedParameters(
  graph: Graph,
  initializers: OnnxWriteOptions["initializers"],
): ConstantSpec[] {
  if (!initializers) return [];
  const lookup = (name: string): Float32Array | undefined =>
    initializers instanceof Map
      ? initializers.get(name)
      : Object.hasOwn(initializers, name)
      ? (initializers as Record<string, Float32Array>)[name]
      : undefined;
  const baked: ConstantSpec[] = [];
  for (const param of graph.params) {
    const data = lookup(param.name);
    if (!data) continue;
    if (param.dtype !== "float32") {
      throw new Error(
        `initializers: parameter ${param.name} is ${param.dtype}; only float32 parameters can be baked`,
      );
    }
    const expected = shapeSize(param.shape);
    if (data.length !== expected) {
      throw new Error(
        `initializers: parameter ${param.name} has shape ${
          formatShape(param.shape)
        } (${expected} values) but was given ${data.length} values`,
      );
    }
    baked.push({ name: param.name, dtype: param.dtype, shape: param.shape, data });
  }
  return baked;
}

function encodeOpsetImport(domain: string, version: number): ProtoWriter {
  const proto = new ProtoWriter();
  proto.string(OPERATOR_SET_ID.domain, domain);
  proto.varint(OPERATOR_SET_ID.version, version);
  return proto;
}

function encodeNode(node: NodeSpec): ProtoWriter {
  const proto = new ProtoWriter();
  for (const input of node.inputs) proto.string(NODE.input, input);
  for (const output of node.outputs) proto.string(NODE.output, output);
  proto.string(NODE.name, node.name);
  proto.string(NODE.opType, node.opType);
  for (const [name, attribute] of Object.entries(node.attributes)) {
    proto.message(NODE.attribute, encodeAttribute(name, attribute));
  }
  proto.string(NODE.domain, node.domain);
  return proto;
}

function encodeAttribute(name: string, attribute: Attribute): ProtoWriter {
  const proto = new ProtoWriter();
  proto.string(ATTRIBUTE.name, name);
  if ("i" in attribute) {
    proto.varint(ATTRIBUTE.i, attribute.i);
    proto.varint(ATTRIBUTE.type, ATTRIBUTE_TYPE.INT);
  } else if ("f" in attribute) {
    proto.float(ATTRIBUTE.f, attribute.f);
    proto.varint(ATTRIBUTE.type, ATTRIBUTE_TYPE.FLOAT);
  } else if ("s" in attribute) {
    proto.string(ATTRIBUTE.s, attribute.s);
    proto.varint(ATTRIBUTE.type, ATTRIBUTE_TYPE.STRING);
  } else if ("ints" in attribute) {
    proto.packedInt64s(ATTRIBUTE.ints, attribute.ints);
    proto.varint(ATTRIBUTE.type, ATTRIBUTE_TYPE.INTS);
  } else if ("floats" in attribute) {
    proto.packedFloats(ATTRIBUTE.floats, attribute.floats);
    proto.varint(ATTRIBUTE.type, ATTRIBUTE_TYPE.FLOATS);
  } else {
    proto.message(ATTRIBUTE.t, encodeTensor(attribute.t));
    proto.varint(ATTRIBUTE.type, ATTRIBUTE_TYPE.TENSOR);
  }
  return proto;
}

/** A `TensorProto` header: dims, element type and name. */
function encodeTensorHeader(tensor: ConstantSpec): ProtoWriter {
  const proto = new ProtoWriter();
  proto.packedInt64s(TENSOR.dims, tensor.shape);
  proto.varint(TENSOR.dataType, onnxElemType(tensor.dtype));
  proto.string(TENSOR.name, tensor.name);
  return proto;
}

/** A `TensorProto` carrying its data inline as little-endian `raw_data`. */
function encodeTensor(tensor: ConstantSpec): ProtoWriter {
  const proto = encodeTensorHeader(tensor);
  proto.bytes(TENSOR.rawData, tensorBytes(tensor.data));
  return proto;
}

/** A `TensorProto` whose data lies at `offset` in the external file `location`. */
function encodeExternalTensor(
  tensor: ConstantSpec,
  location: string,
  offset: number,
  length: number,
): ProtoWriter {
  const proto = encodeTensorHeader(tensor);
  const entries = { location, offset: String(offset), length: String(length) };
  for (const [key, value] of Object.entries(entries)) {
    const entry = new ProtoWriter();
    entry.string(STRING_STRING_ENTRY.key, key);
    entry.string(STRING_STRING_ENTRY.value, value);
    proto.message(TENSOR.externalData, entry);
  }
  proto.varint(TENSOR.dataLocation, DATA_LOCATION_EXTERNAL);
  return proto;
}

/** Throws unless every named axis is a symbolic axis of a graph input or output. */
function checkAxisNames(
  axisNames: NonNullable<OnnxWriteOptions["axisNames"]>,
  values: readonly GraphValueSpec[],
): void {
  for (const [name, axes] of Object.entries(axisNames)) {
    const value = values.find((v) => v.name === name);
    if (!value) throw new Error(`axisNames: ${name} is not a graph input or output`);
    for (const [axis, dimName] of Object.entries(axes)) {
      const size = value.dims[Number(axis)];
      if (!/^\d+$/.test(axis) || size === undefined || dimName === "") {
        throw new Error(
          `axisNames: ${name} ${formatShape(value.dims)} has no axis ${axis} to call '${dimName}'`,
        );
      }
      if (!isSymbolic(size)) {
        throw new Error(
          `axisNames: axis ${axis} of ${name} ${
            formatShape(value.dims)
          } has the fixed size ${size}; record it with a symbolic size to name it '${dimName}'`,
        );
      }
    }
  }
}

/**
 * A `ValueInfoProto` with a tensor type: each axis its size, a symbolic one under its name in
 * `names` or else its text.
 */
function encodeValueInfo(
  value: { readonly name: string; readonly dtype: DType; readonly dims: Dims },
  names: Readonly<Record<number, string>> = {},
): ProtoWriter {
  const shape = new ProtoWriter();
  value.dims.forEach((size, axis) =>
    shape.message(
      TENSOR_SHAPE.dim,
      encodeDimension(isSymbolic(size) ? names[axis] ?? String(size) : size),
    )
  );
  const tensorType = new ProtoWriter();
  tensorType.varint(TENSOR_TYPE.elemType, onnxElemType(value.dtype));
  tensorType.message(TENSOR_TYPE.shape, shape);
  const type = new ProtoWriter();
  type.message(TYPE.tensorType, tensorType);
  const proto = new ProtoWriter();
  proto.string(VALUE_INFO.name, value.name);
  proto.message(VALUE_INFO.type, type);
  return proto;
}

/** A `Dimension`: a size (`dim_value`) or a symbolic name (`dim_param`). */
function encodeDimension(size: number | string): ProtoWriter {
  const proto = new ProtoWriter();
  if (typeof size === "string") proto.string(DIMENSION.dimParam, size);
  else proto.varint(DIMENSION.dimValue, size);
  return proto;
}

const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** The bytes of a tensor's data, little-endian as ONNX `raw_data` requires (a view, no copy). */
function tensorBytes(data: TensorData): Uint8Array {
  if (!HOST_IS_LITTLE_ENDIAN) throw new Error("onnx: writing models needs a little-endian host");
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** The external data file contents: tensor bytes at aligned offsets, kept by reference. */
class ExternalDataBlob {
  readonly #chunks: Uint8Array[] = [];
  #length = 0;

  constructor(
    /** File name of the blob, relative to the model file. */
    readonly location: string,
  ) {
    checkExternalLocation(location);
  }

  /** Appends `data` at the next aligned offset and returns that offset. */
  append(data: Uint8Array): number {
    const padding = (EXTERNAL_DATA_ALIGNMENT - this.#length % EXTERNAL_DATA_ALIGNMENT) %
      EXTERNAL_DATA_ALIGNMENT;
    if (padding > 0) this.#chunks.push(new Uint8Array(padding));
    const offset = this.#length + padding;
    this.#chunks.push(data);
    this.#length = offset + data.length;
    return offset;
  }

  /** The file contents as a sequence of byte chunks (tensor data by reference, padding). */
  chunks(): readonly Uint8Array[] {
    return this.#chunks;
  }
}

/** ONNX Runtime only reads external data inside the model's directory. */
function checkExternalLocation(location: string): void {
  const segments = location.split(/[\\/]/);
  if (location === "" || /^([\\/]|[A-Za-z]:)/.test(location) || segments.includes("..")) {
    throw new Error(
      `externalData: location '${location}' must be a relative path inside the model's directory`,
    );
  }
}

/** `location` resolved against the directory of the file at `path`. */
function siblingPath(path: string, location: string): string {
  const directoryEnd = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\")) + 1;
  return path.slice(0, directoryEnd) + location;
}

async function writeFileAtomically(path: string, chunks: readonly Uint8Array[]): Promise<void> {
  const temporaryPath = `${path}.tmp-${Deno.pid}`;
  try {
    const file = await Deno.open(temporaryPath, { write: true, create: true, truncate: true });
    try {
      for (const chunk of chunks) {
        for (let written = 0; written < chunk.length;) {
          written += await file.write(chunk.subarray(written));
        }
      }
    } finally {
      file.close();
    }
    await Deno.rename(temporaryPath, path);
  } catch (error) {
    await Deno.remove(temporaryPath).catch(() => {});
    throw error;
  }
}

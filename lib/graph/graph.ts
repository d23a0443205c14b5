/**
 * The Graph recorder: the object every op writes into. It records graph inputs, parameters,
 * constants, ONNX nodes, outputs and the tape of differentiable ops that {@link grad} walks.
 *
 * Nothing is computed here: an op function checks dtypes and shapes, appends one or more ONNX
 * nodes with {@link Graph.emit}, and registers its vector-Jacobian product with
 * {@link Graph.record}.
 *
 * Graph inputs may have symbolic axes (see `symbolicDim`): the graph then works at any size of
 * those axes, and ops that need a size at run time (a reshape or expand target) compute it in the
 * graph from the inputs' shapes with {@link Graph.shapeTensor}. Such graphs are for inference:
 * autodiff needs static shapes.
 *
 * @module
 */

import { type Dim, type Dims, type DimSymbol, hasSymbolicDims, isSymbolic } from "./dim.ts";
import {
  type DType,
  fixedShape,
  formatShape,
  isFloatDType,
  type Shape,
  shapeSize,
  Tensor,
  type ValueDType,
} from "./tensor.ts";

/** Typed array holding the data of a constant or initializer, matching its dtype. */
export type TensorData = Float32Array | Float64Array | BigInt64Array | Uint8Array | Uint16Array;

/** An ONNX node attribute, tagged by its ONNX attribute type. */
export type Attribute =
  | { i: number }
  | { f: number }
  | { s: string }
  | { ints: readonly number[] }
  | { floats: readonly number[] }
  | { t: ConstantSpec };

/** The ONNX operator domains the writer can import. */
export type Domain = "" | "com.microsoft";

/** One ONNX node as recorded. */
export interface NodeSpec {
  /** Unique node name, prefixed by the scope it was emitted in. */
  readonly name: string;
  /** ONNX operator type, e.g. `MatMul`. */
  readonly opType: string;
  /** `""` for the default `ai.onnx` domain, or `com.microsoft` for contrib ops. */
  readonly domain: Domain;
  /** Input value names; `""` marks an omitted optional input. */
  readonly inputs: readonly string[];
  /** Output value names. */
  readonly outputs: readonly string[];
  /** Attributes by name. */
  readonly attributes: Readonly<Record<string, Attribute>>;
}

/** A constant tensor (an ONNX initializer). */
export interface ConstantSpec {
  /** Initializer name. */
  readonly name: string;
  /** Element type. */
  readonly dtype: DType;
  /** Static shape. */
  readonly shape: Shape;
  /** The values, in the typed array of the dtype. */
  readonly data: TensorData;
}

/**
 * How a parameter's initial value is drawn (applied by the runtime's state store with a seeded
 * RNG). `torchDefault` is PyTorch's default Linear/Conv init: U(±1/√fanIn) for weight and bias.
 */
export type InitRule =
  | { readonly kind: "zeros" }
  | { readonly kind: "ones" }
  | { readonly kind: "constant"; readonly value: number }
  | { readonly kind: "normal"; readonly std: number; readonly mean?: number }
  | {
    readonly kind: "truncNormal";
    readonly std: number;
    readonly mean?: number;
    /** Lower bound in value units (PyTorch's `trunc_normal_` convention). */
    readonly a: number;
    /** Upper bound in value units. */
    readonly b: number;
  }
  | { readonly kind: "uniform"; readonly low: number; readonly high: number }
  | { readonly kind: "torchDefault"; readonly fanIn: number };

/** A trainable parameter: a graph input whose value lives in the runtime's state store. */
export interface ParamSpec {
  /** Full dotted name, e.g. `backbone.blocks.0.attn.qkv.weight`. */
  readonly name: string;
  /** Element type (float32 for everything the state store holds). */
  readonly dtype: ValueDType;
  /** Static shape. */
  readonly shape: Shape;
  /** How the initial value is drawn. */
  readonly init: InitRule;
}

/** A value fed to or fetched from a graph: name, dtype, static shape. */
export interface ValueSpec {
  /** Value name. */
  readonly name: string;
  /** Element type. */
  readonly dtype: ValueDType;
  /** Static shape (for a {@link GraphValueSpec}, throws when an axis is symbolic). */
  readonly shape: Shape;
}

/** A graph input or output as recorded: its axes may be symbolic. */
export interface GraphValueSpec extends ValueSpec {
  /** The size of each axis, symbolic ones included. */
  readonly dims: Dims;
}

/** Options of a {@link Graph}. */
export interface GraphOptions {
  /**
   * Emit standard `ai.onnx` operators only, no `com.microsoft` contrib ops (which onnxruntime
   * fuses back where it can): for models that other runtimes must run.
   */
  readonly standardOpsOnly?: boolean;
  /**
   * The autocast policy: the precision matrix products run in (default `float32`: as recorded).
   * Under `float16` or `bfloat16`, `linear`, `matmul` (so attention's q·kᵀ and attention·v) and
   * the patch projection `conv2dPatch` cast their float32 operands to that precision, compute the
   * product there and cast the result back to float32; their gradients then run in that precision
   * too (the cast's gradient casts back). Everything else stays float32: softmax, log-softmax,
   * LayerNorm, GELU, reductions, norms, the loss and the optimizer. This follows the lists of
   * PyTorch's `torch.autocast` on CUDA (linear, matmul and convolutions in float16; softmax,
   * log_softmax, layer_norm, sum and norm in float32), with one difference: PyTorch keeps a
   * product's float16 result and runs the elementwise ops that take only that result (GELU,
   * drop-path scaling) in float16, where this graph returns to float32 after every product.
   */
  readonly matmulPrecision?: "float32" | "float16" | "bfloat16";
}

/**
 * Vector-Jacobian product of one recorded op: given the gradients of its outputs (undefined for
 * outputs that receive none), return the gradients of its inputs (undefined where there is none).
 */
export type VJP = (outputGrads: readonly (Tensor | undefined)[]) => readonly (Tensor | undefined)[];

/** One differentiable op on the tape. */
export interface TapeEntry {
  /** Op name for messages, e.g. `matmul`. */
  readonly op: string;
  /** Scope the op was recorded in. */
  readonly scope: string;
  /** The op's differentiable inputs. */
  readonly inputs: readonly Tensor[];
  /** The op's outputs. */
  readonly outputs: readonly Tensor[];
  /** The op's vector-Jacobian product. */
  readonly vjp: VJP;
}

/** The ONNX operators the graph may emit, with their domains. Anything else fails at build time. */
const KNOWN_OPS: Readonly<Record<string, Domain>> = Object.fromEntries([
  ...[
    "Abs",
    "Add",
    "And",
    "ArgMax",
    "Cast",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "ConvTranspose",
    "CumSum",
    "Div",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "Gather",
    "GatherElements",
    "GatherND",
    "Gelu",
    "Gemm",
    "Greater",
    "GreaterOrEqual",
    "Identity",
    "LayerNormalization",
    "Less",
    "LessOrEqual",
    "Log",
    "LogSoftmax",
    "MatMul",
    "Max",
    "Min",
    "Mul",
    "Neg",
    "Not",
    "Or",
    "Pad",
    "Pow",
    "Reciprocal",
    "ReduceL2",
    "ReduceMax",
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "Relu",
    "Reshape",
    "Resize",
    "ScatterElements",
    "ScatterND",
    "Shape",
    "Sigmoid",
    "Sign",
    "Slice",
    "Softmax",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Tanh",
    "Tile",
    "TopK",
    "Transpose",
    "Unsqueeze",
    "Where",
  ].map((op) => [op, "" as Domain]),
  ...["FusedMatMul"].map((op) => [op, "com.microsoft" as Domain]),
]);

/** Records a computation as an ONNX graph plus a tape for reverse-mode autodiff. */
export class Graph {
  /** Graph inputs that are fed data each run (images, masks, scalars). */
  readonly inputs: GraphValueSpec[] = [];
  /** Trainable parameters, in declaration order (also graph inputs). */
  readonly params: ParamSpec[] = [];
  /** Constants, written as initializers. */
  readonly constants: ConstantSpec[] = [];
  /** ONNX nodes in topological (emission) order. */
  readonly nodes: NodeSpec[] = [];
  /** Graph outputs. */
  readonly outputs: GraphValueSpec[] = [];
  /** Differentiable ops in emission order. */
  readonly tape: TapeEntry[] = [];

  readonly #scopes: string[] = [];
  readonly #names = new Set<string>();
  readonly #paramTensors = new Map<string, Tensor>();
  readonly #scalarCache = new Map<string, Tensor>();
  /** Where each symbol of the inputs' shapes is read at run time: input and axis. */
  readonly #symbolAxes = new Map<string, { input: Tensor; axis: number }>();
  /** Every node output, by value name. */
  readonly #nodeOutputs = new Map<string, Tensor>();
  #counter = 0;

  /** An empty graph. */
  constructor(
    /** Graph name written into the model. */
    readonly name = "graph",
    /** How the graph is emitted. */
    readonly options: GraphOptions = {},
  ) {}

  /** True when some graph input has a symbolic axis. */
  get isSymbolic(): boolean {
    return this.#symbolAxes.size > 0;
  }

  /** The current dotted scope, e.g. `backbone.blocks.0.attn` (empty at top level). */
  get scopeName(): string {
    return this.#scopes.join(".");
  }

  /** Runs `build` with `name` appended to the scope; parameters and node names get the prefix. */
  scope<T>(name: string, build: () => T): T {
    this.#scopes.push(name);
    try {
      return build();
    } finally {
      this.#scopes.pop();
    }
  }

  /** Throws a build-time error naming the op and the current scope. */
  fail(op: string, message: string): never {
    const where = this.scopeName ? ` (in scope ${this.scopeName})` : "";
    throw new Error(`${op}: ${message}${where}`);
  }

  /**
   * Declares a graph input fed with data at run time. An axis may be a symbol (`symbolicDim`):
   * the input then takes any size there, read at run time from the first input that has it.
   */
  input(name: string, dtype: ValueDType, shape: Dims): Tensor {
    this.#checkShape("input", shape);
    const symbols = shape.map((d, axis) => {
      if (!isSymbolic(d)) return undefined;
      const [term, ...otherTerms] = d.terms;
      const [symbol, ...otherSymbols] = term.symbols;
      if (
        otherTerms.length > 0 || otherSymbols.length > 0 || term.coefficient !== 1 ||
        symbol.quotient
      ) {
        this.fail("input", `axis ${axis} of ${name} must be a number or a plain symbol, not ${d}`);
      }
      return symbol.name;
    });
    this.#claim("input", name);
    const tensor = new Tensor(this, name, dtype, [...shape]);
    this.inputs.push(valueSpec(name, dtype, shape));
    symbols.forEach((symbol, axis) => {
      if (symbol && !this.#symbolAxes.has(symbol)) {
        this.#symbolAxes.set(symbol, { input: tensor, axis });
      }
    });
    return tensor;
  }

  /**
   * Declares a trainable parameter named `<scope>.<localName>`. Declaring the same full name
   * twice returns the same tensor if the shape and dtype agree (shared weights), else throws.
   */
  param(localName: string, shape: Shape, init: InitRule, dtype: ValueDType = "float32"): Tensor {
    const name = this.scopeName ? `${this.scopeName}.${localName}` : localName;
    this.#checkShape("param", shape);
    const existing = this.#paramTensors.get(name);
    if (existing) {
      if (existing.dtype !== dtype || formatShape(existing.shape) !== formatShape(shape)) {
        this.fail(
          "param",
          `${name} was declared as ${existing.dtype}${
            formatShape(existing.shape)
          }, now as ${dtype}${formatShape(shape)}`,
        );
      }
      return existing;
    }
    this.#claim("param", name);
    this.params.push({ name, dtype, shape: [...shape], init });
    const t = new Tensor(this, name, dtype, [...shape]);
    this.#paramTensors.set(name, t);
    return t;
  }

  /** The tensor of a declared parameter, by full name. */
  paramTensor(name: string): Tensor {
    const t = this.#paramTensors.get(name);
    if (!t) this.fail("paramTensor", `no parameter named ${name}`);
    return t;
  }

  /** Adds a constant tensor (an initializer). `values` may be a plain array or a typed array. */
  constant(values: ArrayLike<number> | TensorData, dtype: DType, shape: Shape): Tensor {
    this.#checkShape("constant", shape);
    if (values.length !== shapeSize(shape)) {
      this.fail(
        "constant",
        `${values.length} values do not fill shape ${formatShape(shape)}`,
      );
    }
    const name = this.#unique("const");
    const data = toTensorData(values, dtype);
    this.constants.push({ name, dtype, shape: [...shape], data });
    return new Tensor(this, name, dtype, [...shape]);
  }

  /** A cached scalar constant of the given dtype (one initializer per distinct value). */
  scalar(value: number, dtype: DType = "float32"): Tensor {
    const key = `${dtype}:${Object.is(value, -0) ? "-0" : value}`;
    let t = this.#scalarCache.get(key);
    if (!t) {
      t = this.constant([value], dtype, []);
      this.#scalarCache.set(key, t);
    }
    return t;
  }

  /** A cached constant of `shape` filled with `value` (one initializer per distinct request). */
  filled(value: number, dtype: DType, shape: Shape): Tensor {
    const key = `filled:${dtype}:${value}:${shape.join(",")}`;
    let t = this.#scalarCache.get(key);
    if (!t) {
      t = this.constant(new Float64Array(shapeSize(shape)).fill(value), dtype, shape);
      this.#scalarCache.set(key, t);
    }
    return t;
  }

  /** A cached int64 vector constant (shapes, axes, indices for shape ops). */
  int64s(values: readonly number[]): Tensor {
    const key = `int64s:${values.join(",")}`;
    let t = this.#scalarCache.get(key);
    if (!t) {
      t = this.constant(values, "int64", [values.length]);
      this.#scalarCache.set(key, t);
    }
    return t;
  }

  /**
   * The value of a size as an int64 tensor [1]: a constant for a number, else computed at run
   * time from the shapes of the inputs that carry its symbols (one set of nodes per size).
   */
  dimValue(d: Dim): Tensor {
    if (!isSymbolic(d)) return this.int64s([d]);
    return this.#cached(`dim:${d}`, () => {
      const terms = d.terms.map((term) => {
        const factors = term.symbols.map((s) => this.#symbolValue(s));
        if (term.coefficient !== 1 || factors.length === 0) {
          factors.push(this.int64s([term.coefficient]));
        }
        return factors.reduce((product, f) => this.#int64Op("Mul", product, f));
      });
      return terms.reduce((total, t) => this.#int64Op("Add", total, t));
    });
  }

  /**
   * A shape as an int64 vector [rank], the target of a Reshape or Expand: a constant when every
   * axis is a number, else assembled at run time from {@link Graph.dimValue}.
   */
  shapeTensor(dims: Dims): Tensor {
    if (!hasSymbolicDims(dims)) return this.int64s(dims as Shape);
    return this.#cached(`shape:${formatShape(dims)}`, () => {
      const pieces: Tensor[] = [];
      let numbers: number[] = [];
      for (const d of dims) {
        if (!isSymbolic(d)) {
          numbers.push(d);
          continue;
        }
        if (numbers.length > 0) pieces.push(this.int64s(numbers));
        numbers = [];
        pieces.push(this.dimValue(d));
      }
      if (numbers.length > 0) pieces.push(this.int64s(numbers));
      return this.emit1("Concat", pieces, "int64", [dims.length], { axis: { i: 0 } });
    });
  }

  /** Marks `tensor` as a graph output called `name` (an Identity node renames it if needed). */
  output(name: string, tensor: Tensor): void {
    if (tensor.graph !== this) this.fail("output", `${tensor} belongs to another graph`);
    const dtype = tensor.dtype;
    if (dtype === "bfloat16") {
      this.fail(
        "output",
        `${tensor} cannot be an output: onnxruntime's JavaScript tensors have no bfloat16, so cast it to float32 first`,
      );
    }
    if (this.outputs.some((o) => o.name === name)) {
      this.fail("output", `an output named ${name} already exists`);
    }
    const isFed = this.inputs.some((i) => i.name === tensor.name) ||
      this.#paramTensors.has(tensor.name) || this.constants.some((c) => c.name === tensor.name);
    if (tensor.name !== name || isFed) {
      this.#claim("output", name);
      this.nodes.push({
        name: this.#unique("Identity"),
        opType: "Identity",
        domain: "",
        inputs: [tensor.name],
        outputs: [name],
        attributes: {},
      });
    }
    this.outputs.push(valueSpec(name, dtype, tensor.dims));
  }

  /**
   * Appends one ONNX node and returns handles for its outputs. `outputs` gives each output's
   * dtype and shape (the op function has checked and inferred them). Inputs may be `null` for
   * omitted optional inputs.
   */
  emit(
    opType: string,
    inputs: readonly (Tensor | null)[],
    outputs: readonly { dtype: DType; shape: Dims }[],
    attributes: Record<string, Attribute> = {},
  ): Tensor[] {
    const domain = KNOWN_OPS[opType];
    if (domain === undefined) {
      this.fail(
        opType,
        `unknown op '${opType}': it is not in the set of ONNX ops this graph emits`,
      );
    }
    if (domain !== "" && this.options.standardOpsOnly) {
      this.fail(
        opType,
        `${domain}.${opType} is not a standard operator, and this graph emits only those`,
      );
    }
    for (const t of inputs) {
      if (t && t.graph !== this) this.fail(opType, `input ${t} belongs to another graph`);
    }
    const nodeName = this.#unique(opType);
    const outs = outputs.map((o, i) => {
      this.#checkShape(opType, o.shape);
      const name = outputs.length === 1 ? nodeName : `${nodeName}:${i}`;
      this.#names.add(name);
      const tensor = new Tensor(this, name, o.dtype, [...o.shape]);
      this.#nodeOutputs.set(name, tensor);
      return tensor;
    });
    this.nodes.push({
      name: nodeName,
      opType,
      domain,
      inputs: inputs.map((t) => (t ? t.name : "")),
      outputs: outs.map((t) => t.name),
      attributes,
    });
    return outs;
  }

  /** Emits a single-output node whose output has the given dtype and shape. */
  emit1(
    opType: string,
    inputs: readonly (Tensor | null)[],
    dtype: DType,
    shape: Dims,
    attributes: Record<string, Attribute> = {},
  ): Tensor {
    return this.emit(opType, inputs, [{ dtype, shape }], attributes)[0];
  }

  /** The dims of a recorded value (a node output, input, parameter or constant), by name. */
  dimsOf(name: string): Dims {
    const dims = this.#nodeOutputs.get(name)?.dims ??
      this.inputs.find((v) => v.name === name)?.dims ??
      this.params.find((v) => v.name === name)?.shape ??
      this.constants.find((v) => v.name === name)?.shape;
    if (!dims) this.fail("dimsOf", `the graph has no value named ${name}`);
    return dims;
  }

  /** The dtype of a recorded value (a node output, input, parameter, constant or output), by name. */
  dtypeOf(name: string): DType {
    const dtype = this.#nodeOutputs.get(name)?.dtype ??
      this.outputs.find((v) => v.name === name)?.dtype ??
      this.inputs.find((v) => v.name === name)?.dtype ??
      this.params.find((v) => v.name === name)?.dtype ??
      this.constants.find((v) => v.name === name)?.dtype;
    if (!dtype) this.fail("dtypeOf", `the graph has no value named ${name}`);
    return dtype;
  }

  /** Registers a differentiable op on the tape with its VJP rule. */
  record(op: string, inputs: readonly Tensor[], outputs: readonly Tensor[], vjp: VJP): void {
    if (inputs.some((t) => t.isFloat)) {
      this.tape.push({
        op,
        scope: this.scopeName,
        inputs: [...inputs],
        outputs: [...outputs],
        vjp,
      });
    }
  }

  #claim(op: string, name: string): void {
    if (this.#names.has(name)) this.fail(op, `the name ${name} is already used in this graph`);
    this.#names.add(name);
  }

  #unique(base: string): string {
    const prefix = this.scopeName ? `${this.scopeName}/` : "";
    let name: string;
    do {
      name = `${prefix}${base}_${this.#counter++}`;
    } while (this.#names.has(name));
    this.#names.add(name);
    return name;
  }

  #checkShape(op: string, shape: Dims): void {
    if (!shape.every((d) => isSymbolic(d) || (Number.isInteger(d) && d >= 0))) {
      this.fail(op, `shape ${formatShape(shape)} must contain non-negative integers`);
    }
  }

  #cached(key: string, build: () => Tensor): Tensor {
    let t = this.#scalarCache.get(key);
    if (!t) {
      t = build();
      this.#scalarCache.set(key, t);
    }
    return t;
  }

  /** The run-time value of one symbol, as an int64 tensor [1]. */
  #symbolValue(symbol: DimSymbol): Tensor {
    return this.#cached(`symbol:${symbol.name}`, () => {
      const { quotient } = symbol;
      if (quotient) {
        return this.#int64Op("Div", this.dimValue(quotient.of), this.int64s([quotient.by]));
      }
      const at = this.#symbolAxes.get(symbol.name);
      if (!at) this.fail("dimValue", `the size ${symbol.name} is not an axis of a graph input`);
      return this.emit1("Shape", [at.input], "int64", [1], {
        start: { i: at.axis },
        end: { i: at.axis + 1 },
      });
    });
  }

  #int64Op(opType: "Add" | "Mul" | "Div", a: Tensor, b: Tensor): Tensor {
    return this.emit1(opType, [a, b], "int64", [1]);
  }
}

/** A graph input or output's spec, whose `shape` throws when an axis is symbolic. */
function valueSpec(name: string, dtype: ValueDType, dims: Dims): GraphValueSpec {
  const copy = [...dims];
  return {
    name,
    dtype,
    dims: copy,
    get shape() {
      return fixedShape(copy, () => `${name}${formatShape(copy)}`);
    },
  };
}

/**
 * The size of axis `axis` of `t` as a number, or a build error naming the op when it is symbolic
 * (for sizes that fix parameter shapes or loop counts).
 */
export function staticDim(op: string, t: Tensor, axis: number): number {
  const d = t.dims.at(axis);
  if (d === undefined) t.graph.fail(op, `${t} has no axis ${axis}`);
  if (isSymbolic(d)) t.graph.fail(op, `axis ${axis} of ${t} must have a fixed size, not ${d}`);
  return d;
}

/** Converts numbers to the typed array that stores `dtype` (bool as 0/1 bytes). */
export function toTensorData(values: ArrayLike<number> | TensorData, dtype: DType): TensorData {
  switch (dtype) {
    case "float32":
      return values instanceof Float32Array
        ? values
        : Float32Array.from(values as ArrayLike<number>);
    case "float64":
      return values instanceof Float64Array
        ? values
        : Float64Array.from(values as ArrayLike<number>);
    case "int64":
      return values instanceof BigInt64Array
        ? values
        : BigInt64Array.from(Array.from(values as ArrayLike<number>, (v) => BigInt(v)));
    case "bool":
      return Uint8Array.from(values as ArrayLike<number>, (v) => (v ? 1 : 0));
    case "float16":
      return values instanceof Uint16Array
        ? values
        : new Uint16Array(Float16Array.from(values as ArrayLike<number>).buffer);
    case "bfloat16":
      return values instanceof Uint16Array ? values : bfloat16Bits(values as ArrayLike<number>);
  }
}

/**
 * The bfloat16 bits of numbers: each rounded to float32, then to the upper 16 bits of its float32
 * pattern, to nearest with ties to even (as PyTorch converts); NaN stays a quiet NaN.
 */
function bfloat16Bits(values: ArrayLike<number>): Uint16Array {
  const bits = new Uint32Array(Float32Array.from(values).buffer);
  return Uint16Array.from(bits, (b) => {
    if ((b & 0x7fffffff) > 0x7f800000) return (b >>> 16) | 0x40;
    return (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  });
}

/** Asserts that `t` has a floating-point dtype, naming the op otherwise. */
export function requireFloat(op: string, t: Tensor): void {
  if (!isFloatDType(t.dtype)) t.graph.fail(op, `expects a floating-point tensor, got ${t}`);
}

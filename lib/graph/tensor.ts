/**
 * Tensor handles: the values a {@link Graph} records. A handle carries a name, a dtype and a
 * shape whose axes are numbers or, where a graph must take any batch or image size, symbolic
 * sizes ({@link SymDim}); it holds no data.
 *
 * @module
 */

import { type Dims, formatDim, hasSymbolicDims, sameDim } from "./dim.ts";
import type { Graph } from "./graph.ts";

/**
 * Element types a graph can carry. `float16` and `bfloat16` are the low precisions that matrix
 * products run in under a graph's autocast policy (`GraphOptions.matmulPrecision`).
 */
export type DType = "float32" | "float64" | "int64" | "bool" | "float16" | "bfloat16";

/**
 * Element types of the values a graph exchanges with its runtime (inputs, parameters, outputs):
 * every {@link DType} but `bfloat16`, which onnxruntime's JavaScript tensors cannot hold; bfloat16
 * values live inside a graph only.
 */
export type ValueDType = Exclude<DType, "bfloat16">;

/** A static shape: one non-negative integer per axis, row-major. `[]` is a scalar. */
export type Shape = readonly number[];

/** A symbolic value in a {@link Graph}: the output of a node, a graph input, a parameter or a constant. */
export class Tensor {
  /** A handle; op functions create these, users rarely do. */
  constructor(
    /** The graph that produced this value. */
    readonly graph: Graph,
    /** The ONNX value name (unique in the graph). */
    readonly name: string,
    /** Element type. */
    readonly dtype: DType,
    /** The size of each axis: a number, or a symbolic size known at run time. */
    readonly dims: Dims,
  ) {}

  /** The static shape; throws when an axis is symbolic (see {@link fixedShape}). */
  get shape(): Shape {
    return fixedShape(this.dims, () => this.toString());
  }

  /** True when some axis has a symbolic size. */
  get isSymbolic(): boolean {
    return hasSymbolicDims(this.dims);
  }

  /** Number of axes. */
  get rank(): number {
    return this.dims.length;
  }

  /** Number of elements (static shapes only). */
  get size(): number {
    return shapeSize(this.shape);
  }

  /** True for float32, float64, float16 and bfloat16: the dtypes that carry gradients. */
  get isFloat(): boolean {
    return isFloatDType(this.dtype);
  }

  /** `name[d0,d1,...]:dtype`, for messages. */
  toString(): string {
    return `${this.name}${formatShape(this.dims)}:${this.dtype}`;
  }
}

/**
 * `dims` as a static shape, or an error naming the value (`describe()`) when an axis is symbolic:
 * the code that asked needs fixed sizes (element counts, buffers, autodiff).
 */
export function fixedShape(dims: Dims, describe: () => string): Shape {
  if (hasSymbolicDims(dims)) {
    throw new Error(`${describe()} has symbolic dimensions; fixed sizes are needed here`);
  }
  return dims as Shape;
}

/** Number of elements of a shape (1 for a scalar). */
export function shapeSize(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** `[2,3]` style rendering of a shape (symbolic axes by name), for error messages. */
export function formatShape(shape: Dims): string {
  return `[${shape.map(formatDim).join(",")}]`;
}

/** True when two shapes are equal axis by axis (symbolic axes when they are the same size). */
export function sameShape(a: Dims, b: Dims): boolean {
  return a.length === b.length && a.every((d, i) => sameDim(d, b[i]));
}

/** True for the floating-point dtypes (the ones autodiff differentiates). */
export function isFloatDType(dtype: DType): boolean {
  return dtype === "float32" || dtype === "float64" || dtype === "float16" || dtype === "bfloat16";
}

/** Bytes per element of a dtype as stored in ONNX raw data. */
export function dtypeBytes(dtype: DType): number {
  switch (dtype) {
    case "float32":
      return 4;
    case "float64":
    case "int64":
      return 8;
    case "float16":
    case "bfloat16":
      return 2;
    case "bool":
      return 1;
  }
}

/** The ONNX `TensorProto.DataType` code of a dtype. */
export function onnxElemType(dtype: DType): number {
  return { float32: 1, bool: 9, int64: 7, float64: 11, float16: 10, bfloat16: 16 }[dtype];
}

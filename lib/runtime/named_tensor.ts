/**
 * Host tensors as checkpoint files hold them: an element type, a shape and a typed array.
 *
 * @module
 */

/** Element types a host tensor (and a safetensors or `.pth` tensor) can have here. */
export type NamedTensorDType = "float32" | "float64" | "int64" | "bool" | "float16";

/**
 * A named host tensor, as files hold them (safetensors, `.pth`). `data` matches `dtype`: Float32Array, Float64Array,
 * BigInt64Array, Uint8Array (bool, 0 or 1) or Uint16Array (float16 raw bits); row-major, with
 * `shapeSize(shape)` elements.
 */
export interface NamedTensor {
  /** Element type. */
  dtype: NamedTensorDType;
  /** Shape, row-major. */
  shape: number[];
  /** The values, in the typed array of the dtype. */
  data: Float32Array | Float64Array | BigInt64Array | Uint8Array | Uint16Array;
}

/** Tensors by name, in file order (a Map keeps the order; a Record uses its key order). */
export type NamedTensors = Map<string, NamedTensor> | Record<string, NamedTensor>;

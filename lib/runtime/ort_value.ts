/**
 * Tensors as onnxruntime OrtValues: views of host typed arrays (no copy) and float32 buffers in a
 * device's memory, allocated by a session's allocator.
 *
 * @module
 */

import type { TensorData } from "../graph/graph.ts";
import { type DType, onnxElemType, type Shape, shapeSize } from "../graph/tensor.ts";
import type { OrtApi, OrtHandle } from "./ort_api.ts";
import type { DeviceAllocator } from "./ort_session.ts";

/**
 * An OrtValue of `dtype` and `shape` over the memory of the host array `data`, not copied: the
 * array must stay alive and unchanged in length while the value is used.
 */
export function hostTensor(api: OrtApi, data: TensorData, dtype: DType, shape: Shape): OrtHandle {
  return tensorOver(api, api.cpuMemory, Deno.UnsafePointer.of(data), data.byteLength, dtype, shape);
}

/** An OrtValue over `bytes` bytes at `pointer` in the memory that `memoryInfo` describes. */
function tensorOver(
  api: OrtApi,
  memoryInfo: OrtHandle,
  pointer: Deno.PointerValue,
  bytes: number,
  dtype: DType,
  shape: Shape,
): OrtHandle {
  const dims = BigInt64Array.from(shape, BigInt);
  return api.create(
    "CreateTensorWithDataAsOrtValue",
    (out) =>
      api.fn.CreateTensorWithDataAsOrtValue.call(
        memoryInfo,
        pointer,
        BigInt(bytes),
        dims,
        BigInt(shape.length),
        onnxElemType(dtype),
        out,
      ),
  );
}

/**
 * A float32 tensor in a device's memory: one allocation seen as two OrtValues, `value` with the
 * tensor's shape (bound to graphs) and `flat`, one axis of all its elements (for copies).
 */
export class DeviceTensor {
  /** The OrtValue with the tensor's shape. */
  readonly value: OrtHandle;
  /** The same memory as one axis of `shapeSize(shape)` elements. */
  readonly flat: OrtHandle;
  readonly #api: OrtApi;
  readonly #allocator: DeviceAllocator;
  readonly #memory: OrtHandle;

  private constructor(
    api: OrtApi,
    allocator: DeviceAllocator,
    memory: OrtHandle,
    value: OrtHandle,
    flat: OrtHandle,
  ) {
    this.#api = api;
    this.#allocator = allocator;
    this.#memory = memory;
    this.value = value;
    this.flat = flat;
  }

  /**
   * Allocates a float32 tensor of `shape` with `allocator` (contents undefined). Throws one
   * sentence naming the tensor, its size in MiB and the device when the memory is not there.
   */
  static allocate(
    api: OrtApi,
    allocator: DeviceAllocator,
    name: string,
    shape: Shape,
  ): DeviceTensor {
    const count = shapeSize(shape);
    const bytes = count * Float32Array.BYTES_PER_ELEMENT;
    const out = new BigUint64Array(1);
    const failure = api.failure(api.fn.AllocatorAlloc.call(allocator.handle, BigInt(bytes), out));
    const memory = Deno.UnsafePointer.create(out[0]);
    if (failure !== undefined || memory === null) {
      throw new Error(
        `cannot allocate ${name} (${(bytes / 2 ** 20).toFixed(1)} MiB) on ${allocator.where}: ${
          failure ?? "the allocator returned no memory"
        }`,
      );
    }
    const views: OrtHandle[] = [];
    try {
      for (const viewShape of [shape, [count]]) {
        views.push(tensorOver(api, allocator.memoryInfo, memory, bytes, "float32", viewShape));
      }
    } catch (error) {
      for (const view of views) api.fn.ReleaseValue.call(view);
      api.check("AllocatorFree", api.fn.AllocatorFree.call(allocator.handle, memory));
      throw error;
    }
    return new DeviceTensor(api, allocator, memory, views[0], views[1]);
  }

  /** Releases both views and the memory. */
  release(): void {
    this.#api.fn.ReleaseValue.call(this.value);
    this.#api.fn.ReleaseValue.call(this.flat);
    this.#api.check(
      "AllocatorFree",
      this.#api.fn.AllocatorFree.call(this.#allocator.handle, this.#memory),
    );
  }
}

/**
 * A native onnxruntime session on one device through the C API, with its IoBinding: the layer
 * under `DeviceSession` and the copies of `ResidentState`. Values are bound by name, then one
 * call runs the graph on the bound values.
 *
 * @module
 */

import {
  cString,
  DEVICE_ALLOCATOR,
  MEM_TYPE_DEFAULT,
  type OrtApi,
  type OrtHandle,
} from "./ort_api.ts";
import { prepareCuda } from "./cuda_libraries.ts";

/** Where a session runs and its tensors live. */
export type Device = "cpu" | "cuda";

/** A device and, for CUDA, which GPU (default 0). */
export interface Placement {
  /** `cpu` or `cuda`. */
  readonly device: Device;
  /** CUDA device ordinal (default 0; ignored on the CPU). */
  readonly deviceId?: number;
}

/** How to create a session. */
export interface OrtSessionOptions extends Placement {
  /** Intra-op threads for CPU kernels (default: the number of logical cores). */
  readonly threads?: number;
  /**
   * Keep onnxruntime's CPU memory arena and memory pattern (default true). With false (as the
   * trainer runs) each CPU buffer is allocated and freed as needed, and the CUDA arena grows by
   * exactly what is asked instead of the next power of two, so each holds its peak only once.
   */
  readonly memoryArena?: boolean;
  /** cuDNN convolution algorithm search on CUDA (default `exhaustive`, onnxruntime's default). */
  readonly cudnnConvAlgoSearch?: "exhaustive" | "heuristic" | "default";
  /** Let CUDA matrix products use TF32 (default false, so fp32 results match the CPU's). */
  readonly tf32?: boolean;
  /** Write an onnxruntime profile (JSON) with this file prefix. */
  readonly profilePrefix?: string;
  /** Graph optimization level (default `all`). */
  readonly optimization?: "all" | "disabled";
}

/** `ExecutionMode` and `GraphOptimizationLevel` values of the C API. */
const SEQUENTIAL = 0;
const OPTIMIZATION_LEVEL = { all: 99, disabled: 0 } as const;

/** The name of a placement in messages: `cpu` or `cuda:<id>`. */
export function placementName(placement: Placement): string {
  return placement.device === "cpu" ? "cpu" : `cuda:${placement.deviceId ?? 0}`;
}

/** True when both placements are the same device. */
export function samePlacement(a: Placement, b: Placement): boolean {
  return placementName(a) === placementName(b);
}

/** An allocator of a session's device memory, with the memory info of what it allocates. */
export interface DeviceAllocator {
  /** The `OrtAllocator`. */
  readonly handle: OrtHandle;
  /** The `OrtMemoryInfo` of its memory. */
  readonly memoryInfo: OrtHandle;
  /** The device, as {@link placementName} writes it. */
  readonly where: string;
}

/** A native session with one IoBinding. Not safe for concurrent runs. */
export class OrtSession {
  /** The C API it was created with. */
  readonly api: OrtApi;
  /** Its device. */
  readonly placement: Placement;
  readonly #session: OrtHandle;
  readonly #binding: OrtHandle;
  readonly #names = new Map<string, Uint8Array<ArrayBuffer>>();
  #allocator?: DeviceAllocator;

  private constructor(api: OrtApi, placement: Placement, session: OrtHandle) {
    this.api = api;
    this.placement = placement;
    this.#session = session;
    try {
      this.#binding = api.create(
        "CreateIoBinding",
        (out) => api.fn.CreateIoBinding.call(session, out),
      );
    } catch (error) {
      api.fn.ReleaseSession.call(session);
      throw error;
    }
  }

  /** Creates a session of the ONNX `model` bytes on the options' device. */
  static async create(
    api: OrtApi,
    model: Uint8Array,
    options: OrtSessionOptions,
  ): Promise<OrtSession> {
    const sessionOptions = api.create(
      "CreateSessionOptions",
      (out) => api.fn.CreateSessionOptions.call(out),
    );
    try {
      configure(api, sessionOptions, options);
      const session = await api.createAsync(
        "CreateSessionFromArray",
        (out) =>
          api.fn.CreateSessionFromArray.call(
            api.env,
            model,
            BigInt(model.length),
            sessionOptions,
            out,
          ),
      );
      return new OrtSession(api, { device: options.device, deviceId: options.deviceId }, session);
    } finally {
      api.fn.ReleaseSessionOptions.call(sessionOptions);
    }
  }

  /** Binds `value` (an OrtValue) to the graph input `name`, replacing any earlier binding. */
  bindInput(name: string, value: OrtHandle): void {
    this.api.check(
      `BindInput (${name})`,
      this.api.fn.BindInput.call(this.#binding, this.#cName(name), value),
    );
  }

  /** Binds `value` (an OrtValue the output is written into) to the graph output `name`. */
  bindOutput(name: string, value: OrtHandle): void {
    this.api.check(
      `BindOutput (${name})`,
      this.api.fn.BindOutput.call(this.#binding, this.#cName(name), value),
    );
  }

  /** Runs the graph on the bound values, off the JavaScript thread. */
  async run(): Promise<void> {
    this.api.check(
      "RunWithBinding",
      await this.api.fn.RunWithBinding.call(this.#session, null, this.#binding),
    );
  }

  /** The session's allocator of memory on its device (created on first use, then reused). */
  allocator(): DeviceAllocator {
    if (this.#allocator) return this.#allocator;
    const api = this.api;
    const memoryInfo = this.placement.device === "cpu" ? api.cpuMemory : api.create(
      "CreateMemoryInfo",
      (out) =>
        api.fn.CreateMemoryInfo.call(
          cString("Cuda"),
          DEVICE_ALLOCATOR,
          this.placement.deviceId ?? 0,
          MEM_TYPE_DEFAULT,
          out,
        ),
    );
    const handle = api.create(
      "CreateAllocator",
      (out) => api.fn.CreateAllocator.call(this.#session, memoryInfo, out),
    );
    this.#allocator = { handle, memoryInfo, where: placementName(this.placement) };
    return this.#allocator;
  }

  /** Ends profiling (when enabled with `profilePrefix`) and returns the profile's file name. */
  endProfiling(): string {
    const api = this.api;
    const allocator = api.create(
      "GetAllocatorWithDefaultOptions",
      (out) => api.fn.GetAllocatorWithDefaultOptions.call(out),
    );
    const file = api.create(
      "SessionEndProfiling",
      (out) => api.fn.SessionEndProfiling.call(this.#session, allocator, out),
    );
    const name = Deno.UnsafePointerView.getCString(file);
    api.check("AllocatorFree", api.fn.AllocatorFree.call(allocator, file));
    return name;
  }

  /** Releases the binding, the allocator and the session; values from the allocator go first. */
  release(): void {
    const { fn } = this.api;
    fn.ReleaseIoBinding.call(this.#binding);
    if (this.#allocator) {
      fn.ReleaseAllocator.call(this.#allocator.handle);
      if (this.#allocator.memoryInfo !== this.api.cpuMemory) {
        fn.ReleaseMemoryInfo.call(this.#allocator.memoryInfo);
      }
    }
    fn.ReleaseSession.call(this.#session);
  }

  #cName(name: string): Uint8Array<ArrayBuffer> {
    let encoded = this.#names.get(name);
    if (!encoded) {
      encoded = cString(name);
      this.#names.set(name, encoded);
    }
    return encoded;
  }
}

/** Applies `options` to native session options, appending the CUDA provider when asked. */
function configure(api: OrtApi, sessionOptions: OrtHandle, options: OrtSessionOptions): void {
  const { fn } = api;
  const arena = options.memoryArena ?? true;
  api.check("SetSessionExecutionMode", fn.SetSessionExecutionMode.call(sessionOptions, SEQUENTIAL));
  api.check(
    "SetSessionGraphOptimizationLevel",
    fn.SetSessionGraphOptimizationLevel.call(
      sessionOptions,
      OPTIMIZATION_LEVEL[options.optimization ?? "all"],
    ),
  );
  api.check(
    "SetIntraOpNumThreads",
    fn.SetIntraOpNumThreads.call(sessionOptions, options.threads ?? navigator.hardwareConcurrency),
  );
  if (arena) {
    api.check("EnableCpuMemArena", fn.EnableCpuMemArena.call(sessionOptions));
    api.check("EnableMemPattern", fn.EnableMemPattern.call(sessionOptions));
  } else {
    api.check("DisableCpuMemArena", fn.DisableCpuMemArena.call(sessionOptions));
    api.check("DisableMemPattern", fn.DisableMemPattern.call(sessionOptions));
  }
  if (options.profilePrefix !== undefined) {
    api.check(
      "EnableProfiling",
      fn.EnableProfiling.call(sessionOptions, cString(options.profilePrefix)),
    );
  }
  if (options.device === "cuda") appendCuda(api, sessionOptions, options, arena);
}

/** Appends the CUDA execution provider with its V2 options. */
function appendCuda(
  api: OrtApi,
  sessionOptions: OrtHandle,
  options: OrtSessionOptions,
  arena: boolean,
): void {
  prepareCuda(api.libraryDir, api.version);
  const settings: Record<string, string> = {
    device_id: String(options.deviceId ?? 0),
    cudnn_conv_algo_search: (options.cudnnConvAlgoSearch ?? "exhaustive").toUpperCase(),
    do_copy_in_default_stream: "1",
    use_tf32: options.tf32 ? "1" : "0",
    arena_extend_strategy: arena ? "kNextPowerOfTwo" : "kSameAsRequested",
  };
  const keys = Object.keys(settings).map(cString);
  const values = Object.values(settings).map(cString);
  const cuda = api.create(
    "CreateCUDAProviderOptions",
    (out) => api.fn.CreateCUDAProviderOptions.call(out),
  );
  try {
    api.check(
      "UpdateCUDAProviderOptions",
      api.fn.UpdateCUDAProviderOptions.call(
        cuda,
        pointerArray(keys),
        pointerArray(values),
        BigInt(keys.length),
      ),
    );
    api.check(
      "SessionOptionsAppendExecutionProvider_CUDA_V2",
      api.fn.SessionOptionsAppendExecutionProvider_CUDA_V2.call(sessionOptions, cuda),
    );
  } finally {
    api.fn.ReleaseCUDAProviderOptions.call(cuda);
  }
}

/** A `const char* const*` array over C strings (which the caller keeps alive). */
function pointerArray(strings: readonly Uint8Array<ArrayBuffer>[]): BigUint64Array<ArrayBuffer> {
  return BigUint64Array.from(
    strings,
    (s) => BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(s))),
  );
}

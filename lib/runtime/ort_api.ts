/**
 * onnxruntime's C API through `Deno.dlopen`: loads the core library that onnxruntime-node ships,
 * reads the functions this toolkit calls from the `OrtApi` table, and turns every failed call's
 * `OrtStatus` into an Error of one sentence.
 *
 * The table is an array of function pointers in the order of `struct OrtApi` in onnxruntime's
 * `onnxruntime_c_api.h`; it only grows at the end, so an index stays valid in later versions.
 * The indices below were checked against the 1.29 header.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { ortBindingDir } from "./session.ts";

/** The C API version this table was checked against (onnxruntime 1.29). */
export const ORT_API_VERSION = 29;

/** A native object handed out by onnxruntime (a session, an OrtValue, an allocator, ...). */
export type OrtHandle = Deno.PointerObject;

/** One entry of the OrtApi table: its index and its C signature. */
interface OrtFunctionSpec extends Deno.ForeignFunction {
  readonly index: number;
}

/** The functions this toolkit calls; `OrtStatus*` results are `pointer` (null on success). */
const ORT_FUNCTIONS = {
  CreateStatus: { index: 0, parameters: ["i32", "buffer"], result: "pointer" },
  GetErrorCode: { index: 1, parameters: ["pointer"], result: "i32" },
  GetErrorMessage: { index: 2, parameters: ["pointer"], result: "pointer" },
  CreateEnv: { index: 3, parameters: ["i32", "buffer", "buffer"], result: "pointer" },
  CreateSessionFromArray: {
    index: 8,
    parameters: ["pointer", "buffer", "usize", "pointer", "buffer"],
    result: "pointer",
    nonblocking: true,
  },
  CreateSessionOptions: { index: 10, parameters: ["buffer"], result: "pointer" },
  SetSessionExecutionMode: { index: 13, parameters: ["pointer", "i32"], result: "pointer" },
  EnableProfiling: { index: 14, parameters: ["pointer", "buffer"], result: "pointer" },
  EnableMemPattern: { index: 16, parameters: ["pointer"], result: "pointer" },
  DisableMemPattern: { index: 17, parameters: ["pointer"], result: "pointer" },
  EnableCpuMemArena: { index: 18, parameters: ["pointer"], result: "pointer" },
  DisableCpuMemArena: { index: 19, parameters: ["pointer"], result: "pointer" },
  SetSessionGraphOptimizationLevel: {
    index: 23,
    parameters: ["pointer", "i32"],
    result: "pointer",
  },
  SetIntraOpNumThreads: { index: 24, parameters: ["pointer", "i32"], result: "pointer" },
  CreateTensorWithDataAsOrtValue: {
    index: 49,
    parameters: ["pointer", "pointer", "usize", "buffer", "usize", "i32", "buffer"],
    result: "pointer",
  },
  CreateMemoryInfo: {
    index: 68,
    parameters: ["buffer", "i32", "i32", "i32", "buffer"],
    result: "pointer",
  },
  CreateCpuMemoryInfo: { index: 69, parameters: ["i32", "i32", "buffer"], result: "pointer" },
  AllocatorAlloc: { index: 75, parameters: ["pointer", "usize", "buffer"], result: "pointer" },
  AllocatorFree: { index: 76, parameters: ["pointer", "pointer"], result: "pointer" },
  GetAllocatorWithDefaultOptions: { index: 78, parameters: ["buffer"], result: "pointer" },
  ReleaseStatus: { index: 93, parameters: ["pointer"], result: "void" },
  ReleaseMemoryInfo: { index: 94, parameters: ["pointer"], result: "void" },
  ReleaseSession: { index: 95, parameters: ["pointer"], result: "void" },
  ReleaseValue: { index: 96, parameters: ["pointer"], result: "void" },
  ReleaseSessionOptions: { index: 100, parameters: ["pointer"], result: "void" },
  SessionEndProfiling: {
    index: 110,
    parameters: ["pointer", "pointer", "buffer"],
    result: "pointer",
  },
  CreateAllocator: { index: 131, parameters: ["pointer", "pointer", "buffer"], result: "pointer" },
  ReleaseAllocator: { index: 132, parameters: ["pointer"], result: "void" },
  RunWithBinding: {
    index: 133,
    parameters: ["pointer", "pointer", "pointer"],
    result: "pointer",
    nonblocking: true,
  },
  CreateIoBinding: { index: 134, parameters: ["pointer", "buffer"], result: "pointer" },
  ReleaseIoBinding: { index: 135, parameters: ["pointer"], result: "void" },
  BindInput: { index: 136, parameters: ["pointer", "buffer", "pointer"], result: "pointer" },
  BindOutput: { index: 137, parameters: ["pointer", "buffer", "pointer"], result: "pointer" },
  SessionOptionsAppendExecutionProvider_CUDA_V2: {
    index: 204,
    parameters: ["pointer", "pointer"],
    result: "pointer",
  },
  CreateCUDAProviderOptions: { index: 205, parameters: ["buffer"], result: "pointer" },
  UpdateCUDAProviderOptions: {
    index: 206,
    parameters: ["pointer", "buffer", "buffer", "usize"],
    result: "pointer",
  },
  ReleaseCUDAProviderOptions: { index: 208, parameters: ["pointer"], result: "void" },
} as const satisfies Record<string, OrtFunctionSpec>;

type OrtFunctions = {
  readonly [K in keyof typeof ORT_FUNCTIONS]: Deno.UnsafeFnPointer<
    Omit<(typeof ORT_FUNCTIONS)[K], "index">
  >;
};

/** `OrtLoggingLevel`: warnings and errors only. */
const LOGGING_LEVEL_WARNING = 2;

/** `OrtAllocatorType` of plain (non-arena) device memory, for `OrtMemoryInfo`s. */
export const DEVICE_ALLOCATOR = 0;
/** `OrtMemType` of a device's default memory, for `OrtMemoryInfo`s. */
export const MEM_TYPE_DEFAULT = 0;

/** Path of the onnxruntime core library that onnxruntime-node ships. */
export function ortCoreLibraryPath(): string {
  return join(ortBindingDir(), "libonnxruntime.so.1");
}

/** A NUL-terminated UTF-8 copy of `text`, for `const char*` parameters. */
export function cString(text: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(`${text}\0`);
}

/** The loaded C API: its function table, the process's OrtEnv and the CPU memory info. */
export class OrtApi {
  /** Path of the core library. */
  readonly libraryPath: string;
  /** Folder of the core library, where onnxruntime looks for provider libraries. */
  readonly libraryDir: string;
  /** onnxruntime's version, e.g. `1.29.0`. */
  readonly version: string;
  /** The functions, callable with `.call(...)` (`nonblocking` ones return a Promise). */
  readonly fn: OrtFunctions;
  /** The OrtEnv every session of this process is created in. */
  readonly env: OrtHandle;
  /** `OrtMemoryInfo` of plain CPU memory (for tensors over host arrays). */
  readonly cpuMemory: OrtHandle;
  /** The open library, held so that it stays loaded while the table is in use. */
  readonly #library: Deno.DynamicLibrary<Record<string, Deno.ForeignFunction>>;

  private constructor(
    library: Deno.DynamicLibrary<Record<string, Deno.ForeignFunction>>,
    libraryPath: string,
    version: string,
    fn: OrtFunctions,
  ) {
    this.#library = library;
    this.libraryPath = libraryPath;
    this.libraryDir = dirname(libraryPath);
    this.version = version;
    this.fn = fn;
    this.env = this.create(
      "CreateEnv",
      (out) => fn.CreateEnv.call(LOGGING_LEVEL_WARNING, cString("ibot"), out),
    );
    this.cpuMemory = this.create(
      "CreateCpuMemoryInfo",
      (out) => fn.CreateCpuMemoryInfo.call(DEVICE_ALLOCATOR, MEM_TYPE_DEFAULT, out),
    );
  }

  /**
   * Opens the core library at `path` (default: onnxruntime-node's) and reads the function table;
   * throws one sentence naming the path when it is missing, cannot load or is too old.
   */
  static load(path: string = ortCoreLibraryPath()): OrtApi {
    let library;
    try {
      library = Deno.dlopen(path, { OrtGetApiBase: { parameters: [], result: "pointer" } });
    } catch (error) {
      throw new Error(
        `cannot load the onnxruntime core library ${path} (${
          oneLine(error)
        }); run "deno install" ` +
          `so that node_modules holds onnxruntime-node, or give the path of its libonnxruntime.so.1`,
      );
    }
    const base = new Deno.UnsafePointerView(library.symbols.OrtGetApiBase()!);
    const getApi = new Deno.UnsafeFnPointer(base.getPointer(0)!, {
      parameters: ["u32"],
      result: "pointer",
    });
    const getVersion = new Deno.UnsafeFnPointer(base.getPointer(8)!, {
      parameters: [],
      result: "pointer",
    });
    const version = Deno.UnsafePointerView.getCString(getVersion.call()!);
    const table = getApi.call(ORT_API_VERSION);
    if (table === null) {
      library.close();
      throw new Error(
        `the onnxruntime core library ${path} is version ${version}, which lacks C API version ` +
          `${ORT_API_VERSION}; use onnxruntime 1.${ORT_API_VERSION} or later`,
      );
    }
    const view = new Deno.UnsafePointerView(table);
    const entries = Object.entries(ORT_FUNCTIONS).map(([name, { index, ...signature }]) => {
      const pointer = view.getPointer(index * 8);
      if (pointer === null) throw new Error(`onnxruntime ${version} has no ${name} in its C API`);
      return [name, new Deno.UnsafeFnPointer(pointer as Deno.PointerObject<never>, signature)];
    });
    return new OrtApi(library, path, version, Object.fromEntries(entries) as OrtFunctions);
  }

  /**
   * Throws when `status` reports a failure: one sentence naming `call` and onnxruntime's
   * message. Releases the status.
   */
  check(call: string, status: Deno.PointerValue): void {
    const message = this.failure(status);
    if (message !== undefined) throw new Error(`onnxruntime's ${call} failed: ${message}`);
  }

  /**
   * onnxruntime's message in `status` on one line (undefined on success), for callers that word
   * the error themselves. Releases the status.
   */
  failure(status: Deno.PointerValue): string | undefined {
    if (status === null) return undefined;
    const message = Deno.UnsafePointerView.getCString(this.fn.GetErrorMessage.call(status)!);
    this.fn.ReleaseStatus.call(status);
    return oneLine(message);
  }

  /**
   * Runs a C call whose last parameter receives a new object (`OrtXxx** out`), checks its status
   * and returns the object.
   */
  create(call: string, run: (out: BigUint64Array<ArrayBuffer>) => Deno.PointerValue): OrtHandle {
    const out = new BigUint64Array(1);
    this.check(call, run(out));
    return outPointer(call, out);
  }

  /** {@link create} for a nonblocking call. */
  async createAsync(
    call: string,
    run: (out: BigUint64Array<ArrayBuffer>) => Promise<Deno.PointerValue>,
  ): Promise<OrtHandle> {
    const out = new BigUint64Array(1);
    this.check(call, await run(out));
    return outPointer(call, out);
  }
}

function outPointer(call: string, out: BigUint64Array): OrtHandle {
  const pointer = Deno.UnsafePointer.create(out[0]);
  if (pointer === null) throw new Error(`onnxruntime's ${call} returned no object`);
  return pointer;
}

/** An error's message on one line, without a final full stop. */
function oneLine(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.replace(/\s+/g, " ").trim().replace(/\.$/, "");
}

const loaded = new Map<string, OrtApi>();

/** The C API of the core library at `path` (default: onnxruntime-node's), loaded once. */
export function ortApi(path: string = ortCoreLibraryPath()): OrtApi {
  let api = loaded.get(path);
  if (!api) {
    api = OrtApi.load(path);
    loaded.set(path, api);
  }
  return api;
}

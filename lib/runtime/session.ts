/**
 * Running graphs: compile a {@link Graph} into an onnxruntime-node session on the chosen execution
 * providers and run it with preallocated output buffers.
 *
 * @module
 */

import * as ort from "onnxruntime-node";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { encodeOnnxModel, type OnnxWriteOptions } from "../graph/onnx.ts";
import type { Graph, TensorData, ValueSpec } from "../graph/graph.ts";
import { formatShape, shapeSize } from "../graph/tensor.ts";
import { prepareCuda } from "./cuda_libraries.ts";

/** Execution providers this toolkit can ask onnxruntime for. */
export type ExecutionProvider = "cpu" | "cuda";

/** How to compile a graph. */
export interface CompileOptions {
  /**
   * Providers in order of preference (default `["cpu"]`). `cuda` needs its provider libraries
   * (`deno task enable-cuda`) and the CUDA libraries, which {@link prepareCuda} checks and loads.
   */
  readonly executionProviders?: readonly ExecutionProvider[];
  /** Intra-op threads (default: the number of logical cores). */
  readonly threads?: number;
  /** onnxruntime graph optimization level (default `all`). */
  readonly optimizationLevel?: "disabled" | "basic" | "extended" | "all";
  /** Parameter values baked in as initializers instead of being fed each run. */
  readonly initializers?: OnnxWriteOptions["initializers"];
  /** Write an onnxruntime profile (JSON) with this file prefix. */
  readonly profilePrefix?: string;
  /**
   * Keep onnxruntime's memory arena and memory pattern (default true): intermediate buffers stay
   * allocated between runs, which speeds up small graphs that run often. A large training step
   * then holds about twice its peak (the arena of the first run plus the pattern's block from the
   * second on); with false it allocates and frees each buffer and holds its peak once.
   */
  readonly memoryArena?: boolean;
}

/** Run feeds by input name: a typed array matching the input's dtype and element count. */
export type Feeds = Readonly<Record<string, TensorData>>;

/** Outputs by name. The arrays are reused by the next run: copy what must outlive it. */
export type Outputs = Readonly<Record<string, TensorData>>;

const ORT_TYPE = {
  float32: "float32",
  float64: "float64",
  int64: "int64",
  bool: "bool",
  float16: "float16",
} as const;

/** A graph compiled into an onnxruntime session, with one preallocated buffer per output. */
export class CompiledGraph {
  readonly #session: ort.InferenceSession;
  readonly #inputs: ReadonlyMap<string, ValueSpec>;
  readonly #fetches: Record<string, ort.Tensor>;
  readonly #outputs: Record<string, TensorData>;

  private constructor(
    session: ort.InferenceSession,
    inputs: ValueSpec[],
    outputs: readonly ValueSpec[],
  ) {
    this.#session = session;
    this.#inputs = new Map(inputs.map((v) => [v.name, v]));
    this.#fetches = {};
    this.#outputs = {};
    for (const o of outputs) {
      const data = allocate(o);
      this.#outputs[o.name] = data;
      this.#fetches[o.name] = new ort.Tensor(ORT_TYPE[o.dtype], data as never, [...o.shape]);
    }
  }

  /** Compiles `graph`: writes its ONNX bytes and creates the onnxruntime session. */
  static async create(graph: Graph, options: CompileOptions = {}): Promise<CompiledGraph> {
    const providers = options.executionProviders ?? ["cpu"];
    if (providers.includes("cuda")) prepareCuda(ortBindingDir(), ort.env.versions.common);
    const { model } = encodeOnnxModel(graph, { initializers: options.initializers });
    const baked = new Set(
      options.initializers instanceof Map
        ? options.initializers.keys()
        : Object.keys(options.initializers ?? {}),
    );
    const session = await ort.InferenceSession.create(model, {
      executionProviders: [...providers],
      graphOptimizationLevel: options.optimizationLevel ?? "all",
      executionMode: "sequential",
      intraOpNumThreads: options.threads ?? navigator.hardwareConcurrency,
      enableCpuMemArena: options.memoryArena ?? true,
      enableMemPattern: options.memoryArena ?? true,
      enableProfiling: options.profilePrefix !== undefined,
      profileFilePrefix: options.profilePrefix,
    });
    const inputs = [...graph.params.filter((p) => !baked.has(p.name)), ...graph.inputs];
    return new CompiledGraph(session, inputs, graph.outputs);
  }

  /** Names of the values each run must be fed (unbaked parameters, then inputs). */
  get inputNames(): string[] {
    return [...this.#inputs.keys()];
  }

  /**
   * Runs the graph once. Every input must be fed with the right dtype and element count; a
   * mismatch throws naming the input. Returns the preallocated output arrays.
   */
  async run(feeds: Feeds): Promise<Outputs> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [name, spec] of this.#inputs) {
      const data = feeds[name];
      if (!data) throw new Error(`run: no value fed for input ${name}${formatShape(spec.shape)}`);
      const expected = shapeSize(spec.shape);
      if (data.length !== expected || !matchesDType(data, spec.dtype)) {
        throw new Error(
          `run: input ${name} expects ${expected} ${spec.dtype} values (shape ${
            formatShape(spec.shape)
          }), got ${data.length} in a ${data.constructor.name}`,
        );
      }
      ortFeeds[name] = new ort.Tensor(ORT_TYPE[spec.dtype], data as never, [...spec.shape]);
    }
    for (const name of Object.keys(feeds)) {
      if (!this.#inputs.has(name)) throw new Error(`run: the graph has no input named ${name}`);
    }
    await this.#session.run(ortFeeds, this.#fetches);
    return this.#outputs;
  }

  /** Ends profiling (when enabled with `profilePrefix`); onnxruntime writes the JSON profile. */
  endProfiling(): void {
    this.#session.endProfiling();
  }

  /** Releases the native session. */
  async release(): Promise<void> {
    await this.#session.release();
  }
}

function allocate(v: ValueSpec): TensorData {
  const n = shapeSize(v.shape);
  switch (v.dtype) {
    case "float32":
      return new Float32Array(n);
    case "float64":
      return new Float64Array(n);
    case "int64":
      return new BigInt64Array(n);
    case "bool":
      return new Uint8Array(n);
    case "float16":
      return new Uint16Array(n);
  }
}

function matchesDType(data: TensorData, dtype: ValueSpec["dtype"]): boolean {
  switch (dtype) {
    case "float32":
      return data instanceof Float32Array;
    case "float64":
      return data instanceof Float64Array;
    case "int64":
      return data instanceof BigInt64Array;
    case "bool":
      return data instanceof Uint8Array;
    case "float16":
      return data instanceof Uint16Array;
  }
}

/** Folder of onnxruntime-node's native binding, where CUDA provider libraries must be placed. */
export function ortBindingDir(): string {
  const entry = createRequire(import.meta.url).resolve("onnxruntime-node");
  return join(dirname(entry), "..", "bin", "napi-v6", "linux", "x64");
}

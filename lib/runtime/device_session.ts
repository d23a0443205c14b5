/**
 * Running graphs through onnxruntime's C API with IoBinding, on the CPU or on CUDA: host feeds are
 * bound without copies, inputs held in a {@link ResidentState} are bound from its device buffers,
 * `<name>.next` outputs are written into the state's other buffers, and the remaining outputs
 * (statistics) land in preallocated host arrays. Per step only the feeds go to the device and
 * only those outputs come back.
 *
 * @module
 */

import { hasSymbolicDims } from "../graph/dim.ts";
import { encodeOnnxModel } from "../graph/onnx.ts";
import type { Graph, TensorData, ValueSpec } from "../graph/graph.ts";
import { formatShape, shapeSize } from "../graph/tensor.ts";
import { type OrtApi, ortApi, type OrtHandle } from "./ort_api.ts";
import {
  type Device,
  OrtSession,
  type OrtSessionOptions,
  type Placement,
  placementName,
  samePlacement,
} from "./ort_session.ts";
import { hostTensor } from "./ort_value.ts";
import type { ResidentState } from "./resident_state.ts";
import type { Feeds, Outputs } from "./session.ts";
import { nextStateName } from "./store.ts";

export type { Device, Placement };

/** How to compile a graph for {@link DeviceSession}. */
export type DeviceSessionOptions = Omit<OrtSessionOptions, "optimization">;

interface HostValue {
  readonly data: TensorData;
  readonly value: OrtHandle;
}

/**
 * One graph compiled on one device. Several sessions (e.g. step graphs of different sizes) may
 * share one {@link ResidentState}. Runs of one session must not overlap.
 */
export class DeviceSession {
  /** The device it runs on. */
  readonly placement: Placement;
  readonly #api: OrtApi;
  readonly #session: OrtSession;
  readonly #inputs: ReadonlyMap<string, ValueSpec>;
  readonly #outputSpecs: readonly ValueSpec[];
  readonly #feeds = new Map<string, HostValue>();
  readonly #outputs: Record<string, TensorData> = {};
  readonly #outputValues = new Map<string, OrtHandle>();
  #running = false;

  private constructor(api: OrtApi, session: OrtSession, graph: Graph) {
    for (const value of [...graph.inputs, ...graph.outputs]) {
      if (hasSymbolicDims(value.dims)) {
        throw new Error(
          `DeviceSession: ${value.name}${
            formatShape(value.dims)
          } has a symbolic axis; it runs graphs of static shapes only`,
        );
      }
    }
    this.#api = api;
    this.#session = session;
    this.placement = session.placement;
    this.#inputs = new Map([...graph.params, ...graph.inputs].map((v) => [v.name, v]));
    this.#outputSpecs = [...graph.outputs];
  }

  /**
   * Compiles `graph` (static shapes only) on `options.device`. CUDA needs its provider libraries
   * (`deno task enable-cuda`); a missing piece is one sentence.
   */
  static async create(
    graph: Graph,
    options: DeviceSessionOptions = { device: "cpu" },
    api: OrtApi = ortApi(),
  ): Promise<DeviceSession> {
    const { model, externalData } = encodeOnnxModel(graph);
    if (externalData) {
      throw new Error(`graph ${graph.name} is over 2 GiB of ONNX; a DeviceSession cannot load it`);
    }
    const session = await OrtSession.create(api, model, options);
    try {
      return new DeviceSession(api, session, graph);
    } catch (error) {
      session.release();
      throw error;
    }
  }

  /** Names of the graph's inputs (parameters, then data inputs). */
  get inputNames(): string[] {
    return [...this.#inputs.keys()];
  }

  /**
   * Runs the graph once. Inputs that `state` holds come from its current buffers; every other
   * input must be fed (right dtype and element count; a mismatch throws naming the input). An
   * output `<name>.next` for a tensor of `state` goes into its other buffer; the run does not
   * swap (call `state.swap()`). Returns the other outputs in host arrays reused by the next run.
   */
  async run(feeds: Feeds, state?: ResidentState): Promise<Outputs> {
    if (this.#running) throw new Error("run: the previous run of this session has not finished");
    if (state && !samePlacement(state.placement, this.placement)) {
      throw new Error(
        `run: the resident state is on ${placementName(state.placement)} but the session runs ` +
          `on ${placementName(this.placement)}`,
      );
    }
    this.#running = true;
    try {
      for (const name of Object.keys(feeds)) {
        if (!this.#inputs.has(name)) throw new Error(`run: the graph has no input named ${name}`);
        if (state?.has(name)) {
          throw new Error(`run: input ${name} is both fed and resident in the state`);
        }
      }
      for (const [name, spec] of this.#inputs) {
        this.#session.bindInput(
          name,
          state?.has(name) ? state.current(name) : this.#hostFeed(spec, feeds[name]),
        );
      }
      const written: string[] = [];
      for (const spec of this.#outputSpecs) {
        const stateName = updatedStateName(spec.name, state);
        if (state && stateName !== undefined) {
          this.#session.bindOutput(spec.name, state.next(stateName));
          written.push(stateName);
        } else {
          this.#session.bindOutput(spec.name, this.#hostOutput(spec));
        }
      }
      await this.#session.run();
      state?.markWritten(written);
      return this.#outputs;
    } finally {
      this.#running = false;
    }
  }

  /** Ends profiling (when enabled with `profilePrefix`) and returns the profile's file name. */
  endProfiling(): string {
    return this.#session.endProfiling();
  }

  /** Releases the native session and the host-side values. */
  release(): void {
    for (const { value } of this.#feeds.values()) this.#api.fn.ReleaseValue.call(value);
    for (const value of this.#outputValues.values()) this.#api.fn.ReleaseValue.call(value);
    this.#feeds.clear();
    this.#outputValues.clear();
    this.#session.release();
  }

  /** The OrtValue over a host feed, checked against its spec; reused while the array is the same. */
  #hostFeed(spec: ValueSpec, data: TensorData | undefined): OrtHandle {
    if (!data) {
      throw new Error(`run: no value fed for input ${spec.name}${formatShape(spec.shape)}`);
    }
    const cached = this.#feeds.get(spec.name);
    if (cached?.data === data) return cached.value;
    const expected = shapeSize(spec.shape);
    if (data.length !== expected || !matchesDType(data, spec.dtype)) {
      throw new Error(
        `run: input ${spec.name} expects ${expected} ${spec.dtype} values (shape ${
          formatShape(spec.shape)
        }), got ${data.length} in a ${data.constructor.name}`,
      );
    }
    if (cached) this.#api.fn.ReleaseValue.call(cached.value);
    const value = hostTensor(this.#api, data, spec.dtype, spec.shape);
    this.#feeds.set(spec.name, { data, value });
    return value;
  }

  /** The OrtValue over the preallocated host array of an output (created on first use). */
  #hostOutput(spec: ValueSpec): OrtHandle {
    let value = this.#outputValues.get(spec.name);
    if (!value) {
      const data = allocate(spec);
      value = hostTensor(this.#api, data, spec.dtype, spec.shape);
      this.#outputs[spec.name] = data;
      this.#outputValues.set(spec.name, value);
    }
    return value;
  }
}

/** The typed array holding each dtype's values. */
const ARRAY_TYPES = {
  float32: Float32Array,
  float64: Float64Array,
  int64: BigInt64Array,
  bool: Uint8Array,
  float16: Uint16Array,
} as const satisfies Record<ValueSpec["dtype"], unknown>;

/** A zero-filled host array for `spec`. */
function allocate(spec: ValueSpec): TensorData {
  return new ARRAY_TYPES[spec.dtype](shapeSize(spec.shape));
}

/** True when `data` is the typed array of `dtype`. */
function matchesDType(data: TensorData, dtype: ValueSpec["dtype"]): boolean {
  return data instanceof ARRAY_TYPES[dtype];
}

/** The state tensor whose next value `output` carries (`<name>.next`), if it is in `state`. */
function updatedStateName(output: string, state: ResidentState | undefined): string | undefined {
  const name = output.slice(0, output.lastIndexOf("."));
  return state?.has(name) && nextStateName(name) === output ? name : undefined;
}

/**
 * Training state that stays in a device's memory between steps: every tensor of a
 * {@link StateStore} in device buffers, two for each tensor the step updates. A step reads the
 * current buffer and writes its `<name>.next` output into the other one; {@link
 * ResidentState.swap} then makes that one current. State crosses to the host only when asked
 * ({@link ResidentState.download} for a checkpoint, {@link ResidentState.upload} after a change
 * on the host).
 *
 * Copies run a one-node graph (Identity over a flat tensor) on the state's device, with one side
 * bound to the device buffer and the other to the host array: onnxruntime moves the bytes, on
 * the CPU and on CUDA alike. That session's allocator also owns the device buffers.
 *
 * @module
 */

import { Graph } from "../graph/graph.ts";
import { symbolicDim } from "../graph/dim.ts";
import { encodeOnnxModel } from "../graph/onnx.ts";
import { formatShape, sameShape, type Shape } from "../graph/tensor.ts";
import { type OrtApi, ortApi, type OrtHandle } from "./ort_api.ts";
import { OrtSession, type Placement, placementName } from "./ort_session.ts";
import { DeviceTensor, hostTensor } from "./ort_value.ts";
import type { StateStore } from "./store.ts";

interface Entry {
  readonly shape: Shape;
  /** One buffer for a read-only tensor, two for an updated one. */
  readonly buffers: readonly DeviceTensor[];
  /** Index of the current buffer. */
  current: number;
}

/** Named float32 tensors resident on one device, double-buffered where a step updates them. */
export class ResidentState {
  /** The device holding the tensors. */
  readonly placement: Placement;
  readonly #api: OrtApi;
  readonly #copier: OrtSession;
  readonly #entries: Map<string, Entry>;
  readonly #written = new Set<string>();
  #copying = false;

  private constructor(
    api: OrtApi,
    placement: Placement,
    copier: OrtSession,
    entries: Map<string, Entry>,
  ) {
    this.#api = api;
    this.placement = placement;
    this.#copier = copier;
    this.#entries = entries;
  }

  /**
   * Allocates device buffers for every tensor of `store` (two for each name in `updated`) and
   * uploads the store's values. Throws one sentence when an updated name is not in the store or
   * a buffer cannot be allocated.
   */
  static async create(
    store: StateStore,
    updated: readonly string[],
    placement: Placement = { device: "cpu" },
    api: OrtApi = ortApi(),
  ): Promise<ResidentState> {
    const missing = updated.filter((name) => !store.has(name));
    if (missing.length > 0) {
      throw new Error(`the updated state tensors ${missing.join(", ")} are not in the state store`);
    }
    const twice = new Set(updated);
    const copier = await OrtSession.create(api, copyModel(), {
      ...placement,
      threads: 1,
      memoryArena: false,
      optimization: "disabled",
    });
    const entries = new Map<string, Entry>();
    try {
      const allocator = copier.allocator();
      for (const name of store.names()) {
        const shape = store.shape(name);
        const buffers = [DeviceTensor.allocate(api, allocator, name, shape)];
        entries.set(name, { shape, buffers, current: 0 });
        if (twice.has(name)) buffers.push(DeviceTensor.allocate(api, allocator, name, shape));
      }
    } catch (error) {
      for (const entry of entries.values()) entry.buffers.forEach((b) => b.release());
      copier.release();
      throw error;
    }
    const state = new ResidentState(api, placement, copier, entries);
    try {
      await state.upload(store);
    } catch (error) {
      state.release();
      throw error;
    }
    return state;
  }

  /** Names of the resident tensors, in the store's order. */
  names(): string[] {
    return [...this.#entries.keys()];
  }

  /** True when `name` is resident. */
  has(name: string): boolean {
    return this.#entries.has(name);
  }

  /** True when `name` has a second buffer for its next value. */
  isUpdated(name: string): boolean {
    return this.#entry(name).buffers.length === 2;
  }

  /** The shape of `name`. */
  shape(name: string): Shape {
    return this.#entry(name).shape;
  }

  /** The OrtValue holding `name`'s current value (to bind as a graph input). */
  current(name: string): OrtHandle {
    const entry = this.#entry(name);
    return entry.buffers[entry.current].value;
  }

  /**
   * The OrtValue that `name`'s next value is written into (to bind to the graph output
   * `<name>.next`); throws for a tensor created read-only.
   */
  next(name: string): OrtHandle {
    const entry = this.#entry(name);
    if (entry.buffers.length === 1) {
      throw new Error(
        `state tensor ${name} is resident read-only (not in the updated names), so a graph ` +
          `cannot write its next value`,
      );
    }
    return entry.buffers[1 - entry.current].value;
  }

  /** Records that a run wrote the next values of `names` (called by the session that ran). */
  markWritten(names: Iterable<string>): void {
    for (const name of names) this.#written.add(name);
  }

  /**
   * Makes the next values written since the last swap current: each such tensor's two buffers
   * change roles. Tensors no run wrote keep their current buffer.
   */
  swap(): void {
    for (const name of this.#written) {
      const entry = this.#entry(name);
      entry.current = 1 - entry.current;
    }
    this.#written.clear();
  }

  /**
   * Copies the current values of `names` (default: all) into `store`'s arrays, which must exist
   * with the same shapes (e.g. to save a checkpoint).
   */
  async download(store: StateStore, names: readonly string[] = this.names()): Promise<void> {
    await this.#copyAll(store, names, (device, host) => [device, host]);
  }

  /**
   * Copies `names` (default: all) from `store` into the current buffers, after the host changed
   * them (e.g. a checkpoint was loaded).
   */
  async upload(store: StateStore, names: readonly string[] = this.names()): Promise<void> {
    await this.#copyAll(store, names, (device, host) => [host, device]);
  }

  /** Releases the device buffers and the copy session. */
  release(): void {
    for (const entry of this.#entries.values()) entry.buffers.forEach((b) => b.release());
    this.#entries.clear();
    this.#copier.release();
  }

  async #copyAll(
    store: StateStore,
    names: readonly string[],
    direction: (device: OrtHandle, host: OrtHandle) => [OrtHandle, OrtHandle],
  ): Promise<void> {
    if (this.#copying) throw new Error("the resident state is already copying; await that first");
    this.#copying = true;
    try {
      for (const name of names) {
        const entry = this.#entry(name);
        const data = store.get(name);
        if (!sameShape(store.shape(name), entry.shape)) {
          throw new Error(
            `cannot copy state tensor ${name}: the store holds ${
              formatShape(store.shape(name))
            }, the ${placementName(this.placement)} buffer ${formatShape(entry.shape)}`,
          );
        }
        const host = hostTensor(this.#api, data, "float32", [data.length]);
        try {
          const [from, to] = direction(entry.buffers[entry.current].flat, host);
          this.#copier.bindInput("x", from);
          this.#copier.bindOutput("y", to);
          await this.#copier.run();
        } finally {
          this.#api.fn.ReleaseValue.call(host);
        }
      }
    } finally {
      this.#copying = false;
    }
  }

  #entry(name: string): Entry {
    const entry = this.#entries.get(name);
    if (!entry) {
      throw new Error(
        `the resident state on ${placementName(this.placement)} has no tensor named ${name}`,
      );
    }
    return entry;
  }
}

/** The copy graph: `y = Identity(x)` over a float32 vector of any length. */
function copyModel(): Uint8Array {
  const g = new Graph("copy");
  g.output("y", g.input("x", "float32", [symbolicDim("n")]));
  return encodeOnnxModel(g).model;
}

/**
 * The host-side state store: named float32 tensors (parameters, optimizer moments, loss centres)
 * that live between training steps. Checkpoint files (lib/checkpoint) read and write them as
 * {@link NamedTensor} maps.
 *
 * @module
 */

import type { ParamSpec } from "../graph/graph.ts";
import { formatShape, sameShape, type Shape, shapeSize } from "../graph/tensor.ts";
import { initialValues } from "./init.ts";
import { Rng } from "./rng.ts";
import type { NamedTensor } from "./named_tensor.ts";

/** Name of the graph output that carries the next value of state tensor `name`. */
export function nextStateName(name: string): string {
  return `${name}.next`;
}

interface Entry {
  data: Float32Array;
  shape: readonly number[];
}

/** Named float32 tensors, in insertion order. Arrays are held by reference, not copied. */
export class StateStore {
  readonly #entries = new Map<string, Entry>();

  /**
   * A store holding every parameter's initial value. Each parameter draws from a generator
   * forked from `seed` by its name, so adding or reordering parameters leaves the others' values
   * unchanged.
   */
  static fromParams(params: readonly ParamSpec[], seed: number): StateStore {
    const root = new Rng(seed);
    const store = new StateStore();
    for (const p of params) {
      if (p.dtype !== "float32") {
        throw new Error(`parameter ${p.name} is ${p.dtype}; the state store holds float32 only`);
      }
      if (store.has(p.name)) throw new Error(`parameter ${p.name} is declared twice`);
      store.set(p.name, initialValues(p.init, p.shape, root.fork(p.name)), p.shape);
    }
    return store;
  }

  /** A store over named tensors (all must be float32), e.g. a decoded file; arrays are not copied. */
  static fromNamedTensors(tensors: Map<string, NamedTensor>): StateStore {
    const store = new StateStore();
    for (const [name, t] of tensors) {
      if (t.dtype !== "float32" || !(t.data instanceof Float32Array)) {
        throw new Error(`tensor ${name} is ${t.dtype}; the state store holds float32 only`);
      }
      store.set(name, t.data, t.shape);
    }
    return store;
  }

  /** True when a tensor of this name is stored. */
  has(name: string): boolean {
    return this.#entries.has(name);
  }

  /** All names, in insertion order. */
  names(): string[] {
    return [...this.#entries.keys()];
  }

  /** The stored array of `name` (the live buffer, not a copy); throws naming close names. */
  get(name: string): Float32Array {
    return this.#entry(name).data;
  }

  /** The shape of `name`. */
  shape(name: string): Shape {
    return this.#entry(name).shape;
  }

  /** Stores `data` (by reference) as `name` with `shape`, replacing any previous value. */
  set(name: string, data: Float32Array, shape: Shape): void {
    if (data.length !== shapeSize(shape)) {
      throw new Error(
        `cannot set ${name}: shape ${formatShape(shape)} needs ${
          shapeSize(shape)
        } values, got ${data.length}`,
      );
    }
    this.#entries.set(name, { data, shape: [...shape] });
  }

  /**
   * Sets `<prefix>.<name>` to zeros shaped like each `name` (e.g. prefix `exp_avg` for Adam
   * moments), overwriting existing values. Returns the new names.
   */
  zerosLike(prefix: string, names: readonly string[]): string[] {
    return names.map((name) => {
      const shape = this.shape(name);
      const target = `${prefix}.${name}`;
      this.set(target, new Float32Array(shapeSize(shape)), shape);
      return target;
    });
  }

  /**
   * Copies each `name`'s next value, the graph output {@link nextStateName}(name), into the
   * stored buffer: the step's state update.
   */
  commitNext(outputs: Readonly<Record<string, ArrayLike<number>>>, names: readonly string[]): void {
    for (const name of names) {
      const next = outputs[nextStateName(name)];
      if (!next) throw new Error(`the step's outputs have no ${nextStateName(name)}`);
      this.get(name).set(next);
    }
  }

  /** Every tensor as a float32 {@link NamedTensor}, sharing the stored arrays. */
  toNamedTensors(): Map<string, NamedTensor> {
    const out = new Map<string, NamedTensor>();
    for (const [name, { data, shape }] of this.#entries) {
      out.set(name, { dtype: "float32", shape: [...shape], data });
    }
    return out;
  }

  /**
   * Copies values from `other` into this store's existing buffers, for `names` (default: every
   * name in this store). Each name must exist in both stores with the same shape.
   */
  copyFrom(other: StateStore, names: readonly string[] = this.names()): void {
    for (const name of names) {
      const target = this.#entry(name);
      const source = other.#entry(name);
      if (!sameShape(target.shape, source.shape)) {
        throw new Error(
          `cannot copy ${name}: shape ${formatShape(source.shape)} does not match ${
            formatShape(target.shape)
          }`,
        );
      }
      target.data.set(source.data);
    }
  }

  #entry(name: string): Entry {
    const entry = this.#entries.get(name);
    if (entry) return entry;
    const close = closestNames(name, this.names(), 3);
    const hint = close.length > 0 ? `; closest: ${close.join(", ")}` : "; the store is empty";
    throw new Error(`the state store has no tensor named ${name}${hint}`);
  }
}

/** The `count` names nearest to `name` by edit distance. */
function closestNames(name: string, names: string[], count: number): string[] {
  return names
    .map((candidate) => ({ candidate, distance: editDistance(name, candidate) }))
    .sort((x, y) => x.distance - y.distance)
    .slice(0, count)
    .map((x) => x.candidate);
}

/** Levenshtein distance between two strings. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min(previous[j] + 1, current[j - 1] + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length];
}

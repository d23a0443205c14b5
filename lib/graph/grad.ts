/**
 * Reverse-mode automatic differentiation over a {@link Graph}'s tape: appends the backward nodes
 * that compute d(loss)/d(wrt) for the tensors asked for, and nothing else.
 *
 * @module
 */

import type { TapeEntry } from "./graph.ts";
import { add } from "./math.ts";
import { zeros } from "./shape.ts";
import { hasSymbolicDims } from "./dim.ts";
import { formatShape, sameShape, type Tensor } from "./tensor.ts";

/**
 * Gradients of `loss` with respect to each tensor in `wrt`, as new tensors in the same graph.
 *
 * - `loss` must be a float scalar unless `seed` (the upstream gradient, shaped like `loss`) is given.
 * - Only ops on a path from some `wrt` tensor to `loss` are differentiated.
 * - Fan-out is accumulated by addition; broadcasting is undone by each op's rule.
 * - Integer and boolean values carry no gradient; {@link stopGradient} cuts the path.
 * - A `wrt` tensor that `loss` does not depend on gets a zero gradient.
 * - The graph must have static shapes: a graph with symbolic axes is for inference only.
 */
export function grad(loss: Tensor, wrt: readonly Tensor[], seed?: Tensor): Tensor[] {
  const g = loss.graph;
  if (g.isSymbolic) {
    const symbolic = g.inputs.filter((i) => hasSymbolicDims(i.dims));
    g.fail(
      "grad",
      `autodiff needs static shapes, but the graph has symbolic axes (input ${
        symbolic.map((i) => `${i.name}${formatShape(i.dims)}`).join(", ")
      })`,
    );
  }
  if (!loss.isFloat) g.fail("grad", `loss ${loss} is not a floating-point tensor`);
  if (!seed && loss.size !== 1) {
    g.fail("grad", `loss ${loss} is not a scalar; pass a seed gradient of the same shape`);
  }
  if (seed && !sameShape(seed.shape, loss.shape)) {
    g.fail("grad", `seed ${seed} does not match loss ${loss}`);
  }
  const tape = g.tape.slice();
  const dependsOnWrt = forwardReachable(tape, wrt);
  const grads = new Map<string, Tensor>([[
    loss.name,
    seed ?? g.constant([1], loss.dtype, loss.shape),
  ]]);

  return g.scope("grad", () => {
    for (let i = tape.length - 1; i >= 0; i--) {
      const entry = tape[i];
      const outputGrads = entry.outputs.map((t) => grads.get(t.name));
      if (outputGrads.every((t) => t === undefined)) continue;
      if (!entry.inputs.some((t) => t.isFloat && dependsOnWrt.has(t.name))) continue;
      const inputGrads = entry.vjp(outputGrads);
      entry.inputs.forEach((input, k) => {
        const gi = inputGrads[k];
        if (!gi || !input.isFloat || !dependsOnWrt.has(input.name)) return;
        checkGradShape(entry, input, gi);
        const previous = grads.get(input.name);
        grads.set(input.name, previous ? add(previous, gi) : gi);
      });
    }
    return wrt.map((t) => grads.get(t.name) ?? zeros(t));
  });
}

/** Names of the values that depend on some `wrt` tensor through differentiable ops. */
function forwardReachable(tape: readonly TapeEntry[], wrt: readonly Tensor[]): Set<string> {
  const reached = new Set(wrt.map((t) => t.name));
  for (const entry of tape) {
    if (entry.inputs.some((t) => reached.has(t.name))) {
      for (const out of entry.outputs) reached.add(out.name);
    }
  }
  return reached;
}

function checkGradShape(entry: TapeEntry, input: Tensor, gi: Tensor): void {
  if (!sameShape(gi.shape, input.shape) || gi.dtype !== input.dtype) {
    const where = entry.scope ? ` (in scope ${entry.scope})` : "";
    throw new Error(
      `grad: the rule of ${entry.op}${where} returned ${gi.dtype}${
        formatShape(gi.shape)
      } for input ${input}`,
    );
  }
}

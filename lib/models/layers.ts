/**
 * Layers with parameters, declared under the graph's current scope with PyTorch's names
 * (`weight`, `bias`) and the official iBOT initialisation.
 *
 * @module
 */

import { type Graph, type InitRule, staticDim } from "../graph/graph.ts";
import { linear as linearOp } from "../graph/linalg.ts";
import { layerNorm as layerNormOp } from "../graph/nn.ts";
import type { Tensor } from "../graph/tensor.ts";

/** The official Linear weight init: truncated normal, std 0.02, bounds ±2 in value units. */
export const TRUNC_NORMAL_002: InitRule = { kind: "truncNormal", std: 0.02, a: -2, b: 2 };

/** Options of {@link linear}. */
export interface LinearOptions {
  /** Add a bias (default true). */
  readonly bias?: boolean;
  /** Weight init (default {@link TRUNC_NORMAL_002}); the bias starts at zero. */
  readonly init?: InitRule;
}

/**
 * `nn.Linear(in, out)` named `<scope>.<name>`: parameters `weight` [out, in] and `bias` [out].
 * x [..., in] → [..., out].
 */
export function linear(
  g: Graph,
  name: string,
  x: Tensor,
  out: number,
  options: LinearOptions = {},
): Tensor {
  const inFeatures = staticDim("linear", x, -1);
  return g.scope(name, () => {
    const weight = g.param("weight", [out, inFeatures], options.init ?? TRUNC_NORMAL_002);
    const bias = options.bias === false ? undefined : g.param("bias", [out], { kind: "zeros" });
    return linearOp(x, weight, bias);
  });
}

/** `nn.LayerNorm(d, eps)` named `<scope>.<name>` over the last axis: `weight` (ones), `bias` (zeros). */
export function layerNorm(g: Graph, name: string, x: Tensor, eps: number): Tensor {
  const d = staticDim("layerNorm", x, -1);
  return g.scope(
    name,
    () =>
      layerNormOp(
        x,
        g.param("weight", [d], { kind: "ones" }),
        g.param("bias", [d], { kind: "zeros" }),
        eps,
      ),
  );
}

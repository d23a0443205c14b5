/**
 * The iBOT projection head (`models/head.py: iBOTHead`): a 3-layer MLP (GELU) to a bottleneck,
 * L2 normalisation, and a weight-normalised last layer without bias (`weight_g` [K, 1],
 * `weight_v` [K, bottleneck]) for the CLS token; patch tokens go through the same MLP and either
 * the same last layer (shared head) or a separate `last_layer2` with Kp prototypes.
 *
 * The MLP and the last layer are separate functions so that a training step can run the last
 * layer only on the tokens the loss uses.
 *
 * @module
 */

import { type Graph, staticDim } from "../graph/graph.ts";
import { div, maximum, mul } from "../graph/math.ts";
import { gelu } from "../graph/nn.ts";
import { l2Norm } from "../graph/reduce.ts";
import type { Tensor } from "../graph/tensor.ts";
import { linear } from "./layers.ts";
import { linear as linearOp } from "../graph/linalg.ts";

/** Shape of an iBOT head. */
export interface HeadConfig {
  /** K: CLS prototypes (`out_dim`). */
  readonly outDim: number;
  /** Kp: patch prototypes (`patch_out_dim`), used when the head is not shared. */
  readonly patchOutDim: number;
  /** Patch tokens use `last_layer` (true) or a separate `last_layer2` (false). */
  readonly sharedHead: boolean;
  /** MLP hidden width (2048 officially). */
  readonly hiddenDim?: number;
  /** Bottleneck width (256 officially). */
  readonly bottleneckDim?: number;
}

/** Official hidden width of the head MLP. */
export const HEAD_HIDDEN_DIM = 2048;
/** Official bottleneck width of the head MLP. */
export const HEAD_BOTTLENECK_DIM = 256;

/** `F.normalize(x, dim=-1)`: x / max(‖x‖₂, eps) over the last axis. */
export function l2Normalize(x: Tensor, eps = 1e-12): Tensor {
  return div(x, maximum(l2Norm(x, [-1], true), eps));
}

/**
 * The head MLP (`head.mlp.0`, `.2`, `.4`, GELU between) followed by L2 normalisation:
 * x [..., D] → [..., bottleneck], unit rows. Declared under scope `head`.
 */
export function headBottleneck(g: Graph, config: HeadConfig, x: Tensor): Tensor {
  const hidden = config.hiddenDim ?? HEAD_HIDDEN_DIM;
  const bottleneck = config.bottleneckDim ?? HEAD_BOTTLENECK_DIM;
  return g.scope("head", () => {
    const h1 = gelu(linear(g, "mlp.0", x, hidden));
    const h2 = gelu(linear(g, "mlp.2", h1, hidden));
    return l2Normalize(linear(g, "mlp.4", h2, bottleneck));
  });
}

/**
 * A weight-normalised last layer `head.<name>` without bias: W[k] = g[k]·v[k]/‖v[k]‖, applied
 * to x [..., bottleneck] → [..., K]. `weight_v` starts at PyTorch's Linear default
 * (U(±1/√bottleneck)), `weight_g` at 1.
 */
export function weightNormLinear(g: Graph, name: string, x: Tensor, outDim: number): Tensor {
  const bottleneck = staticDim("weightNormLinear", x, -1);
  return g.scope(`head.${name}`, () => {
    const gain = g.param("weight_g", [outDim, 1], { kind: "ones" });
    const direction = g.param("weight_v", [outDim, bottleneck], {
      kind: "torchDefault",
      fanIn: bottleneck,
    });
    const weight = mul(direction, div(gain, l2Norm(direction, [1], true)));
    return linearOp(x, weight);
  });
}

/** The CLS last layer: `head.last_layer`, K outputs. */
export function clsLastLayer(g: Graph, config: HeadConfig, x: Tensor): Tensor {
  return weightNormLinear(g, "last_layer", x, config.outDim);
}

/** The patch last layer: `head.last_layer` when shared, else `head.last_layer2` with Kp outputs. */
export function patchLastLayer(g: Graph, config: HeadConfig, x: Tensor): Tensor {
  return config.sharedHead
    ? weightNormLinear(g, "last_layer", x, config.outDim)
    : weightNormLinear(g, "last_layer2", x, config.patchOutDim);
}

/** Number of prototypes of the patch head: K when shared, else Kp. */
export function patchPrototypes(config: HeadConfig): number {
  return config.sharedHead ? config.outDim : config.patchOutDim;
}

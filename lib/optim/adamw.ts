/**
 * In-graph AdamW with PyTorch semantics (`torch.optim.AdamW`, amsgrad off): decoupled weight
 * decay p ← p·(1 − lr·wd), then the Adam step with bias correction,
 * p ← p − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + eps).
 *
 * The learning rate, weight decay and step number are scalar graph inputs, so one compiled graph
 * serves a whole schedule. Moments are graph inputs too; the updated values are outputs.
 *
 * @module
 */

import type { Graph } from "../graph/graph.ts";
import { add, div, mul, pow, sqrt, sub } from "../graph/math.ts";
import type { Tensor } from "../graph/tensor.ts";
import { nextStateName, type StateStore } from "../runtime/store.ts";

/** AdamW hyper-parameters that are fixed for a run (PyTorch defaults). */
export interface AdamWConfig {
  /** Decay of the first moment (0.9). */
  readonly beta1?: number;
  /** Decay of the second moment (0.999). */
  readonly beta2?: number;
  /** Added to the denominator (1e-8). */
  readonly eps?: number;
}

/** The per-step scalar inputs of AdamW, each a float32 scalar. */
export interface AdamWScalars {
  /** Learning rate of this step. */
  readonly lr: Tensor;
  /** Weight decay of this step (applied to the parameters marked `decay`). */
  readonly weightDecay: Tensor;
  /** Step number t, counting from 1. */
  readonly step: Tensor;
}

/** Graph input names of the AdamW scalars. */
export const ADAMW_SCALAR_INPUTS = { lr: "lr", weightDecay: "weight_decay", step: "step" } as const;

/** Declares the scalar inputs `lr`, `weight_decay` and `step`. */
export function adamwScalars(g: Graph): AdamWScalars {
  return {
    lr: g.input(ADAMW_SCALAR_INPUTS.lr, "float32", []),
    weightDecay: g.input(ADAMW_SCALAR_INPUTS.weightDecay, "float32", []),
    step: g.input(ADAMW_SCALAR_INPUTS.step, "float32", []),
  };
}

/** Name of the first-moment state of a parameter (PyTorch's `exp_avg`). */
export function expAvgName(param: string): string {
  return `exp_avg.${param}`;
}

/** Name of the second-moment state of a parameter (PyTorch's `exp_avg_sq`). */
export function expAvgSqName(param: string): string {
  return `exp_avg_sq.${param}`;
}

/**
 * Adds zero AdamW moments (`exp_avg.<name>`, `exp_avg_sq.<name>`) for each parameter to the store
 * and returns the names of all the state the step updates: the parameters and their moments.
 */
export function addAdamWMoments(store: StateStore, params: readonly string[]): string[] {
  return [
    ...params,
    ...store.zerosLike("exp_avg", params),
    ...store.zerosLike("exp_avg_sq", params),
  ];
}

/** One parameter to update: its tensor, its gradient, and whether weight decay applies. */
export interface AdamWTarget {
  /** The parameter (a graph parameter of the state). */
  readonly param: Tensor;
  /** Its gradient, same shape. */
  readonly grad: Tensor;
  /** Whether the decoupled weight decay applies (the official group 0). */
  readonly decay: boolean;
  /**
   * For parameters that can be frozen for a while (iBOT's last layer): a scalar 0/1 input that
   * turns the whole update (parameter, decay and moments) on or off, and the parameter's own
   * step count (PyTorch counts steps per parameter, and a frozen parameter does not step).
   */
  readonly gate?: { readonly active: Tensor; readonly step: Tensor };
}

/**
 * Appends the AdamW update of every target: declares the moment inputs (`exp_avg.<name>`,
 * `exp_avg_sq.<name>`) and writes outputs `<name>.next`, `exp_avg.<name>.next` and
 * `exp_avg_sq.<name>.next`. Returns the updated parameter tensors by name (for an EMA teacher).
 */
export function applyAdamW(
  g: Graph,
  targets: readonly AdamWTarget[],
  scalars: AdamWScalars,
  config: AdamWConfig = {},
): Map<string, Tensor> {
  const { beta1 = 0.9, beta2 = 0.999, eps = 1e-8 } = config;
  const next = new Map<string, Tensor>();
  g.scope("adamw", () => {
    const corrections = new Map<Tensor, { stepSize: Tensor; correction2: Tensor }>();
    const correctionsFor = (step: Tensor) => {
      let c = corrections.get(step);
      if (!c) {
        c = {
          stepSize: div(scalars.lr, sub(1, pow(g.scalar(beta1), step))),
          correction2: sqrt(sub(1, pow(g.scalar(beta2), step))),
        };
        corrections.set(step, c);
      }
      return c;
    };
    const decayFactor = sub(1, mul(scalars.lr, scalars.weightDecay));
    for (const { param, grad, decay, gate } of targets) {
      const { stepSize, correction2 } = correctionsFor(gate?.step ?? scalars.step);
      const m = g.input(expAvgName(param.name), "float32", param.shape);
      const v = g.input(expAvgSqName(param.name), "float32", param.shape);
      const m1 = add(mul(m, beta1), mul(grad, 1 - beta1));
      const v1 = add(mul(v, beta2), mul(mul(grad, grad), 1 - beta2));
      const denominator = add(div(sqrt(v1), correction2), eps);
      const decayed = decay ? mul(param, decayFactor) : param;
      const updated = sub(decayed, mul(div(m1, denominator), stepSize));
      const gated = (before: Tensor, after: Tensor) =>
        gate ? add(before, mul(sub(after, before), gate.active)) : after;
      next.set(param.name, gated(param, updated));
      g.output(nextStateName(param.name), next.get(param.name)!);
      g.output(nextStateName(m.name), gated(m, m1));
      g.output(nextStateName(v.name), gated(v, v1));
    }
  });
  return next;
}

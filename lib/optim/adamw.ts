/**
 * In-graph AdamW with PyTorch semantics (`torch.optim.AdamW`, amsgrad off): decoupled weight
 * decay p ← p·(1 − lr·wd), then the Adam step with bias correction,
 * p ← p − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + eps).
 *
 * The per-step scalars are graph inputs, so one compiled graph serves a whole schedule. They are
 * the factors PyTorch derives in double precision from the learning rate, the weight decay and
 * the step count t — `1 − lr·wd`, `lr/(1 − β₁ᵗ)` and `√(1 − β₂ᵗ)` — computed here on the host in
 * float64 ({@link adamwScalarValues}) and fed as float32, so that updates agree with PyTorch's to
 * float32 rounding (β₂ᵗ in float32 would make every update about 1e-5 smaller for thousands of
 * steps). Moments are graph inputs too; the updated values are outputs.
 *
 * @module
 */

import type { Graph } from "../graph/graph.ts";
import { add, div, greater, logicalAnd, logicalNot, mul, sqrt, sub, where } from "../graph/math.ts";
import type { Tensor } from "../graph/tensor.ts";
import { nextStateName, type StateStore } from "../runtime/store.ts";

/** AdamW hyper-parameters that are fixed for a run (PyTorch defaults: {@link ADAMW_DEFAULTS}). */
export interface AdamWConfig {
  /** Decay of the first moment (0.9). */
  readonly beta1?: number;
  /** Decay of the second moment (0.999). */
  readonly beta2?: number;
  /** Added to the denominator (1e-8). */
  readonly eps?: number;
}

/** PyTorch's AdamW defaults, used where {@link AdamWConfig} leaves a value out. */
export const ADAMW_DEFAULTS = { beta1: 0.9, beta2: 0.999, eps: 1e-8 } as const;

/** The bias-correction factors of one step count t, each a float32 scalar input. */
export interface AdamWStepFactors {
  /** lr / (1 − β₁ᵗ): PyTorch's `step_size`. */
  readonly stepSize: Tensor;
  /** √(1 − β₂ᵗ): PyTorch's `bias_correction2_sqrt`. */
  readonly biasCorrection2Sqrt: Tensor;
}

/** The per-step scalar inputs of AdamW, each a float32 scalar. */
export interface AdamWScalars extends AdamWStepFactors {
  /** 1 − lr·wd: the decoupled weight decay of the parameters marked `decay`. */
  readonly decayFactor: Tensor;
}

/** Graph input names of the AdamW scalars. */
export const ADAMW_SCALAR_INPUTS = {
  decayFactor: "decay_factor",
  stepSize: "step_size",
  biasCorrection2Sqrt: "bias_correction2_sqrt",
} as const;

/**
 * What each AdamW scalar input holds, for readers of an exported graph: t is the step count (from
 * 1), lr and wd the step's learning rate and weight decay, β₁ and β₂ the moment decays.
 */
export const ADAMW_SCALAR_MEANINGS: Readonly<Record<string, string>> = {
  [ADAMW_SCALAR_INPUTS.decayFactor]:
    "1 − lr·wd: the decoupled weight decay factor of the parameters in the decayed group",
  [ADAMW_SCALAR_INPUTS.stepSize]: "lr / (1 − β₁ᵗ), computed in float64 (PyTorch's step_size)",
  [ADAMW_SCALAR_INPUTS.biasCorrection2Sqrt]:
    "√(1 − β₂ᵗ), computed in float64 (PyTorch's bias_correction2_sqrt)",
};

/** Declares the scalar inputs `decay_factor`, `step_size` and `bias_correction2_sqrt`. */
export function adamwScalars(g: Graph): AdamWScalars {
  return {
    decayFactor: g.input(ADAMW_SCALAR_INPUTS.decayFactor, "float32", []),
    ...adamwStepFactors(g, ADAMW_SCALAR_INPUTS),
  };
}

/**
 * Declares bias-correction inputs under the given names, for parameters that count their own
 * steps (a layer that is frozen for a while steps less often than the others).
 */
export function adamwStepFactors(
  g: Graph,
  names: { readonly stepSize: string; readonly biasCorrection2Sqrt: string },
): AdamWStepFactors {
  return {
    stepSize: g.input(names.stepSize, "float32", []),
    biasCorrection2Sqrt: g.input(names.biasCorrection2Sqrt, "float32", []),
  };
}

/** Host values of {@link AdamWStepFactors} for one step count. */
export interface AdamWStepValues {
  /** lr / (1 − β₁ᵗ). */
  readonly stepSize: number;
  /** √(1 − β₂ᵗ). */
  readonly biasCorrection2Sqrt: number;
}

/**
 * The bias-correction factors of step count `step` (t, from 1) at learning rate `lr`, in float64
 * as PyTorch computes them.
 */
export function adamwStepValues(
  lr: number,
  step: number,
  config: AdamWConfig = {},
): AdamWStepValues {
  if (!Number.isInteger(step) || step < 1) {
    throw new Error(`AdamW step counts start at 1, got ${step}`);
  }
  const { beta1 = ADAMW_DEFAULTS.beta1, beta2 = ADAMW_DEFAULTS.beta2 } = config;
  return { stepSize: lr / (1 - beta1 ** step), biasCorrection2Sqrt: Math.sqrt(1 - beta2 ** step) };
}

/**
 * The values of the inputs {@link adamwScalars} declares, keyed by input name, for learning rate
 * `lr`, weight decay `weightDecay` and step count `step` (t, from 1), computed in float64.
 */
export function adamwScalarValues(
  lr: number,
  weightDecay: number,
  step: number,
  config: AdamWConfig = {},
): Record<string, number> {
  const { stepSize, biasCorrection2Sqrt } = adamwStepValues(lr, step, config);
  return {
    [ADAMW_SCALAR_INPUTS.decayFactor]: 1 - lr * weightDecay,
    [ADAMW_SCALAR_INPUTS.stepSize]: stepSize,
    [ADAMW_SCALAR_INPUTS.biasCorrection2Sqrt]: biasCorrection2Sqrt,
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
   * turns the whole update (parameter, decay and moments) on or off, and the bias-correction
   * factors of the parameter's own step count (PyTorch counts steps per parameter, and a frozen
   * parameter does not step).
   */
  readonly gate?: { readonly active: Tensor; readonly factors: AdamWStepFactors };
}

/**
 * Appends the AdamW update of every target: declares the moment inputs (`exp_avg.<name>`,
 * `exp_avg_sq.<name>`) and writes outputs `<name>.next`, `exp_avg.<name>.next` and
 * `exp_avg_sq.<name>.next`. Returns the updated parameter tensors by name (for an EMA teacher).
 *
 * `skip`, a bool scalar, skips the whole step when true: every parameter and moment output is
 * then its input, bit for bit (what `GradScaler.step` does when a gradient is inf or NaN).
 */
export function applyAdamW(
  g: Graph,
  targets: readonly AdamWTarget[],
  scalars: AdamWScalars,
  config: AdamWConfig = {},
  skip?: Tensor,
): Map<string, Tensor> {
  const {
    beta1 = ADAMW_DEFAULTS.beta1,
    beta2 = ADAMW_DEFAULTS.beta2,
    eps = ADAMW_DEFAULTS.eps,
  } = config;
  const next = new Map<string, Tensor>();
  g.scope("adamw", () => {
    const proceed = skip ? logicalNot(skip) : undefined;
    for (const { param, grad, decay, gate } of targets) {
      const { stepSize, biasCorrection2Sqrt } = gate?.factors ?? scalars;
      const m = g.input(expAvgName(param.name), "float32", param.shape);
      const v = g.input(expAvgSqName(param.name), "float32", param.shape);
      // PyTorch's order of operations: exp_avg.mul_(β₁).add_(g, alpha=1 − β₁),
      // exp_avg_sq.mul_(β₂).addcmul_(g, g, value=1 − β₂), denom = √v / √bc2 + eps,
      // p.addcdiv_(exp_avg, denom, value=−step_size) = p − (step_size·m) / denom.
      const m1 = add(mul(m, beta1), mul(grad, 1 - beta1));
      const v1 = add(mul(v, beta2), mul(mul(grad, 1 - beta2), grad));
      const denominator = add(div(sqrt(v1), biasCorrection2Sqrt), eps);
      const decayed = decay ? mul(param, scalars.decayFactor) : param;
      const updated = sub(decayed, div(mul(m1, stepSize), denominator));
      const gateActive = gate ? greater(gate.active, 0) : undefined;
      const active = gateActive && proceed
        ? logicalAnd(gateActive, proceed)
        : gateActive ?? proceed;
      const gated = (before: Tensor, after: Tensor) =>
        active ? where(active, after, before) : after;
      next.set(param.name, gated(param, updated));
      g.output(nextStateName(param.name), next.get(param.name)!);
      g.output(nextStateName(m.name), gated(m, m1));
      g.output(nextStateName(v.name), gated(v, v1));
    }
  });
  return next;
}

/**
 * The host side of dynamic loss scaling, as PyTorch's `torch.cuda.amp.GradScaler` with its
 * defaults: the loss is multiplied by `scale` before the backward pass (in the training graph);
 * when some gradient comes out inf or NaN the step is skipped and the scale halves, and after
 * 2000 consecutive steps with finite gradients it doubles.
 *
 * The state converts to and from the plain object of `GradScaler.state_dict()` (`scale`,
 * `growth_factor`, `backoff_factor`, `growth_interval`, `_growth_tracker`), which official
 * checkpoints store under `fp16_scaler`.
 *
 * @module
 */

/** `GradScaler.state_dict()`: the scale, the update rule, and the count of finite steps. */
export interface GradScalerState {
  /** The current loss scale. */
  readonly scale: number;
  /** Factor applied to the scale after `growth_interval` consecutive finite steps (2). */
  readonly growth_factor: number;
  /** Factor applied to the scale after a step with an inf or NaN gradient (0.5). */
  readonly backoff_factor: number;
  /** Consecutive finite steps after which the scale grows (2000). */
  readonly growth_interval: number;
  /** Consecutive finite steps since the scale last changed. */
  readonly _growth_tracker: number;
}

/** PyTorch's defaults: initial scale 2¹⁶, growth ×2 every 2000 finite steps, backoff ×0.5. */
export const GRAD_SCALER_DEFAULTS: GradScalerState = {
  scale: 2 ** 16,
  growth_factor: 2,
  backoff_factor: 0.5,
  growth_interval: 2000,
  _growth_tracker: 0,
};

/** Dynamic loss scale: read {@link GradScaler.scale} before a step, call `update` after it. */
export class GradScaler {
  #state: GradScalerState;

  /** A scaler in `state` (PyTorch's defaults when omitted); throws one sentence on bad values. */
  constructor(state: GradScalerState = GRAD_SCALER_DEFAULTS) {
    this.#state = checkedState(state);
  }

  /** A scaler from a stored `state_dict()` object; throws one sentence when it is not one. */
  static fromStateDict(state: unknown): GradScaler {
    if (typeof state !== "object" || state === null) {
      throw new Error("the GradScaler state must be an object of its state_dict() fields");
    }
    const fields = state as Record<string, unknown>;
    const value = (name: keyof GradScalerState): number => {
      const v = fields[name];
      if (typeof v !== "number") {
        throw new Error(`the GradScaler state has no number ${name}`);
      }
      return v;
    };
    return new GradScaler({
      scale: value("scale"),
      growth_factor: value("growth_factor"),
      backoff_factor: value("backoff_factor"),
      growth_interval: value("growth_interval"),
      _growth_tracker: value("_growth_tracker"),
    });
  }

  /** The loss scale of the next step (a float32 value, as PyTorch keeps it). */
  get scale(): number {
    return this.#state.scale;
  }

  /** Consecutive finite steps since the scale last changed. */
  get growthTracker(): number {
    return this.#state._growth_tracker;
  }

  /**
   * Updates the scale after a step (`GradScaler.update`): with `foundInf` (the step was skipped)
   * the scale is multiplied by the backoff factor and the count restarts; otherwise the count
   * grows, and on reaching the growth interval the scale is multiplied by the growth factor
   * (unless that overflows float32) and the count restarts.
   */
  update(foundInf: boolean): void {
    const s = this.#state;
    if (foundInf) {
      this.#state = { ...s, scale: Math.fround(s.scale * s.backoff_factor), _growth_tracker: 0 };
      return;
    }
    const finiteSteps = s._growth_tracker + 1;
    if (finiteSteps < s.growth_interval) {
      this.#state = { ...s, _growth_tracker: finiteSteps };
      return;
    }
    const grown = Math.fround(s.scale * s.growth_factor);
    this.#state = { ...s, scale: Number.isFinite(grown) ? grown : s.scale, _growth_tracker: 0 };
  }

  /** The state as `GradScaler.state_dict()` returns it, for a checkpoint. */
  stateDict(): GradScalerState {
    return { ...this.#state };
  }
}

/** `state` with a float32 scale, or one sentence naming the first bad field. */
function checkedState(state: GradScalerState): GradScalerState {
  const scale = Math.fround(state.scale);
  if (!(Number.isFinite(scale) && scale > 0)) {
    throw new Error(`the GradScaler scale must be a positive float32 number, got ${state.scale}`);
  }
  if (!(state.growth_factor > 1 && Number.isFinite(state.growth_factor))) {
    throw new Error(`the GradScaler growth_factor must be above 1, got ${state.growth_factor}`);
  }
  if (!(state.backoff_factor > 0 && state.backoff_factor < 1)) {
    throw new Error(
      `the GradScaler backoff_factor must be between 0 and 1, got ${state.backoff_factor}`,
    );
  }
  if (!(Number.isInteger(state.growth_interval) && state.growth_interval > 0)) {
    throw new Error(
      `the GradScaler growth_interval must be a positive integer, got ${state.growth_interval}`,
    );
  }
  const tracker = state._growth_tracker;
  if (!(Number.isInteger(tracker) && tracker >= 0 && tracker < state.growth_interval)) {
    throw new Error(
      `the GradScaler _growth_tracker must be an integer in [0, growth_interval), got ${tracker}`,
    );
  }
  return { ...state, scale };
}

import { assert } from "../assert.ts";
import {
  GRAD_SCALER_DEFAULTS,
  GradScaler,
  type GradScalerState,
} from "../../lib/optim/grad_scaler.ts";

Deno.test("GradScaler: starts at 2^16 with PyTorch's defaults", () => {
  const scaler = new GradScaler();
  assert.equal(scaler.scale, 65536);
  assert.equal(scaler.growthTracker, 0);
  assert.deepEqual(scaler.stateDict(), {
    scale: 65536,
    growth_factor: 2,
    backoff_factor: 0.5,
    growth_interval: 2000,
    _growth_tracker: 0,
  });
});

Deno.test("GradScaler: doubles after 2000 consecutive finite steps, not before", () => {
  const scaler = new GradScaler();
  for (let i = 1; i < 2000; i++) {
    scaler.update(false);
    assert.equal(scaler.scale, 65536, `step ${i}`);
    assert.equal(scaler.growthTracker, i);
  }
  scaler.update(false);
  assert.equal(scaler.scale, 131072);
  assert.equal(scaler.growthTracker, 0);
});

Deno.test("GradScaler: halves on inf or NaN and restarts the count of finite steps", () => {
  const scaler = new GradScaler();
  for (let i = 0; i < 1500; i++) scaler.update(false);
  scaler.update(true);
  assert.equal(scaler.scale, 32768);
  assert.equal(scaler.growthTracker, 0);
  scaler.update(true);
  assert.equal(scaler.scale, 16384);
  // 2000 more finite steps are needed before it grows again.
  for (let i = 0; i < 1999; i++) scaler.update(false);
  assert.equal(scaler.scale, 16384);
  scaler.update(false);
  assert.equal(scaler.scale, 32768);
});

Deno.test("GradScaler: the growth that would overflow float32 keeps the scale", () => {
  const top = 2 ** 127;
  const scaler = new GradScaler({ ...GRAD_SCALER_DEFAULTS, scale: top, growth_interval: 1 });
  scaler.update(false);
  assert.equal(scaler.scale, top);
  assert.equal(scaler.growthTracker, 0);
  scaler.update(true);
  assert.equal(scaler.scale, 2 ** 126);
});

Deno.test("GradScaler: the state round-trips through state_dict() form", () => {
  const scaler = new GradScaler();
  for (let i = 0; i < 37; i++) scaler.update(i === 3);
  const state = scaler.stateDict();
  assert.deepEqual(state, { ...GRAD_SCALER_DEFAULTS, scale: 32768, _growth_tracker: 33 });
  const restored = GradScaler.fromStateDict(JSON.parse(JSON.stringify(state)));
  assert.deepEqual(restored.stateDict(), state);
  restored.update(false);
  scaler.update(false);
  assert.deepEqual(restored.stateDict(), scaler.stateDict());
});

Deno.test("GradScaler: a bad state is refused with one sentence", () => {
  const bad = (state: unknown, pattern: RegExp) =>
    assert.throws(() => GradScaler.fromStateDict(state), (error: Error) => {
      assert.match(error.message, pattern);
      assert(!error.message.includes("\n"));
      return true;
    });
  const good: GradScalerState = GRAD_SCALER_DEFAULTS;
  bad(null, /^the GradScaler state must be an object/);
  bad({}, /^the GradScaler state has no number scale$/);
  bad({ ...good, _growth_tracker: "3" }, /has no number _growth_tracker$/);
  bad({ ...good, scale: 0 }, /scale must be a positive float32 number, got 0$/);
  bad({ ...good, scale: 1e39 }, /scale must be a positive float32 number, got 1e\+39$/);
  bad({ ...good, growth_factor: 1 }, /growth_factor must be above 1, got 1$/);
  bad({ ...good, backoff_factor: 1 }, /backoff_factor must be between 0 and 1, got 1$/);
  bad({ ...good, growth_interval: 0.5 }, /growth_interval must be a positive integer/);
  bad({ ...good, _growth_tracker: 2000 }, /_growth_tracker must be an integer in \[0/);
});

/**
 * The iBOT step at the benchmark configuration (bench/ibot_step.ts) on the CPU through both
 * runtimes: CompiledGraph (onnxruntime-node; every state tensor fed in and copied out each step)
 * and DeviceSession with ResidentState (C API, IoBinding; state stays in onnxruntime's buffers).
 * Steps alternate between the two so that a noisy machine weighs on both alike; prints each
 * one's median step time, the ratio, and whether both reached the same state.
 *
 *   deno run --allow-read --allow-env --allow-ffi --allow-sys bench/device_session_bench.ts [steps]
 */

import { patchGrid } from "../lib/models/backbone.ts";
import type { TensorData } from "../lib/graph/graph.ts";
import { shapeSize } from "../lib/graph/tensor.ts";
import { addAdamWMoments } from "../lib/optim/adamw.ts";
import { DeviceSession } from "../lib/runtime/device_session.ts";
import { ResidentState } from "../lib/runtime/resident_state.ts";
import { Rng } from "../lib/runtime/rng.ts";
import { CompiledGraph } from "../lib/runtime/session.ts";
import { StateStore } from "../lib/runtime/store.ts";
import { fillMaskInputs } from "../lib/train/batch_inputs.ts";
import { buildIbotStep, stepScalarValues } from "../lib/train/step.ts";
import { benchMasks, benchSlots, IBOT_BENCH } from "./ibot_step.ts";
import { randomInputs } from "./random_inputs.ts";

const steps = Number(Deno.args[0] ?? 6);
const { slots } = benchSlots();
const built = buildIbotStep({ ...IBOT_BENCH, slots });
const grid = IBOT_BENCH.globalSize / patchGrid(IBOT_BENCH.backbone);

const store = StateStore.fromParams(built.graph.params, 0);
addAdamWMoments(store, built.trainable);
const rng = new Rng(0);
const batch = randomInputs(built.graph.inputs, rng, (name) => store.has(name));
fillMaskInputs(batch, benchMasks(), slots, grid * grid);
(batch.drop_path_global as Float32Array).fill(1);
(batch.drop_path_local as Float32Array).fill(1);

/** Sets the schedule scalars of step `k` (from 1) in the batch feeds. */
function setScalars(k: number): void {
  const scalars = stepScalarValues({
    lr: 5e-4 * 64 / 256,
    weightDecay: 0.04,
    step: k,
    lastLayerActive: true,
    lastLayerStep: k,
    momentum: 0.996,
    teacherTemp: 0.04,
    teacherPatchTemp: 0.04,
  });
  for (const [name, value] of Object.entries(scalars)) batch[name] = Float32Array.of(value);
}

const options = { memoryArena: false } as const;
const hostStore = new StateStore();
for (const name of store.names()) {
  hostStore.set(name, store.get(name).slice(), store.shape(name));
}
const compiled = await CompiledGraph.create(built.graph, options);
const device = await DeviceSession.create(built.graph, { device: "cpu", ...options });
const state = await ResidentState.create(store, built.updatedState);

const hostFeeds: Record<string, TensorData> = { ...batch };
for (const name of hostStore.names()) hostFeeds[name] = hostStore.get(name);

const times = { compiled: [] as number[], device: [] as number[] };
for (let k = 0; k <= steps; k++) {
  setScalars(k + 1);
  Object.assign(hostFeeds, batch);
  let start = performance.now();
  const out = await compiled.run(hostFeeds);
  hostStore.commitNext(out as Record<string, Float32Array>, built.updatedState);
  const compiledMs = performance.now() - start;
  start = performance.now();
  await device.run(batch, state);
  state.swap();
  const deviceMs = performance.now() - start;
  if (k === 0) continue;
  times.compiled.push(compiledMs);
  times.device.push(deviceMs);
}

const resident = new StateStore();
for (const name of store.names()) {
  resident.set(name, new Float32Array(shapeSize(store.shape(name))), store.shape(name));
}
await state.download(resident);
let maxDiff = 0;
for (const name of store.names()) {
  const a = resident.get(name);
  const b = hostStore.get(name);
  for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const compiledMedian = median(times.compiled);
const deviceMedian = median(times.device);
console.log(
  `iBOT step (vit_tiny/4, batch 64, ${slots} patch slots), ${steps} interleaved steps each:`,
);
console.log(`  CompiledGraph (onnxruntime-node):      median ${compiledMedian.toFixed(1)} ms`);
console.log(`  DeviceSession + ResidentState (C API): median ${deviceMedian.toFixed(1)} ms`);
console.log(
  `  ratio DeviceSession / CompiledGraph:   ${(deviceMedian / compiledMedian).toFixed(3)}`,
);
console.log(`  largest state difference after ${steps + 1} steps: ${maxDiff}`);

state.release();
device.release();
await compiled.release();

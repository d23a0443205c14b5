/**
 * One side of `ort_version_check.ts`: runs the benchmark's iBOT training step (the configuration,
 * masks and patch-slot bucket of `ibot_step.ts`) on whichever onnxruntime-node the config it is
 * run with maps, from seeded state and inputs, for `steps` steps, on `threads` intra-op threads
 * (default: one per core). Prints one JSON line: the onnxruntime version, the loss of each step,
 * the wall-clock and CPU seconds of each step but the first (which warms the session up) and the
 * state's layout. Writes the state after the last step to
 * `statePath`: every tensor the step updates, float32, concatenated in the order of `layout`
 * ([name, number of values] pairs).
 *
 * ```sh
 * deno run --allow-read --allow-write --allow-env --allow-ffi --allow-sys bench/ort_version_run.ts STEPS STATE_PATH [THREADS]
 * ```
 *
 * @module
 */

import * as ort from "onnxruntime-node";
import process from "node:process";
import type { TensorData } from "../lib/graph/graph.ts";
import { shapeSize } from "../lib/graph/tensor.ts";
import { addAdamWMoments } from "../lib/optim/adamw.ts";
import { Rng } from "../lib/runtime/rng.ts";
import { CompiledGraph } from "../lib/runtime/session.ts";
import { StateStore } from "../lib/runtime/store.ts";
import { fillMaskInputs } from "../lib/train/batch_inputs.ts";
import { buildIbotStep, stepScalarValues } from "../lib/train/step.ts";
import { benchMasks, benchSlots, IBOT_BENCH } from "./ibot_step.ts";

const steps = Number(Deno.args[0]);
const statePath = Deno.args[1];
const threads = Deno.args[2] === undefined ? undefined : Number(Deno.args[2]);
const { slots } = benchSlots();
const built = buildIbotStep({ ...IBOT_BENCH, slots });
const session = await CompiledGraph.create(built.graph, { memoryArena: false, threads });
const store = StateStore.fromParams(built.graph.params, 0);
addAdamWMoments(store, built.trainable);
const rng = new Rng(0);
const feeds: Record<string, TensorData> = {};
for (const name of store.names()) feeds[name] = store.get(name);
for (const input of built.graph.inputs) {
  if (store.has(input.name)) continue;
  const n = shapeSize(input.shape);
  if (input.dtype === "int64") feeds[input.name] = new BigInt64Array(n);
  else feeds[input.name] = Float32Array.from({ length: n }, () => rng.normal());
}
const grid = IBOT_BENCH.globalSize / IBOT_BENCH.backbone.patchSize;
fillMaskInputs(feeds, benchMasks(), slots, grid * grid);
(feeds.drop_path_global as Float32Array).fill(1);
(feeds.drop_path_local as Float32Array).fill(1);

const losses: number[] = [];
const seconds: number[] = [];
const cpuSeconds: number[] = [];
for (let step = 1; step <= steps; step++) {
  const scalars = stepScalarValues({
    lr: 5e-4 * 64 / 256,
    weightDecay: 0.04,
    step,
    lastLayerActive: true,
    lastLayerStep: step,
    momentum: 0.996,
    teacherTemp: 0.04,
    teacherPatchTemp: 0.04,
  });
  for (const [name, value] of Object.entries(scalars)) (feeds[name] as Float32Array)[0] = value;
  const start = performance.now();
  const cpuStart = process.cpuUsage();
  const out = await session.run(feeds);
  const cpu = process.cpuUsage(cpuStart);
  if (step > 1) {
    seconds.push((performance.now() - start) / 1000);
    cpuSeconds.push((cpu.user + cpu.system) / 1e6);
  }
  losses.push((out.loss as Float32Array)[0]);
  store.commitNext(out as Record<string, Float32Array>, built.updatedState);
}

const tensors = built.updatedState.map((name) => store.get(name));
const state = new Float32Array(tensors.reduce((n, t) => n + t.length, 0));
let offset = 0;
for (const tensor of tensors) {
  state.set(tensor, offset);
  offset += tensor.length;
}
Deno.writeFileSync(statePath, new Uint8Array(state.buffer));
const layout = built.updatedState.map((name, i) => [name, tensors[i].length]);
console.log(
  JSON.stringify({ version: ort.env.versions.common, losses, seconds, cpuSeconds, layout }),
);

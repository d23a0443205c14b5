/**
 * One side of `ort_version_check.ts`: runs the benchmark's iBOT training step (`prepareIbotStep`
 * of `ibot_step.ts`) on whichever onnxruntime-node the config it is run with maps, from seeded
 * state and inputs, for `steps` steps, on `threads` intra-op threads (default: one per core).
 * Prints one JSON line: the onnxruntime version, the loss of each step, the wall-clock and CPU
 * seconds of each step (the run and the state's commit) but the first (which warms the session up)
 * and the state's layout. Writes the state after the last step to
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
import { prepareIbotStep } from "./ibot_step.ts";

const steps = Number(Deno.args[0]);
const statePath = Deno.args[1];
const threads = Deno.args[2] === undefined ? undefined : Number(Deno.args[2]);
const ibot = await prepareIbotStep({ threads });

const losses: number[] = [];
const seconds: number[] = [];
const cpuSeconds: number[] = [];
for (let step = 1; step <= steps; step++) {
  const start = performance.now();
  const cpuStart = process.cpuUsage();
  const out = await ibot.step();
  const cpu = process.cpuUsage(cpuStart);
  if (step > 1) {
    seconds.push((performance.now() - start) / 1000);
    cpuSeconds.push((cpu.user + cpu.system) / 1e6);
  }
  losses.push((out.loss as Float32Array)[0]);
}

const tensors = ibot.updatedState.map((name) => ibot.store.get(name));
const state = new Float32Array(tensors.reduce((n, t) => n + t.length, 0));
let offset = 0;
for (const tensor of tensors) {
  state.set(tensor, offset);
  offset += tensor.length;
}
Deno.writeFileSync(statePath, new Uint8Array(state.buffer));
const layout = ibot.updatedState.map((name, i) => [name, tensors[i].length]);
console.log(
  JSON.stringify({ version: ort.env.versions.common, losses, seconds, cpuSeconds, layout }),
);

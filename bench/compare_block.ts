/**
 * Times the block training step here and in PyTorch in the same run and prints both medians and
 * the ratio. Usage: deno task bench:block [steps]
 */

import { prepareBlockStep } from "./block_step.ts";
import { PYTHON } from "../tests/reference/torch.ts";
import { median, timeTorch } from "./torch_timing.ts";

const steps = Number(Deno.args[0] ?? 20);
const block = await prepareBlockStep();
for (let i = 0; i < 5; i++) await block.step();
const ours: number[] = [];
for (let i = 0; i < steps; i++) {
  const start = performance.now();
  await block.step();
  ours.push(performance.now() - start);
}
const oursMs = median(ours);
const torchMs = await timeTorch(PYTHON, "block_step_torch.py");
console.log(`ours:    ${oursMs.toFixed(1)} ms per step (median of ${steps})`);
console.log(`PyTorch: ${torchMs.toFixed(1)} ms per step`);
console.log(`ratio:   ${(oursMs / torchMs).toFixed(3)} (ours / PyTorch; ≤ 1.0 is the target)`);

/**
 * Times the block training step here and in PyTorch in the same run, 5 warm-up steps on each side,
 * and prints both medians and the ratio (only when PyTorch ran on OpenBLAS's OpenMP variant).
 * Usage: deno task bench:block [steps]
 */

import { prepareBlockStep } from "./block_step.ts";
import { PYTHON } from "../tests/reference/torch.ts";
import { blasProblem, median, runTorch } from "./torch_timing.ts";

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
const torch = await runTorch(PYTHON, "block_step_torch.py");
const problem = blasProblem(torch.blas);
if (problem) {
  console.error(problem);
  Deno.exit(1);
}
const torchMs = median(torch.seconds) * 1000;
console.log(`ours:    ${oursMs.toFixed(1)} ms per step (median of ${steps})`);
console.log(`PyTorch: ${torchMs.toFixed(1)} ms per step`);
console.log(`ratio:   ${(oursMs / torchMs).toFixed(3)} (ours / PyTorch; ≤ 1.0 is the target)`);

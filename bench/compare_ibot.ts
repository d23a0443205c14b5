/**
 * Times the full iBOT training step here and in the PyTorch reference (`ibot_step_torch.py`) in
 * the same run, in alternating rounds (this machine's timings drift), and prints images/s of both
 * and the throughput ratio. Usage: deno task bench:ibot [rounds] [steps per round]
 */

import { prepareIbotStep } from "./ibot_step.ts";
import { PYTHON } from "../tests/reference/torch.ts";
import { median, timeTorch } from "./torch_timing.ts";

const rounds = Number(Deno.args[0] ?? 3);
const steps = Number(Deno.args[1] ?? 3);
const ibot = await prepareIbotStep();
await ibot.step();
await ibot.step();
const ours: number[] = [];
const theirs: number[] = [];
for (let round = 1; round <= rounds; round++) {
  for (let i = 0; i < steps; i++) {
    const start = performance.now();
    await ibot.step();
    ours.push((performance.now() - start) / 1000);
  }
  theirs.push(
    await timeTorch(PYTHON, "ibot_step_torch.py", ["--steps", String(steps), "--warmup", "1"]),
  );
  console.log(
    `round ${round}: ours ${median(ours.slice(-steps)).toFixed(2)} s, PyTorch ${
      theirs.at(-1)!.toFixed(2)
    } s per step`,
  );
}
const oursS = median(ours);
const theirsS = median(theirs);
console.log(`ours:    ${(64 / oursS).toFixed(1)} images/s (${oursS.toFixed(2)} s per step)`);
console.log(`PyTorch: ${(64 / theirsS).toFixed(1)} images/s (${theirsS.toFixed(2)} s per step)`);
console.log(
  `throughput ratio: ${(theirsS / oursS).toFixed(2)} (ours / PyTorch; the target is ≥ 1.3)`,
);

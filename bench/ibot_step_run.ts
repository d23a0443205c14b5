/**
 * Runs our iBOT training step at a benchmark configuration in a process of its own, so that its
 * peak memory is its own, and prints one JSON line: `seconds` (each timed step) and
 * `peak_rss_mib` (the process's peak resident memory, getrusage's maxrss, after them), the report of
 * `ibot_step_torch.py` for our side. Used by `compare_ibot.ts`. `vit` (the default) runs
 * `ibot_step.ts`'s step, `swin` the Swin step of `swin_step.ts` on the trainer's device runtime.
 *
 * ```sh
 * deno run --allow-read --allow-env --allow-ffi --allow-sys bench/ibot_step_run.ts [steps] [warm-up] [vit|swin]
 * ```
 *
 * @module
 */

import process from "node:process";
import { prepareIbotStep } from "./ibot_step.ts";
import { prepareResidentStep } from "./swin_step.ts";

const steps = Number(Deno.args[0] ?? 3);
const warmup = Number(Deno.args[1] ?? 1);
const arch = Deno.args[2] ?? "vit";
if (arch !== "vit" && arch !== "swin") {
  throw new Error(`the architecture is vit or swin, got ${arch}`);
}
const ibot = arch === "vit" ? await prepareIbotStep() : await prepareResidentStep();
for (let i = 0; i < warmup; i++) await ibot.step();
const seconds: number[] = [];
for (let i = 0; i < steps; i++) {
  const start = performance.now();
  await ibot.step();
  seconds.push((performance.now() - start) / 1000);
}
const peakKib = process.resourceUsage().maxRSS;
console.log(JSON.stringify({ seconds, peak_rss_mib: peakKib / 1024 }));

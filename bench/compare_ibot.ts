/**
 * Compares our iBOT training step with PyTorch at a benchmark configuration, in the same run and
 * in alternating rounds (timings on a shared machine drift; each side's best round counts). Each round runs three processes, each
 * with one warm-up iteration before the timed ones: PyTorch doing the official work (the head on
 * every token: what a user of the official code gets), PyTorch making the same update with the
 * work our step does (the head on CLS tokens and masked-patch slots only, a Swin's attention
 * projections on real tokens only: engine speed), and ours.
 *
 * Prints each side's work per iteration (multiply-accumulates of products and convolutions,
 * counted from our step graph at the patch-slot bucket the benchmark's masks need, and from the
 * ops PyTorch ran), images/s, seconds per step, peak resident memory, and two throughput ratios:
 * against the official work and at equal work (PyTorch's equal-work step runs its patch heads on
 * as many flat slots as ours: the bucket). No ratio is printed unless PyTorch ran on OpenBLAS's
 * OpenMP variant.
 *
 * `--arch vit` (the default) runs the ViT configuration of `ibot_step.ts` (our step on
 * onnxruntime-node), `--arch swin` the Swin configuration of `swin_step.ts` (our step on the
 * trainer's device runtime, the state resident); PyTorch runs the same configuration
 * (`ibot_step_torch.py --arch`).
 *
 * Usage: deno task bench:ibot [--arch vit|swin] [rounds] [steps per round];
 * deno task bench:swin [rounds] [steps per round] is the same with `--arch swin`.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { countMacs } from "../lib/graph/cost.ts";
import { buildIbotStep } from "../lib/train/step.ts";
import { PYTHON } from "../tests/reference/torch.ts";
import { benchSlots, IBOT_BENCH } from "./ibot_step.ts";
import { SWIN_BENCH } from "./swin_step.ts";
import {
  blasProblem,
  median,
  runTorch,
  type StepReport,
  type TorchReport,
} from "./torch_timing.ts";

const { values, positionals } = parseArgs({
  options: { arch: { type: "string", default: "vit" } },
  allowPositionals: true,
});
const arch = values.arch;
if (arch !== "vit" && arch !== "swin") {
  console.error(`--arch is vit or swin, got ${arch}`);
  Deno.exit(1);
}
const config = arch === "vit" ? IBOT_BENCH : SWIN_BENCH;
const rounds = Number(positionals[0] ?? 3);
const steps = Number(positionals[1] ?? 3);
const WARMUP = 1;
const HERE = dirname(fileURLToPath(import.meta.url));

/** Runs our step in a process of its own (`ibot_step_run.ts`) and returns its report. */
async function runOurs(): Promise<StepReport> {
  const { success, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-env",
      "--allow-ffi",
      "--allow-sys",
      `--config=${join(HERE, "..", "deno.json")}`,
      join(HERE, "ibot_step_run.ts"),
      String(steps),
      String(WARMUP),
      arch,
    ],
  }).output();
  if (!success) throw new Error(`ibot_step_run.ts failed:\n${new TextDecoder().decode(stderr)}`);
  return JSON.parse(new TextDecoder().decode(stdout).trim().split("\n").at(-1)!);
}

const bucket = benchSlots(config);

/**
 * Runs `ibot_step_torch.py` doing `work` (the equal work on our bucket's slots); stops the
 * benchmark when its BLAS is not a fair one.
 */
async function runTorchSide(work: "official" | "equal", countWork: boolean): Promise<TorchReport> {
  const report = await runTorch(PYTHON, "ibot_step_torch.py", [
    ...["--arch", arch, "--work", work, "--steps", String(steps), "--warmup", String(WARMUP)],
    ...["--batch", String(config.batch), "--slots", String(bucket.slots)],
    ...(countWork ? ["--count-macs"] : []),
  ]);
  const problem = blasProblem(report.blas);
  if (problem) {
    console.error(problem);
    Deno.exit(1);
  }
  return report;
}

const ourMacs = countMacs(buildIbotStep({ ...config, slots: bucket.slots }).graph);
console.log(
  `patch slots: ${bucket.slots} for the ${bucket.masked} masked patches of our masks (bucket ${
    bucket.buckets.indexOf(bucket.slots) + 1
  } of ${bucket.buckets.length}), in ours and in PyTorch's equal work`,
);
const reports = {
  official: [] as TorchReport[],
  equal: [] as TorchReport[],
  ours: [] as StepReport[],
};
/** Seconds per step of one round: the median of its timed steps. */
const roundSeconds = (report: StepReport) => median(report.seconds);
/** Seconds per step of a side: its best round, since load from other processes only adds time. */
const perStep = (side: readonly StepReport[]) => Math.min(...side.map(roundSeconds));
for (let round = 1; round <= rounds; round++) {
  reports.official.push(await runTorchSide("official", round === 1));
  reports.equal.push(await runTorchSide("equal", round === 1));
  reports.ours.push(await runOurs());
  const last = (side: readonly StepReport[]) => roundSeconds(side.at(-1)!).toFixed(2);
  console.log(
    `round ${round}: ours ${last(reports.ours)} s, PyTorch official work ${
      last(reports.official)
    } s, PyTorch equal work ${last(reports.equal)} s per step`,
  );
}

const sides = [
  { label: "ours", macs: ourMacs, counted: "the step graph", reports: reports.ours },
  {
    label: "PyTorch, official work",
    macs: reports.official[0].macs!,
    counted: "the ops PyTorch ran",
    reports: reports.official,
  },
  {
    label: "PyTorch, equal work",
    macs: reports.equal[0].macs!,
    counted: "the ops PyTorch ran",
    reports: reports.equal,
  },
];
const column = (text: string) => text.padEnd(24);
console.log("work per iteration (multiply-accumulates of products and convolutions):");
for (const side of sides) {
  console.log(`  ${column(side.label)}${(side.macs / 1e9).toFixed(1)} GMAC, from ${side.counted}`);
}
const lessWork = ourMacs < sides[1].macs;
console.log(
  `ours computes ${(100 * ourMacs / sides[1].macs).toFixed(1)}% of the official work ` +
    `(${
      lessWork
        ? "less work: the target against the official work is ≥ 1.3"
        : "as much or more: the target is ≥ 1.0"
    })`,
);
console.log(
  `speed and memory (${arch}, batch ${config.batch}, the best of ${rounds} rounds of ${steps} steps):`,
);
for (const side of sides) {
  const seconds = perStep(side.reports);
  const peak = Math.max(...side.reports.map((r) => r.peak_rss_mib));
  console.log(
    `  ${column(side.label)}${(config.batch / seconds).toFixed(1)} images/s, ` +
      `${seconds.toFixed(2)} s per step, peak RSS ${peak.toFixed(0)} MiB`,
  );
}
const ratio = (torch: readonly StepReport[]) => (perStep(torch) / perStep(reports.ours)).toFixed(2);
console.log(
  `throughput ratio against the official work: ${ratio(reports.official)} ` +
    `(ours / PyTorch official: what a user of the official code gets; the target is ≥ ${
      lessWork ? "1.3" : "1.0"
    })`,
);
console.log(
  `throughput ratio at equal work: ${ratio(reports.equal)} ` +
    "(ours / PyTorch doing our step's work: engine speed; the target is ≥ 1.0)",
);

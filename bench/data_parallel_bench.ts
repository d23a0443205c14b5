/**
 * Data-parallel training on one machine: the benchmark iBOT step (`ibot_step.ts`, global batch
 * 64) as 2 processes × 32 images × 1 onnxruntime thread under `mpirun` against 1 process × 64
 * images × 2 threads, in alternating rounds, with the time of the gradient all-reduce (measured
 * alone, on a vector of the flat gradient's size, between the timed steps) and its share of a step.
 *
 * ```sh
 * deno run -A bench/data_parallel_bench.ts [--rounds 2] [--steps 3]
 * ```
 *
 * Each side prints one JSON line from rank 0 (`--child` mode); the parent prints images/s per
 * side, their ratio, and the all-reduce figures.
 *
 * @module
 */

import { patchGrid } from "../lib/models/backbone.ts";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { addAdamWMoments } from "../lib/optim/adamw.ts";
import { type Communicator, worldCommunicator } from "../lib/runtime/mpi.ts";
import { ResidentState } from "../lib/runtime/resident_state.ts";
import { Rng } from "../lib/runtime/rng.ts";
import { StateStore } from "../lib/runtime/store.ts";
import { countMasked, fillMaskInputs, fillStepDropPath } from "../lib/train/batch_inputs.ts";
import { pickSlotBucket, slotBuckets } from "../lib/train/slot_buckets.ts";
import { buildSplitIbotStep } from "../lib/train/split_step.ts";
import { stepScalarValues } from "../lib/train/step.ts";
import { StepRunner } from "../lib/train/step_runner.ts";
import { benchMasks, IBOT_BENCH } from "./ibot_step.ts";
import { median } from "./torch_timing.ts";
import { randomInputs } from "./random_inputs.ts";

const { values } = parseArgs({
  options: {
    child: { type: "boolean", default: false },
    threads: { type: "string", default: "2" },
    rounds: { type: "string", default: "2" },
    steps: { type: "string", default: "3" },
  },
});
const SELF = fileURLToPath(import.meta.url);
const GLOBAL_BATCH = IBOT_BENCH.batch;

/** One side: the step on this process's share of the batch, timed; rank 0 prints JSON. */
async function child(comm: Communicator): Promise<void> {
  const ranks = comm.size;
  const config = { ...IBOT_BENCH, batch: GLOBAL_BATCH / ranks };
  const grid = config.globalSize / patchGrid(config.backbone);
  const all = benchMasks();
  const masks: Uint8Array[] = [];
  for (let crop = 0; crop < config.globalCrops; crop++) {
    for (let j = 0; j < config.batch; j++) {
      masks.push(all[crop * GLOBAL_BATCH + j * ranks + comm.rank]);
    }
  }
  const buckets = slotBuckets(config.globalCrops * config.batch * config.maskSlots);
  const slots = pickSlotBucket(buckets, countMasked(masks));
  const split = buildSplitIbotStep({ ...config, slots });
  const store = StateStore.fromParams(split.gradient.params, 0);
  addAdamWMoments(store, split.trainable);
  const state = await ResidentState.create(store, split.updatedState);
  const runner = new StepRunner({
    config,
    placement: { device: "cpu" },
    threads: Number(values.threads),
    communicator: comm,
    log: () => {},
  }, buckets);
  const rng = new Rng(comm.rank);
  const feeds = randomInputs(split.gradient.inputs, rng);
  fillMaskInputs(feeds, masks, slots, grid * grid);
  fillStepDropPath(feeds, config, rng, { rank: comm.rank, worldSize: ranks });
  const labels = new Array(config.batch).fill(0);
  const seconds: number[] = [];
  const steps = Number(values.steps);
  for (let k = 0; k <= steps; k++) {
    const scalars = stepScalarValues({
      lr: 5e-4 * GLOBAL_BATCH / 256,
      weightDecay: 0.04,
      step: k + 1,
      lastLayerActive: true,
      lastLayerStep: k + 1,
      momentum: 0.996,
      teacherTemp: 0.04,
      teacherPatchTemp: 0.04,
    });
    for (const [name, value] of Object.entries(scalars)) feeds[name] = Float32Array.of(value);
    await comm.barrier();
    const start = performance.now();
    await runner.run(feeds, labels, slots, state);
    state.swap();
    if (k > 0) seconds.push((performance.now() - start) / 1000);
  }
  const gradient = new Float32Array(split.layout.reduce((n, s) => n + s.size, 0));
  const reduce: number[] = [];
  for (let k = 0; k < 5; k++) {
    await comm.barrier();
    const start = performance.now();
    await comm.allreduceSum(gradient);
    reduce.push((performance.now() - start) / 1000);
  }
  runner.release();
  state.release();
  if (comm.rank === 0) {
    console.log(JSON.stringify({
      ranks,
      batch: config.batch,
      threads: Number(values.threads),
      slots,
      seconds,
      images_per_s: GLOBAL_BATCH / median(seconds),
      gradient_floats: gradient.length,
      allreduce_s: ranks > 1 ? median(reduce) : 0,
    }));
  }
  comm.finalize();
}

/** Runs one side and returns rank 0's report. */
async function side(ranks: number): Promise<Record<string, number>> {
  const args = ["--child", "--threads", ranks > 1 ? "1" : "2", "--steps", values.steps];
  const command = ranks === 1
    ? new Deno.Command(Deno.execPath(), { args: ["run", "-A", SELF, ...args] })
    : new Deno.Command("mpirun", {
      args: [
        ...["--allow-run-as-root", "--oversubscribe", "-np", String(ranks)],
        ...[Deno.execPath(), "run", "-A", SELF, ...args],
      ],
    });
  const { success, stdout, stderr } = await command.output();
  if (!success) {
    throw new Error(`the ${ranks}-process side failed:\n${new TextDecoder().decode(stderr)}`);
  }
  return JSON.parse(new TextDecoder().decode(stdout).trim().split("\n").at(-1)!);
}

if (values.child) {
  await child(worldCommunicator());
} else {
  const best: Record<number, Record<string, number>> = {};
  for (let round = 0; round < Number(values.rounds); round++) {
    for (const ranks of [1, 2]) {
      const report = await side(ranks);
      console.log(
        `round ${round + 1}: ${ranks} process(es) × ${report.batch} images × ${report.threads} ` +
          `thread(s): ${report.images_per_s.toFixed(1)} img/s (${report.slots} slots per process)`,
      );
      if (!best[ranks] || report.images_per_s > best[ranks].images_per_s) best[ranks] = report;
    }
  }
  const two = best[2];
  const stepSeconds = GLOBAL_BATCH / two.images_per_s;
  console.log(
    `2 × 1 thread / 1 × 2 threads: ${(two.images_per_s / best[1].images_per_s).toFixed(2)} ` +
      `(global batch ${GLOBAL_BATCH}); all-reduce of the ${two.gradient_floats} gradient floats ` +
      `${(two.allreduce_s * 1000).toFixed(1)} ms, ${
        (100 * two.allreduce_s / stepSeconds).toFixed(1)
      }% ` +
      `of a ${stepSeconds.toFixed(2)} s step`,
  );
}

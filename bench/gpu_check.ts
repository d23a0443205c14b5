/**
 * The GPU check: what a GPU machine must show before training there is called done. Run it after
 * `deno task enable-cuda` on a machine with an NVIDIA GPU, CUDA 13 libraries and PyTorch with
 * CUDA for the reference (see the README's "Training on a GPU").
 *
 * - **a** (`parity`): one fp32 training step on CUDA equals the CPU step on the same inputs and
 *   state (an AdamW state after a few steps, so the update is not Adam's first-step sign): every
 *   output and every updated state tensor within 1e-4 of its scale (max |Δ| / max |CPU value|).
 *   ViT-S/16 recipe at batch 8. TF32 stays off.
 * - **b** (`fp16`): 50 trainer iterations in fp16 against 50 in fp32 from the same start on the
 *   same batches (bundled Fashion-MNIST, ViT-S/16 recipe, batch 64): both loss curves, their
 *   largest gap, the steps the loss scaler skipped and its final scale.
 * - **c** (`throughput`): images/s and peak GPU memory (nvidia-smi, the whole process) of our step
 *   (`gpu_step_run.ts`) and of the PyTorch reference (`gpu_torch_step.py`, autocast and
 *   GradScaler, official work and our equal work), interleaved, on ready batches; ViT-S/16 in two
 *   rounds, then ViT-B/16 in one. Ours is also profiled once (onnxruntime's profiler): the op
 *   types that take the time.
 * - **d** (`pipeline`): the whole pipeline, the trainer in fp16 fed by the loader with every core
 *   decoding and augmenting JPEGs (made on the fly, about 500×375) at 224 px, against the data
 *   loader alone and the ready-batch step of c.
 *
 * ```sh
 * deno run -A bench/gpu_check.ts [--parts a,b,c,d] [--out DIR] [--python python3] [--smoke]
 * ```
 *
 * `--smoke` runs the same code on the CPU at a toy size (vit_tiny, 32 px crops, batch 4, fp32 in
 * place of fp16, no GPU memory figures), to check the script itself on a machine without a GPU.
 *
 * Prints each part's figures as it goes and writes them all to `DIR/gpu_check.json`.
 *
 * @module
 */

import { join } from "node:path";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { MaskGenerator } from "../lib/data/masking.ts";
import { addAdamWMoments, expAvgName, expAvgSqName } from "../lib/optim/adamw.ts";
import { DeviceSession } from "../lib/runtime/device_session.ts";
import { ResidentState } from "../lib/runtime/resident_state.ts";
import { Rng } from "../lib/runtime/rng.ts";
import { StateStore } from "../lib/runtime/store.ts";
import { parsePretrainArgs } from "../lib/train/args.ts";
import { countMasked, fillMaskInputs } from "../lib/train/batch_inputs.ts";
import { runConfigFromArgs } from "../lib/train/config.ts";
import { pickSlotBucket, slotBuckets } from "../lib/train/slot_buckets.ts";
import { buildIbotStep, STEP_INPUTS, STEP_OUTPUTS, stepScalarValues } from "../lib/train/step.ts";
import { IbotTrainer } from "../lib/train/trainer.ts";
import { recipeArgv, type RecipeOptions } from "./gpu_recipe.ts";
import { makeJpegFolder } from "./jpeg_folder.ts";
import { randomInputs } from "./random_inputs.ts";

const { values } = parseArgs({
  options: {
    parts: { type: "string", default: "a,b,c,d" },
    out: { type: "string", default: "." },
    python: { type: "string", default: "python3" },
    smoke: { type: "boolean", default: false },
  },
});
/** What every run of the check changes from the recipe: nothing, or the toy size of `--smoke`. */
const BASE: RecipeOptions = values.smoke
  ? {
    arch: "vit_tiny",
    device: "cpu",
    batch: 4,
    globalSize: 32,
    localSize: 16,
    localCrops: 2,
    outDim: 64,
  }
  : {};
/** The device the check runs on, and the low precision it checks (fp32 stands in on the CPU). */
const DEVICE = BASE.device ?? "cuda";
const LOW = values.smoke ? "fp32" : "fp16";
/** The recipe's flags with the check's base changes and `o` on top. */
const argvOf = (o: RecipeOptions) => recipeArgv({ ...BASE, ...o });
/** The same as the flags of the benchmark scripts (`gpu_step_run.ts`, `gpu_torch_step.py`). */
const SCRIPT_FLAGS = values.smoke
  ? [
    ...["--device", "cpu", "--precision", "fp32", "--batch", "4", "--global-size", "32"],
    ...["--local-size", "16", "--local-crops", "2", "--out-dim", "64"],
  ]
  : [];
const parts = new Set(values.parts.split(","));
const ROOT = fileURLToPath(new URL("../", import.meta.url));
const BUNDLED = join(ROOT, "data", "fashion-mnist");
const results: Record<string, unknown> = { started: new Date().toISOString() };

/** Writes what is known so far, so that a run cut short still leaves its figures. */
async function record(part: string, value: unknown): Promise<void> {
  results[part] = value;
  await Deno.writeTextFile(join(values.out, "gpu_check.json"), JSON.stringify(results, null, 1));
}

/** nvidia-smi's "pid, used MiB" lines of the compute processes; empty without nvidia-smi. */
async function nvidiaSmiApps(): Promise<string> {
  try {
    const { stdout } = await new Deno.Command("nvidia-smi", {
      args: ["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
    }).output();
    return new TextDecoder().decode(stdout).trim();
  } catch {
    return "";
  }
}

/** Peak GPU memory (MiB) of process `pid` per nvidia-smi, sampled every 200 ms until stopped. */
function watchGpuMemory(pid: number): { stop(): Promise<number> } {
  let peak = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      for (const line of (await nvidiaSmiApps()).split("\n")) {
        const [p, mib] = line.split(",").map((s) => Number(s.trim()));
        if (p === pid) peak = Math.max(peak, mib);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return peak;
    },
  };
}

/** Runs a benchmark process, returning its last stdout line (JSON) and its peak GPU memory. */
async function runWatched(
  command: string,
  args: string[],
): Promise<Record<string, unknown> & { gpu_mib: number }> {
  const child = new Deno.Command(command, { args, stdout: "piped", stderr: "piped" }).spawn();
  const watch = watchGpuMemory(child.pid);
  const { success, stdout, stderr } = await child.output();
  const gpuMib = await watch.stop();
  if (!success) {
    throw new Error(`${args.join(" ")} failed:\n${new TextDecoder().decode(stderr).slice(-4000)}`);
  }
  const last = new TextDecoder().decode(stdout).trim().split("\n").at(-1)!;
  return { ...JSON.parse(last), gpu_mib: gpuMib };
}

/** max |a − b| / max |b| over a tensor. */
function relativeError(a: Float32Array, b: Float32Array): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return scale === 0 ? diff : diff / scale;
}

/** Part a: one fp32 step on CUDA against the same step on the CPU. */
async function parity(): Promise<void> {
  const cpuArgs = parsePretrainArgs(argvOf({ precision: "fp32", batch: 8, device: "cpu" })).args;
  const config = runConfigFromArgs(cpuArgs);
  const rows = config.step.globalCrops * config.step.batch;
  const rng = new Rng(1);
  const generator = new MaskGenerator(config.masking);
  const masks = Array.from(
    { length: rows },
    () => generator.draw(config.maskGrid, config.maskGrid, 1, rng),
  );
  const slots = pickSlotBucket(
    slotBuckets(rows * config.step.maskSlots),
    countMasked(masks),
  );
  const built = buildIbotStep({ ...config.step, slots });
  const store = StateStore.fromParams(built.graph.params, 0);
  addAdamWMoments(store, built.trainable);
  for (const name of built.trainable) {
    store.get(expAvgName(name)).forEach((_, i, m) => (m[i] = 3e-3 * rng.normal()));
    store.get(expAvgSqName(name)).forEach((_, i, v) => (v[i] = 1e-5 * rng.uniform()));
  }
  const feeds = randomInputs(built.graph.inputs, rng, (name) => store.has(name));
  fillMaskInputs(feeds, masks, slots, config.maskGrid * config.maskGrid);
  for (const name of [STEP_INPUTS.dropPathGlobal, STEP_INPUTS.dropPathLocal]) {
    (feeds[name] as Float32Array | undefined)?.fill(1);
  }
  const scalars = stepScalarValues({
    lr: 5e-4 * 8 / 256,
    weightDecay: 0.04,
    step: 5,
    lastLayerActive: true,
    lastLayerStep: 5,
    momentum: 0.996,
    teacherTemp: 0.07,
    teacherPatchTemp: 0.07,
  });
  for (const [name, value] of Object.entries(scalars)) feeds[name] = Float32Array.of(value);

  const results: Record<string, { outputs: Record<string, Float32Array>; state: StateStore }> = {};
  for (const device of ["cpu", DEVICE] as const) {
    const session = await DeviceSession.create(built.graph, { device, memoryArena: false });
    const state = await ResidentState.create(store, built.updatedState, { device });
    const out = await session.run(feeds, state);
    state.swap();
    const after = StateStore.fromNamedTensors(
      new Map([...store.toNamedTensors()].map(([n, t]) => [n, { ...t, data: t.data.slice() }])),
    );
    await state.download(after);
    const outputs: Record<string, Float32Array> = {};
    for (const name of STEP_OUTPUTS) outputs[name] = (out[name] as Float32Array).slice();
    results[device === "cpu" && "cpu" in results ? "cuda" : device] = { outputs, state: after };
    session.release();
    state.release();
  }
  const errors: [string, number][] = [];
  for (const name of STEP_OUTPUTS) {
    errors.push([name, relativeError(results.cuda.outputs[name], results.cpu.outputs[name])]);
  }
  for (const name of built.updatedState) {
    errors.push([name, relativeError(results.cuda.state.get(name), results.cpu.state.get(name))]);
  }
  errors.sort((x, y) => y[1] - x[1]);
  const pass = errors[0][1] <= 1e-4;
  console.log(
    `a. parity: fp32 step on CUDA vs CPU (ViT-S/16, batch 8, ${slots} slots): ` +
      `${errors.length} tensors, worst ${errors[0][0]} at ${errors[0][1].toExponential(2)} ` +
      `of its scale: ${pass ? "PASS" : "FAIL"} (limit 1e-4); loss ${
        results.cuda.outputs.loss[0]
      } on CUDA, ${results.cpu.outputs.loss[0]} on the CPU`,
  );
  await record("a_parity", { pass, worst: errors.slice(0, 10), tensors: errors.length });
}

/** Trains `iterations` steps with the trainer and returns each step's report and the img/s. */
async function trainFor(
  recipe: RecipeOptions,
  extra: string[],
  iterations: number,
  timedFrom: number,
): Promise<{ losses: number[]; skipped: number[]; imagesPerS: number; gpuMib: number }> {
  const output = await Deno.makeTempDir({ prefix: "gpu_check_run_" });
  const { args } = parsePretrainArgs([...argvOf({ ...recipe, outputDir: output }), ...extra]);
  const watch = watchGpuMemory(Deno.pid);
  const trainer = await IbotTrainer.create(args, (line) => console.log(`   ${line}`));
  const losses: number[] = [];
  const skipped: number[] = [];
  const controller = new AbortController();
  let timedStart = 0;
  let timedSeconds = 0;
  try {
    await trainer.train(controller.signal, (report) => {
      losses.push(report.loss);
      if (report.skipped) skipped.push(losses.length - 1);
      if (losses.length === timedFrom) timedStart = performance.now();
      if (losses.length === iterations) {
        timedSeconds = (performance.now() - timedStart) / 1000;
        controller.abort();
      }
    });
  } finally {
    trainer.close();
    await Deno.remove(output, { recursive: true });
  }
  const imagesPerS = (iterations - timedFrom) * args.batch_size_per_gpu / timedSeconds;
  return { losses, skipped, imagesPerS, gpuMib: await watch.stop() };
}

/** Part b: 50 trainer iterations in fp16 against fp32 from the same start. */
async function fp16AgainstFp32(): Promise<void> {
  const runs: Record<string, Awaited<ReturnType<typeof trainFor>>> = {};
  for (const [name, precision] of [["fp32", "fp32"], ["fp16", LOW]] as const) {
    runs[name] = await trainFor(
      { precision, dataPath: BUNDLED },
      ["--num_workers", String(navigator.hardwareConcurrency), "--print_freq", "10"],
      50,
      10,
    );
  }
  const gaps = runs.fp16.losses.map((l, i) => Math.abs(l - runs.fp32.losses[i]));
  const tail = (xs: number[]) => xs.slice(-10).reduce((s, x) => s + x, 0) / 10;
  const late = runs.fp16.skipped.filter((i) => i >= 10);
  console.log(
    `b. fp16 vs fp32, 50 iterations: mean loss of the last 10 ${
      tail(runs.fp16.losses).toFixed(4)
    } ` +
      `(fp16) vs ${tail(runs.fp32.losses).toFixed(4)} (fp32), largest per-step gap ${
        Math.max(...gaps).toFixed(4)
      }; skipped steps ${JSON.stringify(runs.fp16.skipped)} (${late.length} after the 10th)`,
  );
  await record("b_fp16", {
    fp32_losses: runs.fp32.losses,
    fp16_losses: runs.fp16.losses,
    fp16_skipped: runs.fp16.skipped,
    largest_gap: Math.max(...gaps),
  });
}

/** Part c: throughput and memory of ours and of PyTorch, interleaved. */
async function throughput(): Promise<Record<string, number>> {
  const rows: Record<string, unknown>[] = [];
  const best: Record<string, number> = {};
  const ours = (arch: string, extra: string[] = []) =>
    runWatched(Deno.execPath(), [
      "run",
      "-A",
      join(ROOT, "bench", "gpu_step_run.ts"),
      "--arch",
      arch,
      "--steps",
      "15",
      "--warmup",
      "5",
      ...SCRIPT_FLAGS,
      ...extra,
    ]);
  const torch = (arch: string, work: string) =>
    runWatched(values.python, [
      join(ROOT, "bench", "gpu_torch_step.py"),
      "--arch",
      arch,
      "--work",
      work,
      "--steps",
      "15",
      "--warmup",
      "5",
      ...SCRIPT_FLAGS,
    ]);
  const archs = values.smoke
    ? [["vit_tiny", 1]] as const
    : [["vit_small", 2], ["vit_base", 1]] as const;
  for (const [arch, rounds] of archs) {
    for (let round = 0; round < rounds; round++) {
      for (
        const [side, run] of [
          ["ours", () => ours(arch)],
          ["torch_official", () => torch(arch, "official")],
          ["torch_equal", () => torch(arch, "equal")],
        ] as const
      ) {
        const report = await run();
        const ips = report.images_per_s as number;
        rows.push({ arch, round, side, ...report, seconds: undefined, losses: undefined });
        best[`${arch}/${side}`] = Math.max(best[`${arch}/${side}`] ?? 0, ips);
        best[`${arch}/${side}/gpu_mib`] = report.gpu_mib;
        console.log(
          `c. ${arch} ${side} round ${round + 1}: ${ips.toFixed(1)} img/s, ${
            (report.s_per_step_median as number).toFixed(3)
          } s/step, peak GPU ${report.gpu_mib} MiB (nvidia-smi)` +
            (side === "ours"
              ? `, ${report.slots} slots, ${Number(report.gmac).toFixed(0)} GMAC`
              : ""),
        );
      }
    }
    const o = best[`${arch}/ours`];
    console.log(
      `c. ${arch}: ours / PyTorch official work ${
        (o / best[`${arch}/torch_official`]).toFixed(2)
      }` +
        ` (ours computes only what the loss uses); ours / PyTorch equal work ${
          (o / best[`${arch}/torch_equal`]).toFixed(2)
        }; peak GPU memory ours ${best[`${arch}/ours/gpu_mib`]} MiB, PyTorch ${
          best[`${arch}/torch_official/gpu_mib`]
        } MiB`,
    );
  }
  const profileDir = await Deno.makeTempDir({ prefix: "gpu_check_profile_" });
  const profiled = await ours(archs[0][0], ["--steps", "3", "--profile", join(profileDir, "step")]);
  const hot = await profileSummary(profileDir);
  await Deno.remove(profileDir, { recursive: true });
  console.log(`c. where our ViT-S/16 fp16 step spends its time (onnxruntime profiler, 8 steps):`);
  for (const [op, ms] of hot.slice(0, 12)) console.log(`     ${op.padEnd(28)} ${ms.toFixed(1)} ms`);
  await record("c_throughput", {
    rows,
    best,
    profile: hot,
    profiled_images_per_s: profiled.images_per_s,
  });
  return best;
}

/** Total kernel time per op type (ms) over the onnxruntime profiles in `dir`, largest first. */
async function profileSummary(dir: string): Promise<[string, number][]> {
  const totals = new Map<string, number>();
  for await (const entry of Deno.readDir(dir)) {
    const events = JSON.parse(await Deno.readTextFile(join(dir, entry.name))) as {
      cat: string;
      name: string;
      dur: number;
      args?: { op_name?: string };
    }[];
    for (const e of events) {
      if (e.cat !== "Node" || !e.name.endsWith("_kernel_time")) continue;
      const op = e.args?.op_name ?? e.name;
      totals.set(op, (totals.get(op) ?? 0) + e.dur / 1000);
    }
  }
  return [...totals].sort((a, b) => b[1] - a[1]);
}

/** Part d: the whole pipeline (JPEG loading and augmentation by every core) feeding fp16 steps. */
async function pipeline(readyImagesPerS?: number): Promise<void> {
  const folder = await Deno.makeTempDir({ prefix: "gpu_check_jpegs_" });
  try {
    const batch = BASE.batch ?? 64;
    await makeJpegFolder(folder, batch * 40, values.smoke ? 32 : 512);
    const workers = String(navigator.hardwareConcurrency);
    const loader = await runWatched(Deno.execPath(), [
      "run",
      "-A",
      join(ROOT, "bench", "loader_throughput.ts"),
      "--workers",
      workers,
      "--batches",
      "15",
      "--batch",
      String(batch),
    ]);
    const run = await trainFor(
      { precision: LOW, dataPath: folder },
      ["--num_workers", workers, "--print_freq", "5"],
      30,
      10,
    );
    console.log(
      `d. whole pipeline, ViT-S/16 fp16 fed by ${workers} loader workers from JPEGs: ` +
        `${run.imagesPerS.toFixed(1)} img/s; the loader alone ${
          Number(loader.images_per_s).toFixed(1)
        } img/s; the step on ready batches ${
          readyImagesPerS?.toFixed(1) ?? "(part c not run)"
        } img/s`,
    );
    await record("d_pipeline", {
      images_per_s: run.imagesPerS,
      loader_images_per_s: loader.images_per_s,
      ready_images_per_s: readyImagesPerS ?? null,
      gpu_mib: run.gpuMib,
    });
  } finally {
    await Deno.remove(folder, { recursive: true });
  }
}

if (parts.has("a")) await parity();
if (parts.has("b")) await fp16AgainstFp32();
const best = parts.has("c") ? await throughput() : undefined;
if (parts.has("d")) await pipeline(best?.[`${values.smoke ? "vit_tiny" : "vit_small"}/ours`]);
await record("finished", new Date().toISOString());

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { assert } from "../assert.ts";
import { pickSlotBucket, slotBuckets } from "../../lib/train/slot_buckets.ts";
import { PYTHON, torchAvailable } from "../reference/torch.ts";

const ignore = !torchAvailable();
const HERE = dirname(fileURLToPath(import.meta.url));
const SCRIPT = join(HERE, "..", "..", "bench", "gpu_torch_step.py");

/** The tiny CPU setting: vit_tiny, `globalSize` px and 16 px crops, batch 2, two timed steps. */
function tiny(globalSize = 32): string[] {
  return [
    ...["--device", "cpu", "--arch", "vit_tiny", "--batch", "2", "--steps", "2", "--warmup", "1"],
    ...["--global-size", String(globalSize), "--local-size", "16", "--local-crops", "2"],
    ...["--out-dim", "256", "--threads", "1"],
  ];
}

/** What `bench/gpu_torch_step.py` prints (the fields the tests read). */
interface GpuStepReport {
  readonly work: string;
  readonly device: string;
  readonly precision: string;
  readonly batch: number;
  readonly global_crops: number[];
  readonly local_crops: number[];
  readonly gpu: string | null;
  readonly torch: string;
  readonly seconds: number[];
  readonly s_per_step_median: number;
  readonly images_per_s: number;
  readonly losses: number[];
  readonly skipped_steps: number[];
  readonly loss_scale: number | null;
  readonly slots_mean: number | null;
  readonly masked_mean: number | null;
  readonly peak_rss_mib?: number;
}

async function runPython(args: readonly string[]) {
  const { code, stdout, stderr } = await new Deno.Command(PYTHON, {
    args: [...args],
    env: { OMP_NUM_THREADS: "1" },
  }).output();
  const text = new TextDecoder();
  return { code, stdout: text.decode(stdout), stderr: text.decode(stderr) };
}

async function runStep(
  precision: string,
  work = "official",
  globalSize = 32,
): Promise<GpuStepReport> {
  const run = await runPython([
    SCRIPT,
    ...tiny(globalSize),
    ...["--precision", precision, "--work", work],
  ]);
  assert.equal(run.code, 0, run.stderr);
  return JSON.parse(run.stdout);
}

Deno.test({
  name: "the reference's loss-scaled update: the official order, unscaled clip, skip on overflow",
  ignore,
  async fn() {
    const run = await runPython([join(HERE, "amp_update_check.py")]);
    assert.equal(run.code, 0, run.stderr);
    const result = JSON.parse(run.stdout);
    assert.deepEqual(result.order, [
      "scale",
      "unscale_",
      "clip",
      "cancel",
      "step",
      "update",
      "ema",
    ]);
    assert.equal(result.norms, 0, "the clip saw other gradient norms than without a scaler");
    assert.equal(result.finite, 0, "a finite scale changed the update");
    assert.equal(result.student_moved, 0, "the student stepped on an overflow");
    assert(result.teacher_moved > 1e-5, `the teacher moved by ${result.teacher_moved} only`);
    assert.equal(result.teacher_ema, 0, "the teacher did not take its EMA step");
  },
});

Deno.test({
  name: "gpu_torch_step.py runs the tiny setting on the CPU in fp32 and bf16 and reports it",
  ignore,
  async fn() {
    const fp32 = await runStep("fp32");
    assert.equal(fp32.work, "official");
    assert.equal(fp32.device, "cpu");
    assert.equal(fp32.precision, "fp32");
    assert.equal(fp32.gpu, null);
    assert.deepEqual([fp32.global_crops, fp32.local_crops], [[2, 32], [2, 16]]);
    assert.match(fp32.torch, /^\d+\.\d+/);
    assert.equal(fp32.seconds.length, 2);
    const [a, b] = fp32.seconds;
    assert(a > 0 && b > 0, `${fp32.seconds}`);
    assert.equal(fp32.s_per_step_median, (a + b) / 2);
    assert.equal(fp32.images_per_s, 2 / fp32.s_per_step_median);
    assert.equal(fp32.losses.length, 2);
    for (const loss of fp32.losses) assert(Number.isFinite(loss) && loss > 0, `loss ${loss}`);
    assert.deepEqual(fp32.skipped_steps, []);
    assert.equal(fp32.loss_scale, null);
    assert.equal(fp32.slots_mean, null);
    assert.equal(fp32.masked_mean, null);
    assert(fp32.peak_rss_mib! > 0);

    // Same seeds, same batch and model: bfloat16 autocast changes the losses a little only.
    const bf16 = await runStep("bf16");
    assert.equal(bf16.precision, "bf16");
    for (const [i, loss] of bf16.losses.entries()) {
      const relative = Math.abs(loss - fp32.losses[i]) / fp32.losses[i];
      assert(relative > 0 && relative < 0.02, `bf16 loss ${loss} against fp32 ${fp32.losses[i]}`);
    }
  },
});

Deno.test({
  name: "gpu_torch_step.py --work equal: the official losses, on the slot bucket ours would pick",
  ignore,
  async fn() {
    // 64 px global crops: 16 patches, at most floor(0.5 · 16) = 8 masked per crop, so the batch
    // holds at most 2 · 2 · 8 = 32 and the buckets are 8, 16, 24 and 32.
    const official = await runStep("fp32", "official", 64);
    const equal = await runStep("fp32", "equal", 64);
    assert.equal(equal.work, "equal");
    assert.deepEqual(slotBuckets(32), [8, 16, 24, 32]);
    const masked = equal.masked_mean!;
    assert(masked > 0, `masked ${masked}`);
    assert.equal(equal.slots_mean, pickSlotBucket(slotBuckets(32), masked));
    assert(equal.slots_mean! < 32, `S ${equal.slots_mean} is the largest bucket`);
    for (const [i, loss] of equal.losses.entries()) {
      const relative = Math.abs(loss - official.losses[i]) / official.losses[i];
      assert(relative < 1e-5, `equal-work loss ${loss} against official ${official.losses[i]}`);
    }

    // The forward passes run under autocast: bfloat16 changes the losses a little only.
    const bf16 = await runStep("bf16", "equal", 64);
    assert.equal(bf16.slots_mean, equal.slots_mean);
    for (const [i, loss] of bf16.losses.entries()) {
      const relative = Math.abs(loss - equal.losses[i]) / equal.losses[i];
      assert(relative > 0 && relative < 0.02, `bf16 loss ${loss} against fp32 ${equal.losses[i]}`);
    }
  },
});

Deno.test({
  name: "gpu_torch_step.py refuses fp16 on the CPU in one sentence",
  ignore,
  async fn() {
    const run = await runPython([SCRIPT, ...tiny(), "--precision", "fp16"]);
    assert.equal(run.code, 2);
    assert.equal(run.stdout, "");
    assert.match(
      run.stderr.trimEnd().split("\n").at(-1)!,
      /^gpu_torch_step\.py: error: --precision fp16 needs --device cuda /,
    );
  },
});

/**
 * The trainer's fp16 loss scaling (torch.cuda.amp.GradScaler semantics) on the CPU provider, which
 * runs the fp16 step (the task refuses fp16 on the CPU; the trainer itself does not): the scaler's
 * state is checkpointed under `fp16_scaler`, and a skipped step is no AdamW step.
 */

import { join } from "node:path";
import { assert } from "../assert.ts";
import { loadSafetensors, saveSafetensors } from "../../lib/checkpoint/safetensors.ts";
import { parsePretrainArgs, type PretrainArgs } from "../../lib/train/args.ts";
import { CHECKPOINT_FILE, IbotTrainer, type IterationReport } from "../../lib/train/trainer.ts";
import type { NamedTensor } from "../../lib/runtime/named_tensor.ts";
import { tinyModelArgv, writeTinyDataPath } from "./tiny_run.ts";

const root = await Deno.makeTempDir({ prefix: "ibot_trainer_fp16_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(root, { recursive: true }));

const DATA = join(root, "data");
await writeTinyDataPath(DATA, 32);

/** A tiny fp16 run: vit_mini on 16 px crops, 4 iterations of 8 images per epoch. */
function fp16Args(output: string, epochs: number): PretrainArgs {
  const { args } = parsePretrainArgs([
    ...tinyModelArgv(8),
    ...["--epochs", String(epochs), "--warmup_epochs", "1", "--warmup_teacher_temp_epochs", "1"],
    ...["--knn_eval", "false", "--num_workers", "1", "--threads", "1"],
    ...["--data_path", DATA, "--output_dir", output],
  ]);
  return { ...args, precision: "fp16", use_fp16: true };
}

async function train(args: PretrainArgs): Promise<IterationReport[]> {
  const reports: IterationReport[] = [];
  const trainer = await IbotTrainer.create(args, () => {});
  try {
    await trainer.train(undefined, (report) => {
      reports.push(report);
    });
  } finally {
    await trainer.close();
  }
  return reports;
}

/**
 * Whether every teacher tensor equals the student tensor of the same name, bit for bit, outside
 * the last layers (the shared teacher head starts from the student's `last_layer2`).
 */
function teacherEqualsStudent(tensors: ReadonlyMap<string, NamedTensor>): boolean {
  let compared = 0;
  for (const [name, tensor] of tensors) {
    if (!name.startsWith("teacher.") || name.includes("last_layer")) continue;
    const student = tensors.get(`student.${name.slice("teacher.".length)}`);
    if (!student) continue;
    compared++;
    const a = tensor.data as Float32Array;
    const b = student.data as Float32Array;
    if (!a.every((v, i) => Object.is(v, b[i]))) return false;
  }
  assert(compared > 0);
  return true;
}

Deno.test("IbotTrainer fp16: overflowing steps are skipped and not counted; the scaler is checkpointed", async () => {
  const dir = join(root, "run");
  // At this tiny size (8 images a step) the gradients overflow float16 at every scale from 2^16
  // down to 2^13: each step is skipped and halves the scale, as torch's GradScaler does.
  const first = await train(fp16Args(dir, 1));
  assert.equal(first.length, 4);
  assert(first.every((r) => r.skipped && Number.isFinite(r.loss)));
  const path = join(dir, CHECKPOINT_FILE);
  const after = await loadSafetensors(path);
  assert.equal(after.metadata.step, "0", "skipped steps are not AdamW steps");
  assert.equal(after.metadata.last_layer_step, "0");
  assert.deepEqual(JSON.parse(after.metadata.fp16_scaler), {
    scale: 2 ** 12,
    growth_factor: 2,
    backoff_factor: 0.5,
    growth_interval: 2000,
    _growth_tracker: 0,
  });
  // The student never moved, so the teacher's EMA toward it kept them equal.
  assert(teacherEqualsStudent(after.tensors));
  for (const [name, tensor] of after.tensors) {
    if (name.startsWith("exp_avg")) assert((tensor.data as Float32Array).every((v) => v === 0));
  }

  // Resumed at scale 1, where the gradients fit: every step is taken and counted.
  const metadata = {
    ...after.metadata,
    fp16_scaler: JSON.stringify({ ...JSON.parse(after.metadata.fp16_scaler), scale: 1 }),
  };
  await saveSafetensors(path, after.tensors, metadata);
  const second = await train(fp16Args(dir, 2));
  assert.equal(second.length, 4);
  assert(second.every((r) => !r.skipped));
  const resumed = await loadSafetensors(path);
  assert.equal(resumed.metadata.step, "4");
  assert.equal(resumed.metadata.last_layer_step, "4");
  const scaler = JSON.parse(resumed.metadata.fp16_scaler);
  assert.equal(scaler.scale, 1);
  assert.equal(scaler._growth_tracker, 4);
  assert(!teacherEqualsStudent(resumed.tensors));
});

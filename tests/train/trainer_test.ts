import { join } from "node:path";
import { assert } from "../assert.ts";
import {
  decodeSafetensors,
  loadSafetensors,
  saveSafetensors,
} from "../../lib/checkpoint/safetensors.ts";
import { parsePretrainArgs, type PretrainArgs } from "../../lib/train/args.ts";
import {
  CHECKPOINT_FORMAT,
  type TrainingProgress,
} from "../../lib/checkpoint/training_checkpoint.ts";
import {
  CHECKPOINT_FILE,
  IbotTrainer,
  type IterationReport,
  NonFiniteLossError,
  type TrainOutcome,
} from "../../lib/train/trainer.ts";
import { writeVendoredFolder } from "../data/fixtures.ts";
import { runDenoTask, type TaskRun } from "../task_runner.ts";

const REPO = new URL("../../", import.meta.url).pathname;
const LOG_KEYS = [
  "train_loss",
  "train_cls",
  "train_patch",
  "train_lr",
  "train_wd",
  "train_acc",
  "train_nmi",
  "train_ari",
  "train_fscore",
  "train_adjacc",
  "epoch",
];

const root = await Deno.makeTempDir({ prefix: "ibot_trainer_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(root, { recursive: true }));

/** The first 48 train and 16 test images of the bundled Fashion-MNIST, as plain IDX files. */
const DATA = await writeVendoredFolder(join(root, "data"), 48, 16);

let dirCount = 0;
/** A fresh, empty output directory. */
async function outputDir(): Promise<string> {
  const dir = join(root, `run${dirCount++}`);
  await Deno.mkdir(dir);
  return dir;
}

/** A tiny run (vit_mini on 16 px crops, 6 iterations of 8 images per epoch, 2 epochs). */
function tinyArgv(output: string, extra: string[] = []): string[] {
  return [
    ...["--arch", "vit_mini", "--patch_size", "4", "--img_size", "16"],
    ...["--global_crop_size", "16", "--local_crop_size", "8", "--local_crops_number", "1"],
    ...["--batch_size_per_gpu", "8", "--out_dim", "32", "--patch_out_dim", "32"],
    ...["--head_hidden_dim", "32", "--head_bottleneck_dim", "16"],
    ...["--epochs", "2", "--warmup_epochs", "1", "--warmup_teacher_temp_epochs", "1"],
    ...["--knn_eval", "false", "--num_workers", "1", "--threads", "1"],
    ...["--data_path", DATA, "--output_dir", output],
    ...extra,
  ];
}

function tinyArgs(output: string, extra: string[] = []): PretrainArgs {
  return parsePretrainArgs(tinyArgv(output, extra)).args;
}

interface RunResult {
  outcome: TrainOutcome;
  position: TrainingProgress;
  lines: string[];
}

/**
 * Creates a trainer (resuming from its output directory if there is a checkpoint) and trains,
 * aborting once a logged line satisfies `abortWhen`; `onLine` sees every line.
 */
async function runTrainer(
  args: PretrainArgs,
  abortWhen: (line: string) => boolean = () => false,
  onLine: (line: string) => void = () => {},
): Promise<RunResult> {
  const controller = new AbortController();
  const lines: string[] = [];
  const trainer = await IbotTrainer.create(args, (line) => {
    lines.push(line);
    onLine(line);
    if (abortWhen(line)) controller.abort();
  });
  try {
    const outcome = await trainer.train(controller.signal);
    return { outcome, position: trainer.position, lines };
  } finally {
    await trainer.close();
  }
}

/** The metadata of a safetensors file, read synchronously. */
function metadataOf(path: string): Record<string, string> {
  return decodeSafetensors(Deno.readFileSync(path), path).metadata;
}

/** The JSON lines of `log.txt`. */
async function logLines(dir: string): Promise<Record<string, number>[]> {
  const text = await Deno.readTextFile(join(dir, "log.txt"));
  return text.trimEnd().split("\n").map((line) => JSON.parse(line));
}

/** Asserts that two checkpoint files hold the same tensors, bit for bit, and the same progress. */
async function assertSameCheckpoint(expectedPath: string, actualPath: string): Promise<void> {
  const expected = await loadSafetensors(expectedPath);
  const actual = await loadSafetensors(actualPath);
  assert.deepEqual([...actual.tensors.keys()], [...expected.tensors.keys()]);
  for (const [name, tensor] of expected.tensors) {
    const other = actual.tensors.get(name)!;
    assert.deepEqual(other.shape, tensor.shape, name);
    const bytes = (t: typeof tensor) =>
      new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    assert.deepEqual(bytes(other), bytes(tensor), `${name} differs`);
  }
  for (const key of ["epoch", "iteration", "step", "last_layer_step"]) {
    assert.equal(actual.metadata[key], expected.metadata[key], key);
  }
}

/** Asserts that `promise` rejects with a one-line message matching `pattern`. */
async function assertOneSentence(promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (error: Error) => {
    assert.match(error.message, pattern);
    assert(!error.message.includes("\n"), `more than one line: ${error.message}`);
    return true;
  });
}

interface FullRun {
  dir: string;
  result: RunResult;
  /** The `epoch` metadata of checkpoint.safetensors when each "Epoch N done" line came. */
  epochsOnDisk: string[];
}

let fullRun: Promise<FullRun> | undefined;
/** The uninterrupted 2-epoch run with a numbered checkpoint every epoch, shared by the tests. */
function uninterrupted(): Promise<FullRun> {
  fullRun ??= (async () => {
    const dir = await outputDir();
    const epochsOnDisk: string[] = [];
    const result = await runTrainer(tinyArgs(dir, ["--saveckp_freq", "1"]), undefined, (line) => {
      if (/^Epoch \d+ done/.test(line)) {
        epochsOnDisk.push(metadataOf(join(dir, CHECKPOINT_FILE)).epoch);
      }
    });
    return { dir, result, epochsOnDisk };
  })();
  return fullRun;
}

Deno.test("IbotTrainer: checkpoints every epoch, numbered copies and the official log.txt", async () => {
  const { dir, result, epochsOnDisk } = await uninterrupted();
  assert.equal(result.outcome, "finished");
  assert.deepEqual(result.position, { epoch: 2, iteration: 0, step: 12, lastLayerStep: 6 });
  assert.deepEqual(epochsOnDisk, ["1", "2"]);

  const files = [];
  for await (const entry of Deno.readDir(dir)) files.push(entry.name);
  assert.deepEqual(files.sort(), [
    "checkpoint.safetensors",
    "checkpoint0001.safetensors",
    "log.txt",
  ]);
  const { tensors, metadata } = await loadSafetensors(join(dir, CHECKPOINT_FILE));
  assert.equal(metadata.format, CHECKPOINT_FORMAT);
  assert.equal(metadata.epoch, "2");
  assert.equal(metadata.iteration, "0");
  assert.equal(metadata.step, "12");
  // --freeze_last_layer 1 (official): the last layer steps in epoch 1 only.
  assert.equal(metadata.last_layer_step, "6");
  assert.equal(JSON.parse(metadata.args).out_dim, 32);
  assert.deepEqual(tensors.get("ibot_loss.center")?.shape, [1, 32]);
  assert.deepEqual(tensors.get("ibot_loss.center2")?.shape, [1, 1, 32]);
  for (const name of ["student", "teacher", "exp_avg.student", "exp_avg_sq.student"]) {
    assert(tensors.has(`${name}.backbone.cls_token`), `${name}.backbone.cls_token`);
  }
  assert(!tensors.has("teacher.backbone.masked_embed"));
  // The official cadence: checkpoint{epoch:04d} after 0-based epoch 1 holds epoch 2.
  await assertSameCheckpoint(join(dir, CHECKPOINT_FILE), join(dir, "checkpoint0001.safetensors"));

  const log = await logLines(dir);
  assert.equal(log.length, 2);
  log.forEach((line, epoch) => {
    assert.deepEqual(Object.keys(line), LOG_KEYS);
    assert.equal(line.epoch, epoch);
    assert.equal(line.train_adjacc, -1);
    for (const key of LOG_KEYS) assert(Number.isFinite(line[key]), `${key} = ${line[key]}`);
    assert(line.train_loss > 0 && line.train_lr > 0 && line.train_wd > 0);
    assert.equal(line.train_loss.toFixed(3), (line.train_cls + line.train_patch).toFixed(3));
  });
  // The progress lines carry loss, lr, throughput and time left.
  const progress = result.lines.filter((line) => line.startsWith("Epoch ["));
  assert.equal(progress.length, 2);
  for (const line of progress) {
    assert.match(
      line,
      /loss \d+\.\d{4} .* lr \d\.\d\de-\d+ .* \d+\.\d img\/s {2}eta \d+:\d\d:\d\d$/,
    );
  }
});

Deno.test("IbotTrainer: an abort at the end of epoch 0, then a resume, ends as the uninterrupted run", async () => {
  const full = await uninterrupted();
  const dir = await outputDir();
  const args = tinyArgs(dir, ["--saveckp_freq", "1"]);
  const first = await runTrainer(args, (line) => line.startsWith("Epoch [0/2] [6/6]"));
  assert.equal(first.outcome, "interrupted");
  // The epoch is completed (checkpoint and log line) before stopping.
  assert.deepEqual(first.position, { epoch: 1, iteration: 0, step: 6, lastLayerStep: 0 });
  assert.equal(metadataOf(join(dir, CHECKPOINT_FILE)).epoch, "1");
  assert.deepEqual(await logLines(dir), [(await logLines(full.dir))[0]]);

  const second = await runTrainer(args);
  assert.equal(second.outcome, "finished");
  assert.match(second.lines[0], /^Resuming from .*checkpoint\.safetensors: epoch 1, iteration 0$/);
  assert.deepEqual(second.position, full.result.position);
  await assertSameCheckpoint(join(full.dir, CHECKPOINT_FILE), join(dir, CHECKPOINT_FILE));
  await assertSameCheckpoint(
    join(full.dir, "checkpoint0001.safetensors"),
    join(dir, "checkpoint0001.safetensors"),
  );
  assert.deepEqual(await logLines(dir), await logLines(full.dir));
});

Deno.test("IbotTrainer: an abort in the middle of epoch 0, then a resume, ends in the same state", async () => {
  const full = await uninterrupted();
  const dir = await outputDir();
  const args = tinyArgs(dir, ["--print_freq", "1"]);
  const first = await runTrainer(args, (line) => line.startsWith("Epoch [0/2] [3/6]"));
  assert.equal(first.outcome, "interrupted");
  assert.deepEqual(first.position, { epoch: 0, iteration: 3, step: 3, lastLayerStep: 0 });
  const saved = metadataOf(join(dir, CHECKPOINT_FILE));
  assert.equal(saved.epoch, "0");
  assert.equal(saved.iteration, "3");
  await assert.rejects(Deno.stat(join(dir, "log.txt")), Deno.errors.NotFound);

  const second = await runTrainer(args);
  assert.equal(second.outcome, "finished");
  assert.match(second.lines[0], /: epoch 0, iteration 3$/);
  assert.match(second.lines[1], /^Compiled the training step for \d+ patch slots/);
  assert.match(second.lines[2], /^Epoch \[0\/2\] \[4\/6\]/);
  assert.deepEqual(second.position, full.result.position);
  await assertSameCheckpoint(join(full.dir, CHECKPOINT_FILE), join(dir, CHECKPOINT_FILE));
  // The checkpoint carried epoch 0's running statistics: both log lines match the full run.
  assert.deepEqual(await logLines(dir), await logLines(full.dir));
});

Deno.test("IbotTrainer: the iteration callback reports each iteration's loss and may abort", async () => {
  const dir = await outputDir();
  const controller = new AbortController();
  const trainer = await IbotTrainer.create(tinyArgs(dir, ["--print_freq", "1"]), () => {});
  const reports: IterationReport[] = [];
  try {
    const outcome = await trainer.train(controller.signal, (report) => {
      reports.push(report);
      if (report.epoch === 1 && report.iteration === 2) controller.abort();
    });
    assert.equal(outcome, "interrupted");
    assert.deepEqual(trainer.position, { epoch: 1, iteration: 2, step: 8, lastLayerStep: 2 });
  } finally {
    await trainer.close();
  }
  assert.deepEqual(
    reports.map((r) => [r.epoch, r.iteration, r.itersPerEpoch]),
    [...[1, 2, 3, 4, 5, 6].map((i) => [0, i, 6]), [1, 1, 6], [1, 2, 6]],
  );
  for (const r of reports) {
    assert(Number.isFinite(r.loss) && r.loss > 0, `loss ${r.loss}`);
    assert(
      Math.abs(r.loss - (r.cls + r.patch)) < 1e-4 * r.loss,
      `${r.loss} ≠ ${r.cls} + ${r.patch}`,
    );
    assert(r.lr >= 0);
  }
  assert(reports[0].lr < reports[5].lr, "the learning rate warms up over epoch 0");
});

Deno.test("IbotTrainer: compiles the step only for the patch-slot buckets its batches need", async () => {
  // pred_ratio 0 0.3 ± 0 0.2: at most 8 of the 16 patches, so up to 2 · 8 · 8 = 128 slots in
  // buckets of 16, 32, …, 128; half the crops are unmasked, the rest mask 1.6 to 8 patches.
  const dir = await outputDir();
  const args = tinyArgs(dir, [
    ...["--pred_ratio", "0", "0.3", "--pred_ratio_var", "0", "0.2", "--epochs", "1"],
  ]);
  const lines: string[] = [];
  const trainer = await IbotTrainer.create(args, (line) => lines.push(line));
  const used: number[] = [];
  try {
    assert.equal(
      await trainer.train(undefined, (report) => void used.push(report.slots)),
      "finished",
    );
  } finally {
    await trainer.close();
  }
  const buckets = [16, 32, 48, 64, 80, 96, 112, 128];
  assert.equal(used.length, 6);
  for (const slots of used) assert(buckets.includes(slots), `${slots} is not a bucket`);
  assert(Math.max(...used) < 128, `the batches needed the largest bucket: ${used}`);
  const compiled = lines.flatMap((line) => {
    const match = line.match(
      /^Compiled the training step for (\d+) patch slots \(bucket (\d) of 8\) in \d+\.\d s$/,
    );
    return match ? [[Number(match[1]), Number(match[2])]] : [];
  });
  // One line per bucket, at its first use, in the order the batches needed them.
  const firstUses = [...new Set(used)];
  assert.deepEqual(compiled, firstUses.map((slots) => [slots, buckets.indexOf(slots) + 1]));
  assert.equal(lines.filter((line) => line.startsWith("Compiled")).length, firstUses.length);
});

Deno.test("IbotTrainer: --load_from is joined to the output directory and a missing one is refused", async () => {
  const full = await uninterrupted();
  const trainer = await IbotTrainer.create(
    tinyArgs(full.dir, ["--load_from", "checkpoint0001.safetensors"]),
    () => {},
  );
  try {
    assert.deepEqual(trainer.position, full.result.position);
  } finally {
    await trainer.close();
  }
  const dir = await outputDir();
  await assertOneSentence(
    IbotTrainer.create(tinyArgs(dir, ["--load_from", "nothing.safetensors"]), () => {}),
    /^--load_from: .*nothing\.safetensors does not exist$/,
  );
});

Deno.test("IbotTrainer: a checkpoint of another architecture is refused", async () => {
  const full = await uninterrupted();
  const dir = await outputDir();
  const args = tinyArgs(dir, [
    "--arch",
    "vit_tiny",
    "--load_from",
    join(full.dir, CHECKPOINT_FILE),
  ]);
  await assertOneSentence(
    IbotTrainer.create(args, () => {}),
    /checkpoint\.safetensors does not fit this run: \S+ is \[.+\] there and \[.+\] here/,
  );
});

Deno.test("IbotTrainer: a truncated or foreign checkpoint is refused with one sentence", async () => {
  const full = await uninterrupted();
  const bytes = await Deno.readFile(join(full.dir, CHECKPOINT_FILE));
  const truncated = await outputDir();
  await Deno.writeFile(join(truncated, CHECKPOINT_FILE), bytes.subarray(0, bytes.length >> 1));
  await assertOneSentence(
    IbotTrainer.create(tinyArgs(truncated), () => {}),
    /checkpoint\.safetensors is truncated: the header promises \d+ bytes of tensor data but the file has \d+$/,
  );
  const foreign = await outputDir();
  const { tensors } = await loadSafetensors(join(full.dir, CHECKPOINT_FILE));
  await saveSafetensors(join(foreign, CHECKPOINT_FILE), tensors);
  await assertOneSentence(
    IbotTrainer.create(tinyArgs(foreign), () => {}),
    /is not a training checkpoint of this toolkit \(format 'none'\)/,
  );
});

Deno.test("IbotTrainer: a non-finite loss raises NonFiniteLossError and keeps the checkpoint", async () => {
  const full = await uninterrupted();
  const dir = await outputDir();
  const previous = await Deno.readFile(join(full.dir, "checkpoint0001.safetensors"));
  await Deno.writeFile(join(dir, CHECKPOINT_FILE), previous);
  const trainer = await IbotTrainer.create(
    tinyArgs(dir, ["--epochs", "3", "--saveckp_freq", "1"]),
    () => {},
  );
  try {
    trainer.store.get("student.backbone.cls_token").fill(NaN);
    await assert.rejects(trainer.train(), (error: Error) => {
      assert(error instanceof NonFiniteLossError, String(error));
      assert.match(error.message, /^the loss is NaN at epoch 2, iteration 0: training stopped/);
      return true;
    });
    assert.deepEqual(trainer.position, full.result.position);
  } finally {
    await trainer.close();
  }
  assert.deepEqual(await Deno.readFile(join(dir, CHECKPOINT_FILE)), previous);
  const files = [];
  for await (const entry of Deno.readDir(dir)) files.push(entry.name);
  assert.deepEqual(files, [CHECKPOINT_FILE]);
});

Deno.test("IbotTrainer.create: a refused checkpoint releases the data workers", async () => {
  // The data workers would keep the process alive: it must end by itself after the error.
  const dir = await outputDir();
  await Deno.writeFile(join(dir, CHECKPOINT_FILE), new Uint8Array(20));
  const code = `
    import { parsePretrainArgs } from "${new URL("../../lib/train/args.ts", import.meta.url)}";
    import { IbotTrainer } from "${new URL("../../lib/train/trainer.ts", import.meta.url)}";
    const { args } = parsePretrainArgs(${JSON.stringify(tinyArgv(dir))});
    await IbotTrainer.create(args, () => {}).catch((error) => console.log(error.message));
  `;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    cwd: REPO,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).output();
  assert.equal(output.signal, null, "the process did not end within 30 s");
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
  assert.match(
    new TextDecoder().decode(output.stdout),
    /checkpoint\.safetensors has a malformed header/,
  );
});

let pretrainRun: Promise<{ dir: string; result: TaskRun }> | undefined;
/** One epoch of `tasks/pretrain.ts` as a subprocess, shared by the task tests. */
function pretrainTask() {
  pretrainRun ??= (async () => {
    const dir = await outputDir();
    const argv = tinyArgv(dir, ["--epochs", "1", "--print_freq", "2"]);
    return { dir, result: await runDenoTask("pretrain", argv) };
  })();
  return pretrainRun;
}

Deno.test("tasks/pretrain.ts: a tiny run exits 0 and prints progress lines", async () => {
  const { dir, result } = await pretrainTask();
  assert.equal(result.code, 0, result.stderr);
  const progress = result.stdout.split("\n").filter((line) => line.startsWith("Epoch [0/1]"));
  assert.equal(progress.length, 3, result.stdout);
  for (const line of progress) {
    assert.match(
      line,
      /loss \d+\.\d{4} .* lr \d\.\d\de-\d+ .* \d+\.\d img\/s {2}eta \d+:\d\d:\d\d$/,
    );
  }
  assert.match(result.stdout, /^Epoch 0 done: loss \d+\.\d{4}/m);
  assert.match(result.stdout, /^Training done; checkpoint .*checkpoint\.safetensors$/m);
  assert.equal(metadataOf(join(dir, CHECKPOINT_FILE)).epoch, "1");
});

Deno.test("tasks/pretrain.ts: --help, an unknown flag and a missing data folder", async () => {
  const help = await runDenoTask("pretrain", ["--help"]);
  assert.equal(help.code, 0, help.stderr);
  for (const flag of ["--arch", "--data_path", "--output_dir", "--pred_ratio", "--load_from"]) {
    assert(help.stdout.includes(`${flag} <`), `--help does not list ${flag}`);
  }
  const unknown = await runDenoTask("pretrain", ["--bogus", "1"]);
  assert.notEqual(unknown.code, 0);
  assert.equal(unknown.stderr, "error: unknown argument --bogus; see --help for the list\n");
  const missing = join(root, "no-such-folder");
  const noData = await runDenoTask(
    "pretrain",
    tinyArgv(await outputDir(), ["--data_path", missing]),
  );
  assert.notEqual(noData.code, 0);
  assert(noData.stderr.startsWith(`error: data path ${missing} does not exist; expected `));
  assert(noData.stderr.endsWith(")\n") && noData.stderr.split("\n").length === 2, noData.stderr);
});

Deno.test("tasks/knn.ts: evaluates the pre-trained checkpoint and refuses a missing one", async () => {
  const { dir } = await pretrainTask();
  const weights = join(dir, CHECKPOINT_FILE);
  const knn = await runDenoTask("knn", ["--pretrained_weights", weights, "--num_workers", "1"]);
  assert.equal(knn.code, 0, knn.stderr);
  const results = knn.stdout.split("\n").filter((line) => line.includes("Top1"));
  assert.deepEqual(
    results.map((line) =>
      line.match(/^(\d+)-NN classifier result: Top1: [\d.]+, Top5: [\d.]+$/)?.[1]
    ),
    ["10", "20", "100", "200"],
  );
  const missing = join(dir, "missing.safetensors");
  const refused = await runDenoTask("knn", ["--pretrained_weights", missing]);
  assert.notEqual(refused.code, 0);
  assert.equal(refused.stderr, `error: ${missing} does not exist\n`);
});

/**
 * Data-parallel pre-training under `mpirun` (tasks/pretrain.ts on several processes): the same
 * updates as one process with the whole batch, a clean stop and resume, a dead rank ending the
 * job, and k-NN with the features extracted by two processes.
 */

import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { assert } from "../assert.ts";
import { loadTrainingCheckpoint } from "../../lib/checkpoint/training_checkpoint.ts";
import { loadSafetensors } from "../../lib/checkpoint/safetensors.ts";
import { reportMissingTool } from "../missing_tool.ts";
import { mpirunArgs, mpirunMissing } from "../mpirun.ts";
import { tinyModelArgv, writeTinyDataPath } from "./tiny_run.ts";

const PRETRAIN = fileURLToPath(new URL("../../tasks/pretrain.ts", import.meta.url));
const KNN = fileURLToPath(new URL("../../tasks/knn.ts", import.meta.url));
const missing = mpirunMissing();
if (missing) reportMissingTool("data-parallel test", missing);

const root = await Deno.makeTempDir({ prefix: "ibot_data_parallel_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(root, { recursive: true }));
/** 24 images: 3 steps of 8 images an epoch, on one process or on two of 4 (and 16 test images). */
const SMALL = join(root, "small");
await writeTinyDataPath(SMALL, 24, 16);
/** 96 images: 12 steps an epoch, long enough to be stopped or killed in the middle. */
const LARGE = join(root, "large");
await writeTinyDataPath(LARGE, 96);

/** The tiny run's arguments with `batch` images per process. */
function argv(data: string, output: string, batch: number, epochs: number): string[] {
  return [
    ...tinyModelArgv(batch),
    ...["--epochs", String(epochs), "--warmup_epochs", "1", "--warmup_teacher_temp_epochs", "0"],
    ...["--knn_eval", "false", "--num_workers", "1", "--threads", "1", "--print_freq", "1"],
    ...["--data_path", data, "--output_dir", output],
  ];
}

/** What a finished job printed, and how. */
interface Job {
  readonly code: number;
  readonly output: string;
}

/** Runs `script` on `ranks` processes under mpirun (one process without it) to the end. */
async function run(ranks: number, script: string, args: string[]): Promise<Job> {
  const command = ranks === 1
    ? new Deno.Command(Deno.execPath(), { args: ["run", "-A", script, ...args] })
    : new Deno.Command("mpirun", { args: mpirunArgs(ranks, script, args) });
  const { code, stdout, stderr } = await command.output();
  const text = new TextDecoder();
  return { code, output: text.decode(stdout) + text.decode(stderr) };
}

/**
 * Starts tasks/pretrain.ts on two processes and, once a line matching `when` is printed, sends
 * `signal` to one of them; returns how the job ended and how long it took after the signal.
 */
async function runAndSignal(
  args: string[],
  when: RegExp,
  signal: Deno.Signal,
): Promise<Job & { secondsAfterSignal: number }> {
  const child = new Deno.Command("mpirun", {
    args: mpirunArgs(2, PRETRAIN, args, ["--mca", "odls_base_sigkill_timeout", "10"]),
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(120_000),
  }).spawn();
  const text = new TextDecoder();
  let output = "";
  let signalledAt = 0;
  const errors = (async () => {
    for await (const chunk of child.stderr) output += text.decode(chunk);
  })();
  for await (const chunk of child.stdout) {
    output += text.decode(chunk);
    if (signalledAt === 0 && when.test(output)) {
      const ranks = new TextDecoder().decode(
        (await new Deno.Command("pgrep", { args: ["-P", String(child.pid)] }).output()).stdout,
      ).trim().split("\n").map(Number);
      assert.equal(ranks.length, 2, `the ranks of mpirun ${child.pid}: ${ranks}`);
      Deno.kill(ranks[1], signal);
      signalledAt = performance.now();
    }
  }
  await errors;
  const { code } = await child.status;
  assert(signalledAt > 0, `no line matched ${when}:\n${output}`);
  return { code, output, secondsAfterSignal: (performance.now() - signalledAt) / 1000 };
}

/**
 * Asserts that two checkpoints hold the same tensors to `tolerance` of each tensor's scale (max
 * |value|), leaving out the key part of each attention `qkv.bias`: its gradient is zero in exact
 * arithmetic (softmax ignores a shift shared by all keys), so AdamW turns float32 noise into
 * steps of ±lr there, in PyTorch as here, whatever splits the batch.
 */
async function assertSameState(a: string, b: string, tolerance: number): Promise<void> {
  const x = await loadSafetensors(a);
  const y = await loadSafetensors(b);
  assert.deepEqual([...y.tensors.keys()].sort(), [...x.tensors.keys()].sort());
  for (const [name, tensor] of x.tensors) {
    const p = tensor.data as Float32Array;
    const q = y.tensors.get(name)!.data as Float32Array;
    const keys = name.endsWith("attn.qkv.bias") ? [p.length / 3, 2 * p.length / 3] : [0, 0];
    let scale = 0;
    let diff = 0;
    for (let i = 0; i < p.length; i++) {
      scale = Math.max(scale, Math.abs(p[i]));
      if (i < keys[0] || i >= keys[1]) diff = Math.max(diff, Math.abs(p[i] - q[i]));
    }
    assert(diff <= tolerance * scale, `${name}: |Δ| ${diff} > ${tolerance} × ${scale}`);
  }
}

Deno.test({
  name: "pretrain on 2 processes of B images steps as 1 process of 2B: same state to 1e-5",
  ignore: missing !== undefined,
  async fn() {
    // A common start with Adam moments (from scratch, AdamW's first steps are lr·sign(g), which
    // float32 noise flips), then one epoch of 3 steps each way.
    const base = join(root, "base");
    assert.equal((await run(1, PRETRAIN, argv(SMALL, base, 8, 1))).code, 0);
    const one = join(root, "one");
    const two = join(root, "two");
    for (const dir of [one, two]) {
      await Deno.mkdir(dir);
      await Deno.copyFile(
        join(base, "checkpoint.safetensors"),
        join(dir, "checkpoint.safetensors"),
      );
    }
    const single = await run(1, PRETRAIN, argv(SMALL, one, 8, 2));
    assert.equal(single.code, 0, single.output);
    const parallel = await run(2, PRETRAIN, argv(SMALL, two, 4, 2));
    assert.equal(parallel.code, 0, parallel.output);
    assert.match(parallel.output, /Data-parallel over 2 processes: 4 images each, 8 per step/);
    assert.equal(parallel.output.match(/Epoch 1 done/g)?.length, 1, "rank 0 alone prints");
    await assertSameState(
      join(one, "checkpoint.safetensors"),
      join(two, "checkpoint.safetensors"),
      1e-5,
    );
    const checkpoint = await loadTrainingCheckpoint(join(two, "checkpoint.safetensors"));
    assert.equal(checkpoint.step, 6);
    assert.equal(checkpoint.worldSize, 2);
    // The epoch's statistics are those of the whole batch.
    const logs = await Promise.all([one, two].map(async (dir) => {
      const lines = (await Deno.readTextFile(join(dir, "log.txt"))).trim().split("\n");
      return JSON.parse(lines.at(-1)!);
    }));
    for (const key of ["train_loss", "train_cls", "train_patch", "train_nmi"]) {
      assert(
        Math.abs(logs[0][key] - logs[1][key]) < 1e-5,
        `${key}: ${logs[0][key]} ${logs[1][key]}`,
      );
    }

    // k-NN: features extracted by two processes give the one-process result.
    const knnArgs = ["--pretrained_weights", join(two, "checkpoint.safetensors")];
    const results = await Promise.all([1, 2].map((ranks) => run(ranks, KNN, knnArgs)));
    const lines = results.map((r) =>
      r.output.split("\n").filter((l) => /classifier result/.test(l))
    );
    assert(lines[0].length > 0, results[0].output);
    assert.deepEqual(lines[1], lines[0]);
  },
});

Deno.test({
  name:
    "pretrain on 2 processes: a stop on one rank stops both, and the resumed run ends as an uninterrupted one",
  ignore: missing !== undefined,
  async fn() {
    const whole = join(root, "whole");
    assert.equal((await run(2, PRETRAIN, argv(LARGE, whole, 4, 2))).code, 0);
    const stopped = join(root, "stopped");
    const job = await runAndSignal(
      argv(LARGE, stopped, 4, 2),
      /Epoch \[0\/2\] \[ ?2\/12\]/,
      "SIGTERM",
    );
    assert.notEqual(job.code, 0);
    assert.match(job.output, /Saved .* at epoch 0, iteration \d+; run the same command to resume/);
    const resumed = await run(2, PRETRAIN, argv(LARGE, stopped, 4, 2));
    assert.equal(resumed.code, 0, resumed.output);
    assert.match(resumed.output, /Resuming from .*: epoch 0, iteration \d+/);
    await assertSameState(
      join(whole, "checkpoint.safetensors"),
      join(stopped, "checkpoint.safetensors"),
      0,
    );
  },
});

Deno.test({
  name: "pretrain on 2 processes: a killed rank ends the job within 30 s and the checkpoint loads",
  ignore: missing !== undefined,
  async fn() {
    const dir = join(root, "killed");
    const job = await runAndSignal(argv(LARGE, dir, 4, 3), /Epoch 0 done/, "SIGKILL");
    assert.notEqual(job.code, 0);
    assert(job.secondsAfterSignal < 30, `the job took ${job.secondsAfterSignal} s to end`);
    const checkpoint = await loadTrainingCheckpoint(join(dir, "checkpoint.safetensors"));
    assert(checkpoint.epoch >= 1);
  },
});

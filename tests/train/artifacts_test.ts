/**
 * `--export_artifacts`: the exported training step runs with plain onnxruntime-node, fed from
 * the exported checkpoint and manifest alone (read here without the toolkit), and computes what
 * the trainer's step computes for the same inputs.
 */

import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { assert } from "../assert.ts";
import type { TensorData } from "../../lib/graph/graph.ts";
import { loadTrainingCheckpoint } from "../../lib/checkpoint/training_checkpoint.ts";
import { CompiledGraph } from "../../lib/runtime/session.ts";
import { parsePretrainArgs } from "../../lib/train/args.ts";
import { runConfigFromArgs } from "../../lib/train/config.ts";
import { buildIbotStep, stepScalarValues } from "../../lib/train/step.ts";
import { runDenoTask } from "../task_runner.ts";
import { tinyModelArgv, writeTinyDataPath } from "./tiny_run.ts";

/** The iteration's schedule values, chosen by the test. */
const SCHEDULE = { lr: 0.01, wd: 0.04, momentum: 0.99, teacherTemp: 0.04, teacherPatchTemp: 0.05 };

/** One entry of `manifest.json`'s `train_step.inputs`. */
interface ManifestInput {
  name: string;
  dtype: "float32" | "int64";
  shape: number[];
  source: "checkpoint" | "input";
  meaning?: string;
}

/** What a program without the toolkit reads from `manifest.json`. */
interface Manifest {
  train_step: {
    feeding: string;
    step_counts: string;
    patch_slots: string;
    adamw: { beta1: number; beta2: number; eps: number };
    inputs: ManifestInput[];
    outputs: { name: string }[];
    updated_state: string[];
  };
}

/** A minimal safetensors reader (float32 and int64 tensors, and the metadata), as a user writes. */
function readSafetensors(bytes: Uint8Array) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerSize = Number(view.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerSize)));
  const body = bytes.slice(8 + headerSize);
  const tensors = new Map<string, Float32Array | BigInt64Array>();
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const { dtype, data_offsets: [begin, end] } = info as {
      dtype: string;
      data_offsets: [number, number];
    };
    const raw = body.buffer.slice(begin, end);
    tensors.set(name, dtype === "I64" ? new BigInt64Array(raw) : new Float32Array(raw));
  }
  return { tensors, metadata: header.__metadata__ as Record<string, string> };
}

/**
 * The data inputs of one iteration, from their shapes and meanings: random crops, row r of the
 * global crops masking its first min(r, S / rows) patches, their flat slots with weight
 * 1 / (max(count, 1) · rows) then zero-weight padding at token 1, and drop-path factors keeping
 * every row but row 1.
 */
function dataInputs(
  inputs: readonly ManifestInput[],
): Record<string, Float32Array | BigInt64Array> {
  const shapeOf = (name: string) => inputs.find((i) => i.name === name)!.shape;
  const [rows, patches] = shapeOf("masks");
  const [slots] = shapeOf("slot_weights");
  let seed = 1;
  const random = (n: number) =>
    Float32Array.from(
      { length: n },
      () => ((seed = (seed * 16807) % 2147483647) / 2147483647) - 0.5,
    );
  const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
  const masks = new Float32Array(rows * patches);
  const indices = new BigInt64Array(slots).fill(1n);
  const weights = new Float32Array(slots);
  let slot = 0;
  for (let row = 0; row < rows; row++) {
    const count = Math.min(row, Math.floor(slots / rows));
    for (let patch = 0; patch < count; patch++) {
      masks[row * patches + patch] = 1;
      indices[slot] = BigInt(row * (1 + patches) + 1 + patch);
      weights[slot] = 1 / (count * rows);
      slot++;
    }
  }
  const data: Record<string, Float32Array | BigInt64Array> = {
    globals: random(size(shapeOf("globals"))),
    locals: random(size(shapeOf("locals"))),
    masks,
    slot_indices: indices,
    slot_weights: weights,
  };
  for (const name of ["drop_path_global", "drop_path_local"]) {
    if (!inputs.some((i) => i.name === name)) continue;
    const [depth, branches, n] = shapeOf(name);
    const factors = new Float32Array(depth * branches * n).fill(1);
    for (let block = 1; block < depth; block++) factors[block * branches * n + 1] = 0;
    data[name] = factors;
  }
  return data;
}

Deno.test("--export_artifacts: plain onnxruntime runs a step from the files alone, as the trainer does", async () => {
  const root = await Deno.makeTempDir({ prefix: "ibot_artifacts_test_" });
  try {
    const data = join(root, "data");
    await writeTinyDataPath(data, 16);
    const dir = join(root, "artifacts");
    const argv = [
      ...tinyModelArgv(4),
      ...["--num_workers", "1", "--data_path", data, "--output_dir", join(root, "out")],
    ];
    const task = await runDenoTask("pretrain", [...argv, "--export_artifacts", dir]);
    assert.equal(task.code, 0, task.stderr);
    assert.match(task.stdout, /Wrote the training and evaluation graphs and a checkpoint to /);
    assert.doesNotMatch(task.stdout, /Compiled the training step/, "exporting compiles nothing");

    // The user's side: onnxruntime-node, the manifest, a hand-written safetensors reader.
    const manifest: Manifest = JSON.parse(await Deno.readTextFile(join(dir, "manifest.json")));
    const { inputs, adamw } = manifest.train_step;
    // The exported step has the largest bucket: 2 crops · 4 images · 4 patches (0.3 of 16).
    assert.deepEqual(inputs.find((i) => i.name === "slot_indices")?.shape, [32]);
    assert.deepEqual(inputs.find((i) => i.name === "slot_weights")?.shape, [32]);
    assert.match(manifest.train_step.patch_slots, /^slot_indices and slot_weights have S = 32 /);
    const checkpoint = readSafetensors(await Deno.readFile(join(dir, "checkpoint.safetensors")));
    const t = Number(checkpoint.metadata.step) + 1;
    const tLast = Number(checkpoint.metadata.last_layer_step) + 1;
    const scalars: Record<string, number> = {
      decay_factor: 1 - SCHEDULE.lr * SCHEDULE.wd,
      step_size: SCHEDULE.lr / (1 - adamw.beta1 ** t),
      bias_correction2_sqrt: Math.sqrt(1 - adamw.beta2 ** t),
      last_layer_active: 1,
      last_layer_step_size: SCHEDULE.lr / (1 - adamw.beta1 ** tLast),
      last_layer_bias_correction2_sqrt: Math.sqrt(1 - adamw.beta2 ** tLast),
      momentum: SCHEDULE.momentum,
      teacher_temp: SCHEDULE.teacherTemp,
      teacher_patch_temp: SCHEDULE.teacherPatchTemp,
    };
    const batch = dataInputs(inputs);
    const plainFeeds: Record<string, ort.Tensor> = {};
    for (const input of inputs) {
      let values: Float32Array | BigInt64Array | undefined;
      if (input.source === "checkpoint") {
        values = checkpoint.tensors.get(input.name);
      } else {
        assert(input.meaning, `the manifest says what ${input.name} holds`);
        values = batch[input.name] ??
          (input.name in scalars ? Float32Array.of(scalars[input.name]) : undefined);
      }
      assert(values, `no value for ${input.name}`);
      plainFeeds[input.name] = new ort.Tensor(input.dtype, values, input.shape);
    }
    const session = await ort.InferenceSession.create(join(dir, "train_step.onnx"), {
      executionMode: "sequential",
      intraOpNumThreads: 1,
    });
    assert.deepEqual([...session.inputNames].sort(), inputs.map((i) => i.name).sort());
    const plain = await session.run(plainFeeds);
    await session.release();
    for (const name of manifest.train_step.updated_state) {
      const next = plain[`${name}.next`];
      assert(next, `the step outputs ${name}.next`);
      assert((next.data as Float32Array).every(Number.isFinite), `${name}.next is finite`);
    }
    assert(Number.isFinite((plain.loss.data as Float32Array)[0]), "the loss is finite");

    // The trainer's side: the step built from the run's arguments, its state from the
    // checkpoint, its scalars from stepScalarValues.
    const { args } = parsePretrainArgs(argv);
    const step = buildIbotStep(runConfigFromArgs(args).step);
    const resumed = await loadTrainingCheckpoint(join(dir, "checkpoint.safetensors"));
    const feeds: Record<string, TensorData> = { ...batch };
    for (const name of resumed.store.names()) feeds[name] = resumed.store.get(name);
    const values = stepScalarValues({
      lr: SCHEDULE.lr,
      weightDecay: SCHEDULE.wd,
      step: resumed.step + 1,
      lastLayerActive: true,
      lastLayerStep: resumed.lastLayerStep + 1,
      momentum: SCHEDULE.momentum,
      teacherTemp: SCHEDULE.teacherTemp,
      teacherPatchTemp: SCHEDULE.teacherPatchTemp,
    });
    for (const [name, value] of Object.entries(values)) feeds[name] = Float32Array.of(value);
    const compiled = await CompiledGraph.create(step.graph, { threads: 1 });
    const ours = await compiled.run(feeds);
    await compiled.release();

    assert.deepEqual(
      Object.keys(plain).sort(),
      manifest.train_step.outputs.map((o) => o.name).sort(),
    );
    assert.deepEqual(Object.keys(ours).sort(), Object.keys(plain).sort());
    for (const [name, tensor] of Object.entries(plain)) {
      assert.deepEqual(tensor.data, ours[name], `${name} differs`);
    }
    assert.notDeepEqual(
      plain["student.backbone.cls_token.next"].data,
      checkpoint.tensors.get("student.backbone.cls_token"),
      "the step moves the parameters",
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

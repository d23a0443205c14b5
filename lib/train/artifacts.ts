/**
 * Writes a run's artifacts to a directory, as plain files any onnxruntime can use:
 * `train_step.onnx` (the whole training iteration), `features.onnx` (the teacher backbone's
 * evaluation graph, 64 images of the global crop size), `checkpoint.safetensors` (the current
 * state, which feeds both graphs by name) and `manifest.json` (inputs, outputs and the state
 * each `<name>.next` output updates).
 *
 * @module
 */

import { join } from "node:path";
import { writeOnnxModel } from "../graph/onnx.ts";
import { buildFeatureGraph } from "../eval/features.ts";
import { saveTrainingCheckpoint } from "../checkpoint/training_checkpoint.ts";
import type { IbotTrainer } from "./trainer.ts";

/** Writes the training and evaluation graphs, a checkpoint and a manifest into `dir`. */
export async function exportArtifacts(trainer: IbotTrainer, dir: string): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const step = trainer.stepArtifact;
  await writeOnnxModel(step.graph, join(dir, "train_step.onnx"));
  const features = buildFeatureGraph({
    backbone: trainer.backbone,
    batch: 64,
    size: Number(trainer.args.global_crop_size),
    avgpool: 0,
    nLastBlocks: 1,
    prefix: "teacher",
  });
  await writeOnnxModel(features.graph, join(dir, "features.onnx"));
  await saveTrainingCheckpoint(
    join(dir, "checkpoint.safetensors"),
    trainer.store,
    trainer.position,
    trainer.args,
  );
  const describe = (values: readonly { name: string; dtype: string; shape: readonly number[] }[]) =>
    values.map(({ name, dtype, shape }) => ({ name, dtype, shape }));
  const manifest = {
    train_step: {
      inputs: describe([...step.graph.params, ...step.graph.inputs]),
      outputs: describe(step.graph.outputs),
      updated_state: step.updatedState,
    },
    features: {
      inputs: describe(features.graph.inputs),
      outputs: describe(features.graph.outputs),
    },
  };
  await Deno.writeTextFile(join(dir, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
}

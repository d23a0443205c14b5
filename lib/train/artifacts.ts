/**
 * Writes a run's artifacts to a directory, as plain files any onnxruntime can use:
 * `train_step.onnx` (the whole training iteration, at the largest patch-slot bucket: room for the
 * masked patches of any batch), `features.onnx` (the teacher backbone's
 * evaluation graph, 64 images of the global crop size), `checkpoint.safetensors` (the current
 * state, which feeds both graphs by name) and `manifest.json` (inputs, outputs, the state each
 * `<name>.next` output updates, which inputs come from the checkpoint, and what every other input
 * holds, so that a plain onnxruntime program can run training steps).
 *
 * @module
 */

import { join } from "node:path";
import { writeOnnxModel } from "../graph/onnx.ts";
import { buildFeatureGraph } from "../models/features.ts";
import { saveTrainingCheckpoint } from "../checkpoint/training_checkpoint.ts";
import { ADAMW_DEFAULTS, ADAMW_SCALAR_MEANINGS } from "../optim/adamw.ts";
import { STEP_INPUT_MEANINGS, STEP_INPUTS } from "./step.ts";
import type { IbotTrainer } from "./trainer.ts";

/** Writes the training and evaluation graphs, a checkpoint and a manifest into `dir`. */
export async function exportArtifacts(trainer: IbotTrainer, dir: string): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const step = trainer.stepArtifact;
  await writeOnnxModel(step.graph, join(dir, "train_step.onnx"));
  const features = buildFeatureGraph({
    backbone: trainer.backbone,
    batch: 64,
    size: trainer.args.global_crop_size,
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
  const meanings: Record<string, string> = { ...STEP_INPUT_MEANINGS, ...ADAMW_SCALAR_MEANINGS };
  const manifest = {
    train_step: {
      feeding: "Inputs with source 'checkpoint' take the checkpoint.safetensors tensor of the " +
        "same name; after each step, every name in updated_state takes the output " +
        "'<name>.next'. The other inputs are the iteration's data and scalars (float32 [] " +
        "tensors), as their meaning says.",
      step_counts: "t of step_size and bias_correction2_sqrt is the checkpoint metadata's " +
        "'step' + 1; the last layer's t is 'last_layer_step' + 1, counting only iterations " +
        "with last_layer_active = 1. Computed in float64, then rounded to float32.",
      patch_slots:
        `slot_indices and slot_weights have S = ${
          step.graph.inputs.find((input) => input.name === STEP_INPUTS.slotWeights)!.shape[0]
        } entries, the most masked patches a batch of this run can hold; a batch fills the ` +
        "first entries with its masked patches and pads the rest (weight 0). The trainer runs " +
        "copies of this graph with fewer slots, the smallest that holds each batch's masked " +
        "patches; padding changes no result.",
      adamw: ADAMW_DEFAULTS,
      inputs: describe([...step.graph.params, ...step.graph.inputs]).map((input) =>
        trainer.store.has(input.name)
          ? { ...input, source: "checkpoint" }
          : { ...input, source: "input", meaning: meanings[input.name] }
      ),
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

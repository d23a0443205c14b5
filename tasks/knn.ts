/**
 * `deno task knn`: weighted k-NN evaluation (official `eval_knn.py`) of a checkpoint's teacher or
 * student backbone, from our checkpoint, an official `.pth` or an extracted backbone. Arguments
 * use the official names.
 *
 *   deno task knn --pretrained_weights out/pretrain/checkpoint.safetensors [--checkpoint_key teacher]
 *     [--device cuda]
 *
 * Under `mpirun -np N` each process extracts the features of its share of the images, the
 * features are gathered, and rank 0 prints the results.
 */

import {
  describeBackbone,
  FROZEN_BACKBONE_OPTIONS,
  openFrozenBackbone,
} from "../lib/eval/frozen_backbone.ts";
import { evaluateKnn } from "../lib/eval/knn_eval.ts";
import type { OptionTable, OptionValues } from "../lib/cli/options.ts";
import { worldCommunicator } from "../lib/runtime/mpi.ts";
import { runTask } from "./run_task.ts";

const OPTIONS = {
  ...FROZEN_BACKBONE_OPTIONS,
  nb_knn: { kind: "ints", help: "Numbers of neighbours.", default: [10, 20, 100, 200], min: 1 },
  temperature: { kind: "float", help: "Voting temperature.", default: 0.07 },
  n_last_blocks: {
    kind: "int",
    help: "CLS tokens of the last N blocks (Swin: pooled tokens of the last N, across stages).",
    default: 1,
    min: 1,
  },
  batch_size_per_gpu: { kind: "int", help: "Images per forward pass.", default: 128, min: 1 },
} as const satisfies OptionTable;

async function main(values: OptionValues<typeof OPTIONS>): Promise<number> {
  const comm = worldCommunicator();
  const say = comm.rank === 0 ? console.log : undefined;
  const { loaded, store, dataPath, features } = await openFrozenBackbone(
    values,
    values.n_last_blocks,
  );
  say?.(`k-NN of ${describeBackbone(loaded)} on ${dataPath}`);
  if (comm.size > 1) say?.(`Features extracted by ${comm.size} processes`);
  const results = await evaluateKnn(store, dataPath, {
    ...features,
    batch: values.batch_size_per_gpu,
    ks: values.nb_knn,
    temperature: values.temperature,
    progress: say,
    communicator: comm,
  });
  for (const r of results) {
    say?.(`${r.k}-NN classifier result: Top1: ${r.top1.toFixed(2)}, Top5: ${r.top5.toFixed(2)}`);
  }
  comm.finalize();
  return 0;
}

await runTask({
  usage: "deno task knn --pretrained_weights FILE [options]",
  about: "Weighted k-NN classification (official eval_knn.py) with the frozen backbone's features.",
  options: OPTIONS,
}, main);

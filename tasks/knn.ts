/**
 * `deno task knn`: weighted k-NN evaluation (official `eval_knn.py`) of a checkpoint's teacher or
 * student backbone, from our checkpoint, an official `.pth` or an extracted backbone. Arguments
 * use the official names.
 *
 *   deno task knn --pretrained_weights out/pretrain/checkpoint.safetensors [--checkpoint_key teacher]
 *     [--device cuda] [--dump_features DIR | --load_features DIR]
 *
 * The classifier runs as onnxruntime graphs over chunks of test rows and blocks of train rows.
 * `--dump_features DIR` streams the normalised features to DIR/trainfeat.safetensors and
 * DIR/testfeat.safetensors as they are extracted and classifies from there, a block at a time
 * (for banks larger than memory); `--load_features DIR` classifies such a folder again without
 * the backbone. Under `mpirun -np N` each process extracts the features of its share of the
 * images, the features are gathered in memory, and rank 0 prints the results.
 */

import {
  describeBackbone,
  FROZEN_BACKBONE_OPTIONS,
  nLastBlocksOption,
  openFrozenBackbone,
} from "../lib/eval/frozen_backbone.ts";
import { evaluateKnn, evaluateKnnOnFiles } from "../lib/eval/knn_eval.ts";
import { DEFAULT_KNN_BLOCK, DEFAULT_KNN_CHUNK, type KnnResult } from "../lib/eval/knn.ts";
import type { OptionTable, OptionValues } from "../lib/cli/options.ts";
import { worldCommunicator } from "../lib/runtime/mpi.ts";
import { runTask } from "./run_task.ts";

const OPTIONS = {
  ...FROZEN_BACKBONE_OPTIONS,
  nb_knn: { kind: "ints", help: "Numbers of neighbours.", default: [10, 20, 100, 200], min: 1 },
  temperature: { kind: "float", help: "Voting temperature.", default: 0.07 },
  n_last_blocks: nLastBlocksOption(1),
  batch_size_per_gpu: { kind: "int", help: "Images per forward pass.", default: 128, min: 1 },
  dump_features: {
    kind: "string",
    metavar: "dir",
    help: "Stream the normalised features to trainfeat.safetensors and testfeat.safetensors in " +
      "this folder as they are extracted, and classify from there (one process only).",
  },
  load_features: {
    kind: "string",
    metavar: "dir",
    help: "Classify the features a --dump_features folder holds, without a backbone.",
  },
  chunk_size: {
    kind: "int",
    help: "Test images per k-NN run (memory grows with chunk_size x block_size).",
    default: DEFAULT_KNN_CHUNK,
    min: 1,
  },
  block_size: {
    kind: "int",
    help: "Train images per k-NN run.",
    default: DEFAULT_KNN_BLOCK,
    min: 1,
  },
} as const satisfies OptionTable;

async function main(values: OptionValues<typeof OPTIONS>): Promise<number> {
  const classifier = {
    ks: values.nb_knn,
    temperature: values.temperature,
    chunkSize: values.chunk_size,
    blockSize: values.block_size,
    device: values.device,
  };
  if (values.load_features !== undefined) {
    if (values.dump_features !== undefined) {
      throw new Error("--load_features and --dump_features cannot be given together");
    }
    console.log(`k-NN of the features in ${values.load_features}`);
    report(
      await evaluateKnnOnFiles(values.load_features, { ...classifier, progress: console.log }),
      console.log,
    );
    return 0;
  }
  const comm = worldCommunicator();
  const say = comm.rank === 0 ? console.log : undefined;
  const { loaded, store, dataPath, features, trainSubset } = await openFrozenBackbone(
    values,
    values.n_last_blocks,
  );
  say?.(`k-NN of ${describeBackbone(loaded)} on ${dataPath}`);
  if (comm.size > 1) say?.(`Features extracted by ${comm.size} processes`);
  const results = await evaluateKnn(store, dataPath, {
    ...features,
    ...classifier,
    batch: values.batch_size_per_gpu,
    dumpFeatures: values.dump_features,
    trainSubset,
    progress: say,
    communicator: comm,
  });
  if (say) report(results, say);
  comm.finalize();
  return 0;
}

/** Prints one line per k, as the official script does. */
function report(results: readonly KnnResult[], say: (line: string) => void): void {
  for (const r of results) {
    say(`${r.k}-NN classifier result: Top1: ${r.top1.toFixed(2)}, Top5: ${r.top5.toFixed(2)}`);
  }
}

await runTask({
  usage: "deno task knn --pretrained_weights FILE [options]",
  about: "Weighted k-NN classification (official eval_knn.py) with the frozen backbone's features.",
  options: OPTIONS,
}, main);

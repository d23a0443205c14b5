/**
 * `deno task unsup_cls`: unsupervised classification (official `unsup_cls.py`). The teacher's (or
 * `--checkpoint_key`'s) backbone and projection head assign every image of the test split (the
 * official validation set) to the argmax of its CLS prototype logits; the clusters are scored
 * against the labels and printed as the official does: `NMI: …, ARI: …, F: …, ACC: …`, ACC being
 * the accuracy under the best one-to-one matching of clusters with classes. The matching needs
 * as many prototypes (`out_dim`) as classes; otherwise a warning says what ACC then measures.
 *
 *   deno task unsup_cls --pretrained_weights out/pretrain/checkpoint.safetensors [--split train]
 */

import {
  dataPathOption,
  DATASET_OPTIONS,
  describeBackbone,
  DEVICE_OPTIONS,
  HEAD_FILE_OPTIONS,
  imageSizeOption,
  openBackboneFile,
} from "../lib/eval/frozen_backbone.ts";
import {
  assignClusters,
  clsHeadConfig,
  prototypeCountWarning,
  scoreClusters,
} from "../lib/eval/unsup_cls.ts";
import { resolveDataPath } from "../lib/data/source.ts";
import type { OptionTable, OptionValues } from "../lib/cli/options.ts";
import { runTask } from "./run_task.ts";

const OPTIONS = {
  ...HEAD_FILE_OPTIONS,
  ...DATASET_OPTIONS,
  ...DEVICE_OPTIONS,
  split: {
    kind: "string",
    help: "Which split is clustered (the official uses the validation set: test).",
    choices: ["train", "test"],
    default: "test",
  },
  out_dim: {
    kind: "int",
    help: "Prototypes of the head; checked against the weights (default: from the weights).",
    min: 1,
  },
  batch_size_per_gpu: { kind: "int", help: "Images per forward pass.", default: 128, min: 1 },
  num_workers: { kind: "int", help: "Data-loading workers (default: cores − 1).", min: 1 },
} as const satisfies OptionTable;

async function main(values: OptionValues<typeof OPTIONS>): Promise<number> {
  const loaded = await openBackboneFile(values);
  const { outDim } = clsHeadConfig(loaded);
  if (values.out_dim !== undefined && values.out_dim !== outDim) {
    throw new Error(`--out_dim ${values.out_dim} differs from the head's ${outDim} prototypes`);
  }
  const dataPath = dataPathOption(values.data_path, loaded);
  const split = values.split;
  console.log(
    `Unsupervised classification by ${describeBackbone(loaded)} on ${dataPath} (${split})`,
  );
  const { clusters, labels } = await assignClusters(
    loaded,
    await resolveDataPath(dataPath, split),
    {
      size: imageSizeOption(values.image_size, loaded),
      batch: values.batch_size_per_gpu,
      workers: values.num_workers,
      device: values.device,
      progress: console.log,
    },
  );
  const result = scoreClusters(clusters, labels);
  const warning = prototypeCountWarning(outDim, result.classes);
  if (warning) console.warn(`warning: ${warning}`);
  console.log(`NMI: ${result.nmi}, ARI: ${result.ari}, F: ${result.fscore}, ACC: ${result.acc}`);
  console.log(
    `${result.images} images of ${result.classes} classes fell into ${result.occupied} of the ` +
      `${outDim} clusters`,
  );
  return 0;
}

await runTask({
  usage: "deno task unsup_cls --pretrained_weights FILE [options]",
  about: "Unsupervised classification (official unsup_cls.py): the head's argmax prototype as " +
    "each image's cluster, scored by NMI, ARI, F and the Hungarian-matched accuracy.",
  options: OPTIONS,
}, main);

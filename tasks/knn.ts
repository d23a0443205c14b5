/**
 * `deno task knn`: weighted k-NN evaluation (official `eval_knn.py`) of a checkpoint's teacher or
 * student backbone, from our checkpoint, an official `.pth` or an extracted backbone. Arguments
 * use the official names.
 *
 *   deno task knn --pretrained_weights out/pretrain/checkpoint.safetensors [--checkpoint_key teacher]
 */

import { parseArgs } from "node:util";
import {
  BACKBONE_FILE_HELP,
  describeBackbone,
  FROZEN_BACKBONE_OPTIONS,
  openFrozenBackbone,
} from "../lib/eval/frozen_backbone.ts";
import { evaluateKnn } from "../lib/eval/knn_eval.ts";
import { listOptions, runTask } from "./run_task.ts";

const HELP = `Usage: deno task knn --pretrained_weights FILE [options]

${BACKBONE_FILE_HELP}
  --data_path PATH            dataset with train and test splits (default: the run's --data_path)
  --nb_knn K...               numbers of neighbours (default 10 20 100 200)
  --temperature T             voting temperature (default 0.07)
  --avgpool_patchtokens N     0: CLS tokens, 1: mean patch token, 2: both (default 0)
  --n_last_blocks N           CLS tokens of the last N blocks (default 1)
  --image_size S              evaluation crop side (default: the run's global crop size)
  --batch_size_per_gpu B      images per forward pass (default 128)
  --num_workers N             data-loading workers (default: cores - 1)`;

function main(): Promise<number> | number {
  const { values, tokens } = parseArgs({
    args: Deno.args,
    options: {
      ...FROZEN_BACKBONE_OPTIONS,
      nb_knn: { type: "string", multiple: true },
      temperature: { type: "string", default: "0.07" },
      n_last_blocks: { type: "string", default: "1" },
      batch_size_per_gpu: { type: "string", default: "128" },
      help: { type: "boolean", short: "h" },
    },
    allowPositionals: true,
    tokens: true,
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  return run({ ...values, nb_knn: listOptions(tokens, ["nb_knn"]).nb_knn });
}

async function run(
  values: Record<string, string | string[] | boolean | undefined>,
): Promise<number> {
  const { loaded, store, dataPath, features } = await openFrozenBackbone(
    values,
    Number(values.n_last_blocks),
  );
  const ks =
    (values.nb_knn as string[] | undefined)?.flatMap((v) => v.split(/[ ,]+/)).map(Number) ??
      [10, 20, 100, 200];
  if (ks.some((k) => !Number.isInteger(k) || k < 1)) {
    throw new Error("--nb_knn takes positive integers");
  }
  console.log(
    `k-NN of ${describeBackbone(loaded)} on ${dataPath}`,
  );
  const results = await evaluateKnn(store, dataPath, {
    ...features,
    batch: Number(values.batch_size_per_gpu),
    ks,
    temperature: Number(values.temperature),
  });
  for (const r of results) {
    console.log(
      `${r.k}-NN classifier result: Top1: ${r.top1.toFixed(2)}, Top5: ${r.top5.toFixed(2)}`,
    );
  }
  return 0;
}

await runTask(main);

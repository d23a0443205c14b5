/**
 * `deno task knn`: weighted k-NN evaluation (official `eval_knn.py`) of a checkpoint's teacher or
 * student backbone. Arguments use the official names.
 *
 *   deno task knn --pretrained_weights out/pretrain/checkpoint.safetensors [--checkpoint_key teacher]
 */

import { parseArgs } from "node:util";
import { loadTrainingCheckpoint } from "../lib/train/checkpoint.ts";
import { backboneFromArgs } from "../lib/train/config.ts";
import { evaluateKnn } from "../lib/eval/knn_eval.ts";

const HELP = `Usage: deno task knn --pretrained_weights FILE [options]

  --pretrained_weights FILE   training checkpoint (.safetensors) written by deno task pretrain
  --checkpoint_key KEY        teacher (default) or student
  --data_path PATH            dataset with train and test splits (default: the run's --data_path)
  --nb_knn K...               numbers of neighbours (default 10 20 100 200)
  --temperature T             voting temperature (default 0.07)
  --avgpool_patchtokens N     0: CLS tokens, 1: mean patch token, 2: both (default 0)
  --n_last_blocks N           CLS tokens of the last N blocks (default 1)
  --image_size S              evaluation crop side (default: the run's global crop size)
  --batch_size_per_gpu B      images per forward pass (default 128)
  --num_workers N             data-loading workers (default: cores - 1)`;

function main(): Promise<number> | number {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      pretrained_weights: { type: "string" },
      checkpoint_key: { type: "string", default: "teacher" },
      data_path: { type: "string" },
      nb_knn: { type: "string", multiple: true },
      temperature: { type: "string", default: "0.07" },
      avgpool_patchtokens: { type: "string", default: "0" },
      n_last_blocks: { type: "string", default: "1" },
      image_size: { type: "string" },
      batch_size_per_gpu: { type: "string", default: "128" },
      num_workers: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    allowPositionals: true,
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (!values.pretrained_weights) throw new Error("--pretrained_weights is required (see --help)");
  return run(values as Required<typeof values>);
}

async function run(
  values: Record<string, string | string[] | boolean | undefined>,
): Promise<number> {
  const key = String(values.checkpoint_key);
  if (key !== "teacher" && key !== "student") {
    throw new Error(`--checkpoint_key must be teacher or student, got ${key}`);
  }
  const checkpoint = await loadTrainingCheckpoint(String(values.pretrained_weights));
  const avgpool = Number(values.avgpool_patchtokens);
  if (![0, 1, 2].includes(avgpool)) throw new Error("--avgpool_patchtokens must be 0, 1 or 2");
  const ks =
    (values.nb_knn as string[] | undefined)?.flatMap((v) => v.split(/[ ,]+/)).map(Number) ??
      [10, 20, 100, 200];
  if (ks.some((k) => !Number.isInteger(k) || k < 1)) {
    throw new Error("--nb_knn takes positive integers");
  }
  const dataPath = String(values.data_path ?? checkpoint.args.data_path);
  console.log(
    `k-NN of the ${key} of ${values.pretrained_weights} (epoch ${checkpoint.epoch}) on ${dataPath}`,
  );
  const results = await evaluateKnn(checkpoint.store, dataPath, {
    backbone: backboneFromArgs(checkpoint.args),
    prefix: key,
    size: Number(values.image_size ?? checkpoint.args.global_crop_size),
    batch: Number(values.batch_size_per_gpu),
    avgpool: avgpool as 0 | 1 | 2,
    nLastBlocks: Number(values.n_last_blocks),
    workers: values.num_workers ? Number(values.num_workers) : undefined,
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

try {
  Deno.exit(await main());
} catch (error) {
  console.error(`error: ${error instanceof Error ? error.message : String(error)}`);
  Deno.exit(1);
}

/**
 * `deno task pretrain`: iBOT pre-training with the official `main_ibot.py` arguments. Without
 * flags it trains the builtin preset (a small ViT on the bundled Fashion-MNIST subset) and reports
 * k-NN accuracy before and after. `--help` lists every argument.
 */

import { join } from "node:path";
import { parsePretrainArgs, type PretrainArgs, pretrainHelp } from "../lib/train/args.ts";
import { CHECKPOINT_FILE, IbotTrainer, NonFiniteLossError } from "../lib/train/trainer.ts";
import { evaluateKnn } from "../lib/eval/knn_eval.ts";
import { exportArtifacts } from "../lib/train/artifacts.ts";
import type { KnnResult } from "../lib/eval/knn.ts";

function describe(results: readonly KnnResult[]): string {
  return results.map((r) => `k=${r.k}: top-1 ${r.top1.toFixed(2)}%  top-5 ${r.top5.toFixed(2)}%`)
    .join("\n  ");
}

async function knn(trainer: IbotTrainer, args: PretrainArgs, prefix: string): Promise<KnnResult[]> {
  return await evaluateKnn(trainer.store, args.data_path, {
    backbone: trainer.backbone,
    prefix,
    size: args.global_crop_size,
    ks: [10, 20, 100, 200],
    threads: args.threads > 0 ? args.threads : undefined,
    progress: console.log,
  });
}

async function main(): Promise<number> {
  const { args, help } = parsePretrainArgs(Deno.args);
  if (help) {
    console.log(pretrainHelp());
    return 0;
  }
  console.log(
    `Preset ${args.preset}: ${args.arch}/${args.patch_size}, data ${args.data_path}, output ${args.output_dir}, ${args.device}, ${args.precision}`,
  );
  const trainer = await IbotTrainer.create(args, console.log);
  try {
    if (args.export_artifacts) {
      await exportArtifacts(trainer, args.export_artifacts);
      console.log(
        `Wrote the training and evaluation graphs and a checkpoint to ${args.export_artifacts}`,
      );
      return 0;
    }
    const fresh = trainer.position.epoch === 0 && trainer.position.iteration === 0;
    let before: KnnResult[] | undefined;
    if (args.knn_eval && fresh) {
      console.log("k-NN at initialisation (teacher and student start equal)...");
      before = await knn(trainer, args, "teacher");
      console.log(`  ${describe(before)}`);
    }
    const controller = new AbortController();
    const onInterrupt = () => {
      console.log(
        "\nInterrupted: finishing this iteration and saving a checkpoint (press Ctrl-C again to quit at once)",
      );
      Deno.removeSignalListener("SIGINT", onInterrupt);
      controller.abort();
    };
    Deno.addSignalListener("SIGINT", onInterrupt);
    const outcome = await trainer.train(controller.signal);
    Deno.removeSignalListener("SIGINT", onInterrupt);
    const checkpoint = join(trainer.outputDir, CHECKPOINT_FILE);
    if (outcome === "interrupted") {
      console.log(
        `Saved ${checkpoint} at epoch ${trainer.position.epoch}, iteration ${trainer.position.iteration}; run the same command to resume.`,
      );
      return 130;
    }
    console.log(`Training done; checkpoint ${checkpoint}`);
    if (args.knn_eval) {
      const top1 = (rs: readonly KnnResult[]) => `${rs.find((r) => r.k === 20)!.top1.toFixed(2)}%`;
      const summary: string[] = [];
      for (const prefix of ["teacher", "student"]) {
        console.log(`k-NN of the trained ${prefix}...`);
        const after = await knn(trainer, args, prefix);
        console.log(`  ${describe(after)}`);
        summary.push(`${prefix} ${top1(after)}`);
      }
      const start = before ? `${top1(before)} at initialisation → ` : "";
      console.log(`k-NN top-1 (k=20): ${start}${summary.join(", ")} after pre-training`);
    }
    return 0;
  } finally {
    await trainer.close();
  }
}

try {
  Deno.exit(await main());
} catch (error) {
  const message = error instanceof Error ? error.message : String(error);
  console.error(error instanceof NonFiniteLossError ? `Stopped: ${message}` : `error: ${message}`);
  Deno.exit(1);
}

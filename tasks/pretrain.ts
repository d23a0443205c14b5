/**
 * `deno task pretrain`: iBOT pre-training with the official `main_ibot.py` arguments. Without
 * flags it trains the builtin preset (a small ViT on the bundled Fashion-MNIST subset) and reports
 * k-NN accuracy before and after. `--help` lists every argument.
 *
 * Under `mpirun -np N` it trains data-parallel, one rank per process: rank 0 alone prints and
 * writes files; an error on any rank ends the whole job with that rank's message; Ctrl-C on
 * `mpirun` (which sends the ranks SIGTERM) stops every rank after the same iteration and rank 0
 * saves.
 */

import { join } from "node:path";
import { type Communicator, worldCommunicator } from "../lib/runtime/mpi.ts";
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
  const comm = trainer.communicator;
  return await evaluateKnn(trainer.store, args.data_path, {
    backbone: trainer.backbone,
    prefix,
    size: args.global_crop_size,
    ks: [10, 20, 100, 200],
    threads: args.threads > 0 ? args.threads : undefined,
    progress: comm.rank === 0 ? console.log : undefined,
    communicator: comm,
  });
}

async function main(comm: Communicator): Promise<number> {
  const { args, help } = parsePretrainArgs(Deno.args);
  const say = comm.rank === 0 ? console.log : () => {};
  if (help) {
    say(pretrainHelp());
    return 0;
  }
  say(
    `Preset ${args.preset}: ${args.arch}/${args.patch_size}, data ${args.data_path}, output ${args.output_dir}, ${args.device}, ${args.precision}`,
  );
  if (comm.size > 1) {
    say(
      `Data-parallel over ${comm.size} processes: ${args.batch_size_per_gpu} images each, ` +
        `${comm.size * args.batch_size_per_gpu} per step`,
    );
  }
  const trainer = await IbotTrainer.create(args, console.log, { communicator: comm });
  try {
    if (args.export_artifacts) {
      if (comm.rank === 0) await exportArtifacts(trainer, args.export_artifacts);
      say(
        `Wrote the training and evaluation graphs and a checkpoint to ${args.export_artifacts}`,
      );
      return 0;
    }
    const fresh = trainer.position.epoch === 0 && trainer.position.iteration === 0;
    let before: KnnResult[] | undefined;
    if (args.knn_eval && fresh) {
      say("k-NN at initialisation (teacher and student start equal)...");
      before = await knn(trainer, args, "teacher");
      say(`  ${describe(before)}`);
    }
    const controller = new AbortController();
    // Ctrl-C: SIGINT in a process of its own; under mpirun the ranks get SIGTERM.
    const signals: Deno.Signal[] = comm.size > 1 ? ["SIGTERM", "SIGINT"] : ["SIGINT"];
    const onInterrupt = () => {
      say(
        "\nInterrupted: finishing this iteration and saving a checkpoint (press Ctrl-C again to quit at once)",
      );
      for (const signal of signals) Deno.removeSignalListener(signal, onInterrupt);
      controller.abort();
    };
    for (const signal of signals) Deno.addSignalListener(signal, onInterrupt);
    const outcome = await trainer.train(controller.signal);
    for (const signal of signals) Deno.removeSignalListener(signal, onInterrupt);
    const checkpoint = join(trainer.outputDir, CHECKPOINT_FILE);
    if (outcome === "interrupted") {
      say(
        `Saved ${checkpoint} at epoch ${trainer.position.epoch}, iteration ${trainer.position.iteration}; run the same command to resume.`,
      );
      return 130;
    }
    say(`Training done; checkpoint ${checkpoint}`);
    if (args.knn_eval) {
      const top1 = (rs: readonly KnnResult[]) => `${rs.find((r) => r.k === 20)!.top1.toFixed(2)}%`;
      const summary: string[] = [];
      for (const prefix of ["teacher", "student"]) {
        say(`k-NN of the trained ${prefix}...`);
        const after = await knn(trainer, args, prefix);
        say(`  ${describe(after)}`);
        summary.push(`${prefix} ${top1(after)}`);
      }
      const start = before ? `${top1(before)} at initialisation → ` : "";
      say(`k-NN top-1 (k=20): ${start}${summary.join(", ")} after pre-training`);
    }
    return 0;
  } finally {
    trainer.close();
  }
}

const comm = worldCommunicator();
let code: number;
try {
  code = await main(comm);
} catch (error) {
  const message = error instanceof Error ? error.message : String(error);
  const rank = comm.size > 1 ? `rank ${comm.rank}: ` : "";
  console.error(
    `${rank}${error instanceof NonFiniteLossError ? `Stopped: ${message}` : `error: ${message}`}`,
  );
  // Ends every rank of the job at once, with this rank's message printed.
  if (comm.size > 1) comm.abort(1);
  Deno.exit(1);
}
// After a stop by mpirun (code 130) MPI_Finalize would wait for the SIGKILL: exit without it.
if (code === 0) comm.finalize();
Deno.exit(code);

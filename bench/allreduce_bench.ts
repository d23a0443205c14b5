/**
 * The time of one MPI all-reduce of a training step's gradients (float32, summed in place, as
 * data-parallel training moves them) for three sizes: the trainable parameters of the benchmark
 * step (bench/ibot_step.ts), of a ViT-S/16 backbone, and of the whole iBOT ViT-S/16 student
 * (out_dim 8192, shared head).
 *
 * `deno run -A bench/allreduce_bench.ts [ranks]` starts itself under `mpirun` with `ranks`
 * processes (2 by default) on this machine; rank 0 prints, for each size, the median and the
 * fastest of 10 all-reduces after 2 warm-ups, and the bytes per second they move.
 */

import { IBOT_BENCH } from "./ibot_step.ts";
import { shapeSize } from "../lib/graph/tensor.ts";
import { launchedByMpirun, worldCommunicator } from "../lib/runtime/mpi.ts";
import {
  declareIbotLoss,
  type IbotStepConfig,
  trainableParams,
  trainingGraph,
} from "../lib/train/step.ts";

/** The official ViT-S/16 pre-training: 224 px global crops, 10 local crops of 96 px. */
const VIT_SMALL: IbotStepConfig = {
  ...IBOT_BENCH,
  backbone: { embedDim: 384, depth: 12, heads: 6, patchSize: 16, imgSize: 224 },
  studentHead: { outDim: 8192, patchOutDim: 8192, sharedHead: true },
  batch: 1,
  globalSize: 224,
  localCrops: 10,
  localSize: 96,
  maskSlots: 196,
};

/** Timed all-reduces per size, after the warm-ups. */
const REPEATS = 10;
const WARMUPS = 2;

/** Elements of the trainable parameters of `config`, all of them or those under `prefix`. */
function trainableElements(config: IbotStepConfig, prefix = ""): number {
  const g = trainingGraph("count", config);
  declareIbotLoss(g, config);
  return trainableParams(g, config)
    .filter((t) => t.name.startsWith(prefix))
    .reduce((n, t) => n + shapeSize(t.shape), 0);
}

/** Runs this file under `mpirun` with `ranks` processes and exits with its code. */
async function launch(ranks: number): Promise<never> {
  const { code } = await new Deno.Command("mpirun", {
    args: [
      "--allow-run-as-root",
      "--oversubscribe",
      "-np",
      String(ranks),
      Deno.execPath(),
      "run",
      "-A",
      new URL(import.meta.url).pathname,
    ],
  }).spawn().status;
  Deno.exit(code);
}

/** Times the all-reduces on every rank; rank 0 prints. */
async function measure(): Promise<void> {
  const comm = worldCommunicator();
  const sizes: [string, number][] = [
    ["benchmark step (vit_tiny, out_dim 1024)", trainableElements(IBOT_BENCH)],
    ["ViT-S/16 backbone", trainableElements(VIT_SMALL, "student.backbone.")],
    ["iBOT ViT-S/16 student (out_dim 8192)", trainableElements(VIT_SMALL)],
  ];
  if (comm.rank === 0) console.log(`all-reduce of float32 gradients over ${comm.size} ranks`);
  for (const [what, elements] of sizes) {
    const gradients = new Float32Array(elements).fill(1);
    const times: number[] = [];
    for (let i = 0; i < WARMUPS + REPEATS; i++) {
      await comm.barrier();
      const start = performance.now();
      await comm.allreduceSum(gradients);
      if (i >= WARMUPS) times.push(performance.now() - start);
    }
    times.sort((a, b) => a - b);
    const median = times[REPEATS >> 1];
    const gbPerS = (elements * 4) / (median / 1000) / 1e9;
    if (comm.rank === 0) {
      console.log(
        `${what}: ${(elements / 1e6).toFixed(2)}M floats, median ${median.toFixed(1)} ms, ` +
          `fastest ${times[0].toFixed(1)} ms, ${gbPerS.toFixed(2)} GB/s`,
      );
    }
  }
  comm.finalize();
}

if (launchedByMpirun()) await measure();
else await launch(Number(Deno.args[0] ?? 2));

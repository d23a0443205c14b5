/**
 * `deno task occlusion`: occlusion robustness of a linear-probed ViT (official
 * `analysis/eval_occlusion.sh`, `analysis/occlusion/eval.py`): top-1 on the test split as a
 * growing share of patches is dropped at random (`--random_drop`) or by the saliency of a
 * network's CLS attention (`--dino`: the foreground or the background dropped). Prints the
 * curves as a table and draws them in `occlusion.png` (x: share of the image dropped, 0 to 1;
 * y: top-1, 0 to 100 %; blue random, orange foreground dropped, green background dropped).
 *
 *   deno task occlusion --pretrained_weights out/pretrain/full_linear.pth --random_drop --dino
 */

import { dirname, join } from "node:path";
import { BackboneRunner } from "../lib/analysis/backbone_runner.ts";
import { drawLinePlot, type LineSeries, PLOT_COLOURS } from "../lib/analysis/line_plot.ts";
import {
  LINEAR_PROBE_MODEL_OPTIONS,
  openLinearProbeModel,
} from "../lib/analysis/linear_probe_model.ts";
import {
  type OcclusionPoint,
  randomDropCurve,
  saliencyDropCurves,
} from "../lib/analysis/occlusion.ts";
import { savePng } from "../lib/analysis/picture.ts";
import { loadBackbone } from "../lib/checkpoint/backbone_file.ts";
import { evalBatches } from "../lib/data/loader.ts";
import { Progress } from "../lib/runtime/progress.ts";
import { type OptionTable, type OptionValues, required } from "../lib/cli/options.ts";
import { runTask } from "./run_task.ts";

const OPTIONS = {
  ...LINEAR_PROBE_MODEL_OPTIONS,
  random_drop: { kind: "flag", help: "Drop 0 %, 10 %, … 90 % of the grid cells at random." },
  dino: {
    kind: "flag",
    help: "Drop the patches that hold the top 10 %, 20 %, … 100 % of the saliency network's " +
      "CLS attention (foreground), or all the others (background).",
  },
  shuffle_size: {
    kind: "ints",
    metavar: "N [W]",
    help: "Random drop: the grid of cells, N×N or N×W (default: the patch grid).",
    min: 1,
  },
  drop_mode: {
    kind: "string",
    help: "Random drop: zero the cells' pixels (official), or remove their tokens from the " +
      "sequence (the grid must be the patch grid).",
    choices: ["zero", "remove"],
    default: "zero",
  },
  exp_count: { kind: "int", help: "Random runs to average.", default: 1, min: 1 },
  seed: { kind: "int", help: "Seed of the random cells.", default: 1 },
  saliency_weights: {
    kind: "string",
    metavar: "file",
    help: "--dino: the saliency network, any ViT backbone file (the official code uses a DINO " +
      "ViT-S; default: the evaluated backbone).",
  },
  saliency_key: {
    kind: "string",
    help: "--dino: which network of the saliency file.",
    choices: ["teacher", "student", "state_dict"],
    default: "teacher",
  },
  saliency_head: {
    kind: "int",
    help: "--dino: the attention head of the saliency network's last block.",
    default: 1,
    min: 0,
  },
  save_path: {
    kind: "string",
    metavar: "dir",
    help: "Where occlusion.png goes (default: beside --pretrained_weights).",
  },
} as const satisfies OptionTable;

function table(title: string, points: readonly OcclusionPoint[], lambdas?: readonly number[]) {
  console.log(title);
  points.forEach((p, i) => {
    const lambda = lambdas ? `  λ ${lambdas[i].toFixed(1)}` : "";
    console.log(
      `  dropped ${(100 * p.dropped).toFixed(1).padStart(5)} %${lambda}  ` +
        `Top1 ${p.top1.toFixed(2)}`,
    );
  });
}

async function main(values: OptionValues<typeof OPTIONS>): Promise<number> {
  if (!values.random_drop && !values.dino) {
    throw new Error("choose --random_drop, --dino or both");
  }
  const grid = values.shuffle_size;
  if (grid && grid.length > 2) throw new Error(`--shuffle_size takes one or two numbers`);
  const weights = required(values.pretrained_weights, "pretrained_weights");
  const { model, combined, test } = await openLinearProbeModel(values);
  const batches = () => evalBatches(test, model.size, model.batch, values.num_workers);
  const series: LineSeries[] = [];
  try {
    console.log(
      `occlusion of ${weights} (${combined.head.classes} classes) on ${model.size}-pixel ` +
        `test images, ${model.side}×${model.side} patches`,
    );
    if (values.random_drop) {
      const progress = new Progress({ label: "random drop" });
      const points = await randomDropCurve(model, batches(), {
        grid: grid && (grid.length === 1 ? [grid[0], grid[0]] : [grid[0], grid[1]]),
        mode: values.drop_mode,
        runs: values.exp_count,
        seed: values.seed,
        onBatch: (done, total) => progress.update(done, total),
      });
      progress.finish();
      table(`random drop (${values.drop_mode}):`, points);
      series.push({ points: points.map((p) => [p.dropped, p.top1]), rgb: PLOT_COLOURS[0] });
    }
    if (values.dino) {
      const saliencyPath = values.saliency_weights;
      const loaded = saliencyPath
        ? await loadBackbone(saliencyPath, { key: values.saliency_key })
        : combined.backbone;
      const runner = BackboneRunner.create(loaded, { device: values.device });
      try {
        const progress = new Progress({ label: "saliency drop" });
        const curves = await saliencyDropCurves(model, runner, batches(), {
          head: values.saliency_head,
          onBatch: (done, total) => progress.update(done, total),
        });
        progress.finish();
        const lambdas = curves.foreground.map((p) => p.lambda);
        table(`foreground dropped (saliency of ${loaded.path}):`, curves.foreground, lambdas);
        table("background dropped:", curves.background, lambdas);
        for (const [i, curve] of [curves.foreground, curves.background].entries()) {
          series.push({ points: curve.map((p) => [p.dropped, p.top1]), rgb: PLOT_COLOURS[1 + i] });
        }
      } finally {
        await runner.close();
      }
    }
  } finally {
    await model.close();
  }
  const picture = drawLinePlot(series, { xRange: [0, 1] });
  const out = join(values.save_path ?? dirname(weights), "occlusion.png");
  await Deno.mkdir(dirname(out), { recursive: true });
  await savePng(out, picture);
  console.log(`drew the curves in ${out}`);
  return 0;
}

await runTask({
  usage: "deno task occlusion --pretrained_weights FILE (--random_drop | --dino) [options]",
  about: "Top-1 of a linear-probed ViT as patches are dropped (official occlusion/eval.py).",
  options: OPTIONS,
}, main);

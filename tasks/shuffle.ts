/**
 * `deno task shuffle`: shuffle robustness of a linear-probed ViT (official
 * `analysis/eval_shuffle.sh`): top-1 on the test split when the image's pieces on a rows×cols
 * grid are put back in a random order, for each grid. Prints a table and draws `shuffle.png`
 * (x: log2 of the number of pieces, from the unshuffled image at 1 piece; y: top-1, 0 to 100 %).
 *
 *   deno task shuffle --pretrained_weights out/pretrain/full_linear.pth
 *     --shuffle_h 2 2 4 4 8 16 --shuffle_w 2 4 4 8 8 16
 */

import { dirname, join } from "node:path";
import { drawLinePlot } from "../lib/analysis/line_plot.ts";
import {
  LINEAR_PROBE_MODEL_OPTIONS,
  openLinearProbeModel,
} from "../lib/analysis/linear_probe_model.ts";
import { OFFICIAL_SHUFFLE_GRIDS, shuffleCurve } from "../lib/analysis/shuffle.ts";
import { savePng } from "../lib/analysis/picture.ts";
import { evalBatches } from "../lib/data/loader.ts";
import { Progress } from "../lib/runtime/progress.ts";
import { type OptionTable, type OptionValues, required } from "../lib/cli/options.ts";
import { runTask } from "./run_task.ts";

const OPTIONS = {
  ...LINEAR_PROBE_MODEL_OPTIONS,
  shuffle_size: {
    kind: "ints",
    metavar: "N",
    help: "N×N grids to shuffle (used when --shuffle_h and --shuffle_w are not given).",
    min: 1,
  },
  shuffle_h: {
    kind: "ints",
    metavar: "H",
    help: `Rows of each grid, paired with --shuffle_w (default ${
      OFFICIAL_SHUFFLE_GRIDS.map((g) => g[0]).join(" ")
    }, the official list for 224-pixel images).`,
    min: 1,
  },
  shuffle_w: {
    kind: "ints",
    metavar: "W",
    help: `Columns of each grid (default ${OFFICIAL_SHUFFLE_GRIDS.map((g) => g[1]).join(" ")}).`,
    min: 1,
  },
  exp_count: { kind: "int", help: "Random runs to average.", default: 1, min: 1 },
  seed: { kind: "int", help: "Seed of the permutations.", default: 1 },
  save_path: {
    kind: "string",
    metavar: "dir",
    help: "Where shuffle.png goes (default: beside --pretrained_weights).",
  },
} as const satisfies OptionTable;

/** The grids the flags name: --shuffle_h/--shuffle_w pairs, else --shuffle_size, else official. */
function grids(values: OptionValues<typeof OPTIONS>): [number, number][] {
  const { shuffle_h: h, shuffle_w: w, shuffle_size: n } = values;
  if (h || w) {
    if (!h || !w || h.length !== w.length) {
      throw new Error("--shuffle_h and --shuffle_w must be given together, equally many");
    }
    return h.map((rows, i) => [rows, w[i]]);
  }
  if (n) return n.map((side) => [side, side]);
  return OFFICIAL_SHUFFLE_GRIDS.map(([rows, cols]) => [rows, cols]);
}

async function main(values: OptionValues<typeof OPTIONS>): Promise<number> {
  const weights = required(values.pretrained_weights, "pretrained_weights");
  const chosen: [number, number][] = [[1, 1], ...grids(values)];
  const { model, test } = await openLinearProbeModel(values);
  let points;
  try {
    console.log(`shuffle of ${weights} on ${model.size}-pixel test images`);
    const progress = new Progress({ label: "shuffle" });
    points = await shuffleCurve(
      model,
      evalBatches(test, model.size, model.batch, values.num_workers),
      chosen,
      {
        runs: values.exp_count,
        seed: values.seed,
        onBatch: (done, total) => progress.update(done, total),
      },
    );
    progress.finish();
  } finally {
    await model.close();
  }
  for (const p of points) {
    const grid = p.pieces === 1 ? "unshuffled" : `${p.grid[0]}×${p.grid[1]} grid`;
    console.log(
      `  ${grid.padEnd(11)} ${String(p.pieces).padStart(4)} pieces  ` +
        `Top1 ${p.top1.toFixed(2)}`,
    );
  }
  const picture = drawLinePlot([{ points: points.map((p) => [Math.log2(p.pieces), p.top1]) }]);
  const out = join(values.save_path ?? dirname(weights), "shuffle.png");
  await Deno.mkdir(dirname(out), { recursive: true });
  await savePng(out, picture);
  console.log(`drew the curve in ${out}`);
  return 0;
}

await runTask({
  usage: "deno task shuffle --pretrained_weights FILE [--shuffle_h H... --shuffle_w W...]",
  about: "Top-1 of a linear-probed ViT on images whose pieces are shuffled (official " +
    "eval_shuffle.sh).",
  options: OPTIONS,
}, main);

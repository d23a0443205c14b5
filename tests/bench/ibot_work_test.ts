import { backboneWidth, isSwin, patchGrid } from "../../lib/models/backbone.ts";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { assert } from "../assert.ts";
import { countMacs } from "../../lib/graph/cost.ts";
import { HEAD_BOTTLENECK_DIM, HEAD_HIDDEN_DIM } from "../../lib/models/head.ts";
import { SWIN_PATCH_SIZE, swinStages } from "../../lib/models/swin.ts";
import { buildIbotStep, type IbotStepConfig } from "../../lib/train/step.ts";
import { benchSlots, IBOT_BENCH } from "../../bench/ibot_step.ts";
import { SWIN_BENCH } from "../../bench/swin_step.ts";
import { blasProblem, runTorch, type TorchReport } from "../../bench/torch_timing.ts";
import { PYTHON, torchAvailable } from "../reference/torch.ts";

const ignore = !torchAvailable();

/** What `equal_work_check.py` prints. */
interface EqualWorkCheck {
  /** Largest difference from the official step, relative to its scale, per quantity. */
  readonly differences: Record<string, number>;
  /** The uses of the recording autocast factory and of the scaler stand-in, in order. */
  readonly calls: string[];
}

Deno.test({
  name: "PyTorch's equal-work step makes the official step's update (float64)",
  ignore,
  async fn() {
    const script = join(dirname(fileURLToPath(import.meta.url)), "equal_work_check.py");
    const { success, stdout, stderr } = await new Deno.Command(PYTHON, {
      args: [script],
      env: { OMP_NUM_THREADS: "1" },
    }).output();
    const text = new TextDecoder();
    assert(success, `equal_work_check.py failed:\n${text.decode(stderr)}`);
    const { differences, calls }: EqualWorkCheck = JSON.parse(text.decode(stdout));
    const compared = ["loss", "cls", "patch", "acc", "student", "teacher", "center", "center2"];
    assert.deepEqual(Object.keys(differences).sort(), compared.sort());
    for (const [name, difference] of Object.entries(differences)) {
      assert(difference <= 1e-10, `${name} differs by ${difference} of its scale`);
    }
    // Two iterations, each in the autocast context and through the loss-scaled update.
    const iteration = ["autocast", "scale", "unscale_", "step", "update"];
    assert.deepEqual(calls, [...iteration, ...iteration]);
  },
});

/**
 * One counted iteration of `ibot_step_torch.py` for `arch` at a small batch, on `slots` flat
 * slots.
 */
function countTorchWork(
  work: "official" | "equal",
  batch: number,
  slots: number,
  arch: "vit" | "swin" = "vit",
): Promise<TorchReport> {
  return runTorch(PYTHON, "ibot_step_torch.py", [
    ...["--arch", arch, "--work", work, "--steps", "0", "--warmup", "0", "--count-macs"],
    "--threads",
    "1",
    ...["--batch", String(batch), "--slots", String(slots)],
  ]);
}

/**
 * The MACs the official step adds to our step's head work for `config` on `slots` flat slots: the
 * student's head MLP on every token (forward, input and weight gradients) instead of the CLS
 * tokens and the slots, the student's last layer on every patch token (with gradients on the
 * global crops') instead of the slots, and the teacher's on every patch token instead of the
 * slots and one mean per row.
 */
function fullHeadWork(config: IbotStepConfig, slots: number): number {
  const { batch, globalCrops: g, localCrops: l } = config;
  const cell = patchGrid(config.backbone);
  const globalPatches = (config.globalSize / cell) ** 2;
  const localPatches = (config.localSize / cell) ** 2;
  const mlp = backboneWidth(config.backbone) * HEAD_HIDDEN_DIM + HEAD_HIDDEN_DIM ** 2 +
    HEAD_HIDDEN_DIM * HEAD_BOTTLENECK_DIM;
  const lastLayer = HEAD_BOTTLENECK_DIM * config.studentHead.outDim;
  const allTokens = batch * (g * (1 + globalPatches) + l * (1 + localPatches));
  const headRows = batch * (g + l) + slots;
  const studentLastLayer = 3 * g * batch * globalPatches + l * batch * localPatches - 3 * slots;
  const teacherLastLayer = g * batch * (1 + globalPatches) - (2 * g * batch + slots);
  return 3 * mlp * (allTokens - headRows) + lastLayer * (studentLastLayer + teacherLastLayer);
}

/**
 * The MACs the official Swin step adds by projecting the padding that rounds each block's token
 * grid up to a multiple of its window: qkv (C → 3C) and proj (C → C) on the padded positions, in
 * the student (forward, input and weight gradients) on every crop and in the teacher (forward) on
 * the global crops.
 */
function paddingProjectionWork(config: IbotStepConfig): number {
  const { backbone, batch, globalCrops: g, localCrops: l } = config;
  assert(isSwin(backbone), "the configuration's backbone is not a Swin");
  let macs = 0;
  swinStages({ ...backbone, maskedImModeling: false }).forEach(({ dim, blocks }, s) => {
    for (const { window } of blocks) {
      const padding = (size: number) => {
        const side = Math.ceil(size / SWIN_PATCH_SIZE / 2 ** s);
        return (Math.ceil(side / window) * window) ** 2 - side ** 2;
      };
      const [global, local] = [padding(config.globalSize), padding(config.localSize)];
      macs += 4 * dim * dim * batch * (3 * (g * global + l * local) + g * global);
    }
  });
  return macs;
}

Deno.test({
  name: "the equal-work PyTorch step does our step's work; the official step adds the full head",
  ignore,
  async fn() {
    // The counted batch has 75 masked patches; S = 80 counts padding slots too, and differs from
    // G·B·M = 76, the slots of a head run per crop row.
    const batch = 2;
    const slots = 80;
    const config = { ...IBOT_BENCH, batch, slots };
    const ours = countMacs(buildIbotStep(config).graph);
    const official = await countTorchWork("official", batch, slots);
    const equal = await countTorchWork("equal", batch, slots);
    // Ours also sums the gradients of biases and LayerNorm parameters over rows as products with
    // a ones vector (0.15% of the work); PyTorch's sums are not products.
    const relative = (ours - equal.macs!) / equal.macs!;
    assert(relative >= 0 && relative < 0.003, `ours ${ours} against PyTorch's ${equal.macs}`);
    assert.equal(official.macs! - equal.macs!, fullHeadWork(config, slots));

    for (const report of [official, equal]) {
      assert(report.blas.length > 0, "the PyTorch process reported no BLAS library");
      for (const path of report.blas) {
        assert.match(path, /\/lib(open)?blas[^/]*\.so|\/liblapack[^/]*\.so/);
      }
    }
  },
});

Deno.test({
  name: "the Swin benchmark: PyTorch's equal work is ours; the official adds head and padding work",
  ignore,
  async fn() {
    // Two images: 4 global-crop rows with one masked cell each of their 2×2 last-stage grids.
    const batch = 2;
    const config = { ...SWIN_BENCH, batch };
    const { slots, masked } = benchSlots(config);
    assert.equal(masked, 4);
    const ours = countMacs(buildIbotStep({ ...config, slots }).graph);
    const official = await countTorchWork("official", batch, slots, "swin");
    const equal = await countTorchWork("equal", batch, slots, "swin");
    const relative = (ours - equal.macs!) / equal.macs!;
    assert(relative >= 0 && relative < 0.003, `ours ${ours} against PyTorch's ${equal.macs}`);
    // The official work adds the head on every token (about 3% of its total at 64 px) and the
    // projections of the windows' padding (about 23%, mostly the first two stages: their 16×16
    // and 8×8 grids are padded to 21×21 and 14×14 on the global crops, their 8×8 and 4×4 grids to
    // 14×14 and 7×7 on the local ones).
    const head = fullHeadWork(config, slots);
    const padding = paddingProjectionWork(config);
    assert.equal(official.macs! - equal.macs!, head + padding);
    const [headShare, paddingShare] = [head / official.macs!, padding / official.macs!];
    assert(headShare > 0.02 && headShare < 0.04, `the full head is ${headShare} of the total`);
    assert(
      paddingShare > 0.2 && paddingShare < 0.25,
      `the padding's projections are ${paddingShare} of the total`,
    );
  },
});

Deno.test("blasProblem accepts only OpenBLAS's OpenMP variant and names the fix otherwise", () => {
  const openmp = "/usr/lib/x86_64-linux-gnu/openblas-openmp";
  const pthread = "/usr/lib/x86_64-linux-gnu/openblas-pthread";
  assert.equal(
    blasProblem([`${openmp}/libblas.so.3`, `${openmp}/libopenblasp-r0.3.21.so`]),
    undefined,
  );
  const mixed = blasProblem([`${openmp}/libblas.so.3`, `${pthread}/libopenblasp-r0.3.21.so`]);
  assert.match(
    mixed!,
    /^PyTorch used \S+\/openblas-pthread\/libopenblasp-r0\.3\.21\.so, not OpenBLAS's/,
  );
  for (const lib of ["libblas.so.3", "liblapack.so.3", "libopenblas.so.0"]) {
    assert(
      mixed!.includes(`update-alternatives --set ${lib}-x86_64-linux-gnu ${openmp}/${lib}`),
      `the sentence names the alternative of ${lib}: ${mixed}`,
    );
  }
  assert.match(blasProblem(["/usr/lib/x86_64-linux-gnu/blas/libblas.so.3"])!, /\/blas\/libblas/);
  assert.match(blasProblem([])!, /used no BLAS library/);
});

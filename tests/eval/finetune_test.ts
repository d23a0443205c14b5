import { join } from "node:path";
import { assert } from "../assert.ts";
import { Mixup } from "../../lib/data/mixup.ts";
import {
  finetune,
  type FinetuneConfig,
  type FinetuneData,
  FinetuneRunner,
  initialClassifierStore,
  loadClassifierWeights,
  loadFinetuneCheckpoint,
} from "../../lib/eval/finetune.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { runDenoTask } from "../task_runner.ts";
import { tinyVitCheckpoint } from "./tiny_vit_checkpoint.ts";

const [SIZE, CLASSES, BATCH] = [8, 3, 6];
const CONFIG: FinetuneConfig = {
  model: {
    backbone: { embedDim: 8, depth: 2, heads: 2, patchSize: 4, imgSize: SIZE },
    numClasses: CLASSES,
    useCls: false,
  },
  imageSize: SIZE,
  batchSize: BATCH,
  evalBatchSize: 4,
  epochs: 3,
  warmupEpochs: 1,
  lr: 5e-3,
  minLr: 1e-5,
  weightDecay: 0.05,
  layerDecay: 0.75,
  dropPath: 0.1,
  smoothing: 0.1,
  seed: 1,
};

/** Images whose mean brightness tells the class, with noise; the same for a seed and an epoch. */
function syntheticData(iters: number): FinetuneData {
  const pixels = 3 * SIZE * SIZE;
  const batch = (rng: Rng, rows: number) => {
    const labels = Int32Array.from({ length: rows }, () => rng.int(CLASSES));
    const images = new Float32Array(rows * pixels);
    labels.forEach((label, r) => {
      for (let i = 0; i < pixels; i++) images[r * pixels + i] = label - 1 + 0.5 * rng.normal();
    });
    return { images, labels };
  };
  return {
    itersPerEpoch: iters,
    async *train(epoch) {
      const rng = new Rng(100 + epoch);
      for (let i = 0; i < iters; i++) yield batch(rng, BATCH);
    },
    async *validation() {
      const rng = new Rng(99);
      yield batch(rng, 4);
      yield { ...batch(rng, 4), count: 2 };
    },
  };
}

const MIXUP = new Mixup({
  mixupAlpha: 0.8,
  cutmixAlpha: 1,
  prob: 1,
  switchProb: 0.5,
  labelSmoothing: 0.1,
  numClasses: CLASSES,
});

Deno.test("fine-tuning writes its log and checkpoints, and a resumed run continues exactly", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const fresh = { epoch: 0, step: 0, maxAccuracy: 0 };
    // The whole run.
    const whole = await FinetuneRunner.create(
      CONFIG,
      initialClassifierStore(CONFIG.model, SIZE, 0).store,
    );
    const result = await finetune(whole, syntheticData(4), MIXUP, fresh, {
      outputDir: join(dir, "whole"),
    });
    await whole.release();
    const lines = (await Deno.readTextFile(join(dir, "whole", "log.txt"))).trim().split("\n");
    assert.equal(lines.length, 3);
    const first = JSON.parse(lines[0]);
    assert.equal(first.epoch, 0);
    for (const key of ["train_loss", "train_lr", "test_acc1", "test_acc5", "test_loss"]) {
      assert(Number.isFinite(first[key]), `${key} is a number`);
    }
    assert.equal(JSON.parse(lines[2]).test_acc5, 100, "top-5 of 3 classes is always right");
    const last = await loadFinetuneCheckpoint(join(dir, "whole", "checkpoint.safetensors"));
    assert.equal(last.progress.epoch, 3);
    assert.equal(last.progress.step, 12);
    const best = await loadFinetuneCheckpoint(join(dir, "whole", "checkpoint-best.safetensors"));
    assert.equal(best.progress.maxAccuracy, result.maxAccuracy);
    assert(last.params.has("fc_norm.weight") && last.params.has("head.weight"));
    assert(!last.params.has("backbone.norm.weight"), "mean pooling has no final norm");
    const weights = await loadClassifierWeights(
      join(dir, "whole", "checkpoint.safetensors"),
      CONFIG.model,
      SIZE,
    );
    for (const name of weights.names()) {
      assert.deepEqual(weights.get(name), whole.store.get(name), name);
    }

    // One epoch, then a run resumed from its checkpoint for the other two.
    const part = await FinetuneRunner.create(
      CONFIG,
      initialClassifierStore(CONFIG.model, SIZE, 0).store,
    );
    await finetune(part, syntheticData(4), MIXUP, fresh, {
      outputDir: join(dir, "part"),
      endEpoch: 1,
    });
    await part.release();
    const saved = await loadFinetuneCheckpoint(join(dir, "part", "checkpoint.safetensors"));
    assert.equal(saved.progress.epoch, 1);
    const resumed = await FinetuneRunner.create(CONFIG, saved.params, saved.moments);
    await finetune(resumed, syntheticData(4), MIXUP, saved.progress);
    await resumed.release();
    for (const name of whole.store.names()) {
      assert.deepEqual(resumed.store.get(name), whole.store.get(name), name);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno task finetune: a tiny checkpoint fine-tuned for one epoch, then evaluated", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const checkpoint = await tinyVitCheckpoint(dir);
    const out = join(dir, "finetune");
    const common = ["--input_size", "16", "--batch_size", "8", "--num_workers", "1"];
    const run = await runDenoTask("finetune", [
      ...["--finetune", checkpoint, "--epochs", "1", "--warmup_epochs", "0", "--use_cls"],
      ...["--output_dir", out, ...common],
    ]);
    assert.equal(run.code, 0, `${run.stdout}\n${run.stderr}`);
    const accuracy = /^Max accuracy: (\d+\.\d\d)%$/m.exec(run.stdout);
    assert(accuracy, `no accuracy line in:\n${run.stdout}`);
    const log = (await Deno.readTextFile(join(out, "log.txt"))).trim().split("\n");
    assert.equal(log.length, 1);
    assert.equal(JSON.parse(log[0]).epoch, 0);

    const evaluated = await runDenoTask("finetune", [
      ...["--finetune", checkpoint, "--eval", "--resume", join(out, "checkpoint.safetensors")],
      ...["--use_cls", ...common],
    ]);
    assert.equal(evaluated.code, 0, `${evaluated.stdout}\n${evaluated.stderr}`);
    assert.match(evaluated.stdout, new RegExp(`${accuracy[1]}%`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

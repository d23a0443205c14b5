import { assert, assertCloseToScale } from "../assert.ts";
import type { ClassifierConfig } from "../../lib/models/classifier.ts";
import { dropPathRates } from "../../lib/models/vit.ts";
import {
  FinetuneRunner,
  initialClassifierStore,
  resizePositionEmbedding,
} from "../../lib/eval/finetune.ts";
import { classifierParams } from "../../lib/eval/finetune_step.ts";
import type { NamedTensor } from "../../lib/runtime/named_tensor.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { fillDropPath } from "../../lib/train/batch_inputs.ts";
import { f32, f64, float64Reader, runTorchReference, torchAvailable } from "../reference/torch.ts";

const [BATCH, SIZE, CLASSES] = [4, 8, 3];
const BACKBONE = { embedDim: 8, depth: 2, heads: 2, patchSize: 4, imgSize: SIZE };
const [LR, WD, LAYER_DECAY, DROP_PATH] = [0.01, 0.05, 0.75, 0.3];

// clip_grad 1e-7 brings the clipped gradients down to Adam's eps: a first Adam step is otherwise
// blind to the gradients' scale, so clipping would not show.
const CASES = [
  { what: "CLS, clip_grad", useCls: true, clipGrad: 1e-7, layerDecay: LAYER_DECAY },
  { what: "mean pooling", useCls: false, layerDecay: LAYER_DECAY },
  { what: "projection head, no layer decay", useCls: true, projectionHidden: 12, layerDecay: 1 },
];

for (const { what, useCls, clipGrad, projectionHidden, layerDecay } of CASES) {
  Deno.test({
    name: `one fine-tuning iteration equals PyTorch's (${what})`,
    ignore: !torchAvailable(),
    async fn() {
      const model: ClassifierConfig = {
        backbone: BACKBONE,
        numClasses: CLASSES,
        useCls,
        projectionHidden,
        initScale: 1,
      };
      const { store } = initialClassifierStore(model, SIZE, 3);
      // Pre-trained weights are not zero: biases at zero would make the first Adam step's
      // ±lr·g/(|g| + eps) the whole value, where gradients near eps decide its last digits.
      const noise = new Rng(11);
      for (const name of store.names()) {
        const values = store.get(name);
        for (let i = 0; i < values.length; i++) values[i] += noise.normal(0, 0.05);
      }
      const runner = await FinetuneRunner.create({
        model,
        imageSize: SIZE,
        batchSize: BATCH,
        evalBatchSize: BATCH,
        epochs: 1,
        warmupEpochs: 0,
        lr: LR,
        minLr: 0,
        weightDecay: WD,
        layerDecay,
        dropPath: DROP_PATH,
        clipGrad,
        smoothing: 0,
        seed: 0,
      }, store);
      const rng = new Rng(7);
      const images = Float32Array.from({ length: BATCH * 3 * SIZE * SIZE }, () => rng.normal());
      const targets = new Float32Array(BATCH * CLASSES);
      for (let b = 0; b < BATCH; b++) {
        const raw = Array.from({ length: CLASSES }, () => rng.uniform());
        const total = raw.reduce((a, v) => a + v, 0);
        raw.forEach((v, c) => targets[b * CLASSES + c] = v / total);
      }
      const dropPath = new Float32Array(BACKBONE.depth * 2 * BATCH);
      fillDropPath(dropPath, dropPathRates(DROP_PATH, BACKBONE.depth), BATCH, rng);

      const params = classifierParams(model, SIZE);
      const tensors: Record<string, NamedTensor> = {
        depth: f64(BACKBONE.depth),
        heads: f64(BACKBONE.heads),
        patch_size: f64(BACKBONE.patchSize),
        img_size: f64(SIZE),
        classes: f64(CLASSES),
        use_cls: f64(useCls ? 1 : 0),
        drop_path: f64(DROP_PATH),
        layer_decay: f64(layerDecay),
        projection_hidden: f64(projectionHidden ?? 0),
        lr: f64(LR),
        weight_decay: f64(WD),
        clip_grad: f64(clipGrad ?? -1),
        images: f32(images, [BATCH, 3, SIZE, SIZE]),
        targets: f32(targets, [BATCH, CLASSES]),
        drop_path_scales: f32(dropPath, [BACKBONE.depth, 2, BATCH]),
      };
      for (const p of params) tensors[`param.${p.key}`] = f32(store.get(p.name), p.shape);
      const reference = await runTorchReference("finetune_torch.py", ["step"], tensors);

      const loss = await runner.trainStep(images, targets, LR, WD, dropPath);
      await runner.release();
      assertCloseToScale(loss, float64Reader(reference)("loss")[0], "loss");
      for (const p of params) {
        const expected = reference.get(`param.${p.key}`)!.data as Float32Array;
        const actual = runner.store.get(p.name);
        if (p.key.endsWith("attn.qkv.bias")) {
          // The key bias adds the same q·b to a query's every logit: its gradient is 0 up to
          // rounding, which Adam's first step g/(|g| + eps) turns into updates of any sign.
          const d = BACKBONE.embedDim;
          const qv = (x: Float32Array) =>
            Float32Array.of(...x.subarray(0, d), ...x.subarray(2 * d));
          assertCloseToScale(qv(actual), qv(expected), `${p.key} (q and v)`);
        } else {
          assertCloseToScale(actual, expected, p.key);
        }
      }
    },
  });
}

Deno.test({
  name: "a position table is resized for another input size as PyTorch's interpolate does",
  ignore: !torchAvailable(),
  async fn() {
    const rng = new Rng(5);
    const [n, dim] = [4, 3];
    const data = Float32Array.from({ length: (1 + n * n) * dim }, () => rng.normal());
    const table = f32(data, [1, 1 + n * n, dim]);
    for (const m of [6, 7, 3]) {
      const reference = await runTorchReference("finetune_torch.py", ["pos"], {
        pos_embed: table,
        size: f64(m),
      });
      const ours = resizePositionEmbedding(table, m);
      assert.deepEqual(ours.shape, [1, 1 + m * m, dim]);
      assertCloseToScale(ours.data as Float32Array, float64Reader(reference)("pos_embed"), `${m}`);
    }
  },
});

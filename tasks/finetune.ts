/**
 * `deno task finetune`: fine-tuning with layer-wise learning-rate decay (official
 * `classification_layer_decay/run_class_finetuning.py`, BEiT's recipe) of a pre-trained backbone
 * with a linear classifier; with `--finetune_head_layer 1` and `--train_subset FILE`, the
 * semi-supervised protocol of `semi_supervised/eval_cls.py` (fine-tuning from the projection
 * head's first layer on a label subset). Flags are the official ones; without `--data_path` the
 * `small` preset fine-tunes on the bundled Fashion-MNIST subset in minutes.
 *
 *   deno task finetune --finetune out/pretrain/checkpoint.safetensors --output_dir out/finetune
 *   deno task finetune --finetune ckpt.pth --model vit_small --data_path /imagenet --epochs 200 \
 *     --warmup_epochs 5 --layer_decay 0.75 --mixup 0.8 --cutmix 1.0 --use_cls --device cuda
 *   deno task finetune --finetune out/pretrain/checkpoint.safetensors --finetune_head_layer 1 \
 *     --train_subset data/fashion-mnist/subsets/10percent.txt --output_dir out/semi10
 */

import { join } from "node:path";
import { backboneStore, defaultImageSize, loadBackbone } from "../lib/checkpoint/backbone_file.ts";
import { isSwin } from "../lib/models/backbone.ts";
import { type OptionTable, type OptionValues, parseOptions, required } from "../lib/cli/options.ts";
import {
  finetuneBatches,
  finetuneEvalBatches,
  finetuneItersPerEpoch,
} from "../lib/data/finetune_loader.ts";
import { Mixup } from "../lib/data/mixup.ts";
import { openSource, resolveDataPath, type SourceSpec } from "../lib/data/source.ts";
import {
  finetune,
  type FinetuneConfig,
  type FinetuneData,
  type FinetuneProgress,
  FinetuneRunner,
  initialClassifierStore,
  loadClassifierWeights,
  loadFinetuneCheckpoint,
} from "../lib/eval/finetune.ts";
import { DEVICE_OPTIONS } from "../lib/eval/frozen_backbone.ts";
import { BUILTIN_DATA_PATH } from "../lib/train/args.ts";
import { type ClassifierConfig, DEFAULT_INIT_SCALE } from "../lib/models/classifier.ts";
import { VIT_SIZES } from "../lib/models/vit.ts";
import type { NamedTensor } from "../lib/runtime/named_tensor.ts";
import { runTask } from "./run_task.ts";

const SMALL = "small";

const OPTIONS = {
  finetune: {
    kind: "string",
    metavar: "file",
    help: "Pre-trained weights to start from: our checkpoint (.safetensors), an official " +
      "checkpoint (.pth) or an extracted backbone; without it the network starts at random.",
  },
  checkpoint_key: {
    kind: "string",
    help: "Which network of a full checkpoint: teacher, student, or state_dict.",
    choices: ["teacher", "student", "state_dict"],
    default: "teacher",
  },
  model: {
    kind: "string",
    metavar: "name",
    help: "Architecture (vit_tiny, vit_small, …) when the file has no run arguments; needed " +
      "without --finetune.",
  },
  arch: { kind: "string", metavar: "name", help: "The same as --model." },
  patch_size: { kind: "int", help: "ViT patch size when the file has no run arguments.", min: 1 },
  input_size: {
    kind: "int",
    help: "Image side (default: the pre-training's global crop size, else 224).",
    min: 1,
  },
  use_cls: {
    kind: "flag",
    help: "Classify the final-normed CLS token (default: mean pooling with fc_norm).",
  },
  finetune_head_layer: {
    kind: "int",
    help: "0: a linear head; 1: fine-tune from the projection head's first layer (semi-" +
      "supervised; needs the head in the file).",
    choices: [0, 1],
    default: 0,
  },
  init_scale: {
    kind: "float",
    help: "Scale of the classifier's initial weight and bias (semi-supervised: 1).",
    default: DEFAULT_INIT_SCALE,
  },
  batch_size: {
    kind: "int",
    help: "Images per step.",
    default: 128,
    presets: { small: 64 },
    min: 2,
  },
  epochs: { kind: "int", help: "Epochs.", default: 100, presets: { small: 5 }, min: 1 },
  warmup_epochs: {
    kind: "int",
    help: "Epochs of linear warm-up from 0.",
    default: 20,
    presets: { small: 1 },
    min: 0,
  },
  lr: { kind: "float", help: "Peak learning rate.", default: 4e-3, presets: { small: 2e-3 } },
  min_lr: { kind: "float", help: "Final learning rate of the cosine.", default: 1e-6 },
  layer_decay: {
    kind: "float",
    help: "Layer-wise lr decay (1: none).",
    default: 0.9,
    presets: { small: 0.75 },
  },
  weight_decay: { kind: "float", help: "AdamW weight decay.", default: 0.05 },
  weight_decay_end: { kind: "float", help: "Final weight decay (default: constant)." },
  drop_path: { kind: "float", help: "Stochastic-depth rate.", default: 0.1, min: 0, max: 0.99 },
  clip_grad: { kind: "float", help: "Clip the gradient norm (default: no clipping).", min: 0 },
  mixup: {
    kind: "float",
    help: "Mixup alpha (mixup on when > 0).",
    default: 0,
    presets: { small: 0.8 },
  },
  cutmix: {
    kind: "float",
    help: "CutMix alpha (CutMix on when > 0).",
    default: 0,
    presets: { small: 1.0 },
  },
  mixup_prob: { kind: "float", help: "Probability of mixing a batch.", default: 1 },
  mixup_switch_prob: { kind: "float", help: "Probability of CutMix over mixup.", default: 0.5 },
  smoothing: { kind: "float", help: "Label smoothing.", default: 0.1 },
  aa: {
    kind: "string",
    help: `RandAugment policy, or "none".`,
    default: "rand-m9-mstd0.5-inc1",
  },
  reprob: { kind: "float", help: "Random-erasing probability.", default: 0.25 },
  data_path: {
    kind: "string",
    metavar: "path",
    help: "Dataset with train and test splits (default: the bundled Fashion-MNIST subset, " +
      "with the small preset).",
  },
  train_subset: {
    kind: "string",
    metavar: "file",
    help: "Train on the images this file names (one per line, as the SimCLRv2 1%/10% splits).",
  },
  output_dir: { kind: "string", metavar: "dir", help: "Where checkpoints and log.txt go." },
  resume: {
    kind: "string",
    metavar: "file",
    help: "Continue the run of this checkpoint; with --eval, the fine-tuned model to evaluate " +
      "(ours, or an official one with its state dict under 'model').",
  },
  eval: { kind: "flag", help: "Only evaluate the --resume model on the validation split." },
  ...DEVICE_OPTIONS,
  seed: {
    kind: "int",
    help: "Seed of the data order, augmentation, mixup and drop path.",
    default: 0,
  },
  num_workers: { kind: "int", help: "Data-loading workers (default: cores − 1).", min: 1 },
  preset: {
    kind: "string",
    help: "Which defaults apply: small (without --data_path) or official (with it).",
    choices: ["small", "official"],
  },
} as const satisfies OptionTable;

type Values = OptionValues<typeof OPTIONS>;

/** The pre-trained backbone (and projection head) by official fine-tuning key. */
async function pretrainedWeights(values: Values) {
  if (!values.finetune) return undefined;
  const loaded = await loadBackbone(values.finetune, {
    key: values.checkpoint_key,
    arch: values.model ?? values.arch,
    patchSize: values.patch_size,
  });
  if (isSwin(loaded.config)) throw new Error("fine-tuning does not take a Swin backbone yet");
  const weights = new Map<string, NamedTensor>();
  for (const [name, tensor] of backboneStore(loaded, "model").toNamedTensors()) {
    weights.set(name.slice("model.backbone.".length), tensor);
  }
  for (const [name, tensor] of loaded.head) weights.set(`head.${name}`, tensor);
  return { loaded, weights };
}

/** The ViT `--model` names, for a randomly initialised network (no `--finetune`). */
function randomBackbone(values: Values): ClassifierConfig["backbone"] {
  const name = values.model ?? values.arch;
  const size = name === undefined ? undefined : VIT_SIZES[name];
  if (!size) {
    throw new Error(
      `without --finetune, --model must name a ViT (${Object.keys(VIT_SIZES).join(", ")})`,
    );
  }
  return { ...size, patchSize: values.patch_size ?? 16, imgSize: values.input_size ?? 224 };
}

async function main(first: Values): Promise<number> {
  const preset = first.preset ?? (first.data_path === undefined ? SMALL : "official");
  const values = parseOptions(OPTIONS, Deno.args, { preset: () => preset }).values;
  const pretrained = await pretrainedWeights(values);
  const backbone = pretrained?.loaded.config ?? randomBackbone(values);
  const dataPath = values.data_path ?? (pretrained?.loaded.args?.data_path as string | undefined) ??
    BUILTIN_DATA_PATH;
  const train: SourceSpec = {
    ...(await resolveDataPath(dataPath, "train")),
    ...(values.train_subset ? { subset: values.train_subset } : {}),
  };
  const validation = await resolveDataPath(dataPath, "test");
  const trainSource = await openSource(train);
  const classes = trainSource.classes.length;
  const size = values.input_size ??
    (pretrained ? defaultImageSize(pretrained.loaded) : backbone.imgSize);
  if (size % (backbone as ClassifierConfig["backbone"]).patchSize !== 0) {
    throw new Error(`--input_size ${size} is not a multiple of the patch size`);
  }
  const projection = values.finetune_head_layer === 1;
  const hidden = pretrained?.weights.get("head.mlp.0.weight")?.shape[0];
  if (projection && hidden === undefined) {
    throw new Error(`${values.finetune} has no projection head (head.mlp.0) to fine-tune from`);
  }
  const model: ClassifierConfig = {
    // The position table is laid out for the input size; a pre-trained one is resized to it.
    backbone: { ...backbone as ClassifierConfig["backbone"], imgSize: size },
    numClasses: classes,
    useCls: values.use_cls,
    projectionHidden: projection ? hidden : undefined,
    initScale: values.init_scale,
  };
  const config: FinetuneConfig = {
    model,
    imageSize: size,
    batchSize: values.batch_size,
    evalBatchSize: Math.floor(1.5 * values.batch_size),
    epochs: values.epochs,
    warmupEpochs: values.warmup_epochs,
    lr: values.lr,
    minLr: values.min_lr,
    weightDecay: values.weight_decay,
    weightDecayEnd: values.weight_decay_end,
    layerDecay: values.layer_decay,
    dropPath: values.drop_path,
    clipGrad: values.clip_grad,
    smoothing: values.smoothing,
    seed: values.seed,
    device: values.device,
  };
  let progress: FinetuneProgress = { epoch: 0, step: 0, maxAccuracy: 0 };
  let runner: FinetuneRunner;
  if (values.eval) {
    const path = required(values.resume, "resume");
    runner = await FinetuneRunner.create(config, await loadClassifierWeights(path, model, size));
  } else if (values.resume) {
    const checkpoint = await loadFinetuneCheckpoint(values.resume);
    progress = checkpoint.progress;
    runner = await FinetuneRunner.create(config, checkpoint.params, checkpoint.moments);
    console.log(`Resumed ${values.resume} at epoch ${progress.epoch}`);
  } else {
    const { store, loaded } = initialClassifierStore(model, size, values.seed, pretrained?.weights);
    runner = await FinetuneRunner.create(config, store);
    console.log(`Loaded ${loaded.length} tensors from ${values.finetune}`);
  }
  // The official resize_im (size > 32), and also for images of another size (28 px at 32).
  const image = await trainSource.load(0);
  const resizeImages = size > 32 || image.width !== size || image.height !== size;
  const transform = {
    randAugment: values.aa === "none" ? "" : values.aa,
    reprob: values.reprob,
    resizeImages,
  };
  const workers = values.num_workers;
  const data: FinetuneData = {
    itersPerEpoch: finetuneItersPerEpoch(trainSource.length, config.batchSize),
    train: (epoch) =>
      finetuneBatches(train, {
        size,
        batchSize: config.batchSize,
        seed: values.seed,
        epoch,
        workers,
        transform,
      }),
    validation: () =>
      finetuneEvalBatches(validation, {
        size,
        batchSize: config.evalBatchSize,
        workers,
        resizeImages,
      }),
  };
  if (values.eval) {
    const stats = await runner.evaluate(data.validation());
    await runner.release();
    console.log(
      `Accuracy of the network on the validation images: Acc@1 ${stats.acc1.toFixed(2)}% ` +
        `Acc@5 ${stats.acc5.toFixed(2)}% loss ${stats.loss.toFixed(3)}`,
    );
    return 0;
  }
  const mixup = values.mixup > 0 || values.cutmix > 0
    ? new Mixup({
      mixupAlpha: values.mixup,
      cutmixAlpha: values.cutmix,
      prob: values.mixup_prob,
      switchProb: values.mixup_switch_prob,
      labelSmoothing: values.smoothing,
      numClasses: classes,
    })
    : undefined;
  console.log(
    `Fine-tuning on ${trainSource.length} images of ${classes} classes at ${size} px, ` +
      `${data.itersPerEpoch} steps per epoch, ${runner.groups.length} parameter groups`,
  );
  const result = await finetune(runner, data, mixup, progress, {
    outputDir: values.output_dir,
    args: { ...values, preset },
    log: console.log,
  });
  await runner.release();
  console.log(
    `Accuracy of the network on the validation images: ${result.last.acc1.toFixed(2)}% ` +
      `(max ${result.maxAccuracy.toFixed(2)}%)`,
  );
  if (values.output_dir) console.log(`Saved ${join(values.output_dir, "checkpoint.safetensors")}`);
  return 0;
}

await runTask({
  usage: "deno task finetune --finetune FILE [options]",
  about: "Fine-tuning with layer-wise lr decay (official run_class_finetuning.py); with " +
    "--finetune_head_layer 1 and --train_subset, semi-supervised fine-tuning (eval_cls.py).",
  options: OPTIONS,
}, main);

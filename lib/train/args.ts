/**
 * The arguments of `deno task pretrain`: every argument of the official `main_ibot.py` under its
 * official name (so `run.sh` recipes paste over), plus the few this toolkit adds (crop sizes,
 * head widths, threads, device, presets), declared once in {@link PRETRAIN_OPTIONS} and parsed
 * into the typed {@link PretrainArgs}.
 *
 * Two presets give the defaults: `builtin` (a small ViT on the bundled Fashion-MNIST subset, a few
 * minutes on two CPU cores) when no `--data_path` is given, and `official` (the argparse defaults
 * of `main_ibot.py`) otherwise. Any flag given on the command line wins over the preset.
 *
 * @module
 */

import { commandHelp } from "../cli/help.ts";
import { type OptionTable, type OptionValues, parseOptions } from "../cli/options.ts";

/** The bundled dataset, relative to the repository root. */
export const BUILTIN_DATA_PATH = new URL("../../data/fashion-mnist", import.meta.url).pathname;

/** Every argument of `deno task pretrain`, in the order `--help` lists them. */
export const PRETRAIN_OPTIONS = {
  // Model
  arch: {
    kind: "string",
    metavar: "name",
    help:
      "Backbone: vit_tiny, vit_small, vit_base, vit_large (deit_* are aliases), or vit_mini (this toolkit's small ViT).",
    default: "vit_small",
    presets: { builtin: "vit_mini" },
    choices: [
      "vit_mini",
      "vit_tiny",
      "vit_small",
      "vit_base",
      "vit_large",
      "deit_tiny",
      "deit_small",
    ],
  },
  patch_size: {
    kind: "int",
    help: "ViT patch size in pixels.",
    default: 16,
    presets: { builtin: 8 },
    min: 1,
  },
  window_size: {
    kind: "int",
    help: "Swin window size (Swin backbones are not available yet).",
    default: 7,
    ignored: true,
  },
  out_dim: {
    kind: "int",
    help: "K, the number of CLS-head prototypes.",
    default: 8192,
    presets: { builtin: 512 },
    min: 1,
  },
  patch_out_dim: {
    kind: "int",
    help: "Kp, the number of patch-head prototypes (when the head is not shared).",
    default: 8192,
    presets: { builtin: 512 },
    min: 1,
  },
  shared_head: {
    kind: "bool",
    help: "Student: patch tokens use the CLS last layer.",
    default: false,
    presets: { builtin: true },
  },
  shared_head_teacher: {
    kind: "bool",
    help: "Teacher: patch tokens use the CLS last layer.",
    default: true,
  },
  norm_last_layer: {
    kind: "bool",
    help: "Freeze the last layer's weight_g at 1 (unit prototypes).",
    default: true,
  },
  momentum_teacher: {
    kind: "float",
    help: "Base EMA momentum of the teacher, raised to 1 by a cosine.",
    default: 0.996,
    presets: { builtin: 0.99 },
  },
  norm_in_head: {
    kind: "string",
    help: "Normalisation inside the head MLP (only none is available).",
    default: null,
    choices: ["none", "None"],
  },
  act_in_head: {
    kind: "string",
    help: "Activation in the head MLP.",
    default: "gelu",
    choices: ["gelu"],
  },
  use_masked_im_modeling: {
    kind: "bool",
    help: "Give the student a mask token and the masks.",
    default: true,
  },
  pred_ratio: {
    kind: "floats",
    help: "Masking ratio, or a list to draw from per crop.",
    default: [0.3],
    presets: { builtin: [0, 0.3] },
  },
  pred_ratio_var: {
    kind: "floats",
    help: "Half-width of the uniform jitter of each ratio.",
    default: [0],
    presets: { builtin: [0, 0.2] },
  },
  pred_shape: {
    kind: "string",
    help: "Mask shape: block or rand.",
    default: "block",
    choices: ["block", "rand"],
  },
  pred_start_epoch: {
    kind: "int",
    help: "Epoch before which nothing is masked (and the patch temperature waits).",
    default: 0,
  },
  lambda1: { kind: "float", help: "Weight of the CLS loss.", default: 1.0 },
  lambda2: { kind: "float", help: "Weight of the masked-patch loss.", default: 1.0 },
  // Teacher temperatures
  warmup_teacher_temp: { kind: "float", help: "Initial CLS teacher temperature.", default: 0.04 },
  teacher_temp: {
    kind: "float",
    help: "Final CLS teacher temperature.",
    default: 0.04,
  },
  warmup_teacher_patch_temp: {
    kind: "float",
    help: "Initial patch teacher temperature.",
    default: 0.04,
  },
  teacher_patch_temp: { kind: "float", help: "Final patch teacher temperature.", default: 0.07 },
  warmup_teacher_temp_epochs: {
    kind: "int",
    help: "Epochs of linear temperature warm-up.",
    default: 30,
    presets: { builtin: 2 },
  },
  // Optimisation
  use_fp16: {
    kind: "bool",
    help:
      "Mixed precision: not implemented yet; the run trains in float32 and says so at start-up.",
    default: true,
    presets: { builtin: false },
  },
  weight_decay: { kind: "float", help: "Initial weight decay.", default: 0.04 },
  weight_decay_end: { kind: "float", help: "Final weight decay (cosine).", default: 0.4 },
  clip_grad: { kind: "float", help: "Per-tensor gradient-norm clip; 0 disables.", default: 3.0 },
  batch_size_per_gpu: {
    kind: "int",
    help: "Images per step.",
    default: 128,
    presets: { builtin: 64 },
    min: 1,
  },
  epochs: { kind: "int", help: "Number of epochs.", default: 100, presets: { builtin: 5 } },
  freeze_last_layer: {
    kind: "int",
    help: "Epochs during which the last layer is not updated.",
    default: 1,
  },
  lr: {
    kind: "float",
    help: "Peak learning rate for a batch of 256 (scaled by batch/256).",
    default: 0.0005,
    presets: { builtin: 0.003 },
  },
  warmup_epochs: {
    kind: "int",
    help: "Epochs of linear learning-rate warm-up.",
    default: 10,
    presets: { builtin: 1 },
  },
  min_lr: { kind: "float", help: "Final learning rate of the cosine schedule.", default: 1e-6 },
  optimizer: { kind: "string", help: "Optimizer (adamw).", default: "adamw", choices: ["adamw"] },
  load_from: {
    kind: "string",
    help: "Checkpoint to start from (joined to output_dir unless absolute).",
    default: null,
  },
  drop_path: { kind: "float", help: "Student stochastic-depth rate.", default: 0.1 },
  // Multi-crop
  global_crops_number: { kind: "int", help: "Number of global crops.", default: 2, min: 1 },
  global_crops_scale: {
    kind: "floats",
    help: "Area-scale range of the global crops.",
    default: [0.14, 1.0],
    presets: { builtin: [0.4, 1.0] },
  },
  local_crops_number: {
    kind: "int",
    help: "Number of local crops.",
    default: 0,
    presets: { builtin: 4 },
    min: 0,
  },
  local_crops_scale: {
    kind: "floats",
    help: "Area-scale range of the local crops.",
    default: [0.05, 0.4],
    presets: { builtin: [0.2, 0.5] },
  },
  // Misc
  data_path: {
    kind: "string",
    help: "ImageFolder root or a folder of IDX files; given, the official preset applies.",
    default: BUILTIN_DATA_PATH,
  },
  output_dir: {
    kind: "string",
    help: "Where checkpoints and log.txt go.",
    default: ".",
    presets: { builtin: "out/pretrain" },
  },
  saveckp_freq: {
    kind: "int",
    help: "Keep a numbered checkpoint every this many epochs.",
    default: 40,
  },
  seed: { kind: "int", help: "Random seed.", default: 0 },
  num_workers: {
    kind: "int",
    help: "Data-loading workers; 0: cores − 1, at least 1.",
    default: 0,
    min: 0,
  },
  dist_url: {
    kind: "string",
    help: "Distributed init URL (single process here).",
    default: "env://",
    ignored: true,
  },
  local_rank: {
    kind: "int",
    help: "Set by a launcher (single process here).",
    default: 0,
    ignored: true,
  },
  // This toolkit's own
  preset: {
    kind: "string",
    help: "Which defaults apply: builtin (without --data_path) or official (with it).",
    default: "official",
    presets: { builtin: "builtin" },
    choices: ["builtin", "official"],
  },
  global_crop_size: {
    kind: "int",
    help: "Side of the global crops in pixels.",
    default: 224,
    presets: { builtin: 32 },
    min: 1,
  },
  local_crop_size: {
    kind: "int",
    help: "Side of the local crops in pixels.",
    default: 96,
    presets: { builtin: 16 },
    min: 1,
  },
  img_size: {
    kind: "int",
    help: "Image size the position embedding is laid out for.",
    default: 224,
    presets: { builtin: 32 },
    min: 1,
  },
  head_hidden_dim: {
    kind: "int",
    help: "Hidden width of the head MLP.",
    default: 2048,
    presets: { builtin: 512 },
    min: 1,
  },
  head_bottleneck_dim: {
    kind: "int",
    help: "Bottleneck width of the head MLP.",
    default: 256,
    presets: { builtin: 128 },
    min: 1,
  },
  device: {
    kind: "string",
    help: "Execution provider: cpu or cuda.",
    default: "cpu",
    choices: ["cpu", "cuda"],
  },
  threads: {
    kind: "int",
    help: "onnxruntime intra-op threads; 0: all cores.",
    default: 0,
    min: 0,
  },
  print_freq: {
    kind: "int",
    help: "Print a progress line every this many iterations.",
    default: 10,
    presets: { builtin: 5 },
    min: 1,
  },
  knn_eval: {
    kind: "bool",
    help: "Report k-NN accuracy of the teacher at the start and the end.",
    default: false,
    presets: { builtin: true },
  },
  export_artifacts: {
    kind: "string",
    help: "Write the training and evaluation ONNX graphs and a checkpoint here, then exit.",
    default: null,
  },
} as const satisfies OptionTable;

/**
 * Parsed arguments by official name, typed by {@link PRETRAIN_OPTIONS} (`deit_*` architectures
 * already renamed `vit_*`). A checkpoint stores them as JSON under these names.
 */
export type PretrainArgs = OptionValues<typeof PRETRAIN_OPTIONS>;

/** One argument's value. */
export type ArgValue = PretrainArgs[keyof PretrainArgs];

/**
 * Parses `argv` (flags as `--name value...`, `--name=value` or `--help`). Throws one sentence on
 * bad input.
 */
export function parsePretrainArgs(argv: readonly string[]): { args: PretrainArgs; help: boolean } {
  const { values, help } = parseOptions(PRETRAIN_OPTIONS, argv, {
    preset: (given) => given.preset ?? (given.data_path === undefined ? "builtin" : "official"),
  });
  return { args: { ...values, arch: withoutAlias(values.arch) }, help };
}

/** The ViT name of a DeiT alias (the official code treats `deit_*` as `vit_*`). */
function withoutAlias(arch: PretrainArgs["arch"]): PretrainArgs["arch"] {
  switch (arch) {
    case "deit_tiny":
      return "vit_tiny";
    case "deit_small":
      return "vit_small";
    default:
      return arch;
  }
}

/** The `--help` text: every argument with its kind and both presets' defaults. */
export function pretrainHelp(): string {
  return commandHelp({
    usage: "deno task pretrain [--name value ...]",
    about: [
      "iBOT pre-training. Without --data_path the builtin preset trains a small ViT on the bundled",
      "Fashion-MNIST subset; with --data_path the official main_ibot.py defaults apply. Flags win.",
      "Booleans take on/true/1 or off/false/0; lists take several values (--pred_ratio 0 0.3).",
      "Each default is main_ibot.py's; where the builtin preset differs, its value follows.",
    ].join("\n"),
    options: PRETRAIN_OPTIONS,
  });
}

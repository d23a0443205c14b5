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
import type { TrainingPrecision } from "./step.ts";

/** The bundled dataset, relative to the repository root. */
export const BUILTIN_DATA_PATH = new URL("../../data/fashion-mnist", import.meta.url).pathname;

/** Every argument of `deno task pretrain`, in the order `--help` lists them. */
export const PRETRAIN_OPTIONS = {
  // Model
  arch: {
    kind: "string",
    metavar: "name",
    help:
      "Backbone: vit_tiny, vit_small, vit_base, vit_large (deit_* are aliases), swin_tiny, swin_small, swin_base, swin_large, or vit_mini and swin_mini (this toolkit's small ViT and Swin).",
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
      "swin_mini",
      "swin_tiny",
      "swin_small",
      "swin_base",
      "swin_large",
    ],
  },
  patch_size: {
    kind: "int",
    help:
      "ViT patch size in pixels. For Swin (whose patches are always 4 px) it sets the mask grid, 8·p px cells, and must be 4 (the recipes' value).",
    default: 16,
    presets: { builtin: 8 },
    min: 1,
  },
  window_size: {
    kind: "int",
    help: "Swin window size in tokens (7 or 14 in the recipes); ignored for ViT.",
    default: 7,
    min: 1,
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
    help: "Mixed precision as torch.cuda.amp (fp16 products, dynamic loss scaling); CUDA only. " +
      "On --device cpu the official default means float32; --precision wins.",
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
  precision: {
    kind: "string",
    help: "Precision of the matrix products: fp32; fp16 (with dynamic loss scaling, as " +
      "--use_fp16 true); bf16 (no loss scaling). fp16 and bf16 need --device cuda. " +
      "Default: fp16 when --use_fp16 is true, else fp32.",
    default: null,
    choices: ["fp32", "fp16", "bf16"],
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
 * already renamed `vit_*`), with `precision` resolved by {@link effectivePrecision} and
 * `use_fp16` true exactly when it is fp16. A checkpoint stores them as JSON under these names.
 */
export type PretrainArgs = Omit<OptionValues<typeof PRETRAIN_OPTIONS>, "precision"> & {
  /** The precision the run trains in (never null once parsed). */
  readonly precision: TrainingPrecision;
};

/** One argument's value. */
export type ArgValue = PretrainArgs[keyof PretrainArgs];

/**
 * Parses `argv` (flags as `--name value...`, `--name=value` or `--help`). Throws one sentence on
 * bad input, contradicting precision flags included. The result's `precision` is the effective
 * one ({@link effectivePrecision}) and `use_fp16` says whether it is fp16.
 */
export function parsePretrainArgs(argv: readonly string[]): { args: PretrainArgs; help: boolean } {
  // The preset is chosen from the flags given; keep them, to tell a --use_fp16 given on the
  // command line from the preset's default.
  let given: Partial<OptionValues<typeof PRETRAIN_OPTIONS>> = {};
  const { values, help } = parseOptions(PRETRAIN_OPTIONS, argv, {
    preset: (options) => {
      given = options;
      return options.preset ?? (options.data_path === undefined ? "builtin" : "official");
    },
  });
  const precision = effectivePrecision({
    device: values.device,
    useFp16: values.use_fp16,
    useFp16Given: given.use_fp16 !== undefined,
    precision: values.precision,
  });
  return {
    args: { ...values, arch: withoutAlias(values.arch), precision, use_fp16: precision === "fp16" },
    help,
  };
}

/** The precision flags of a command line, for {@link effectivePrecision}. */
export interface PrecisionFlags {
  /** `--device`. */
  readonly device: "cpu" | "cuda";
  /** `--use_fp16`, given or from the preset. */
  readonly useFp16: boolean;
  /** Whether `--use_fp16` was given on the command line (not a preset default). */
  readonly useFp16Given: boolean;
  /** `--precision`, or null when not given. */
  readonly precision: TrainingPrecision | null;
}

/**
 * The precision a run trains in: `--precision` when given, else fp16 when `--use_fp16` is true,
 * else fp32 — except that on `--device cpu` a `--use_fp16 true` that only comes from the official
 * preset's default means fp32 (that default exists for GPU runs). Throws one sentence when
 * `--use_fp16` and `--precision` are both given and disagree, and when fp16 or bf16 is asked
 * for on the CPU: mixed precision is for GPUs (onnxruntime's CPU provider has no bfloat16 kernels
 * and emulates float16 in float32).
 */
export function effectivePrecision(flags: PrecisionFlags): TrainingPrecision {
  const { device, useFp16, useFp16Given, precision } = flags;
  if (precision !== null && useFp16Given && useFp16 !== (precision === "fp16")) {
    throw new Error(
      `--use_fp16 ${useFp16} contradicts --precision ${precision}; give one of them`,
    );
  }
  if (device === "cpu") {
    const asked = precision ?? (useFp16 && useFp16Given ? "fp16" : "fp32");
    if (asked !== "fp32") {
      const flag = precision === null ? "--use_fp16 true" : `--precision ${precision}`;
      throw new Error(
        `${flag} needs --device cuda: mixed precision is for GPUs, and onnxruntime's CPU provider has no bfloat16 kernels and emulates float16 in float32`,
      );
    }
    return "fp32";
  }
  return precision ?? (useFp16 ? "fp16" : "fp32");
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

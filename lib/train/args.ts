/**
 * The arguments of `deno task pretrain`: every argument of the official `main_ibot.py` under its
 * official name (so `run.sh` recipes paste over), plus the few this toolkit adds (crop sizes,
 * head widths, threads, device, presets).
 *
 * Two presets give the defaults: `builtin` (a small ViT on the bundled Fashion-MNIST subset, a few
 * minutes on two CPU cores) when no `--data_path` is given, and `official` (the argparse defaults
 * of `main_ibot.py`) otherwise. Any flag given on the command line wins over the preset.
 *
 * @module
 */

/** The value kinds an argument can take. */
type Kind = "string" | "int" | "float" | "bool" | "floats";

/** One argument: its kind, help text, and default under each preset. */
interface ArgSpec {
  readonly kind: Kind;
  readonly help: string;
  readonly official: ArgValue;
  readonly builtin?: ArgValue;
  /** Accepted for compatibility but without effect here; the help says why. */
  readonly ignored?: boolean;
  /** Allowed values for a string argument. */
  readonly choices?: readonly string[];
}

/** A parsed argument value. */
export type ArgValue = string | number | boolean | number[] | null;

/** The bundled dataset, relative to the repository root. */
export const BUILTIN_DATA_PATH = new URL("../../data/fashion-mnist", import.meta.url).pathname;

const SPECS: Readonly<Record<string, ArgSpec>> = {
  // Model
  arch: {
    kind: "string",
    help:
      "Backbone: vit_tiny, vit_small, vit_base, vit_large (deit_* are aliases), or vit_mini (this toolkit's small ViT).",
    official: "vit_small",
    builtin: "vit_mini",
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
  patch_size: { kind: "int", help: "ViT patch size in pixels.", official: 16, builtin: 8 },
  window_size: {
    kind: "int",
    help: "Swin window size (Swin backbones are not available yet).",
    official: 7,
    ignored: true,
  },
  out_dim: {
    kind: "int",
    help: "K, the number of CLS-head prototypes.",
    official: 8192,
    builtin: 512,
  },
  patch_out_dim: {
    kind: "int",
    help: "Kp, the number of patch-head prototypes (when the head is not shared).",
    official: 8192,
    builtin: 512,
  },
  shared_head: {
    kind: "bool",
    help: "Student: patch tokens use the CLS last layer.",
    official: false,
    builtin: true,
  },
  shared_head_teacher: {
    kind: "bool",
    help: "Teacher: patch tokens use the CLS last layer.",
    official: true,
  },
  norm_last_layer: {
    kind: "bool",
    help: "Freeze the last layer's weight_g at 1 (unit prototypes).",
    official: true,
  },
  momentum_teacher: {
    kind: "float",
    help: "Base EMA momentum of the teacher, raised to 1 by a cosine.",
    official: 0.996,
    builtin: 0.99,
  },
  norm_in_head: {
    kind: "string",
    help: "Normalisation inside the head MLP (only none is available).",
    official: null,
    choices: ["none"],
  },
  act_in_head: {
    kind: "string",
    help: "Activation in the head MLP.",
    official: "gelu",
    choices: ["gelu"],
  },
  use_masked_im_modeling: {
    kind: "bool",
    help: "Give the student a mask token and the masks.",
    official: true,
  },
  pred_ratio: {
    kind: "floats",
    help: "Masking ratio, or a list to draw from per crop.",
    official: [0.3],
    builtin: [0, 0.3],
  },
  pred_ratio_var: {
    kind: "floats",
    help: "Half-width of the uniform jitter of each ratio.",
    official: [0],
    builtin: [0, 0.2],
  },
  pred_shape: {
    kind: "string",
    help: "Mask shape: block or rand.",
    official: "block",
    choices: ["block", "rand"],
  },
  pred_start_epoch: {
    kind: "int",
    help: "Epoch before which nothing is masked (and the patch temperature waits).",
    official: 0,
  },
  lambda1: { kind: "float", help: "Weight of the CLS loss.", official: 1.0 },
  lambda2: { kind: "float", help: "Weight of the masked-patch loss.", official: 1.0 },
  // Teacher temperatures
  warmup_teacher_temp: { kind: "float", help: "Initial CLS teacher temperature.", official: 0.04 },
  teacher_temp: {
    kind: "float",
    help: "Final CLS teacher temperature.",
    official: 0.04,
  },
  warmup_teacher_patch_temp: {
    kind: "float",
    help: "Initial patch teacher temperature.",
    official: 0.04,
  },
  teacher_patch_temp: { kind: "float", help: "Final patch teacher temperature.", official: 0.07 },
  warmup_teacher_temp_epochs: {
    kind: "int",
    help: "Epochs of linear temperature warm-up.",
    official: 30,
    builtin: 2,
  },
  // Optimisation
  use_fp16: {
    kind: "bool",
    help: "Mixed precision (not available: training runs in float32).",
    official: true,
    ignored: true,
  },
  weight_decay: { kind: "float", help: "Initial weight decay.", official: 0.04 },
  weight_decay_end: { kind: "float", help: "Final weight decay (cosine).", official: 0.4 },
  clip_grad: { kind: "float", help: "Per-tensor gradient-norm clip; 0 disables.", official: 3.0 },
  batch_size_per_gpu: { kind: "int", help: "Images per step.", official: 128, builtin: 64 },
  epochs: { kind: "int", help: "Number of epochs.", official: 100, builtin: 5 },
  freeze_last_layer: {
    kind: "int",
    help: "Epochs during which the last layer is not updated.",
    official: 1,
  },
  lr: {
    kind: "float",
    help: "Peak learning rate for a batch of 256 (scaled by batch/256).",
    official: 0.0005,
    builtin: 0.003,
  },
  warmup_epochs: {
    kind: "int",
    help: "Epochs of linear learning-rate warm-up.",
    official: 10,
    builtin: 1,
  },
  min_lr: { kind: "float", help: "Final learning rate of the cosine schedule.", official: 1e-6 },
  optimizer: { kind: "string", help: "Optimizer (adamw).", official: "adamw", choices: ["adamw"] },
  load_from: {
    kind: "string",
    help: "Checkpoint to start from (joined to output_dir unless absolute).",
    official: null,
  },
  drop_path: { kind: "float", help: "Student stochastic-depth rate.", official: 0.1 },
  // Multi-crop
  global_crops_number: { kind: "int", help: "Number of global crops.", official: 2 },
  global_crops_scale: {
    kind: "floats",
    help: "Area-scale range of the global crops.",
    official: [0.14, 1.0],
    builtin: [0.4, 1.0],
  },
  local_crops_number: { kind: "int", help: "Number of local crops.", official: 0, builtin: 4 },
  local_crops_scale: {
    kind: "floats",
    help: "Area-scale range of the local crops.",
    official: [0.05, 0.4],
    builtin: [0.2, 0.5],
  },
  // Misc
  data_path: {
    kind: "string",
    help: "ImageFolder root or a folder of IDX files (default: bundled Fashion-MNIST).",
    official: BUILTIN_DATA_PATH,
  },
  output_dir: {
    kind: "string",
    help: "Where checkpoints and log.txt go.",
    official: ".",
    builtin: "out/pretrain",
  },
  saveckp_freq: {
    kind: "int",
    help: "Keep a numbered checkpoint every this many epochs.",
    official: 40,
  },
  seed: { kind: "int", help: "Random seed.", official: 0 },
  num_workers: {
    kind: "int",
    help: "Data-loading workers (default: cores − 1, at least 1).",
    official: 0,
  },
  dist_url: {
    kind: "string",
    help: "Distributed init URL (single process here).",
    official: "env://",
    ignored: true,
  },
  local_rank: {
    kind: "int",
    help: "Set by a launcher (single process here).",
    official: 0,
    ignored: true,
  },
  // This toolkit's own
  preset: {
    kind: "string",
    help: "Defaults: builtin (no --data_path) or official.",
    official: "official",
    choices: ["builtin", "official"],
  },
  global_crop_size: {
    kind: "int",
    help: "Side of the global crops in pixels (224 officially).",
    official: 224,
    builtin: 32,
  },
  local_crop_size: {
    kind: "int",
    help: "Side of the local crops in pixels (96 officially).",
    official: 96,
    builtin: 16,
  },
  img_size: {
    kind: "int",
    help: "Image size the position embedding is laid out for (224 officially).",
    official: 224,
    builtin: 32,
  },
  head_hidden_dim: {
    kind: "int",
    help: "Hidden width of the head MLP (2048 officially).",
    official: 2048,
    builtin: 512,
  },
  head_bottleneck_dim: {
    kind: "int",
    help: "Bottleneck width of the head MLP (256 officially).",
    official: 256,
    builtin: 128,
  },
  device: {
    kind: "string",
    help: "Execution provider: cpu or cuda.",
    official: "cpu",
    choices: ["cpu", "cuda"],
  },
  threads: { kind: "int", help: "onnxruntime intra-op threads (default: all cores).", official: 0 },
  print_freq: {
    kind: "int",
    help: "Print a progress line every this many iterations.",
    official: 10,
    builtin: 5,
  },
  knn_eval: {
    kind: "bool",
    help: "Report k-NN accuracy of the teacher at the start and the end.",
    official: false,
    builtin: true,
  },
  export_artifacts: {
    kind: "string",
    help: "Write the training and evaluation ONNX graphs and a checkpoint here, then exit.",
    official: null,
  },
};

/** Parsed arguments by official name. */
export type PretrainArgs = Readonly<Record<string, ArgValue>>;

/** Parses `argv` (flags as `--name value...`, `--name=value` or `--help`). Throws one sentence on bad input. */
export function parsePretrainArgs(argv: readonly string[]): { args: PretrainArgs; help: boolean } {
  const given = new Map<string, string[]>();
  let current: string[] | undefined;
  let help = false;
  for (const token of argv) {
    if (token === "--help" || token === "-h") {
      help = true;
      continue;
    }
    if (token.startsWith("--")) {
      const [flag, inline] = splitOnce(token.slice(2), "=");
      const name = flag.replaceAll("-", "_");
      if (!(name in SPECS)) throw new Error(`unknown argument --${flag}; see --help for the list`);
      current = inline === undefined ? [] : [inline];
      given.set(name, current);
    } else if (current) {
      current.push(token);
    } else {
      throw new Error(`unexpected value '${token}': values follow a --flag`);
    }
  }
  const presetFlag = given.get("preset");
  const preset = presetFlag
    ? convert("preset", presetFlag)
    : given.has("data_path")
    ? "official"
    : "builtin";
  const args: Record<string, ArgValue> = {};
  for (const [name, spec] of Object.entries(SPECS)) {
    const values = given.get(name);
    args[name] = values
      ? convert(name, values)
      : preset === "builtin" && spec.builtin !== undefined
      ? spec.builtin
      : spec.official;
  }
  args.preset = preset;
  if (typeof args.arch === "string" && args.arch.startsWith("deit_")) {
    args.arch = args.arch.replace("deit_", "vit_");
  }
  return { args, help };
}

function splitOnce(text: string, separator: string): [string, string | undefined] {
  const at = text.indexOf(separator);
  return at < 0 ? [text, undefined] : [text.slice(0, at), text.slice(at + 1)];
}

function convert(name: string, values: readonly string[]): ArgValue {
  const spec = SPECS[name];
  const one = () => {
    if (values.length !== 1) throw new Error(`--${name} takes one value, got ${values.length}`);
    return values[0];
  };
  const number = (text: string, integer: boolean) => {
    const value = Number(text);
    if (text.trim() === "" || !Number.isFinite(value) || (integer && !Number.isInteger(value))) {
      throw new Error(`--${name} expects ${integer ? "an integer" : "a number"}, got '${text}'`);
    }
    return value;
  };
  switch (spec.kind) {
    case "int":
      return number(one(), true);
    case "float":
      return number(one(), false);
    case "floats":
      if (values.length === 0) throw new Error(`--${name} expects one or more numbers`);
      return values.map((v) => number(v, false));
    case "bool": {
      const text = one().toLowerCase();
      if (["on", "true", "1"].includes(text)) return true;
      if (["off", "false", "0"].includes(text)) return false;
      throw new Error(`--${name} expects on/true/1 or off/false/0, got '${values[0]}'`);
    }
    case "string": {
      const text = one();
      if (
        spec.choices && !spec.choices.includes(text) &&
        !(name === "norm_in_head" && text === "None")
      ) {
        throw new Error(`--${name} must be one of ${spec.choices.join(", ")}, got '${text}'`);
      }
      return text;
    }
  }
}

/** The `--help` text: every argument with its kind and both presets' defaults. */
export function pretrainHelp(): string {
  const lines = [
    "Usage: deno task pretrain [--name value ...]",
    "",
    "iBOT pre-training. Without --data_path the builtin preset trains a small ViT on the bundled",
    "Fashion-MNIST subset; with --data_path the official main_ibot.py defaults apply. Flags win.",
    "Booleans take on/true/1 or off/false/0; lists take several values (--pred_ratio 0 0.3).",
    "",
  ];
  for (const [name, spec] of Object.entries(SPECS)) {
    const show = (
      v: ArgValue | undefined,
    ) => (v === undefined ? "" : Array.isArray(v) ? v.join(" ") : String(v));
    const defaults = spec.builtin !== undefined
      ? `official ${show(spec.official)}, builtin ${show(spec.builtin)}`
      : `default ${show(spec.official)}`;
    lines.push(
      `  --${name} <${spec.kind}>`.padEnd(34) +
        `${spec.help}${spec.ignored ? " (no effect here)" : ""} [${defaults}]`,
    );
  }
  return lines.join("\n");
}

import { assert } from "../assert.ts";
import { BUILTIN_DATA_PATH, parsePretrainArgs, pretrainHelp } from "../../lib/train/args.ts";

/** Every argument of the official main_ibot.py (`get_args_parser`), as listed in §1 of the spec. */
const OFFICIAL_ARGUMENTS = [
  "arch",
  "patch_size",
  "window_size",
  "out_dim",
  "patch_out_dim",
  "shared_head",
  "shared_head_teacher",
  "norm_last_layer",
  "momentum_teacher",
  "norm_in_head",
  "act_in_head",
  "use_masked_im_modeling",
  "pred_ratio",
  "pred_ratio_var",
  "pred_shape",
  "pred_start_epoch",
  "lambda1",
  "lambda2",
  "warmup_teacher_temp",
  "teacher_temp",
  "warmup_teacher_patch_temp",
  "teacher_patch_temp",
  "warmup_teacher_temp_epochs",
  "use_fp16",
  "weight_decay",
  "weight_decay_end",
  "clip_grad",
  "batch_size_per_gpu",
  "epochs",
  "freeze_last_layer",
  "lr",
  "warmup_epochs",
  "min_lr",
  "optimizer",
  "load_from",
  "drop_path",
  "global_crops_number",
  "global_crops_scale",
  "local_crops_number",
  "local_crops_scale",
  "data_path",
  "output_dir",
  "saveckp_freq",
  "seed",
  "num_workers",
  "dist_url",
  "local_rank",
];

const parse = (argv: string[]) => parsePretrainArgs(argv).args;

/** Asserts that parsing `argv` throws one sentence (a single line) matching `pattern`. */
function assertRejects(argv: string[], pattern: RegExp): void {
  assert.throws(() => parse(argv), (error: Error) => {
    assert.match(error.message, pattern);
    assert(!error.message.includes("\n"), `more than one line: ${error.message}`);
    return true;
  });
}

Deno.test("parsePretrainArgs: without --data_path the builtin preset applies", () => {
  const args = parse([]);
  assert.equal(args.preset, "builtin");
  assert.equal(args.data_path, BUILTIN_DATA_PATH);
  assert.equal(args.arch, "vit_mini");
  assert.equal(args.patch_size, 8);
  assert.equal(args.out_dim, 512);
  assert.equal(args.local_crops_number, 4);
  assert.equal(args.epochs, 5);
  assert.equal(args.lr, 0.003);
  assert.deepEqual(args.global_crops_scale, [0.4, 1]);
  assert.deepEqual(args.local_crops_scale, [0.2, 0.5]);
  assert.equal(args.batch_size_per_gpu, 64);
  assert.deepEqual(args.pred_ratio, [0, 0.3]);
  assert.deepEqual(args.pred_ratio_var, [0, 0.2]);
  assert.equal(args.shared_head, true);
  assert.equal(args.norm_last_layer, true);
  assert.equal(args.output_dir, "out/pretrain");
  assert.equal(args.knn_eval, true);
  // Arguments without a builtin value keep the official default.
  assert.equal(args.lambda1, 1);
  assert.equal(args.clip_grad, 3);
});

Deno.test("parsePretrainArgs: with --data_path the official main_ibot.py defaults apply", () => {
  // On a GPU: on the CPU the official use_fp16 default means float32 (see the precision tests).
  const args = parse(["--data_path", "/data/imagenet/train", "--device", "cuda"]);
  assert.equal(args.preset, "official");
  assert.equal(args.data_path, "/data/imagenet/train");
  const expected: Record<string, unknown> = {
    arch: "vit_small",
    patch_size: 16,
    window_size: 7,
    out_dim: 8192,
    patch_out_dim: 8192,
    shared_head: false,
    shared_head_teacher: true,
    norm_last_layer: true,
    momentum_teacher: 0.996,
    norm_in_head: null,
    act_in_head: "gelu",
    use_masked_im_modeling: true,
    pred_ratio: [0.3],
    pred_ratio_var: [0],
    pred_shape: "block",
    pred_start_epoch: 0,
    lambda1: 1,
    lambda2: 1,
    warmup_teacher_temp: 0.04,
    teacher_temp: 0.04,
    warmup_teacher_patch_temp: 0.04,
    teacher_patch_temp: 0.07,
    warmup_teacher_temp_epochs: 30,
    use_fp16: true,
    precision: "fp16",
    weight_decay: 0.04,
    weight_decay_end: 0.4,
    clip_grad: 3,
    batch_size_per_gpu: 128,
    epochs: 100,
    freeze_last_layer: 1,
    lr: 0.0005,
    warmup_epochs: 10,
    min_lr: 1e-6,
    optimizer: "adamw",
    load_from: null,
    drop_path: 0.1,
    global_crops_number: 2,
    global_crops_scale: [0.14, 1],
    local_crops_number: 0,
    local_crops_scale: [0.05, 0.4],
    output_dir: ".",
    saveckp_freq: 40,
    seed: 0,
    dist_url: "env://",
    local_rank: 0,
    global_crop_size: 224,
    local_crop_size: 96,
    img_size: 224,
    head_hidden_dim: 2048,
    head_bottleneck_dim: 256,
  };
  const parsed: Readonly<Record<string, unknown>> = args;
  for (const [name, value] of Object.entries(expected)) {
    assert.deepEqual(parsed[name], value, `--${name}`);
  }
});

Deno.test("parsePretrainArgs: --preset overrides the choice, and given flags win over presets", () => {
  const official = parse(["--preset", "official"]);
  assert.equal(official.arch, "vit_small");
  assert.equal(official.data_path, BUILTIN_DATA_PATH);
  const builtin = parse(["--preset", "builtin", "--data_path", "/elsewhere"]);
  assert.equal(builtin.arch, "vit_mini");
  assert.equal(builtin.data_path, "/elsewhere");
  const mixed = parse(["--data_path", "/d", "--epochs", "3", "--out_dim", "64"]);
  assert.equal(mixed.epochs, 3);
  assert.equal(mixed.out_dim, 64);
  assert.equal(mixed.patch_out_dim, 8192);
});

Deno.test("parsePretrainArgs: list values, --name=value and dashed names", () => {
  const args = parse([
    "--pred_ratio",
    "0",
    "0.3",
    "--pred_ratio_var=0",
    "0.2",
    "--epochs=7",
    "--global-crops-scale",
    "0.25",
    "1",
    "--lr=1e-3",
  ]);
  assert.deepEqual(args.pred_ratio, [0, 0.3]);
  assert.deepEqual(args.pred_ratio_var, [0, 0.2]);
  assert.equal(args.epochs, 7);
  assert.deepEqual(args.global_crops_scale, [0.25, 1]);
  assert.equal(args.lr, 0.001);
  assert.deepEqual(parse(["--pred_ratio", "0.5"]).pred_ratio, [0.5]);
});

Deno.test("parsePretrainArgs: bool_flag accepts on/true/1 and off/false/0 in any case", () => {
  for (const text of ["on", "true", "1", "ON", "True", "tRuE"]) {
    assert.equal(parse(["--shared_head", text]).shared_head, true, text);
    assert.equal(parse([`--use_fp16=${text}`, "--device", "cuda"]).use_fp16, true, text);
  }
  for (const text of ["off", "false", "0", "OFF", "False", "fAlSe"]) {
    assert.equal(parse(["--shared_head", text]).shared_head, false, text);
    assert.equal(parse([`--norm_last_layer=${text}`]).norm_last_layer, false, text);
  }
});

Deno.test("parsePretrainArgs: deit_* architectures are renamed to vit_*", () => {
  assert.equal(parse(["--arch", "deit_small"]).arch, "vit_small");
  assert.equal(parse(["--arch", "deit_tiny"]).arch, "vit_tiny");
  assert.equal(parse(["--arch", "vit_base"]).arch, "vit_base");
});

Deno.test("parsePretrainArgs: --help and -h are reported, not treated as arguments", () => {
  assert.equal(parsePretrainArgs(["--help"]).help, true);
  assert.equal(parsePretrainArgs(["--epochs", "2", "-h"]).help, true);
  assert.equal(parsePretrainArgs(["--epochs", "2"]).help, false);
  assert.equal(parsePretrainArgs(["--epochs", "2", "--help"]).args.epochs, 2);
});

Deno.test("parsePretrainArgs: bad input throws one clear sentence", () => {
  assertRejects(["--nope", "1"], /^unknown argument --nope; see --help/);
  assertRejects(["--epochs"], /--epochs takes one value, got 0/);
  assertRejects(["--epochs", "1", "2"], /--epochs takes one value, got 2/);
  assertRejects(["--arch", "vit_small", "vit_base"], /--arch takes one value, got 2/);
  assertRejects(["stray"], /unexpected value 'stray'/);
  assertRejects(["--epochs", "3", "stray"], /--epochs takes one value, got 2/);
  assertRejects(["--pred_ratio"], /--pred_ratio expects one or more numbers/);
  assertRejects(["--lr", "fast"], /--lr expects a number, got 'fast'/);
  assertRejects(["--epochs", "1.5"], /--epochs expects an integer, got '1.5'/);
  assertRejects(["--epochs="], /--epochs expects an integer, got ''/);
  assertRejects(["--pred_ratio", "0", "x"], /--pred_ratio expects a number, got 'x'/);
  assertRejects(["--shared_head", "maybe"], /--shared_head expects on\/true\/1 or off\/false\/0/);
  assertRejects(["--arch", "resnet50"], /^--arch must be vit_mini, vit_tiny, .*, got resnet50$/);
  assertRejects(["--pred_shape", "circle"], /^--pred_shape must be block or rand, got circle$/);
  assertRejects(["--preset", "huge"], /^--preset must be builtin or official, got huge$/);
  assertRejects(
    ["--batch_size_per_gpu", "0"],
    /^--batch_size_per_gpu must be a positive integer, got 0$/,
  );
  assertRejects(
    ["--local_crops_number", "-1"],
    /^--local_crops_number must be a non-negative integer, got -1$/,
  );
  assertRejects(["-x"], /^unknown argument -x; see --help/);
});

Deno.test("pretrainHelp: lists every argument of the official main_ibot.py", () => {
  const help = pretrainHelp();
  for (const name of OFFICIAL_ARGUMENTS) {
    assert(new RegExp(`^  --${name} <`, "m").test(help), `--help does not mention --${name}`);
  }
  for (
    const name of [
      "global_crop_size",
      "local_crop_size",
      "img_size",
      "preset",
      "device",
      "precision",
    ]
  ) {
    assert(help.includes(`--${name} <`), `--help does not mention --${name}`);
  }
});

Deno.test("parsePretrainArgs: negative numbers are values, a repeated flag keeps the last", () => {
  const args = parse([
    "--clip_grad",
    "-1",
    "--pred_ratio",
    "-0.5",
    "-.25",
    "--epochs",
    "3",
    "--epochs",
    "4",
  ]);
  assert.equal(args.clip_grad, -1);
  assert.deepEqual(args.pred_ratio, [-0.5, -0.25]);
  assert.equal(args.epochs, 4);
  assert.deepEqual(parse(["--pred_ratio", "0,0.3"]).pred_ratio, [0, 0.3]);
});

Deno.test("parsePretrainArgs: the precision is --precision, else fp16 when --use_fp16 is true", () => {
  const precision = (argv: string[]) => {
    const args = parse(argv);
    assert.equal(args.use_fp16, args.precision === "fp16", "use_fp16 says whether it is fp16");
    return args.precision;
  };
  const gpu = ["--device", "cuda"];
  assert.equal(precision([]), "fp32", "the builtin preset runs on CPUs, in float32");
  assert.equal(precision(["--data_path", "/d", ...gpu]), "fp16", "official default: use_fp16");
  assert.equal(precision(["--data_path", "/d"]), "fp32", "the official default on the CPU");
  assert.equal(precision(["--data_path", "/d", ...gpu, "--use_fp16", "false"]), "fp32");
  assert.equal(precision(["--data_path", "/d", ...gpu, "--precision", "bf16"]), "bf16");
  assert.equal(precision(["--data_path", "/d", ...gpu, "--precision", "fp32"]), "fp32");
  assert.equal(precision([...gpu, "--use_fp16", "true"]), "fp16");
  assert.equal(precision([...gpu, "--use_fp16", "true", "--precision", "fp16"]), "fp16");
  assert.equal(precision([...gpu, "--use_fp16", "false", "--precision", "bf16"]), "bf16");
  assert.equal(precision(["--use_fp16", "false", "--precision", "fp32"]), "fp32");
});

Deno.test("parsePretrainArgs: contradicting precisions and fp16 or bf16 on the CPU are refused", () => {
  const gpu = ["--device", "cuda"];
  assertRejects(
    [...gpu, "--use_fp16", "true", "--precision", "bf16"],
    /^--use_fp16 true contradicts --precision bf16; give one of them$/,
  );
  assertRejects(
    [...gpu, "--use_fp16", "false", "--precision", "fp16"],
    /^--use_fp16 false contradicts --precision fp16; give one of them$/,
  );
  const noKernels = "needs --device cuda: mixed precision is for GPUs, and onnxruntime's CPU " +
    "provider has no bfloat16 kernels and emulates float16 in float32$";
  assertRejects(["--precision", "fp16"], new RegExp(`^--precision fp16 ${noKernels}`));
  assertRejects(
    ["--data_path", "/d", "--precision", "bf16"],
    new RegExp(`^--precision bf16 ${noKernels}`),
  );
  assertRejects(["--use_fp16", "true"], new RegExp(`^--use_fp16 true ${noKernels}`));
  assertRejects(
    ["--data_path", "/d", "--use_fp16", "1"],
    new RegExp(`^--use_fp16 true ${noKernels}`),
  );
  assertRejects(["--precision", "fp64"], /^--precision must be fp32, fp16 or bf16, got fp64$/);
});

Deno.test("parsePretrainArgs: the arguments survive the JSON round trip of a checkpoint", () => {
  for (const argv of [[], ["--data_path", "/d", "--pred_ratio", "0", "0.3"]]) {
    const args = parse(argv);
    assert.deepEqual(JSON.parse(JSON.stringify(args)), args);
  }
});

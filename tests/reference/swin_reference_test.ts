/**
 * Self-checks of the PyTorch reference of the official iBOT Swin (`swin_torch.py`): Swin-T's
 * state-dict keys and parameter counts (reference §8.3), its windows, shifts and output shapes
 * (§2.2), the relative position index, the shifted-window mask and the mask upsampling against
 * hand-computed cases, the iBOT iteration with a Swin backbone, and official checkpoints written
 * and read back strictly through our pth reader and writer.
 */

import { join } from "node:path";
import { assert, assertCloseToScale } from "../assert.ts";
import { extractBackbone } from "../../lib/checkpoint/official_checkpoint.ts";
import { readPth, stateDictFromPth, writePth } from "../../lib/checkpoint/pth.ts";
import { loadSafetensors, saveSafetensors } from "../../lib/checkpoint/safetensors.ts";
import type { NamedTensor } from "../../lib/runtime/named_tensor.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import {
  f32,
  f64,
  float64Reader,
  i64,
  runTorchReference,
  runTorchScript,
  torchAvailable,
  torchScriptOutput,
} from "./torch.ts";

const ignore = !torchAvailable();
const SCRIPT = "swin_torch.py";

/** The `# student` / `# teacher` lines and `# params` counts of `swin_torch.py keys`. */
async function torchKeys(arch: string, window: number, outDim: number, shared: boolean) {
  const text = await torchScriptOutput(SCRIPT, [
    "keys",
    arch,
    String(window),
    String(outDim),
    shared ? "1" : "0",
  ]);
  const sections: Record<string, string[]> = { student: [], teacher: [] };
  const counts = new Map<string, number>();
  let section = "";
  for (const line of text.trim().split("\n")) {
    if (line.startsWith("# params ")) {
      const [part, count] = line.slice("# params ".length).split(" ");
      counts.set(part, Number(count));
    } else if (line.startsWith("# ")) {
      section = line.slice(2);
    } else {
      sections[section].push(line);
    }
  }
  return { student: sections.student, teacher: sections.teacher, counts };
}

/**
 * The backbone keys of §8.3 as `name [shape]` lines for stage-1 width `c`, `depths`, `heads` and
 * the effective window of each stage; `masked` puts `masked_embed` first.
 */
function officialBackboneKeys(
  c: number,
  depths: readonly number[],
  heads: readonly number[],
  windows: readonly number[],
  masked: boolean,
): string[] {
  const keys: [string, number[]][] = [];
  if (masked) keys.push(["masked_embed", [1, c]]);
  keys.push(["patch_embed.proj.weight", [c, 3, 4, 4]], ["patch_embed.proj.bias", [c]]);
  keys.push(["patch_embed.norm.weight", [c]], ["patch_embed.norm.bias", [c]]);
  depths.forEach((depth, s) => {
    const [cs, w] = [c * 2 ** s, windows[s]];
    for (let b = 0; b < depth; b++) {
      const p = `layers.${s}.blocks.${b}`;
      keys.push([`${p}.norm1.weight`, [cs]], [`${p}.norm1.bias`, [cs]]);
      keys.push([`${p}.attn.relative_position_bias_table`, [(2 * w - 1) ** 2, heads[s]]]);
      keys.push([`${p}.attn.relative_position_index`, [w * w, w * w]]);
      keys.push([`${p}.attn.qkv.weight`, [3 * cs, cs]], [`${p}.attn.qkv.bias`, [3 * cs]]);
      keys.push([`${p}.attn.proj.weight`, [cs, cs]], [`${p}.attn.proj.bias`, [cs]]);
      keys.push([`${p}.norm2.weight`, [cs]], [`${p}.norm2.bias`, [cs]]);
      keys.push([`${p}.mlp.fc1.weight`, [4 * cs, cs]], [`${p}.mlp.fc1.bias`, [4 * cs]]);
      keys.push([`${p}.mlp.fc2.weight`, [cs, 4 * cs]], [`${p}.mlp.fc2.bias`, [cs]]);
    }
    if (s < depths.length - 1) {
      keys.push([`layers.${s}.downsample.reduction.weight`, [2 * cs, 4 * cs]]);
      keys.push([`layers.${s}.downsample.norm.weight`, [4 * cs]]);
      keys.push([`layers.${s}.downsample.norm.bias`, [4 * cs]]);
    }
  });
  const last = c * 2 ** (depths.length - 1);
  keys.push(["norm.weight", [last]], ["norm.bias", [last]]);
  return keys.map(([name, shape]) => `backbone.${name} [${shape.join(",")}]`);
}

/** The head keys of §8.4 (no norm, 3 layers), `last_layer2` listed even when it is shared. */
function headKeys(dim: number, hidden: number, bottleneck: number, k: number): string[] {
  const keys: [string, number[]][] = [
    ["mlp.0.weight", [hidden, dim]],
    ["mlp.0.bias", [hidden]],
    ["mlp.2.weight", [hidden, hidden]],
    ["mlp.2.bias", [hidden]],
    ["mlp.4.weight", [bottleneck, hidden]],
    ["mlp.4.bias", [bottleneck]],
  ];
  for (const layer of ["last_layer", "last_layer2"]) {
    keys.push([`${layer}.weight_g`, [k, 1]], [`${layer}.weight_v`, [k, bottleneck]]);
  }
  return keys.map(([name, shape]) => `head.${name} [${shape.join(",")}]`);
}

/** Elements of the parameters among `name [shape]` lines (buffers and masked_embed left out). */
function countParams(lines: readonly string[]): number {
  return lines.filter((l) => !l.includes("relative_position_index") && !l.includes("masked_embed"))
    .map((l) => JSON.parse(l.slice(l.indexOf(" ") + 1)) as number[])
    .reduce((sum, shape) => sum + shape.reduce((a, b) => a * b, 1), 0);
}

/** Swin-T per window: the effective window of each stage (§8.3) and the millions of parameters. */
const SWIN_T_CASES = [
  { window: 7, windows: [7, 7, 7, 7], count: "27.52" },
  { window: 14, windows: [14, 14, 14, 7], count: "27.57" },
];

for (const { window, windows, count } of SWIN_T_CASES) {
  Deno.test({
    name: `swin_tiny/${window}'s state dicts have the official keys and ${count} M parameters`,
    ignore,
    async fn() {
      const torch = await torchKeys("swin_tiny", window, 8192, true);
      const backbone = (masked: boolean) =>
        officialBackboneKeys(96, [2, 2, 6, 2], [3, 6, 12, 24], windows, masked);
      const head = headKeys(768, 2048, 256, 8192);
      assert.deepEqual(torch.student, [...backbone(true), ...head]);
      assert.deepEqual(torch.teacher, [...backbone(false), ...head]);
      const params = countParams(backbone(false));
      assert.equal((params / 1e6).toFixed(2), count);
      assert.equal(torch.counts.get("teacher.backbone"), params);
      assert.equal(torch.counts.get("student.backbone"), params);
      assert.equal(torch.counts.get("student.backbone.masked_embed"), 96);
    },
  });
}

/** What `swin_torch.py layout` prints. */
interface Layout {
  readonly blocks: {
    stage: number;
    block: number;
    dim: number;
    heads: number;
    resolution: number;
    window: number;
    shift: number;
    drop_path: number;
  }[];
  readonly num_features: number;
  readonly tokens: Record<string, number[]>;
}

Deno.test({
  name: "swin_tiny's blocks take the official windows and shifts; tokens are [B, 1+49 | 1+9, 768]",
  ignore,
  async fn() {
    // (window, shift) per block from §2.2: the last stage never shifts; with window 14 stage 3
    // (14×14) neither.
    const pair = (window: number, shift: number): [number, number][] => [
      [window, 0],
      [window, shift],
    ];
    const expected: Record<number, [number, number][]> = {
      7: [...pair(7, 3), ...pair(7, 3), ...pair(7, 3), ...pair(7, 3), ...pair(7, 3), ...pair(7, 0)],
      14: [
        ...pair(14, 7),
        ...pair(14, 7),
        ...pair(14, 0),
        ...pair(14, 0),
        ...pair(14, 0),
        ...pair(7, 0),
      ],
    };
    const stages = [0, 0, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3];
    for (const window of [7, 14]) {
      const layout: Layout = JSON.parse(
        await torchScriptOutput(SCRIPT, ["layout", "swin_tiny", String(window), "224", "96"]),
      );
      assert.deepEqual(layout.blocks.map((b) => [b.window, b.shift]), expected[window]);
      assert.deepEqual(layout.blocks.map((b) => b.stage), stages);
      assert.deepEqual(layout.blocks.map((b) => b.dim), stages.map((s) => 96 * 2 ** s));
      assert.deepEqual(layout.blocks.map((b) => b.heads), stages.map((s) => 3 * 2 ** s));
      assert.deepEqual(layout.blocks.map((b) => b.resolution), stages.map((s) => 56 / 2 ** s));
      layout.blocks.forEach((b, i) =>
        assertCloseToScale(b.drop_path, (0.1 * i) / 11, "rate", 1e-6)
      );
      assert.equal(layout.num_features, 768);
      assert.deepEqual(layout.tokens, { "224": [2, 50, 768], "96": [2, 10, 768] });
    }
  },
});

/** What `swin_torch.py window` prints. */
interface WindowFacts {
  readonly window: number;
  readonly shift: number;
  readonly relative_position_index: number[][];
  readonly attn_mask: number[][][] | null;
}

async function windowFacts(resolution: number, window: number, shift: number, grid: number) {
  const args = ["window", ...[resolution, window, shift, grid].map(String)];
  return JSON.parse(await torchScriptOutput(SCRIPT, args)) as WindowFacts;
}

Deno.test({
  name: "the relative position index and the shift mask equal hand-computed ones",
  ignore,
  async fn() {
    // Window 2: index (Δrow + 1)·3 + (Δcol + 1), Δ = token i minus token j, tokens row-major.
    // Shift 1 on a 3×3 grid padded to 4×4: regions rows/cols [0, 2), [2, 3), [3, 4).
    const small = await windowFacts(3, 2, 1, 3);
    assert.equal(small.window, 2);
    assert.equal(small.shift, 1);
    assert.deepEqual(small.relative_position_index, [
      [4, 3, 1, 0],
      [5, 4, 2, 1],
      [7, 6, 4, 3],
      [8, 7, 5, 4],
    ]);
    const X = -100;
    assert.deepEqual(small.attn_mask, [
      [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
      [[0, X, 0, X], [X, 0, X, 0], [0, X, 0, X], [X, 0, X, 0]],
      [[0, 0, X, X], [0, 0, X, X], [X, X, 0, 0], [X, X, 0, 0]],
      [[0, X, X, X], [X, 0, X, X], [X, X, 0, X], [X, X, X, 0]],
    ]);

    // Swin-T/7 stage 3 (14×14, shift 3): 4 windows; the regions of the last row and column of
    // windows are 4 and 3 wide, so the -100 entries number 0, 2·28·21, 2·28·21 and 49² − (16² +
    // 12² + 12² + 9²).
    const recipe = await windowFacts(14, 7, 3, 14);
    const masked = recipe.attn_mask!.map((w) => w.flat().filter((v) => v === X).length);
    assert.deepEqual(masked, [0, 1176, 1176, 1776]);
    assert.equal(recipe.relative_position_index.length, 49);
    assert.equal(recipe.relative_position_index[0][48], 0);
    assert.equal(recipe.relative_position_index[48][0], 168);

    // A 96 px crop's stage 2 (12×12 at run time) pads to 14 with 4 windows.
    assert.equal((await windowFacts(28, 7, 3, 12)).attn_mask!.length, 4);
    // A stage no larger than the window uses the stage's size and no shift.
    for (const [resolution, window] of [[7, 7], [14, 14], [7, 14]]) {
      const facts = await windowFacts(resolution, window, Math.floor(window / 2), resolution);
      assert.deepEqual([facts.window, facts.shift, facts.attn_mask], [resolution, 0, null]);
    }
  },
});

Deno.test({
  name: "the final-stage mask reaches the patch embedding repeated along both axes",
  ignore,
  async fn() {
    const maskModel = async (grid: number, mask: number[][][]) =>
      JSON.parse(
        await torchScriptOutput(SCRIPT, ["mask-model", String(grid), JSON.stringify(mask)]),
      ) as number[][][];
    assert.deepEqual(await maskModel(4, [[[1, 0], [0, 1]]]), [[
      [1, 1, 0, 0],
      [1, 1, 0, 0],
      [0, 0, 1, 1],
      [0, 0, 1, 1],
    ]]);
    // 224 px: a 7×7 mask with cell (2, 5) set covers rows 16..23 and columns 40..47 of 56×56.
    const mask = Array.from(
      { length: 7 },
      (_, r) => Array.from({ length: 7 }, (_, c) => +(r === 2 && c === 5)),
    );
    const [grid] = await maskModel(56, [mask]);
    grid.forEach((row, r) =>
      row.forEach((v, c) => assert.equal(v, +(r >= 16 && r < 24 && c >= 40 && c < 48), `${r},${c}`))
    );
  },
});

let miniKeys: ReturnType<typeof torchKeys> | undefined;

/** The swin_mini parameters of `net` as [name, shape], heads of width 32/16 and 64 outputs. */
async function miniParams(net: "student" | "teacher"): Promise<[string, number[]][]> {
  miniKeys ??= torchKeys("swin_mini", 7, 64, false);
  const torch = await miniKeys;
  const backbone = torch[net].filter((l) =>
    l.startsWith("backbone.") && !l.includes("relative_position_index")
  );
  const head = headKeys(256, 32, 16, 64).filter((l) =>
    net === "student" || !l.includes("last_layer2")
  );
  return [...backbone, ...head].map((l) => {
    const [name, shape] = l.split(" ");
    return [`${net}.${name}`, JSON.parse(shape)];
  });
}

/** Random tensors for `params`: 1 + 0.3·N(0, 1) for norm weights, 0.3·N(0, 1) elsewhere. */
function randomWeights(params: [string, number[]][], rng: Rng): Record<string, NamedTensor> {
  return Object.fromEntries(params.map(([name, shape]) => {
    const base = name.includes("norm") && name.endsWith("weight") ? 1 : 0;
    const n = shape.reduce((a, b) => a * b, 1);
    return [name, f32(Float32Array.from({ length: n }, () => base + 0.3 * rng.normal()), shape)];
  }));
}

function normals(rng: Rng, shape: number[]): NamedTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return f32(Float32Array.from({ length: n }, () => rng.normal()), shape);
}

const [BATCH, GLOBAL_SIZE, LOCAL_SIZE, BLOCKS] = [2, 64, 32, 5];
const RATES = [0, 0.025, 0.05, 0.075, 0.1]; // linspace(0, 0.1, sum(depths) = 5)

/** Drop-path factors (blocks, 2, rows): 1 where the rate is 0, else 0 or 1/keep at random. */
function draws(rng: Rng, rows: number): NamedTensor {
  const data = new Float32Array(BLOCKS * 2 * rows);
  data.forEach((_, i) => {
    const keep = 1 - RATES[Math.floor(i / (2 * rows))];
    data[i] = keep === 1 ? 1 : (rng.uniform() < keep ? 1 / keep : 0);
  });
  return f32(data, [BLOCKS, 2, rows]);
}

/** Inputs of one `swin_torch.py step` iteration on swin_mini (64 px global, 32 px local crops). */
async function stepInputs(masked: boolean, drawSeed: number): Promise<Record<string, NamedTensor>> {
  const rng = new Rng(3);
  const tensors: Record<string, NamedTensor> = {
    embed_dim: i64(32),
    depths: { dtype: "int64", shape: [4], data: BigInt64Array.of(1n, 1n, 2n, 1n) },
    heads: { dtype: "int64", shape: [4], data: BigInt64Array.of(1n, 2n, 4n, 8n) },
    window_size: i64(7),
    img_size: i64(224),
    drop_path_rate: f64(0.1),
    out_dim: i64(64),
    patch_out_dim: i64(64),
    head_hidden: i64(32),
    head_bottleneck: i64(16),
    shared_head: i64(false),
    shared_head_teacher: i64(true),
    norm_last_layer: i64(true),
    n_global: i64(2),
    epoch: i64(1),
    freeze_last_layer: i64(1),
    steps: i64(1),
    optimizer_step: i64(1),
    lr: f64(1e-3),
    wd: f64(0.04),
    momentum: f64(0.9),
    teacher_temp: f64(0.04),
    teacher_patch_temp: f64(0.05),
    lambda1: f64(1),
    lambda2: f64(1),
    clip_grad: f64(3),
    center: normals(rng, [1, 64]),
    center2: normals(rng, [1, 1, 64]),
    ...randomWeights(await miniParams("student"), rng),
    ...randomWeights(await miniParams("teacher"), rng),
  };
  for (let i = 0; i < 4; i++) {
    const size = i < 2 ? GLOBAL_SIZE : LOCAL_SIZE;
    tensors[`crops.${i}`] = normals(rng, [BATCH, 3, size, size]);
  }
  for (let i = 0; i < 2; i++) {
    // The final-stage grid of a 64 px crop is 2×2; image 0 of crop 0 has two masked cells.
    const mask = masked ? [1, 0, 0, 1, 0, 1, 0, 0] : Array(8).fill(0);
    tensors[`masks.${i}`] = f32(Float32Array.from(mask), [BATCH, 4]);
  }
  const drawRng = new Rng(drawSeed);
  tensors["drop_path.0.global"] = draws(drawRng, 2 * BATCH);
  tensors["drop_path.0.local"] = draws(drawRng, 2 * BATCH);
  return tensors;
}

Deno.test({
  name: "the iBOT iteration with a Swin backbone: masks at the last stage, given drop path, EMA",
  ignore,
  async fn() {
    const inputs = await stepInputs(true, 1);
    const out = float64Reader(await runTorchReference(SCRIPT, ["step"], inputs));
    const [loss, patch] = [out("loss")[0], out("patch")[0]];
    assert(Number.isFinite(loss) && patch > 0, `loss ${loss}, patch ${patch}`);
    assert(out("grad.0.student.backbone.masked_embed").some((v) => v !== 0));
    // EMA with momentum 0.9 over every teacher parameter the student shares by name.
    for (const [name, tensor] of Object.entries(inputs)) {
      if (!name.startsWith("teacher.backbone.")) continue;
      const student = out(name.replace("teacher.", "student."));
      const expected = Float64Array.from(
        tensor.data as Float32Array,
        (t, i) => 0.9 * t + 0.1 * student[i],
      );
      assertCloseToScale(out(name), expected, name, 1e-12);
    }

    const otherDraws = float64Reader(
      await runTorchReference(SCRIPT, ["step"], await stepInputs(true, 2)),
    );
    assert.notEqual(otherDraws("loss")[0], loss);

    const unmasked = await runTorchReference(SCRIPT, ["step"], await stepInputs(false, 1));
    assert.equal(float64Reader(unmasked)("patch")[0], 0);
    // As the official in-place write, the token stays in the graph: its gradient is zero, not
    // absent, so AdamW still decays it.
    assert(float64Reader(unmasked)("grad.0.student.backbone.masked_embed").every((v) => v === 0));
  },
});

Deno.test({
  name:
    "an official Swin checkpoint from given weights reads back strictly, also as a backbone file",
  ignore,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const rng = new Rng(5);
      const weights = {
        ...randomWeights(await miniParams("student"), rng),
        ...randomWeights(await miniParams("teacher"), rng),
      };
      const [pth, input, images] = ["checkpoint.pth", "in.safetensors", "images.safetensors"].map((
        f,
      ) => join(dir, f));
      await saveSafetensors(input, { ...weights, epoch: i64(3) });
      await runTorchScript(SCRIPT, ["checkpoint-write", "swin_mini", "7", pth, input]);

      // Our reader sees the official layout: `module.` on the student, index buffers as int64.
      const checkpoint = await readPth(pth);
      const teacher = stateDictFromPth(checkpoint, "teacher");
      const student = stateDictFromPth(checkpoint, "student");
      for (const [name, tensor] of Object.entries(weights)) {
        const [net, key] = [name.slice(0, name.indexOf(".")), name.slice(name.indexOf(".") + 1)];
        const stored = net === "teacher" ? teacher.get(key) : student.get(`module.${key}`);
        assert.deepEqual(stored?.data, tensor.data, name);
      }
      const index = teacher.get("backbone.layers.2.blocks.1.attn.relative_position_index")!;
      assert.deepEqual([index.dtype, index.shape], ["int64", [49, 49]]);
      assert(student.has("module.backbone.masked_embed") && !teacher.has("backbone.masked_embed"));
      assert.deepEqual(
        teacher.get("head.last_layer2.weight_v")?.data,
        weights["teacher.head.last_layer.weight_v"].data,
      );

      await saveSafetensors(images, {
        "images.0": normals(rng, [2, 3, 224, 224]),
        "images.1": normals(rng, [1, 3, 96, 96]),
      });
      const readOut = join(dir, "read.safetensors");
      await runTorchScript(SCRIPT, ["checkpoint-read", pth, images, readOut]);
      const read = (await loadSafetensors(readOut)).tensors;
      const params = [...student.keys()].filter((k) => !k.includes("relative_position_index"));
      const frozen = params.filter((k) => k.endsWith(".weight_g"));
      const trained = params.filter((k) => !frozen.includes(k));
      const decayed = trained.filter((k) =>
        !k.endsWith(".bias") && student.get(k)!.shape.length > 1
      );
      assert.deepEqual(Array.from(read.get("optimizer.groups")!.data as Float64Array), [
        decayed.length,
        0.01,
        trained.length - decayed.length,
        0,
      ]);

      // The teacher's tokens equal the `swin` mode's forward of the same weights.
      const backbone: Record<string, NamedTensor> = {};
      for (const [name, tensor] of Object.entries(weights)) {
        if (name.startsWith("teacher.backbone.")) {
          backbone[name.slice("teacher.backbone.".length)] = tensor;
        }
      }
      const images0 = (await loadSafetensors(images)).tensors;
      const forward = await runTorchReference(SCRIPT, ["swin"], {
        ...backbone,
        depths: { dtype: "int64", shape: [4], data: BigInt64Array.of(1n, 1n, 2n, 1n) },
        heads: { dtype: "int64", shape: [4], data: BigInt64Array.of(1n, 2n, 4n, 8n) },
        window_size: i64(7),
        img_size: i64(224),
        images: images0.get("images.0")!,
        local_images: images0.get("images.1")!,
      });
      assert.deepEqual(read.get("teacher.tokens.0")!.shape, [2, 50, 256]);
      assert.deepEqual(read.get("teacher.tokens.1")!.shape, [1, 10, 256]);
      assert.deepEqual(read.get("teacher.tokens.0")!.data, forward.get("tokens")!.data);
      assert.deepEqual(read.get("teacher.tokens.1")!.data, forward.get("local_tokens")!.data);

      // The student's backbone extracted and rewritten by our pth writer loads strictly.
      const file = join(dir, "backbone.pth");
      await writePth(file, extractBackbone(student, false));
      const backboneOut = join(dir, "backbone.safetensors");
      await runTorchScript(SCRIPT, ["backbone-read", "swin_mini", "7", file, images, backboneOut]);
      const fromBackbone = (await loadSafetensors(backboneOut)).tensors;
      for (const i of [0, 1]) {
        assert.deepEqual(
          fromBackbone.get(`tokens.${i}`)!.data,
          read.get(`student.tokens.${i}`)!.data,
        );
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { assert, assertCloseToScale } from "../assert.ts";
import { loadSafetensors, saveSafetensors } from "../../lib/checkpoint/safetensors.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { grad } from "../../lib/graph/grad.ts";
import { mul } from "../../lib/graph/math.ts";
import { sum } from "../../lib/graph/reduce.ts";
import { shapeSize } from "../../lib/graph/tensor.ts";
import {
  swin,
  SWIN_SIZES,
  type SwinConfig,
  swinDropPathRates,
  swinStages,
} from "../../lib/models/swin.ts";
import {
  relativePositionIndex,
  shiftedWindowMask,
  windowTokenIndex,
} from "../../lib/models/window_attention.ts";
import type { NamedTensor } from "../../lib/runtime/named_tensor.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { CompiledGraph } from "../../lib/runtime/session.ts";
import { StateStore } from "../../lib/runtime/store.ts";
import {
  f32,
  f64,
  float64Reader,
  i64,
  randomizeWeights,
  runPython,
  runTorchReference,
  torchAvailable,
  torchScriptOutput,
} from "../reference/torch.ts";

/** The folder of the PyTorch reference scripts. */
const REFERENCE_DIR = fileURLToPath(new URL("../reference/", import.meta.url));

const tiny = (windowSize: number, maskedImModeling = true): SwinConfig => ({
  ...SWIN_SIZES.swin_tiny,
  windowSize,
  imgSize: 224,
  maskedImModeling,
});

/** A graph with a Swin's forward pass on images [batch, 3, size, size] (masked when `mask`). */
function forwardGraph(config: SwinConfig, batch: number, size: number, mask: boolean) {
  const g = new Graph("swin");
  const images = g.input("images", "float32", [batch, 3, size, size]);
  const maskInput = mask ? g.input("mask", "float32", [batch, (size / 32) ** 2]) : undefined;
  return { g, tokens: swin(g, config, { images, mask: maskInput }).tokens };
}

/** The backbone's parameters as `name [shape]` lines, without the `backbone.` prefix. */
const keyLines = (g: Graph) =>
  g.params.map((p) => `${p.name.slice("backbone.".length)} [${p.shape.join(",")}]`);

const parameterCount = (g: Graph, except = "backbone.masked_embed") =>
  g.params.filter((p) => p.name !== except).reduce((n, p) => n + shapeSize(p.shape), 0);

Deno.test("Swin-T gives [B, 1+49, 768] at 224 px and [B, 1+9, 768] at 96 px with windows 7 and 14", () => {
  for (const windowSize of [7, 14]) {
    assert.deepEqual(forwardGraph(tiny(windowSize), 2, 224, true).tokens.shape, [2, 50, 768]);
    assert.deepEqual(forwardGraph(tiny(windowSize), 3, 96, false).tokens.shape, [3, 10, 768]);
  }
});

Deno.test("Swin-T has 27.52 M parameters with window 7 and 27.57 M with window 14", () => {
  const counts = [7, 14].map((w) => parameterCount(forwardGraph(tiny(w), 1, 224, true).g));
  assert.deepEqual(counts, [27_519_354, 27_569_754]);
  const teacher = forwardGraph(tiny(7, false), 1, 224, false).g;
  assert.equal(teacher.params[0].name, "backbone.patch_embed.proj.weight");
  assert.equal(parameterCount(teacher), 27_519_354);
});

Deno.test("blocks take the official effective window and shift from the 224 px stage grids", () => {
  const layout = (windowSize: number) =>
    swinStages(tiny(windowSize)).map((s) => [
      s.resolution,
      s.dim,
      s.heads,
      s.blocks.map((b) => `${b.window}/${b.shift}`).join(" "),
    ]);
  assert.deepEqual(layout(7), [
    [56, 96, 3, "7/0 7/3"],
    [28, 192, 6, "7/0 7/3"],
    [14, 384, 12, "7/0 7/3 7/0 7/3 7/0 7/3"],
    [7, 768, 24, "7/0 7/0"],
  ]);
  assert.deepEqual(layout(14), [
    [56, 96, 3, "14/0 14/7"],
    [28, 192, 6, "14/0 14/7"],
    [14, 384, 12, "14/0 14/0 14/0 14/0 14/0 14/0"],
    [7, 768, 24, "7/0 7/0"],
  ]);
  const rates = swinDropPathRates(SWIN_SIZES.swin_tiny);
  assert.equal(rates.length, 12);
  assert.deepEqual([rates[0], rates[11]], [0, 0.1]);
  assert(Math.abs(rates[1] - 0.1 / 11) < 1e-15);
});

Deno.test("the relative position index and the shift mask of a 2×2 window on a 4×4 grid", () => {
  assert.deepEqual(relativePositionIndex(2), [4, 3, 1, 0, 5, 4, 2, 1, 7, 6, 4, 3, 8, 7, 5, 4]);
  const index7 = relativePositionIndex(7);
  assert.equal(Math.max(...index7), 168);
  assert.equal(index7[0], 84); // the diagonal is (0 + 6)·13 + (0 + 6)
  const X = -100;
  // Regions along each axis: rows/columns 0–1, 2, 3; windows row-major.
  assert.deepEqual([...shiftedWindowMask(4, 4, { window: 2, shift: 1 })], [
    ...[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ...[0, X, 0, X, X, 0, X, 0, 0, X, 0, X, X, 0, X, 0],
    ...[0, 0, X, X, 0, 0, X, X, X, X, 0, 0, X, X, 0, 0],
    ...[0, X, X, X, X, 0, X, X, X, X, 0, X, X, X, X, 0],
  ]);
  assert.throws(
    () => shiftedWindowMask(5, 4, { window: 2, shift: 1 }),
    /the grid 5×4 is not a multiple of the window 2/,
  );
});

Deno.test("the windows of a 3×3 grid with window 2 and shift 1: padded to 4×4, shifted, cut", () => {
  // Window-major, tokens row-major; −1 where the padding (row 3 or column 3) lands.
  assert.deepEqual(windowTokenIndex(3, 3, { window: 2, shift: 1 }), [
    ...[4, 5, 7, 8],
    ...[-1, 3, -1, 6],
    ...[-1, -1, 1, 2],
    ...[-1, -1, -1, 0],
  ]);
  assert.deepEqual(windowTokenIndex(2, 4, { window: 2, shift: 0 }), [0, 1, 4, 5, 2, 3, 6, 7]);
});

Deno.test("bad inputs are refused with one sentence", () => {
  const g = new Graph("swin");
  const images = g.input("images", "float32", [2, 3, 64, 64]);
  assert.throws(
    () => swin(g, tiny(7, false), { images, mask: g.input("m", "float32", [2, 4]) }),
    /a mask was given to a network without masked_embed/,
  );
  assert.throws(
    () => {
      const other = new Graph("swin");
      const mask = other.input("m2", "float32", [2, 16]);
      return swin(other, tiny(7), { images: other.input("i", "float32", [2, 3, 64, 64]), mask });
    },
    /mask m2\[2,16\]:float32 must be \[2, 4\]/,
  );
  assert.throws(
    () => swin(g, tiny(7, false), { images, dropPath: g.input("d", "float32", [12, 2, 3]) }),
    /drop-path scales d\[12,2,3\]:float32 must be \[12, 2, 2\]/,
  );
  assert.throws(
    () => swinStages({ ...tiny(7), heads: [3, 6, 12, 25] }),
    /stage 3 width 768 is not a multiple of 25 heads/,
  );
});

Deno.test({
  name: "Swin-T/7 and Swin-T/14 declare the official backbone keys, shapes and order",
  ignore: !torchAvailable(),
  async fn() {
    for (const windowSize of [7, 14]) {
      const args = ["keys", "swin_tiny", `${windowSize}`, "16", "1"];
      const lines = (await torchScriptOutput("swin_torch.py", args)).trim().split("\n");
      const student = lines.slice(lines.indexOf("# student") + 1, lines.indexOf("# teacher"))
        .filter((l) => l.startsWith("backbone.")).map((l) => l.slice("backbone.".length));
      const isIndex = (l: string) => l.includes(".relative_position_index ");
      const g = forwardGraph(tiny(windowSize), 1, 224, true).g;
      assert.deepEqual(keyLines(g), student.filter((l) => !isIndex(l)));
      // One index buffer per block, [ws², ws²] with that block's effective window.
      const windows = swinStages(tiny(windowSize)).flatMap((s) => s.blocks.map((b) => b.window));
      assert.deepEqual(
        student.filter(isIndex).map((l) => l.split(" ")[1]),
        windows.map((w) => `[${w * w},${w * w}]`),
      );
      const count = lines.find((l) => l.startsWith("# params student.backbone "));
      assert.equal(count, `# params student.backbone ${parameterCount(g)}`);
    }
  },
});

Deno.test({
  name: "the windows, shifts, drop-path rates and token shapes are the reference's",
  ignore: !torchAvailable(),
  async fn() {
    for (const windowSize of [7, 14]) {
      const args = ["layout", "swin_tiny", `${windowSize}`, "224", "96"];
      const reference = JSON.parse(await torchScriptOutput("swin_torch.py", args));
      const rates = swinDropPathRates(SWIN_SIZES.swin_tiny);
      const ours = swinStages(tiny(windowSize)).flatMap((stage, s) =>
        stage.blocks.map((b, i) => ({
          stage: s,
          block: i,
          dim: stage.dim,
          heads: stage.heads,
          resolution: stage.resolution,
          window: b.window,
          shift: b.shift,
        }))
      );
      assert.deepEqual(
        reference.blocks.map(({ drop_path: _, ...block }: Record<string, number>) => block),
        ours,
      );
      reference.blocks.forEach((b: { drop_path: number }, i: number) =>
        assert(Math.abs(b.drop_path - rates[i]) < 1e-7, `drop-path rate of block ${i}`)
      );
      for (const size of [224, 96]) {
        const { tokens } = forwardGraph(tiny(windowSize), 2, size, true);
        assert.deepEqual(tokens.shape, reference.tokens[`${size}`], `${size} px`);
      }
    }
  },
});

Deno.test({
  name: "relative position indices and shift masks equal the reference's at the recipe's grids",
  ignore: !torchAvailable(),
  async fn() {
    // [stage resolution at 224, window, shift, grid at run time]: 96 px crops' stages 1 and 2.
    for (
      const [resolution, window, shift, grid] of [[56, 7, 3, 24], [28, 14, 7, 12], [14, 7, 3, 14]]
    ) {
      const args = ["window", resolution, window, shift, grid].map(String);
      const reference = JSON.parse(await torchScriptOutput("swin_torch.py", args));
      assert.deepEqual([reference.window, reference.shift], [window, shift]);
      assert.deepEqual(relativePositionIndex(window), reference.relative_position_index.flat());
      const padded = Math.ceil(grid / window) * window;
      assert.deepEqual(
        [...shiftedWindowMask(padded, padded, { window, shift })],
        reference.attn_mask.flat(2),
      );
    }
  },
});

/**
 * Random weights of std 0.06 (norm weights 1 + 0.06·N): every parameter matters, and Swin-T's
 * 768-wide layers stay well conditioned enough for float32 to agree with float64 to 1e-5.
 */
function randomSwinWeights(g: Graph, rng: Rng): StateStore {
  const store = StateStore.fromParams(g.params, 1);
  randomizeWeights(store, rng);
  for (const name of store.names()) {
    const base = name.includes("norm") && name.endsWith("weight") ? 1 : 0;
    store.get(name).forEach((v, i, a) => (a[i] = base + (v - base) * 0.2));
  }
  return store;
}

/**
 * Our masked forward of `batch` images of `size` px and unmasked forward of `batch` images of
 * `localSize` px with drop path, against `swin_torch.py swin` on the same weights and draws.
 */
async function checkForwardParity(
  config: SwinConfig,
  batch: number,
  size: number,
  localSize: number,
): Promise<void> {
  const blocks = config.depths.reduce((a, b) => a + b, 0);
  const cells = (size / 32) ** 2;
  const rates = swinDropPathRates(config);
  const g = new Graph("swin");
  const images = g.input("images", "float32", [batch, 3, size, size]);
  const mask = g.input("mask", "float32", [batch, cells]);
  const drop = g.input("drop", "float32", [blocks, 2, batch]);
  const local = g.input("local_images", "float32", [batch, 3, localSize, localSize]);
  const localDrop = g.input("local_drop", "float32", [blocks, 2, batch]);
  const dropPathRates = rates;
  g.output("tokens", swin(g, config, { images, mask, dropPath: drop, dropPathRates }).tokens);
  g.output(
    "local_tokens",
    swin(g, config, { images: local, dropPath: localDrop, dropPathRates }).tokens,
  );
  const session = await CompiledGraph.create(g);

  const rng = new Rng(size * 100 + config.windowSize);
  const store = randomSwinWeights(g, rng);
  const normal = (n: number) => Float32Array.from({ length: n }, () => rng.normal());
  const draws = () =>
    Float32Array.from({ length: blocks * 2 * batch }, (_, i) => {
      const rate = rates[Math.floor(i / (2 * batch))];
      return rate === 0 || rng.uniform() < 1 - rate ? 1 / (1 - rate) : 0;
    });
  const feeds: Record<string, Float32Array> = {
    images: normal(batch * 3 * size * size),
    mask: Float32Array.from({ length: batch * cells }, () => (rng.uniform() < 0.4 ? 1 : 0)),
    drop: draws(),
    local_images: normal(batch * 3 * localSize * localSize),
    local_drop: draws(),
  };
  feeds.mask[0] = 1;
  for (const name of store.names()) feeds[name] = store.get(name);
  const out = await session.run(feeds);
  await session.release();

  const tensors: Record<string, NamedTensor> = {
    depths: { dtype: "int64", shape: [4], data: BigInt64Array.from(config.depths, BigInt) },
    heads: { dtype: "int64", shape: [4], data: BigInt64Array.from(config.heads, BigInt) },
    window_size: i64(config.windowSize),
    img_size: i64(config.imgSize),
    drop_path_rate: f64(config.dropPathRate),
    images: f32(feeds.images, [batch, 3, size, size]),
    mask: f32(feeds.mask, [batch, cells]),
    "drop_path.0.global": f32(feeds.drop, [blocks, 2, batch]),
    local_images: f32(feeds.local_images, [batch, 3, localSize, localSize]),
    "drop_path.0.local": f32(feeds.local_drop, [blocks, 2, batch]),
  };
  for (const p of g.params) {
    tensors[p.name.slice("backbone.".length)] = f32(store.get(p.name), [...p.shape]);
  }
  const reference = float64Reader(await runTorchReference("swin_torch.py", ["swin"], tensors));
  const what = `window ${config.windowSize}, ${size} and ${localSize} px`;
  assertCloseToScale(out.tokens as Float32Array, reference("tokens"), `tokens (${what})`);
  assertCloseToScale(
    out.local_tokens as Float32Array,
    reference("local_tokens"),
    `local tokens (${what})`,
  );
}

Deno.test({
  name: "a swin_mini's masked and local forwards with drop path match the PyTorch Swin",
  ignore: !torchAvailable(),
  async fn() {
    // Window 3 at these sizes pads every stage, shifts where the stage grid exceeds 3, and
    // pads for patch merging at odd grids (64 px: 16, 8, 4, 2; 40 px: 10, 5, 3, 2).
    const config: SwinConfig = {
      ...SWIN_SIZES.swin_mini,
      windowSize: 3,
      imgSize: 224,
      maskedImModeling: true,
    };
    await checkForwardParity(config, 3, 64, 40);
    await checkForwardParity({ ...config, windowSize: 7 }, 2, 224, 96);
  },
});

Deno.test({
  name: "Swin-T's forwards at 224 and 96 px with windows 7 and 14 match the PyTorch Swin",
  ignore: !torchAvailable(),
  async fn() {
    for (const windowSize of [7, 14]) await checkForwardParity(tiny(windowSize), 1, 224, 96);
  },
});

/**
 * A swin_mini at 64 px whose window 3 pads every stage (16, 8, 4, 2 → 18, 9, 6, 3) and shifts
 * stage 3's second block, masked, with drop path: its tokens, and the gradients of
 * Σ tokens · weights with respect to the images and the parameters `names` (all by default),
 * on random weights.
 */
async function gradientCase(names?: readonly string[]) {
  const config: SwinConfig = {
    ...SWIN_SIZES.swin_mini,
    windowSize: 3,
    imgSize: 224,
    maskedImModeling: true,
  };
  const [batch, size, blocks] = [2, 64, 5];
  const g = new Graph("swin_grad");
  const images = g.input("images", "float32", [batch, 3, size, size]);
  const mask = g.input("mask", "float32", [batch, 4]);
  const drop = g.input("drop", "float32", [blocks, 2, batch]);
  const weights = g.input("weights", "float32", [batch, 5, 256]);
  const rates = swinDropPathRates(config);
  const tokens = swin(g, config, { images, mask, dropPath: drop, dropPathRates: rates }).tokens;
  g.output("tokens", tokens);
  const wrt = ["images", ...(names ?? g.params.map((p) => p.name))];
  const loss = sum(mul(tokens, weights));
  grad(loss, wrt.map((n) => (n === "images" ? images : g.paramTensor(n))))
    .forEach((gi, i) => g.output(`grad.${wrt[i]}`, gi));
  const session = await CompiledGraph.create(g);

  const rng = new Rng(21);
  const store = randomSwinWeights(g, rng);
  const normal = (n: number) => Float32Array.from({ length: n }, () => rng.normal());
  const feeds: Record<string, Float32Array> = {
    images: normal(batch * 3 * size * size),
    mask: Float32Array.of(1, 0, 0, 1, 0, 1, 0, 0),
    // Block b's scales: 0 for every third entry, else 1/(1 − rate); 1 where the rate is 0.
    drop: Float32Array.from({ length: blocks * 2 * batch }, (_, i) => {
      const rate = rates[Math.floor(i / (2 * batch))];
      return rate > 0 && i % 3 === 0 ? 0 : 1 / (1 - rate);
    }),
    weights: normal(batch * 5 * 256),
  };
  for (const name of store.names()) feeds[name] = store.get(name);
  // A copy: the session reuses its output arrays on the next run.
  const out = Object.fromEntries(
    Object.entries(await session.run(feeds)).map(([name, v]) => [name, v.slice()]),
  );
  return { config, g, session, feeds, wrt, normal, out };
}

Deno.test("gradients through a swin_mini agree with finite differences of its forward", async () => {
  const { session, feeds, wrt, normal, out } = await gradientCase([
    "backbone.masked_embed",
    "backbone.patch_embed.proj.weight",
    "backbone.patch_embed.norm.weight",
    "backbone.layers.0.blocks.0.attn.relative_position_bias_table",
    "backbone.layers.0.downsample.reduction.weight",
    "backbone.layers.1.downsample.norm.bias",
    "backbone.layers.2.blocks.1.attn.relative_position_bias_table",
    "backbone.layers.2.blocks.1.attn.qkv.weight",
    "backbone.layers.3.blocks.0.mlp.fc1.weight",
    "backbone.norm.weight",
  ]);
  // The loss in float64 from the float32 tokens; a float32 forward limits the agreement to
  // about 1e-3 (the comparison with PyTorch's autograd below is the exact one).
  const loss = async () => {
    const tokens = (await session.run(feeds)).tokens as Float32Array;
    return tokens.reduce((total, v, i) => total + v * feeds.weights[i], 0);
  };
  for (const name of wrt) {
    const values = feeds[name];
    const saved = values.slice();
    const direction = normal(values.length);
    const analytic = (out[`grad.${name}`] as Float32Array)
      .reduce((total, gi, i) => total + gi * direction[i], 0);
    const step = 1e-3;
    values.forEach((_, i) => (values[i] = saved[i] + step * direction[i]));
    const plus = await loss();
    values.forEach((_, i) => (values[i] = saved[i] - step * direction[i]));
    const minus = await loss();
    values.set(saved);
    const numeric = (plus - minus) / (2 * step);
    assert(
      Math.abs(analytic - numeric) <= 5e-3 * Math.abs(numeric) + 1e-2,
      `${name}: directional derivative ${analytic} vs finite difference ${numeric}`,
    );
  }
  await session.release();
});

/** PyTorch's autograd through `swin_torch.py`'s SwinTransformer: the same loss as ours. */
const TORCH_GRADIENTS = `
import sys, torch
sys.path.insert(0, sys.argv[1])
import safetensors_io, swin_torch
from ibot_torch import give_drop_path, scalar
data = safetensors_io.load(sys.argv[2])
model = swin_torch.swin(swin_torch.size_from(data), scalar(data, "window_size"),
                        img_size=scalar(data, "img_size"), return_all_tokens=True,
                        masked_im_modeling=True).double()
swin_torch.load_backbone(model, data)
give_drop_path(model.all_blocks(), data, 0)
images = torch.from_numpy(data["images"]).double().requires_grad_()
tokens = model(images, mask=torch.from_numpy(data["mask"]) > 0.5)
(tokens * torch.from_numpy(data["weights"]).double()).sum().backward()
out = {"tokens": tokens.detach().numpy(), "grad.images": images.grad.numpy()}
out.update({"grad.backbone." + n: p.grad.numpy() for n, p in model.named_parameters()})
safetensors_io.save(sys.argv[3], out)
`;

Deno.test({
  name: "gradients through a swin_mini match PyTorch's autograd of the reference Swin",
  ignore: !torchAvailable(),
  async fn() {
    const { config, g, session, feeds, wrt, out } = await gradientCase();
    await session.release();
    const shapes = new Map(g.inputs.map((i) => [i.name, i.shape]));
    const tensors: Record<string, NamedTensor> = {
      depths: { dtype: "int64", shape: [4], data: BigInt64Array.from(config.depths, BigInt) },
      heads: { dtype: "int64", shape: [4], data: BigInt64Array.from(config.heads, BigInt) },
      window_size: i64(config.windowSize),
      img_size: i64(config.imgSize),
      drop_path_rate: f64(config.dropPathRate),
      "drop_path.0.global": f32(feeds.drop, shapes.get("drop")!),
    };
    for (const name of ["images", "mask", "weights"]) {
      tensors[name] = f32(feeds[name], shapes.get(name)!);
    }
    for (const p of g.params) {
      tensors[p.name.slice("backbone.".length)] = f32(feeds[p.name], [...p.shape]);
    }
    const dir = await Deno.makeTempDir();
    try {
      const [input, output] = [join(dir, "in.safetensors"), join(dir, "out.safetensors")];
      await saveSafetensors(input, tensors);
      await runPython(TORCH_GRADIENTS, [REFERENCE_DIR, input, output]);
      const reference = float64Reader((await loadSafetensors(output)).tensors);
      assertCloseToScale(out.tokens as Float32Array, reference("tokens"), "tokens");
      for (const name of wrt) {
        assertCloseToScale(
          out[`grad.${name}`] as Float32Array,
          reference(`grad.${name}`),
          `grad.${name}`,
          1e-4,
        );
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

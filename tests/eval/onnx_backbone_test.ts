import { join } from "node:path";
import { fromBinary } from "@bufbuild/protobuf";
import { ModelProtoSchema } from "onnx-buf";
import * as ort from "onnxruntime-node";
import * as ortWeb from "onnxruntime-web";
import { assert, assertClose } from "../assert.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { vit, VIT_SIZES } from "../../lib/models/vit.ts";
import { swin } from "../../lib/models/swin.ts";
import type {
  SwinBackboneConfig,
  VitBackboneConfig as BackboneConfig,
} from "../../lib/checkpoint/backbone_file.ts";
import {
  checkOnnxBackbone,
  ONNX_BACKBONE_TOLERANCE,
  writeOnnxBackbone,
} from "../../lib/eval/onnx_backbone.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { saveSafetensors } from "../../lib/checkpoint/safetensors.ts";
import type { NamedTensor } from "../../lib/runtime/named_tensor.ts";
import { CompiledGraph } from "../../lib/runtime/session.ts";
import { StateStore } from "../../lib/runtime/store.ts";
import { runDenoTask } from "../task_runner.ts";

/** A 4×4 grid of 4-pixel patches: width 32, 2 blocks of 2 heads. */
const SMALL: BackboneConfig = {
  embedDim: 32,
  depth: 2,
  heads: 2,
  patchSize: 4,
  imgSize: 16,
  mlpRatio: 4,
};

/** Our own forward at one size: tokens [B, 1 + N, D] and the last attention. */
async function referenceForward(
  config: BackboneConfig,
  weights: StateStore,
  images: Float32Array,
  [batch, height, width]: readonly number[],
) {
  const g = new Graph("reference");
  const input = g.input("images", "float32", [batch, 3, height, width]);
  const out = vit(g, { ...config, maskedImModeling: false }, { images: input });
  g.output("tokens", out.tokens);
  g.output("attention", out.lastAttention);
  const initializers = new Map(g.params.map((p) => [p.name, weights.get(p.name)]));
  const session = await CompiledGraph.create(g, { threads: 1, initializers });
  try {
    const result = await session.run({ images });
    return {
      tokens: Float32Array.from(result.tokens as Float32Array),
      attention: Float32Array.from(result.attention as Float32Array),
    };
  } finally {
    await session.release();
  }
}

/**
 * Random backbone weights under `backbone.*`: the official init plus noise, so that biases and
 * norms are far from trivial, the position embedding (std 1) shows its interpolation, and the
 * attention (qkv std 1.7/√D) is peaked rather than uniform.
 */
function randomWeights(config: BackboneConfig, seed: number): StateStore {
  const g = new Graph();
  const size = config.imgSize;
  vit(g, { ...config, maskedImModeling: false }, {
    images: g.input("images", "float32", [1, 3, size, size]),
  });
  const store = StateStore.fromParams(g.params, seed);
  const rng = new Rng(seed + 1);
  for (const name of store.names()) {
    const data = store.get(name);
    const std = name.endsWith("pos_embed")
      ? 1
      : name.endsWith("qkv.weight")
      ? 1.7 / Math.sqrt(config.embedDim)
      : 0.05;
    for (let i = 0; i < data.length; i++) data[i] += rng.normal(0, std);
  }
  return store;
}

/** Official keys without `backbone.`, as a loaded backbone holds them. */
function backboneWeights(store: StateStore): Map<string, NamedTensor> {
  return new Map(
    [...store.toNamedTensors()].map(([name, t]) => [name.slice("backbone.".length), t]),
  );
}

function randomImages(rng: Rng, size: number): Float32Array {
  return Float32Array.from({ length: size }, () => rng.normal());
}

/** Splits tokens [B, 1 + N, D] into CLS [B, D] and patch tokens [B, N, D]. */
function splitTokens(tokens: Float32Array, batch: number, dim: number) {
  const count = tokens.length / (batch * dim);
  const cls = new Float32Array(batch * dim);
  const patches = new Float32Array(batch * (count - 1) * dim);
  for (let b = 0; b < batch; b++) {
    const sample = tokens.subarray(b * count * dim, (b + 1) * count * dim);
    cls.set(sample.subarray(0, dim), b * dim);
    patches.set(sample.subarray(dim), b * (count - 1) * dim);
  }
  return { cls, patches };
}

/** Outputs of an onnxruntime session (node or web), by name. */
type SessionOutputs = Readonly<Record<string, { readonly data: unknown }>>;

/** Asserts that a model's cls_token, patch_tokens and attention equal our forward's to 1e-5. */
function assertOutputsMatch(
  out: SessionOutputs,
  ours: { tokens: Float32Array; attention: Float32Array },
  batch: number,
  dim: number,
  what: string,
): void {
  const expected = splitTokens(ours.tokens, batch, dim);
  const actual = (name: string) => out[name].data as Float32Array;
  assertClose(actual("cls_token"), expected.cls, 1e-5, 1e-5, `cls_token ${what}`);
  assertClose(actual("patch_tokens"), expected.patches, 1e-5, 1e-5, `patch_tokens ${what}`);
  assertClose(actual("attention"), ours.attention, 1e-5, 1e-5, `attention ${what}`);
}

async function tempDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "onnx_backbone_test_" });
}

Deno.test("the ONNX backbone equals our forward at the trained, larger, smaller and non-square sizes", async () => {
  const dir = await tempDir();
  try {
    const store = randomWeights(SMALL, 3);
    const path = join(dir, "backbone.onnx");
    const summary = await writeOnnxBackbone(path, SMALL, backboneWeights(store), {
      withAttention: true,
    });
    assert.deepEqual(summary.signature, [
      "images float32 [batch, 3, height, width]",
      "cls_token float32 [batch, 32]",
      "patch_tokens float32 [batch, patches, 32]",
      "attention float32 [batch, 2, tokens, tokens]",
    ]);
    const weightCount = store.names().reduce((n, name) => n + store.get(name).length, 0);
    assert.equal(summary.parameters, weightCount);
    assert(summary.bytes > 4 * weightCount, `${summary.bytes} bytes hold fewer than the weights`);

    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["backbone.onnx"]);
    // Standard operators only (no contrib domain), every weight an initializer.
    const model = fromBinary(ModelProtoSchema, await Deno.readFile(path));
    assert.deepEqual(model.opsetImport.map((o) => o.domain), [""]);
    const initializers = new Set(model.graph!.initializer.map((t) => t.name));
    for (const name of store.names()) assert(initializers.has(name), `${name} is not baked in`);

    const session = await ort.InferenceSession.create(path, { intraOpNumThreads: 1 });
    try {
      assert.deepEqual(session.inputNames, ["images"]);
      assert.deepEqual(session.outputNames, ["cls_token", "patch_tokens", "attention"]);
      const shapes = [...session.inputMetadata, ...session.outputMetadata].map((m) =>
        m.isTensor ? m.shape : undefined
      );
      assert.deepEqual(shapes, [
        ["batch", 3, "height", "width"],
        ["batch", 32],
        ["batch", "patches", 32],
        ["batch", 2, "tokens", "tokens"],
      ]);

      const rng = new Rng(11);
      // 16×16: the stored 4×4 table; 16×20: one side equal (still interpolated, officially);
      // 24×24 and 20×28 upsampled; 8×12 downsampled.
      const sizes = [[16, 16], [16, 20], [24, 24], [20, 28], [8, 12]];
      for (const [height, width] of sizes) {
        for (const batch of [1, 3]) {
          const what = `${batch}×3×${height}×${width}`;
          const images = randomImages(rng, batch * 3 * height * width);
          const ours = await referenceForward(SMALL, store, images, [batch, height, width]);
          const out = await session.run({
            images: new ort.Tensor("float32", images, [batch, 3, height, width]),
          });
          const patches = (height / 4) * (width / 4);
          assert.deepEqual(out.cls_token.dims, [batch, 32], what);
          assert.deepEqual(out.patch_tokens.dims, [batch, patches, 32], what);
          assert.deepEqual(out.attention.dims, [batch, 2, 1 + patches, 1 + patches], what);
          assertOutputsMatch(out, ours, batch, 32, what);
        }
      }
    } finally {
      await session.release();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("onnxruntime-web (the WebAssembly build that browsers run) gives the ONNX backbone's outputs too", async () => {
  const dir = await tempDir();
  try {
    const store = randomWeights(SMALL, 7);
    const path = join(dir, "backbone.onnx");
    await writeOnnxBackbone(path, SMALL, backboneWeights(store), { withAttention: true });
    // One thread: the WebAssembly build would otherwise start its own workers.
    ortWeb.env.wasm.numThreads = 1;
    const session = await ortWeb.InferenceSession.create(await Deno.readFile(path));
    try {
      assert.deepEqual(session.outputNames, ["cls_token", "patch_tokens", "attention"]);
      const rng = new Rng(12);
      for (const [batch, height, width] of [[1, 16, 16], [2, 24, 12]]) {
        const what = `${batch}×3×${height}×${width}`;
        const images = randomImages(rng, batch * 3 * height * width);
        const out = await session.run({
          images: new ortWeb.Tensor("float32", images, [batch, 3, height, width]),
        });
        const ours = await referenceForward(SMALL, store, images, [batch, height, width]);
        const patches = (height / 4) * (width / 4);
        assert.deepEqual(out.patch_tokens.dims, [batch, patches, 32], what);
        assertOutputsMatch(out, ours, batch, 32, what);
      }
    } finally {
      await session.release();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the ONNX backbone refuses an image that is not a multiple of the patch size", async () => {
  const dir = await tempDir();
  try {
    const path = join(dir, "backbone.onnx");
    await writeOnnxBackbone(path, SMALL, backboneWeights(randomWeights(SMALL, 5)));
    // Fatal messages only: the expected failures would print onnxruntime's error log.
    const session = await ort.InferenceSession.create(path, {
      intraOpNumThreads: 1,
      logSeverityLevel: 4,
    });
    try {
      assert.deepEqual(session.outputNames, ["cls_token", "patch_tokens"]);
      for (const [height, width] of [[18, 16], [16, 17]]) {
        const images = new ort.Tensor("float32", new Float32Array(3 * height * width), [
          1,
          3,
          height,
          width,
        ]);
        await assert.rejects(
          session.run({ images }),
          /height_and_width_must_be_multiples_of_4/,
          `${height}×${width}`,
        );
      }
    } finally {
      await session.release();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("checkOnnxBackbone: the written model equals our forward; other weights are one sentence", async () => {
  const dir = await tempDir();
  try {
    const weights = backboneWeights(randomWeights(SMALL, 8));
    const path = join(dir, "backbone.onnx");
    await writeOnnxBackbone(path, SMALL, weights);
    const check = await checkOnnxBackbone(path, SMALL, weights, { batch: 3, seed: 2 });
    assert.deepEqual(check.shape, [3, 3, 16, 16]);
    assert(check.scale > 0.5, `tokens of scale ${check.scale}`);
    assert(check.maxDifference < 1e-5 * check.scale, `difference ${check.maxDifference}`);

    // The file against weights of which one bias moved by twice the tolerance of the scale.
    const bias = weights.get("blocks.1.mlp.fc2.bias")!;
    const moved = Float32Array.from(bias.data as Float32Array);
    moved[5] += 2 * ONNX_BACKBONE_TOLERANCE * check.scale;
    weights.set("blocks.1.mlp.fc2.bias", { ...bias, data: moved });
    await assert.rejects(
      checkOnnxBackbone(path, SMALL, weights, { batch: 3, seed: 2 }),
      {
        message: new RegExp(
          `^${path} run by onnxruntime on cpu differs from our forward by up to \\S+ on ` +
            `tokens of scale \\S+$`,
        ),
      },
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeOnnxBackbone names a missing or misshapen weight", async () => {
  const dir = await tempDir();
  try {
    const weights = backboneWeights(randomWeights(SMALL, 5));
    const path = join(dir, "backbone.onnx");
    weights.delete("blocks.1.mlp.fc2.bias");
    await assert.rejects(
      writeOnnxBackbone(path, SMALL, weights),
      { message: "the backbone needs blocks.1.mlp.fc2.bias of shape [32]" },
    );
    weights.set("blocks.1.mlp.fc2.bias", {
      dtype: "float32",
      shape: [31],
      data: new Float32Array(31),
    });
    await assert.rejects(
      writeOnnxBackbone(path, SMALL, weights),
      { message: "the backbone needs blocks.1.mlp.fc2.bias of shape [32]" },
    );
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tasks/export_onnx.ts: exports a flat backbone file that onnxruntime runs like our forward", async () => {
  const dir = await tempDir();
  try {
    // vit_mini (a known architecture, so the file needs no --arch) with 4-pixel patches on 16 px.
    const config: BackboneConfig = { ...VIT_SIZES.vit_mini, patchSize: 4, imgSize: 16 };
    const store = randomWeights(config, 9);
    const weightsPath = join(dir, "backbone.safetensors");
    await saveSafetensors(weightsPath, backboneWeights(store));
    const output = join(dir, "vit_mini.onnx");
    const result = await runDenoTask("export_onnx", [
      "--pretrained_weights",
      weightsPath,
      "--output",
      output,
      "--with_attention",
    ]);
    assert.equal(result.code, 0, result.stderr);
    const lines = result.stdout.trimEnd().split("\n");
    assert.match(lines[0], /^wrote .*vit_mini\.onnx \(\d+\.\d MiB, \d+ weights\): /);
    assert.match(lines[0], /width 96, depth 6, 3 heads, patch 4, position embedding for 16 px$/);
    assert.deepEqual(lines.slice(1, -1), [
      "  input   images float32 [batch, 3, height, width]",
      "  output  cls_token float32 [batch, 96]",
      "  output  patch_tokens float32 [batch, patches, 96]",
      "  output  attention float32 [batch, 3, tokens, tokens]",
    ]);
    const checked = lines.at(-1)!.match(
      /^checked on cpu: onnxruntime's tokens for 2×3×16×16 random images differ from our forward's by at most (\S+) \(tokens up to \d+\.\d\)$/,
    );
    assert(checked, lines.at(-1));
    assert(Number(checked[1]) < 1e-5, `the check found a difference of ${checked[1]}`);

    const [batch, height, width] = [2, 24, 12];
    const images = randomImages(new Rng(4), batch * 3 * height * width);
    const session = await ort.InferenceSession.create(output, { intraOpNumThreads: 1 });
    try {
      const out = await session.run({
        images: new ort.Tensor("float32", images, [batch, 3, height, width]),
      });
      const ours = await referenceForward(config, store, images, [batch, height, width]);
      assertOutputsMatch(out, ours, batch, 96, `${batch}×3×${height}×${width}`);
    } finally {
      await session.release();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tasks/export_onnx.ts: --help and bad arguments", async () => {
  const dir = await tempDir();
  try {
    const help = await runDenoTask("export_onnx", ["--help"]);
    assert.equal(help.code, 0, help.stderr);
    for (
      const flag of ["--pretrained_weights", "--checkpoint_key", "--output", "--with_attention"]
    ) {
      assert(help.stdout.includes(flag), `--help does not list ${flag}`);
    }
    const missing = join(dir, "missing.safetensors");
    const cases: [string[], string][] = [
      [["--pretrained_weights", missing], "error: --output is required (see --help)\n"],
      [
        ["--pretrained_weights", missing, "--output", join(dir, "no-such-folder", "b.onnx")],
        `error: the folder ${join(dir, "no-such-folder")} of --output does not exist\n`,
      ],
      [
        ["--pretrained_weights", missing, "--output", join(dir, "b.onnx")],
        `error: ${missing} does not exist\n`,
      ],
    ];
    for (const [argv, stderr] of cases) {
      const result = await runDenoTask("export_onnx", argv);
      assert.notEqual(result.code, 0);
      assert.equal(result.stderr, stderr);
    }
    const unknown = await runDenoTask("export_onnx", ["--bogus"]);
    assert.notEqual(unknown.code, 0);
    assert.match(unknown.stderr, /^error: .*--bogus.*\n$/);
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * A Swin with two stages on a 4×4 patch grid at 16 px: windows of 2 with a shifted second block
 * in stage 0, one 2×2 window in stage 1; width 16 then 32.
 */
const SWIN_SMALL: SwinBackboneConfig = {
  embedDim: 16,
  depths: [2, 2],
  heads: [1, 2],
  windowSize: 2,
  imgSize: 16,
  dropPathRate: 0,
  mlpRatio: 4,
};

/** Random Swin weights under `backbone.*`: the official init plus noise. */
function randomSwinWeights(config: SwinBackboneConfig, seed: number): StateStore {
  const g = new Graph();
  swin(g, { ...config, maskedImModeling: false }, {
    images: g.input("images", "float32", [1, 3, config.imgSize, config.imgSize]),
  });
  const store = StateStore.fromParams(g.params, seed);
  const rng = new Rng(seed + 1);
  for (const name of store.names()) {
    const data = store.get(name);
    for (let i = 0; i < data.length; i++) data[i] += rng.normal(0, 0.3);
  }
  return store;
}

/** Our Swin forward at a fixed batch and size: tokens [B, 1 + N, D]. */
async function swinForward(
  config: SwinBackboneConfig,
  weights: StateStore,
  images: Float32Array,
  [batch, size]: readonly number[],
): Promise<Float32Array> {
  const g = new Graph("reference");
  const input = g.input("images", "float32", [batch, 3, size, size]);
  g.output("tokens", swin(g, { ...config, maskedImModeling: false }, { images: input }).tokens);
  const initializers = new Map(g.params.map((p) => [p.name, weights.get(p.name)]));
  const session = await CompiledGraph.create(g, { threads: 1, initializers });
  try {
    return Float32Array.from((await session.run({ images })).tokens as Float32Array);
  } finally {
    await session.release();
  }
}

Deno.test("the ONNX Swin backbone takes any batch at its image size and equals our forward", async () => {
  const dir = await tempDir();
  try {
    const store = randomSwinWeights(SWIN_SMALL, 3);
    // 16 px: the layout size, no padding; 20 px: a 5×5 grid padded to the windows and merged
    // with an odd side, then a 3×3 grid padded to 4×4.
    for (const [size, tokens] of [[16, 4], [20, 9]]) {
      const path = join(dir, `swin_${size}.onnx`);
      const summary = await writeOnnxBackbone(path, SWIN_SMALL, backboneWeights(store), {
        imageSize: size === 16 ? undefined : size,
      });
      assert.deepEqual(summary.signature, [
        `images float32 [batch, 3, ${size}, ${size}]`,
        "cls_token float32 [batch, 32]",
        `patch_tokens float32 [batch, ${tokens}, 32]`,
      ]);
      const model = fromBinary(ModelProtoSchema, await Deno.readFile(path));
      assert.deepEqual(model.opsetImport.map((o) => o.domain), [""]);
      const initializers = new Set(model.graph!.initializer.map((t) => t.name));
      for (const name of store.names()) assert(initializers.has(name), `${name} is not baked in`);
      const session = await ort.InferenceSession.create(path, { intraOpNumThreads: 1 });
      try {
        const shapes = [...session.inputMetadata, ...session.outputMetadata].map((m) =>
          m.isTensor ? m.shape : undefined
        );
        assert.deepEqual(shapes, [["batch", 3, size, size], ["batch", 32], ["batch", tokens, 32]]);
        const rng = new Rng(size);
        for (const batch of [1, 3]) {
          const what = `${batch}×3×${size}×${size}`;
          const images = randomImages(rng, batch * 3 * size * size);
          const ours = splitTokens(
            await swinForward(SWIN_SMALL, store, images, [batch, size]),
            batch,
            32,
          );
          const out = await session.run({
            images: new ort.Tensor("float32", images, [batch, 3, size, size]),
          });
          assert.deepEqual(out.patch_tokens.dims, [batch, tokens, 32], what);
          assertClose(out.cls_token.data as Float32Array, ours.cls, 1e-5, 1e-5, `cls ${what}`);
          assertClose(out.patch_tokens.data as Float32Array, ours.patches, 1e-5, 1e-5, what);
        }
      } finally {
        await session.release();
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeOnnxBackbone refuses options that do not fit the family, in one sentence", async () => {
  const dir = await tempDir();
  try {
    const path = join(dir, "b.onnx");
    const swinWeights = backboneWeights(randomSwinWeights(SWIN_SMALL, 1));
    await assert.rejects(
      writeOnnxBackbone(path, SWIN_SMALL, swinWeights, { withAttention: true }),
      { message: "the Swin backbone has no single attention map to output (ViT only)" },
    );
    await assert.rejects(
      writeOnnxBackbone(path, SWIN_SMALL, swinWeights, { imageSize: 18 }),
      { message: "the Swin image size 18 must be a positive multiple of 4" },
    );
    await assert.rejects(
      writeOnnxBackbone(path, SMALL, backboneWeights(randomWeights(SMALL, 1)), { imageSize: 16 }),
      { message: "the ViT backbone takes any image size; an image size is for the Swin" },
    );
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tasks/export_onnx.ts: exports a Swin backbone file at --image_size and checks it", async () => {
  const dir = await tempDir();
  try {
    // A flat file: the architecture comes from the weights, the layout size is 224 (its 2×2
    // windows fit the official stage grids).
    const store = randomSwinWeights(SWIN_SMALL, 9);
    const weightsPath = join(dir, "backbone.safetensors");
    await saveSafetensors(weightsPath, backboneWeights(store));
    const output = join(dir, "swin.onnx");
    const result = await runDenoTask("export_onnx", [
      "--pretrained_weights",
      weightsPath,
      "--output",
      output,
      "--image_size",
      "24",
    ]);
    assert.equal(result.code, 0, result.stderr);
    const lines = result.stdout.trimEnd().split("\n");
    assert.match(lines[0], /^wrote .*swin\.onnx \(\d+\.\d MiB, \d+ weights\): /);
    assert.match(
      lines[0],
      /width 16, depths 2 2, heads 1 2, window 2, windows laid out for 224 px$/,
    );
    assert.deepEqual(lines.slice(1, -1), [
      "  input   images float32 [batch, 3, 24, 24]",
      "  output  cls_token float32 [batch, 32]",
      "  output  patch_tokens float32 [batch, 9, 32]",
    ]);
    const checked = lines.at(-1)!.match(
      /^checked on cpu: onnxruntime's tokens for 2×3×24×24 random images differ from our forward's by at most (\S+) \(tokens up to \d+\.\d\)$/,
    );
    assert(checked, lines.at(-1));
    assert(Number(checked[1]) < 1e-5, `the check found a difference of ${checked[1]}`);

    const layout224 = { ...SWIN_SMALL, imgSize: 224 };
    const images = randomImages(new Rng(4), 2 * 3 * 24 * 24);
    const session = await ort.InferenceSession.create(output, { intraOpNumThreads: 1 });
    try {
      const out = await session.run({ images: new ort.Tensor("float32", images, [2, 3, 24, 24]) });
      const ours = splitTokens(await swinForward(layout224, store, images, [2, 24]), 2, 32);
      assertClose(out.patch_tokens.data as Float32Array, ours.patches, 1e-5, 1e-5, "patches");
    } finally {
      await session.release();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

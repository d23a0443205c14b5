import * as ort from "onnxruntime-node";
import { assert, assertCloseToScale } from "../assert.ts";
import { symbolicDim } from "../../lib/graph/dim.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { mul } from "../../lib/graph/math.ts";
import { encodeOnnxModel } from "../../lib/graph/onnx.ts";
import { shapeSize } from "../../lib/graph/tensor.ts";
import { positionEmbedding, vit, type VitConfig } from "../../lib/models/vit.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import type { NamedTensor } from "../../lib/runtime/named_tensor.ts";
import { CompiledGraph } from "../../lib/runtime/session.ts";
import { StateStore } from "../../lib/runtime/store.ts";
import { buildIbotStep } from "../../lib/train/step.ts";
import {
  f32,
  float64Reader,
  i64,
  PYTHON,
  randomizeWeights,
  runTorchReference,
  torchAvailable,
} from "../reference/torch.ts";

const REFERENCE = new URL("../reference/ibot_torch.py", import.meta.url).pathname;

/** `ibot_torch.py keys vit_small 16 8192 SHARED`: `name [shape]` lines and counts by part. */
function officialKeys(shared: boolean): {
  student: string[];
  teacher: string[];
  counts: Map<string, number>;
} {
  const { success, stdout, stderr } = new Deno.Command(PYTHON, {
    args: [REFERENCE, "keys", "vit_small", "16", "8192", shared ? "1" : "0"],
    env: { OMP_NUM_THREADS: "1" },
  }).outputSync();
  const text = new TextDecoder().decode(stdout);
  if (!success) throw new Error(`ibot_torch.py keys failed:\n${new TextDecoder().decode(stderr)}`);
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

/** The graph's parameters under `prefix.`, without it, as `name [shape]` lines. */
function ourKeys(params: readonly { name: string; shape: readonly number[] }[], prefix: string) {
  return params.filter((p) => p.name.startsWith(`${prefix}.`)).map((p) =>
    `${p.name.slice(prefix.length + 1)} [${p.shape.join(",")}]`
  );
}

/** The training step of ViT-S/16 with the official head; built, not compiled, for its params. */
function officialStep(sharedHead: boolean) {
  return buildIbotStep({
    backbone: { embedDim: 384, depth: 12, heads: 6, patchSize: 16, imgSize: 224 },
    studentHead: { outDim: 8192, patchOutDim: 8192, sharedHead },
    teacherSharedHead: true,
    normLastLayer: false,
    useMaskedImModeling: true,
    batch: 1,
    globalCrops: 2,
    globalSize: 224,
    localCrops: 1,
    localSize: 96,
    maskSlots: 98,
    dropPath: 0.1,
    clipGrad: 3,
    lambda1: 1,
    lambda2: 1,
  });
}

const isAlias = (line: string) => line.startsWith("head.last_layer2.");

Deno.test({
  name: "ViT-S/16 with the shared head declares the official state-dict keys, shapes and sizes",
  ignore: !torchAvailable(),
  fn() {
    const official = officialKeys(true);
    const { params } = officialStep(true).graph;
    const student = ourKeys(params, "student");
    const teacher = ourKeys(params, "teacher");
    // A shared head's state dict also lists `last_layer` under its alias `last_layer2`.
    for (const keys of [official.student, official.teacher]) {
      assert.deepEqual(keys.filter(isAlias), [
        "head.last_layer2.weight_g [8192,1]",
        "head.last_layer2.weight_v [8192,256]",
      ]);
    }
    assert.deepEqual(student, official.student.filter((line) => !isAlias(line)));
    assert.deepEqual(teacher, official.teacher.filter((line) => !isAlias(line)));

    const count = (prefix: string, except?: string) =>
      params.filter((p) => p.name.startsWith(prefix) && p.name !== except)
        .reduce((total, p) => total + shapeSize(p.shape), 0);
    const backbone = count("student.backbone.", "student.backbone.masked_embed");
    assert.equal(backbone, 21_665_664);
    assert.equal(count("student.backbone.masked_embed"), 384);
    assert.equal(count("student.head."), 7_614_720);
    assert.equal(count("teacher.backbone."), backbone);
    assert.equal(count("teacher.head."), 7_614_720);
    assert.deepEqual(
      [...official.counts],
      [
        ["student.backbone", backbone],
        ["student.backbone.masked_embed", 384],
        ["student.head", 7_614_720],
        ["teacher.backbone", backbone],
        ["teacher.head", 7_614_720],
      ],
    );
  },
});

Deno.test({
  name: "ViT-S/16 with a separate student head declares the official student keys",
  ignore: !torchAvailable(),
  fn() {
    const official = officialKeys(false);
    const { params } = officialStep(false).graph;
    assert.deepEqual(ourKeys(params, "student"), official.student);
    assert.deepEqual(ourKeys(params, "teacher"), official.teacher.filter((l) => !isAlias(l)));
    const head = params.filter((p) => p.name.startsWith("student.head."))
      .reduce((total, p) => total + shapeSize(p.shape), 0);
    assert.equal(head, official.counts.get("student.head"));
    assert.equal(head, 7_614_720 + 8192 * 257);
  },
});

Deno.test({
  name: "the position embedding is PyTorch's bicubic interpolate_pos_encoding for 6×6, 30×30, 6×9",
  ignore: !torchAvailable(),
  async fn() {
    const [side, dim] = [14, 8];
    const grids: [number, number][] = [[6, 6], [30, 30], [6, 9]];
    const rng = new Rng(11);
    const table = Float32Array.from({ length: (1 + side * side) * dim }, () => rng.normal());

    const g = new Graph("pos_embed");
    const pos = g.input("pos_embed", "float32", [1, 1 + side * side, dim]);
    for (const [h, w] of grids) g.output(`pos.${h}x${w}`, positionEmbedding(pos, side, h, w));
    const out = await (await CompiledGraph.create(g)).run({ pos_embed: table });

    const reference = float64Reader(
      await runTorchReference("ibot_torch.py", ["pos"], {
        pos_embed: f32(table, [1, 1 + side * side, dim]),
        grids: {
          dtype: "int64",
          shape: [grids.length, 2],
          data: BigInt64Array.from(grids.flat(), BigInt),
        },
      }),
    );
    for (const [h, w] of grids) {
      const name = `pos.${h}x${w}`;
      assert.equal(out[name].length, (1 + h * w) * dim, name);
      assertCloseToScale(out[name] as Float32Array, reference(name), name);
    }
  },
});

Deno.test("with a symbolic grid the position embedding is chosen and resized at run time as with a fixed one", async () => {
  const [side, dim] = [4, 3];
  const rng = new Rng(13);
  const table = Float32Array.from({ length: (1 + side * side) * dim }, () => rng.normal());
  const [rows, columns] = [symbolicDim("rows"), symbolicDim("columns")];
  const g = new Graph("pos_any_size");
  const pos = g.input("pos_embed", "float32", [1, 1 + side * side, dim]);
  const grid = g.input("grid", "float32", [rows, columns]);
  g.output("pos", positionEmbedding(pos, side, rows, columns));
  g.output("grid_check", mul(grid, 0));
  const session = await ort.InferenceSession.create(encodeOnnxModel(g).model);
  try {
    // The stored grid, one side equal (resized, officially), larger, smaller.
    for (const [h, w] of [[4, 4], [4, 6], [7, 5], [2, 3]]) {
      const out = await session.run({
        pos_embed: new ort.Tensor("float32", table, [1, 1 + side * side, dim]),
        grid: new ort.Tensor("float32", new Float32Array(h * w), [h, w]),
      });
      const fixed = new Graph("pos_fixed");
      const fixedPos = fixed.input("pos_embed", "float32", [1, 1 + side * side, dim]);
      fixed.output("pos", positionEmbedding(fixedPos, side, h, w));
      const expected = await (await CompiledGraph.create(fixed)).run({ pos_embed: table });
      assert.deepEqual(out.pos.dims, [1, 1 + h * w, dim]);
      assertCloseToScale(out.pos.data as Float32Array, expected.pos as Float32Array, `${h}×${w}`);
    }
  } finally {
    await session.release();
  }
});

Deno.test({
  name: "a small ViT's masked forward and interpolated local forward match the PyTorch ViT",
  ignore: !torchAvailable(),
  async fn() {
    const config: VitConfig = {
      embedDim: 32,
      depth: 2,
      heads: 2,
      patchSize: 4,
      imgSize: 16,
      maskedImModeling: true,
    };
    const [batch, localSize, patches] = [3, 8, 16];
    const g = new Graph("vit");
    const images = g.input("images", "float32", [batch, 3, 16, 16]);
    const mask = g.input("mask", "float32", [batch, patches]);
    const localImages = g.input("local_images", "float32", [batch, 3, localSize, localSize]);
    g.output("tokens", vit(g, config, { images, mask }).tokens);
    g.output("local_tokens", vit(g, config, { images: localImages }).tokens);
    const session = await CompiledGraph.create(g);

    const rng = new Rng(12);
    const store = StateStore.fromParams(g.params, 12);
    randomizeWeights(store, rng);
    const data = (n: number) => Float32Array.from({ length: n }, () => rng.normal());
    const feeds: Record<string, Float32Array> = {
      images: data(batch * 3 * 16 * 16),
      mask: Float32Array.from({ length: batch * patches }, () => (rng.uniform() < 0.4 ? 1 : 0)),
      local_images: data(batch * 3 * localSize * localSize),
    };
    feeds.mask.fill(0, 0, patches);
    feeds.mask[patches] = 1;
    for (const name of store.names()) feeds[name] = store.get(name);
    const out = await session.run(feeds);

    const tensors: Record<string, NamedTensor> = {
      depth: i64(config.depth),
      heads: i64(config.heads),
      patch_size: i64(config.patchSize),
      img_size: i64(config.imgSize),
      images: f32(feeds.images, [batch, 3, 16, 16]),
      mask: f32(feeds.mask, [batch, patches]),
      local_images: f32(feeds.local_images, [batch, 3, localSize, localSize]),
    };
    for (const p of g.params) {
      tensors[p.name.slice("backbone.".length)] = f32(store.get(p.name), [...p.shape]);
    }
    const reference = float64Reader(await runTorchReference("ibot_torch.py", ["vit"], tensors));
    assertCloseToScale(out.tokens as Float32Array, reference("tokens"), "tokens");
    assertCloseToScale(out.local_tokens as Float32Array, reference("local_tokens"), "local tokens");
  },
});

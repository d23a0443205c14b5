/**
 * Swin checkpoints cross between PyTorch and this toolkit both ways: an official full checkpoint
 * written by PyTorch (`tests/reference/swin_torch.py checkpoint-write`, with its int64
 * `relative_position_index` buffers) loads strictly here and our forward equals PyTorch's to 1e-5
 * of scale; our training checkpoint exported by `deno task export_pth`, and its backbone
 * extracted by `deno task extract_backbone`, load strictly in the official SwinTransformer
 * (`checkpoint-read`, `backbone-read`) with the same forward; the features of the last n blocks
 * equal the official `get_intermediate_layers`'. Without PyTorch, the architecture
 * read from weight shapes alone and the refusal of a wrong index buffer are still checked.
 */

import { join } from "node:path";
import { assert, assertCloseToScale } from "../assert.ts";
import { runPython, runTorchScript, torchAvailable } from "../reference/torch.ts";
import { runDenoTask } from "../task_runner.ts";
import {
  backboneStore,
  loadBackbone,
  type LoadedBackbone,
} from "../../lib/checkpoint/backbone_file.ts";
import { positionIndexBuffer } from "../../lib/checkpoint/official_checkpoint.ts";
import { readPth, stateDictFromPth } from "../../lib/checkpoint/pth.ts";
import { loadSafetensors, saveSafetensors } from "../../lib/checkpoint/safetensors.ts";
import { saveTrainingCheckpoint } from "../../lib/checkpoint/training_checkpoint.ts";
import { FeatureExtractor } from "../../lib/eval/knn_eval.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { backboneTokens } from "../../lib/models/backbone.ts";
import { clsLastLayer, headBottleneck, patchLastLayer } from "../../lib/models/head.ts";
import { swin, SWIN_SIZES } from "../../lib/models/swin.ts";
import type { NamedTensor } from "../../lib/runtime/named_tensor.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { CompiledGraph } from "../../lib/runtime/session.ts";
import { StateStore } from "../../lib/runtime/store.ts";
import { parsePretrainArgs } from "../../lib/train/args.ts";

const HAS_TORCH = torchAvailable();
const SCRIPT = "swin_torch.py";
const HEAD = { outDim: 32, patchOutDim: 32, hiddenDim: 32, bottleneckDim: 16 };

/** Image batches [B, 3, S, S]: the layout size 224 and a smaller one, padded to the windows. */
const SIZES: [number, number][] = [[1, 224], [2, 64]];

function images(rng: Rng): Record<string, NamedTensor> {
  return Object.fromEntries(SIZES.map(([b, s], i) => {
    const data = Float32Array.from({ length: b * 3 * s * s }, () => rng.normal());
    return [`images.${i}`, { dtype: "float32", shape: [b, 3, s, s], data }];
  }));
}

/**
 * A training store of swin_mini with window 7 laid out for 224 px: the student (masked_embed, a
 * separate patch head) and the teacher (shared head) with random weights, and the student's AdamW
 * moments.
 */
function swinTrainingStore(seed: number): StateStore {
  const g = new Graph();
  const config = { ...SWIN_SIZES.swin_mini, windowSize: 7, imgSize: 224 };
  const imagesIn = g.input("images", "float32", [1, 3, 32, 32]);
  for (const [net, shared] of [["student", false], ["teacher", true]] as const) {
    g.scope(net, () => {
      const { tokens } = swin(g, { ...config, maskedImModeling: net === "student" }, {
        images: imagesIn,
      });
      const head = { ...HEAD, sharedHead: shared };
      const bottleneck = headBottleneck(g, head, tokens);
      clsLastLayer(g, head, bottleneck);
      patchLastLayer(g, head, bottleneck);
    });
  }
  const store = StateStore.fromParams(g.params, seed);
  const rng = new Rng(seed);
  for (const name of store.names()) {
    store.get(name).forEach((v, i, a) => (a[i] = v + 0.05 * rng.normal()));
  }
  for (const name of store.names().filter((n) => n.startsWith("student."))) {
    for (const moment of ["exp_avg", "exp_avg_sq"]) {
      const values = Float32Array.from(store.get(name), () => Math.abs(rng.normal()));
      store.set(`${moment}.${name}`, values, store.shape(name));
    }
  }
  store.set("ibot_loss.center", new Float32Array(32), [1, 32]);
  store.set("ibot_loss.center2", new Float32Array(32), [1, 1, 32]);
  return store;
}

/** Our forward of a loaded backbone: all tokens [B, 1 + L, D] of `batch` images of `size` px. */
async function ourTokens(loaded: LoadedBackbone, input: NamedTensor): Promise<Float32Array> {
  const g = new Graph("tokens");
  const [batch, , size] = input.shape;
  const imagesIn = g.input("images", "float32", [batch, 3, size, size]);
  g.output(
    "tokens",
    g.scope("model", () => backboneTokens(g, loaded.config, false, { images: imagesIn })),
  );
  const store = backboneStore(loaded, "model");
  const feeds: Record<string, Float32Array> = { images: input.data as Float32Array };
  for (const p of g.params) feeds[p.name] = store.get(p.name);
  const session = await CompiledGraph.create(g, { threads: 1 });
  try {
    return (await session.run(feeds)).tokens as Float32Array;
  } finally {
    await session.release();
  }
}

/** Our forward of `path`'s `key` network equals PyTorch's `<prefix>tokens.<i>` for every batch. */
async function assertSameForward(
  path: string,
  key: string,
  inputs: Record<string, NamedTensor>,
  torchOutputs: Map<string, NamedTensor>,
  prefix: string,
): Promise<void> {
  const loaded = await loadBackbone(path, { key });
  assert.deepEqual(loaded.config, {
    ...SWIN_SIZES.swin_mini,
    windowSize: 7,
    imgSize: 224,
    mlpRatio: 4,
  });
  assert(![...loaded.weights.keys()].some((k) => k.endsWith("relative_position_index")));
  for (const i of SIZES.keys()) {
    const expected = torchOutputs.get(`${prefix}tokens.${i}`)!;
    const tokens = await ourTokens(loaded, inputs[`images.${i}`]);
    assertCloseToScale(tokens, expected.data as Float64Array, `${path} ${key} tokens ${i}`);
  }
}

Deno.test({
  name: "an official Swin checkpoint written by PyTorch loads strictly here with its forward",
  ignore: !HAS_TORCH,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const store = swinTrainingStore(3);
      const weights: Record<string, NamedTensor> = {};
      for (const [name, tensor] of store.toNamedTensors()) {
        if (name.startsWith("student.") || name.startsWith("teacher.")) weights[name] = tensor;
      }
      const [pth, input, inputsFile, output] = [
        "checkpoint.pth",
        "weights.safetensors",
        "images.safetensors",
        "out.safetensors",
      ].map((f) => join(dir, f));
      await saveSafetensors(input, weights);
      await runTorchScript(SCRIPT, ["checkpoint-write", "swin_mini", "7", pth, input]);
      const official = stateDictFromPth(await readPth(pth), "teacher");
      const index = official.get("backbone.layers.3.blocks.0.attn.relative_position_index")!;
      assert.deepEqual([index.dtype, index.shape], ["int64", [49, 49]]);

      const inputs = images(new Rng(4));
      await saveSafetensors(inputsFile, inputs);
      await runTorchScript(SCRIPT, ["checkpoint-read", pth, inputsFile, output]);
      const torchOutputs = (await loadSafetensors(output)).tensors;
      for (const key of ["teacher", "student"]) {
        await assertSameForward(pth, key, inputs, torchOutputs, `${key}.`);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "a Swin checkpoint exported here loads strictly in PyTorch, whole and as a backbone",
  ignore: !HAS_TORCH,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const [ours, pth, backbone] = ["checkpoint.safetensors", "checkpoint.pth", "backbone.pth"]
        .map((f) => join(dir, f));
      const { args } = parsePretrainArgs([
        ...["--arch=swin_mini", "--patch_size=4", "--window_size=7", "--img_size=224"],
        ...["--out_dim=32", "--patch_out_dim=32", "--shared_head=false"],
        ...["--shared_head_teacher=true", "--head_hidden_dim=32", "--head_bottleneck_dim=16"],
      ]);
      await saveTrainingCheckpoint(ours, swinTrainingStore(5), {
        epoch: 2,
        iteration: 0,
        step: 20,
        lastLayerStep: 5,
      }, args);
      const exported = await runDenoTask("export_pth", [ours, pth]);
      assert.equal(exported.code, 0, exported.stderr);
      const extracted = await runDenoTask("extract_backbone", [
        ...[ours, backbone, "--checkpoint_key", "student"],
      ]);
      assert.equal(extracted.code, 0, extracted.stderr);

      const inputs = images(new Rng(6));
      const [inputsFile, whole, alone] = [
        "in.safetensors",
        "whole.safetensors",
        "alone.safetensors",
      ]
        .map((f) => join(dir, f));
      await saveSafetensors(inputsFile, inputs);
      await runTorchScript(SCRIPT, ["checkpoint-read", pth, inputsFile, whole]);
      await runTorchScript(SCRIPT, [
        ...["backbone-read", "swin_mini", "7", backbone, inputsFile, alone],
      ]);
      const wholeOutputs = (await loadSafetensors(whole)).tensors;
      const aloneOutputs = (await loadSafetensors(alone)).tensors;
      for (const key of ["teacher", "student"]) {
        await assertSameForward(ours, key, inputs, wholeOutputs, `${key}.`);
        await assertSameForward(pth, key, inputs, wholeOutputs, `${key}.`);
      }
      await assertSameForward(backbone, "state_dict", inputs, aloneOutputs, "");
      for (const i of SIZES.keys()) {
        assert.deepEqual(
          aloneOutputs.get(`tokens.${i}`)!.data,
          wholeOutputs.get(`student.tokens.${i}`)!.data,
        );
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** The teacher backbone of {@link swinTrainingStore} as a flat file's tensors, with index buffers. */
function flatBackbone(): Map<string, NamedTensor> {
  const flat = new Map<string, NamedTensor>();
  for (const [name, tensor] of swinTrainingStore(7).toNamedTensors()) {
    if (!name.startsWith("teacher.backbone.")) continue;
    flat.set(name.slice("teacher.".length), tensor);
    if (name.endsWith(".relative_position_bias_table")) {
      const index = name.slice("teacher.".length).replace(/bias_table$/, "index");
      flat.set(index, positionIndexBuffer(7));
    }
  }
  return flat;
}

Deno.test("a flat Swin file gets its architecture from the weight shapes alone", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "backbone.safetensors");
    const flat = flatBackbone();
    await saveSafetensors(path, flat);
    const loaded = await loadBackbone(path);
    assert.deepEqual(loaded.config, {
      ...SWIN_SIZES.swin_mini,
      windowSize: 7,
      imgSize: 224,
      mlpRatio: 4,
    });
    assert.equal(loaded.weights.size, flat.size - 5);
    await assert.rejects(
      () => loadBackbone(path, { arch: "swin_tiny" }),
      Error,
      `${path} holds a Swin of width 32, depths [1,1,2,1], heads [1,2,4,8], not swin_tiny (width 96, depths [2,2,6,2], heads [3,6,12,24])`,
    );
    await assert.rejects(
      () => loadBackbone(path, { arch: "vit_small" }),
      Error,
      `${path} holds a Swin backbone, not vit_small`,
    );
    await assert.rejects(
      () => loadBackbone(path, { windowSize: 14 }),
      Error,
      `${path}: layers.0.blocks.0.attn.relative_position_bias_table is [169, 1], the architecture needs [729, 1]`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a Swin file whose relative position index is not the official one is refused", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "backbone.safetensors");
    const flat = flatBackbone();
    const name = "backbone.layers.2.blocks.1.attn.relative_position_index";
    const wrong = positionIndexBuffer(7);
    (wrong.data as BigInt64Array)[5] = 0n;
    flat.set(name, wrong);
    await saveSafetensors(path, flat);
    await assert.rejects(
      () => loadBackbone(path),
      Error,
      `${path}: layers.2.blocks.1.attn.relative_position_index is not the official relative position index of a 7×7 window`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * The official `get_intermediate_layers` of a Swin, through the reference model: the last n block
 * outputs (in forward order), final-normed in the last stage, each averaged over its tokens.
 */
const INTERMEDIATE = `
import sys
import torch
sys.path.insert(0, sys.argv[1])
import safetensors_io, swin_torch
data = safetensors_io.load(sys.argv[2])
model = swin_torch.swin("swin_mini", 7).double().eval()
swin_torch.load_backbone(model, data)
outputs = []
for s, layer in enumerate(model.layers):
    for block in layer.blocks:
        block.register_forward_hook(lambda m, i, o, s=s: outputs.append((s, o[0])))
with torch.no_grad():
    model(torch.from_numpy(data["images"]).double())
    last = len(model.layers) - 1
    n = int(sys.argv[4])
    parts = [(model.norm(x) if s == last else x).mean(1) for s, x in outputs[-n:]]
safetensors_io.save(sys.argv[3], {"features": torch.cat(parts, 1).numpy()})
`;

Deno.test({
  name: "Swin features of the last n blocks equal the official get_intermediate_layers",
  ignore: !HAS_TORCH,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const flat = new Map(
        [...flatBackbone()].map(([name, t]) => [name.slice("backbone.".length), t]),
      );
      const path = join(dir, "backbone.safetensors");
      await saveSafetensors(path, flat);
      const loaded = await loadBackbone(path);
      const batch = images(new Rng(8))["images.1"];
      const [input, output] = [join(dir, "in.safetensors"), join(dir, "out.safetensors")];
      await saveSafetensors(input, { ...Object.fromEntries(flat), images: batch });
      const reference = new URL("../reference/", import.meta.url).pathname;
      for (const [n, dim] of [[1, 256], [4, 64 + 128 + 128 + 256]]) {
        await runPython(INTERMEDIATE, [reference, input, output, String(n)]);
        const expected = (await loadSafetensors(output)).tensors.get("features")!;
        const extractor = await FeatureExtractor.create(backboneStore(loaded, "model"), {
          backbone: loaded.config,
          prefix: "model",
          size: 64,
          batch: 2,
          nLastBlocks: n,
          threads: 1,
        });
        try {
          assert.equal(extractor.dim, dim);
          const stream = async function* () {
            yield {
              images: batch.data as Float32Array,
              labels: Int32Array.of(0, 1),
              indices: Int32Array.of(0, 1),
              count: 2,
              total: 2,
            };
          };
          const { features } = await extractor.extract(stream());
          assert.deepEqual(expected.shape, [2, dim]);
          assertCloseToScale(features, expected.data as Float64Array, `features of ${n} blocks`);
        } finally {
          await extractor.close();
        }
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/**
 * Checkpoints cross between PyTorch and this toolkit both ways with the same forward (issue:
 * "a checkpoint written by PyTorch with the official key layout loads here and our forward on
 * fixed inputs equals PyTorch's forward of the same weights to 1e-5; a checkpoint written here
 * loads with torch.load and gives the same outputs in PyTorch"). The PyTorch side is the
 * independent reference `tests/reference/ibot_torch.py` (modes checkpoint-write/-read).
 */

import { join } from "node:path";
import { assert, assertCloseToScale } from "../assert.ts";
import { runTorchScript, torchAvailable } from "../reference/torch.ts";
import { runDenoTask } from "../task_runner.ts";
import { BackboneRunner } from "../../lib/analysis/backbone_runner.ts";
import { isVitBackbone, loadBackbone } from "../../lib/checkpoint/backbone_file.ts";
import { Graph } from "../../lib/graph/graph.ts";
import {
  clsLastLayer,
  headBottleneck,
  type HeadConfig,
  patchLastLayer,
} from "../../lib/models/head.ts";
import { vit, VIT_SIZES } from "../../lib/models/vit.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { loadSafetensors, saveSafetensors } from "../../lib/checkpoint/safetensors.ts";
import type { NamedTensor } from "../../lib/runtime/named_tensor.ts";
import { StateStore } from "../../lib/runtime/store.ts";
import { parsePretrainArgs } from "../../lib/train/args.ts";
import { saveTrainingCheckpoint } from "../../lib/checkpoint/training_checkpoint.ts";

const HAS_TORCH = torchAvailable();

/** Image batches [B, 3, H, W]: the stored grid (224 for patch 16), a smaller and a non-square one. */
const SIZES: [number, number, number][] = [[2, 224, 224], [2, 64, 64], [1, 48, 96]];

function images(rng: Rng): Record<string, NamedTensor> {
  return Object.fromEntries(SIZES.map(([b, h, w], i) => {
    const data = Float32Array.from({ length: b * 3 * h * w }, () => rng.normal());
    return [`images.${i}`, { dtype: "float32", shape: [b, 3, h, w], data }];
  }));
}

/** Compares our forward of `path`'s teacher and student with PyTorch's outputs. */
async function assertSameForward(
  path: string,
  inputs: Record<string, NamedTensor>,
  torchOutputs: Map<string, NamedTensor>,
): Promise<void> {
  for (const key of ["teacher", "student"]) {
    const loaded = await loadBackbone(path, { key });
    assert(isVitBackbone(loaded));
    assert.equal(loaded.config.patchSize, 16);
    assert.equal(loaded.config.imgSize, 224);
    assert.equal(loaded.config.embedDim, VIT_SIZES.vit_tiny.embedDim);
    const runner = BackboneRunner.create(loaded, { threads: 1 });
    try {
      for (const [i, [b, h, w]] of SIZES.entries()) {
        const out = await runner.run(inputs[`images.${i}`].data as Float32Array, b, h, w);
        const expect = (name: string) =>
          torchOutputs.get(`${key}.${name}.${i}`)!.data as Float32Array;
        assertCloseToScale(out.tokens, expect("tokens"), `${path} ${key} tokens ${h}×${w}`);
        if (key === "teacher") {
          assertCloseToScale(out.attention!, expect("attention"), `${path} attention ${h}×${w}`);
        }
      }
    } finally {
      await runner.close();
    }
  }
}

Deno.test({
  name: "an official checkpoint written by PyTorch gives PyTorch's forward here (1e-5)",
  ignore: !HAS_TORCH,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const pth = join(dir, "checkpoint.pth");
      const [input, output] = [join(dir, "in.safetensors"), join(dir, "out.safetensors")];
      const inputs = images(new Rng(1));
      await saveSafetensors(input, inputs);
      await runTorchScript("ibot_torch.py", [
        "checkpoint-write",
        "vit_tiny",
        "16",
        pth,
        input,
        output,
      ]);
      const loaded = await loadBackbone(pth);
      assert.equal(loaded.epoch, 7);
      assert.equal(loaded.args?.arch, "vit_tiny");
      assert.deepEqual([...loaded.head.keys()].slice(0, 2), ["mlp.0.weight", "mlp.0.bias"]);
      await assertSameForward(pth, inputs, (await loadSafetensors(output)).tensors);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** A training store of vit_tiny/16 student (separate head) and teacher (shared head). */
function trainingStore(head: HeadConfig): StateStore {
  const g = new Graph();
  const config = { ...VIT_SIZES.vit_tiny, patchSize: 16, imgSize: 224 };
  const images = g.input("images", "float32", [1, 3, 16, 16]);
  for (const [net, shared] of [["student", false], ["teacher", true]] as const) {
    g.scope(net, () => {
      const { tokens } = vit(g, { ...config, maskedImModeling: net === "student" }, { images });
      const cfg = { ...head, sharedHead: shared };
      const bottleneck = headBottleneck(g, cfg, tokens);
      clsLastLayer(g, cfg, bottleneck);
      patchLastLayer(g, cfg, bottleneck);
    });
  }
  const store = StateStore.fromParams(g.params, 5);
  const rng = new Rng(9);
  for (const name of store.names()) {
    store.get(name).forEach((v, i, a) => (a[i] = v + 0.05 * rng.normal()));
  }
  for (const name of store.names().filter((n) => n.startsWith("student."))) {
    for (const moment of ["exp_avg", "exp_avg_sq"]) {
      const values = Float32Array.from(store.get(name), () => Math.abs(rng.normal()));
      store.set(`${moment}.${name}`, values, store.shape(name));
    }
  }
  store.set("ibot_loss.center", Float32Array.from({ length: 64 }, () => rng.normal()), [1, 64]);
  store.set("ibot_loss.center2", Float32Array.from({ length: 64 }, () => rng.normal()), [1, 1, 64]);
  return store;
}

/**
 * PyTorch's AdamW, loaded from the exported optimizer state, holds our moments for every student
 * parameter (the last layer counts its own steps) in the official two groups.
 */
function assertOptimizerState(store: StateStore, torchOutputs: Map<string, NamedTensor>): void {
  const params = store.names().filter((n) => n.startsWith("student.") && !n.endsWith(".weight_g"));
  const withDecay = params.filter((n) => !n.endsWith(".bias") && store.shape(n).length > 1);
  const groups = Array.from(torchOutputs.get("optimizer.groups")!.data as Float64Array);
  assert.deepEqual(groups, [withDecay.length, 0.04, params.length - withDecay.length, 0]);
  for (const name of params) {
    const torchName = name.replace(/^student\./, "");
    const steps = name.includes(".last_layer") ? 5 : 20;
    const step = torchOutputs.get(`optimizer.step.${torchName}`)!.data as Float32Array;
    assert.deepEqual(Array.from(step), [steps], name);
    for (const moment of ["exp_avg", "exp_avg_sq"]) {
      const got = torchOutputs.get(`optimizer.${moment}.${torchName}`)!.data;
      assert.deepEqual(Array.from(got as Float32Array), Array.from(store.get(`${moment}.${name}`)));
    }
  }
}

Deno.test({
  name:
    "a checkpoint exported here loads strictly in PyTorch with our forward (1e-5) and AdamW state",
  ignore: !HAS_TORCH,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const ours = join(dir, "checkpoint.safetensors");
      const pth = join(dir, "checkpoint.pth");
      const { args } = parsePretrainArgs([
        "--arch=vit_tiny",
        "--patch_size=16",
        "--out_dim=64",
        "--patch_out_dim=64",
        "--shared_head=false",
        "--shared_head_teacher=true",
        "--head_hidden_dim=64",
        "--head_bottleneck_dim=32",
      ]);
      const store = trainingStore({
        outDim: 64,
        patchOutDim: 64,
        sharedHead: false,
        hiddenDim: 64,
        bottleneckDim: 32,
      });
      await saveTrainingCheckpoint(ours, store, {
        epoch: 2,
        iteration: 0,
        step: 20,
        lastLayerStep: 5,
      }, args);
      const exported = await runDenoTask("export_pth", [ours, pth]);
      assert.equal(exported.code, 0, exported.stderr);
      const [input, output] = [join(dir, "in.safetensors"), join(dir, "out.safetensors")];
      const inputs = images(new Rng(2));
      await saveSafetensors(input, inputs);
      await runTorchScript("ibot_torch.py", ["checkpoint-read", pth, input, output]);
      const torchOutputs = (await loadSafetensors(output)).tensors;
      await assertSameForward(ours, inputs, torchOutputs);
      await assertSameForward(pth, inputs, torchOutputs);
      assertOptimizerState(store, torchOutputs);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

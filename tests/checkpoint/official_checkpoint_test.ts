import { join } from "node:path";
import { assert } from "../assert.ts";
import { runDenoTask } from "../task_runner.ts";
import { runPython, torchAvailable } from "../reference/torch.ts";
import {
  extractBackbone,
  networkStateDict,
  toOfficialCheckpoint,
} from "../../lib/checkpoint/official_checkpoint.ts";
import { checkBackboneKeys, loadBackboneWeights } from "../../lib/checkpoint/weights_file.ts";
import { PyDict, writePth } from "../../lib/checkpoint/pth.ts";
import { saveSafetensors } from "../../lib/checkpoint/safetensors.ts";
import type { NamedTensor } from "../../lib/runtime/named_tensor.ts";
import { StateStore } from "../../lib/runtime/store.ts";
import { parsePretrainArgs } from "../../lib/train/args.ts";
import {
  loadTrainingCheckpoint,
  saveTrainingCheckpoint,
} from "../../lib/checkpoint/training_checkpoint.ts";

const HAS_TORCH = torchAvailable();

/** Official backbone keys of a one-block ViT with D = 4, patch 2, 2×2 patches (§8.2). */
const BLOCK_KEYS = [
  "norm1.weight",
  "norm1.bias",
  "attn.qkv.weight",
  "attn.qkv.bias",
  "attn.proj.weight",
  "attn.proj.bias",
  "norm2.weight",
  "norm2.bias",
  "mlp.fc1.weight",
  "mlp.fc1.bias",
  "mlp.fc2.weight",
  "mlp.fc2.bias",
];
const D = 4;
const SHAPES: [string, number[]][] = [
  ["cls_token", [1, 1, D]],
  ["pos_embed", [1, 5, D]],
  ["patch_embed.proj.weight", [D, 3, 2, 2]],
  ["patch_embed.proj.bias", [D]],
  ...BLOCK_KEYS.map((k): [string, number[]] => [
    `blocks.0.${k}`,
    k.startsWith("attn.qkv")
      ? (k.endsWith("weight") ? [3 * D, D] : [3 * D])
      : k.startsWith("mlp.fc1")
      ? (k.endsWith("weight") ? [4 * D, D] : [4 * D])
      : k === "mlp.fc2.weight"
      ? [D, 4 * D]
      : k === "attn.proj.weight"
      ? [D, D]
      : [D],
  ]),
  ["norm.weight", [D]],
  ["norm.bias", [D]],
];
const BACKBONE_NAMES = SHAPES.map(([n]) => n);
const HEAD: [string, number[]][] = [
  ["head.mlp.0.weight", [3, D]],
  ["head.mlp.0.bias", [3]],
  ["head.last_layer.weight_g", [8, 1]],
  ["head.last_layer.weight_v", [8, 3]],
];

/** A training checkpoint of a tiny ViT whose heads are shared (no last_layer2 tensors). */
async function tinyCheckpoint(path: string): Promise<StateStore> {
  const store = new StateStore();
  let next = 0;
  const fill = (name: string, shape: number[]) => {
    const n = shape.reduce((a, b) => a * b, 1);
    store.set(name, Float32Array.from({ length: n }, () => (next++ * 0.37) % 5 - 2.5), shape);
  };
  for (const net of ["student", "teacher"]) {
    fill(`${net}.backbone.cls_token`, [1, 1, D]);
    fill(`${net}.backbone.pos_embed`, [1, 5, D]);
    if (net === "student") fill(`${net}.backbone.masked_embed`, [1, D]);
    for (const [name, shape] of SHAPES.slice(2)) fill(`${net}.backbone.${name}`, shape);
    for (const [name, shape] of HEAD) fill(`${net}.${name}`, shape);
  }
  for (const name of store.names().filter((n) => n.startsWith("student."))) {
    fill(`exp_avg.${name}`, store.shape(name) as number[]);
    fill(`exp_avg_sq.${name}`, store.shape(name) as number[]);
  }
  fill("ibot_loss.center", [1, 8]);
  fill("ibot_loss.center2", [1, 1, 8]);
  const { args } = parsePretrainArgs(["--arch", "vit_tiny", "--lr", "0.0005"]);
  await saveTrainingCheckpoint(
    path,
    store,
    { epoch: 3, iteration: 0, step: 30, lastLayerStep: 30 },
    args,
  );
  return store;
}

async function withDir(f: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir();
  try {
    await f(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function python(code: string, args: string[]): Promise<unknown> {
  return JSON.parse(await runPython(code, args));
}

const values = (t: NamedTensor) => Array.from(t.data as Float32Array);

Deno.test("networkStateDict adds the last_layer2 alias only for a shared head", () => {
  const store = new StateStore();
  store.set("teacher.head.last_layer.weight_g", new Float32Array(2), [2, 1]);
  store.set("teacher.head.last_layer.weight_v", new Float32Array(4), [2, 2]);
  store.set("student.head.last_layer.weight_g", new Float32Array(2), [2, 1]);
  store.set("student.head.last_layer.weight_v", new Float32Array(4), [2, 2]);
  store.set("student.head.last_layer2.weight_g", new Float32Array(3), [3, 1]);
  store.set("student.head.last_layer2.weight_v", new Float32Array(6), [3, 2]);
  const teacher = networkStateDict(store, "teacher");
  assert.deepEqual([...teacher.keys()], [
    "head.last_layer.weight_g",
    "head.last_layer.weight_v",
    "head.last_layer2.weight_g",
    "head.last_layer2.weight_v",
  ]);
  assert(
    teacher.get("head.last_layer2.weight_v")!.data ===
      store.get("teacher.head.last_layer.weight_v"),
  );
  const student = networkStateDict(store, "student");
  assert.deepEqual(student.get("head.last_layer2.weight_g")!.shape, [3, 1]);
});

Deno.test("checkBackboneKeys names missing and unexpected keys in one sentence", () => {
  const weights = new Map<string, NamedTensor>(
    ["cls_token", "blocks.0.norm1.bias", "fc_norm.weight", "masked_embed"].map((n) => [
      n,
      { dtype: "float32", shape: [1], data: new Float32Array(1) },
    ]),
  );
  assert.throws(
    () => checkBackboneKeys(weights, ["cls_token", "blocks.0.norm1.weight", "blocks.0.norm1.bias"]),
    Error,
    "the weights do not fit the backbone: missing blocks.0.norm1.weight; unexpected fc_norm.weight",
  );
  checkBackboneKeys(new Map([...weights].slice(0, 2)), ["cls_token", "blocks.0.norm1.bias"]);
});

Deno.test({
  name: "export_pth and extract_backbone files load in torch and read back identically",
  ignore: !HAS_TORCH,
  async fn() {
    await withDir(async (dir) => {
      const ckptPath = join(dir, "checkpoint.safetensors");
      const store = await tinyCheckpoint(ckptPath);
      const full = join(dir, "checkpoint.pth");
      let r = await runDenoTask("export_pth", [ckptPath, full]);
      assert.equal(r.code, 0, r.stderr);

      const summary = await python(
        `
import sys, json, argparse, torch
c = torch.load(sys.argv[1], map_location='cpu')
flat = lambda d: {k: v.flatten().tolist() for k, v in d.items()}
print(json.dumps({
  'root': list(c.keys()),
  'student': flat(c['student']), 'teacher': flat(c['teacher']),
  'student_keys': list(c['student'].keys()), 'teacher_keys': list(c['teacher'].keys()),
  'ordered': type(c['student']).__name__,
  'epoch': c['epoch'], 'ns': isinstance(c['args'], argparse.Namespace),
  'arch': c['args'].arch, 'lr': c['args'].lr,
  'center': list(c['ibot_loss']['center'].shape), 'center2': list(c['ibot_loss']['center2'].shape),
  'center_v': c['ibot_loss']['center'].flatten().tolist(),
  'center2_v': c['ibot_loss']['center2'].flatten().tolist(),
}))`,
        [full],
      ) as Record<string, unknown>;
      assert.deepEqual(summary.root, [
        "student",
        "teacher",
        "optimizer",
        "epoch",
        "args",
        "ibot_loss",
      ]);
      assert.equal(summary.ordered, "OrderedDict");
      assert.equal(summary.epoch, 3);
      assert.equal(summary.ns, true);
      assert.equal(summary.arch, "vit_tiny");
      assert.equal(summary.lr, 0.0005);
      assert.deepEqual(summary.center, [1, 8]);
      assert.deepEqual(summary.center2, [1, 1, 8]);
      assert.deepEqual(summary.center_v, Array.from(store.get("ibot_loss.center")));
      assert.deepEqual(summary.center2_v, Array.from(store.get("ibot_loss.center2")));
      const alias = ["head.last_layer2.weight_g", "head.last_layer2.weight_v"];
      const official = (net: string, extra: string[]) =>
        [
          "backbone.cls_token",
          "backbone.pos_embed",
          ...extra,
          ...SHAPES.slice(2).map(([n]) => `backbone.${n}`),
          ...HEAD.map(([n]) => n),
          ...alias,
        ].map((n) => (net === "student" ? `module.${n}` : n));
      assert.deepEqual(
        summary.student_keys,
        official("student", ["backbone.masked_embed"]),
      );
      assert.deepEqual(summary.teacher_keys, official("teacher", []));
      for (const net of ["student", "teacher"]) {
        const got = summary[net] as Record<string, number[]>;
        for (const [key, v] of Object.entries(got)) {
          const name = key.replace(/^module\./, "").replace("last_layer2", "last_layer");
          assert.deepEqual(v, Array.from(store.get(`${net}.${name}`)), `${net} ${key}`);
        }
      }

      // extract_backbone, from our checkpoint and from the exported .pth, both formats.
      const fromOurs = join(dir, "teacher_backbone.pth");
      const fromPth = join(dir, "student_backbone.pth");
      const asSafetensors = join(dir, "teacher_backbone.safetensors");
      r = await runDenoTask("extract_backbone", [ckptPath, fromOurs]);
      assert.equal(r.code, 0, r.stderr);
      r = await runDenoTask("extract_backbone", [full, fromPth, "--checkpoint_key", "student"]);
      assert.equal(r.code, 0, r.stderr);
      r = await runDenoTask("extract_backbone", [
        ckptPath,
        asSafetensors,
        "--format",
        "safetensors",
      ]);
      assert.equal(r.code, 0, r.stderr);
      const extracted = await python(
        `
import sys, json, torch
c = torch.load(sys.argv[1], map_location='cpu')
print(json.dumps({'root': list(c.keys()), 'keys': list(c['state_dict'].keys()),
  'values': {k: v.flatten().tolist() for k, v in c['state_dict'].items()}}))`,
        [fromOurs],
      ) as { root: string[]; keys: string[]; values: Record<string, number[]> };
      assert.deepEqual(extracted.root, ["state_dict"]);
      assert.deepEqual(extracted.keys, BACKBONE_NAMES);
      for (const [k, v] of Object.entries(extracted.values)) {
        assert.deepEqual(v, Array.from(store.get(`teacher.backbone.${k}`)));
      }

      // loadBackboneWeights reads every format back to the same values.
      const expectTeacher = new Map(
        BACKBONE_NAMES.map((n) => [n, Array.from(store.get(`teacher.backbone.${n}`))]),
      );
      const sources: [string, string][] = [
        [ckptPath, "teacher"],
        [full, "teacher"],
        [fromOurs, "state_dict"],
        [asSafetensors, "teacher"],
      ];
      for (const [path, key] of sources) {
        const w = await loadBackboneWeights(path, key);
        assert.deepEqual([...w.keys()], BACKBONE_NAMES, path);
        for (const [n, t] of w) assert.deepEqual(values(t), expectTeacher.get(n), `${path} ${n}`);
        checkBackboneKeys(w, BACKBONE_NAMES);
      }
      const student = await loadBackboneWeights(fromPth, "state_dict");
      assert.deepEqual([...student.keys()], [
        "cls_token",
        "pos_embed",
        "masked_embed",
        ...BACKBONE_NAMES.slice(2),
      ]);
      for (const [n, t] of student) {
        assert.deepEqual(values(t), Array.from(store.get(`student.backbone.${n}`)));
      }
      checkBackboneKeys(student, BACKBONE_NAMES);
      const fromFullStudent = await loadBackboneWeights(full, "student");
      assert.deepEqual([...fromFullStudent.keys()], [...student.keys()]);

      // A flat extracted dict (the fine-tuning script's layout) reads the same.
      const flatPath = join(dir, "flat.pth");
      const sd = (await loadBackboneWeights(ckptPath)) as Map<string, NamedTensor>;
      await writePth(flatPath, new PyDict([...sd], true));
      assert.deepEqual([...(await loadBackboneWeights(flatPath)).keys()], BACKBONE_NAMES);

      // An extracted file holds one network: teacher or student finds its state_dict. A full
      // checkpoint asked for state_dict is one clear sentence (gotcha 19), in the library and the task.
      assert.deepEqual(
        [...(await loadBackboneWeights(fromOurs, "teacher")).keys()],
        BACKBONE_NAMES,
      );
      await assert.rejects(
        () => loadBackboneWeights(full, "state_dict"),
        Error,
        `${full} has no "state_dict" entry; it holds student, teacher, optimizer, epoch, args, ibot_loss (a full checkpoint: use teacher or student)`,
      );
      r = await runDenoTask("extract_backbone", [
        full,
        join(dir, "x.pth"),
        "--checkpoint_key",
        "x",
      ]);
      assert.equal(r.code, 1);
      assert(
        r.stderr.includes("error: --checkpoint_key must be teacher or student, got x"),
        r.stderr,
      );

      // A file missing blocks.0.norm1.weight is refused with the key named.
      const partial = join(dir, "partial.safetensors");
      await saveSafetensors(
        partial,
        new Map([...sd].filter(([n]) => n !== "blocks.0.norm1.weight")),
      );
      const w = await loadBackboneWeights(partial);
      assert.throws(
        () => checkBackboneKeys(w, BACKBONE_NAMES),
        Error,
        "the weights do not fit the backbone: missing blocks.0.norm1.weight (refusing",
      );
      // The exported checkpoint round-trips through our own reader too.
      const again = toOfficialCheckpoint(await loadTrainingCheckpoint(ckptPath));
      assert.equal(again.get("epoch"), 3);
      assert.throws(() => extractBackbone(sd, false), Error, "no backbone.* keys to extract");
    });
  },
});

import assert from "node:assert/strict";
import type { ParamSpec } from "../../lib/graph/graph.ts";
import { initialValues } from "../../lib/runtime/init.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import {
  decodeSafetensors,
  encodeSafetensors,
  loadSafetensors,
  saveSafetensors,
} from "../../lib/checkpoint/safetensors.ts";
import { StateStore } from "../../lib/runtime/store.ts";

const PARAMS: ParamSpec[] = [
  {
    name: "backbone.patch_embed.proj.weight",
    dtype: "float32",
    shape: [8, 3, 4, 4],
    init: { kind: "torchDefault", fanIn: 48 },
  },
  {
    name: "backbone.patch_embed.proj.bias",
    dtype: "float32",
    shape: [8],
    init: { kind: "torchDefault", fanIn: 48 },
  },
  {
    name: "backbone.cls_token",
    dtype: "float32",
    shape: [1, 1, 8],
    init: { kind: "truncNormal", std: 0.02, a: -2, b: 2 },
  },
  { name: "backbone.norm.weight", dtype: "float32", shape: [8], init: { kind: "ones" } },
  { name: "backbone.norm.bias", dtype: "float32", shape: [8], init: { kind: "zeros" } },
];

Deno.test("fromParams draws each parameter from a stream forked by its name", () => {
  const store = StateStore.fromParams(PARAMS, 123);
  assert.deepEqual(store.names(), PARAMS.map((p) => p.name));
  for (const p of PARAMS) {
    assert.deepEqual(store.shape(p.name), p.shape);
    assert.deepEqual(store.get(p.name), initialValues(p.init, p.shape, new Rng(123).fork(p.name)));
  }
  const bound = 1 / Math.sqrt(48);
  assert(store.get("backbone.patch_embed.proj.weight").every((v) => Math.abs(v) <= bound));
  assert.deepEqual(store.get("backbone.norm.weight"), new Float32Array(8).fill(1));
});

Deno.test("fromParams values do not depend on the other parameters or their order", () => {
  const full = StateStore.fromParams(PARAMS, 7);
  const extra: ParamSpec = {
    name: "backbone.pos_embed",
    dtype: "float32",
    shape: [1, 5, 8],
    init: { kind: "normal", std: 0.02 },
  };
  const changed = StateStore.fromParams([extra, ...PARAMS.slice(2), PARAMS[0]], 7);
  for (const name of changed.names().filter((n) => n !== extra.name)) {
    assert.deepEqual(changed.get(name), full.get(name), name);
  }
  assert.notDeepEqual(
    StateStore.fromParams(PARAMS, 8).get("backbone.cls_token"),
    full.get("backbone.cls_token"),
  );
});

Deno.test("fromParams rejects non-float32 and duplicate parameters", () => {
  assert.throws(
    () => StateStore.fromParams([{ ...PARAMS[0], dtype: "float64" }], 0),
    /parameter backbone.patch_embed.proj.weight is float64; the state store holds float32 only/,
  );
  assert.throws(
    () => StateStore.fromParams([PARAMS[3], PARAMS[3]], 0),
    /parameter backbone.norm.weight is declared twice/,
  );
});

Deno.test("get on an unknown name lists the closest names", () => {
  const store = StateStore.fromParams(PARAMS, 0);
  assert.throws(() => store.get("backbone.norm.weigth"), {
    message:
      "the state store has no tensor named backbone.norm.weigth; closest: backbone.norm.weight, backbone.norm.bias, backbone.cls_token",
  });
  assert.throws(() => store.shape("x"), /no tensor named x; closest: /);
  assert.throws(() => new StateStore().get("x"), {
    message: "the state store has no tensor named x; the store is empty",
  });
});

Deno.test("set checks the length, stores by reference and replaces", () => {
  const store = new StateStore();
  const data = new Float32Array([1, 2, 3, 4, 5, 6]);
  store.set("center", data, [2, 3]);
  assert(store.has("center"));
  assert.equal(store.get("center"), data);
  assert.deepEqual(store.shape("center"), [2, 3]);
  assert.throws(
    () => store.set("center", new Float32Array(5), [2, 3]),
    /cannot set center: shape \[2,3\] needs 6 values, got 5/,
  );
  store.set("center", new Float32Array(6), [6]);
  assert.deepEqual(store.shape("center"), [6]);
  assert(!store.has("missing"));
});

Deno.test("zerosLike creates prefixed zero buffers with the same shapes", () => {
  const store = StateStore.fromParams(PARAMS, 0);
  const names = ["backbone.cls_token", "backbone.patch_embed.proj.weight"];
  const created = store.zerosLike("exp_avg", names);
  assert.deepEqual(created, [
    "exp_avg.backbone.cls_token",
    "exp_avg.backbone.patch_embed.proj.weight",
  ]);
  assert.deepEqual(store.shape("exp_avg.backbone.cls_token"), [1, 1, 8]);
  assert.deepEqual(store.get("exp_avg.backbone.patch_embed.proj.weight"), new Float32Array(384));
  store.get("exp_avg.backbone.cls_token").fill(3);
  store.zerosLike("exp_avg", ["backbone.cls_token"]);
  assert.deepEqual(store.get("exp_avg.backbone.cls_token"), new Float32Array(8));
  assert.throws(() => store.zerosLike("exp_avg", ["nope"]), /no tensor named nope/);
});

Deno.test("toNamedTensors / fromNamedTensors round trip through safetensors bytes", () => {
  const store = StateStore.fromParams(PARAMS, 5);
  const bytes = encodeSafetensors(store.toNamedTensors());
  const back = StateStore.fromNamedTensors(decodeSafetensors(bytes).tensors);
  assert.deepEqual(back.names(), store.names());
  for (const name of store.names()) {
    assert.deepEqual(back.get(name), store.get(name));
    assert.deepEqual(back.shape(name), store.shape(name));
  }
  assert.throws(
    () =>
      StateStore.fromNamedTensors(
        new Map([["step", { dtype: "int64", shape: [], data: new BigInt64Array(1) }]]),
      ),
    /tensor step is int64; the state store holds float32 only/,
  );
});

Deno.test("a store saved to a safetensors file with metadata reads back", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/state.safetensors`;
    const store = StateStore.fromParams(PARAMS, 11);
    store.zerosLike("exp_avg", store.names());
    await saveSafetensors(path, store.toNamedTensors(), { step: "42" });
    const loaded = StateStore.fromNamedTensors((await loadSafetensors(path)).tensors);
    assert.deepEqual(loaded.names(), store.names());
    for (const name of store.names()) assert.deepEqual(loaded.get(name), store.get(name));
    assert.deepEqual(decodeSafetensors(await Deno.readFile(path)).metadata, { step: "42" });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("copyFrom copies values into existing buffers and checks shapes", () => {
  const student = StateStore.fromParams(PARAMS, 1);
  const teacher = StateStore.fromParams(PARAMS, 2);
  const buffer = teacher.get("backbone.cls_token");
  teacher.copyFrom(student);
  assert.equal(teacher.get("backbone.cls_token"), buffer);
  for (const name of student.names()) assert.deepEqual(teacher.get(name), student.get(name));
  student.get("backbone.cls_token").fill(9);
  assert.notDeepEqual(teacher.get("backbone.cls_token"), student.get("backbone.cls_token"));

  const partial = StateStore.fromParams(PARAMS, 3);
  partial.copyFrom(student, ["backbone.cls_token"]);
  assert.deepEqual(partial.get("backbone.cls_token"), new Float32Array(8).fill(9));
  assert.deepEqual(
    partial.get("backbone.patch_embed.proj.bias"),
    StateStore.fromParams(PARAMS, 3).get("backbone.patch_embed.proj.bias"),
  );

  const other = new StateStore();
  other.set("backbone.cls_token", new Float32Array(8), [8]);
  assert.throws(
    () => partial.copyFrom(other, ["backbone.cls_token"]),
    /cannot copy backbone.cls_token: shape \[8\] does not match \[1,1,8\]/,
  );
  assert.throws(() => partial.copyFrom(other), /no tensor named backbone.patch_embed.proj.weight/);
});

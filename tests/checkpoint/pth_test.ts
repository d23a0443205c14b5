import { join } from "node:path";
import { assert } from "../assert.ts";
import { runPython, torchAvailable } from "../reference/torch.ts";
import { pickle } from "../../lib/checkpoint/pickle.ts";
import {
  decodePth,
  encodePth,
  isTensor,
  type PthValue,
  PyDict,
  PyNamespace,
  PyTuple,
  readPth,
  stateDictFromPth,
  writePth,
} from "../../lib/checkpoint/pth.ts";
import type { NamedTensor } from "../../lib/runtime/named_tensor.ts";

const HAS_TORCH = torchAvailable();

async function withDir(f: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir();
  try {
    await f(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const f32 = (shape: number[], values: number[]): NamedTensor => ({
  dtype: "float32",
  shape,
  data: new Float32Array(values),
});

Deno.test({
  name: "readPth reads an official-layout checkpoint written by torch.save, exactly",
  ignore: !HAS_TORCH,
  fn: () =>
    withDir(async (dir) => {
      const path = join(dir, "checkpoint.pth");
      await runPython(
        `
import sys, torch, argparse, collections
cls = torch.tensor([[[0.1, -2.5, 3.25]]], dtype=torch.float32)
w = torch.arange(6, dtype=torch.float32).reshape(2, 3) / 7
student = collections.OrderedDict([('module.backbone.cls_token', cls), ('module.head.w', w)])
teacher = collections.OrderedDict([('backbone.cls_token', cls * 2), ('head.w', w[1:])])
torch.save({'student': student, 'teacher': teacher, 'epoch': 3,
            'args': argparse.Namespace(lr=0.1, arch='vit_small', out_dim=8192, drop=None),
            'ibot_loss': {'center': torch.tensor([[1e-8, -3.0, 7.5]])},
            'misc': [torch.tensor([1, -2**40]), torch.tensor([True, False]),
                     torch.tensor([1.5], dtype=torch.float16), torch.tensor(2.0, dtype=torch.float64),
                     (1, 2.5, 'x'), 2**70]}, sys.argv[1])
`,
        [path],
      );
      const value = await readPth(path);
      assert(value instanceof PyDict);
      assert.equal(value.get("epoch"), 3);
      const args = value.get("args");
      assert(args instanceof PyNamespace);
      assert.equal(args.attrs.get("lr"), 0.1);
      assert.equal(args.attrs.get("arch"), "vit_small");
      assert.equal(args.attrs.get("out_dim"), 8192);
      assert.equal(args.attrs.get("drop"), null);

      const student = stateDictFromPth(value, "student");
      assert.deepEqual([...student.keys()], ["module.backbone.cls_token", "module.head.w"]);
      const cls = student.get("module.backbone.cls_token")!;
      assert.deepEqual(cls.shape, [1, 1, 3]);
      assert.deepEqual([...cls.data], [...new Float32Array([0.1, -2.5, 3.25])]);
      const w = new Float32Array([0, 1, 2, 3, 4, 5].map((x) => x / 7));
      assert.deepEqual([...student.get("module.head.w")!.data], [...w]);
      const teacher = stateDictFromPth(value, "teacher");
      // A view into a shared storage (offset 3) comes back as its own rows.
      assert.deepEqual(teacher.get("head.w")!.shape, [1, 3]);
      assert.deepEqual([...teacher.get("head.w")!.data], [...w.slice(3)]);
      assert.deepEqual([...teacher.get("backbone.cls_token")!.data], [
        ...new Float32Array([0.2, -5, 6.5]),
      ]);
      assert.throws(() => stateDictFromPth(value), /choose its "teacher" or "student"/);
      assert.throws(() => stateDictFromPth(value, "state_dict"), /no "state_dict" entry/);

      const center = (value.get("ibot_loss") as PyDict).get("center") as NamedTensor;
      assert.deepEqual(center.shape, [1, 3]);
      assert.deepEqual([...center.data], [...new Float32Array([1e-8, -3, 7.5])]);
      const misc = value.get("misc") as unknown[];
      const [long, bool, half, double, tuple, big] = misc as [
        NamedTensor,
        NamedTensor,
        NamedTensor,
        NamedTensor,
        PyTuple,
        bigint,
      ];
      assert.equal(long.dtype, "int64");
      assert.deepEqual([...long.data], [1n, -(2n ** 40n)]);
      assert.equal(bool.dtype, "bool");
      assert.deepEqual([...bool.data], [1, 0]);
      assert.equal(half.dtype, "float16");
      assert.deepEqual([...half.data], [0x3e00]);
      assert.equal(double.dtype, "float64");
      assert.deepEqual(double.shape, []);
      assert.deepEqual([...double.data], [2]);
      assert.deepEqual(tuple.items, [1, 2.5, "x"]);
      assert.equal(big, 2n ** 70n);
    }),
});

Deno.test({
  name: "writePth writes a checkpoint torch.load reads with the same values",
  ignore: !HAS_TORCH,
  fn: () =>
    withDir(async (dir) => {
      const path = join(dir, "ours.pth");
      const shared = f32([2, 2], [1, -2, 3.5, 1e-7]);
      const value = new PyDict([
        [
          "student",
          new PyDict([
            ["module.backbone.cls_token", f32([1, 1, 3], [0.1, 0.2, -0.3])],
            ["module.head.last_layer2", shared],
          ], true),
        ],
        [
          "teacher",
          new PyDict([["backbone.cls_token", f32([1, 1, 3], [4, 5, 6])], ["head.x", shared]], true),
        ],
        ["epoch", 3],
        ["args", new PyNamespace(new Map<string, PthValue>([["lr", 0.1], ["arch", "vit_small"]]))],
        ["ibot_loss", new PyDict([["center", f32([1, 2], [0.5, -0.25])]])],
        ["steps", { dtype: "int64", shape: [2], data: new BigInt64Array([7n, -(2n ** 62n)]) }],
        ["mask", { dtype: "bool", shape: [3], data: new Uint8Array([1, 0, 1]) }],
        ["misc", [new PyTuple([1, 2.5, "é"]), null, true, -(2 ** 40), 2n ** 70n, -0.5]],
      ]);
      await writePth(path, value);
      const out = await runPython(
        `
import sys, torch, argparse, collections
c = torch.load(sys.argv[1])
assert isinstance(c['student'], collections.OrderedDict)
assert list(c['student']) == ['module.backbone.cls_token', 'module.head.last_layer2']
assert torch.equal(c['student']['module.backbone.cls_token'], torch.tensor([[[0.1, 0.2, -0.3]]]))
assert torch.equal(c['teacher']['head.x'], torch.tensor([[1, -2], [3.5, 1e-7]]))
assert c['teacher']['head.x'].data_ptr() == c['student']['module.head.last_layer2'].data_ptr()
assert c['epoch'] == 3 and isinstance(c['args'], argparse.Namespace)
assert c['args'].lr == 0.1 and c['args'].arch == 'vit_small'
assert torch.equal(c['ibot_loss']['center'], torch.tensor([[0.5, -0.25]]))
assert c['steps'].dtype == torch.int64 and c['steps'].tolist() == [7, -2**62]
assert c['mask'].dtype == torch.bool and c['mask'].tolist() == [True, False, True]
assert c['misc'] == [(1, 2.5, 'é'), None, True, -2**40, 2**70, -0.5], c['misc']
m = torch.nn.Linear(2, 2)
m.load_state_dict({'weight': c['teacher']['head.x'], 'bias': torch.zeros(2)})
print('ok')
`,
        [path],
      );
      assert.equal(out.trim(), "ok");
      // And it reads back here.
      const back = await readPth(path);
      assert.deepEqual(
        [...stateDictFromPth(back, "teacher").get("head.x")!.data],
        [...shared.data],
      );
    }),
});

Deno.test("encodePth and decodePth round-trip without torch; state_dict and flat files", async () => {
  const t = f32([2], [1, 2]);
  const wrapped = await decodePth(encodePth(new PyDict([["state_dict", new PyDict([["a", t]])]])));
  assert.deepEqual([...stateDictFromPth(wrapped).get("a")!.data], [1, 2]);
  const flat = await decodePth(encodePth(new PyDict([["a", t], ["b", t]], true)));
  assert.deepEqual([...stateDictFromPth(flat).keys()], ["a", "b"]);
  assert.throws(
    () => stateDictFromPth(new PyDict([["a", t], ["epoch", 1]])),
    /"epoch" is not a tensor/,
  );
});

/** A zip checkpoint whose data.pkl is `pkl`, built by swapping the pickle of one we write. */
function checkpointWithPickle(pkl: Uint8Array): Uint8Array {
  // A hand-made stored zip of one entry (CRCs are not checked on load).
  const name = new TextEncoder().encode("archive/data.pkl");
  const local = new Uint8Array(30 + name.length);
  const lv = new DataView(local.buffer);
  lv.setUint32(0, 0x04034b50, true);
  lv.setUint32(18, pkl.length, true);
  lv.setUint32(22, pkl.length, true);
  lv.setUint16(26, name.length, true);
  local.set(name, 30);
  const cd = new Uint8Array(46 + name.length);
  const cv = new DataView(cd.buffer);
  cv.setUint32(0, 0x02014b50, true);
  cv.setUint32(20, pkl.length, true);
  cv.setUint32(24, pkl.length, true);
  cv.setUint16(28, name.length, true);
  cd.set(name, 46);
  const end = new Uint8Array(22);
  const ev = new DataView(end.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, 1, true);
  ev.setUint16(10, 1, true);
  ev.setUint32(12, cd.length, true);
  ev.setUint32(16, local.length + pkl.length, true);
  return new Uint8Array([...local, ...pkl, ...cd, ...end]);
}

Deno.test("a pickle that references os.system is refused and nothing runs", async () => {
  await withDir(async (dir) => {
    const marker = join(dir, "pwned");
    // What pickle.dumps(Evil(), protocol=2) gives for a class whose __reduce__ returns
    // (os.system, ("touch <marker>",)): GLOBAL 'posix system', the command, TUPLE1, REDUCE.
    const enc = new TextEncoder();
    const cmd = enc.encode(`touch ${marker}`);
    const pkl = new Uint8Array([
      0x80,
      0x02,
      ...enc.encode("cposix\nsystem\n"),
      0x58,
      cmd.length,
      0,
      0,
      0,
      ...cmd,
      0x85,
      0x52,
      0x2e,
    ]);
    const path = join(dir, "evil.pth");
    await Deno.writeFile(path, checkpointWithPickle(pkl));
    await assert.rejects(
      readPth(path),
      (e: Error) =>
        e.message ===
          `refusing to load ${path}: it references posix.system, which a checkpoint does not need`,
    );
    const pkl2 = new Uint8Array([0x80, 0x02, ...enc.encode("cos\nsystem\n"), 0x2e]);
    await assert.rejects(
      decodePth(checkpointWithPickle(pkl2), "x.pth"),
      /refusing to load x\.pth: it references os\.system, which a checkpoint does not need/,
    );
    const pkl3 = new Uint8Array([0x80, 0x02, ...enc.encode("cbuiltins\neval\n"), 0x2e]);
    await assert.rejects(decodePth(checkpointWithPickle(pkl3), "y.pth"), /builtins\.eval/);
    await assert.rejects(Deno.stat(marker), Deno.errors.NotFound);
  });
});

Deno.test({
  name: "Python's own pickle of an os.system __reduce__ is refused (torch.save of it)",
  ignore: !HAS_TORCH,
  fn: () =>
    withDir(async (dir) => {
      const path = join(dir, "evil.pth");
      const marker = join(dir, "pwned");
      await runPython(
        `
import sys, os, torch
class Evil:
    def __reduce__(self):
        return (os.system, ('touch ' + sys.argv[2],))
torch.save({'student': Evil()}, sys.argv[1])
`,
        [path, marker],
      );
      await assert.rejects(
        readPth(path),
        /^Error: refusing to load \S*evil\.pth: it references (posix|os)\.system, which a checkpoint does not need$/,
      );
      await assert.rejects(Deno.stat(marker), Deno.errors.NotFound);
    }),
});

Deno.test("a truncated or corrupt checkpoint gives one sentence naming the file", async () => {
  await withDir(async (dir) => {
    const bytes = encodePth(new PyDict([["w", f32([64], new Array(64).fill(1.5))]]));
    const path = join(dir, "cut.pth");
    for (const cut of [bytes.length - 10, Math.floor(bytes.length / 2), 5, 0]) {
      await Deno.writeFile(path, bytes.subarray(0, cut));
      await assert.rejects(readPth(path), (e: Error) => {
        assert.match(e.message, /^.*cut\.pth is not a readable PyTorch zip checkpoint: [^.]*\)?$/);
        assert(!e.message.includes("\n"));
        return true;
      });
    }
    // A truncated pickle inside an intact zip.
    await assert.rejects(
      decodePth(
        checkpointWithPickle(new Uint8Array([0x80, 0x02, 0x7d, 0x58, 9, 0])),
        "p.pth",
      ),
      /^Error: cannot load p\.pth: the pickle ends early \(the file is truncated or corrupt\)$/,
    );
  });
});

Deno.test({
  name: "deflated zip entries are read; a non-contiguous tensor is refused in one sentence",
  ignore: !HAS_TORCH,
  fn: () =>
    withDir(async (dir) => {
      const [plain, deflated, strided] = ["a.pth", "b.pth", "c.pth"].map((f) => join(dir, f));
      await runPython(
        `
import sys, torch, zipfile
torch.save({'w': torch.arange(12, dtype=torch.float32).reshape(3, 4)}, sys.argv[1])
with zipfile.ZipFile(sys.argv[1]) as src, zipfile.ZipFile(sys.argv[2], 'w', zipfile.ZIP_DEFLATED) as dst:
    for info in src.infolist():
        dst.writestr(info.filename, src.read(info.filename))
torch.save({'w': torch.arange(12, dtype=torch.float32).reshape(3, 4).t()}, sys.argv[3])
`,
        [plain, deflated, strided],
      );
      const w = stateDictFromPth(await readPth(deflated)).get("w")!;
      assert.deepEqual(w.shape, [3, 4]);
      assert.deepEqual([...w.data], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
      await assert.rejects(
        readPth(strided),
        /^Error: \S*c\.pth holds a non-contiguous tensor \(size \[4,3\], stride \[1,4\]\), which is not supported here$/,
      );
    }),
});

// ---------------------------------------------------------------------------------------------
// The legacy format (PyTorch before 1.6, or `_use_new_zipfile_serialization=False`).

/** Each tensor of a loaded value as [path, dtype, shape, values]; int64 values as strings. */
function tensorsOf(value: unknown, path = ""): [string, string, number[], (number | string)[]][] {
  if (isTensor(value)) {
    const values = [...value.data].map((x) => typeof x === "bigint" ? String(x) : x);
    return [[path, value.dtype, value.shape, values]];
  }
  if (value instanceof Map) {
    return [...value].flatMap(([k, v]) => tensorsOf(v, `${path}/${String(k)}`));
  }
  if (value instanceof PyNamespace) return tensorsOf(value.attrs, path);
  if (value instanceof PyTuple) return tensorsOf(value.items, path);
  if (Array.isArray(value)) return value.flatMap((v, i) => tensorsOf(v, `${path}/${i}`));
  return [];
}

/** The same walk in Python, over what torch.load gives for sys.argv[1], printed as JSON. */
const PYTHON_TENSORS = `
import json
def walk(v, path=''):
    if isinstance(v, torch.Tensor):
        shape, v = list(v.shape), v.flatten()
        vals = v.tolist()
        if v.dtype == torch.int64: vals = [str(x) for x in vals]
        if v.dtype == torch.bool: vals = [int(x) for x in vals]
        if v.dtype == torch.float16: vals = [x & 0xffff for x in v.view(torch.int16).tolist()]
        return [[path, str(v.dtype)[6:], shape, vals]]
    if isinstance(v, dict): return [t for k, x in v.items() for t in walk(x, path + '/' + str(k))]
    if isinstance(v, argparse.Namespace): return walk(vars(v), path)
    if isinstance(v, (list, tuple)): return [t for i, x in enumerate(v) for t in walk(x, path + '/' + str(i))]
    return []
print(json.dumps(walk(torch.load(sys.argv[1]))))
`;

Deno.test({
  name:
    "readPth reads a legacy-format checkpoint written by torch.save with the values torch loads",
  ignore: !HAS_TORCH,
  fn: () =>
    withDir(async (dir) => {
      const path = join(dir, "legacy.pth");
      const out = await runPython(
        `
import sys, torch, argparse, collections
w = torch.arange(6, dtype=torch.float32).reshape(2, 3) / 7
cls = torch.nn.Parameter(torch.tensor([[[0.1, -2.5, 3.25]]]))
student = collections.OrderedDict([('module.backbone.cls_token', cls), ('module.head.w', w),
                                   ('module.head.w_again', w)])
head = torch.nn.Linear(3, 2)
with torch.no_grad():
    head.weight.copy_(torch.tensor([[1.0, -1e-8, 3.5], [4.0, 5.0, -6.0]]))
    head.bias.copy_(torch.tensor([0.25, -0.75]))
teacher = head.state_dict()
teacher['head.w'] = w[1:]
torch.save({'student': student, 'teacher': teacher, 'epoch': 7,
            'args': argparse.Namespace(lr=0.0005, arch='vit_small', patch_size=16, drop=None),
            'ibot_loss': {'center': torch.tensor([[1e-8, -3.0, 7.5]], dtype=torch.float64)},
            'misc': [torch.tensor([1, -2**40, 2**62]), torch.tensor([True, False]),
                     torch.tensor([1.5, -2.0], dtype=torch.float16), (1, 2.5, 'x'), 2**70]},
           sys.argv[1], _use_new_zipfile_serialization=False)
assert open(sys.argv[1], 'rb').read(2) == b'\\x80\\x02'
` + PYTHON_TENSORS,
        [path],
      );
      const value = await readPth(path);
      // Every tensor equals what torch.load gives for the same file.
      assert.deepEqual(tensorsOf(value), JSON.parse(out));
      assert(value instanceof PyDict);
      assert.equal(value.get("epoch"), 7);
      const args = value.get("args");
      assert(args instanceof PyNamespace);
      assert.deepEqual([...args.attrs], [
        ["lr", 0.0005],
        ["arch", "vit_small"],
        ["patch_size", 16],
        ["drop", null],
      ]);
      const student = stateDictFromPth(value, "student");
      assert.deepEqual([...student.keys()], [
        "module.backbone.cls_token",
        "module.head.w",
        "module.head.w_again",
      ]);
      assert.deepEqual([...student.get("module.backbone.cls_token")!.data], [
        ...new Float32Array([0.1, -2.5, 3.25]),
      ]);
      const w = new Float32Array([0, 1, 2, 3, 4, 5].map((x) => x / 7));
      // Two tensors over one shared storage, and a view at offset 3 into it.
      assert.deepEqual([...student.get("module.head.w")!.data], [...w]);
      assert.deepEqual([...student.get("module.head.w_again")!.data], [...w]);
      const teacher = stateDictFromPth(value, "teacher");
      assert.deepEqual([...teacher.keys()], ["weight", "bias", "head.w"]);
      assert.deepEqual(teacher.get("weight")!.shape, [2, 3]);
      assert.deepEqual([...teacher.get("weight")!.data], [
        ...new Float32Array([1, -1e-8, 3.5, 4, 5, -6]),
      ]);
      assert.deepEqual([...teacher.get("bias")!.data], [0.25, -0.75]);
      assert.deepEqual(teacher.get("head.w")!.shape, [1, 3]);
      assert.deepEqual([...teacher.get("head.w")!.data], [...w.slice(3)]);
      const center = (value.get("ibot_loss") as PyDict).get("center") as NamedTensor;
      assert.equal(center.dtype, "float64");
      assert.deepEqual([...center.data], [1e-8, -3, 7.5]);
      const [long, bool, half, tuple, big] = value.get("misc") as [
        NamedTensor,
        NamedTensor,
        NamedTensor,
        PyTuple,
        bigint,
      ];
      assert.equal(long.dtype, "int64");
      assert.deepEqual([...long.data], [1n, -(2n ** 40n), 2n ** 62n]);
      assert.deepEqual([...bool.data], [1, 0]);
      assert.deepEqual([...half.data], [0x3e00, 0xc000]);
      assert.deepEqual(tuple.items, [1, 2.5, "x"]);
      assert.equal(big, 2n ** 70n);
    }),
});

Deno.test({
  name: "legacy files: a storage view is read as torch reads it; strided and os.system are refused",
  ignore: !HAS_TORCH,
  fn: () =>
    withDir(async (dir) => {
      const [view, strided, evil] = ["view.pth", "strided.pth", "evil.pth"].map((f) =>
        join(dir, f)
      );
      const marker = join(dir, "pwned");
      // torch ≥ 0.4 never writes storage views, so the view file is written the way older torch
      // did: a tensor over a view (elements 2..7 of stored storage '7'), at offset 1 into it.
      const out = await runPython(
        `
import sys, os, pickle, struct, collections, torch
class View:
    def __init__(self, meta): self.meta = meta
class Tensor:
    def __init__(self, *args): self.args = args
    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args + (False, collections.OrderedDict()))
class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, View): return ('storage', torch.FloatStorage, '7', 'cpu', 10, obj.meta)
        return None
with open(sys.argv[1], 'wb') as f:
    for header in (0x1950a86a20f9469cfc6c, 1001,
                   dict(protocol_version=1001, little_endian=True,
                        type_sizes=dict(short=2, int=4, long=4))):
        pickle.dump(header, f, protocol=2)
    Pickler(f, protocol=2).dump({'v': Tensor(View(('8', 2, 6)), 1, (2, 2), (2, 1)),
                                 'w': Tensor(View(None), 0, (10,), (1,))})
    pickle.dump(['7'], f, protocol=2)
    f.write(struct.pack('<q', 10) + (torch.arange(10, dtype=torch.float32) / 4).numpy().tobytes())
print(torch.load(sys.argv[1])['v'].tolist())
torch.save({'w': torch.arange(12.0).reshape(3, 4).t()}, sys.argv[2],
           _use_new_zipfile_serialization=False)
class Evil:
    def __reduce__(self):
        return (os.system, ('touch ' + sys.argv[4],))
torch.save({'student': Evil()}, sys.argv[3], _use_new_zipfile_serialization=False)
`,
        [view, strided, evil, marker],
      );
      assert.equal(out.trim(), "[[0.75, 1.0], [1.25, 1.5]]");
      const value = await readPth(view) as PyDict;
      const v = value.get("v") as NamedTensor;
      assert.deepEqual(v.shape, [2, 2]);
      assert.deepEqual([...v.data], [0.75, 1, 1.25, 1.5]);
      assert.deepEqual([...(value.get("w") as NamedTensor).data], [
        0,
        0.25,
        0.5,
        0.75,
        1,
        1.25,
        1.5,
        1.75,
        2,
        2.25,
      ]);
      await assert.rejects(
        readPth(strided),
        /^Error: \S*strided\.pth holds a non-contiguous tensor \(size \[4,3\], stride \[1,4\]\), which is not supported here$/,
      );
      await assert.rejects(
        readPth(evil),
        /^Error: refusing to load \S*evil\.pth: it references (posix|os)\.system, which a checkpoint does not need$/,
      );
      await assert.rejects(Deno.stat(marker), Deno.errors.NotFound);
    }),
});

/**
 * A legacy-format file of `value` built with our own pickle writer (whose persistent ids have
 * torch ≥ 1.6's five items, which the legacy reader also accepts): the three header pickles, the
 * object (or `main`, raw pickle bytes, instead), the storage keys and each storage.
 */
function legacyFile(value: PthValue, littleEndian = true, main?: Uint8Array): Uint8Array {
  const keys = new Map<NamedTensor["data"], string>();
  const objectPickle = main ?? pickle(value, (tensor) => {
    if (!keys.has(tensor.data)) keys.set(tensor.data, String(keys.size));
    return keys.get(tensor.data)!;
  });
  const sysInfo = new PyDict([
    ["protocol_version", 1001],
    ["little_endian", littleEndian],
    ["type_sizes", new PyDict([["short", 2], ["int", 4], ["long", 8]])],
  ]);
  const parts = [
    pickle(0x1950a86a20f9469cfc6cn, () => ""),
    pickle(1001, () => ""),
    pickle(sysInfo, () => ""),
    objectPickle,
    pickle([...keys.values()], () => ""),
  ];
  for (const data of keys.keys()) {
    const count = new Uint8Array(8);
    new DataView(count.buffer).setBigInt64(0, BigInt(data.length), true);
    parts.push(count, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  parts.reduce((at, p) => (out.set(p, at), at + p.length), 0);
  return out;
}

Deno.test("legacy files without torch: values, shared storages, big-endian and os.system", async () => {
  const shared = f32([2, 2], [1, -2, 3.5, 1e-7]);
  const steps: NamedTensor = {
    dtype: "int64",
    shape: [2],
    data: new BigInt64Array([7n, -(2n ** 62n)]),
  };
  const value = await decodePth(
    legacyFile(
      new PyDict([
        ["student", new PyDict([["a", shared], ["b", shared], ["steps", steps]], true)],
        ["args", new PyNamespace(new Map<string, PthValue>([["lr", 0.1]]))],
      ]),
    ),
    "l.pth",
  );
  const student = stateDictFromPth(value, "student");
  assert.deepEqual([...student.keys()], ["a", "b", "steps"]);
  assert.deepEqual([...student.get("a")!.data], [...shared.data]);
  assert.deepEqual([...student.get("b")!.data], [...shared.data]);
  assert.deepEqual([...student.get("steps")!.data], [7n, -(2n ** 62n)]);
  assert.equal(((value as PyDict).get("args") as PyNamespace).attrs.get("lr"), 0.1);

  await assert.rejects(
    decodePth(legacyFile(new PyDict([["a", shared]]), false), "be.pth"),
    /^Error: be\.pth was written on a big-endian machine, which is not supported here$/,
  );
  const notMagic = legacyFile(new PyDict()).slice();
  notMagic[4] ^= 1;
  await assert.rejects(
    decodePth(notMagic, "m.pth"),
    /^Error: m\.pth is not a readable legacy PyTorch checkpoint: it does not start with PyTorch's magic number$/,
  );

  await withDir(async (dir) => {
    const marker = join(dir, "pwned");
    const enc = new TextEncoder();
    const cmd = enc.encode(`touch ${marker}`);
    const evil = new Uint8Array([
      ...[0x80, 0x02, ...enc.encode("cposix\nsystem\n"), 0x58, cmd.length, 0, 0, 0],
      ...[...cmd, 0x85, 0x52, 0x2e],
    ]);
    const path = join(dir, "evil.pth");
    await Deno.writeFile(path, legacyFile(null, true, evil));
    await assert.rejects(
      readPth(path),
      (e: Error) =>
        e.message ===
          `refusing to load ${path}: it references posix.system, which a checkpoint does not need`,
    );
    await assert.rejects(Deno.stat(marker), Deno.errors.NotFound);
  });
});

Deno.test("a truncated legacy checkpoint gives one sentence naming the file", async () => {
  const bytes = legacyFile(new PyDict([["w", f32([64], new Array(64).fill(1.5))]]));
  const objectEnd = bytes.length - 256 - 8 - pickle(["0"], () => "").length;
  await withDir(async (dir) => {
    const path = join(dir, "cut.pth");
    const messages = new Set<string>();
    for (const cut of [bytes.length - 1, bytes.length - 200, objectEnd + 3, objectEnd - 5, 20, 1]) {
      await Deno.writeFile(path, bytes.subarray(0, cut));
      await assert.rejects(readPth(path), (e: Error) => {
        assert(!e.message.includes("\n"));
        messages.add(e.message.replaceAll(path, "FILE"));
        return true;
      });
    }
    assert.deepEqual([...messages].sort(), [
      "FILE is not a readable legacy PyTorch checkpoint: storage 0 is cut off (the file is truncated)",
      "cannot load FILE: the pickle ends early (the file is truncated or corrupt)",
    ]);
  });
  // The whole file reads.
  const back = stateDictFromPth(await decodePth(bytes));
  assert.deepEqual([...back.get("w")!.data], new Array(64).fill(1.5));
});

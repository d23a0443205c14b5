/**
 * Our training checkpoint in the official layouts (reference §8; gotchas 18–19):
 *
 * - {@link toOfficialCheckpoint}: our training checkpoint (safetensors) → the official full
 *   `checkpoint.pth` layout (`student` with `module.`, `teacher` without, the shared-head
 *   `last_layer2` alias keys, `optimizer` (the student's AdamW state), `epoch`, `args`,
 *   `ibot_loss`).
 * - {@link networkStateDict}: one network's official state dict.
 * - {@link extractBackbone}: the `{'state_dict': …}` file of the root `extract_backbone_weights.py`.
 *
 * @module
 */

import type { PthValue } from "./pth.ts";
import { PyDict, PyNamespace, PyTuple } from "./pickle.ts";
import { expAvgName, expAvgSqName } from "../optim/adamw.ts";
import type { NamedTensor } from "../runtime/named_tensor.ts";
import type { StateStore } from "../runtime/store.ts";
import type { TrainingCheckpoint } from "./training_checkpoint.ts";
import { relativePositionIndex } from "../models/window_attention.ts";

/** The two networks of a checkpoint. */
export type NetworkKey = "teacher" | "student";

/** The prefix of backbone keys in a network's state dict. */
export const BACKBONE_PREFIX = "backbone.";
/** The prefix DistributedDataParallel puts on the student's keys in the official checkpoint. */
export const MODULE_PREFIX = "module.";
/** The key ending of a Swin block's relative position bias table [(2w − 1)², heads]. */
export const BIAS_TABLE_SUFFIX = ".relative_position_bias_table";
/** The key ending of the int64 buffer [w², w²] that the official Swin keeps beside each table. */
export const POSITION_INDEX_SUFFIX = ".relative_position_index";
const BACKBONE = BACKBONE_PREFIX;
const MODULE = MODULE_PREFIX;

/**
 * The window side w of a Swin relative position bias table [(2w − 1)², heads], or one sentence
 * naming `name` when its first axis is not such a square.
 */
export function biasTableWindow(name: string, table: NamedTensor): number {
  const side = Math.round(Math.sqrt(table.shape[0]));
  if (table.shape.length !== 2 || side * side !== table.shape[0] || side % 2 !== 1) {
    throw new Error(`${name} has shape [${table.shape}], not [(2w − 1)², heads] for a window w`);
  }
  return (side + 1) / 2;
}

/** The official int64 `relative_position_index` buffer [w², w²] of a w×w window. */
export function positionIndexBuffer(window: number): NamedTensor {
  const n = window * window;
  return {
    dtype: "int64",
    shape: [n, n],
    data: BigInt64Array.from(relativePositionIndex(window), (v) => BigInt(v)),
  };
}

/**
 * The official state dict of one network of a training store (keys of §8.2/§8.3/§8.4 without
 * `module.`), in store order. A Swin block's `relative_position_index` buffer, which the store
 * does not hold, follows its bias table (the window read from the table's shape), as
 * `state_dict()` lists a module's buffers after its own parameters. A shared head (no
 * `head.last_layer2.*` in the store) gets the `head.last_layer2.weight_g/_v` alias keys right
 * after `last_layer`, sharing its arrays, as `state_dict()` does not de-duplicate them (§8.4).
 */
export function networkStateDict(store: StateStore, key: NetworkKey): Map<string, NamedTensor> {
  const prefix = `${key}.`;
  const out = new Map<string, NamedTensor>();
  for (const [name, tensor] of store.toNamedTensors()) {
    if (!name.startsWith(prefix)) continue;
    const local = name.slice(prefix.length);
    out.set(local, tensor);
    if (local.endsWith(BIAS_TABLE_SUFFIX)) {
      const index = local.slice(0, -BIAS_TABLE_SUFFIX.length) + POSITION_INDEX_SUFFIX;
      out.set(index, positionIndexBuffer(biasTableWindow(name, tensor)));
    }
  }
  if (out.size === 0) throw new Error(`the training checkpoint holds no ${key} tensors`);
  const shared = !out.has("head.last_layer2.weight_v") && out.has("head.last_layer.weight_v");
  if (!shared) return out;
  const aliased = new Map<string, NamedTensor>();
  for (const [name, tensor] of out) {
    aliased.set(name, tensor);
    if (name === "head.last_layer.weight_v") {
      for (const part of ["weight_g", "weight_v"]) {
        const source = out.get(`head.last_layer.${part}`);
        if (source) aliased.set(`head.last_layer2.${part}`, source);
      }
    }
  }
  return aliased;
}

function orderedDict(entries: Iterable<[string, PthValue]>): PyDict {
  return new PyDict(entries, true);
}

/**
 * The student's AdamW state as the official run's `optimizer.state_dict()` (PyTorch 1.13 AdamW
 * over `utils.get_params_groups`): group 0 holds the parameters with weight decay (not biases,
 * not 1-D), group 1 the others with weight decay 0; parameters are numbered group by group in
 * `named_parameters()` order (a shared head's `last_layer2` alias is not a parameter; with
 * `norm_last_layer` the frozen `weight_g` gains are not in the optimizer). Each
 * parameter that has stepped gets `{'step': tensor(n), 'exp_avg', 'exp_avg_sq'}`; the last layer
 * counts its own steps (it does not step while frozen) and has no entry before its first step.
 * The groups' `lr` (`--lr` × batch / 256) and `weight_decay` (`--weight_decay`) are the base
 * values: the official loop overwrites both from its schedules before every step.
 */
export function officialOptimizerState(checkpoint: TrainingCheckpoint): PyDict {
  const { store, args } = checkpoint;
  const prefix = "student.";
  const frozenGain = args.norm_last_layer === true;
  const params = store.names().filter((n) =>
    n.startsWith(prefix) && !(frozenGain && n.endsWith(".weight_g"))
  );
  const decays = (name: string) => !name.endsWith(".bias") && store.shape(name).length > 1;
  const ordered = [...params.filter(decays), ...params.filter((n) => !decays(n))];
  const state = new PyDict();
  ordered.forEach((name, index) => {
    const steps = name.includes(".last_layer") ? checkpoint.lastLayerStep : checkpoint.step;
    if (steps === 0 || !store.has(expAvgName(name))) return;
    const tensor = (stateName: string): NamedTensor => ({
      dtype: "float32",
      shape: [...store.shape(stateName)],
      data: store.get(stateName),
    });
    state.set(
      index,
      new PyDict([
        ["step", { dtype: "float32", shape: [], data: Float32Array.of(steps) }],
        ["exp_avg", tensor(expAvgName(name))],
        ["exp_avg_sq", tensor(expAvgSqName(name))],
      ]),
    );
  });
  const lr = Number(args.lr) * Number(args.batch_size_per_gpu) / 256;
  const group = (weightDecay: number, first: number, count: number) =>
    new PyDict([
      ["lr", lr],
      ["betas", new PyTuple([0.9, 0.999])],
      ["eps", 1e-8],
      ["weight_decay", weightDecay],
      ["amsgrad", false],
      ["foreach", null],
      ["maximize", false],
      ["capturable", false],
      ["params", Array.from({ length: count }, (_, i) => first + i)],
    ]);
  const decayed = params.filter(decays).length;
  return new PyDict([
    ["state", state],
    [
      "param_groups",
      [
        group(Number(args.weight_decay), 0, decayed),
        group(0, decayed, params.length - decayed),
      ],
    ],
  ]);
}

/**
 * A run's arguments as the official `args` (an `argparse.Namespace`): numbers, strings, booleans
 * and null as they are, arrays element by element, anything else as its string.
 */
export function argsNamespace(args: Readonly<Record<string, unknown>>): PyNamespace {
  const plain = (v: unknown): PthValue =>
    typeof v === "number" || typeof v === "string" || typeof v === "boolean" || v === null
      ? v
      : Array.isArray(v)
      ? v.map(plain)
      : String(v);
  return new PyNamespace(new Map(Object.entries(args).map(([k, v]) => [k, plain(v)])));
}

/**
 * The official full checkpoint of a training checkpoint: `{'student', 'teacher', 'optimizer',
 * 'epoch', 'args', 'ibot_loss'}` (§8.1; see {@link officialOptimizerState}). `epoch` is the
 * completed-epoch count of our metadata.
 */
export function toOfficialCheckpoint(checkpoint: TrainingCheckpoint): PyDict {
  const { store } = checkpoint;
  const student = networkStateDict(store, "student");
  const teacher = networkStateDict(store, "teacher");
  const centre = (name: string): NamedTensor => {
    if (!store.has(name)) throw new Error(`the training checkpoint has no ${name} tensor`);
    return { dtype: "float32", shape: [...store.shape(name)], data: store.get(name) };
  };
  return new PyDict([
    ["student", orderedDict([...student].map(([k, t]) => [`${MODULE}${k}`, t]))],
    ["teacher", orderedDict(teacher)],
    ["optimizer", officialOptimizerState(checkpoint)],
    ["epoch", checkpoint.epoch],
    ["args", argsNamespace(checkpoint.args)],
    [
      "ibot_loss",
      new PyDict([["center", centre("ibot_loss.center")], [
        "center2",
        centre("ibot_loss.center2"),
      ]]),
    ],
  ]);
}

/**
 * `{'state_dict': OrderedDict}` as the root `extract_backbone_weights.py` writes: keys starting
 * with `backbone.` or `module.backbone.` lose that prefix; with `withHead` every other key is kept
 * unchanged, otherwise dropped. Unlike the script (which only warns), no backbone key is an error.
 */
export function extractBackbone(
  weightsFromKey: Map<string, NamedTensor>,
  withHead: boolean,
): PyDict {
  const out: [string, PthValue][] = [];
  let found = false;
  for (const [name, tensor] of weightsFromKey) {
    if (name.startsWith(BACKBONE)) {
      out.push([name.slice(BACKBONE.length), tensor]);
      found = true;
    } else if (name.startsWith(MODULE + BACKBONE)) {
      out.push([name.slice(MODULE.length + BACKBONE.length), tensor]);
      found = true;
    } else if (withHead) {
      out.push([name, tensor]);
    }
  }
  if (!found) throw new Error("the chosen state dict has no backbone.* keys to extract");
  return new PyDict([["state_dict", orderedDict(out)]]);
}

/**
 * Checkpoint conversion and backbone loading for evaluation (reference §6.4, §8; gotchas 18–19).
 *
 * - {@link toOfficialCheckpoint}: our training checkpoint (safetensors) → the official full
 *   `checkpoint.pth` layout (`student` with `module.`, `teacher` without, the shared-head
 *   `last_layer2` alias keys, `optimizer` (the student's AdamW state), `epoch`, `args`,
 *   `ibot_loss`).
 * - {@link extractBackbone}: the `{'state_dict': …}` file of the root `extract_backbone_weights.py`.
 * - {@link loadBackboneWeights}: backbone weights from any of those files (or a backbone
 *   safetensors), keys without `backbone.`, never silently from the wrong entry; and
 *   {@link checkBackboneKeys}, which refuses missing or unexpected keys instead of evaluating a
 *   partly random network as the official non-strict loaders do.
 *
 * @module
 */

import { isTensor, type PthValue, PyDict, PyNamespace, PyTuple, readPth } from "../runtime/pth.ts";
import { expAvgName, expAvgSqName } from "../optim/adamw.ts";
import { loadSafetensors, type NamedTensor } from "../runtime/safetensors.ts";
import { StateStore } from "../runtime/store.ts";
import {
  CHECKPOINT_FORMAT,
  loadTrainingCheckpoint,
  type TrainingCheckpoint,
} from "../train/checkpoint.ts";

/** The two networks of a checkpoint. */
export type NetworkKey = "teacher" | "student";

const BACKBONE = "backbone.";
const MODULE = "module.";

/**
 * The official state dict of one network of a training store (keys of §8.2/§8.4 without
 * `module.`), in store order. A shared head (no `head.last_layer2.*` in the store) gets the
 * `head.last_layer2.weight_g/_v` alias keys right after `last_layer`, sharing its arrays, as
 * `state_dict()` does not de-duplicate them (§8.4).
 */
export function networkStateDict(store: StateStore, key: NetworkKey): Map<string, NamedTensor> {
  const prefix = `${key}.`;
  const out = new Map<string, NamedTensor>();
  for (const [name, tensor] of store.toSafetensors()) {
    if (name.startsWith(prefix)) out.set(name.slice(prefix.length), tensor);
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
  const args = new PyNamespace(
    new Map<string, PthValue>(
      Object.entries(checkpoint.args).map(([k, v]) => [k, Array.isArray(v) ? [...v] : v]),
    ),
  );
  return new PyDict([
    ["student", orderedDict([...student].map(([k, t]) => [`${MODULE}${k}`, t]))],
    ["teacher", orderedDict(teacher)],
    ["optimizer", officialOptimizerState(checkpoint)],
    ["epoch", checkpoint.epoch],
    ["args", args],
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

function tensorDict(dict: PthValue, where: string): Map<string, NamedTensor> {
  if (!(dict instanceof PyDict)) throw new Error(`${where} is not a dict of tensors`);
  const out = new Map<string, NamedTensor>();
  for (const [name, tensor] of dict) {
    if (typeof name !== "string" || !isTensor(tensor)) {
      throw new Error(`${where} entry "${String(name)}" is not a tensor`);
    }
    out.set(name, tensor);
  }
  return out;
}

const FULL_KEYS = ["teacher", "student"];

/** One state dict of a checkpoint file, with the run's arguments and epoch when it has them. */
export interface CheckpointFileEntry {
  /** The state dict, keys as stored. */
  readonly dict: Map<string, NamedTensor>;
  /** The entry it came from: the requested key, `state_dict`, or `flat` for a flat dict. */
  readonly key: string;
  /** The pre-training arguments (our metadata, or the official `args` Namespace). */
  readonly args?: Readonly<Record<string, unknown>>;
  /** Completed epochs. */
  readonly epoch?: number;
}

/**
 * The state dict a checkpoint key names, keys as stored. Training safetensors: `teacher` or
 * `student` (official keys, the shared-head alias added). Other safetensors: the whole flat file.
 * `.pth`: the entry `key` of the root dict when it holds one; an extracted backbone's
 * `state_dict` when the file holds no `teacher`/`student`; a flat dict of tensors whole. A
 * missing entry is one sentence naming what the file holds (gotcha 19).
 */
export async function readCheckpointFile(path: string, key: string): Promise<CheckpointFileEntry> {
  if (path.endsWith(".safetensors")) {
    let file;
    try {
      file = await loadSafetensors(path);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) throw new Error(`${path} does not exist`);
      throw error;
    }
    const { tensors, metadata } = file;
    if (metadata.format !== CHECKPOINT_FORMAT) return { dict: tensors, key: "flat" };
    if (key !== "teacher" && key !== "student") {
      throw new Error(
        `${path} is a training checkpoint; its checkpoint key is teacher or student, not "${key}"`,
      );
    }
    const checkpoint = await loadTrainingCheckpoint(path);
    return {
      dict: networkStateDict(checkpoint.store, key),
      key,
      args: checkpoint.args,
      epoch: checkpoint.epoch,
    };
  }
  let value: PthValue;
  try {
    value = await readPth(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) throw new Error(`${path} does not exist`);
    throw error;
  }
  if (!(value instanceof PyDict)) throw new Error(`${path} does not hold a dict`);
  const args = value.get("args");
  const epoch = value.get("epoch");
  const extras = {
    args: args instanceof PyNamespace ? Object.fromEntries(args.attrs) : undefined,
    epoch: typeof epoch === "number" ? epoch : undefined,
  };
  if (value.has(key)) {
    return { dict: tensorDict(value.get(key)!, `${path}'s "${key}" entry`), key, ...extras };
  }
  if (value.has("state_dict") && !FULL_KEYS.some((k) => value.has(k))) {
    const dict = tensorDict(value.get("state_dict")!, `${path}'s "state_dict" entry`);
    return { dict, key: "state_dict", ...extras };
  }
  const entries = [...value.keys()].map(String);
  const flat = [...value.values()].every(isTensor);
  if (flat && value.size > 0) return { dict: tensorDict(value, path), key: "flat" };
  const hint = FULL_KEYS.some((k) => value.has(k))
    ? " (a full checkpoint: use teacher or student)"
    : "";
  throw new Error(
    `${path} has no "${key}" entry; it holds ${entries.join(", ") || "nothing"}${hint}`,
  );
}

/** {@link readCheckpointFile}'s state dict alone. */
export async function readStateDict(path: string, key: string): Promise<Map<string, NamedTensor>> {
  return (await readCheckpointFile(path, key)).dict;
}

/** A state dict split into backbone and head weights, each without its prefix. */
export interface SplitStateDict {
  /** Keys without `module.` and `backbone.` (`cls_token`, `blocks.0.…`, `masked_embed`, …). */
  readonly backbone: Map<string, NamedTensor>;
  /** Keys without `module.` and `head.` (`mlp.0.weight`, `last_layer.weight_g`, …). */
  readonly head: Map<string, NamedTensor>;
}

/** Strips `module.` and `backbone.`, and sets the `head.*` keys apart. */
export function splitStateDict(dict: Map<string, NamedTensor>): SplitStateDict {
  const backbone = new Map<string, NamedTensor>();
  const head = new Map<string, NamedTensor>();
  for (const [raw, tensor] of dict) {
    let name = raw.startsWith(MODULE) ? raw.slice(MODULE.length) : raw;
    name = name.startsWith(BACKBONE) ? name.slice(BACKBONE.length) : name;
    if (name.startsWith("head.")) head.set(name.slice("head.".length), tensor);
    else backbone.set(name, tensor);
  }
  return { backbone, head };
}

/**
 * Backbone weights, keys without `backbone.` (`cls_token`, `pos_embed`, `patch_embed.proj.weight`,
 * `blocks.0.…`, `norm.weight`, …). Accepts our training checkpoint (`key` teacher|student), an
 * official full `.pth` (`ckpt[key]`, `module.` stripped), an extracted backbone `.pth`
 * (`{'state_dict': …}`, or a flat dict) and a backbone `.safetensors`. Head keys (`head.*`, as
 * `--with_head` keeps) are not backbone weights and are left out; every other key is returned,
 * so that {@link checkBackboneKeys} can report it.
 */
export async function loadBackboneWeights(
  path: string,
  key = "teacher",
): Promise<Map<string, NamedTensor>> {
  const { backbone } = splitStateDict(await readStateDict(path, key));
  if (backbone.size === 0) throw new Error(`${path} holds no backbone weights under "${key}"`);
  return backbone;
}

/**
 * Throws one sentence listing the missing and unexpected keys of `weights` against the model's
 * backbone parameter names. `allowExtra` names keys that may be present without being used
 * (default: the student's `masked_embed`, which evaluation never reads).
 */
export function checkBackboneKeys(
  weights: Map<string, NamedTensor>,
  expectedNames: readonly string[],
  allowExtra: readonly string[] = ["masked_embed"],
): void {
  const expected = new Set(expectedNames);
  const missing = expectedNames.filter((n) => !weights.has(n));
  const unexpected = [...weights.keys()].filter((n) => !expected.has(n) && !allowExtra.includes(n));
  if (missing.length === 0 && unexpected.length === 0) return;
  const list = (names: string[]) =>
    names.length > 8
      ? `${names.slice(0, 8).join(", ")} and ${names.length - 8} more`
      : names.join(", ");
  const parts = [
    missing.length ? `missing ${list(missing)}` : "",
    unexpected.length ? `unexpected ${list(unexpected)}` : "",
  ].filter(Boolean);
  throw new Error(
    `the weights do not fit the backbone: ${
      parts.join("; ")
    } (refusing to evaluate a partly random network)`,
  );
}

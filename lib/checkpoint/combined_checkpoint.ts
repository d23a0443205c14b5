/**
 * The linear-probed model in one file, as the official `analysis/combine_ckpt.py` writes it for
 * the robustness analyses: the backbone's state dict (keys without `backbone.`) with the best
 * linear classifier added as `linear.weight` [classes, dim] and `linear.bias` [classes], the keys
 * of the official `VisionTransformerLinearEval`.
 *
 * - `.pth`: `{'state_dict': OrderedDict, 'epoch', 'best_acc', 'best_acc_hidx'}` as the official
 *   script leaves it (our linear files hold one classifier, index 0), plus `n_last_blocks` and
 *   `avgpool_patchtokens` (the features the classifier reads, which the official model takes
 *   from its architecture's defaults) and the pre-training `args` when the backbone file had them.
 * - `.safetensors`: the same flat state dict; those entries as metadata (`args` as JSON).
 *
 * The linear head comes from `deno task linear` (`linear_<key>.safetensors`) or from an official
 * linear checkpoint (`checkpoint_<key>_linear.pth`, whose classifier `best_acc_hidx` is taken).
 *
 * @module
 */

import { PyDict, PyNamespace, readPth, writePth } from "./pth.ts";
import { argsNamespace } from "./official_checkpoint.ts";
import { isTensor } from "./pickle.ts";
import { loadSafetensors, saveSafetensors } from "./safetensors.ts";
import {
  type BackboneFileOptions,
  backboneFromEntry,
  type LoadedBackbone,
} from "./backbone_file.ts";
import { readExisting } from "./weights_file.ts";
import type { NamedTensor } from "../runtime/named_tensor.ts";

/** The linear classifier of a linear probe and the features it reads. */
export interface LinearHead {
  /** [classes, dim], row-major (PyTorch's (out, in) layout). */
  readonly weight: Float32Array;
  /** [classes]. */
  readonly bias: Float32Array;
  /** Number of classes. */
  readonly classes: number;
  /** Feature width. */
  readonly dim: number;
  /** CLS tokens of the last n blocks in the features (`n_last_blocks`). */
  readonly nLastBlocks: number;
  /** `avgpool_patchtokens`: 0 CLS tokens, 1 mean patch token, 2 both. */
  readonly avgpool: 0 | 1 | 2;
  /** Its top-1 on the test split, in percent, when recorded. */
  readonly top1?: number;
  /** The epoch it was kept at, when recorded. */
  readonly epoch?: number;
}

/** The feature recipe of an official linear checkpoint, which does not record it. */
export interface FeatureRecipe {
  /** `n_last_blocks` (official default 4). */
  readonly nLastBlocks: number;
  /** `avgpool_patchtokens` (official default 0). */
  readonly avgpool: 0 | 1 | 2;
}

/** The format tag of the linear head files `deno task linear` writes. */
export const LINEAR_HEAD_FORMAT = "ibot-deno-linear-1";

const WEIGHT = "linear.weight";
const BIAS = "linear.bias";

function avgpoolOf(value: unknown, path: string): 0 | 1 | 2 {
  const n = Number(value);
  if (n !== 0 && n !== 1 && n !== 2) {
    throw new Error(`${path} records avgpool_patchtokens ${String(value)}, not 0, 1 or 2`);
  }
  return n;
}

function positiveInteger(value: unknown, what: string, path: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) {
    throw new Error(`${path} records ${what} ${String(value)}, not a positive integer`);
  }
  return n;
}

function optionalNumber(value: unknown): number | undefined {
  const n = Number(value);
  return value === undefined || value === null || !Number.isFinite(n) ? undefined : n;
}

function headFromTensors(
  path: string,
  weight: NamedTensor | undefined,
  bias: NamedTensor | undefined,
  recipe: FeatureRecipe,
  record: { top1?: number; epoch?: number },
): LinearHead {
  if (!weight || !bias) throw new Error(`${path} holds no ${WEIGHT} and ${BIAS}`);
  const [classes, dim] = weight.shape;
  if (weight.shape.length !== 2 || bias.shape.length !== 1 || bias.shape[0] !== classes) {
    throw new Error(
      `${path}: ${WEIGHT} [${weight.shape}] and ${BIAS} [${bias.shape}] are not a linear layer`,
    );
  }
  return {
    weight: Float32Array.from(weight.data as Float32Array),
    bias: Float32Array.from(bias.data as Float32Array),
    classes,
    dim,
    ...recipe,
    ...record,
  };
}

/**
 * Reads a linear head: our `linear_<key>.safetensors` (it records its feature recipe), or an
 * official linear checkpoint `.pth` (`state_dict` keys `<i>.module.linear.*` of a sweep, the
 * classifier `best_acc_hidx` taken, or `module.linear.*`), whose recipe is `officialRecipe`.
 */
export async function readLinearHead(
  path: string,
  officialRecipe: FeatureRecipe = { nLastBlocks: 4, avgpool: 0 },
): Promise<LinearHead> {
  if (path.endsWith(".safetensors")) {
    const { tensors, metadata } = await loadSafetensors(path);
    if (metadata.format !== LINEAR_HEAD_FORMAT) {
      throw new Error(`${path} is not a linear head written by deno task linear`);
    }
    return headFromTensors(path, tensors.get(WEIGHT), tensors.get(BIAS), {
      nLastBlocks: positiveInteger(metadata.n_last_blocks, "n_last_blocks", path),
      avgpool: avgpoolOf(metadata.avgpool_patchtokens, path),
    }, { top1: optionalNumber(metadata.top1), epoch: optionalNumber(metadata.epoch) });
  }
  const value = await readExisting(path, readPth);
  const stateDict = value instanceof PyDict ? value.get("state_dict") : undefined;
  if (!(value instanceof PyDict) || !(stateDict instanceof PyDict)) {
    throw new Error(`${path} is not a linear checkpoint: it has no state_dict`);
  }
  const index = optionalNumber(value.get("best_acc_hidx"));
  const prefix = index === undefined ? "module." : `${index}.module.`;
  const tensor = (name: string) => {
    const t = stateDict.get(prefix + name);
    return isTensor(t) ? t : undefined;
  };
  return headFromTensors(path, tensor(WEIGHT), tensor(BIAS), officialRecipe, {
    top1: optionalNumber(value.get("best_acc")),
    epoch: optionalNumber(value.get("epoch")),
  });
}

/** A backbone and its linear head, as {@link writeCombinedCheckpoint} takes them. */
export interface CombinedModel {
  /** The backbone (weights, architecture, run arguments). */
  readonly backbone: LoadedBackbone;
  /** The linear classifier on the backbone's features. */
  readonly head: LinearHead;
}

function linearTensors(head: LinearHead): [string, NamedTensor][] {
  return [
    [WEIGHT, { dtype: "float32", shape: [head.classes, head.dim], data: head.weight }],
    [BIAS, { dtype: "float32", shape: [head.classes], data: head.bias }],
  ];
}

/** Writes the combined model to `path` (`.pth` or `.safetensors`, by its extension). */
export async function writeCombinedCheckpoint(path: string, model: CombinedModel): Promise<void> {
  const { backbone, head } = model;
  const entries: [string, NamedTensor][] = [...backbone.weights, ...linearTensors(head)];
  if (path.endsWith(".safetensors")) {
    const metadata: Record<string, string> = {
      n_last_blocks: String(head.nLastBlocks),
      avgpool_patchtokens: String(head.avgpool),
    };
    if (head.epoch !== undefined) metadata.epoch = String(head.epoch);
    if (head.top1 !== undefined) metadata.best_acc = String(head.top1);
    if (backbone.args) metadata.args = JSON.stringify(backbone.args);
    await saveSafetensors(path, new Map(entries), metadata);
    return;
  }
  if (!path.endsWith(".pth")) throw new Error(`${path} must end in .pth or .safetensors`);
  const root = new PyDict([
    ["state_dict", new PyDict(entries, true)],
    ["epoch", head.epoch ?? 0],
    ["best_acc", head.top1 ?? 0],
    ["best_acc_hidx", 0],
    ["n_last_blocks", head.nLastBlocks],
    ["avgpool_patchtokens", head.avgpool],
  ]);
  if (backbone.args) root.set("args", argsNamespace(backbone.args));
  await writePth(path, root);
}

/** The combined file's state dict and records, whichever format it is in. */
async function readCombinedParts(path: string) {
  if (path.endsWith(".safetensors")) {
    const { tensors, metadata } = await loadSafetensors(path);
    return {
      tensors,
      nLastBlocks: metadata.n_last_blocks,
      avgpool: metadata.avgpool_patchtokens,
      top1: metadata.best_acc,
      epoch: metadata.epoch,
      args: metadata.args === undefined
        ? undefined
        : JSON.parse(metadata.args) as Record<string, unknown>,
    };
  }
  const value = await readPth(path);
  const stateDict = value instanceof PyDict ? value.get("state_dict") : undefined;
  if (!(value instanceof PyDict) || !(stateDict instanceof PyDict)) {
    throw new Error(`${path} is not a combined checkpoint: it has no state_dict`);
  }
  const tensors = new Map<string, NamedTensor>();
  for (const [name, tensor] of stateDict) if (isTensor(tensor)) tensors.set(String(name), tensor);
  const args = value.get("args");
  return {
    tensors,
    nLastBlocks: value.get("n_last_blocks"),
    avgpool: value.get("avgpool_patchtokens"),
    top1: value.get("best_acc"),
    epoch: value.get("epoch"),
    args: args instanceof PyNamespace ? Object.fromEntries(args.attrs) : undefined,
  };
}

/**
 * Reads a combined checkpoint back: the backbone, checked against its architecture as every
 * backbone file is (`options` as for `loadBackbone`), and the linear head, checked against
 * the backbone's feature width. A file without `n_last_blocks` (the official script's output)
 * reads its features as `officialRecipe`.
 */
export async function readCombinedCheckpoint(
  path: string,
  options: Omit<BackboneFileOptions, "key"> = {},
  officialRecipe: FeatureRecipe = { nLastBlocks: 4, avgpool: 0 },
): Promise<CombinedModel> {
  const parts = await readExisting(path, readCombinedParts);
  const recipe: FeatureRecipe = parts.nLastBlocks === undefined ? officialRecipe : {
    nLastBlocks: positiveInteger(parts.nLastBlocks, "n_last_blocks", path),
    avgpool: avgpoolOf(parts.avgpool, path),
  };
  const head = headFromTensors(path, parts.tensors.get(WEIGHT), parts.tensors.get(BIAS), recipe, {
    top1: optionalNumber(parts.top1),
    epoch: optionalNumber(parts.epoch),
  });
  const backboneWeights = [...parts.tensors].filter(([name]) => name !== WEIGHT && name !== BIAS);
  const backbone = backboneFromEntry(path, {
    dict: new Map(backboneWeights),
    key: "state_dict",
    args: parts.args,
    epoch: head.epoch,
  }, options);
  return { backbone, head };
}

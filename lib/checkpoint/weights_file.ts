/**
 * Weights from any file the evaluation and analysis tasks accept (reference §6.4; gotchas 18–19):
 * our training checkpoint (`.safetensors`, `teacher` or `student`), an official full `.pth`, an
 * extracted backbone (`{'state_dict': …}` or a flat dict, `.pth` or `.safetensors`). Never
 * silently from the wrong entry; {@link checkBackboneKeys} refuses missing or unexpected keys
 * instead of evaluating a partly random network as the official non-strict loaders do.
 *
 * @module
 */

import { isTensor, type PthValue, PyDict, PyNamespace, readPth } from "./pth.ts";
import { loadSafetensors } from "./safetensors.ts";
import type { NamedTensor } from "../runtime/named_tensor.ts";
import { CHECKPOINT_FORMAT, loadTrainingCheckpoint } from "./training_checkpoint.ts";
import {
  BACKBONE_PREFIX as BACKBONE,
  MODULE_PREFIX as MODULE,
  networkStateDict,
} from "./official_checkpoint.ts";

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
    const file = await readExisting(path, loadSafetensors);
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
  const value = await readExisting(path, readPth);
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

/** `read(path)`, a missing file being one sentence ("<path> does not exist"). */
export async function readExisting<T>(
  path: string,
  read: (path: string) => Promise<T>,
): Promise<T> {
  try {
    return await read(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) throw new Error(`${path} does not exist`);
    throw error;
  }
}

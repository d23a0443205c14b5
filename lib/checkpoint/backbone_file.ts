/**
 * Opens a backbone from any weights file an evaluation or analysis task accepts: our training
 * checkpoint (`.safetensors`), an official full checkpoint (`.pth` with `teacher`/`student`), an
 * extracted backbone (`{'state_dict': …}` or a flat dict, `.pth` or `.safetensors`). The
 * architecture comes from the file's run arguments, else from the caller's flags, else from the
 * weight shapes; the weights are checked against it key by key and shape by shape, so that a
 * wrong file never evaluates a partly random network (reference §6.4, gotchas 18–19).
 *
 * @module
 */

import { vit, VIT_SIZES, type VitConfig } from "../models/vit.ts";
import type { NamedTensor } from "../runtime/named_tensor.ts";
import { StateStore } from "../runtime/store.ts";
import { formatShape } from "../graph/tensor.ts";
import { checkBackboneKeys, readCheckpointFile, splitStateDict } from "./weights_file.ts";
import { Graph } from "../graph/graph.ts";

/** A ViT's architecture without the mask token flag. */
export type BackboneConfig = Omit<VitConfig, "maskedImModeling">;

/** How to open a backbone file. */
export interface BackboneFileOptions {
  /**
   * Which state dict: `teacher` (default) or `student` of a full checkpoint, or `state_dict` of an
   * extracted backbone (a flat file needs none; extracted files are found under either key).
   */
  readonly key?: string;
  /** Architecture name (`vit_small`, …) when the file carries no run arguments. */
  readonly arch?: string;
  /** Patch size in pixels when the file carries no run arguments. */
  readonly patchSize?: number;
}

/** A backbone read from a file and checked against its architecture. */
export interface LoadedBackbone {
  /** The file it was read from. */
  readonly path: string;
  /** The state dict it came from (`teacher`, `student`, `state_dict`, or `flat`). */
  readonly key: string;
  /** The architecture; `imgSize` is the size the position embedding is laid out for. */
  readonly config: BackboneConfig;
  /** Backbone weights, keys without `backbone.` (`cls_token`, `blocks.0.attn.qkv.weight`, …). */
  readonly weights: Map<string, NamedTensor>;
  /** Head weights, keys without `head.` (`mlp.0.weight`, `last_layer.weight_g`, …); may be empty. */
  readonly head: Map<string, NamedTensor>;
  /** The pre-training run's arguments when the file carries them. */
  readonly args?: Readonly<Record<string, unknown>>;
  /** Completed epochs when the file records them. */
  readonly epoch?: number;
}

const ALLOWED_EXTRA = ["masked_embed"];

/** Reads and checks a backbone; every problem is one sentence naming the file. */
export async function loadBackbone(
  path: string,
  options: BackboneFileOptions = {},
): Promise<LoadedBackbone> {
  const requested = options.key ?? "teacher";
  const file = await readCheckpointFile(path, requested);
  const { backbone: weights, head } = splitStateDict(file.dict);
  if (weights.size === 0) throw new Error(`${path} holds no backbone weights under "${file.key}"`);
  const config = architecture(path, weights, file.args, options);
  checkWeights(path, weights, config);
  return { path, key: file.key, config, weights, head, args: file.args, epoch: file.epoch };
}

/**
 * A state store holding the backbone as `<prefix>.backbone.<name>`, the names a graph built with
 * `vit()` under scope `prefix` declares (float64 weights are converted to float32).
 */
export function backboneStore(loaded: LoadedBackbone, prefix: string): StateStore {
  const store = new StateStore();
  for (const [name, tensor] of loaded.weights) {
    if (ALLOWED_EXTRA.includes(name)) continue;
    store.set(`${prefix}.backbone.${name}`, Float32Array.from(tensor.data as Float32Array), [
      ...tensor.shape,
    ]);
  }
  return store;
}

/** The image side the backbone was trained at: the run's global crop size, else 224 (official). */
export function defaultImageSize(loaded: LoadedBackbone): number {
  const size = Number(loaded.args?.global_crop_size);
  return Number.isInteger(size) && size > 0 ? size : 224;
}

function architecture(
  path: string,
  weights: Map<string, NamedTensor>,
  args: Readonly<Record<string, unknown>> | undefined,
  options: BackboneFileOptions,
): BackboneConfig {
  const shapeOf = (name: string): number[] => {
    const t = weights.get(name);
    if (!t) throw new Error(`${path} is not a ViT backbone: it has no ${name}`);
    return t.shape;
  };
  const patchWeight = shapeOf("patch_embed.proj.weight");
  const embedDim = shapeOf("cls_token").at(-1)!;
  const tokens = shapeOf("pos_embed")[1];
  let depth = 0;
  while (weights.has(`blocks.${depth}.norm1.weight`)) depth++;
  const grid = Math.round(Math.sqrt(tokens - 1));
  if (grid * grid !== tokens - 1) {
    throw new Error(`${path}: pos_embed has ${tokens} entries, not 1 + a square grid`);
  }
  const arch = options.arch ?? (args?.arch === undefined ? undefined : String(args.arch));
  let size = arch ? VIT_SIZES[arch] : undefined;
  if (arch && !size) {
    throw new Error(
      `${path}: architecture ${arch} is not available; choose one of ${
        Object.keys(VIT_SIZES).join(", ")
      }`,
    );
  }
  size ??= Object.values(VIT_SIZES).find((s) => s.embedDim === embedDim && s.depth === depth);
  if (!size) {
    throw new Error(
      `${path}: no known architecture has width ${embedDim} and depth ${depth}; pass --arch`,
    );
  }
  if (size.embedDim !== embedDim || size.depth !== depth) {
    throw new Error(
      `${path} holds a ViT of width ${embedDim} and depth ${depth}, not ${arch} (width ${size.embedDim}, depth ${size.depth})`,
    );
  }
  const patchSize = options.patchSize ??
    (args?.patch_size === undefined ? patchWeight[2] : Number(args.patch_size));
  if (patchWeight[2] !== patchSize || patchWeight[3] !== patchSize) {
    throw new Error(
      `${path} holds a patch embedding of ${patchWeight[2]}×${
        patchWeight[3]
      } pixels, not ${patchSize}`,
    );
  }
  const fc1 = weights.get("blocks.0.mlp.fc1.weight");
  const mlpRatio = fc1 ? fc1.shape[0] / embedDim : 4;
  return { ...size, patchSize, imgSize: grid * patchSize, mlpRatio };
}

function checkWeights(path: string, weights: Map<string, NamedTensor>, config: BackboneConfig) {
  const graph = new Graph("backbone_weights");
  const size = config.imgSize;
  const images = graph.input("images", "float32", [1, 3, size, size]);
  vit(graph, { ...config, maskedImModeling: false }, { images });
  const expected = new Map(graph.params.map((p) => [p.name.slice("backbone.".length), p.shape]));
  try {
    checkBackboneKeys(weights, [...expected.keys()], ALLOWED_EXTRA);
  } catch (error) {
    throw new Error(`${path}: ${(error as Error).message}`);
  }
  for (const [name, shape] of expected) {
    const tensor = weights.get(name)!;
    if (formatShape(tensor.shape) !== formatShape(shape)) {
      throw new Error(
        `${path}: ${name} is ${formatShape(tensor.shape)}, the architecture needs ${
          formatShape(shape)
        }`,
      );
    }
    if (tensor.dtype !== "float32" && tensor.dtype !== "float64") {
      throw new Error(`${path}: ${name} is ${tensor.dtype}; backbone weights must be float32`);
    }
  }
}

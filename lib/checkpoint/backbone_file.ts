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

import { VIT_SIZES, type VitConfig } from "../models/vit.ts";
import { SWIN_PATCH_SIZE, SWIN_SIZES, type SwinConfig, swinStages } from "../models/swin.ts";
import { type BackboneConfig, backboneTokens, isSwin } from "../models/backbone.ts";
import { relativePositionIndex } from "../models/window_attention.ts";
import type { NamedTensor } from "../runtime/named_tensor.ts";
import { StateStore } from "../runtime/store.ts";
import { formatShape } from "../graph/tensor.ts";
import {
  checkBackboneKeys,
  type CheckpointFileEntry,
  readCheckpointFile,
  splitStateDict,
} from "./weights_file.ts";
import { biasTableWindow, POSITION_INDEX_SUFFIX } from "./official_checkpoint.ts";
import { Graph } from "../graph/graph.ts";

/** A ViT's architecture without the mask token flag. */
export type VitBackboneConfig = Omit<VitConfig, "maskedImModeling">;

/** A Swin's architecture without the mask token flag. */
export type SwinBackboneConfig = Omit<SwinConfig, "maskedImModeling">;

/** How to open a backbone file. */
export interface BackboneFileOptions {
  /**
   * Which state dict: `teacher` (default) or `student` of a full checkpoint, or `state_dict` of an
   * extracted backbone (a flat file needs none; extracted files are found under either key).
   */
  readonly key?: string;
  /** Architecture name (`vit_small`, `swin_tiny`, …) when the file carries no run arguments. */
  readonly arch?: string;
  /** ViT patch size in pixels when the file carries no run arguments (a Swin's is always 4). */
  readonly patchSize?: number;
  /** Swin window side in tokens when the file carries no run arguments. */
  readonly windowSize?: number;
}

/** A backbone read from a file and checked against its architecture. */
export interface LoadedBackbone<C extends BackboneConfig = BackboneConfig> {
  /** The file it was read from. */
  readonly path: string;
  /** The state dict it came from (`teacher`, `student`, `state_dict`, or `flat`). */
  readonly key: string;
  /**
   * The architecture; `imgSize` is the size the ViT's position embedding, or the Swin's windows
   * and shifts, are laid out for.
   */
  readonly config: C;
  /**
   * Backbone weights, keys without `backbone.` (`cls_token`, `blocks.0.attn.qkv.weight`,
   * `layers.0.blocks.0.attn.qkv.weight`, …); a Swin's `relative_position_index` buffers are
   * checked and left out.
   */
  readonly weights: Map<string, NamedTensor>;
  /** Head weights, keys without `head.` (`mlp.0.weight`, `last_layer.weight_g`, …); may be empty. */
  readonly head: Map<string, NamedTensor>;
  /** The pre-training run's arguments when the file carries them. */
  readonly args?: Readonly<Record<string, unknown>>;
  /** Completed epochs when the file records them. */
  readonly epoch?: number;
}

/** A loaded ViT backbone. */
export type LoadedVit = LoadedBackbone<VitBackboneConfig>;

/** True when the loaded backbone is a ViT (the analyses and the ONNX export need one). */
export function isVitBackbone(loaded: LoadedBackbone): loaded is LoadedVit {
  return !isSwin(loaded.config);
}

/**
 * The loaded backbone as a ViT, or one sentence: `task` does not take a Swin yet, for `reason`.
 */
export function requireVit(loaded: LoadedBackbone, task: string, reason: string): LoadedVit {
  if (isVitBackbone(loaded)) return loaded;
  throw new Error(
    `${task} does not take a Swin backbone yet (${reason}): ${loaded.path} holds one`,
  );
}

/** Side in pixels that input images must be a multiple of: the ViT's patch, the Swin's 4. */
export function inputStep(config: BackboneConfig): number {
  return isSwin(config) ? SWIN_PATCH_SIZE : config.patchSize;
}

const ALLOWED_EXTRA = ["masked_embed"];

/** Reads and checks a backbone; every problem is one sentence naming the file. */
export async function loadBackbone(
  path: string,
  options: BackboneFileOptions = {},
): Promise<LoadedBackbone> {
  return backboneFromEntry(path, await readCheckpointFile(path, options.key ?? "teacher"), options);
}

/**
 * {@link loadBackbone} on a state dict already read (`file`, named `path` in messages): the same
 * architecture inference and name-by-name, shape-by-shape checks.
 */
export function backboneFromEntry(
  path: string,
  file: CheckpointFileEntry,
  options: BackboneFileOptions = {},
): LoadedBackbone {
  const { backbone, head } = splitStateDict(file.dict);
  if (backbone.size === 0) throw new Error(`${path} holds no backbone weights under "${file.key}"`);
  const weights = new Map([...backbone].filter(([name]) => !name.endsWith(POSITION_INDEX_SUFFIX)));
  const arch = options.arch ?? (file.args?.arch === undefined ? undefined : String(file.args.arch));
  const swinFile = [...weights.keys()].some((name) => name.startsWith("layers."));
  if (arch !== undefined && (arch in SWIN_SIZES) !== swinFile) {
    throw new Error(`${path} holds a ${swinFile ? "Swin" : "ViT"} backbone, not ${arch}`);
  }
  const config = swinFile
    ? swinArchitecture(path, weights, arch, file.args, options)
    : vitArchitecture(path, weights, arch, file.args, options);
  checkWeights(path, weights, config);
  for (const [name, index] of backbone) {
    if (name.endsWith(POSITION_INDEX_SUFFIX)) checkPositionIndex(path, name, index, weights);
  }
  return { path, key: file.key, config, weights, head, args: file.args, epoch: file.epoch };
}

/**
 * A state store holding the backbone as `<prefix>.backbone.<name>`, the names a graph built with
 * `vit()` or `swin()` under scope `prefix` declares (float64 weights are converted to float32).
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

function shapeIn(path: string, family: string, weights: Map<string, NamedTensor>) {
  return (name: string): number[] => {
    const t = weights.get(name);
    if (!t) throw new Error(`${path} is not a ${family} backbone: it has no ${name}`);
    return t.shape;
  };
}

function vitArchitecture(
  path: string,
  weights: Map<string, NamedTensor>,
  arch: string | undefined,
  args: Readonly<Record<string, unknown>> | undefined,
  options: BackboneFileOptions,
): VitBackboneConfig {
  const shapeOf = shapeIn(path, "ViT", weights);
  const patchWeight = shapeOf("patch_embed.proj.weight");
  const embedDim = shapeOf("cls_token").at(-1)!;
  const tokens = shapeOf("pos_embed")[1];
  let depth = 0;
  while (weights.has(`blocks.${depth}.norm1.weight`)) depth++;
  const grid = Math.round(Math.sqrt(tokens - 1));
  if (grid * grid !== tokens - 1) {
    throw new Error(`${path}: pos_embed has ${tokens} entries, not 1 + a square grid`);
  }
  let size = arch ? VIT_SIZES[arch] : undefined;
  if (arch && !size) {
    throw new Error(
      `${path}: architecture ${arch} is not available; choose one of ${
        [...Object.keys(VIT_SIZES), ...Object.keys(SWIN_SIZES)].join(", ")
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

/**
 * A Swin's architecture: widths, depths and heads from `arch` (checked against the weights) or
 * from the weights (stage widths, blocks per stage, heads from the bias tables' second axis);
 * the window from `--window_size`, the run's `window_size`, else stage 0's first bias table
 * [(2w − 1)², heads]; the layout size from the run's `img_size`, else 224 (official) when the
 * tables' windows fit it, else the smallest size they fit.
 */
function swinArchitecture(
  path: string,
  weights: Map<string, NamedTensor>,
  arch: string | undefined,
  args: Readonly<Record<string, unknown>> | undefined,
  options: BackboneFileOptions,
): SwinBackboneConfig {
  const shapeOf = shapeIn(path, "Swin", weights);
  const patchWeight = shapeOf("patch_embed.proj.weight");
  if (patchWeight[2] !== SWIN_PATCH_SIZE || patchWeight[3] !== SWIN_PATCH_SIZE) {
    throw new Error(
      `${path} holds a Swin patch embedding of ${patchWeight[2]}×${
        patchWeight[3]
      } pixels, not ${SWIN_PATCH_SIZE}×${SWIN_PATCH_SIZE}`,
    );
  }
  const embedDim = patchWeight[0];
  const depths: number[] = [];
  while (weights.has(`layers.${depths.length}.blocks.0.norm1.weight`)) {
    const s = depths.length;
    let depth = 0;
    while (weights.has(`layers.${s}.blocks.${depth}.norm1.weight`)) depth++;
    depths.push(depth);
  }
  const table = (s: number, b: number) =>
    `layers.${s}.blocks.${b}.attn.relative_position_bias_table`;
  const windows = depths.map((depth, s) =>
    Array.from({ length: depth }, (_, b) => {
      shapeOf(table(s, b));
      return biasTableWindow(`${path}: ${table(s, b)}`, weights.get(table(s, b))!);
    })
  );
  const heads = depths.map((_, s) => shapeOf(table(s, 0))[1]);
  const fromArgs = (value: unknown) => value === undefined ? undefined : Number(value);
  const windowSize = options.windowSize ?? fromArgs(args?.window_size) ?? windows[0][0];
  const size = arch === undefined
    ? Object.values(SWIN_SIZES).find((s) =>
      s.embedDim === embedDim && sameList(s.depths, depths) && sameList(s.heads, heads)
    )
    : SWIN_SIZES[arch as keyof typeof SWIN_SIZES];
  const describe = (c: number, d: readonly number[], h: readonly number[]) =>
    `width ${c}, depths [${d}], heads [${h}]`;
  if (
    arch !== undefined &&
    !(size!.embedDim === embedDim && sameList(size!.depths, depths) &&
      sameList(size!.heads, heads))
  ) {
    throw new Error(
      `${path} holds a Swin of ${describe(embedDim, depths, heads)}, not ${arch} (${
        describe(size!.embedDim, size!.depths, size!.heads)
      })`,
    );
  }
  const fc1 = weights.get("layers.0.blocks.0.mlp.fc1.weight");
  const base = {
    embedDim,
    depths,
    heads,
    dropPathRate: size?.dropPathRate ?? 0,
    windowSize,
    mlpRatio: fc1 ? fc1.shape[0] / embedDim : 4,
  };
  const fits = (imgSize: number) => {
    try {
      const stages = swinStages({ ...base, imgSize, maskedImModeling: false });
      return stages.every((stage, s) =>
        stage.blocks.every((block, b) => block.window === windows[s][b])
      );
    } catch {
      return false;
    }
  };
  const imgSize = fromArgs(args?.img_size) ??
    [224, ...Array.from({ length: 1024 }, (_, i) => 4 * (i + 1))]
      .find(fits);
  if (imgSize === undefined) {
    throw new Error(
      `${path}: no image size lays out a window of ${windowSize} as its bias tables (windows [${
        windows.map((w) => `[${w}]`)
      }])`,
    );
  }
  return { ...base, imgSize };
}

function sameList(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

function checkWeights(path: string, weights: Map<string, NamedTensor>, config: BackboneConfig) {
  const graph = new Graph("backbone_weights");
  const size = config.imgSize;
  const images = graph.input("images", "float32", [1, 3, size, size]);
  backboneTokens(graph, config, false, { images });
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

/**
 * Checks a Swin block's `relative_position_index` buffer against the official index of the
 * window its (already checked) bias table has; it is a constant of our graph, so it is dropped.
 */
function checkPositionIndex(
  path: string,
  name: string,
  index: NamedTensor,
  weights: Map<string, NamedTensor>,
) {
  const block = name.slice(0, -POSITION_INDEX_SUFFIX.length);
  const table = weights.get(`${block}.relative_position_bias_table`);
  if (!table) throw new Error(`${path}: ${name} belongs to no block of the backbone`);
  const window = biasTableWindow(`${path}: ${block}.relative_position_bias_table`, table);
  const expected = relativePositionIndex(window);
  const n = window * window;
  const same = index.dtype === "int64" && formatShape(index.shape) === formatShape([n, n]) &&
    expected.every((v, i) => Number(index.data[i]) === v);
  if (!same) {
    throw new Error(
      `${path}: ${name} is not the official relative position index of a ${window}×${window} window`,
    );
  }
}

/**
 * The two backbone families behind one interface for pre-training and features: the ViT
 * (`vit.ts`) and the Swin Transformer (`swin.ts`). Both give tokens [B, 1 + N, D] with the head's
 * "CLS" first (the ViT's CLS token; the Swin's average-pooled last-stage token) and the N patch
 * tokens the masked-patch loss uses (the ViT's patches; the Swin's last-stage tokens).
 *
 * @module
 */

import type { Graph } from "../graph/graph.ts";
import type { Tensor } from "../graph/tensor.ts";
import { swin, SWIN_PATCH_SIZE, type SwinConfig } from "./swin.ts";
import { vit, type VitConfig } from "./vit.ts";

/** A backbone's architecture, without the mask-token flag (the student has it, the teacher not). */
export type BackboneConfig =
  | Omit<VitConfig, "maskedImModeling">
  | Omit<SwinConfig, "maskedImModeling">;

/** Inputs of one forward pass of either backbone. */
export interface BackboneInputs {
  /** Images [B, 3, H, W]. */
  readonly images: Tensor;
  /** Mask [B, N] of 0/1 floats on the grid of the patch tokens (see {@link patchGrid}). */
  readonly mask?: Tensor;
  /** Drop-path scales [blocks, 2, B] (see {@link backboneBlocks}). */
  readonly dropPath?: Tensor;
  /** Each block's drop-path rate; blocks at 0 ignore `dropPath`. */
  readonly dropPathRates?: readonly number[];
}

/** True for a Swin configuration. */
export function isSwin(config: BackboneConfig): config is Omit<SwinConfig, "maskedImModeling"> {
  return "depths" in config;
}

/** The number of blocks (across stages for the Swin): the drop-path inputs' first axis. */
export function backboneBlocks(config: BackboneConfig): number {
  return isSwin(config) ? config.depths.reduce((a, b) => a + b, 0) : config.depth;
}

/** Width D of the tokens the head sees. */
export function backboneWidth(config: BackboneConfig): number {
  return isSwin(config) ? config.embedDim * 2 ** (config.depths.length - 1) : config.embedDim;
}

/**
 * Pixels per patch token on each side: the ViT's patch size, the Swin's last-stage stride (32).
 * The masks of the masked-patch loss are drawn on the grid of (crop size / this).
 */
export function patchGrid(config: BackboneConfig): number {
  return isSwin(config) ? SWIN_PATCH_SIZE * 8 : config.patchSize;
}

/** All tokens [B, 1 + N, D] after the final norm, the head's "CLS" first. */
export function backboneTokens(
  g: Graph,
  config: BackboneConfig,
  maskedImModeling: boolean,
  inputs: BackboneInputs,
): Tensor {
  return isSwin(config)
    ? swin(g, { ...config, maskedImModeling }, inputs).tokens
    : vit(g, { ...config, maskedImModeling }, inputs).tokens;
}

/**
 * The named random streams of pre-training, forked from the run's root generator
 * (`new Rng(seed)`): one per image and epoch for its multi-crop augmentation, and one per crop for
 * its mask. The loader, the trainer and the crop preview all draw from these, so a preview shows
 * exactly what a run trains on, whatever the number of workers.
 *
 * @module
 */

import type { Rng } from "../runtime/rng.ts";

/** The stream of image `index`'s multi-crop augmentation in `epoch`. */
export function augmentationStream(root: Rng, epoch: number, index: number): Rng {
  return root.fork(`${epoch}:${index}`);
}

/** The stream of the mask of global crop `crop` of image `index` in `epoch`. */
export function maskStream(root: Rng, epoch: number, index: number, crop: number): Rng {
  return root.fork(`mask:${epoch}:${index}:${crop}`);
}

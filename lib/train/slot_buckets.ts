/**
 * The sizes of the training step's flat patch-slot axis. The student's and the teacher's patch
 * heads run on S slots shared by the whole batch; a step graph is compiled per size S, so S takes
 * one of a few bucket sizes and each batch uses the smallest bucket that holds its masked patches.
 *
 * @module
 */

/** How many buckets split the range up to the largest slot count. */
export const SLOT_BUCKET_COUNT = 8;

/** Bucket sizes are multiples of this (except the largest, which is the maximum itself). */
export const SLOT_BUCKET_GRANULE = 8;

/**
 * The bucket sizes for a batch that can hold at most `maxSlots` masked patches (G·B times the
 * most masked patches of one crop): k/8 of `maxSlots` for k = 1..8, each rounded up to a multiple
 * of 8 and capped at `maxSlots`, without repeats, ascending. The last is `maxSlots`.
 */
export function slotBuckets(maxSlots: number): number[] {
  if (!Number.isInteger(maxSlots) || maxSlots < 1) {
    throw new Error(`the largest slot count must be a positive integer, got ${maxSlots}`);
  }
  const sizes = new Set<number>();
  for (let k = 1; k <= SLOT_BUCKET_COUNT; k++) {
    const share = Math.ceil(maxSlots * k / SLOT_BUCKET_COUNT);
    sizes.add(Math.min(maxSlots, Math.ceil(share / SLOT_BUCKET_GRANULE) * SLOT_BUCKET_GRANULE));
  }
  return [...sizes].sort((a, b) => a - b);
}

/**
 * The smallest of `buckets` (ascending) that holds `masked` patches; the smallest bucket when
 * nothing is masked, so that S ≥ 1. Throws when `masked` exceeds the largest bucket.
 */
export function pickSlotBucket(buckets: readonly number[], masked: number): number {
  const bucket = buckets.find((size) => size >= masked);
  if (bucket === undefined) {
    throw new Error(
      `the batch has ${masked} masked patches, more than the ${
        buckets.at(-1)
      } slots of the largest bucket`,
    );
  }
  return bucket;
}

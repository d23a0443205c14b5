/**
 * Splitting an epoch's order across the ranks of a data-parallel job, by the rule of PyTorch's
 * `DistributedSampler` (with its default `drop_last=False`): the order, the same on every rank,
 * is padded to a multiple of the world size N by repeating it from its start, and rank r takes
 * every N-th entry from entry r. Every shard has the same length, so every rank runs the same
 * number of steps, and the shards together hold every image (the padding ones twice).
 *
 * @module
 */

/** Entries per rank when `length` items are split over `worldSize` ranks: ⌈length / worldSize⌉. */
export function shardSize(length: number, worldSize: number): number {
  requirePositiveInteger("length", length);
  requirePositiveInteger("worldSize", worldSize);
  return Math.ceil(length / worldSize);
}

/**
 * Rank `rank`'s share of `order` among `worldSize` ranks: entries padded[rank],
 * padded[rank + worldSize], padded[rank + 2·worldSize], …, where padded is `order` followed by its
 * first entries (from the start again as often as needed) up to {@link shardSize} · worldSize
 * entries. Returns a new array of {@link shardSize} entries; with one rank, a copy of `order`.
 */
export function shardIndices(order: Int32Array, rank: number, worldSize: number): Int32Array {
  const size = shardSize(order.length, worldSize);
  requireRank(rank, worldSize);
  const shard = new Int32Array(size);
  for (let i = 0; i < size; i++) shard[i] = order[(i * worldSize + rank) % order.length];
  return shard;
}

/** Throws unless `rank` is an integer from 0 to `worldSize` − 1. */
export function requireRank(rank: number, worldSize: number): void {
  requirePositiveInteger("worldSize", worldSize);
  if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize) {
    throw new Error(
      `rank must be an integer from 0 to ${worldSize - 1} (worldSize ${worldSize}), got ${rank}`,
    );
  }
}

function requirePositiveInteger(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) {
    throw new Error(`${name} must be a positive integer, got ${value}`);
  }
}

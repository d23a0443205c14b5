import { assert } from "../assert.ts";
import { epochOrder } from "../../lib/data/loader.ts";
import { requireRank, shardIndices, shardSize } from "../../lib/data/shard.ts";

const sorted = (values: Iterable<number>) => [...values].sort((a, b) => a - b);

Deno.test("shardIndices picks what torch's DistributedSampler picks", () => {
  // list(DistributedSampler(range(n), num_replicas=N, rank=r, shuffle=False)) for r < N,
  // printed by torch 1.13.
  const cases: [number, number, number[][]][] = [
    [10, 3, [[0, 3, 6, 9], [1, 4, 7, 0], [2, 5, 8, 1]]],
    [5, 4, [[0, 4], [1, 0], [2, 1], [3, 2]]],
    [2, 5, [[0], [1], [0], [1], [0]]],
    [7, 1, [[0, 1, 2, 3, 4, 5, 6]]],
    [8, 4, [[0, 4], [1, 5], [2, 6], [3, 7]]],
  ];
  for (const [n, world, expected] of cases) {
    const identity = Int32Array.from({ length: n }, (_, i) => i);
    const shards = expected.map((_, rank) => [...shardIndices(identity, rank, world)]);
    assert.deepEqual(shards, expected, `${n} images over ${world} ranks`);
  }
  // With shuffle=True, seed 0 and set_epoch(3), torch's order of 10 is this randperm; rank 2 of
  // 3 then reads [3, 5, 2, 0].
  const permutation = Int32Array.from([6, 0, 3, 7, 8, 5, 1, 9, 2, 4]);
  assert.deepEqual([...shardIndices(permutation, 2, 3)], [3, 5, 2, 0]);
});

Deno.test("shards of an epoch have equal lengths and cover every image, padding from the start", () => {
  for (const [n, world] of [[100, 3], [100, 4], [7, 3], [3, 8], [1, 2]]) {
    const order = epochOrder(n, 11, 2);
    const size = Math.ceil(n / world);
    const shards = Array.from({ length: world }, (_, rank) => shardIndices(order, rank, world));
    assert.equal(shardSize(n, world), size);
    for (const shard of shards) assert.equal(shard.length, size, `${n} over ${world}`);
    // Together the shards hold the order once, then the padding: its first entries, repeated.
    const padding = Array.from({ length: size * world - n }, (_, i) => order[i % n]);
    assert.deepEqual(
      sorted(shards.flatMap((shard) => [...shard])),
      sorted([...order, ...padding]),
      `${n} over ${world}`,
    );
    // Interleaving the shards back gives the padded order.
    const interleaved = Array.from(
      { length: size * world },
      (_, i) => shards[i % world][i / world | 0],
    );
    assert.deepEqual(interleaved, [...order, ...padding], `${n} over ${world}`);
  }
});

Deno.test("shardIndices with one rank is the order itself, as a copy", () => {
  const order = epochOrder(50, 3, 0);
  const shard = shardIndices(order, 0, 1);
  assert.deepEqual(shard, order);
  shard[0] = -1;
  assert.notEqual(order[0], -1);
});

Deno.test("step k of N ranks with batches of B covers step k of one rank with batches of N·B", () => {
  const n = 1000;
  const order = epochOrder(n, 4, 7);
  for (const [world, batch] of [[2, 16], [3, 10], [8, 4]]) {
    const shards = Array.from({ length: world }, (_, rank) => shardIndices(order, rank, world));
    const steps = Math.floor(n / (world * batch));
    for (let k = 0; k < steps; k++) {
      const ranks = shards.map((shard) => [...shard.subarray(k * batch, (k + 1) * batch)]);
      const seen = ranks.flat();
      assert.equal(new Set(seen).size, world * batch, `step ${k}: the ranks' batches overlap`);
      assert.deepEqual(
        sorted(seen),
        sorted(order.subarray(k * world * batch, (k + 1) * world * batch)),
        `step ${k} over ${world} ranks`,
      );
    }
  }
});

Deno.test("shardIndices and shardSize reject bad ranks, world sizes and empty orders", () => {
  const order = epochOrder(10, 0, 0);
  assert.throws(
    () => shardIndices(order, 2, 2),
    /^Error: rank must be an integer from 0 to 1 \(worldSize 2\), got 2$/,
  );
  assert.throws(() => shardIndices(order, -1, 2), /rank must be an integer from 0 to 1/);
  assert.throws(() => shardIndices(order, 0.5, 2), /rank must be an integer from 0 to 1/);
  assert.throws(() => shardIndices(order, 0, 0), /worldSize must be a positive integer, got 0/);
  assert.throws(
    () => shardIndices(new Int32Array(0), 0, 1),
    /length must be a positive integer, got 0/,
  );
  assert.throws(() => shardSize(10, 1.5), /worldSize must be a positive integer, got 1.5/);
  assert.throws(() => requireRank(1, 1), /rank must be an integer from 0 to 0 \(worldSize 1\)/);
});

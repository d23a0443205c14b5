import { assert } from "../assert.ts";
import { pickSlotBucket, slotBuckets } from "../../lib/train/slot_buckets.ts";

Deno.test("slotBuckets: eighths of the largest count, rounded up to multiples of 8", () => {
  // 80 = 2 crops · 8 images · 5 patches: eighths 10, 20, …, 80.
  assert.deepEqual(slotBuckets(80), [16, 24, 32, 40, 56, 64, 72, 80]);
  // The official ViT-S/16 recipe at batch 64: 2 · 64 · 98 = 12544 splits evenly.
  assert.deepEqual(slotBuckets(12544), [1568, 3136, 4704, 6272, 7840, 9408, 10976, 12544]);
  // Rounding may merge eighths; the largest bucket is the count itself, never above it.
  assert.deepEqual(slotBuckets(20), [8, 16, 20]);
  assert.deepEqual(slotBuckets(8), [8]);
  assert.deepEqual(slotBuckets(5), [5]);
  assert.deepEqual(slotBuckets(1), [1]);
  for (const max of [1, 7, 13, 99, 100, 1001]) {
    const buckets = slotBuckets(max);
    assert.equal(buckets.at(-1), max);
    assert(buckets.length <= 8 && buckets[0] >= 1, `${max}: ${buckets}`);
    buckets.slice(0, -1).forEach((b, i) => {
      assert(b % 8 === 0 && b < buckets[i + 1], `${max}: ${buckets}`);
    });
  }
});

Deno.test("slotBuckets: a count that is not a positive integer is refused", () => {
  for (const bad of [0, -8, 2.5, NaN]) {
    assert.throws(
      () => slotBuckets(bad),
      new RegExp(`^Error: the largest slot count must be a positive integer, got ${bad}$`),
    );
  }
});

Deno.test("pickSlotBucket: the smallest bucket that holds the masked patches", () => {
  const buckets = slotBuckets(80);
  assert.equal(pickSlotBucket(buckets, 0), 16, "nothing masked still gets one bucket");
  assert.equal(pickSlotBucket(buckets, 1), 16);
  assert.equal(pickSlotBucket(buckets, 16), 16);
  assert.equal(pickSlotBucket(buckets, 17), 24);
  assert.equal(pickSlotBucket(buckets, 41), 56);
  assert.equal(pickSlotBucket(buckets, 80), 80);
  assert.throws(
    () => pickSlotBucket(buckets, 81),
    /^Error: the batch has 81 masked patches, more than the 80 slots of the largest bucket$/,
  );
});

/**
 * The step's flat patch-slot axis: a batch gives the same loss and the same updated state whatever
 * bucket it runs at (padding slots change nothing), and the step's work grows with the slots.
 */

import { assert, assertCloseToScale } from "../assert.ts";
import type { TensorData } from "../../lib/graph/graph.ts";
import { countMacs } from "../../lib/graph/cost.ts";
import { addAdamWMoments } from "../../lib/optim/adamw.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { CompiledGraph } from "../../lib/runtime/session.ts";
import { StateStore } from "../../lib/runtime/store.ts";
import { countMasked } from "../../lib/train/batch_inputs.ts";
import { pickSlotBucket, slotBuckets } from "../../lib/train/slot_buckets.ts";
import { buildIbotStep, TEACHER_PREDICTION } from "../../lib/train/step.ts";
import { randomTinyMasks, tinyBatchFeeds, tinyStepConfig } from "./tiny_step.ts";

const CONFIG = tinyStepConfig();
const ROWS = CONFIG.globalCrops * CONFIG.batch;

/** Random masks of up to 4 of the 16 patches per row; row 1 has none. */
function randomMasks(rng: Rng): Uint8Array[] {
  const masks = randomTinyMasks(ROWS, rng);
  masks[1].fill(0);
  return masks;
}

/**
 * One step at `slots` patch slots from a fixed random state and batch (the same for every
 * `slots`); returns every output.
 */
async function runAt(slots: number, masks: readonly Uint8Array[]): Promise<
  Record<string, TensorData>
> {
  const step = buildIbotStep({ ...CONFIG, slots });
  const store = StateStore.fromParams(step.graph.params, 7);
  addAdamWMoments(store, step.trainable);
  const feeds = tinyBatchFeeds(step, CONFIG, masks, slots, 1, new Rng(7));
  for (const name of store.names()) feeds[name] = store.get(name);
  const session = await CompiledGraph.create(step.graph, { threads: 1 });
  try {
    return await session.run(feeds);
  } finally {
    await session.release();
  }
}

Deno.test("one batch at two patch-slot buckets gives the same loss and updated state (1e-6)", async () => {
  const masks = randomMasks(new Rng(3));
  const masked = countMasked(masks);
  const buckets = slotBuckets(ROWS * CONFIG.maskSlots);
  const small = pickSlotBucket(buckets, masked);
  const large = buckets.at(-1)!;
  assert(masked <= small && small < large, `${masked} masked, buckets ${small} and ${large}`);
  const exact = await runAt(masked, masks);
  const padded = await runAt(small, masks);
  const widest = await runAt(large, masks);
  assert((exact.patch as Float32Array)[0] > 0, "the patch term is non-trivial");
  assert.deepEqual(Object.keys(padded).sort(), Object.keys(exact).sort());
  for (const other of [padded, widest]) {
    for (const name of Object.keys(exact)) {
      if (name === TEACHER_PREDICTION) {
        assert.deepEqual(other[name], exact[name], name);
        continue;
      }
      assertCloseToScale(other[name] as Float32Array, exact[name] as Float32Array, name, 1e-6);
    }
  }
});

Deno.test("the step's work grows with its patch slots: the head runs on each slot", () => {
  const macs = (slots: number) => countMacs(buildIbotStep({ ...CONFIG, slots }).graph);
  const perSlot = macs(17) - macs(16);
  assert(perSlot > 0, "one more slot adds work");
  assert.equal(macs(48) - macs(16), 32 * perSlot);
  // Default: G·B·M slots, the largest bucket.
  assert.equal(countMacs(buildIbotStep(CONFIG).graph), macs(ROWS * CONFIG.maskSlots));
});

Deno.test("buildIbotStep refuses a slot count that is not a positive integer", () => {
  assert.throws(
    () => buildIbotStep({ ...CONFIG, slots: 0 }),
    /the patch slot count must be a positive integer, got 0/,
  );
});

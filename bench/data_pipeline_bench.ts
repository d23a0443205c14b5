/**
 * Throughput of the multi-crop data pipeline at the bench configuration: the vendored
 * Fashion-MNIST subset, 2 global crops of 32 px (scale 0.14–1) and 4 local crops of 16 px
 * (scale 0.05–0.4), batch 64, the default worker count and prefetch. Prints images/s over a
 * timed run of whole batches, then `deno bench` times one batch in the steady state.
 *
 * ```sh
 * deno bench --allow-read --allow-env --allow-ffi --allow-sys bench/data_pipeline_bench.ts
 * ```
 *
 * @module
 */

import { defaultWorkerCount, type MultiCropBatch, MultiCropLoader } from "../lib/data/loader.ts";
import { resolveDataPath } from "../lib/data/source.ts";
import { SMALL_CROPS, VENDORED } from "../tests/data/fixtures.ts";

const BATCH = 64;
const TIMED_BATCHES = 40;

const loader = await MultiCropLoader.create({
  source: await resolveDataPath(VENDORED),
  crops: SMALL_CROPS,
  batchSize: BATCH,
  seed: 0,
});
globalThis.addEventListener("unload", () => loader.close());

let epoch = 0;
let batches = loader.epoch(epoch);

/** The next batch, moving on to the next epoch when one ends. */
async function nextBatch(): Promise<MultiCropBatch> {
  let result = await batches.next();
  if (result.done) {
    batches = loader.epoch(++epoch);
    result = await batches.next();
  }
  return result.value as MultiCropBatch;
}

await nextBatch();
const start = performance.now();
for (let k = 0; k < TIMED_BATCHES; k++) await nextBatch();
const seconds = (performance.now() - start) / 1000;
console.log(
  `data pipeline: ${(TIMED_BATCHES * BATCH / seconds).toFixed(0)} images/s ` +
    `(${TIMED_BATCHES} batches of ${BATCH}, ${defaultWorkerCount()} workers)`,
);

Deno.bench(`multi-crop loader: one batch of ${BATCH} (2 × 32 px + 4 × 16 px crops)`, async () => {
  await nextBatch();
});

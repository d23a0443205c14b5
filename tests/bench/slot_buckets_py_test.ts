import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { assert } from "../assert.ts";
import { pickSlotBucket, slotBuckets } from "../../lib/train/slot_buckets.ts";
import { PYTHON, torchAvailable } from "../reference/torch.ts";

const ignore = !torchAvailable();
const HERE = dirname(fileURLToPath(import.meta.url));

/**
 * Prints, for each [max, masked] case of argv[1], the Python buckets of max and the bucket picked
 * for masked, or the error sentence when none holds it.
 */
const PROGRAM = `
import json, sys
sys.path[:0] = sys.argv[2:]
from ibot_equal_work_torch import pick_slot_bucket, slot_buckets
result = []
for largest, masked in json.loads(sys.argv[1]):
    buckets = slot_buckets(largest)
    try:
        result.append([buckets, pick_slot_bucket(buckets, masked)])
    except ValueError as error:
        result.append([buckets, str(error)])
print(json.dumps(result))
`;

Deno.test({
  name: "the equal-work PyTorch step picks its slot count by our bucket rule",
  ignore,
  async fn() {
    // Maxima: one slot, merged eighths, the benchmark's 2·64·19, the ViT-S/16 recipe's 2·64·98,
    // and odd counts; masked counts at, between and past the bucket edges.
    const cases: [number, number][] = [
      [1, 0],
      [1, 1],
      [20, 9],
      [80, 17],
      [80, 41],
      [80, 81],
      [2432, 2420],
      [2432, 2100],
      [12544, 0],
      [12544, 6000],
      [12544, 12544],
      [1001, 126],
      [1001, 127],
    ];
    const { code, stdout, stderr } = await new Deno.Command(PYTHON, {
      args: [
        "-c",
        PROGRAM,
        JSON.stringify(cases),
        join(HERE, "..", "..", "bench"),
        join(HERE, "..", "reference"),
      ],
      env: { OMP_NUM_THREADS: "1" },
    }).output();
    const text = new TextDecoder();
    assert.equal(code, 0, text.decode(stderr));
    const python: [number[], number | string][] = JSON.parse(text.decode(stdout));
    const ours = cases.map(([largest, masked]) => {
      const buckets = slotBuckets(largest);
      try {
        return [buckets, pickSlotBucket(buckets, masked)];
      } catch (error) {
        return [buckets, (error as Error).message];
      }
    });
    assert.deepEqual(python, ours);
    assert.deepEqual(
      ours[5][1],
      "the batch has 81 masked patches, more than the 80 slots of the largest bucket",
    );
  },
});

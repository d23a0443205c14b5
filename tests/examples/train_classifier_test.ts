import { assert } from "../assert.ts";
import { trainClassifier } from "../../examples/train_classifier.ts";

Deno.test("the worked classifier example lowers its loss well below chance", async () => {
  const losses = await trainClassifier({ steps: 120 });
  const first = losses.slice(0, 10).reduce((a, b) => a + b) / 10;
  const last = losses.slice(-10).reduce((a, b) => a + b) / 10;
  // Chance level for 3 classes is ln 3 ≈ 1.10.
  assert(first > 0.8, `the first losses (${first}) should be near chance`);
  assert(last < 0.15, `the last losses (${last}) should be far below chance`);
});

import { assertClose } from "../assert.ts";
import { checkGradients } from "../graph/gradcheck.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { softmax } from "../../lib/graph/nn.ts";
import { softTargetCrossEntropy } from "../../lib/losses/soft_target_ce.ts";
import { CompiledGraph } from "../../lib/runtime/session.ts";

Deno.test("soft-target cross-entropy is the batch mean of Σ −t·log softmax(z)", async () => {
  const [batch, classes] = [2, 3];
  const logits = Float32Array.of(1, 2, 3, -1, 0.5, 0);
  const targets = Float32Array.of(0.2, 0.3, 0.5, 0.9, 0.05, 0.05);
  const g = new Graph("ce");
  const z = g.input("z", "float32", [batch, classes]);
  const t = g.input("t", "float32", [batch, classes]);
  g.output("loss", softTargetCrossEntropy(z, t));
  const session = await CompiledGraph.create(g, { threads: 1 });
  const out = await session.run({ z: logits, t: targets });
  await session.release();
  let expected = 0;
  for (let b = 0; b < batch; b++) {
    const row = Array.from(logits.subarray(b * classes, (b + 1) * classes));
    const logSum = Math.log(row.reduce((s, v) => s + Math.exp(v), 0));
    row.forEach((v, c) => expected -= targets[b * classes + c] * (v - logSum));
  }
  assertClose(out.loss as Float32Array, [expected / batch], 1e-6, 0);
});

Deno.test("soft-target cross-entropy gradients match finite differences", () =>
  checkGradients(
    (z, t) => softTargetCrossEntropy(z, softmax(t)),
    [[4, 5], [4, 5]],
  ));

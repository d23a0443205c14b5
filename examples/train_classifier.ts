/**
 * A worked example of training with the toolkit: a two-layer MLP classifies points drawn from
 * Gaussian blobs. The model, the cross-entropy loss, the backward pass (our autodiff) and AdamW
 * are one ONNX graph; onnxruntime runs it each step; parameters and moments live in a StateStore.
 *
 * Run it: `deno task example:classifier`.
 *
 * @module
 */

import { Graph } from "../lib/graph/graph.ts";
import { grad } from "../lib/graph/grad.ts";
import { mean } from "../lib/graph/reduce.ts";
import { crossEntropySoft, gelu, logSoftmax } from "../lib/graph/nn.ts";
import { linear } from "../lib/models/layers.ts";
import {
  adamwScalars,
  adamwScalarValues,
  addAdamWMoments,
  applyAdamW,
} from "../lib/optim/adamw.ts";
import { Rng } from "../lib/runtime/rng.ts";
import { CompiledGraph } from "../lib/runtime/session.ts";
import { StateStore } from "../lib/runtime/store.ts";

/** Settings of the example. */
export interface ClassifierExampleOptions {
  readonly steps?: number;
  readonly batch?: number;
  readonly classes?: number;
  readonly features?: number;
  readonly hidden?: number;
  readonly lr?: number;
  readonly seed?: number;
  /** Called after each step with the step number (from 1) and the loss. */
  readonly onStep?: (step: number, loss: number) => void;
}

/** Trains the classifier and returns the loss of every step. */
export async function trainClassifier(options: ClassifierExampleOptions = {}): Promise<number[]> {
  const { steps = 150, batch = 64, classes = 3, features = 8, hidden = 32, lr = 1e-2, seed = 0 } =
    options;

  // The training graph: logits → cross-entropy → gradients → AdamW.
  const g = new Graph("classifier");
  const x = g.input("x", "float32", [batch, features]);
  const target = g.input("target", "float32", [batch, classes]);
  const logits = linear(g, "fc2", gelu(linear(g, "fc1", x, hidden)), classes);
  const loss = mean(crossEntropySoft(target, logSoftmax(logits)));
  g.output("loss", loss);
  const params = g.params.map((p) => g.paramTensor(p.name));
  const grads = grad(loss, params);
  applyAdamW(
    g,
    params.map((p, i) => ({ param: p, grad: grads[i], decay: p.rank > 1 })),
    adamwScalars(g),
  );
  const session = await CompiledGraph.create(g);

  // State: parameters from their init rules, zero moments.
  const store = StateStore.fromParams(g.params, seed);
  const stateNames = addAdamWMoments(store, store.names());

  // Data: one Gaussian blob per class around a random centre.
  const rng = new Rng(seed + 1);
  const centres = Array.from(
    { length: classes },
    () => Array.from({ length: features }, () => 2 * rng.normal()),
  );
  const feeds: Record<string, Float32Array> = {
    x: new Float32Array(batch * features),
    target: new Float32Array(batch * classes),
  };
  for (const name of stateNames) feeds[name] = store.get(name);

  const losses: number[] = [];
  for (let step = 1; step <= steps; step++) {
    feeds.target.fill(0);
    for (let b = 0; b < batch; b++) {
      const label = rng.int(classes);
      feeds.target[b * classes + label] = 1;
      for (let f = 0; f < features; f++) {
        feeds.x[b * features + f] = centres[label][f] + rng.normal();
      }
    }
    for (const [name, value] of Object.entries(adamwScalarValues(lr, 0.01, step))) {
      feeds[name] = Float32Array.of(value);
    }
    const out = await session.run(feeds);
    store.commitNext(out as Record<string, Float32Array>, stateNames);
    const value = (out.loss as Float32Array)[0];
    losses.push(value);
    options.onStep?.(step, value);
  }
  await session.release();
  return losses;
}

if (import.meta.main) {
  await trainClassifier({
    onStep: (step, loss) => {
      if (step === 1 || step % 25 === 0) {
        console.log(`step ${String(step).padStart(3)}  loss ${loss.toFixed(4)}`);
      }
    },
  });
}

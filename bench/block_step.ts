/**
 * The training step of one ViT-Tiny block (batch 64, 65 tokens, width 192, 3 heads, MLP 768):
 * forward, loss Σ y·r, backward, and AdamW over every parameter. Shared by the `deno bench` file
 * and the comparison with PyTorch.
 */

import { Graph } from "../lib/graph/graph.ts";
import { grad } from "../lib/graph/grad.ts";
import { mul } from "../lib/graph/math.ts";
import { sum } from "../lib/graph/reduce.ts";
import { transformerBlock } from "../lib/models/block.ts";
import {
  adamwScalars,
  adamwScalarValues,
  addAdamWMoments,
  applyAdamW,
} from "../lib/optim/adamw.ts";
import { Rng } from "../lib/runtime/rng.ts";
import { CompiledGraph, type CompileOptions } from "../lib/runtime/session.ts";
import { StateStore } from "../lib/runtime/store.ts";

/** The benchmark's shape: the ViT-Tiny block of the issue. */
export const BLOCK_BENCH = { batch: 64, tokens: 65, width: 192, heads: 3, mlpHidden: 768 } as const;

/** A ready-to-run block training step; `step()` runs one iteration and updates the state. */
export interface BlockStep {
  step(): Promise<void>;
  readonly session: CompiledGraph;
}

/** Builds, compiles and initialises the block training step. */
export async function prepareBlockStep(options: CompileOptions = {}): Promise<BlockStep> {
  const { batch, tokens, width, heads, mlpHidden } = BLOCK_BENCH;
  const g = new Graph("block_step");
  const x = g.input("x", "float32", [batch, tokens, width]);
  const r = g.input("r", "float32", [batch, tokens, width]);
  const y = transformerBlock(g, x, { heads, mlpHidden }).out;
  const loss = sum(mul(y, r));
  g.output("loss", loss);
  const params = g.params.map((p) => g.paramTensor(p.name));
  const grads = grad(loss, params);
  applyAdamW(
    g,
    params.map((p, i) => ({
      param: p,
      grad: grads[i],
      decay: p.rank > 1 && !p.name.endsWith(".bias"),
    })),
    adamwScalars(g),
  );
  const session = await CompiledGraph.create(g, options);

  const store = StateStore.fromParams(g.params, 0);
  const stateNames = addAdamWMoments(store, store.names());
  const rng = new Rng(1);
  const data = () => Float32Array.from({ length: batch * tokens * width }, () => rng.normal());
  const feeds: Record<string, Float32Array> = { x: data(), r: data() };
  for (const name of stateNames) feeds[name] = store.get(name);
  let steps = 0;
  return {
    session,
    async step() {
      steps += 1;
      for (const [name, value] of Object.entries(adamwScalarValues(1e-4, 0.04, steps))) {
        feeds[name] = Float32Array.of(value);
      }
      const out = await session.run(feeds);
      store.commitNext(out as Record<string, Float32Array>, stateNames);
    },
  };
}

/**
 * Part-wise linear probing (official `analysis/linear_part/eval.py`): how much of the class a few
 * patch tokens carry. For each image, the last block's attention from the CLS token to the
 * patches, averaged over the heads, ranks the patches; the feature is the mean of the last
 * block's output tokens of the top k patches (`--topk`, official 4; the bottom k with
 * `--reverse_top`). The official model is built with mean pooling, which replaces the final norm
 * by Identity, so these tokens are not final-normed. A sweep of linear classifiers
 * (`Linear(D, classes)`, SGD, `lib/eval/linear.ts`) is trained on those features.
 *
 * The official script trains on RandomResizedCrop + flip views for 100 epochs; here the features
 * of the train and test splits are extracted once through the evaluation transform (the fast path
 * of `deno task linear`), every k from the same forward pass.
 *
 * @module
 */

import { Graph } from "../graph/graph.ts";
import { mean } from "../graph/reduce.ts";
import { reshape, slice } from "../graph/shape.ts";
import { evalBatches } from "../data/loader.ts";
import type { SourceSpec } from "../data/source.ts";
import { vit } from "../models/vit.ts";
import { CompiledGraph, type ExecutionProvider } from "../runtime/session.ts";
import { backboneStore, type LoadedBackbone, requireVit } from "../checkpoint/backbone_file.ts";
import type { LabelledFeatures, LinearProbeOptions, LinearProbeResult } from "../eval/linear.ts";
import { trainLinearProbes } from "../eval/linear.ts";

const PREFIX = "model";

/**
 * The mean of the tokens [N, D] (rows of `tokens` from `offset`) of the `k` patches with the
 * largest `attention` [N] (the smallest with `reverse`), written to `out` [D]. Ties keep the lower
 * patch first.
 */
export function partFeature(
  tokens: Float32Array,
  attention: ArrayLike<number>,
  dim: number,
  k: number,
  reverse: boolean,
  out: Float32Array,
): void {
  const n = attention.length;
  if (!Number.isInteger(k) || k < 1 || k > n) throw new Error(`topk ${k} is outside [1, ${n}]`);
  const sign = reverse ? -1 : 1;
  const order = Array.from({ length: n }, (_, i) => i)
    .sort((a, b) => sign * (attention[b] - attention[a]) || a - b);
  out.fill(0);
  for (let j = 0; j < k; j++) {
    const row = order[j] * dim;
    for (let d = 0; d < dim; d++) out[d] += tokens[row + d] / k;
  }
}

/** Part features of a split: for each k, [n, D] rows and the labels [n]. */
export interface PartFeatures {
  /** Feature width D. */
  readonly dim: number;
  /** Labels [n]. */
  readonly labels: Int32Array;
  /** k → features [n, D]. */
  readonly features: Map<number, Float32Array>;
}

/** Options of {@link extractPartFeatures}. */
export interface PartFeatureOptions {
  /** Numbers of top patches (each ≥ 1). */
  readonly topks: readonly number[];
  /** Take the least attended patches instead (`--reverse_top`). */
  readonly reverse?: boolean;
  /** Input side in pixels (a multiple of the patch size). */
  readonly size: number;
  /** Images per run (default 128). */
  readonly batch?: number;
  /** Data-loading workers. */
  readonly workers?: number;
  /** Where the network runs (default `cpu`). */
  readonly device?: ExecutionProvider;
  /** Called after each batch with the images done and the total. */
  readonly onBatch?: (done: number, total: number) => void;
}

/**
 * The graph: images [B, 3, S, S] → the last block's patch tokens [B, N, D] (`patch_tokens`, not
 * final-normed) and its CLS → patch attention averaged over the heads [B, N] (`cls_attention`).
 */
export function buildPartGraph(loaded: LoadedBackbone, batch: number, size: number): Graph {
  const vitBackbone = requireVit(
    loaded,
    "part-wise linear probing",
    "it ranks patch tokens by the CLS token's attention",
  );
  const g = new Graph("ibot_linear_part");
  const images = g.input("images", "float32", [batch, 3, size, size]);
  g.scope(PREFIX, () => {
    const out = vit(g, { ...vitBackbone.config, maskedImModeling: false }, { images });
    const tokens = out.lastBlock.shape[1];
    g.output("patch_tokens", slice(out.lastBlock, [1], [tokens], [1]));
    const clsRow = slice(out.lastAttention, [0, 1], [1, tokens], [2, 3]);
    g.output("cls_attention", reshape(mean(clsRow, [1]), [batch, tokens - 1]));
  });
  return g;
}

/** The part features of every image of `source`, for each k of `options.topks`. */
export async function extractPartFeatures(
  loaded: LoadedBackbone,
  source: SourceSpec,
  options: PartFeatureOptions,
): Promise<PartFeatures> {
  const batch = options.batch ?? 128;
  const graph = buildPartGraph(loaded, batch, options.size);
  const store = backboneStore(loaded, PREFIX);
  const feeds: Record<string, Float32Array> = {};
  for (const p of graph.params) feeds[p.name] = store.get(p.name);
  const session = await CompiledGraph.create(graph, {
    executionProviders: [options.device ?? "cpu"],
  });
  const dim = loaded.config.embedDim;
  const rows = new Map(options.topks.map((k) => [k, [] as Float32Array[]]));
  const labels: number[] = [];
  try {
    const batches = evalBatches(source, options.size, batch, options.workers);
    for await (const b of batches) {
      feeds.images = b.images;
      const out = await session.run(feeds);
      const tokens = out.patch_tokens as Float32Array;
      const attention = out.cls_attention as Float32Array;
      const n = attention.length / batch;
      for (const k of options.topks) {
        const chunk = new Float32Array(b.count * dim);
        for (let i = 0; i < b.count; i++) {
          partFeature(
            tokens.subarray(i * n * dim, (i + 1) * n * dim),
            attention.subarray(i * n, (i + 1) * n),
            dim,
            k,
            options.reverse ?? false,
            chunk.subarray(i * dim, (i + 1) * dim),
          );
        }
        rows.get(k)!.push(chunk);
      }
      for (let i = 0; i < b.count; i++) labels.push(b.labels[i]);
      options.onBatch?.(labels.length, b.total);
    }
  } finally {
    await session.release();
  }
  const features = new Map<number, Float32Array>();
  for (const [k, chunks] of rows) {
    const all = new Float32Array(labels.length * dim);
    let offset = 0;
    for (const c of chunks) {
      all.set(c, offset);
      offset += c.length;
    }
    features.set(k, all);
  }
  return { dim, labels: Int32Array.from(labels), features };
}

/** The probe of one k: the best classifier of the sweep. */
export interface PartProbeResult {
  /** Number of top (or bottom) patches averaged. */
  readonly k: number;
  /** The best learning rate's result (top-1 and top-5 in percent). */
  readonly best: LinearProbeResult;
}

/** Trains the linear sweep on the part features of each k and returns each k's best result. */
export async function probeParts(
  train: PartFeatures,
  test: PartFeatures,
  options: LinearProbeOptions,
): Promise<PartProbeResult[]> {
  let classes = 0;
  for (const split of [train, test]) {
    for (const label of split.labels) classes = Math.max(classes, label + 1);
  }
  const results: PartProbeResult[] = [];
  for (const k of train.features.keys()) {
    const split = (s: PartFeatures): LabelledFeatures => ({
      features: s.features.get(k)!,
      labels: s.labels,
    });
    const report = await trainLinearProbes(split(train), split(test), train.dim, classes, options);
    results.push({ k, best: report.best });
  }
  return results;
}

/**
 * Unsupervised classification (official `evaluation/unsupervised/unsup_cls.py`): the network of
 * a full checkpoint — backbone and projection head — assigns each image of a split, through the
 * evaluation transform, to the argmax of its CLS prototype logits, and that cluster id is scored
 * against the true labels by NMI, ARI, the Fowlkes–Mallows F and the Hungarian-matched accuracy.
 *
 * The matching is one to one, so the accuracy means what the official note says only when the
 * head has as many prototypes (`out_dim`) as the data has classes. With more prototypes, at most
 * one cluster per class is matched and the images of every other cluster count as wrong; NMI,
 * ARI and F compare the two partitions whatever their numbers of groups.
 *
 * @module
 */

import { Graph } from "../graph/graph.ts";
import { argMax } from "../graph/reduce.ts";
import { reshape, slice } from "../graph/shape.ts";
import { type BackboneConfig, backboneTokens } from "../models/backbone.ts";
import { clsLastLayer, headBottleneck, type HeadConfig } from "../models/head.ts";
import { backboneStore, type LoadedBackbone } from "../checkpoint/backbone_file.ts";
import { evalBatches } from "../data/loader.ts";
import type { SourceSpec } from "../data/source.ts";
import { CompiledGraph, type ExecutionProvider } from "../runtime/session.ts";
import { Progress, type ProgressWriter } from "../runtime/progress.ts";
import { type ClusterMetrics, clusterMetrics } from "../train/cluster_metrics.ts";
import { hungarianAccuracy } from "./hungarian.ts";

/** Name of the cluster graph's image input [B, 3, S, S] and cluster output [B] (int64). */
export const CLUSTER_IO = { images: "images", clusters: "clusters" } as const;

const PREFIX = "model";

/**
 * The CLS head of a file's head weights (keys without `head.`): `out_dim` prototypes after the
 * MLP; a file without them is one sentence.
 */
export function clsHeadConfig(loaded: LoadedBackbone): HeadConfig {
  const shape = (name: string): number[] => {
    const t = loaded.head.get(name);
    if (!t) {
      throw new Error(
        `${loaded.path} holds no head weights (head.${name} is missing); unsupervised ` +
          `classification needs a full checkpoint with the projection head`,
      );
    }
    return t.shape;
  };
  const outDim = shape("last_layer.weight_v")[0];
  return {
    outDim,
    patchOutDim: outDim,
    sharedHead: true,
    hiddenDim: shape("mlp.0.weight")[0],
    bottleneckDim: shape("mlp.4.weight")[0],
  };
}

/**
 * The graph images [batch, 3, size, size] → cluster ids [batch]: the backbone's final-normed CLS
 * token (a Swin's pooled token) through the head MLP, L2 normalisation and the weight-normalised
 * last layer, then the argmax over the `outDim` prototypes (the first on ties). Its parameters
 * are `model.backbone.*` and `model.head.*`.
 */
export function buildClusterGraph(
  backbone: BackboneConfig,
  head: HeadConfig,
  batch: number,
  size: number,
): Graph {
  const g = new Graph("ibot_unsup_cls");
  const images = g.input(CLUSTER_IO.images, "float32", [batch, 3, size, size]);
  const logits = g.scope(PREFIX, () => {
    const tokens = backboneTokens(g, backbone, false, { images });
    const cls = reshape(slice(tokens, [0], [1], [1]), [batch, tokens.shape[2]]);
    return clsLastLayer(g, head, headBottleneck(g, head, cls));
  });
  g.output(CLUSTER_IO.clusters, argMax(logits, 1));
  return g;
}

/** Options of {@link assignClusters}. */
export interface UnsupClsOptions {
  /** Input side in pixels (a multiple of the patch size). */
  readonly size: number;
  /** Images per run (default 128). */
  readonly batch?: number;
  /** Data-loading workers. */
  readonly workers?: number;
  /** onnxruntime threads. */
  readonly threads?: number;
  /** Where the graph runs (default `cpu`). */
  readonly device?: ExecutionProvider;
  /** Where progress lines go; default none. */
  readonly progress?: ProgressWriter;
}

/** Each image's cluster and true label, in dataset order. */
export interface ClusterAssignment {
  /** [n] argmax prototype of each image, 0 … outDim − 1. */
  readonly clusters: Int32Array;
  /** [n] class index of each image. */
  readonly labels: Int32Array;
  /** Number of prototypes of the head (`out_dim`). */
  readonly outDim: number;
}

/**
 * The argmax prototype of every image of `source` (evaluation transform at `options.size`) under
 * `loaded`'s backbone and head (which must be present).
 */
export async function assignClusters(
  loaded: LoadedBackbone,
  source: SourceSpec,
  options: UnsupClsOptions,
): Promise<ClusterAssignment> {
  const head = clsHeadConfig(loaded);
  const batch = options.batch ?? 128;
  const graph = buildClusterGraph(loaded.config, head, batch, options.size);
  const store = backboneStore(loaded, PREFIX);
  for (const [name, t] of loaded.head) {
    store.set(`${PREFIX}.head.${name}`, Float32Array.from(t.data as Float32Array), [...t.shape]);
  }
  const feeds: Record<string, Float32Array> = {};
  for (const param of graph.params) feeds[param.name] = store.get(param.name);
  const session = await CompiledGraph.create(graph, {
    threads: options.threads,
    executionProviders: [options.device ?? "cpu"],
  });
  const clusters: number[] = [];
  const labels: number[] = [];
  const progress = new Progress({ label: "clusters", write: options.progress });
  try {
    for await (const b of evalBatches(source, options.size, batch, options.workers)) {
      feeds[CLUSTER_IO.images] = b.images;
      const out = await session.run(feeds);
      const ids = out[CLUSTER_IO.clusters] as BigInt64Array;
      for (let i = 0; i < b.count; i++) {
        clusters.push(Number(ids[i]));
        labels.push(b.labels[i]);
      }
      progress.update(labels.length, b.total);
    }
  } finally {
    await session.release();
  }
  progress.finish();
  return {
    clusters: Int32Array.from(clusters),
    labels: Int32Array.from(labels),
    outDim: head.outDim,
  };
}

/** What the official script prints, and the sizes behind it. */
export interface UnsupClsResult extends ClusterMetrics {
  /** Hungarian-matched accuracy in [0, 1] (the official `ACC`). */
  readonly acc: number;
  /** Images scored. */
  readonly images: number;
  /** Distinct classes among the images. */
  readonly classes: number;
  /** Distinct clusters the images fell into. */
  readonly occupied: number;
}

/** NMI, ARI, F and the Hungarian accuracy of cluster ids against labels (`eval_pred`). */
export function scoreClusters(
  clusters: ArrayLike<number>,
  labels: ArrayLike<number>,
): UnsupClsResult {
  return {
    ...clusterMetrics(clusters, labels),
    acc: hungarianAccuracy(clusters, labels),
    images: labels.length,
    classes: new Set(Array.from(labels)).size,
    occupied: new Set(Array.from(clusters)).size,
  };
}

/**
 * One sentence when `outDim` prototypes cannot be matched one to one with `classes` classes
 * (undefined when the numbers agree): what the accuracy then measures.
 */
export function prototypeCountWarning(outDim: number, classes: number): string | undefined {
  if (outDim === classes) return undefined;
  return outDim > classes
    ? `the head has ${outDim} prototypes for ${classes} classes, so the one-to-one matching ` +
      `pairs at most ${classes} clusters with classes and the images of every other cluster ` +
      `count as wrong in ACC (NMI, ARI and F compare the partitions as they are)`
    : `the head has ${outDim} prototypes for ${classes} classes, so at most ${outDim} classes ` +
      `can be matched and the images of the others count as wrong in ACC (NMI, ARI and F ` +
      `compare the partitions as they are)`;
}

/**
 * k-NN evaluation of a backbone held in a state store (§6.1): features of the train and test
 * splits through the evaluation transform, L2-normalised, classified by weighted k-NN.
 *
 * @module
 */

import { type EvalBatch, evalBatches } from "../data/loader.ts";
import { resolveDataPath, type SourceSpec } from "../data/source.ts";
import type { BackboneConfig } from "../models/backbone.ts";
import { CompiledGraph, type ExecutionProvider } from "../runtime/session.ts";
import { Progress, type ProgressWriter } from "../runtime/progress.ts";
import type { StateStore } from "../runtime/store.ts";
import type { Communicator } from "../runtime/mpi.ts";
import { buildFeatureGraph, FEATURE_IO } from "../models/features.ts";
import { knnClassify, type KnnResult, l2NormalizeRows } from "./knn.ts";

/** Options of {@link extractFeatures} and {@link evaluateKnn}. */
export interface FeatureOptions {
  /** The backbone's architecture. */
  readonly backbone: BackboneConfig;
  /** Scope of the backbone in the store: `teacher` or `student`. */
  readonly prefix: string;
  /** Input side in pixels. */
  readonly size: number;
  /** Images per run (default 128). */
  readonly batch?: number;
  /** `avgpool_patchtokens`: 0 CLS tokens, 1 mean patch token, 2 both (default 0). */
  readonly avgpool?: 0 | 1 | 2;
  /** Number of last blocks whose CLS tokens are used (`n_last_blocks`, default 1). */
  readonly nLastBlocks?: number;
  /** Data-loading workers. */
  readonly workers?: number;
  /** onnxruntime threads. */
  readonly threads?: number;
  /**
   * Where the feature graph runs (default `cpu`); with `cuda` each run copies the batch and the
   * weights to the GPU and the features back.
   */
  readonly device?: ExecutionProvider;
  /** Where progress lines go (images done, images/s, time left, every few seconds); default none. */
  readonly progress?: ProgressWriter;
  /**
   * The processes of a data-parallel job: each extracts the features of its part of the images,
   * and every rank ends with all of them, in order (default: this process alone).
   */
  readonly communicator?: Communicator;
}

/** Features [n, dim] (not normalised) and labels [n] of a dataset split. */
export interface ExtractedFeatures {
  /** [n, dim], row-major. */
  readonly features: Float32Array;
  /** [n] class indices. */
  readonly labels: Int32Array;
  /** Feature width. */
  readonly dim: number;
}

/**
 * The backbone's feature graph compiled once, for extracting the features of many batch streams
 * (the test split once and the augmented train split every epoch, say); call
 * {@link FeatureExtractor.close} when done.
 */
export class FeatureExtractor {
  /** Feature width. */
  readonly dim: number;
  /** Images per run: every batch given to {@link FeatureExtractor.extract} has this many rows. */
  readonly batch: number;
  readonly #session: CompiledGraph;
  readonly #feeds: Record<string, Float32Array>;

  private constructor(
    session: CompiledGraph,
    feeds: Record<string, Float32Array>,
    dim: number,
    batch: number,
  ) {
    this.#session = session;
    this.#feeds = feeds;
    this.dim = dim;
    this.batch = batch;
  }

  /** Builds and compiles the feature graph of `options` with the weights of `store`. */
  static async create(store: StateStore, options: FeatureOptions): Promise<FeatureExtractor> {
    const batch = options.batch ?? 128;
    const { graph, dim } = buildFeatureGraph({
      backbone: options.backbone,
      batch,
      size: options.size,
      avgpool: options.avgpool ?? 0,
      nLastBlocks: options.nLastBlocks ?? 1,
      prefix: options.prefix,
    });
    const session = await CompiledGraph.create(graph, {
      threads: options.threads,
      executionProviders: [options.device ?? "cpu"],
    });
    const feeds: Record<string, Float32Array> = {};
    for (const p of graph.params) feeds[p.name] = store.get(p.name);
    return new FeatureExtractor(session, feeds, dim, batch);
  }

  /**
   * Features [n, dim] (not normalised) and labels [n] of the real rows (the first `count` of each
   * batch) of `batches`, in order. Each batch holds {@link FeatureExtractor.batch} images.
   * `progress`, when given, counts the images and is finished at the end.
   */
  async extract(
    batches: AsyncIterable<EvalBatch>,
    progress?: Progress,
  ): Promise<ExtractedFeatures> {
    const { dim } = this;
    const rows: Float32Array[] = [];
    const labels: number[] = [];
    for await (const b of batches) {
      this.#feeds[FEATURE_IO.images] = b.images;
      const out = await this.#session.run(this.#feeds);
      rows.push((out[FEATURE_IO.features] as Float32Array).slice(0, b.count * dim));
      for (let i = 0; i < b.count; i++) labels.push(b.labels[i]);
      progress?.update(labels.length, b.total);
    }
    progress?.finish();
    return { features: concatenate(rows), labels: Int32Array.from(labels), dim };
  }

  /** Releases the compiled graph. */
  async close(): Promise<void> {
    await this.#session.release();
  }
}

/**
 * Features [n, dim] (not normalised) and labels [n] of every image of a source, in order;
 * progress lines, when `options.progress` is given, start with `label`.
 */
export async function extractFeatures(
  store: StateStore,
  source: SourceSpec,
  options: FeatureOptions,
  label = "features",
): Promise<ExtractedFeatures> {
  const comm = options.communicator;
  const part = { rank: comm?.rank ?? 0, parts: comm?.size ?? 1 };
  const extractor = await FeatureExtractor.create(store, options);
  let local: ExtractedFeatures;
  try {
    local = await extractor.extract(
      evalBatches(source, options.size, extractor.batch, options.workers, undefined, part),
      new Progress({ label, write: options.progress }),
    );
  } finally {
    await extractor.close();
  }
  if (!comm || comm.size === 1) return local;
  const features = await comm.allgather(local.features);
  const labels = await comm.allgather(Float32Array.from(local.labels));
  return {
    features: concatenate(features),
    labels: Int32Array.from(concatenate(labels)),
    dim: local.dim,
  };
}

/** The arrays one after the other. */
function concatenate(parts: readonly Float32Array[]): Float32Array {
  const all = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    all.set(p, offset);
    offset += p.length;
  }
  return all;
}

/** Features and labels of the train and test splits of `dataPath`. */
export async function extractTrainAndTest(
  store: StateStore,
  dataPath: string,
  options: FeatureOptions,
): Promise<{ train: ExtractedFeatures; test: ExtractedFeatures }> {
  return {
    train: await extractFeatures(
      store,
      await resolveDataPath(dataPath, "train"),
      options,
      "train features",
    ),
    test: await extractFeatures(
      store,
      await resolveDataPath(dataPath, "test"),
      options,
      "test features",
    ),
  };
}

/** Weighted k-NN top-1/top-5 of a backbone on `dataPath`'s train and test splits. */
export async function evaluateKnn(
  store: StateStore,
  dataPath: string,
  options: FeatureOptions & { readonly ks?: readonly number[]; readonly temperature?: number },
): Promise<KnnResult[]> {
  const { train, test } = await extractTrainAndTest(store, dataPath, options);
  l2NormalizeRows(train.features, train.dim);
  l2NormalizeRows(test.features, test.dim);
  let classes = 0;
  for (const labels of [train.labels, test.labels]) {
    for (const label of labels) classes = Math.max(classes, label + 1);
  }
  const progress = new Progress({ label: "k-NN", unit: "test images", write: options.progress });
  const results = knnClassify(
    train.features,
    train.labels,
    test.features,
    test.labels,
    train.dim,
    classes,
    options.ks,
    options.temperature,
    (done, total) => progress.update(done, total),
  );
  progress.finish();
  return results;
}

/**
 * k-NN evaluation of a backbone held in a state store (§6.1): features of the train and test
 * splits through the evaluation transform, L2-normalised, classified by weighted k-NN. The
 * features stay in memory, or, with a features folder, are streamed to feature files as they are
 * extracted (the official `--dump_features`) and classified from there a block at a time; a
 * folder written before can be classified again without the backbone (`--load_features`).
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
import { join } from "node:path";
import { type FeatureBank, l2NormalizeRows, memoryBank } from "./feature_bank.ts";
import { FeatureFile, FeatureFileWriter } from "./feature_file.ts";
import { knnClassify, type KnnOptions, type KnnResult } from "./knn.ts";

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
    const rows: Float32Array[] = [];
    const labels: number[] = [];
    await this.stream(batches, (features, batchLabels) => {
      rows.push(features);
      labels.push(...batchLabels);
      return Promise.resolve();
    }, progress);
    return { features: concatenate(rows), labels: Int32Array.from(labels), dim: this.dim };
  }

  /**
   * Hands the features [count, dim] (not normalised, a fresh array) and labels [count] of each
   * batch's real rows to `take`, in order, as they are computed, with the number of images the
   * whole iteration delivers; nothing is kept. `progress`, when given, counts the images and is
   * finished at the end.
   */
  async stream(
    batches: AsyncIterable<EvalBatch>,
    take: (features: Float32Array, labels: Int32Array, total: number) => Promise<void>,
    progress?: Progress,
  ): Promise<void> {
    const { dim } = this;
    let done = 0;
    for await (const b of batches) {
      this.#feeds[FEATURE_IO.images] = b.images;
      const out = await this.#session.run(this.#feeds);
      const features = (out[FEATURE_IO.features] as Float32Array).slice(0, b.count * dim);
      await take(features, b.labels.slice(0, b.count), b.total);
      done += b.count;
      progress?.update(done, b.total);
    }
    progress?.finish();
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

/** Which images of the splits to use. */
export interface SplitOptions {
  /** A subset file (one image name a line) that restricts the train split (`--train_subset`). */
  readonly trainSubset?: string;
}

/**
 * Features and labels of the train and test splits of `dataPath` (the train split restricted to
 * `options.trainSubset` when given).
 */
export async function extractTrainAndTest(
  store: StateStore,
  dataPath: string,
  options: FeatureOptions & SplitOptions,
): Promise<{ train: ExtractedFeatures; test: ExtractedFeatures }> {
  return {
    train: await extractFeatures(
      store,
      await resolveDataPath(dataPath, "train", options.trainSubset),
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

/**
 * Streams the features of every image of a source, L2-normalised, into a new feature file at
 * `path` (see `feature_file.ts`) as they are extracted, holding one batch at a time; progress
 * lines, when `options.progress` is given, start with `label`. One process only: under a
 * data-parallel job the features are gathered in memory by {@link extractFeatures}.
 */
export async function extractFeaturesToFile(
  store: StateStore,
  source: SourceSpec,
  options: FeatureOptions,
  path: string,
  label = "features",
): Promise<void> {
  if ((options.communicator?.size ?? 1) > 1) {
    throw new Error("features are streamed to a file by one process only, not under mpirun");
  }
  const extractor = await FeatureExtractor.create(store, options);
  let writer: FeatureFileWriter | undefined;
  try {
    await extractor.stream(
      evalBatches(source, options.size, extractor.batch, options.workers),
      async (features, labels, total) => {
        writer ??= await FeatureFileWriter.create(path, total, extractor.dim);
        await writer.append(features, labels);
      },
      new Progress({ label, write: options.progress }),
    );
  } catch (error) {
    writer?.abandon();
    throw error;
  } finally {
    await extractor.close();
  }
  if (!writer) throw new Error(`${label}: the source has no images`);
  await writer.close();
}

/** The file names of a features folder, after the official `trainfeat.pth` and `testfeat.pth`. */
export const FEATURE_FILES = {
  /** L2-normalised features and labels of the train split. */
  train: "trainfeat.safetensors",
  /** L2-normalised features and labels of the test split. */
  test: "testfeat.safetensors",
} as const;

/** Options of {@link evaluateKnn}. */
export interface KnnEvalOptions
  extends FeatureOptions, SplitOptions, Omit<KnnOptions, "device" | "threads"> {
  /**
   * A folder (created if missing) where the train and test features are streamed to
   * {@link FEATURE_FILES} as they are extracted and classified from, a block at a time: the
   * official `--dump_features`, for splits larger than memory. Default: features in memory.
   */
  readonly dumpFeatures?: string;
}

/** Weighted k-NN top-1/top-5 of a backbone on `dataPath`'s train and test splits. */
export async function evaluateKnn(
  store: StateStore,
  dataPath: string,
  options: KnnEvalOptions,
): Promise<KnnResult[]> {
  if (options.dumpFeatures === undefined) {
    const { train, test } = await extractTrainAndTest(store, dataPath, options);
    return await classifyBanks(
      memoryBank(l2NormalizeRows(train.features, train.dim), train.labels, train.dim),
      memoryBank(l2NormalizeRows(test.features, test.dim), test.labels, test.dim),
      options,
    );
  }
  await Deno.mkdir(options.dumpFeatures, { recursive: true });
  for (const split of ["train", "test"] as const) {
    const subset = split === "train" ? options.trainSubset : undefined;
    await extractFeaturesToFile(
      store,
      await resolveDataPath(dataPath, split, subset),
      options,
      join(options.dumpFeatures, FEATURE_FILES[split]),
      `${split} features`,
    );
  }
  return await evaluateKnnOnFiles(options.dumpFeatures, options);
}

/**
 * Weighted k-NN top-1/top-5 of the features a folder holds ({@link FEATURE_FILES}, as
 * {@link evaluateKnn} with `dumpFeatures` writes them): the official `--load_features`, read a
 * block at a time. Feature options other than `device`, `threads` and `progress` are unused.
 */
export async function evaluateKnnOnFiles(
  folder: string,
  options: Omit<KnnOptions, "onProgress"> & Pick<FeatureOptions, "progress">,
): Promise<KnnResult[]> {
  const train = await FeatureFile.open(join(folder, FEATURE_FILES.train));
  try {
    const test = await FeatureFile.open(join(folder, FEATURE_FILES.test));
    try {
      return await classifyBanks(train, test, options);
    } finally {
      test.close();
    }
  } finally {
    train.close();
  }
}

/** k-NN of two banks with a progress line per few seconds. */
async function classifyBanks(
  train: FeatureBank,
  test: FeatureBank,
  options: Omit<KnnOptions, "onProgress"> & Pick<FeatureOptions, "progress">,
): Promise<KnnResult[]> {
  const progress = new Progress({ label: "k-NN", unit: "test images", write: options.progress });
  const results = await knnClassify(train, test, {
    ...options,
    onProgress: (done, total) => progress.update(done, total),
  });
  progress.finish();
  return results;
}

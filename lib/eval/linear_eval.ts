/**
 * Linear probing of a frozen backbone on a dataset's train and test splits (§6.2): the fast path
 * on features extracted once through the evaluation transform ({@link linearProbeCached}), and the
 * official protocol with RandomResizedCrop + flip views extracted anew every epoch
 * ({@link linearProbeAugmented}). Both train the multi-learning-rate sweep of `linear.ts`.
 *
 * @module
 */

import { evalBatches, randomCropBatches } from "../data/loader.ts";
import { resolveDataPath } from "../data/source.ts";
import { Progress } from "../runtime/progress.ts";
import type { FrozenBackbone } from "./frozen_backbone.ts";
import { type ExtractedFeatures, extractTrainAndTest, FeatureExtractor } from "./knn_eval.ts";
import {
  DEFAULT_LRS,
  type LinearProbeOptions,
  type LinearProbeReport,
  trainLinearProbes,
  trainLinearProbesPerEpoch,
} from "./linear.ts";

/** A finished probe: the sweep's report, the feature width and the number of classes. */
export interface LinearProbe {
  /** Every learning rate's result and the best classifier. */
  readonly report: LinearProbeReport;
  /** Feature width. */
  readonly dim: number;
  /** Number of classes. */
  readonly classes: number;
}

/** Where progress lines go (feature extraction and epochs every few seconds, each epoch's best). */
export type ProbeLog = (line: string) => void;

/** Number of classes: one more than the largest label of either split. */
function classCount(...splits: ExtractedFeatures[]): number {
  let max = 0;
  for (const { labels } of splits) for (const label of labels) if (label > max) max = label;
  return max + 1;
}

/** The classifiers run where the backbone does, on as many threads. */
function runtimeOptions(frozen: FrozenBackbone): LinearProbeOptions {
  return { device: frozen.features.device, threads: frozen.features.threads };
}

/** The fast path: train and test features extracted once, every epoch on the same features. */
export async function linearProbeCached(
  frozen: FrozenBackbone,
  options: LinearProbeOptions,
  log: ProbeLog = () => {},
): Promise<LinearProbe> {
  const { train, test } = await extractTrainAndTest(frozen.store, frozen.dataPath, {
    ...frozen.features,
    trainSubset: frozen.trainSubset,
    progress: log,
  });
  const classes = classCount(train, test);
  log(
    `Features: ${train.labels.length} train and ${test.labels.length} test rows of dim ` +
      `${train.dim}, ${classes} classes; sweeping ${
        (options.lrs ?? DEFAULT_LRS).length
      } learning rates`,
  );
  const epochs = options.epochs ?? 100;
  const progress = new Progress({ label: "linear classifiers", unit: "epochs", write: log });
  const report = await trainLinearProbes(train, test, train.dim, classes, {
    ...runtimeOptions(frozen),
    ...options,
    onEpoch: (epoch, results) => {
      options.onEpoch?.(epoch, results);
      progress.update(epoch, epochs);
    },
  });
  progress.finish();
  return { report, dim: train.dim, classes };
}

/** The official path: test features once, train features of fresh random crops every epoch. */
export async function linearProbeAugmented(
  frozen: FrozenBackbone,
  options: LinearProbeOptions,
  log: ProbeLog = () => {},
): Promise<LinearProbe> {
  const { size, workers } = frozen.features;
  const trainSpec = await resolveDataPath(frozen.dataPath, "train", frozen.trainSubset);
  const testSpec = await resolveDataPath(frozen.dataPath, "test");
  const extractor = await FeatureExtractor.create(frozen.store, frozen.features);
  try {
    const batchSize = extractor.batch;
    const test = await extractor.extract(
      evalBatches(testSpec, size, batchSize, workers),
      new Progress({ label: "test features", write: log }),
    );
    const epochs = options.epochs ?? 100;
    const seed = options.seed ?? 0;
    const augmented = (epoch: number): Promise<ExtractedFeatures> =>
      extractor.extract(
        randomCropBatches(trainSpec, { size, batchSize, seed, epoch, workers }),
        new Progress({
          label: `Epoch ${epoch + 1}/${epochs}: augmented train features`,
          write: log,
        }),
      );
    // The first epoch's features give the train labels, hence the class count.
    const first = await augmented(0);
    const classes = classCount(first, test);
    log(
      `Features: ${first.labels.length} train (augmented anew each epoch) and ` +
        `${test.labels.length} test rows of dim ${extractor.dim}, ${classes} classes; sweeping ` +
        `${(options.lrs ?? DEFAULT_LRS).length} learning rates`,
    );
    const report = await trainLinearProbesPerEpoch(
      (epoch) => epoch === 0 ? Promise.resolve(first) : augmented(epoch),
      test,
      extractor.dim,
      classes,
      {
        ...runtimeOptions(frozen),
        ...options,
        onEpoch: (epoch, results) => {
          options.onEpoch?.(epoch, results);
          const best = results.reduce((a, b) => b.top1 > a.top1 ? b : a);
          log(`Epoch ${epoch}: best Top1 so far ${best.top1.toFixed(2)} (lr ${best.lr})`);
        },
      },
    );
    return { report, dim: extractor.dim, classes };
  } finally {
    await extractor.close();
  }
}

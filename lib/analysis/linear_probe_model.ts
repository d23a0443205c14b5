/**
 * The linear-probed ViT of a combined checkpoint, compiled once and run on batches of images with
 * any subset or order of patch tokens (`lib/models/token_subset_features.ts`): the classifier the
 * occlusion and shuffle analyses score.
 *
 * @module
 */

import * as ort from "onnxruntime-node";
import { encodeOnnxModel } from "../graph/onnx.ts";
import { buildTokenSubsetGraph, TOKEN_SUBSET_IO } from "../models/token_subset_features.ts";
import { prepareCuda } from "../runtime/cuda_libraries.ts";
import { type ExecutionProvider, ortBindingDir } from "../runtime/session.ts";
import { backboneStore, type LoadedVit, requireVit } from "../checkpoint/backbone_file.ts";
import { type CombinedModel, readCombinedCheckpoint } from "../checkpoint/combined_checkpoint.ts";
import { type OptionTable, type OptionValues, required } from "../cli/options.ts";
import { resolveDataPath, type SourceSpec } from "../data/source.ts";
import {
  BACKBONE_FILE_OPTIONS,
  dataPathOption,
  DEVICE_OPTIONS,
  imageSizeOption,
} from "../eval/frozen_backbone.ts";

const PREFIX = "model";

/** Options of {@link LinearProbeModel.create}. */
export interface LinearProbeModelOptions {
  /** Images per run. */
  readonly batch: number;
  /** Image side in pixels, a multiple of the patch size. */
  readonly size: number;
  /** Where the network runs (default `cpu`). */
  readonly device?: ExecutionProvider;
  /** onnxruntime intra-op threads (default: every core). */
  readonly threads?: number;
}

/** A combined checkpoint's backbone and linear classifier, ready to classify images. */
export class LinearProbeModel {
  readonly #session: ort.InferenceSession;
  /** Images per run. */
  readonly batch: number;
  /** Image side in pixels. */
  readonly size: number;
  /** Patch grid side: the image holds side² patches. */
  readonly side: number;
  /** Number of classes. */
  readonly classes: number;
  /** The backbone. */
  readonly backbone: LoadedVit;

  private constructor(
    session: ort.InferenceSession,
    backbone: LoadedVit,
    options: LinearProbeModelOptions,
    classes: number,
  ) {
    this.#session = session;
    this.backbone = backbone;
    this.batch = options.batch;
    this.size = options.size;
    this.side = options.size / backbone.config.patchSize;
    this.classes = classes;
  }

  /**
   * Compiles the model's graph with its weights baked in; a Swin backbone or a head whose width
   * does not fit the backbone's features is refused in one sentence.
   */
  static async create(
    model: CombinedModel,
    options: LinearProbeModelOptions,
  ): Promise<LinearProbeModel> {
    const backbone = requireVit(
      model.backbone,
      "the occlusion and shuffle model",
      "a Swin merges patches and attends in windows of the full grid, so no patch token can be " +
        "removed or moved",
    );
    const { head } = model;
    const patch = backbone.config.patchSize;
    if (options.size % patch !== 0) {
      throw new Error(`image size ${options.size} is not a multiple of the patch size ${patch}`);
    }
    const { graph, dim } = buildTokenSubsetGraph({
      backbone: backbone.config,
      batch: options.batch,
      size: options.size,
      avgpool: head.avgpool,
      nLastBlocks: head.nLastBlocks,
      classes: head.classes,
      prefix: PREFIX,
    });
    if (dim !== head.dim) {
      throw new Error(
        `the linear head reads ${head.dim} features, but ${head.nLastBlocks} last blocks with ` +
          `avgpool ${head.avgpool} of this backbone give ${dim}`,
      );
    }
    const weights = new Map<string, Float32Array>();
    const store = backboneStore(backbone, PREFIX);
    for (const name of store.names()) weights.set(name, store.get(name));
    weights.set(`${PREFIX}.linear.weight`, head.weight);
    weights.set(`${PREFIX}.linear.bias`, head.bias);
    const device = options.device ?? "cpu";
    if (device === "cuda") prepareCuda(ortBindingDir(), ort.env.versions.common);
    const { model: bytes } = encodeOnnxModel(graph, { initializers: weights });
    const session = await ort.InferenceSession.create(bytes, {
      executionProviders: [device],
      graphOptimizationLevel: "all",
      executionMode: "sequential",
      intraOpNumThreads: options.threads ?? navigator.hardwareConcurrency,
    });
    return new LinearProbeModel(session, backbone, options, head.classes);
  }

  /** Number of patches of an image (side²). */
  get patches(): number {
    return this.side * this.side;
  }

  /**
   * Logits [batch, classes] of `images` [batch, 3, size, size] (normalised) when token j carries
   * patch `patchIndex[j]` at the position of patch `positionIndex[j]` (default: the same
   * patches in place; both default to all patches in order).
   */
  async logits(
    images: Float32Array,
    patchIndex: ArrayLike<number> = Array.from({ length: this.patches }, (_, i) => i),
    positionIndex: ArrayLike<number> = patchIndex,
  ): Promise<Float32Array> {
    const { batch, size, patches } = this;
    if (images.length !== batch * 3 * size * size) {
      throw new Error(`expected ${batch}×3×${size}×${size} image values, got ${images.length}`);
    }
    if (patchIndex.length !== positionIndex.length || patchIndex.length === 0) {
      throw new Error(
        `patch and position indices must be equally many and at least one, got ` +
          `${patchIndex.length} and ${positionIndex.length}`,
      );
    }
    const asInt64 = (values: ArrayLike<number>, what: string) => {
      const out = new BigInt64Array(values.length);
      for (let i = 0; i < values.length; i++) {
        const v = values[i];
        if (!Number.isInteger(v) || v < 0 || v >= patches) {
          throw new Error(`${what} ${v} is outside the ${patches} patches`);
        }
        out[i] = BigInt(v);
      }
      return new ort.Tensor("int64", out, [values.length]);
    };
    const out = await this.#session.run({
      [TOKEN_SUBSET_IO.images]: new ort.Tensor("float32", images, [batch, 3, size, size]),
      [TOKEN_SUBSET_IO.patchIndex]: asInt64(patchIndex, "patch index"),
      [TOKEN_SUBSET_IO.positionIndex]: asInt64(positionIndex, "position index"),
    });
    return Float32Array.from(out[TOKEN_SUBSET_IO.logits].data as Float32Array);
  }

  /** Releases the session. */
  async close(): Promise<void> {
    await this.#session.release();
  }
}

/** The options of the tasks that score a combined checkpoint (official names where they exist). */
export const LINEAR_PROBE_MODEL_OPTIONS = {
  ...DEVICE_OPTIONS,
  pretrained_weights: {
    kind: "string",
    metavar: "file",
    help: "Required: the backbone with its linear head in one file (deno task combine_ckpt).",
  },
  arch: BACKBONE_FILE_OPTIONS.arch,
  patch_size: {
    kind: "int",
    help: "Patch size when the file has no run arguments (default: from the weights).",
    min: 1,
  },
  test_data: {
    kind: "string",
    metavar: "path",
    help: "Dataset whose test split is scored (default: the one the backbone was trained on).",
  },
  img_size: {
    kind: "int",
    help: "Side of the images, a multiple of the patch size (default: the run's global crop " +
      "size, else 224).",
    min: 1,
  },
  batch_size: { kind: "int", help: "Images per run.", default: 128, min: 1 },
  num_workers: { kind: "int", help: "Data-loading workers (default: cores − 1).", min: 1 },
} as const satisfies OptionTable;

/** A combined checkpoint opened for scoring, with its test split. */
export interface OpenedLinearProbeModel {
  /** The compiled model. */
  readonly model: LinearProbeModel;
  /** The file's backbone and head. */
  readonly combined: CombinedModel;
  /** The test split. */
  readonly test: SourceSpec;
}

/** Opens `--pretrained_weights` and its test split as {@link LINEAR_PROBE_MODEL_OPTIONS} say. */
export async function openLinearProbeModel(
  values: OptionValues<typeof LINEAR_PROBE_MODEL_OPTIONS>,
): Promise<OpenedLinearProbeModel> {
  const path = required(values.pretrained_weights, "pretrained_weights");
  const combined = await readCombinedCheckpoint(path, {
    arch: values.arch,
    patchSize: values.patch_size,
  });
  const size = imageSizeOption(values.img_size, combined.backbone);
  const test = await resolveDataPath(dataPathOption(values.test_data, combined.backbone), "test");
  const model = await LinearProbeModel.create(combined, {
    batch: values.batch_size,
    size,
    device: values.device,
  });
  return { model, combined, test };
}

/** How many of the first `count` rows of `logits` [rows, classes] rank their label first. */
export function correctCount(
  logits: Float32Array,
  labels: ArrayLike<number>,
  count: number,
  classes: number,
): number {
  let correct = 0;
  for (let b = 0; b < count; b++) {
    let best = 0;
    for (let c = 1; c < classes; c++) {
      if (logits[b * classes + c] > logits[b * classes + best]) best = c;
    }
    if (best === labels[b]) correct++;
  }
  return correct;
}

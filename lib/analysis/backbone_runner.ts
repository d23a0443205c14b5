/**
 * Runs a loaded backbone (and optionally its iBOT head) on batches of images of any size that is a
 * multiple of the pixels each patch token covers, for the analyses: final-normed tokens, the
 * ViT's last-block attention, and the head's prototype logits. A ViT's patch tokens are its
 * patches; a Swin's are its last-stage tokens (32 pixels a side), after the average-pooled token
 * the head uses as CLS, as in pre-training. One compiled graph is kept per (batch, height, width).
 *
 * @module
 */

import { Graph } from "../graph/graph.ts";
import { reshape, slice } from "../graph/shape.ts";
import type { Tensor } from "../graph/tensor.ts";
import { clsLastLayer, headBottleneck, type HeadConfig, patchLastLayer } from "../models/head.ts";
import {
  type BackboneConfig,
  backboneTokens,
  backboneWidth,
  isSwin,
  patchGrid,
} from "../models/backbone.ts";
import { vit } from "../models/vit.ts";
import type { NamedTensor } from "../runtime/named_tensor.ts";
import { CompiledGraph, type ExecutionProvider } from "../runtime/session.ts";
import { backboneStore, type LoadedBackbone } from "../checkpoint/backbone_file.ts";
import type { StateStore } from "../runtime/store.ts";

/** What one run returns; arrays are row-major copies owned by the caller. */
export interface BackboneRun {
  /**
   * Final-normed tokens [B, 1 + N, D], the head's CLS first (the ViT's CLS token, the Swin's
   * average of its N last-stage tokens).
   */
  readonly tokens: Float32Array;
  /** A ViT's last-block attention probabilities [B, heads, 1 + N, 1 + N]; none for a Swin. */
  readonly attention?: Float32Array;
  /** CLS prototype logits [B, K] (with a head). */
  readonly clsLogits?: Float32Array;
  /** Patch prototype logits [B, N, Kp] (with a head). */
  readonly patchLogits?: Float32Array;
  /** Patch grid rows h = H / p and columns w = W / p (N = h·w, p the runner's patch size). */
  readonly grid: readonly [number, number];
}

/** Options of {@link BackboneRunner.create}. */
export interface BackboneRunnerOptions {
  /** Also run the head (the file must hold `head.*` weights). */
  readonly withHead?: boolean;
  /** onnxruntime intra-op threads. */
  readonly threads?: number;
  /**
   * Where the network runs (default `cpu`); with `cuda` each run copies the images and the
   * weights to the GPU and the outputs back.
   */
  readonly device?: ExecutionProvider;
}

const PREFIX = "model";

/**
 * Throws one sentence unless `--image_size` `size` is a whole number of patch tokens (of
 * {@link patchGrid} pixels: the ViT's patch, the Swin's last-stage stride 32).
 */
export function checkTokenMultiple(size: number, config: BackboneConfig): void {
  const p = patchGrid(config);
  if (size % p !== 0) {
    const what = isSwin(config) ? "last-stage token of the Swin" : "patch";
    throw new Error(`--image_size ${size} is not a multiple of ${p}, the pixels of one ${what}`);
  }
}

/** The head's shape read from its weights (keys without `head.`), or one sentence. */
export function headConfigFromWeights(path: string, head: Map<string, NamedTensor>): HeadConfig {
  const shape = (name: string) => {
    const t = head.get(name);
    if (!t) throw new Error(`${path} holds no head weights (head.${name} is missing)`);
    return t.shape;
  };
  const separate = head.get("last_layer2.weight_v");
  const outDim = shape("last_layer.weight_v")[0];
  return {
    outDim,
    patchOutDim: separate ? separate.shape[0] : outDim,
    sharedHead: !separate,
    hiddenDim: shape("mlp.0.weight")[0],
    bottleneckDim: shape("mlp.4.weight")[0],
  };
}

/** A backbone (and head) ready to run on images. */
export class BackboneRunner {
  readonly #sessions = new Map<string, { session: CompiledGraph; graph: Graph }>();
  readonly #weights: StateStore;

  private constructor(
    /** The backbone being run. */
    readonly loaded: LoadedBackbone,
    /** The head's shape when the head runs. */
    readonly head: HeadConfig | undefined,
    /** onnxruntime intra-op threads. */
    readonly threads: number | undefined,
    /** Where the network runs. */
    readonly device: ExecutionProvider,
  ) {
    this.#weights = backboneStore(loaded, PREFIX);
    if (head) {
      for (const [name, t] of loaded.head) {
        this.#weights.set(
          `${PREFIX}.head.${name}`,
          Float32Array.from(t.data as Float32Array),
          t.shape,
        );
      }
    }
  }

  /**
   * A runner over `loaded`, a ViT or a Swin; with `withHead`, the file's head weights must be
   * present.
   */
  static create(loaded: LoadedBackbone, options: BackboneRunnerOptions = {}): BackboneRunner {
    const head = options.withHead ? headConfigFromWeights(loaded.path, loaded.head) : undefined;
    return new BackboneRunner(loaded, head, options.threads, options.device ?? "cpu");
  }

  /** Pixels each patch token covers on each side: the ViT's patch, the Swin's 32. */
  get patchSize(): number {
    return patchGrid(this.loaded.config);
  }

  /** Width D of the tokens. */
  get width(): number {
    return backboneWidth(this.loaded.config);
  }

  /**
   * Runs `images` [batch, 3, height, width] (normalised) through the network. Height and width
   * must be multiples of {@link patchSize}.
   */
  async run(
    images: Float32Array,
    batch: number,
    height: number,
    width: number,
  ): Promise<BackboneRun> {
    const p = this.patchSize;
    if (height % p !== 0 || width % p !== 0) {
      throw new Error(
        `an image of ${width}×${height} pixels is not a multiple of ${p}, the pixels of a ` +
          `patch token`,
      );
    }
    if (images.length !== batch * 3 * height * width) {
      throw new Error(`expected ${batch}×3×${height}×${width} values, got ${images.length}`);
    }
    const { session, graph } = await this.#compiled(batch, height, width);
    const feeds: Record<string, Float32Array> = { images };
    for (const param of graph.params) feeds[param.name] = this.#weights.get(param.name);
    const out = await session.run(feeds);
    const copy = (name: string) => Float32Array.from(out[name] as Float32Array);
    return {
      tokens: copy("tokens"),
      attention: isSwin(this.loaded.config) ? undefined : copy("attention"),
      clsLogits: this.head ? copy("cls_logits") : undefined,
      patchLogits: this.head ? copy("patch_logits") : undefined,
      grid: [height / p, width / p],
    };
  }

  /** Releases every compiled session. */
  async close(): Promise<void> {
    for (const { session } of this.#sessions.values()) await session.release();
    this.#sessions.clear();
  }

  async #compiled(batch: number, height: number, width: number) {
    const key = `${batch}x${height}x${width}`;
    let entry = this.#sessions.get(key);
    if (!entry) {
      const graph = this.#build(batch, height, width);
      const session = await CompiledGraph.create(graph, {
        threads: this.threads,
        executionProviders: [this.device],
      });
      entry = { graph, session };
      this.#sessions.set(key, entry);
    }
    return entry;
  }

  #build(batch: number, height: number, width: number): Graph {
    const g = new Graph("ibot_analysis");
    const images = g.input("images", "float32", [batch, 3, height, width]);
    const config = this.loaded.config;
    g.scope(PREFIX, () => {
      let tokens: Tensor;
      if (isSwin(config)) {
        tokens = backboneTokens(g, config, false, { images });
      } else {
        const out = vit(g, { ...config, maskedImModeling: false }, { images });
        g.output("attention", out.lastAttention);
        tokens = out.tokens;
      }
      g.output("tokens", tokens);
      if (this.head) {
        const [, n, dim] = tokens.shape;
        const cls = reshape(slice(tokens, [0], [1], [1]), [batch, dim]);
        const patches = slice(tokens, [1], [n], [1]);
        g.output("cls_logits", clsLastLayer(g, this.head, headBottleneck(g, this.head, cls)));
        g.output(
          "patch_logits",
          patchLastLayer(g, this.head, headBottleneck(g, this.head, patches)),
        );
      }
    });
    return g;
  }
}

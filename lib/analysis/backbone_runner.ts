/**
 * Runs a loaded backbone (and optionally its iBOT head) on batches of images of any size that is a
 * multiple of the patch size, for the analyses: final-normed tokens, the last block's attention,
 * and the head's prototype logits. One compiled graph is kept per (batch, height, width).
 *
 * @module
 */

import { Graph } from "../graph/graph.ts";
import { reshape, slice } from "../graph/shape.ts";
import { clsLastLayer, headBottleneck, type HeadConfig, patchLastLayer } from "../models/head.ts";
import { vit } from "../models/vit.ts";
import type { NamedTensor } from "../runtime/named_tensor.ts";
import { CompiledGraph, type ExecutionProvider } from "../runtime/session.ts";
import {
  backboneStore,
  type LoadedBackbone,
  type LoadedVit,
  requireVit,
} from "../checkpoint/backbone_file.ts";
import type { StateStore } from "../runtime/store.ts";

/** What one run returns; arrays are row-major copies owned by the caller. */
export interface BackboneRun {
  /** Final-normed tokens [B, 1 + N, D], CLS first. */
  readonly tokens: Float32Array;
  /** The last block's attention probabilities [B, heads, 1 + N, 1 + N]. */
  readonly attention: Float32Array;
  /** CLS prototype logits [B, K] (with a head). */
  readonly clsLogits?: Float32Array;
  /** Patch prototype logits [B, N, Kp] (with a head). */
  readonly patchLogits?: Float32Array;
  /** Patch grid rows h = H / p and columns w = W / p (N = h·w). */
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
    readonly loaded: LoadedVit,
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
   * A runner over `loaded`, a ViT (its graphs read the CLS token and the last block's attention);
   * with `withHead`, the file's head weights must be present.
   */
  static create(loaded: LoadedBackbone, options: BackboneRunnerOptions = {}): BackboneRunner {
    const vit = requireVit(loaded, "the backbone runner", "it runs the ViT's graphs");
    const head = options.withHead ? headConfigFromWeights(vit.path, vit.head) : undefined;
    return new BackboneRunner(vit, head, options.threads, options.device ?? "cpu");
  }

  /** Patch size in pixels. */
  get patchSize(): number {
    return this.loaded.config.patchSize;
  }

  /**
   * Runs `images` [batch, 3, height, width] (normalised) through the network. Height and width
   * must be multiples of the patch size.
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
        `an image of ${width}×${height} pixels is not a multiple of the patch size ${p}`,
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
      attention: copy("attention"),
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
    g.scope(PREFIX, () => {
      const out = vit(g, { ...this.loaded.config, maskedImModeling: false }, { images });
      g.output("tokens", out.tokens);
      g.output("attention", out.lastAttention);
      if (this.head) {
        const n = out.tokens.shape[1];
        const cls = reshape(slice(out.tokens, [0], [1], [1]), [batch, out.tokens.shape[2]]);
        const patches = slice(out.tokens, [1], [n], [1]);
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

/**
 * The official ViT recipes of the GPU check as `deno task pretrain` flags: two 224 px global crops
 * and ten 96 px local crops, out_dim 8192 with a shared head on student and teacher,
 * norm_last_layer false, pred_ratio 0 0.3 ± 0 0.2, drop_path 0.1, clip_grad 3.0, batch 64 per step
 * (the official README's ViT-S/16 command; ViT-B/16 the same with its own architecture).
 *
 * @module
 */

/** Architectures the GPU check runs. */
export type RecipeArch = "vit_small" | "vit_base";

/** What a recipe run may change. */
export interface RecipeOptions {
  readonly arch?: RecipeArch | "vit_tiny";
  readonly device?: "cpu" | "cuda";
  readonly precision?: "fp32" | "fp16" | "bf16";
  readonly batch?: number;
  readonly globalSize?: number;
  readonly localSize?: number;
  readonly localCrops?: number;
  readonly outDim?: number;
  readonly dataPath?: string;
  readonly outputDir?: string;
}

/** The recipe's `deno task pretrain` arguments (official preset). */
export function recipeArgv(o: RecipeOptions = {}): string[] {
  return [
    ...["--preset", "official", "--arch", o.arch ?? "vit_small", "--patch_size", "16"],
    ...["--device", o.device ?? "cuda", "--precision", o.precision ?? "fp16"],
    ...["--batch_size_per_gpu", String(o.batch ?? 64)],
    ...["--global_crop_size", String(o.globalSize ?? 224)],
    ...["--local_crop_size", String(o.localSize ?? 96)],
    ...["--local_crops_number", String(o.localCrops ?? 10)],
    ...["--out_dim", String(o.outDim ?? 8192), "--patch_out_dim", String(o.outDim ?? 8192)],
    ...["--shared_head", "true", "--shared_head_teacher", "true", "--norm_last_layer", "false"],
    ...["--pred_ratio", "0", "0.3", "--pred_ratio_var", "0", "0.2"],
    ...["--drop_path", "0.1", "--clip_grad", "3.0", "--knn_eval", "false"],
    ...(o.dataPath ? ["--data_path", o.dataPath] : []),
    ...(o.outputDir ? ["--output_dir", o.outputDir] : []),
  ];
}

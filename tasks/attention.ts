/**
 * `deno task attention`: attention maps of a backbone (official `visualize_attention.py`) for an
 * image or a folder of images: per image `img.png`, `attn-head{j}.png`, `attn_color.png` and the
 * composite `attn.png`. Arguments use the official names.
 *
 *   deno task attention --pretrained_weights out/pretrain/checkpoint.safetensors --image_path x.png
 */

import { basename, extname, join } from "node:path";
import { parseArgs } from "node:util";
import { attentionMaps, attentionPictures, DEFAULT_THRESHOLD } from "../lib/analysis/attention.ts";
import { BackboneRunner } from "../lib/analysis/backbone_runner.ts";
import { savePng } from "../lib/analysis/picture.ts";
import { decodeImage, IMAGE_EXTENSIONS } from "../lib/data/image_folder.ts";
import { defaultImageSize } from "../lib/checkpoint/backbone_file.ts";
import {
  BACKBONE_FILE_HELP,
  BACKBONE_FILE_OPTIONS,
  describeBackbone,
  openBackboneFile,
  positiveInteger,
} from "../lib/eval/frozen_backbone.ts";
import { listOptions, runTask } from "./run_task.ts";

const HELP = `Usage: deno task attention --pretrained_weights FILE --image_path PATH [options]

${BACKBONE_FILE_HELP}
  --image_path PATH           an image, or a folder searched recursively for .png, .jpg, .jpeg
                              and .webp files (taken in sorted order)
  --image_size S [W]          resize to S on the shorter side, or to height S and width W; the
                              image is then cropped to a multiple of the patch size (default: the
                              backbone's training size, square)
  --threshold T               share of the attention mass the masks keep (default 0.6)
  --output_dir DIR            where the pictures go (default attention); a folder's images get
                              one sub-folder each, named by index and file name
  --show_pics N               at most N images of a folder (default 100)`;

const OPTIONS = {
  ...BACKBONE_FILE_OPTIONS,
  image_path: { type: "string" },
  image_size: { type: "string", multiple: true },
  threshold: { type: "string", default: String(DEFAULT_THRESHOLD) },
  output_dir: { type: "string", default: "attention" },
  show_pics: { type: "string", default: "100" },
  help: { type: "boolean", short: "h" },
} as const;

function main(): Promise<number> | number {
  const { values, tokens } = parseArgs({
    args: Deno.args,
    options: OPTIONS,
    allowPositionals: true,
    tokens: true,
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const sizes = listOptions(tokens, ["image_size"]).image_size ?? [];
  return run(values, sizes);
}

async function run(
  values: Record<string, string | string[] | boolean | undefined>,
  sizes: string[],
): Promise<number> {
  if (!values.image_path) throw new Error("--image_path is required (see --help)");
  const threshold = Number(values.threshold);
  if (!(threshold >= 0 && threshold <= 1)) {
    throw new Error(`--threshold must be a number in [0, 1], got ${values.threshold}`);
  }
  const showPics = positiveInteger(values, "show_pics");
  if (sizes.length > 2) {
    throw new Error(`--image_size takes one or two numbers, got ${sizes.length}`);
  }
  const imageSize = sizes.map((text) => positiveInteger({ image_size: text }, "image_size"));
  const imagePath = String(values.image_path);
  const outputDir = String(values.output_dir);
  const { folder, images } = await listImages(imagePath);
  const shown = images.slice(0, showPics);

  const loaded = await openBackboneFile(values);
  const size = imageSize.length > 0
    ? imageSize
    : [defaultImageSize(loaded), defaultImageSize(loaded)];
  const resize = size.length === 1
    ? `${size[0]} px on the shorter side`
    : `${size[1]}×${size[0]} px`;
  console.log(
    `attention maps of ${describeBackbone(loaded)} for ${shown.length} of ${images.length} ` +
      `image(s) in ${imagePath}, resized to ${resize}, threshold ${threshold}`,
  );
  const runner = BackboneRunner.create(loaded);
  try {
    const digits = String(shown.length - 1).length;
    for (const [index, path] of shown.entries()) {
      const picture = await decodeImage(path);
      const result = await attentionMaps(runner, picture, { imageSize: size, threshold });
      const pictures = attentionPictures(result);
      const dir = !folder ? outputDir : join(
        outputDir,
        `${String(index).padStart(digits, "0")}_${basename(path, extname(path))}`,
      );
      await Deno.mkdir(dir, { recursive: true });
      await savePng(join(dir, "img.png"), pictures.input);
      for (const [j, heat] of pictures.heatMaps.entries()) {
        await savePng(join(dir, `attn-head${j}.png`), heat);
      }
      await savePng(join(dir, "attn_color.png"), pictures.overlay);
      await savePng(join(dir, "attn.png"), pictures.composite);
      const { width, height } = result.picture;
      console.log(
        `[${index + 1}/${shown.length}] ${path}: ${width}×${height} px, ${result.grid[0]}×${
          result.grid[1]
        } patches, ${result.heads} heads -> ${dir}/{img,attn-head0..${result.heads - 1},` +
          `attn_color,attn}.png`,
      );
    }
  } finally {
    await runner.close();
  }
  console.log(`wrote the attention maps of ${shown.length} image(s) to ${outputDir}`);
  return 0;
}

/** The image itself, or a folder's image files found recursively, in sorted path order. */
async function listImages(path: string): Promise<{ folder: boolean; images: string[] }> {
  const info = await Deno.stat(path).catch(() => null);
  if (!info) throw new Error(`--image_path ${path} does not exist`);
  if (!info.isDirectory) return { folder: false, images: [path] };
  const found: string[] = [];
  const walk = async (folder: string) => {
    for await (const entry of Deno.readDir(folder)) {
      const child = join(folder, entry.name);
      const stat = entry.isSymlink ? await Deno.stat(child).catch(() => null) : entry;
      if (stat?.isDirectory) await walk(child);
      else if (stat?.isFile && IMAGE_EXTENSIONS.includes(extname(entry.name).toLowerCase())) {
        found.push(child);
      }
    }
  };
  await walk(path);
  if (found.length === 0) {
    throw new Error(`${path} holds no ${IMAGE_EXTENSIONS.join(", ")} image`);
  }
  return { folder: true, images: found.sort() };
}

await runTask(main);

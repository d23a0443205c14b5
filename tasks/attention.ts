/**
 * `deno task attention`: attention maps of a backbone (official `visualize_attention.py`) for an
 * image or a folder of images: per image `img.png`, `attn-head{j}.png`, `attn_color.png` and the
 * composite `attn.png`. Arguments use the official names.
 *
 *   deno task attention --pretrained_weights out/pretrain/checkpoint.safetensors --image_path x.png
 */

import { basename, extname, join } from "node:path";
import { attentionMaps, attentionPictures, DEFAULT_THRESHOLD } from "../lib/analysis/attention.ts";
import { BackboneRunner } from "../lib/analysis/backbone_runner.ts";
import { savePng } from "../lib/analysis/picture.ts";
import { decodeImage, IMAGE_EXTENSIONS } from "../lib/data/image_folder.ts";
import { defaultImageSize, requireVit } from "../lib/checkpoint/backbone_file.ts";
import {
  BACKBONE_FILE_OPTIONS,
  describeBackbone,
  DEVICE_OPTIONS,
  openBackboneFile,
} from "../lib/eval/frozen_backbone.ts";
import { type OptionTable, type OptionValues, required } from "../lib/cli/options.ts";
import { runTask } from "./run_task.ts";

const OPTIONS = {
  ...BACKBONE_FILE_OPTIONS,
  ...DEVICE_OPTIONS,
  image_path: {
    kind: "string",
    metavar: "path",
    help: "Required: an image, or a folder searched recursively for .png, .jpg, .jpeg and .webp " +
      "files (taken in sorted order).",
  },
  image_size: {
    kind: "ints",
    metavar: "S [W]",
    help: "Resize to S on the shorter side, or to height S and width W; the image is then " +
      "cropped to a multiple of the patch size (default: the backbone's training size, square).",
    min: 1,
  },
  threshold: {
    kind: "float",
    help: "Share of the attention mass the masks keep.",
    default: DEFAULT_THRESHOLD,
    min: 0,
    max: 1,
  },
  output_dir: {
    kind: "string",
    metavar: "dir",
    help: "Where the pictures go; a folder's images get one sub-folder each, named by index and " +
      "file name.",
    default: "attention",
  },
  show_pics: { kind: "int", help: "At most N images of a folder.", default: 100, min: 1 },
  panel_size: {
    kind: "int",
    metavar: "px",
    help: "Enlarge every picture by the smallest whole factor (nearest neighbour) that makes it " +
      "at least PX pixels on its shorter side (1 keeps the size the network saw).",
    default: 224,
    min: 1,
  },
} as const satisfies OptionTable;

async function main(values: OptionValues<typeof OPTIONS>): Promise<number> {
  const imagePath = required(values.image_path, "image_path");
  const { threshold, show_pics: showPics, panel_size: panelSize, output_dir: outputDir } = values;
  const imageSize = values.image_size ?? [];
  if (imageSize.length > 2) {
    throw new Error(`--image_size takes one or two numbers, got ${imageSize.length}`);
  }
  const { folder, images } = await listImages(imagePath);
  const shown = images.slice(0, showPics);

  const loaded = requireVit(
    await openBackboneFile(values),
    "deno task attention",
    "a Swin attends within windows and has no CLS token whose attention could be drawn",
  );
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
  const runner = BackboneRunner.create(loaded, { device: values.device });
  try {
    const digits = String(shown.length - 1).length;
    for (const [index, path] of shown.entries()) {
      const picture = await decodeImage(path);
      const result = await attentionMaps(runner, picture, { imageSize: size, threshold });
      const pictures = attentionPictures(result, { panelSize });
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
      const [rows, columns] = result.grid;
      const files = `{img,attn-head0..${result.heads - 1},attn_color,attn}.png`;
      console.log(
        `[${index + 1}/${shown.length}] ${path}: ${width}×${height} px, ${rows}×${columns} ` +
          `patches, ${result.heads} heads, enlarged ${pictures.scale}× -> ${dir}/${files}`,
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

await runTask({
  usage: "deno task attention --pretrained_weights FILE --image_path PATH [options]",
  about: "Self-attention maps of the last block's CLS token (official visualize_attention.py).",
  options: OPTIONS,
}, main);

import { join } from "node:path";
import sharp from "sharp";
import { assert } from "../assert.ts";
import {
  type AttentionMapsResult,
  attentionPictures,
  clsAttention,
  colorOverlay,
  COMPOSITE_GAP,
  heatMap,
  inputPicture,
  OVERLAY_COLORS,
  preparePicture,
  resizedSize,
  thresholdMasks,
} from "../../lib/analysis/attention.ts";
import { VIRIDIS, viridis } from "../../lib/analysis/colormap.ts";
import type { RawImage } from "../../lib/data/source.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { vit, VIT_SIZES } from "../../lib/models/vit.ts";
import { saveSafetensors } from "../../lib/checkpoint/safetensors.ts";
import { StateStore } from "../../lib/runtime/store.ts";
import { runDenoTask } from "../task_runner.ts";
import { cropPicture, readPng, shrinkBlocks } from "./blocks.ts";

const PURPLE = [68, 1, 84];
const YELLOW = [253, 231, 36];

/** The kept patches of each head as index lists. */
function kept(masks: Uint8Array, heads: number): number[][] {
  const n = masks.length / heads;
  return Array.from(
    { length: heads },
    (_, j) => [...masks.subarray(j * n, (j + 1) * n).keys()].filter((k) => masks[j * n + k]),
  );
}

Deno.test("thresholdMasks keeps the fewest top patches holding more than the share", () => {
  // Head 0 [1, 4, 2, 1] (sum 8): sorted 1 (patch 0), 1 (patch 3), 2, 4, running shares
  // 1/8, 2/8, 4/8, 1. Head 1 [0, 0, 3, 1]: shares 0, 0, 1/4, 1.
  const maps = new Float32Array([1, 4, 2, 1, 0, 0, 3, 1]);
  const at = (t: number) => kept(thresholdMasks(maps, 2, t), 2);
  // Exactly 1/2 is not above 1 − 0.5: patch 2 stays out, and patch 1 alone holds 4/8.
  assert.deepEqual(at(0.5), [[1], [2]]);
  assert.deepEqual(at(0.75), [[1, 2], [2]]);
  // Of the tied patches 0 and 3, the lower index sorts first and is the one dropped.
  assert.deepEqual(at(0.875), [[1, 2, 3], [2, 3]]);
  // Threshold 1 keeps every patch with positive attention, 0 keeps none.
  assert.deepEqual(at(1), [[0, 1, 2, 3], [2, 3]]);
  assert.deepEqual(at(0), [[], []]);
  // Five equal values at the default 0.6: shares 0.2, 0.4, 0.6, …; 0.4 is not above 1 − 0.6.
  assert.deepEqual(kept(thresholdMasks(new Float32Array(5).fill(0.2), 1, 0.6), 1), [[2, 3, 4]]);
  // The masks do not depend on the scale of the attention (a power of two keeps the shares exact,
  // as these cases sit on the boundaries).
  assert.deepEqual(kept(thresholdMasks(maps.map((v) => v / 1024), 2, 0.75), 2), at(0.75));
  assert.throws(() => thresholdMasks(maps, 2, 1.5), /threshold must lie in \[0, 1\]/);
  assert.throws(() => thresholdMasks(maps, 3, 0.6), /do not split into 3 heads/);
});

Deno.test("clsAttention reads the CLS query row over the patch keys, per head and image", () => {
  // [B 2, heads 2, 7, 7] over a 2×3 grid, entry (b, j, q, k) = 1000b + 100j + 10q + k.
  const [batch, heads, tokens] = [2, 2, 7];
  const attention = new Float32Array(batch * heads * tokens * tokens);
  for (let b = 0; b < batch; b++) {
    for (let j = 0; j < heads; j++) {
      for (let q = 0; q < tokens; q++) {
        for (let k = 0; k < tokens; k++) {
          attention[((b * heads + j) * tokens + q) * tokens + k] = 1000 * b + 100 * j + 10 * q + k;
        }
      }
    }
  }
  const maps = clsAttention(attention, heads, tokens, [2, 3], 1);
  assert.deepEqual([...maps], [
    1001,
    1002,
    1003,
    1004,
    1005,
    1006,
    1101,
    1102,
    1103,
    1104,
    1105,
    1106,
  ]);
  assert.deepEqual([...clsAttention(attention, heads, tokens, [2, 3]).subarray(0, 2)], [1, 2]);
  assert.throws(() => clsAttention(attention, heads, tokens, [2, 2]), /do not hold a CLS token/);
  assert.throws(() => clsAttention(attention, heads, tokens, [2, 3], 2), /holds no image 2/);
});

/** A result over a [2, 3] grid of 2-pixel patches (6×4 pixels) with the given maps and masks. */
function syntheticResult(
  maps: number[],
  masks: number[],
  input: Float32Array,
): AttentionMapsResult {
  return {
    picture: { data: new Uint8Array(6 * 4 * 3), width: 6, height: 4 },
    input,
    patchSize: 2,
    heads: maps.length / 6,
    grid: [2, 3],
    maps: new Float32Array(maps),
    masks: new Uint8Array(masks),
  };
}

/** The RGB of pixel (x, y). */
function pixel(picture: RawImage, x: number, y: number): number[] {
  const i = 3 * (y * picture.width + x);
  return [...picture.data.subarray(i, i + 3)];
}

Deno.test("colorOverlay: the winning head's colour with alpha √m over the darkened background", () => {
  // Input 0 everywhere except pixel (4, 0) = 1 and (5, 0) = −1 in all channels: the background
  // is ((v + 1) / 2 · 64 + 192) truncated, ×0.1: 22.4 for 0, 25.6 for 1, 19.2 for −1.
  const input = new Float32Array(3 * 24);
  for (let c = 0; c < 3; c++) [input[c * 24 + 4], input[c * 24 + 5]] = [1, -1];
  // Cells: 0 head 0 wins (0.5); 1 head 1 wins (0.6); 2 both masked out; 3 head 0 with 0.25
  // (m = 0.5); 4 head 0 with 0.05 (m = 0.1, below 0.2); 5 a tie at 0.3, the lower head wins (m = 0.6).
  const maps = [0.5, 0.2, 0.1, 0.25, 0.05, 0.3, 0.3, 0.6, 0.1, 0.05, 0.01, 0.3];
  const masks = [1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1];
  const overlay = colorOverlay(syntheticResult(maps, masks, input));
  assert.equal(overlay.width, 6);
  assert.equal(overlay.height, 4);
  const cell = (c: number) => pixel(overlay, 2 * (c % 3) + 1, 2 * Math.floor(c / 3) + 1);
  assert.deepEqual(cell(0), [...OVERLAY_COLORS[0]]);
  assert.deepEqual(cell(1), [...OVERLAY_COLORS[1]]);
  assert.deepEqual([pixel(overlay, 4, 0), pixel(overlay, 5, 0), cell(2)], [
    [25, 25, 25],
    [19, 19, 19],
    [22, 22, 22],
  ]);
  // trunc(22.4 (1 − √0.5) + √0.5 · (0, 160, 215)).
  assert.deepEqual(cell(3), [6, 119, 158]);
  assert.deepEqual(cell(4), [22, 22, 22]);
  // trunc(22.4 (1 − √0.6) + √0.6 · (0, 160, 215)).
  assert.deepEqual(cell(5), [5, 128, 171]);
  // Every pixel of a cell has the cell's colour (background cells aside).
  for (let y = 0; y < 4; y++) {
    for (let x = 0; x < 6; x++) {
      const c = Math.floor(y / 2) * 3 + Math.floor(x / 2);
      if (c !== 2) assert.deepEqual(pixel(overlay, x, y), cell(c), `pixel (${x}, ${y})`);
    }
  }
});

Deno.test("heatMap and inputPicture: viridis blocks by min–max, the input scaled into bytes", () => {
  const maps = [2, 6, 4, 2, 2, 3, 7, 7, 7, 7, 7, 7];
  const input = new Float32Array(3 * 24).map((_, i) => i);
  const result = syntheticResult(maps, new Array(12).fill(1), input);
  const heat = heatMap(result, 0);
  assert.deepEqual([heat.width, heat.height], [6, 4]);
  // (v − 2) / 4: 0, 1, 0.5, 0, 0, 0.25 → entries 0, 255, 128, 0, 0, 64.
  const expected = [0, 255, 128, 0, 0, 64].map((i) => [...VIRIDIS.subarray(3 * i, 3 * i + 3)]);
  for (let y = 0; y < 4; y++) {
    for (let x = 0; x < 6; x++) {
      assert.deepEqual(pixel(heat, x, y), expected[Math.floor(y / 2) * 3 + Math.floor(x / 2)]);
    }
  }
  assert.deepEqual(viridis(0), PURPLE);
  assert.deepEqual(viridis(1), YELLOW);
  // A constant map is all the darkest colour.
  assert.deepEqual(pixel(heatMap(result, 1), 5, 3), PURPLE);
  // Input values 0…71 (channel-major) → round(v / 71 · 255).
  const picture = inputPicture(result);
  assert.deepEqual(pixel(picture, 0, 0), [0, 86, 172]);
  assert.deepEqual(pixel(picture, 5, 3), [
    Math.round(23 / 71 * 255),
    Math.round(47 / 71 * 255),
    255,
  ]);
});

Deno.test("attentionPictures: every panel enlarged by one whole factor to the panel size", () => {
  const maps = [2, 6, 4, 2, 2, 3, 7, 7, 7, 7, 1, 7];
  const input = new Float32Array(3 * 24).map((_, i) => (i * 37) % 11);
  const result = syntheticResult(maps, [1, 1, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1], input);
  const native = [
    inputPicture(result),
    colorOverlay(result),
    heatMap(result, 0),
    heatMap(result, 1),
  ];
  // The 6×4 picture's shorter side 4 needs 56 times to reach 224 pixels.
  const shown = attentionPictures(result);
  assert.equal(shown.scale, 56);
  const panels = [shown.input, shown.overlay, ...shown.heatMaps];
  panels.forEach((panel, k) => {
    assert.deepEqual([panel.width, panel.height], [336, 224]);
    assert.deepEqual(shrinkBlocks(panel, 56, `panel ${k}`), native[k]);
  });
  // The composite: the enlarged [input | overlay | head 0 | head 1], 4 white pixels apart.
  assert.equal(COMPOSITE_GAP, 4);
  const { composite } = shown;
  assert.deepEqual([composite.width, composite.height], [4 * 336 + 3 * 4, 224]);
  panels.forEach((panel, k) => {
    assert.deepEqual(cropPicture(composite, k * 340, 0, 336, 224), panel, `composite panel ${k}`);
    if (k > 0) {
      const gap = cropPicture(composite, k * 340 - 4, 0, 4, 224);
      assert(gap.data.every((v) => v === 255), `the gap before panel ${k} is white`);
    }
  });
  assert.equal(attentionPictures(result, { panelSize: 10 }).scale, 3);
  const own = attentionPictures(result, { panelSize: 0 });
  assert.equal(own.scale, 1);
  assert.deepEqual([own.composite.width, own.composite.height], [4 * 6 + 3 * 4, 4]);
  native.forEach((part, k) => assert.deepEqual(cropPicture(own.composite, k * 10, 0, 6, 4), part));
});

Deno.test("preparePicture: torchvision's Resize sizes, then a top-left crop to whole patches", async () => {
  assert.deepEqual(resizedSize(40, 30, [16]), [21, 16]);
  assert.deepEqual(resizedSize(30, 40, [16]), [16, 21]);
  assert.deepEqual(resizedSize(40, 30, [16, 24]), [24, 16]);
  const picture: RawImage = {
    data: Uint8Array.from({ length: 10 * 7 * 3 }, (_, i) => i % 251),
    width: 10,
    height: 7,
  };
  const cropped = await preparePicture(picture, 4);
  assert.deepEqual([cropped.width, cropped.height], [8, 4]);
  for (let y = 0; y < 4; y++) {
    for (let x = 0; x < 8; x++) assert.deepEqual(pixel(cropped, x, y), pixel(picture, x, y));
  }
  const resized = await preparePicture(picture, 4, [9, 13]);
  assert.deepEqual([resized.width, resized.height], [12, 8]);
  await assert.rejects(
    () => preparePicture(picture, 4, [3]),
    /an image of 4×3 pixels holds no whole patch of 4 pixels/,
  );
});

// End to end on a hand-made vit_mini (patch 4) whose last block's CLS query attends by brightness:
// every earlier block is the identity (zero output projections), the patch embedding keeps the
// mean normalised value in channel 0, and the last block's keys are ±√95 (the sign of that mean,
// after LayerNorm) in the first dimension of each head, and the query biases are 4, −4 and 2 there
// (CLS-to-patch logits ±1.72·bias, CLS-to-CLS 0): heads 0 and 2 attend to the bright patch, head 1
// to the dark ones.

const WIDTH = 24;
const HEIGHT = 16;
/** The bright patch: grid row 1, column 4 (pixels x 16–19, y 4–7) of a 4×6 grid. */
const BRIGHT = { row: 1, col: 4 };

async function writeBackbone(path: string): Promise<void> {
  const config = { ...VIT_SIZES.vit_mini, patchSize: 4, imgSize: 16, mlpRatio: 4 };
  const g = new Graph("attention_test");
  const images = g.input("images", "float32", [1, 3, 16, 16]);
  vit(g, { ...config, maskedImModeling: false }, { images });
  const store = StateStore.fromParams(g.params, 5);
  const dim = config.embedDim;
  const headDim = dim / config.heads;
  const tensors: Record<string, { dtype: "float32"; shape: number[]; data: Float32Array }> = {};
  for (const name of store.names()) {
    const data = store.get(name).slice();
    const key = name.slice("backbone.".length);
    if (
      /^(cls_token|pos_embed|patch_embed|blocks\.\d+\.(attn\.proj|mlp\.fc2|attn\.qkv))/.test(key)
    ) {
      data.fill(0);
    }
    if (/norm1\.weight$/.test(key)) data.fill(1);
    if (/norm1\.bias$/.test(key)) data.fill(0);
    tensors[name] = { dtype: "float32", shape: [...store.shape(name)], data };
  }
  tensors["backbone.patch_embed.proj.weight"].data.fill(1 / 48, 0, 48);
  const last = `backbone.blocks.${config.depth - 1}.attn.qkv`;
  [4, -4, 2].forEach((s, j) => {
    tensors[`${last}.bias`].data[j * headDim] = s;
    tensors[`${last}.weight`].data[(dim + j * headDim) * dim] = 1;
  });
  await saveSafetensors(path, tensors);
}

/** A black picture with a white bright patch. */
function brightPatchPicture(): RawImage {
  const data = new Uint8Array(WIDTH * HEIGHT * 3);
  for (let y = 4 * BRIGHT.row; y < 4 * BRIGHT.row + 4; y++) {
    data.fill(255, 3 * (y * WIDTH + 4 * BRIGHT.col), 3 * (y * WIDTH + 4 * BRIGHT.col + 4));
  }
  return { data, width: WIDTH, height: HEIGHT };
}

Deno.test("deno task attention writes the pictures of a known attention pattern", async () => {
  const root = await Deno.makeTempDir({ prefix: "ibot_attention_" });
  try {
    const weights = join(root, "backbone.safetensors");
    await writeBackbone(weights);
    const image = join(root, "bright.png");
    const bright = brightPatchPicture();
    await sharp(bright.data, { raw: { width: WIDTH, height: HEIGHT, channels: 3 } }).png()
      .toFile(image);
    const out = join(root, "out");
    const common = ["--pretrained_weights", weights];
    const run = await runDenoTask("attention", [
      ...common,
      ...["--image_path", image, "--image_size", "16", "24", "--output_dir", out],
    ]);
    assert.equal(run.code, 0, run.stderr);
    // The shorter side 16 needs 14 times to reach the default panel size of 224 pixels.
    assert.match(run.stdout, /24×16 px, 4×6 patches, 3 heads, enlarged 14×/);

    const inBright = (x: number, y: number) =>
      Math.floor(x / 4) === BRIGHT.col && Math.floor(y / 4) === BRIGHT.row;
    const files = ["img", "attn-head0", "attn-head1", "attn-head2", "attn_color", "attn"];
    const written = await Promise.all(files.map((f) => readPng(join(out, `${f}.png`))));
    for (const p of written.slice(0, 5)) {
      assert.deepEqual([p.width, p.height], [14 * WIDTH, 14 * HEIGHT]);
    }
    const composite = written[5];
    assert.deepEqual([composite.width, composite.height], [5 * 14 * WIDTH + 4 * 4, 14 * HEIGHT]);
    // Exact nearest-neighbour blocks of the pictures at the network's size.
    const pictures = written.slice(0, 5).map((p, k) => shrinkBlocks(p, 14, files[k]));
    const [img, head0, head1, head2, color] = pictures;

    // img.png: min–max over the normalised channels; white's blue is the maximum, black's red the
    // minimum.
    assert.equal(pixel(img, 17, 5)[2], 255);
    assert.equal(pixel(img, 0, 0)[0], 0);
    // Heads 0 and 2: the bright block is the brightest colour and every other block the darkest;
    // head 1 the other way round.
    for (let y = 0; y < HEIGHT; y++) {
      for (let x = 0; x < WIDTH; x++) {
        const b = inBright(x, y);
        assert.deepEqual(pixel(head0, x, y), b ? YELLOW : PURPLE, `head 0 (${x}, ${y})`);
        assert.deepEqual(pixel(head2, x, y), b ? YELLOW : PURPLE, `head 2 (${x}, ${y})`);
        assert.deepEqual(pixel(head1, x, y), b ? PURPLE : YELLOW, `head 1 (${x}, ${y})`);
      }
    }
    // Overlay: head 0 owns the bright patch (pure blue). Head 1's mask holds the 14 dark patches
    // past 40% of its mass (23 near-equal dark patches: 10/23 > 0.4 > 9/23), drawn red; the other
    // 9 show the background: black scaled into [192, 256] (channel mean 193.77), ×0.1 → 19.
    assert.deepEqual(pixel(color, 17, 5), [...OVERLAY_COLORS[0]]);
    let red = 0;
    let dark = 0;
    for (let row = 0; row < 4; row++) {
      for (let col = 0; col < 6; col++) {
        if (row === BRIGHT.row && col === BRIGHT.col) continue;
        const p = pixel(color, 4 * col + 2, 4 * row + 2);
        if (p.every((v, c) => Math.abs(v - OVERLAY_COLORS[1][c]) <= 1)) red++;
        else if (p.every((v) => v === 19)) dark++;
        else assert.fail(`overlay cell (${row}, ${col}) is ${p}`);
      }
    }
    assert.deepEqual([red, dark], [14, 9]);
    // The composite is the enlarged [img | overlay | head 0 | head 1 | head 2], 4 pixels apart.
    for (const [k, part] of [img, color, head0, head1, head2].entries()) {
      const panel = cropPicture(composite, k * (14 * WIDTH + 4), 0, 14 * WIDTH, 14 * HEIGHT);
      assert.deepEqual(shrinkBlocks(panel, 14, `attn.png panel ${k}`), part);
    }

    // A folder: images found recursively in sorted order, one sub-folder each, --show_pics of
    // them, resized to 8 on the shorter side (24×16 → 12×8); --panel_size 20 enlarges them 3×.
    const folder = join(root, "folder");
    await Deno.mkdir(join(folder, "b"), { recursive: true });
    for (const name of ["a.png", "b/c.png", "d.png"]) {
      await Deno.copyFile(image, join(folder, name));
    }
    await Deno.writeTextFile(join(folder, "notes.txt"), "not an image");
    const many = await runDenoTask("attention", [
      ...common,
      ...["--image_path", folder, "--image_size", "8", "--output_dir", out, "--show_pics", "2"],
      ...["--panel_size", "20"],
    ]);
    assert.equal(many.code, 0, many.stderr);
    for (const dir of ["0_a", "1_c"]) {
      const composite = await readPng(join(out, dir, "attn.png"));
      assert.deepEqual([composite.width, composite.height], [3 * 5 * 12 + 4 * 4, 3 * 8]);
      assert.deepEqual(
        [...Deno.readDirSync(join(out, dir))].map((e) => e.name).sort(),
        [
          "attn-head0.png",
          "attn-head1.png",
          "attn-head2.png",
          "attn.png",
          "attn_color.png",
          "img.png",
        ],
      );
    }
    assert.throws(() => Deno.statSync(join(out, "2_d")), Deno.errors.NotFound);

    // Bad input: one sentence and exit code 1.
    const corrupt = join(root, "corrupt.png");
    await Deno.writeTextFile(corrupt, "not a png");
    const cases: [string[], RegExp][] = [
      [["--image_path", join(root, "missing.png")], /missing\.png does not exist/],
      [["--image_path", corrupt], /cannot decode .*corrupt\.png/],
      [["--image_path", image, "--image_size", "2"], /holds no whole patch of 4 pixels/],
      [["--image_path", image, "--threshold", "2"], /--threshold must be a number in \[0, 1\]/],
      [["--image_path", image, "--panel_size", "0"], /--panel_size must be a positive integer/],
    ];
    for (const [args, message] of cases) {
      const bad = await runDenoTask("attention", [...common, ...args]);
      assert.equal(bad.code, 1, `${args}: ${bad.stdout}`);
      assert.match(bad.stderr, message);
      assert.match(bad.stderr, /^error: [^\n]*\n$/);
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

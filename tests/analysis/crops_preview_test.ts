import { assert } from "../assert.ts";
import { cropsPreview, denormalize, shadeMask } from "../../lib/analysis/crops_preview.ts";
import { normalize } from "../../lib/data/augment.ts";
import { MultiCropLoader } from "../../lib/data/loader.ts";
import { openSource, type RawImage, resolveDataPath } from "../../lib/data/source.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { SMALL_CROPS, VENDORED } from "../data/fixtures.ts";
import { shrinkBlocks } from "./blocks.ts";

Deno.test("denormalize: inverts normalize exactly on bytes", () => {
  const rng = new Rng(1);
  const pixels = Uint8Array.from({ length: 5 * 3 * 3 }, () => rng.int(256));
  const picture = denormalize(normalize(pixels, 5, 3), 5, 3);
  assert.deepEqual([picture.width, picture.height], [5, 3]);
  assert.deepEqual([...picture.data], [...pixels]);
  assert.throws(() => denormalize(new Float32Array(10), 2, 2), /has 12 values, got 10/);
});

Deno.test("shadeMask: blends exactly the masked cells with the colour", () => {
  const picture: RawImage = { data: new Uint8Array(4 * 4 * 3).fill(100), width: 4, height: 4 };
  // A 2×2 grid of 2×2-pixel cells; the top-right and bottom-left cells are masked.
  const shaded = shadeMask(picture, Uint8Array.of(0, 1, 1, 0), 2, 2, [255, 0, 10], 0.5);
  const at = (
    x: number,
    y: number,
  ) => [...shaded.data.subarray(3 * (y * 4 + x), 3 * (y * 4 + x) + 3)];
  assert.deepEqual(at(0, 0), [100, 100, 100]);
  assert.deepEqual(at(3, 1), [178, 50, 55]);
  assert.deepEqual(at(1, 2), [178, 50, 55]);
  assert.deepEqual(at(2, 3), [100, 100, 100]);
  assert.equal(picture.data[3 * 3], 100, "the input is left as it was");
  assert.throws(() => shadeMask(picture, new Uint8Array(9), 3, 3), /does not tile/);
});

Deno.test("cropsPreview: the views the loader draws, global crops shaded where masked", async () => {
  const spec = await resolveDataPath(VENDORED, "train");
  const seed = 3;
  const loader = await MultiCropLoader.create({
    source: spec,
    crops: SMALL_CROPS,
    batchSize: 2,
    workers: 1,
    seed,
  });
  let batch;
  try {
    for await (const b of loader.epoch(0)) {
      batch = b;
      break;
    }
  } finally {
    loader.close();
  }
  const { globals, locals, indices } = batch!;
  const masking = {
    predRatio: 0.5,
    predRatioVar: 0,
    predShape: "rand",
    predStartEpoch: 0,
  } as const;
  const source = await openSource(spec);
  const config = { crops: SMALL_CROPS, masking, maskGrid: 4 };
  const rows = await cropsPreview(source, [...indices], config, seed, { panelSize: 0 });
  assert.equal(rows.length, 2);
  const S = SMALL_CROPS.globalCropSize;
  const s = SMALL_CROPS.localCropSize;
  for (let b = 0; b < 2; b++) {
    const row = rows[b];
    assert.deepEqual(row.map((p) => p.width), [S, S, S, s, s, s, s]);
    for (let l = 0; l < SMALL_CROPS.localCropsNumber; l++) {
      const row_ = (l * 2 + b) * 3 * s * s;
      const expected = denormalize(locals.subarray(row_, row_ + 3 * s * s), s, s);
      assert.deepEqual([...row[3 + l].data], [...expected.data], `image ${b}, local crop ${l}`);
    }
    for (let g = 0; g < 2; g++) {
      const row_ = (g * 2 + b) * 3 * S * S;
      const plain = denormalize(globals.subarray(row_, row_ + 3 * S * S), S, S);
      // Ratio 0.5 on a 4×4 grid masks 8 cells of 8×8 px: those cells are blended half with red,
      // the others are the loader's crop as it is.
      let maskedCells = 0;
      for (let cell = 0; cell < 16; cell++) {
        const [cy, cx] = [Math.floor(cell / 4), cell % 4];
        const plainCell: number[] = [];
        const shadedCell: number[] = [];
        const shownCell: number[] = [];
        for (let y = 8 * cy; y < 8 * cy + 8; y++) {
          for (let x = 8 * cx; x < 8 * cx + 8; x++) {
            const i = 3 * (y * S + x);
            const [r, gr, bl] = plain.data.subarray(i, i + 3);
            plainCell.push(r, gr, bl);
            shadedCell.push(
              Math.round(0.5 * r + 127.5),
              Math.round(0.5 * gr),
              Math.round(0.5 * bl),
            );
            shownCell.push(...row[1 + g].data.subarray(i, i + 3));
          }
        }
        if (shownCell.join() === plainCell.join()) continue;
        assert.deepEqual(shownCell, shadedCell, `image ${b}, global crop ${g}, cell ${cell}`);
        maskedCells++;
      }
      assert.equal(maskedCells, 8, `image ${b}, global crop ${g}`);
    }
  }
  // By default every picture is enlarged 7 times, so that a 32-pixel global crop reaches 224
  // pixels and a 16-pixel local crop 112: exact nearest-neighbour blocks of the same crops.
  const readable = await cropsPreview(source, [...indices], config, seed);
  for (const [b, row] of readable.entries()) {
    assert.deepEqual(row.map((p) => p.width), [224, 224, 224, 112, 112, 112, 112]);
    row.forEach((picture, v) => {
      assert.deepEqual(shrinkBlocks(picture, 7, `image ${b}, view ${v}`), rows[b][v]);
    });
  }
  await assert.rejects(cropsPreview(source, [source.length], config, seed), /outside/);
});

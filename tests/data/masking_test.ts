import { assert } from "../assert.ts";
import { maskedPositions, MaskGenerator, type MaskingConfig } from "../../lib/data/masking.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { torchAvailable, torchScriptOutput } from "../reference/torch.ts";

const DRAWS = 2000;

/** A generator with iBOT's defaults except for the given settings. */
function generator(settings: Partial<MaskingConfig>): MaskGenerator {
  return new MaskGenerator({
    predRatio: 0.3,
    predRatioVar: 0,
    predShape: "block",
    predStartEpoch: 0,
    ...settings,
  });
}

/** The masked counts of `draws` masks drawn at epoch 0 from one seeded generator. */
function counts(gen: MaskGenerator, height: number, width: number, seed: number, draws = DRAWS) {
  const rng = new Rng(seed);
  return Array.from(
    { length: draws },
    () => maskedPositions(gen.draw(height, width, 0, rng)).length,
  );
}

function mean(values: readonly number[]): number {
  return values.reduce((sum, v) => sum + v, 0) / values.length;
}

function near(actual: number, expected: number, tolerance: number, what: string): void {
  assert(
    Math.abs(actual - expected) <= tolerance,
    `${what}: ${actual} is not within ${tolerance} of ${expected}`,
  );
}

/** A mask as text rows, `#` for masked and `.` for visible. */
function picture(mask: Uint8Array, width: number): string[] {
  const rows: string[] = [];
  for (let i = 0; i < mask.length; i += width) {
    rows.push(Array.from(mask.subarray(i, i + width), (v) => (v ? "#" : ".")).join(""));
  }
  return rows;
}

Deno.test("block masking at a fixed 0.3 on 14×14 matches the official statistics", () => {
  const c = counts(generator({}), 14, 14, 1);
  near(mean(c), 57.2, 0.6, "mean masked cells");
  assert.equal(Math.max(...c), 58, "the count reaches floor(0.3·196) = floor(58.8) and no more");
  assert(Math.min(...c) > 0, "a 0.3 mask is never empty");
});

Deno.test("block masking at 0.3 on a 6×6 local crop averages 9.9 cells", () => {
  const c = counts(generator({}), 6, 6, 2);
  near(mean(c), 9.9, 0.4, "mean masked cells");
  assert(Math.max(...c) <= 10, "never above floor(0.3·36)");
});

Deno.test("the recipe ratios [0, 0.3] ± [0, 0.2] leave half the crops unmasked", () => {
  const c = counts(generator({ predRatio: [0, 0.3], predRatioVar: [0, 0.2] }), 14, 14, 3);
  near(c.filter((n) => n === 0).length / c.length, 0.49, 0.04, "fraction unmasked");
  near(mean(c), 29.3, 1.5, "mean masked cells");
  assert(Math.max(...c) <= 97, "never above 97 cells");
});

Deno.test("the recipe ratio is 0 or U(0.1, 0.5), chosen uniformly between the two", () => {
  const gen = generator({ predRatio: [0, 0.3], predRatioVar: [0, 0.2] });
  const rng = new Rng(4);
  const ratios = Array.from({ length: DRAWS }, () => gen.ratio(0, rng));
  const jittered = ratios.filter((r) => r !== 0);
  assert(jittered.every((r) => r >= 0.1 && r < 0.5), "the jittered ratio lies in [0.1, 0.5)");
  near(jittered.length / DRAWS, 0.5, 0.04, "fraction of jittered ratios");
  near(mean(jittered), 0.3, 0.01, "mean jittered ratio");
});

/**
 * Golden masks of the official block loop driven by the same draws as ours: printed by
 * tests/reference/masking_golden.py, which runs the reference's `pred_ratio_for_crop` and
 * `block_mask` with a port of Rng (seed 12345) in place of Python's `random`.
 */
const GOLDEN = {
  /** Ratio 0.3 on 14×14. */
  block_14x14: [
    "..............",
    "..............",
    "..............",
    "..............",
    "..............",
    "........###...",
    "........###...",
    ".######.###...",
    ".######.###...",
    ".##########...",
    ".#########....",
    ".#########....",
    ".######.......",
    "..............",
  ],
  /** Masked counts of 12 draws in a row with ratios [0, 0.3] ± [0, 0.2] on 14×14. */
  recipe_counts: [0, 0, 0, 0, 0, 42, 0, 88, 0, 72, 39, 0],
  /** Ratio 0.4 ± 0.1 on 7×12. */
  rect_7x12: [
    "..######....",
    "..#######...",
    "..#######...",
    ".#....###...",
    ".#....###.#.",
    ".#........#.",
    ".#........#.",
  ],
};

Deno.test("block masking reproduces the official loop driven by the same draws", () => {
  const fixed = generator({});
  assert.deepEqual(picture(fixed.draw(14, 14, 0, new Rng(12345)), 14), GOLDEN.block_14x14);
  const recipe = generator({ predRatio: [0, 0.3], predRatioVar: [0, 0.2] });
  const rng = new Rng(12345);
  const recipeCounts = Array.from({ length: 12 }, () => {
    return maskedPositions(recipe.draw(14, 14, 0, rng)).length;
  });
  assert.deepEqual(recipeCounts, GOLDEN.recipe_counts);
  const rect = generator({ predRatio: 0.4, predRatioVar: 0.1 });
  assert.deepEqual(picture(rect.draw(7, 12, 0, new Rng(12345)), 12), GOLDEN.rect_7x12);
});

Deno.test({
  name: "the golden masks are what tests/reference/masking_golden.py prints",
  ignore: !torchAvailable(),
  async fn() {
    assert.deepEqual(JSON.parse(await torchScriptOutput("masking_golden.py")), GOLDEN);
  },
});

Deno.test("blocks never span the full height or width", () => {
  const gen = generator({ predRatio: 0.5 });
  const rng = new Rng(5);
  for (let i = 0; i < 200; i++) {
    assert.equal(maskedPositions(gen.draw(1, 14, 0, rng)).length, 0, "a 1-row grid stays visible");
    assert.equal(maskedPositions(gen.draw(14, 1, 0, rng)).length, 0, "a 1-column grid too");
  }
});

Deno.test("rand masking sets exactly int(ratio·H·W) cells, uniformly placed", () => {
  const fixed = generator({ predShape: "rand" });
  const rng = new Rng(6);
  const frequency = new Float64Array(196);
  for (let i = 0; i < DRAWS; i++) {
    const mask = fixed.draw(14, 14, 0, rng);
    assert.equal(maskedPositions(mask).length, 58);
    mask.forEach((v, j) => (frequency[j] += v / DRAWS));
  }
  frequency.forEach((f, j) => near(f, 58 / 196, 0.06, `frequency of cell ${j}`));

  const jittered = generator({ predShape: "rand", predRatio: [0, 0.3], predRatioVar: [0, 0.2] });
  for (let i = 0; i < 200; i++) {
    const expected = Math.floor(jittered.ratio(0, Rng.fromState(rng.state())) * 14 * 14);
    assert.equal(maskedPositions(jittered.draw(14, 14, 0, rng)).length, expected);
  }
});

Deno.test("masks are all zero before predStartEpoch and drawn from it on", () => {
  for (const predShape of ["block", "rand"] as const) {
    const gen = generator({ predShape, predStartEpoch: 3 });
    const rng = new Rng(7);
    for (const epoch of [0, 1, 2]) {
      assert.equal(gen.ratio(epoch, rng), 0);
      assert(gen.draw(14, 14, epoch, rng).every((v) => v === 0), `${predShape}, epoch ${epoch}`);
    }
    for (const epoch of [3, 4, 50]) {
      assert(maskedPositions(gen.draw(14, 14, epoch, rng)).length > 0, `${predShape} at ${epoch}`);
    }
  }
});

Deno.test("maxMasked bounds every draw", () => {
  const settings: Partial<MaskingConfig>[] = [
    {},
    { predRatio: [0, 0.3], predRatioVar: [0, 0.2] },
    { predRatio: [0.1, 0.45], predRatioVar: 0.05, predShape: "rand" },
  ];
  for (const setting of settings) {
    const gen = generator(setting);
    for (const [height, width] of [[14, 14], [6, 6], [7, 12]]) {
      const bound = gen.maxMasked(height, width);
      const c = counts(gen, height, width, 8, 500);
      assert(Math.max(...c) <= bound, `${JSON.stringify(setting)} on ${height}×${width}`);
    }
  }
  assert.equal(generator({}).maxMasked(14, 14), 58);
  assert.equal(generator({ predRatio: [0, 0.3], predRatioVar: [0, 0.2] }).maxMasked(14, 14), 98);
  assert.equal(generator({}).maxMasked(6, 6), 10);
});

Deno.test("the same seed gives the same masks", () => {
  const gen = generator({ predRatio: [0, 0.3], predRatioVar: [0, 0.2] });
  const a = new Rng(9);
  const b = new Rng(9);
  const c = new Rng(10);
  const drawsA = Array.from({ length: 50 }, () => gen.draw(14, 14, 0, a));
  const drawsB = Array.from({ length: 50 }, () => gen.draw(14, 14, 0, b));
  const drawsC = Array.from({ length: 50 }, () => gen.draw(14, 14, 0, c));
  assert.deepEqual(drawsA, drawsB);
  assert.notDeepEqual(drawsA, drawsC);
});

Deno.test("settings are normalised like ImageFolderMask's constructor", () => {
  const sameMasks = (x: Partial<MaskingConfig>, y: Partial<MaskingConfig>) => {
    const [rx, ry] = [new Rng(11), new Rng(11)];
    for (let i = 0; i < 50; i++) {
      assert.deepEqual(generator(x).draw(14, 14, 0, rx), generator(y).draw(14, 14, 0, ry));
    }
  };
  sameMasks({ predRatio: [0.3], predRatioVar: [0.1] }, { predRatio: 0.3, predRatioVar: 0.1 });
  sameMasks({ predRatio: [0.2, 0.4], predRatioVar: 0.1 }, {
    predRatio: [0.2, 0.4],
    predRatioVar: [0.1, 0.1],
  });
  sameMasks({ predAspectRatio: [0.3, 1 / 0.3] }, {});

  assert.throws(() => generator({ predRatio: [0.2, 0.4], predRatioVar: [0.1, 0.1, 0.1] }), /entry/);
  assert.throws(() => generator({ predRatio: 0.3, predRatioVar: [0.1, 0.1] }), /entry/);
  assert.throws(() => generator({ predRatio: [0.1, 0.3], predRatioVar: [0.2, 0] }), /below/);
  assert.throws(() => generator({ predRatio: [] }), /at least one/);
  assert.throws(() => generator({ predRatio: 0.9, predRatioVar: 0.2 }), /within \[0, 1\]/);
  assert.throws(() => generator({ predStartEpoch: -1 }), /predStartEpoch/);
});

/**
 * What the tests checked against Pillow's golden records share (the TypeScript side of
 * pil_golden.py): the noise of their synthetic test images, the record of one output image, the
 * probe for Pillow and the comparison of the stored records with freshly generated ones.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { assert } from "../assert.ts";
import { PYTHON } from "./torch.ts";

/** Golden records: Pillow's version and, per case name, its {@link record}. */
export interface GoldenRecords {
  pillow: string;
  cases: Record<string, string>;
}

/** Whether python3 can import PIL (Pillow). */
export function pilFound(): boolean {
  try {
    return new Deno.Command(PYTHON, {
      args: ["-c", "import PIL"],
      stdout: "null",
      stderr: "null",
    }).outputSync().success;
  } catch {
    return false; // python3 itself is missing
  }
}

/** Chris Wellons' lowbias32 hash of seed·65536 + i, as pil_golden.py computes it. */
export function noise(seed: number, i: number): number {
  let x = seed * 65536 + i;
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/** The golden record of a `width` × `height` HWC RGB image: "<width>x<height> <SHA-256>". */
function record(width: number, height: number, bytes: Uint8Array): string {
  return `${width}x${height} ${createHash("sha256").update(bytes).digest("hex")}`;
}

/**
 * Asserts that `bytes`, a `width` × `height` HWC RGB image, is case `key` of the stored records
 * `golden`; `regenerate` is the command that rewrites the stored file.
 */
export function assertRecord(
  golden: GoldenRecords,
  key: string,
  width: number,
  height: number,
  bytes: Uint8Array,
  regenerate: string,
): void {
  const expected = golden.cases[key];
  assert(expected !== undefined, `${key}: no golden record; regenerate it with ${regenerate}`);
  assert.equal(
    record(width, height, bytes),
    expected,
    `${key}: our bytes differ from Pillow ${golden.pillow}'s`,
  );
}

/** Asserts that every case of the stored records `golden` is among the `checked` keys. */
export function assertAllChecked(golden: GoldenRecords, checked: Iterable<string>): void {
  const keys = new Set(checked);
  const unchecked = Object.keys(golden.cases).filter((key) => !keys.has(key));
  assert.deepEqual(unchecked, [], "golden records that no test checks");
}

/**
 * Asserts that the stored records `golden` hold exactly the cases of the fresh ones, each equal;
 * `regenerate` is the command that rewrites the stored file.
 */
export function assertSameRecords(
  golden: GoldenRecords,
  fresh: GoldenRecords,
  regenerate: string,
): void {
  for (const key of new Set([...Object.keys(fresh.cases), ...Object.keys(golden.cases)])) {
    assert.equal(
      golden.cases[key],
      fresh.cases[key],
      `${key}: the fixture differs from Pillow ${fresh.pillow}'s output; ${regenerate}`,
    );
  }
}

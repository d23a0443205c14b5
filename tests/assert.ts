/** Assertions for tests: node's strict assert plus elementwise closeness of numeric arrays. */

import assert from "node:assert/strict";

export { assert };

/** Asserts |actual − expected| ≤ atol + rtol·|expected| entry by entry, naming the first miss. */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  rtol = 1e-5,
  atol = 1e-6,
  what = "value",
): void {
  assert.equal(
    actual.length,
    expected.length,
    `${what}: length ${actual.length} ≠ ${expected.length}`,
  );
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i];
    const e = expected[i];
    assert(
      Math.abs(a - e) <= atol + rtol * Math.abs(e),
      `${what}[${i}]: ${a} differs from expected ${e}`,
    );
  }
}

/**
 * Asserts max |actual − expected| ≤ tolerance · max |expected|: agreement relative to the scale of
 * the whole tensor, as between our float32 results and a float64 reference. For single numbers
 * this is |actual − expected| ≤ tolerance · |expected|. Any NaN fails.
 */
export function assertCloseToScale(
  actual: number | ArrayLike<number>,
  expected: number | ArrayLike<number>,
  what: string,
  tolerance = 1e-5,
): void {
  const ours = typeof actual === "number" ? [actual] : actual;
  const theirs = typeof expected === "number" ? [expected] : expected;
  assert.equal(ours.length, theirs.length, `${what}: length ${ours.length} ≠ ${theirs.length}`);
  let worst = 0;
  let scale = 0;
  for (let i = 0; i < theirs.length; i++) {
    worst = Math.max(worst, Math.abs(ours[i] - theirs[i]));
    scale = Math.max(scale, Math.abs(theirs[i]));
  }
  const values = theirs.length === 1 ? ` (${ours[0]} vs ${theirs[0]})` : "";
  assert(
    worst <= tolerance * scale,
    `${what}: max difference ${worst}${values} exceeds ${tolerance} × ${scale}`,
  );
}

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

import { assert, assertClose } from "../assert.ts";
import { checkGradients } from "./gradcheck.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { permuteAxis, permuteAxisParts } from "../../lib/graph/permute.ts";
import { CompiledGraph } from "../../lib/runtime/session.ts";
import { add, mul } from "../../lib/graph/math.ts";

Deno.test("permuteAxis picks entries and fills the rest", async () => {
  const g = new Graph();
  const x = g.input("x", "float32", [2, 3, 2]);
  const fill = g.input("fill", "float32", [1, 1, 2]);
  g.output("y", permuteAxis(x, [2, -1, 0, -1], 1, fill));
  g.output("z", permuteAxis(x, [1, -1], 1));
  const session = await CompiledGraph.create(g, { threads: 1 });
  const out = await session.run({
    x: Float32Array.from({ length: 12 }, (_, i) => i),
    fill: Float32Array.of(-1, -2),
  });
  assertClose(out.y as Float32Array, [4, 5, -1, -2, 0, 1, -1, -2, 10, 11, -1, -2, 6, 7, -1, -2]);
  assertClose(out.z as Float32Array, [2, 3, 0, 0, 8, 9, 0, 0]);
  await session.release();
});

Deno.test("permuteAxis: gradients of a partial permutation with a broadcast fill", () =>
  checkGradients((x, fill) => permuteAxis(x, [2, -1, 0, -1, 3], 1, fill), [[2, 4, 3], [
    1,
    1,
    3,
  ]]));

Deno.test("permuteAxis fills from several rows", async () => {
  const g = new Graph();
  const x = g.input("x", "float32", [2, 2]);
  const fill = g.input("fill", "float32", [2, 2]);
  g.output("y", permuteAxis(x, [-2, 1, -1, -1, -2], 1, fill));
  const session = await CompiledGraph.create(g, { threads: 1 });
  const out = await session.run({
    x: Float32Array.of(0, 1, 2, 3),
    fill: Float32Array.of(-1, -2, -3, -4),
  });
  assertClose(out.y as Float32Array, [-2, 1, -1, -1, -2, -4, 3, -3, -3, -4]);
  await session.release();
});

Deno.test("permuteAxis: gradients with fill rows that broadcast over the batch", () =>
  checkGradients((x, fill) => permuteAxis(x, [-2, 1, -1, 0, -1, -2], 1, fill), [[2, 3, 2], [
    1,
    2,
    2,
  ]]));

Deno.test("permuteAxis: gradients of a selection that leaves entries out", () =>
  checkGradients((x) => permuteAxis(x, [3, 0], 0), [[5, 2]]));

Deno.test("permuteAxis returns an identity map's input and refuses bad indices", () => {
  const g = new Graph();
  const x = g.input("x", "float32", [2, 3]);
  assert.equal(permuteAxis(x, [0, 1, 2], 1), x);
  assert.throws(() => permuteAxis(x, [0, 0], 1), /permuteAxis: index picks entry 0 of x\[2,3\]/);
  assert.throws(() => permuteAxis(x, [3], 1), /permuteAxis: index entry 3 is outside \[-1, 3\)/);
  assert.throws(
    () => permuteAxis(x, [-1], 1, g.input("f", "float32", [1, 2, 1])),
    /permuteAxis: fill f\[1,2,1\]:float32 must have the rank of x\[2,3\]:float32 and fixed rows on axis 1/,
  );
  assert.throws(
    () => permuteAxis(x, [-1, -1, -2], 1, g.input("f2", "float32", [1, 2])),
    /permuteAxis: the 2 rows of fill f2\[1,2\]:float32 must fill as many entries each/,
  );
  assert.throws(() => permuteAxis(x, [-2], 1), /index entry -2 is outside \[-1, 3\)/);
});

Deno.test("permuteAxisParts gives the parts of the permutation by their concatenated index", async () => {
  const g = new Graph();
  const x = g.input("x", "float32", [2, 3, 2]);
  const fill = g.input("fill", "float32", [1, 1, 2]);
  const [a, b] = permuteAxisParts(x, [[2, -1], [0, -1, 1]], 1, fill);
  g.output("a", a);
  g.output("b", b);
  const session = await CompiledGraph.create(g, { threads: 1 });
  const out = await session.run({
    x: Float32Array.from({ length: 12 }, (_, i) => i),
    fill: Float32Array.of(-1, -2),
  });
  assertClose(out.a as Float32Array, [4, 5, -1, -2, 10, 11, -1, -2]);
  assertClose(out.b as Float32Array, [0, 1, -1, -2, 2, 3, 6, 7, -1, -2, 8, 9]);
  await session.release();
  assert.throws(
    () => permuteAxisParts(x, [[0], [0]], 1),
    /permuteAxis: index picks entry 0 of x\[2,3,2\]:float32 twice/,
  );
  assert.throws(
    () => permuteAxisParts(x, [[0], []], 1),
    /permuteAxis: every part of the index into x\[2,3,2\]:float32 must pick at least one entry/,
  );
});

Deno.test("permuteAxisParts: gradients through parts with a broadcast fill", () =>
  checkGradients(
    (x, fill) => {
      const [a, b, c] = permuteAxisParts(x, [[2, -1], [0, -1], [3, 1]], 1, fill);
      return add(add(mul(a, 2), b), mul(c, c));
    },
    [[2, 4, 3], [1, 1, 3]],
  ));

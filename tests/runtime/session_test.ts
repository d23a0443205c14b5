import { assert, assertClose } from "../assert.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { add } from "../../lib/graph/math.ts";
import { CompiledGraph, ortBindingDir } from "../../lib/runtime/session.ts";

function tinyGraph(): Graph {
  const g = new Graph();
  const x = g.input("x", "float32", [2]);
  g.output("y", add(x, g.param("b", [2], { kind: "zeros" })));
  return g;
}

Deno.test("run reuses preallocated output buffers", async () => {
  const session = await CompiledGraph.create(tinyGraph());
  const first = await session.run({ x: Float32Array.of(1, 2), b: Float32Array.of(10, 20) });
  const y = first.y;
  const second = await session.run({ x: Float32Array.of(3, 4), b: Float32Array.of(10, 20) });
  assert.equal(second.y, y);
  assertClose(y as Float32Array, [13, 24]);
});

Deno.test("run names a missing input, a wrong size and an unknown input", async () => {
  const session = await CompiledGraph.create(tinyGraph());
  await assert.rejects(
    () => session.run({ x: Float32Array.of(1, 2) }),
    /run: no value fed for input b\[2\]/,
  );
  await assert.rejects(
    () => session.run({ x: Float32Array.of(1), b: Float32Array.of(1, 2) }),
    /run: input x expects 2 float32 values \(shape \[2\]\), got 1 in a Float32Array/,
  );
  await assert.rejects(
    () =>
      session.run({ x: Float32Array.of(1, 2), b: Float32Array.of(1, 2), z: Float32Array.of(1) }),
    /run: the graph has no input named z/,
  );
});

Deno.test("parameters can be baked in as initializers", async () => {
  const session = await CompiledGraph.create(tinyGraph(), {
    initializers: { b: Float32Array.of(5, 6) },
  });
  assert.deepEqual(session.inputNames, ["x"]);
  assertClose((await session.run({ x: Float32Array.of(1, 2) })).y as Float32Array, [6, 8]);
});

Deno.test({
  name: "asking for CUDA without its provider libraries is one clear error",
  ignore: (() => {
    try {
      Deno.statSync(`${ortBindingDir()}/libonnxruntime_providers_cuda.so`);
      return true;
    } catch {
      return false;
    }
  })(),
  async fn() {
    await assert.rejects(
      () => CompiledGraph.create(tinyGraph(), { executionProviders: ["cuda"] }),
      /The CUDA execution provider needs libonnxruntime_providers_cuda\.so .* "deno task enable-cuda/,
    );
  },
});

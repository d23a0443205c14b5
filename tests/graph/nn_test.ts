import { assertClose } from "../assert.ts";
import { checkGradients } from "./gradcheck.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { mul } from "../../lib/graph/math.ts";
import {
  bicubicMatrix,
  conv2dPatch,
  gelu,
  layerNorm,
  logSoftmax,
  resizeBicubic,
  softmax,
} from "../../lib/graph/nn.ts";
import { CompiledGraph } from "../../lib/runtime/session.ts";

Deno.test("softmax", () => checkGradients((x) => softmax(mul(x, 3), 1), [[3, 5]]));
Deno.test("log-softmax", () => checkGradients((x) => logSoftmax(mul(x, 3)), [[3, 5]]));
Deno.test("layer norm", () =>
  checkGradients((x, w, b) => layerNorm(x, w, b, 1e-6), [[2, 3, 6], [6], [6]], {
    float32Tolerance: 3e-4,
  }));
Deno.test("exact GELU", () => checkGradients((x) => gelu(mul(x, 3)), [[4, 6]]));
Deno.test("patch convolution (kernel = stride)", () =>
  checkGradients((x, w, b) => conv2dPatch(x, w, b, 2), [[2, 3, 4, 6], [5, 3, 2, 2], [5]]));
Deno.test("bicubic resize with a scale factor", () =>
  checkGradients((x) => resizeBicubic(x, 6.1 / 4, 3.1 / 4), [[2, 4, 4]]));

Deno.test("patch convolution equals the explicit sum over each patch", async () => {
  const g = new Graph();
  const x = g.input("x", "float32", [1, 1, 2, 4]);
  const w = g.input("w", "float32", [1, 1, 2, 2]);
  const b = g.input("b", "float32", [1]);
  g.output("y", conv2dPatch(x, w, b, 2));
  const out = await (await CompiledGraph.create(g)).run({
    x: Float32Array.of(1, 2, 3, 4, 5, 6, 7, 8),
    w: Float32Array.of(1, 10, 100, 1000),
    b: Float32Array.of(0.5),
  });
  assertClose(out.y as Float32Array, [1 + 20 + 500 + 6000 + 0.5, 3 + 40 + 700 + 8000 + 0.5]);
});

Deno.test("bicubic weights: identity at scale 1, rows sum to 1, border taps clamped", () => {
  const identity = bicubicMatrix(5, 1);
  identity.data.forEach((v, i) =>
    assertClose([v], [Math.floor(i / 5) === i % 5 ? 1 : 0], 0, 1e-12)
  );
  const up = bicubicMatrix(4, 6.1 / 4);
  for (let r = 0; r < up.outSize; r++) {
    assertClose([up.data.slice(r * 4, r * 4 + 4).reduce((a, b) => a + b, 0)], [1], 0, 1e-12);
  }
  // Output row 0 samples source 0.5/s − 0.5 ≈ −0.172: base −1, taps −2..1 clamp to 0, 0, 0, 1.
  const t = 0.5 / (6.1 / 4) - 0.5 + 1;
  const a = -0.75;
  const near = (s: number) => ((a + 2) * s - (a + 3)) * s * s + 1;
  const far = (s: number) => ((a * s - 5 * a) * s + 8 * a) * s - 4 * a;
  assertClose([up.data[0], up.data[1]], [far(1 + t) + near(t) + near(1 - t), far(2 - t)], 0, 1e-12);
});

import { assertClose } from "../assert.ts";
import { checkGradients } from "./gradcheck.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { grad } from "../../lib/graph/grad.ts";
import {
  abs,
  add,
  cast,
  clip,
  div,
  erf,
  exp,
  greater,
  log,
  maximum,
  minimum,
  mul,
  neg,
  pow,
  sigmoid,
  sqrt,
  stopGradient,
  sub,
  tanh,
  where,
} from "../../lib/graph/math.ts";
import { sum } from "../../lib/graph/reduce.ts";
import { CompiledGraph } from "../../lib/runtime/session.ts";

Deno.test("add broadcasts and sums gradients back", () => checkGradients(add, [[2, 3], [3]]));
Deno.test("sub broadcasts both ways", () => checkGradients(sub, [[2, 1, 3], [4, 3]]));
Deno.test("mul broadcasts a column", () => checkGradients(mul, [[3, 4], [3, 1]]));
Deno.test("div", () => checkGradients(div, [[3, 4], [4]], { positive: true }));
Deno.test("neg", () => checkGradients(neg, [[5]]));
Deno.test("exp", () => checkGradients(exp, [[2, 3]]));
Deno.test("log", () => checkGradients(log, [[2, 3]], { positive: true }));
Deno.test("sqrt", () => checkGradients(sqrt, [[2, 3]], { positive: true }));
Deno.test("pow with a constant exponent", () =>
  checkGradients((x) => pow(x, 2.5), [[6]], { positive: true }));
Deno.test("pow with a tensor exponent", () =>
  checkGradients(pow, [[2, 3], [3]], { positive: true }));
Deno.test("erf", () => checkGradients((x) => erf(mul(x, 2.5)), [[4, 5]]));
Deno.test("tanh", () => checkGradients((x) => tanh(mul(x, 2)), [[7]]));
Deno.test("sigmoid", () => checkGradients((x) => sigmoid(mul(x, 3)), [[7]]));
Deno.test("abs away from zero", () =>
  checkGradients(abs, [[4]], { values: [Float64Array.of(-1.5, -0.25, 0.5, 2)] }));
Deno.test("maximum and minimum without ties", () =>
  checkGradients((a, b) => add(maximum(a, b), mul(minimum(a, b), 3)), [[3, 4], [4]]));
Deno.test("where routes gradients to the chosen branch", () =>
  checkGradients((a, b) => where(greater(stopGradient(a), 0), mul(a, b), b), [[3, 4], [3, 4]]));
Deno.test("clip passes gradients only inside the range", () =>
  checkGradients((x) => clip(x, -0.5, 0.5), [[6]], {
    values: [Float64Array.of(-0.9, -0.4, 0.1, 0.3, 0.7, 0.45)],
  }));

async function gradientValues(
  build: (g: Graph) => { loss: ReturnType<typeof sum>; wrt: ReturnType<typeof sum>[] },
  feeds: Record<string, Float32Array | Float64Array>,
): Promise<Float64Array[]> {
  const g = new Graph();
  const { loss, wrt } = build(g);
  grad(loss, wrt).forEach((t, i) => g.output(`g${i}`, t));
  const compiled = await CompiledGraph.create(g);
  const out = await compiled.run(feeds);
  return wrt.map((_, i) => Float64Array.from(out[`g${i}`] as Float32Array));
}

Deno.test("stopGradient cuts the path: d/dx Σ x·sg(x) = x", async () => {
  const x = Float32Array.of(1, -2, 3);
  const [gx] = await gradientValues((g) => {
    const t = g.input("x", "float32", [3]);
    return { loss: sum(mul(t, stopGradient(t))), wrt: [t] };
  }, { x });
  assertClose(gx, [1, -2, 3]);
});

Deno.test("cast between float dtypes casts the gradient back", async () => {
  const x = Float32Array.of(1, 2);
  const [gx] = await gradientValues((g) => {
    const t = g.input("x", "float32", [2]);
    return { loss: sum(mul(cast(t, "float64"), 3)), wrt: [t] };
  }, { x });
  assertClose(gx, [3, 3]);
});

Deno.test("float64 erf substitute matches tabulated values", async () => {
  const g = new Graph();
  const x = g.input("x", "float64", [5]);
  g.output("y", erf(x));
  const out = await (await CompiledGraph.create(g)).run({ x: Float64Array.of(0, 0.5, -1, 2, 3.5) });
  // erf values to 15 digits (Abramowitz & Stegun, table 7.1).
  assertClose(
    out.y as Float64Array,
    [0, 0.520499877813047, -0.842700792949715, 0.995322265018953, 0.999999256901628],
    0,
    1e-11,
  );
});

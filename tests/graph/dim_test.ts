import { assert } from "../assert.ts";
import {
  addDims,
  divideDims,
  isSymbolic,
  mulDims,
  productOfDims,
  quotientDim,
  sameDim,
  symbolicDim,
} from "../../lib/graph/dim.ts";

const [batch, height, width] = ["batch", "height", "width"].map(symbolicDim);

Deno.test("symbolic sizes are polynomials: equal however they were computed", () => {
  const hw = mulDims(height, width);
  assert.equal(String(hw), "height*width");
  assert(sameDim(hw, mulDims(width, height)));
  const tokens = addDims(1, hw);
  assert.equal(String(tokens), "height*width+1");
  assert(sameDim(tokens, addDims(hw, 1)));
  // batch·(1 + h·w) expands into a sum of monomials.
  const rows = mulDims(batch, tokens);
  assert.equal(String(rows), "batch*height*width+batch");
  assert(sameDim(rows, addDims(mulDims(mulDims(batch, width), height), batch)));
  assert(!sameDim(rows, tokens));
  assert(!sameDim(batch, 1));
  assert.equal(String(mulDims(addDims(batch, batch), 3)), "6*batch");
  assert.equal(String(productOfDims([batch, 3, height, width])), "3*batch*height*width");
});

Deno.test("arithmetic that leaves no symbol gives a number", () => {
  assert.equal(addDims(2, 3), 5);
  assert.equal(mulDims(batch, 0), 0);
  assert.equal(addDims(addDims(batch, 4), mulDims(batch, -1)), 4);
  assert.equal(productOfDims([]), 1);
  assert.equal(divideDims(mulDims(batch, 6), mulDims(batch, 2)), 3);
});

Deno.test("exact division by a number or a single term, else undefined", () => {
  const rows = mulDims(mulDims(batch, addDims(1, mulDims(height, width))), 96);
  assert.equal(String(divideDims(rows, 96)), "batch*height*width+batch");
  assert.equal(String(divideDims(rows, mulDims(batch, 32))), "3*height*width+3");
  assert.equal(divideDims(rows, 7), undefined);
  assert.equal(divideDims(rows, height), undefined);
  assert.equal(divideDims(batch, addDims(batch, 1)), undefined);
  assert.equal(divideDims(12, 4), 3);
  assert.equal(divideDims(12, 5), undefined);
});

Deno.test("a quotient that does not divide exactly is a new symbol named after it", () => {
  const rows = quotientDim(height, 16);
  assert(isSymbolic(rows));
  assert.equal(String(rows), "height/16");
  assert(sameDim(rows, quotientDim(height, 16)));
  assert(!sameDim(rows, quotientDim(height, 8)));
  assert.equal(String(mulDims(rows, quotientDim(width, 16))), "height/16*width/16");
  assert.equal(String(quotientDim(addDims(height, 1), 2)), "(height+1)/2");
  assert.equal(String(quotientDim(mulDims(height, 32), 16)), "2*height");
  assert.equal(quotientDim(224, 16), 14);
});

Deno.test("a symbol needs a plain name", () => {
  assert.throws(() => symbolicDim("2x"), /symbolicDim: '2x' is not a name/);
  assert.throws(() => symbolicDim("a*b"), /symbolicDim: 'a\*b' is not a name/);
});

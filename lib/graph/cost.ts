/**
 * The arithmetic work of a recorded graph, counted from its nodes' shapes: the multiply-accumulates
 * (MACs) of its matrix products (`MatMul`, `Gemm`, `FusedMatMul`) and convolutions (`Conv`,
 * `ConvTranspose`), which dominate the work of a network. Elementwise ops, reductions and data
 * movement are not counted. One MAC is two floating-point operations.
 *
 * @module
 */

import type { Graph, NodeSpec } from "./graph.ts";
import { fixedShape, formatShape, type Shape, shapeSize } from "./tensor.ts";

/**
 * Multiply-accumulates of one run of `graph`: Σ over its product and convolution nodes. The
 * graph's shapes must be fixed (no symbolic axes).
 *
 * ```ts
 * const g = new Graph();
 * matmul(g.input("a", "float32", [2, 3]), g.input("b", "float32", [3, 4]));
 * countMacs(g); // 24 = 2·4 outputs × 3 products each
 * ```
 */
export function countMacs(graph: Graph): number {
  let total = 0;
  for (const node of graph.nodes) total += nodeMacs(graph, node);
  return total;
}

/** MACs of one node; 0 for ops that are not products or convolutions. */
function nodeMacs(graph: Graph, node: NodeSpec): number {
  const shape = (name: string) => {
    const dims = graph.dimsOf(name);
    return fixedShape(dims, () => `countMacs: ${name}${formatShape(dims)} (at node ${node.name})`);
  };
  const flag = (name: string) => {
    const attribute = node.attributes[name];
    return attribute !== undefined && "i" in attribute && attribute.i === 1;
  };
  switch (node.opType) {
    case "MatMul":
    case "FusedMatMul":
    case "Gemm": {
      // Every output element is a dot product over the contracted axis of the first operand.
      const a = shape(node.inputs[0]);
      const contracted = a.length === 1 ? a[0] : a[a.length - (flag("transA") ? 2 : 1)];
      return shapeSize(shape(node.outputs[0])) * contracted;
    }
    case "Conv":
      // weight [out channels, in channels / group, ...kernel]: one filter per output element.
      return shapeSize(shape(node.outputs[0])) * filterSize(shape(node.inputs[1]));
    case "ConvTranspose":
      // weight [in channels, out channels / group, ...kernel]: each input element is spread.
      return shapeSize(shape(node.inputs[0])) * filterSize(shape(node.inputs[1]));
    default:
      return 0;
  }
}

/** Elements of one filter of a convolution weight: the product of every axis but the first. */
function filterSize(weight: Shape): number {
  return shapeSize(weight.slice(1));
}

"""Counts the work PyTorch does: the multiply-accumulates (MACs) of the matrix products and
convolutions it runs, forward and backward, from the shapes of the aten ops as they run.

Counted the way `lib/graph/cost.ts` counts a graph: every output element of a product or a
convolution costs one MAC per term of its dot product; elementwise ops, reductions and copies
are free.

    with MacCounter() as counter:
        train_step(...)
    counter.macs
"""

import math

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


class MacCounter(TorchDispatchMode):
    """Adds the MACs of every aten matrix product and convolution run inside the `with` block
    (including those autograd runs for the backward pass) to `macs`."""

    def __init__(self):
        super().__init__()
        self.macs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.macs += op_macs(func.overloadpacket, args, out)
        return out


def op_macs(op, args, out):
    """MACs of one aten call with its arguments and result; 0 for ops that are not counted."""
    if op in (aten.mm, aten.bmm):
        return args[0].numel() * args[1].shape[-1]
    if op in (aten.addmm, aten.baddbmm):
        return args[1].numel() * args[2].shape[-1]
    if op is aten.convolution:
        weight, transposed = args[1], args[6]
        moved = args[0] if transposed else out
        return moved.numel() * filter_size(weight)
    if op is aten.convolution_backward:
        grad_output, inputs, weight, transposed, output_mask = (
            args[0], args[1], args[2], args[7], args[10]
        )
        moved = inputs if transposed else grad_output
        # The input and the weight gradients each cost what the forward did.
        return sum(output_mask[:2]) * moved.numel() * filter_size(weight)
    return 0


def filter_size(weight):
    """Elements of one filter of a convolution weight: every axis but the first."""
    return math.prod(weight.shape[1:])

"""PyTorch reference of bench/block_step.ts: one ViT-Tiny block's training step, timed.

Prints one JSON line: `seconds` (each timed step, after 5 warm-up steps), `peak_rss_mib` and
`blas` (the BLAS and LAPACK libraries the process mapped). Run with OPENBLAS_CORETYPE=SkylakeX
and OMP_NUM_THREADS set to the core count (bench/compare_block.ts does this).
"""

import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "reference"))
from block_torch import Block  # noqa: E402
from torch_process import loaded_blas, peak_rss_mib  # noqa: E402


def main(steps=20, warmup=5):
    torch.set_num_threads(os.cpu_count())
    batch, tokens, width, heads, hidden = 64, 65, 192, 3, 768
    block = Block(width, heads, hidden)
    decay = [p for n, p in block.named_parameters() if not n.endswith(".bias") and p.ndim > 1]
    plain = [p for n, p in block.named_parameters() if n.endswith(".bias") or p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay}, {"params": plain, "weight_decay": 0.0}], lr=1e-4, weight_decay=0.04)
    x = torch.randn(batch, tokens, width)
    r = torch.randn(batch, tokens, width)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        optimizer.zero_grad()
        (block(x) * r).sum().backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    print(json.dumps(dict(seconds=times, peak_rss_mib=peak_rss_mib(), blas=loaded_blas())))


if __name__ == "__main__":
    main()

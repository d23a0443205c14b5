"""Times one official-equivalent iBOT training iteration in PyTorch (fp32, CPU).

Configuration: vit_tiny (D 192, depth 12, heads 3), patch 4, img_size 32 for the pos_embed (the
32 px global crops use it as is, the 16 px local crops interpolate it), 2 global crops of 32 px and
4 local crops of 16 px, batch 64, out_dim 1024 with a shared head on student and teacher,
norm_last_layer false, drop_path 0.1, block masks at ratio 0.3 on the global crops,
lr 5e-4 * 64 / 256, wd 0.04, clip 3.0, teacher momentum 0.996, teacher temperatures 0.04 / 0.04.
Inputs are random tensors; there is no data loading. The iteration is a steady-state one
(epoch 1 with freeze_last_layer 1, so every student parameter is updated).

Usage: ibot_step_torch.py [--steps N] (default 5, after 2 warm-up iterations). Prints images/s on
the line before the last and the median seconds per iteration, as a bare number, on the last line.
Run with OPENBLAS_CORETYPE=SkylakeX and OMP_NUM_THREADS set to the core count.
"""

import argparse
import os
import random
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "reference"))
import ibot_torch  # noqa: E402

BATCH = 64
GLOBAL_CROPS, LOCAL_CROPS = 2, 4
GLOBAL_SIZE, LOCAL_SIZE, PATCH = 32, 16, 4
OUT_DIM = 1024


def make_batch(rng):
    """Random crops (2 global, 4 local) and block masks (global crops at ratio 0.3, local empty)."""
    images = [torch.randn(BATCH, 3, GLOBAL_SIZE, GLOBAL_SIZE) for _ in range(GLOBAL_CROPS)]
    images += [torch.randn(BATCH, 3, LOCAL_SIZE, LOCAL_SIZE) for _ in range(LOCAL_CROPS)]
    side_g, side_l = GLOBAL_SIZE // PATCH, LOCAL_SIZE // PATCH
    masks = [
        torch.from_numpy(
            np.stack([ibot_torch.block_mask(side_g, side_g, 0.3, rng) for _ in range(BATCH)])
        )
        for _ in range(GLOBAL_CROPS)
    ]
    masks += [torch.zeros(BATCH, side_l, side_l, dtype=torch.bool) for _ in range(LOCAL_CROPS)]
    return images, masks


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    rng = random.Random(0)
    student, teacher = ibot_torch.build_models(
        "vit_tiny",
        PATCH,
        img_size=GLOBAL_SIZE,
        out_dim=OUT_DIM,
        patch_out_dim=OUT_DIM,
        shared_head=True,
        shared_head_teacher=True,
        norm_last_layer=False,
        drop_path=0.1,
    )
    student.train()
    teacher.train()
    loss_fn = ibot_torch.iBOTLoss(
        OUT_DIM, OUT_DIM, GLOBAL_CROPS, LOCAL_CROPS, 0.04, 0.04, 0.04, 0.04,
        warmup_teacher_temp_epochs=1, nepochs=2,
    )
    optimizer = torch.optim.AdamW(ibot_torch.get_params_groups(student))
    lr = 5e-4 * BATCH / 256

    times = []
    for i in range(args.warmup + args.steps):
        images, masks = make_batch(rng)
        start = time.perf_counter()
        ibot_torch.train_step(
            student, teacher, loss_fn, optimizer, images, masks,
            epoch=1, lr=lr, wd=0.04, momentum=0.996, clip_grad=3.0, freeze_last_layer=1,
        )
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    print(f"{BATCH / seconds:.2f} images/s")
    print(f"{seconds:.4f}")


if __name__ == "__main__":
    main()

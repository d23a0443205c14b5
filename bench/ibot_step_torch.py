"""Times iBOT training iterations in PyTorch (fp32, CPU), with the official work or with the work
our step does.

Configuration of --arch vit (the default): vit_tiny (D 192, depth 12, heads 3), patch 4, img_size
32 for the pos_embed (the 32 px global crops use it as is, the 16 px local crops interpolate it),
2 global crops of 32 px and 4 local crops of 16 px, drop_path 0.1. Of --arch swin: swin_tiny with
window 7 laid out for 64 px (`swin_torch.build_swin_models`, its factory's drop path 0.1), 2
global crops of 64 px and 4 local crops of 32 px, masks at the last stage's 2x2 grid. Both: batch
64 (--batch), out_dim 1024 with a shared head on student and teacher, norm_last_layer false,
block masks at ratio 0.3 on the global crops, lr 5e-4 * batch / 256, wd 0.04, clip 3.0, teacher
momentum 0.996, teacher temperatures 0.04 / 0.04. Inputs are random tensors; there is no data
loading. The iterations are steady-state ones (epoch 1 with freeze_last_layer 1, so every student
parameter is updated).

--work official runs `ibot_torch.train_step`, the official algorithm (the head on every token);
--work equal runs `ibot_equal_work_torch.equal_work_step`, the same update computed with the work
of `lib/train/step.ts` (the head on the CLS tokens and the masked patches' slots only, and a
Swin's attention projections on the real tokens only), on --slots
S flat patch slots per step across the batch (our step's bucket; default: each batch's masked
patches).

Usage: ibot_step_torch.py [--arch vit|swin] [--work official|equal] [--steps N] [--warmup N] [--batch B]
[--slots S] [--count-macs] [--threads T] (default: the core count). Prints one JSON line:
`seconds` (each timed iteration), `peak_rss_mib` (the process's peak resident memory after them),
`blas` (the BLAS and LAPACK libraries it mapped) and, with --count-macs, `macs` (the
multiply-accumulates of one more, untimed iteration).
Run with OPENBLAS_CORETYPE=SkylakeX and OMP_NUM_THREADS set to the core count.
"""

import argparse
import json
import os
import random
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "reference"))
import ibot_torch  # noqa: E402
import swin_torch  # noqa: E402
from ibot_equal_work_torch import equal_work_step  # noqa: E402
from torch_macs import MacCounter  # noqa: E402
from torch_process import loaded_blas, peak_rss_mib  # noqa: E402

GLOBAL_CROPS, LOCAL_CROPS = 2, 4
OUT_DIM = 1024
# Crop sizes and the mask grid's cell (the ViT's patch, the Swin's last-stage stride) per arch.
SIZES = dict(
    vit=dict(global_size=32, local_size=16, cell=4),
    swin=dict(global_size=64, local_size=32, cell=32),
)


def build_models(arch):
    """Student and teacher of `arch` (see the module docstring)."""
    heads = dict(
        out_dim=OUT_DIM,
        patch_out_dim=OUT_DIM,
        shared_head=True,
        shared_head_teacher=True,
        norm_last_layer=False,
    )
    if arch == "swin":
        return swin_torch.build_swin_models("swin_tiny", 7, img_size=64, **heads)
    return ibot_torch.build_models("vit_tiny", 4, img_size=32, drop_path=0.1, **heads)


def make_batch(batch, rng, global_size, local_size, cell):
    """Random crops (2 global, 4 local) and block masks (global crops at ratio 0.3, local empty)
    on grids of `cell` px."""
    images = [torch.randn(batch, 3, global_size, global_size) for _ in range(GLOBAL_CROPS)]
    images += [torch.randn(batch, 3, local_size, local_size) for _ in range(LOCAL_CROPS)]
    side_g, side_l = global_size // cell, max(1, local_size // cell)
    masks = [
        torch.from_numpy(
            np.stack([ibot_torch.block_mask(side_g, side_g, 0.3, rng) for _ in range(batch)])
        )
        for _ in range(GLOBAL_CROPS)
    ]
    masks += [torch.zeros(batch, side_l, side_l, dtype=torch.bool) for _ in range(LOCAL_CROPS)]
    return images, masks


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=("vit", "swin"), default="vit")
    parser.add_argument("--work", choices=("official", "equal"), default="official")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--slots", type=int)
    parser.add_argument("--count-macs", action="store_true")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = random.Random(0)
    student, teacher = build_models(args.arch)
    student.train()
    teacher.train()
    loss_fn = ibot_torch.iBOTLoss(
        OUT_DIM, OUT_DIM, GLOBAL_CROPS, LOCAL_CROPS, 0.04, 0.04, 0.04, 0.04,
        warmup_teacher_temp_epochs=1, nepochs=2,
    )
    optimizer = torch.optim.AdamW(ibot_torch.get_params_groups(student))
    hyper = dict(
        epoch=1, lr=5e-4 * args.batch / 256, wd=0.04, momentum=0.996, clip_grad=3.0,
        freeze_last_layer=1,
    )
    if args.work == "equal":
        hyper["slots"] = args.slots

    def step():
        images, masks = make_batch(args.batch, rng, **SIZES[args.arch])
        start = time.perf_counter()
        run = ibot_torch.train_step if args.work == "official" else equal_work_step
        run(student, teacher, loss_fn, optimizer, images, masks, **hyper)
        return time.perf_counter() - start

    for _ in range(args.warmup):
        step()
    report = dict(seconds=[step() for _ in range(args.steps)], peak_rss_mib=peak_rss_mib())
    report["blas"] = loaded_blas()
    if args.count_macs:
        with MacCounter() as counter:
            step()
        report["macs"] = counter.macs
    print(json.dumps(report))


if __name__ == "__main__":
    main()

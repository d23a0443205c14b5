"""Times the iBOT training iteration of the PyTorch reference (`tests/reference/ibot_torch.py`)
on the GPU with the official mixed precision, at the official ViT-S/16 recipe by default: the
PyTorch side of the GPU check.

Work: `official` runs `ibot_torch.train_step`, the official algorithm (the head on every token);
`equal` runs `ibot_equal_work_torch.equal_work_step`, the same update with the work of our step
(the head on the CLS tokens and on S flat patch slots), S being the batch's masked patches rounded
up to our step's slot bucket (`slot_buckets` of G·B·M, M = floor(0.5 · patches per global crop),
the most a crop can draw at this pred_ratio).

Recipe: two global crops of 224 px and ten local crops of 96 px per image, batch 64 per step,
out_dim 8192 with a shared head on student and teacher, norm_last_layer false, drop_path 0.1,
block masks on the global crops with pred_ratio 0 0.3 and pred_ratio_var 0 0.2 (each global crop
of each image is, with even odds, unmasked or masked at a ratio drawn from [0.1, 0.5]), AdamW at
lr 5e-4 * batch / 256 and wd 0.04, clip_grad 3.0, teacher momentum 0.996, teacher temperatures
0.07. The iterations are steady-state ones (epoch 1 with freeze_last_layer 1, so the last layer is
updated too).

Precision: `fp16` runs the forward passes and the loss under `torch.autocast(dtype=float16)` and
updates through a GradScaler (initial scale 2^16), in the official order: scale, backward,
unscale_, clip, cancel the last layer's gradients, scaler.step, scaler.update, then the EMA
teacher update (which runs even when the scaler skipped the step). `bf16` uses
`torch.autocast(dtype=bfloat16)` without loss scaling; `fp32` neither. fp16 needs --device cuda.
TF32 is off unless --tf32 (so that fp32 compares with a true fp32 run); cuDNN autotuning is on,
as in the official main_ibot.py.

The batch (crops and masks) is random, made on the device once and reused by every step: the
timings leave out data loading. Each step is timed from a device synchronisation to the next.

Usage: gpu_torch_step.py [--work official|equal] [--device cuda|cpu] [--precision fp16|bf16|fp32]
[--arch vit_tiny|vit_small|vit_base] [--batch B] [--steps N] [--warmup N] [--global-size PX]
[--local-size PX] [--local-crops N] [--out-dim K] [--tf32] [--threads T].
Prints one JSON line: the configuration (`work` included), `torch`, `gpu` (null on the CPU),
`seconds` (each timed step), `s_per_step_median`, `images_per_s` (batch / median), `losses` (each
timed step's), `skipped_steps` (indices, warm-up steps first, of the steps the GradScaler
skipped), `loss_scale` (the GradScaler's final scale, null without one), `slots_mean` and
`masked_mean` (with --work equal, the mean S and masked patches of the timed steps; null
otherwise), and on CUDA `peak_allocated_mib` and `peak_reserved_mib`
(torch.cuda.max_memory_allocated and max_memory_reserved over the whole run), on the CPU
`peak_rss_mib`.
"""

import argparse
import json
import math
import os
import random
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "reference"))
import ibot_torch  # noqa: E402
from ibot_equal_work_torch import equal_work_step, pick_slot_bucket, slot_buckets  # noqa: E402
from torch_process import peak_rss_mib  # noqa: E402

GLOBAL_CROPS = 2
PATCH = 16
PRED_RATIO, PRED_RATIO_VAR = [0.0, 0.3], [0.0, 0.2]
TEACHER_TEMP = 0.07
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", choices=("official", "equal"), default="official")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--precision", choices=("fp16", "bf16", "fp32"), default="fp16")
    parser.add_argument(
        "--arch", choices=("vit_tiny", "vit_small", "vit_base"), default="vit_small"
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--global-size", type=int, default=224)
    parser.add_argument("--local-size", type=int, default=96)
    parser.add_argument("--local-crops", type=int, default=10)
    parser.add_argument("--out-dim", type=int, default=8192)
    parser.add_argument("--tf32", action="store_true")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    if args.precision == "fp16" and args.device != "cuda":
        parser.error("--precision fp16 needs --device cuda (autocast to float16 is a CUDA mode)")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device cuda, but PyTorch {torch.__version__} sees no CUDA device")
    for name in ("global_size", "local_size"):
        if getattr(args, name) % PATCH != 0:
            parser.error(f"--{name.replace('_', '-')} must be a multiple of the patch size {PATCH}")
    return args


def make_batch(args, device, rng):
    """Random crops on `device` (global first) and block masks (B, h, w): each global crop's mask
    at the ratio `pred_ratio_for_crop` draws for it, the local crops' empty (the loss ignores them).
    """
    images = [
        torch.randn(args.batch, 3, args.global_size, args.global_size, device=device)
        for _ in range(GLOBAL_CROPS)
    ]
    images += [
        torch.randn(args.batch, 3, args.local_size, args.local_size, device=device)
        for _ in range(args.local_crops)
    ]
    side, local_side = args.global_size // PATCH, args.local_size // PATCH
    masks = []
    for _ in range(GLOBAL_CROPS):
        ratios = [
            ibot_torch.pred_ratio_for_crop(PRED_RATIO, PRED_RATIO_VAR, rng)
            for _ in range(args.batch)
        ]
        crop = np.stack([ibot_torch.block_mask(side, side, ratio, rng) for ratio in ratios])
        masks.append(torch.from_numpy(crop).to(device))
    masks += [
        torch.zeros(args.batch, local_side, local_side, dtype=torch.bool, device=device)
        for _ in range(args.local_crops)
    ]
    return images, masks


def equal_work_slots(args, masks):
    """The equal work's slots for a batch: (masked, S), its global crops' masked patches and the
    slot bucket our step would pick for them (buckets of G·B·M, M the most masked patches of one
    crop)."""
    side = args.global_size // PATCH
    max_ratio = max(ratio + var for ratio, var in zip(PRED_RATIO, PRED_RATIO_VAR))
    mask_slots = max(1, math.floor(max_ratio * side * side))
    buckets = slot_buckets(GLOBAL_CROPS * args.batch * mask_slots)
    masked = int(sum(int(mask.sum()) for mask in masks[:GLOBAL_CROPS]))
    return masked, pick_slot_bucket(buckets, masked)


def grad_scaler():
    """A GradScaler for CUDA with the defaults (2^16, x2 after 2000 finite steps, x0.5 on inf):
    `torch.amp.GradScaler` where it exists (PyTorch 2.x), else `torch.cuda.amp.GradScaler`."""
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()


def main():
    args = parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    torch.manual_seed(0)
    rng = random.Random(0)

    student, teacher = ibot_torch.build_models(
        args.arch,
        PATCH,
        img_size=224,
        out_dim=args.out_dim,
        patch_out_dim=args.out_dim,
        shared_head=True,
        shared_head_teacher=True,
        norm_last_layer=False,
        drop_path=0.1,
    )
    student, teacher = student.to(device).train(), teacher.to(device).train()
    loss_fn = ibot_torch.iBOTLoss(
        args.out_dim, args.out_dim, GLOBAL_CROPS, args.local_crops,
        TEACHER_TEMP, TEACHER_TEMP, TEACHER_TEMP, TEACHER_TEMP,
        warmup_teacher_temp_epochs=1, nepochs=2,
    ).to(device)
    optimizer = torch.optim.AdamW(ibot_torch.get_params_groups(student))
    images, masks = make_batch(args, device, rng)

    scaler = grad_scaler() if args.precision == "fp16" else None
    dtype = DTYPES.get(args.precision)
    amp = {}
    if dtype is not None:
        amp["autocast"] = lambda: torch.autocast(args.device, dtype=dtype)
    hyper = dict(
        epoch=1, lr=5e-4 * args.batch / 256, wd=0.04, momentum=0.996, clip_grad=3.0,
        freeze_last_layer=1, scaler=scaler, **amp,
    )

    def synchronize():
        if args.device == "cuda":
            torch.cuda.synchronize()

    skipped, slots_used, masked_used = [], [], []
    run = equal_work_step if args.work == "equal" else ibot_torch.train_step

    def step(index):
        scale = scaler.get_scale() if scaler else None
        work = {}
        if args.work == "equal":
            masked, work["slots"] = equal_work_slots(args, masks)
            masked_used.append(masked)
            slots_used.append(work["slots"])
        synchronize()
        start = time.perf_counter()
        stats = run(student, teacher, loss_fn, optimizer, images, masks, **hyper, **work)
        synchronize()
        seconds = time.perf_counter() - start
        if scaler and scaler.get_scale() < scale:
            skipped.append(index)
        return seconds, stats["loss"]

    for index in range(args.warmup):
        step(index)
    slots_used.clear()
    masked_used.clear()
    timed = [step(args.warmup + index) for index in range(args.steps)]
    seconds = [s for s, _ in timed]
    median = statistics.median(seconds)
    report = dict(
        work=args.work,
        device=args.device,
        precision=args.precision,
        arch=args.arch,
        batch=args.batch,
        global_crops=[GLOBAL_CROPS, args.global_size],
        local_crops=[args.local_crops, args.local_size],
        out_dim=args.out_dim,
        tf32=args.tf32,
        warmup=args.warmup,
        torch=torch.__version__,
        gpu=torch.cuda.get_device_name(device) if args.device == "cuda" else None,
        seconds=seconds,
        s_per_step_median=median,
        images_per_s=args.batch / median,
        losses=[loss for _, loss in timed],
        skipped_steps=skipped,
        loss_scale=scaler.get_scale() if scaler else None,
        slots_mean=statistics.mean(slots_used) if slots_used else None,
        masked_mean=statistics.mean(masked_used) if masked_used else None,
    )
    if args.device == "cuda":
        report["peak_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        report["peak_reserved_mib"] = torch.cuda.max_memory_reserved(device) / 2**20
    else:
        report["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(report))


if __name__ == "__main__":
    main()

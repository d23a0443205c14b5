"""Checks that `bench/ibot_equal_work_torch.equal_work_step` makes the update of the official
`ibot_torch.train_step`: both run two iterations in float64 from the same tiny student, teacher,
loss centres and batches (one crop row with no masked patch), with a ViT backbone once with a
shared head and as many slots as each batch has masked patches, and once with a separate patch
head and a slot for every global-crop patch of the batch (the rest padding of weight 0); once more
with a shared head, the equal-work step given an autocast factory that only records its use and a
GradScaler stand-in whose power-of-two scale is exact in float64 (the official step runs without
them); and with a Swin backbone and a shared head, whose windows pad the token grids (the
equal-work step projects the real tokens only) and whose qkv biases are random (the padding's q, k
and v).
Prints one JSON object: `differences`, for each compared quantity the largest difference relative
to the largest magnitude of the official value over the runs, and `calls`, the uses of that
autocast and scaler.
"""

import contextlib
import json
import os
import random
import sys

import numpy as np
import torch

HERE = os.path.dirname(__file__)
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench"))
import ibot_torch  # noqa: E402
import swin_torch  # noqa: E402
from ibot_equal_work_torch import equal_work_step  # noqa: E402
from amp_update_check import PowerOfTwoScaler  # noqa: E402

BATCH, GLOBAL_CROPS, LOCAL_CROPS = 3, 2, 2
OUT_DIM = 32
RATIOS = (0.1, 0.3, 0.5)
# Crop sizes and the mask grid's cell per backbone. The Swin (window 4, patch 4) has stage grids
# 6 and 3 on the global crops, padded to 8 and left at 3 (window 3), and 4 and 2 on the local
# crops, left at 4 and padded to 3.
SIZES = dict(
    vit=dict(global_size=16, local_size=8, cell=4),
    swin=dict(global_size=24, local_size=16, cell=8),
)
SWIN_SIZE = dict(embed_dim=16, depths=(2, 2), num_heads=(1, 2), drop_path_rate=0.0)


def batches(rng, global_size, local_size, cell):
    """Two batches of random crops and block masks, the rows of each crop at ratios 0.1, 0.3 and
    0.5 (so their masked counts differ); row 0 of crop 0 has no masked patch."""
    result = []
    side = global_size // cell
    for _ in range(2):
        images = [torch.randn(BATCH, 3, global_size, global_size, dtype=torch.float64)
                  for _ in range(GLOBAL_CROPS)]
        images += [torch.randn(BATCH, 3, local_size, local_size, dtype=torch.float64)
                   for _ in range(LOCAL_CROPS)]
        masks = [torch.from_numpy(np.stack([ibot_torch.block_mask(side, side, ratio, rng)
                                            for ratio in RATIOS]))
                 for _ in range(GLOBAL_CROPS)]
        masks[0][0] = False
        result.append((images, masks))
    return result


def make_models(arch, shared):
    """A tiny float64 student, teacher and loss of `arch` with random centres (and, for the Swin,
    random qkv biases, the same on both networks), the same at every call."""
    torch.manual_seed(0)
    patch_out_dim = OUT_DIM if shared else OUT_DIM + 8
    heads = dict(
        out_dim=OUT_DIM, patch_out_dim=patch_out_dim, shared_head=shared,
        shared_head_teacher=shared, norm_last_layer=False, head_hidden=48, head_bottleneck=16,
    )
    if arch == "swin":
        student, teacher = swin_torch.build_swin_models(
            SWIN_SIZE, 4, img_size=SIZES["swin"]["global_size"], **heads
        )
        teacher_params = dict(teacher.named_parameters())
        with torch.no_grad():
            for name, param in student.named_parameters():
                if name.endswith("attn.qkv.bias"):
                    param.normal_(0, 0.1)
                    teacher_params[name].copy_(param)
    else:
        student, teacher = ibot_torch.build_models(
            patch_size=4, img_size=SIZES["vit"]["global_size"], drop_path=0.0,
            size=dict(embed_dim=32, depth=2, num_heads=2), **heads,
        )
    loss_fn = ibot_torch.iBOTLoss(
        OUT_DIM, patch_out_dim, GLOBAL_CROPS, LOCAL_CROPS, 0.04, 0.04, 0.07, 0.07,
        warmup_teacher_temp_epochs=1, nepochs=2,
    )
    with torch.no_grad():
        loss_fn.center.normal_(0, 0.1)
        loss_fn.center2.normal_(0, 0.1)
    return student.double(), teacher.double(), loss_fn.double()


def run(step, arch, shared, data, **hyper):
    """Runs `step` on each batch from fresh models; returns the outcome by name."""
    student, teacher, loss_fn = make_models(arch, shared)
    optimizer = torch.optim.AdamW(ibot_torch.get_params_groups(student))
    stats = [step(student, teacher, loss_fn, optimizer, images, masks, **hyper)
             for images, masks in data]
    outcome = {k: torch.tensor([s[k] for s in stats], dtype=torch.float64) for k in stats[0]}
    outcome["student"] = torch.cat([p.detach().flatten() for p in student.parameters()])
    outcome["teacher"] = torch.cat([p.detach().flatten() for p in teacher.parameters()])
    outcome["center"], outcome["center2"] = loss_fn.center, loss_fn.center2
    return outcome


def main():
    differences, calls = {}, []

    @contextlib.contextmanager
    def autocast():
        calls.append("autocast")
        yield

    hyper = dict(epoch=1, lr=0.005, wd=0.04, momentum=0.9, clip_grad=3.0, freeze_last_layer=1)
    vit = SIZES["vit"]
    every_patch = GLOBAL_CROPS * BATCH * (vit["global_size"] // vit["cell"]) ** 2
    amp = dict(autocast=autocast, scaler=PowerOfTwoScaler(2.0**12, calls))
    runs = (
        ("vit", True, {}),
        ("vit", False, dict(slots=every_patch)),
        ("vit", True, amp),
        ("swin", True, {}),
    )
    for arch, shared, extra in runs:
        data = batches(random.Random(1), **SIZES[arch])
        official = run(ibot_torch.train_step, arch, shared, data, **hyper)
        equal = run(equal_work_step, arch, shared, data, **extra, **hyper)
        for name, expected in official.items():
            scale = expected.abs().max().clamp(min=1e-300)
            difference = ((equal[name] - expected).abs().max() / scale).item()
            differences[name] = max(differences.get(name, 0.0), difference)
    print(json.dumps(dict(differences=differences, calls=calls)))


if __name__ == "__main__":
    main()

"""Checks that `bench/ibot_equal_work_torch.equal_work_step` makes the update of the official
`ibot_torch.train_step`: both run two iterations in float64 from the same tiny student, teacher,
loss centres and batches (one crop row with no masked patch), once with a shared head and as many
slots as each batch has masked patches, and once with a separate patch head and a slot for every
global-crop patch of the batch (the rest padding of weight 0); and once more with a shared head,
the equal-work step given an autocast factory that only records its use and a GradScaler
stand-in whose power-of-two scale is exact in float64 (the official step runs without them).
Prints one JSON object: `differences`, for each compared quantity the largest difference relative
to the largest magnitude of the official value, and `calls`, the uses of that autocast and scaler.
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
from ibot_equal_work_torch import equal_work_step  # noqa: E402
from amp_update_check import PowerOfTwoScaler  # noqa: E402

BATCH, GLOBAL_CROPS, LOCAL_CROPS, GLOBAL_SIZE, LOCAL_SIZE, PATCH = 3, 2, 2, 16, 8, 4
OUT_DIM = 32
RATIOS = (0.1, 0.3, 0.5)


def batches(rng):
    """Two batches of random crops and block masks, the rows of each crop at ratios 0.1, 0.3 and
    0.5 (so their masked counts differ); row 0 of crop 0 has no masked patch."""
    result = []
    side = GLOBAL_SIZE // PATCH
    for _ in range(2):
        images = [torch.randn(BATCH, 3, GLOBAL_SIZE, GLOBAL_SIZE, dtype=torch.float64)
                  for _ in range(GLOBAL_CROPS)]
        images += [torch.randn(BATCH, 3, LOCAL_SIZE, LOCAL_SIZE, dtype=torch.float64)
                   for _ in range(LOCAL_CROPS)]
        masks = [torch.from_numpy(np.stack([ibot_torch.block_mask(side, side, ratio, rng)
                                            for ratio in RATIOS]))
                 for _ in range(GLOBAL_CROPS)]
        masks[0][0] = False
        result.append((images, masks))
    return result


def make_models(shared):
    """A tiny float64 student, teacher and loss with random centres, the same at every call."""
    torch.manual_seed(0)
    patch_out_dim = OUT_DIM if shared else OUT_DIM + 8
    student, teacher = ibot_torch.build_models(
        patch_size=PATCH, img_size=GLOBAL_SIZE, out_dim=OUT_DIM, patch_out_dim=patch_out_dim,
        shared_head=shared, shared_head_teacher=shared, norm_last_layer=False,
        drop_path=0.0, size=dict(embed_dim=32, depth=2, num_heads=2),
        head_hidden=48, head_bottleneck=16,
    )
    loss_fn = ibot_torch.iBOTLoss(
        OUT_DIM, patch_out_dim, GLOBAL_CROPS, LOCAL_CROPS, 0.04, 0.04, 0.07, 0.07,
        warmup_teacher_temp_epochs=1, nepochs=2,
    )
    with torch.no_grad():
        loss_fn.center.normal_(0, 0.1)
        loss_fn.center2.normal_(0, 0.1)
    return student.double(), teacher.double(), loss_fn.double()


def run(step, shared, data, **hyper):
    """Runs `step` on each batch from fresh models; returns the outcome by name."""
    student, teacher, loss_fn = make_models(shared)
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
    every_patch = GLOBAL_CROPS * BATCH * (GLOBAL_SIZE // PATCH) ** 2
    amp = dict(autocast=autocast, scaler=PowerOfTwoScaler(2.0**12, calls))
    for shared, extra in ((True, {}), (False, dict(slots=every_patch)), (True, amp)):
        data = batches(random.Random(1))
        official = run(ibot_torch.train_step, shared, data, **hyper)
        equal = run(equal_work_step, shared, data, **extra, **hyper)
        for name, expected in official.items():
            scale = expected.abs().max().clamp(min=1e-300)
            difference = ((equal[name] - expected).abs().max() / scale).item()
            differences[name] = max(differences.get(name, 0.0), difference)
    print(json.dumps(dict(differences=differences, calls=calls)))


if __name__ == "__main__":
    main()

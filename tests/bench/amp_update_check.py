"""Checks the loss-scaled update of `ibot_torch.train_step` (the official fp16 path, §5.4 step 6)
on the CPU, where PyTorch 1.13 has no GradScaler, with a stand-in of the GradScaler interface
whose scale is a power of two (so that scaling and unscaling are exact in float64):

- the calls come in the official order: scale, unscale_, clip, cancel the last layer, step,
  update, then the EMA teacher update;
- with a finite scale, the clip sees the gradients of the run without a scaler, and the update
  is exactly that run's;
- a scale that overflows the loss skips the student's step (its parameters stay as they were)
  while the teacher still takes its EMA step towards the student.

Prints one JSON object: `order` (the calls), `norms` (the largest |difference| of the gradient
norms the clip saw from those of the run without a scaler), `finite` (the largest |difference| of
any student or teacher parameter from that run), `student_moved` and `teacher_ema` (after the
overflow: the largest |change| of the student, and the largest |difference| of the teacher from
m * teacher + (1 - m) * student) and `teacher_moved` (the largest |change| of the teacher).
"""

import json
import os
import random
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "reference"))
import ibot_torch  # noqa: E402
import ibot_common  # noqa: E402

BATCH, GLOBAL_CROPS, LOCAL_CROPS, GLOBAL_SIZE, LOCAL_SIZE, PATCH, OUT_DIM = 2, 2, 2, 16, 8, 4, 32
MOMENTUM = 0.99


class PowerOfTwoScaler:
    """The part of GradScaler's interface that `update_student` uses, with a fixed scale: the
    step is skipped when an unscaled gradient is not finite. Appends each call to `calls`."""

    def __init__(self, scale, calls):
        self.scale_value = scale
        self.calls = calls
        self.found_inf = False

    def scale(self, loss):
        self.calls.append("scale")
        return loss * self.scale_value

    def unscale_(self, optimizer):
        self.calls.append("unscale_")
        for group in optimizer.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    param.grad.div_(self.scale_value)
                    self.found_inf |= not bool(torch.isfinite(param.grad).all())

    def step(self, optimizer):
        self.calls.append("step")
        if not self.found_inf:
            optimizer.step()

    def update(self):
        self.calls.append("update")


def recording(calls, name, function, results=None):
    """`function`, appending `name` to `calls` at each call, and its result to `results`."""

    def wrapper(*args, **kwargs):
        calls.append(name)
        result = function(*args, **kwargs)
        if results is not None:
            results.append(result)
        return result

    return wrapper


def run(scale, calls):
    """One float64 iteration from a fixed tiny student, teacher and batch; returns the student's
    and teacher's parameters before and after (name -> tensor)."""
    torch.manual_seed(0)
    rng = random.Random(0)
    student, teacher = ibot_torch.build_models(
        patch_size=PATCH, img_size=GLOBAL_SIZE, out_dim=OUT_DIM, patch_out_dim=OUT_DIM,
        shared_head=True, shared_head_teacher=True, norm_last_layer=False, drop_path=0.0,
        size=dict(embed_dim=32, depth=2, num_heads=2), head_hidden=48, head_bottleneck=16,
    )
    student, teacher = student.double(), teacher.double()
    with torch.no_grad():
        for param in teacher.parameters():  # a teacher apart from the student, as after training
            param.add_(0.01 * torch.randn_like(param))
    loss_fn = ibot_torch.iBOTLoss(
        OUT_DIM, OUT_DIM, GLOBAL_CROPS, LOCAL_CROPS, 0.04, 0.04, 0.07, 0.07,
        warmup_teacher_temp_epochs=1, nepochs=2,
    ).double()
    images = [torch.randn(BATCH, 3, GLOBAL_SIZE, GLOBAL_SIZE, dtype=torch.float64)
              for _ in range(GLOBAL_CROPS)]
    images += [torch.randn(BATCH, 3, LOCAL_SIZE, LOCAL_SIZE, dtype=torch.float64)
               for _ in range(LOCAL_CROPS)]
    side = GLOBAL_SIZE // PATCH
    masks = [torch.from_numpy(np.stack([ibot_torch.block_mask(side, side, 0.3, rng)
                                        for _ in range(BATCH)]))
             for _ in range(GLOBAL_CROPS)]
    optimizer = torch.optim.AdamW(ibot_torch.get_params_groups(student))
    before = snapshot(student, teacher)
    scaler = None if scale is None else PowerOfTwoScaler(scale, calls)
    ibot_torch.train_step(
        student, teacher, loss_fn, optimizer, images, masks, epoch=1, lr=1e-2, wd=0.04,
        momentum=MOMENTUM, clip_grad=0.05, freeze_last_layer=1, scaler=scaler,
    )
    return before, snapshot(student, teacher)


def snapshot(student, teacher):
    """Copies of every parameter, as `student.<name>` and `teacher.<name>`."""
    result = {}
    for prefix, model in (("student", student), ("teacher", teacher)):
        for name, param in model.named_parameters():
            result[f"{prefix}.{name}"] = param.detach().clone()
    return result


def largest(tensors):
    return max(float(t.abs().max()) for t in tensors)


def main():
    calls, norms = [], []
    ibot_common.clip_gradients = recording(calls, "clip", ibot_common.clip_gradients, norms)
    ibot_common.cancel_gradients_last_layer = recording(
        calls, "cancel", ibot_common.cancel_gradients_last_layer
    )
    ibot_common.ema_update = recording(calls, "ema", ibot_common.ema_update)

    _, plain = run(None, [])
    calls.clear()
    _, scaled = run(2.0**12, calls)
    order = list(calls)
    finite = largest(scaled[name] - plain[name] for name in plain)
    norms_difference = max(abs(a - b) for a, b in zip(norms[0], norms[1], strict=True))

    # The loss (a few units) times 2^1023 overflows to inf, and so do the gradients.
    before, after = run(2.0**1023, [])
    students = [name for name in before if name.startswith("student.")]
    student_moved = largest(after[name] - before[name] for name in students)
    teachers = [name for name in before if name.startswith("teacher.")]
    teacher_moved = largest(after[name] - before[name] for name in teachers)
    teacher_ema = largest(
        after[name] - (MOMENTUM * before[name] + (1 - MOMENTUM) * after[f"student.{name[8:]}"])
        for name in teachers
        if f"student.{name[8:]}" in before
    )
    print(json.dumps(dict(
        order=order, norms=norms_difference, finite=finite, student_moved=student_moved,
        teacher_ema=teacher_ema, teacher_moved=teacher_moved,
    )))


if __name__ == "__main__":
    main()

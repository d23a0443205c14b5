"""PyTorch reference of timm's Mixup in 'batch' mode, given the draws.

Written from timm's semantics (timm itself is not installed): the batch x [B, C, H, W] is mixed
with x.flip(0), by a CutMix box (rows yl:yh, columns xl:xh taken from the flipped batch) or by
x * lam + x.flip(0) * (1 - lam) with in-place float32 ops; the targets are one-hot rows with
off = smoothing / C and on = 1 - smoothing + off, mixed as y * lam + y.flip(0) * (1 - lam).
The CutMix box comes from timm's rand_bbox for lam and a given centre, and lam is corrected to
1 - box area / image area.

Usage: mixup_torch.py IN OUT. IN holds images [B, C, H, W] float32, labels [B] int64, and int64
scalars num_classes, cutmix, center_y, center_x, with float64 scalars lam and smoothing.
OUT holds images, targets (float32) and lam (float64).
"""

import sys

import numpy as np
import torch

from safetensors_io import load, save


def rand_bbox(height, width, lam, cy, cx):
    ratio = np.sqrt(1 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    yl = int(np.clip(cy - cut_h // 2, 0, height))
    yh = int(np.clip(cy + cut_h // 2, 0, height))
    xl = int(np.clip(cx - cut_w // 2, 0, width))
    xh = int(np.clip(cx + cut_w // 2, 0, width))
    return yl, yh, xl, xh


def one_hot(target, num_classes, on_value, off_value):
    target = target.long().view(-1, 1)
    return torch.full((target.size(0), num_classes), off_value).scatter_(1, target, on_value)


def main(in_path, out_path):
    data = load(in_path)
    x = torch.from_numpy(data["images"])
    target = torch.from_numpy(data["labels"])
    num_classes = int(data["num_classes"][0])
    smoothing = float(data["smoothing"][0])
    lam = float(data["lam"][0])
    if lam != 1.0:
        if int(data["cutmix"][0]):
            height, width = x.shape[-2:]
            yl, yh, xl, xh = rand_bbox(
                height, width, lam, int(data["center_y"][0]), int(data["center_x"][0])
            )
            lam = 1.0 - (yh - yl) * (xh - xl) / float(height * width)
            x[:, :, yl:yh, xl:xh] = x.flip(0)[:, :, yl:yh, xl:xh]
        else:
            x_flipped = x.flip(0).mul_(1.0 - lam)
            x.mul_(lam).add_(x_flipped)
    off_value = smoothing / num_classes
    on_value = 1.0 - smoothing + off_value
    y1 = one_hot(target, num_classes, on_value, off_value)
    y2 = one_hot(target.flip(0), num_classes, on_value, off_value)
    targets = y1 * lam + y2 * (1.0 - lam)
    save(
        out_path,
        {
            "images": x.numpy(),
            "targets": targets.numpy().astype(np.float32),
            "lam": np.array([lam], dtype=np.float64),
        },
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

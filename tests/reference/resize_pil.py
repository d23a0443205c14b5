"""Pillow reference of the fine-tuning resizes: Image.resize, the official evaluation transform
and the train crop.

The evaluation transform is torchvision's Resize(int(size / 0.875), BILINEAR) of the shorter side
(the longer side truncated; no resize when the shorter side already has that length) then
CenterCrop(size) with offsets int(round(d / 2)); the train crop is Image.crop then
resize((size, size), BICUBIC).

Usage: resize_pil.py > tests/data/fixtures/resize_pil.json

Prints the golden record of tests/data/finetune_loader_test.ts: for every case, the size and the
SHA-256 of Pillow's HWC RGB output bytes. The test images are synthetic_image(width, height, seed)
below, which the test computes the same way.
"""

import json

import PIL
from PIL import Image

from pil_golden import noise, record

FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
SQUARE, WIDE, TALL = (28, 28, 1), (30, 20, 2), (13, 19, 3)

# (image, output width, output height, filter)
RESIZES = [
    (SQUARE, 36, 36, "bilinear"),
    (WIDE, 11, 7, "bilinear"),
    (TALL, 40, 9, "bicubic"),
    (SQUARE, 17, 31, "bicubic"),
]
# (image, size); at 25 px the shorter side of the 28 px image is already int(25 / 0.875).
EVALS = [(SQUARE, 32), (WIDE, 16), (TALL, 12), (SQUARE, 25)]
# (image, (left, top, width, height), size)
CROPS = [(SQUARE, (3, 5, 17, 20), 32), (WIDE, (0, 2, 30, 15), 16), (TALL, (4, 1, 6, 6), 20)]


def synthetic_image(width, height, seed):
    """Byte i (HWC, column x, channel c): (40 x + 17 c + noise(seed, i) % 60) % 256."""
    pixels = bytes(
        (40 * ((i // 3) % width) + 17 * (i % 3) + noise(seed, i) % 60) % 256
        for i in range(width * height * 3)
    )
    return Image.frombytes("RGB", (width, height), pixels)


def eval_transform(img, size):
    short = int(size / (224 / 256))
    w, h = img.size
    new = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    if min(w, h) != short:
        img = img.resize(new, Image.BILINEAR)
    w, h = img.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def name(image):
    width, height, seed = image
    return f"{width}x{height} image {seed}"


def main():
    outputs = {}
    for image, width, height, resample in RESIZES:
        out = synthetic_image(*image).resize((width, height), FILTERS[resample])
        outputs[f"resize {resample} {name(image)} to {width}x{height}"] = out
    for image, size in EVALS:
        outputs[f"eval {name(image)} at {size}"] = eval_transform(synthetic_image(*image), size)
    for image, (left, top, width, height), size in CROPS:
        cropped = synthetic_image(*image).crop((left, top, left + width, top + height))
        key = f"crop {width}x{height} at ({left}, {top}) of {name(image)} to {size}"
        outputs[key] = cropped.resize((size, size), Image.BICUBIC)
    cases = {key: record(out) for key, out in outputs.items()}
    print(json.dumps({"pillow": PIL.__version__, "cases": cases}, indent=2))


if __name__ == "__main__":
    main()

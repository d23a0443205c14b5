"""Pillow reference of timm's RandAugment operations, each given its Pillow-level argument.

Written from timm's semantics (timm is not installed): the tone operations are ImageOps
autocontrast, equalize, invert, posterize and solarize, and a look-up table for solarize-add; the
enhancements are ImageEnhance Color, Contrast, Brightness and Sharpness; the geometric ones are
Image.rotate and Image.transform(AFFINE) with the given resample filter and the ImageNet-mean fill
(shear (1, f, 0, 0, 1, 0) and (1, 0, 0, f, 1, 0); translation by a fraction of the side).

Usage: rand_augment_pil.py > tests/data/fixtures/rand_augment_pil.json

Prints the golden record of tests/data/rand_augment_test.ts: for every case (test image, resample
filter, operation, argument), the size and the SHA-256 of Pillow's HWC RGB output bytes. The test
images are synthetic_image(width, height, seed) below, which the test computes the same way.
"""

import json

import PIL
from PIL import Image, ImageEnhance, ImageOps

from pil_golden import noise, record

RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
FILL = (124, 116, 104)
IMAGES = [(13, 11, 1), (16, 16, 2)]

STEPS = (
    [("AutoContrast", 0), ("Equalize", 0), ("Invert", 0)]
    + [("Rotate", a) for a in (27.3, -12.9, 4.1, 90)]
    + [("PosterizeIncreasing", a) for a in (0, 1, 2, 4)]
    + [("SolarizeIncreasing", a) for a in (26, 128, 200)]
    + [("SolarizeAdd", a) for a in (99, 30)]
    + [("ColorIncreasing", a) for a in (0.19, 1.81, 0.7)]
    + [("ContrastIncreasing", a) for a in (0.19, 1.81, 1.3)]
    + [("BrightnessIncreasing", a) for a in (0.19, 1.81, 0.55)]
    + [("SharpnessIncreasing", a) for a in (0.19, 1.81, 1.4)]
    + [("ShearX", a) for a in (0.27, -0.243)]
    + [("ShearY", a) for a in (0.27, -0.243)]
    + [("TranslateXRel", a) for a in (0.405, -0.31)]
    + [("TranslateYRel", a) for a in (0.405, -0.31)]
)
GEOMETRIC = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}


def synthetic_image(width, height, seed):
    """Gradients, a bright block and noise (byte i's noise is noise(seed, i)), so every op acts."""
    pixels = bytearray(width * height * 3)
    for y in range(height):
        for x in range(width):
            at = (y * width + x) * 3
            block = 90 if width / 3 < x < width / 2 and y > height / 4 else 0
            pixels[at] = min(255, 20 + 15 * x + block + noise(seed, at) % 20)
            pixels[at + 1] = min(255, 200 - 12 * y + noise(seed, at + 1) % 30)
            pixels[at + 2] = min(255, 60 + 7 * (x + y) + block + noise(seed, at + 2) % 50)
    return Image.frombytes("RGB", (width, height), bytes(pixels))


def solarize_add(img, add):
    table = [min(255, v + add) if v < 128 else v for v in range(256)]
    return img.point(table * 3)


def apply(img, op, arg, resample):
    geometric = {"resample": resample, "fillcolor": FILL}
    w, h = img.size
    if op == "AutoContrast":
        return ImageOps.autocontrast(img)
    if op == "Equalize":
        return ImageOps.equalize(img)
    if op == "Invert":
        return ImageOps.invert(img)
    if op == "Rotate":
        return img.rotate(arg, **geometric)
    if op.startswith("Posterize"):
        return img if arg >= 8 else ImageOps.posterize(img, int(arg))
    if op.startswith("SolarizeAdd"):
        return solarize_add(img, int(arg))
    if op.startswith("Solarize"):
        return ImageOps.solarize(img, arg)
    for name, enhancer in (
        ("Color", ImageEnhance.Color),
        ("Contrast", ImageEnhance.Contrast),
        ("Brightness", ImageEnhance.Brightness),
        ("Sharpness", ImageEnhance.Sharpness),
    ):
        if op.startswith(name):
            return enhancer(img).enhance(arg)
    if op == "ShearX":
        return img.transform(img.size, Image.AFFINE, (1, arg, 0, 0, 1, 0), **geometric)
    if op == "ShearY":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, arg, 1, 0), **geometric)
    if op == "TranslateXRel":
        return img.transform(img.size, Image.AFFINE, (1, 0, arg * w, 0, 1, 0), **geometric)
    if op == "TranslateYRel":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, arg * h), **geometric)
    raise ValueError(f"unknown operation {op}")


def main():
    cases = {}
    for resample in ("bicubic", "bilinear", "nearest"):
        steps = [s for s in STEPS if resample == "bicubic" or s[0] in GEOMETRIC]
        for width, height, seed in IMAGES:
            img = synthetic_image(width, height, seed)
            for op, arg in steps:
                out = apply(img, op, arg, RESAMPLE[resample])
                key = f"{resample} {op}({arg}) on {width}x{height} image {seed}"
                cases[key] = record(out)
    print(json.dumps({"pillow": PIL.__version__, "fill": FILL, "cases": cases}, indent=2))


if __name__ == "__main__":
    main()

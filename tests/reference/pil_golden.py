"""What the Pillow golden-record scripts share (resize_pil.py, rand_augment_pil.py): the noise of
their synthetic test images and the record of one output image."""

import hashlib


def noise(seed, i):
    """Chris Wellons' lowbias32 integer hash of seed·65536 + i: 32-bit pseudo-random noise."""
    x = seed * 65536 + i
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def record(img):
    """The golden record of a Pillow image: "<width>x<height> <SHA-256 of its HWC RGB bytes>"."""
    return f"{img.size[0]}x{img.size[1]} {hashlib.sha256(img.tobytes()).hexdigest()}"

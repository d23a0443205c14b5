"""Regenerates the golden masks of tests/data/masking_test.ts.

Runs the official masking algorithm (`pred_ratio_for_crop` and `block_mask` of ibot_torch.py,
written from §3.3 and §3.4 of the specification) with Python's `random` replaced by a port of the
toolkit's `Rng` (lib/runtime/rng.ts: xoshiro128** seeded by splitmix64), which draws the way
lib/data/masking.ts does: uniform(a, b) = a + (b - a)·u with u of 53 random bits,
randint(a, b) = a + int(b - a + 1) and choice(seq) = seq[int(len(seq))], where int(n) is an
unbiased integer in [0, n) by rejection. So the same seed drives both implementations through
the same draws, and their masks must agree cell for cell.

Usage: masking_golden.py. Prints one JSON object:
    block_14x14     ratio 0.3 on a 14×14 grid, seed 12345, as rows of '#' (masked) and '.';
    recipe_counts   masked counts of 12 draws in a row with ratios [0, 0.3] ± [0, 0.2] on 14×14,
                    seed 12345;
    rect_7x12       ratio 0.4 ± 0.1 on a 7×12 grid, seed 12345, as rows.
"""

import json

from ibot_torch import block_mask, pred_ratio_for_crop

MASK32 = (1 << 32) - 1
MASK64 = (1 << 64) - 1


def mix64(x):
    """The splitmix64 finalizer."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def rotl(x, k):
    return ((x << k) | (x >> (32 - k))) & MASK32


class Rng:
    """Port of lib/runtime/rng.ts with the `random` methods the masking code calls."""

    def __init__(self, seed):
        key = seed & MASK64
        self.s = []
        for _ in range(2):
            key = (key + 0x9E3779B97F4A7C15) & MASK64
            z = mix64(key)
            self.s += [z & MASK32, z >> 32]

    def uint32(self):
        s = self.s
        result = (rotl((s[1] * 5) & MASK32, 7) * 9) & MASK32
        t = (s[1] << 9) & MASK32
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 11)
        return result

    def random(self):
        high = self.uint32() >> 5
        low = self.uint32() >> 6
        return (high * 67108864 + low) / 2**53

    def uniform(self, a, b):
        return a + (b - a) * self.random()

    def below(self, n):
        limit = 2**32 - 2**32 % n
        x = self.uint32()
        while x >= limit:
            x = self.uint32()
        return x % n

    def randint(self, a, b):
        return a + self.below(b - a + 1)

    def choice(self, seq):
        return seq[self.below(len(seq))]


def draw(height, width, pred_ratio, pred_ratio_var, rng):
    """One crop's mask: its ratio, then the block loop on its grid."""
    ratio = pred_ratio_for_crop(pred_ratio, pred_ratio_var, rng)
    return block_mask(height, width, ratio, rng)


def rows(mask):
    return ["".join("#" if cell else "." for cell in row) for row in mask]


def main():
    recipe = Rng(12345)
    golden = {
        "block_14x14": rows(draw(14, 14, 0.3, 0, Rng(12345))),
        "recipe_counts": [int(draw(14, 14, [0, 0.3], [0, 0.2], recipe).sum()) for _ in range(12)],
        "rect_7x12": rows(draw(7, 12, 0.4, 0.1, Rng(12345))),
    }
    print(json.dumps(golden))


if __name__ == "__main__":
    main()

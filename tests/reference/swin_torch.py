"""Independent PyTorch reference of the official iBOT Swin Transformer (bytedance/ibot).

Written from the project's specification of the official code (ibot-reference.md §2.2, §8.3,
§10 items 1 and 14) and the official models file's behaviour, not copied from it. Covers the Swin
backbone as iBOT pre-training builds it, the student and teacher around it (the head, wrapper,
loss, training iteration and checkpoint layout are `ibot_common.py`'s), and official-layout
checkpoints. `real_token_projections` switches the blocks to the same result with the project's
work (the attention's projections on the real tokens only), for the equal-work benchmark.

Sizes (`SWIN_ARCHS`): the official swin_tiny/small/base/large, and `swin_mini` for tests on a
CPU: embed_dim 32, depths (1, 1, 2, 1), heads (1, 2, 4, 8) (head dim 32 in every stage, as the
official sizes), default drop_path_rate 0.1, num_features 256. Every size builds its stages from
img_size (224 unless given): stage grids 56, 28, 14, 7, patch size 4.

Command-line modes (tensors in safetensors files; `depths` and `heads` are int64 vectors):

    swin_torch.py keys ARCH WINDOW OUT_DIM SHARED
        Builds the student and teacher of ARCH with WINDOW (img_size 224, patch_out_dim = OUT_DIM,
        SHARED 0 or 1 the student's shared_head, shared teacher head) and prints, under `# student`
        and `# teacher`, one line `name [d0,d1,...]` per state-dict key (buffers included, the
        student without `module.`), then `# params <part> <count>` lines (parameters only).

    swin_torch.py layout ARCH WINDOW SIZE...
        Prints JSON: `blocks`, per block in forward order its stage, block, dim, heads,
        resolution (from 224), window, shift and drop_path rate; `num_features`; and `tokens`,
        for each SIZE the shape of the student's masked forward of 2 images of SIZE px with a
        mask at the final-stage grid (SIZE/32).

    swin_torch.py window RESOLUTION WINDOW SHIFT GRID
        Builds one block for a stage of RESOLUTION tokens per side with the requested WINDOW and
        SHIFT and prints JSON: its effective `window` and `shift`, `relative_position_index`
        (w^2, w^2), and `attn_mask` (nW, w^2, w^2), the shift mask of a run-time GRID x GRID input
        (null without shift).

    swin_torch.py mask-model GRID MASK
        MASK: a JSON list (B, h, w) of 0/1. Prints JSON (B, GRID, GRID): 1 where `mask_model`
        puts masked_embed into a GRID x GRID patch embedding, 0 elsewhere.

    swin_torch.py swin IN OUT
        IN holds a backbone's parameters under the SwinTransformer names (`masked_embed` optional,
        `patch_embed.proj.weight`, `layers.0.blocks.0.attn.qkv.weight`, ...; the
        `relative_position_index` buffers optional and then checked), int64 `depths`, `heads`,
        `window_size`, `img_size`, `images` (B, 3, H, W), optionally `mask` (B, h*w) as float 0/1
        at the final-stage grid, `local_images` (B', 3, H', W'), float64 `drop_path_rate` with
        `drop_path.0.global` (blocks, 2, B) and `drop_path.0.local` (blocks, 2, B'), the
        per-sample drop-path factors (0 or 1/keep, see ibot_common `GivenDropPath`). Writes
        `tokens` (B, 1+L, D), the (masked) forward of `images`, and `local_tokens`, the unmasked
        forward of `local_images`, in float64.

    swin_torch.py step IN OUT
        `ibot_torch.py step` with a Swin backbone: the same inputs and outputs, except that the
        backbone is given by int64 `embed_dim`, `depths`, `heads`, `window_size`, `img_size` and
        float64 `drop_path_rate` (the student's factory default; the teacher has none) instead of
        `depth`, `heads`, `patch_size`, `img_size`, `drop_path`. Masks `masks.<i>` (B, h*w) are
        at the final-stage grid; the draws `drop_path.<k>.global` / `.local` are (sum(depths),
        2, rows), given whenever drop_path_rate > 0.

    swin_torch.py checkpoint-write ARCH WINDOW PTH IN
        IN holds every parameter of the student and teacher (`student.<name>`, `teacher.<name>`
        of `named_parameters()`), optionally int64 `epoch` (default 1), `center` (1, K),
        `center2` (1, 1, Kp), and AdamW moments `exp_avg.student.<name>`,
        `exp_avg_sq.student.<name>` after int64 `optimizer_step` steps. The head widths, out dims
        and whether each head is shared are read from the weights' shapes and names. `torch.save`s
        the official full checkpoint (§8.1) to PTH: `student` (keys with `module.`), `teacher`,
        `optimizer`, `epoch`, `args`, `ibot_loss`, `fp16_scaler` None.

    swin_torch.py checkpoint-read PTH IN OUT
        `torch.load`s an official full checkpoint of a Swin, builds both networks from its `args`
        (arch, window_size, out_dim, patch_out_dim, shared_head, shared_head_teacher, and the
        head widths `head_hidden_dim`/`head_bottleneck_dim` when present), loads `student`
        (`module.` stripped) and `teacher` strictly, and for each `images.<i>` of IN writes
        `teacher.tokens.<i>` and `student.tokens.<i>` (B, 1+L, D, unmasked, computed in float64).
        With an `optimizer`, also ibot_torch's `optimizer.*` outputs (see its `checkpoint-read`).

    swin_torch.py backbone-read ARCH WINDOW PTH IN OUT
        `torch.load`s a backbone state dict (`{'state_dict': ...}` as extract_backbone writes, or
        a plain state dict; a `backbone.` prefix is stripped), loads it strictly into ARCH with
        WINDOW (with `masked_embed` when the file has it) and writes `tokens.<i>` for each
        `images.<i>` of IN (B, 1+L, D, float64).
"""

import argparse
import contextlib
import copy
import json
import math
import sys
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import safetensors_io
from ibot_common import (
    DropPath,
    Mlp,
    adamw_with_state,
    checkpoint_head_options,
    checkpoint_read_outputs,
    give_drop_path,
    init_weights,
    load_parameters,
    print_keys,
    run_train_steps,
    save_full_checkpoint,
    scalar,
    student_and_teacher,
    trunc_normal_,
)

# ------------------------------------------------------------------------------------------------
# 2.2 Swin Transformer
# ------------------------------------------------------------------------------------------------


def window_partition(x, window):
    """(B, H, W, C) with H, W multiples of `window` -> (B*nW, window^2, C): windows in
    (image, window row, window column) order, tokens row-major inside a window."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows, window, height, width):
    """Inverse of `window_partition`: (B*nW, window^2, C) -> (B, height, width, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


def relative_position_index(window):
    """(w^2, w^2) int64: (dr + w - 1)(2w - 1) + (dc + w - 1), with (dr, dc) the row and column of
    token i minus those of token j (tokens row-major in the window)."""
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack([rows.flatten(), cols.flatten()])  # (2, w^2)
    delta = coords[:, :, None] - coords[:, None, :]  # (2, w^2, w^2): i minus j
    return (delta[0] + window - 1) * (2 * window - 1) + (delta[1] + window - 1)


def shift_attention_mask(height, width, window, shift):
    """The shifted-window mask (nW, w^2, w^2), float32: 0 between tokens of the same region of
    the padded grid (regions cut at -window and -shift along each axis), -100 otherwise."""
    padded_h = math.ceil(height / window) * window
    padded_w = math.ceil(width / window) * window
    regions = torch.zeros(1, padded_h, padded_w, 1)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for rows in cuts:
        for cols in cuts:
            regions[:, rows, cols, :] = label
            label += 1
    labels = window_partition(regions, window).squeeze(-1)  # (nW, w^2)
    differ = labels.unsqueeze(1) != labels.unsqueeze(2)
    return torch.zeros(differ.shape).masked_fill(differ, -100.0)


class WindowAttention(nn.Module):
    """Multi-head attention inside windows with a relative position bias.

    qkv Linear(c -> 3c) laid out [q | k | v], head-major inside; q scaled by hd^-0.5; logits plus
    table[index[i, j], h] and the shift mask when given; softmax; proj Linear(c -> c).
    The forward takes windows (B*nW, w^2, c) and the mask (nW, w^2, w^2) or None, and returns the
    output (B*nW, w^2, c) and the attention probabilities (B*nW, heads, w^2, w^2).
    """

    def __init__(self, dim, window, num_heads, qkv_bias=True):
        super().__init__()
        self.window = window
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window - 1) ** 2, num_heads)
        )
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        trunc_normal_(self.relative_position_bias_table)

    def forward(self, x, mask=None):
        mixed, attn = self.attend(self.qkv(x), mask)
        return self.proj(mixed), attn

    def attend(self, qkv, mask=None):
        """The attention from projected windows qkv (B*nW, w^2, 3c) and the mask: the heads'
        outputs (B*nW, w^2, c) before `proj`, and the probabilities."""
        b_, n, c3 = qkv.shape
        c = c3 // 3
        q, k, v = qkv.reshape(b_, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            windows = mask.shape[0]
            attn = attn.view(b_ // windows, windows, self.num_heads, n, n)
            attn = (attn + mask.unsqueeze(1).unsqueeze(0)).view(-1, self.num_heads, n, n)
        attn = attn.softmax(dim=-1)
        return (attn @ v).transpose(1, 2).reshape(b_, n, c), attn


class SwinTransformerBlock(nn.Module):
    """Pre-norm block with (shifted) window attention; LN eps 1e-6.

    The effective window and shift are fixed at construction: when the stage's resolution (from
    img_size) is at most the window, the window becomes the resolution and the shift 0.
    The forward takes (B, L, C) with L a square and returns (B, L, C) and the attention.

    With the attribute `real_token_projections` set (False by default, the official computation;
    the context manager of that name sets it), the attention's qkv and proj run on the L real tokens only:
    the padded positions' q, k and v are the qkv bias (what the official qkv makes of their zeros)
    and the padded outputs are cropped before proj instead of after. The result is the same.
    """

    def __init__(
        self, dim, resolution, num_heads, window=7, shift=0, mlp_ratio=4.0, drop_path_rate=0.0
    ):
        super().__init__()
        if resolution <= window:
            window, shift = resolution, 0
        if not 0 <= shift < window:
            raise ValueError(f"the shift {shift} is not in [0, window {window})")
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = WindowAttention(dim, window, num_heads)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.real_token_projections = False

    def forward(self, x):
        b, length, c = x.shape
        side = int(math.sqrt(length))
        ws, shift = self.window, self.shift
        shortcut = x
        x = self.norm1(x).view(b, side, side, c)
        pad = (ws - side % ws) % ws
        padded = side + pad
        mask = None
        if shift > 0:
            mask = shift_attention_mask(side, side, ws, shift).to(x.device)
        if self.real_token_projections:
            qkv = self.attn.qkv(x)
            bias = self.attn.qkv.bias
            fill = qkv.new_zeros(3 * c) if bias is None else bias.to(qkv.dtype)
            windows = self.windows(pad_with(qkv, pad, fill))
            out, attn = self.attn.attend(windows, mask)
        else:
            x = F.pad(x, (0, 0, 0, pad, 0, pad))  # zeros right and bottom
            out, attn = self.attn(self.windows(x), mask)
        x = window_reverse(out, ws, padded, padded)
        if shift > 0:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        x = x[:, :side, :side, :].reshape(b, length, c)
        if self.real_token_projections:
            x = self.attn.proj(x)
        x = shortcut + self.drop_path(x)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, attn

    def windows(self, grid):
        """The padded grid (B, H, W, C) cyclically shifted up and left by the shift and cut into
        windows (B*nW, w^2, C)."""
        if self.shift > 0:
            grid = torch.roll(grid, shifts=(-self.shift, -self.shift), dims=(1, 2))
        return window_partition(grid, self.window)


def pad_with(grid, pad, fill):
    """grid (B, S, S, C) with `pad` rows and columns of `fill` (C,) added right and bottom ->
    (B, S + pad, S + pad, C)."""
    if pad == 0:
        return grid
    b, side, _, c = grid.shape
    grid = torch.cat([grid, fill.expand(b, side, pad, c)], dim=2)
    return torch.cat([grid, fill.expand(b, pad, side + pad, c)], dim=1)


@contextlib.contextmanager
def real_token_projections(*models):
    """Inside the `with` statement, every Swin block of `models` (modules) runs its attention's
    qkv and proj on the real tokens only (see `SwinTransformerBlock`), the work of the project's
    graph for the equal-work benchmark; after it, the official computation again. The backward
    pass of a forward run inside does the same work."""
    blocks = [m for model in models for m in model.modules() if isinstance(m, SwinTransformerBlock)]
    for block in blocks:
        block.real_token_projections = True
    try:
        yield
    finally:
        for block in blocks:
            block.real_token_projections = False


class PatchMerging(nn.Module):
    """(B, L, C) -> (B, L/4, 2C): pad the grid to even, concatenate x0 (even rows, even cols),
    x1 (odd, even), x2 (even, odd), x3 (odd, odd), LayerNorm(4C), reduction Linear without bias."""

    def __init__(self, dim):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim, eps=1e-6)

    def forward(self, x):
        b, length, c = x.shape
        side = int(math.sqrt(length))
        x = x.view(b, side, side, c)
        if side % 2 == 1:
            x = F.pad(x, (0, 0, 0, 1, 0, 1))
        parts = [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]
        x = torch.cat(parts, dim=-1).view(b, -1, 4 * c)
        return self.reduction(self.norm(x))


class BasicLayer(nn.Module):
    """One stage: `depth` blocks with shifts alternating 0 and window // 2 (before the
    construction rule of `SwinTransformerBlock`), then `PatchMerging` when `downsample`."""

    def __init__(self, dim, resolution, depth, num_heads, window, drop_path_rates, downsample):
        super().__init__()
        self.blocks = nn.ModuleList(
            [
                SwinTransformerBlock(
                    dim,
                    resolution,
                    num_heads,
                    window=window,
                    shift=0 if i % 2 == 0 else window // 2,
                    drop_path_rate=drop_path_rates[i],
                )
                for i in range(depth)
            ]
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x):
        for block in self.blocks:
            x, _ = block(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return x


class PatchEmbed(nn.Module):
    """Conv2d(3 -> C, kernel = stride = 4), then LayerNorm(C) over each position; returns the
    normalised grid (B, C, H/4, W/4)."""

    def __init__(self, patch_size, embed_dim):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def forward(self, x):
        x = self.proj(x)
        b, c, h, w = x.shape
        x = self.norm(x.flatten(2).transpose(1, 2))
        return x.transpose(1, 2).reshape(b, c, h, w)


class SwinTransformer(nn.Module):
    """The Swin backbone of iBOT pre-training (§2.2), with ape False, patch_norm True and the
    classifier head an Identity (as MultiCropWrapper leaves it).

    The forward takes images (B, 3, H, W) with H = W and optionally a boolean mask at the
    final-stage grid (B, H/32, W/32) or flattened (B, (H/32)^2); it returns [avg-pooled token,
    final-normed last-stage tokens] (B, 1+L, num_features) with `return_all_tokens`, else the
    pooled token (B, num_features).
    """

    def __init__(
        self,
        img_size=224,
        patch_size=4,
        embed_dim=96,
        depths=(2, 2, 6, 2),
        num_heads=(3, 6, 12, 24),
        window_size=7,
        mlp_ratio=4.0,
        drop_path_rate=0.0,
        return_all_tokens=False,
        masked_im_modeling=False,
    ):
        super().__init__()
        stages = len(depths)
        self.depths = list(depths)
        self.num_features = embed_dim * 2 ** (stages - 1)
        self.return_all_tokens = return_all_tokens
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        rates = [r.item() for r in torch.linspace(0, drop_path_rate, sum(depths))]
        grid = img_size // patch_size
        self.layers = nn.ModuleList()
        for s in range(stages):
            first = sum(depths[:s])
            self.layers.append(
                BasicLayer(
                    embed_dim * 2**s,
                    grid // 2**s,
                    depths[s],
                    num_heads[s],
                    window_size,
                    rates[first : first + depths[s]],
                    downsample=s < stages - 1,
                )
            )
        self.norm = nn.LayerNorm(self.num_features, eps=1e-6)
        self.avgpool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Identity()
        self.apply(init_weights)
        # Created after `apply`, zeros, and only with masked image modelling (§10 item 1).
        self.masked_im_modeling = masked_im_modeling
        if masked_im_modeling:
            self.masked_embed = nn.Parameter(torch.zeros(1, embed_dim))

    def all_blocks(self):
        """Every block in forward order (stage by stage)."""
        return [block for layer in self.layers for block in layer.blocks]

    def mask_model(self, x, mask):
        """Puts `masked_embed` into the patch embedding x (B, C, h, w) where the mask, repeated
        along both axes up to (h, w) (×8 from the final-stage grid), is true."""
        if mask.dim() == 2:
            side = int(math.sqrt(mask.shape[1]))
            mask = mask.reshape(mask.shape[0], side, side)
        if x.shape[-2:] != mask.shape[-2:]:
            times_h, times_w = x.shape[-2] // mask.shape[-2], x.shape[-1] // mask.shape[-1]
            mask = mask.repeat_interleave(times_h, -2).repeat_interleave(times_w, -1)
        token = self.masked_embed.to(x.dtype).reshape(1, -1, 1, 1)
        return torch.where(mask.bool().unsqueeze(1), token, x)

    def forward(self, x, return_all_tokens=None, mask=None):
        x = self.patch_embed(x)
        if mask is not None:
            x = self.mask_model(x, mask)
        x = x.flatten(2).transpose(1, 2)
        for layer in self.layers:
            x = layer(x)
        region = self.norm(x)
        pooled = self.avgpool(region.transpose(1, 2)).flatten(1)
        if return_all_tokens is None:
            return_all_tokens = self.return_all_tokens
        if return_all_tokens:
            return torch.cat([pooled.unsqueeze(1), region], dim=1)
        return pooled


SWIN_ARCHS = {
    "swin_mini": dict(
        embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), drop_path_rate=0.1
    ),
    "swin_tiny": dict(
        embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.1
    ),
    "swin_small": dict(
        embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.2
    ),
    "swin_base": dict(
        embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.2
    ),
    "swin_large": dict(
        embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), drop_path_rate=0.2
    ),
}


def swin(size, window_size=7, **kwargs):
    """Factory `swin_*` of `size` (a name of SWIN_ARCHS or a dict like its entries): mlp_ratio 4,
    qkv bias, the size's drop_path_rate unless `drop_path_rate` is given."""
    dims = dict(SWIN_ARCHS[size] if isinstance(size, str) else size)
    dims["drop_path_rate"] = kwargs.pop("drop_path_rate", dims["drop_path_rate"])
    return SwinTransformer(window_size=window_size, **dims, **kwargs)


def build_swin_models(
    size="swin_tiny", window_size=7, img_size=224, use_masked_im_modeling=True, **heads
):
    """Student and teacher with Swin backbones and the iBOT heads `heads` (the keyword arguments
    of `ibot_common.student_and_teacher`: out_dim, patch_out_dim, shared_head, ...).

    The student backbone keeps its factory drop-path rate (`--drop_path` does not reach it) and
    has the mask token (`use_masked_im_modeling`); the teacher's rate is 0.
    """

    def backbone(student):
        if student:
            options = dict(masked_im_modeling=use_masked_im_modeling)
        else:
            options = dict(drop_path_rate=0.0)
        return swin(size, window_size, img_size=img_size, return_all_tokens=True, **options)

    return student_and_teacher(backbone, **heads)


# ------------------------------------------------------------------------------------------------
# Command-line modes
# ------------------------------------------------------------------------------------------------


def run_keys(arch, window, out_dim, shared):
    """`keys ARCH WINDOW OUT_DIM SHARED`: see the module docstring."""
    print_keys(
        *build_swin_models(
            arch,
            window,
            out_dim=out_dim,
            patch_out_dim=out_dim,
            shared_head=shared,
            shared_head_teacher=True,
        )
    )


def run_layout(arch, window, sizes):
    """`layout ARCH WINDOW SIZE...`: see the module docstring."""
    torch.manual_seed(0)
    model = swin(arch, window, return_all_tokens=True, masked_im_modeling=True).eval()
    blocks = []
    for s, layer in enumerate(model.layers):
        for b, block in enumerate(layer.blocks):
            blocks.append(
                dict(
                    stage=s,
                    block=b,
                    dim=block.norm1.normalized_shape[0],
                    heads=block.attn.num_heads,
                    resolution=56 // 2**s,
                    window=block.window,
                    shift=block.shift,
                    drop_path=getattr(block.drop_path, "drop_prob", 0.0),
                )
            )
    tokens = {}
    with torch.no_grad():
        for size in sizes:
            side = size // 32
            mask = torch.rand(2, side, side) < 0.5
            tokens[str(size)] = list(model(torch.randn(2, 3, size, size), mask=mask).shape)
    print(json.dumps(dict(blocks=blocks, num_features=model.num_features, tokens=tokens)))


def run_window(resolution, window, shift, grid):
    """`window RESOLUTION WINDOW SHIFT GRID`: see the module docstring."""
    block = SwinTransformerBlock(4, resolution, 1, window=window, shift=shift)
    mask = None
    if block.shift > 0:
        mask = shift_attention_mask(grid, grid, block.window, block.shift).tolist()
    index = block.attn.relative_position_index.tolist()
    facts = dict(window=block.window, shift=block.shift, relative_position_index=index)
    print(json.dumps(dict(facts, attn_mask=mask)))


def run_mask_model(grid, mask_json):
    """`mask-model GRID MASK`: see the module docstring."""
    model = swin("swin_mini", masked_im_modeling=True)
    mask = torch.tensor(json.loads(mask_json)) > 0
    with torch.no_grad():
        model.masked_embed.fill_(1.0)
        x = torch.zeros(mask.shape[0], model.masked_embed.shape[1], grid, grid)
        out = model.mask_model(x, mask)
    print(json.dumps(out[:, 0].round().int().tolist()))


def size_from(data):
    """The Swin size given by IN's int64 `depths`, `heads` and the patch-embed weight's width."""
    return dict(
        embed_dim=int(data["patch_embed.proj.weight"].shape[0]),
        depths=tuple(int(d) for d in data["depths"].reshape(-1)),
        num_heads=tuple(int(h) for h in data["heads"].reshape(-1)),
        drop_path_rate=float(scalar(data, "drop_path_rate")) if "drop_path_rate" in data else 0.0,
    )


def load_backbone(model, data):
    """Copies the tensors of `data` named as `model`'s parameters into them (all must be there)
    and checks any `relative_position_index` buffer `data` gives against the model's."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name not in data:
                raise KeyError(f"IN has no {name}")
            param.copy_(torch.from_numpy(data[name]))
    for name, buffer in model.named_buffers():
        if name in data and not np.array_equal(data[name], buffer.numpy()):
            raise ValueError(f"{name} differs from the official relative position index")


def run_swin(source, target):
    """`swin IN OUT`: see the module docstring."""
    data = safetensors_io.load(source)
    model = swin(
        size_from(data),
        scalar(data, "window_size"),
        img_size=scalar(data, "img_size"),
        return_all_tokens=True,
        masked_im_modeling="masked_embed" in data,
    ).double()
    load_backbone(model, data)
    given = "drop_path.0.global" in data
    model.train(given)
    if given:
        give_drop_path(model.all_blocks(), data, 0)
    result = {}
    with torch.no_grad():
        mask = torch.from_numpy(data["mask"]) > 0.5 if "mask" in data else None
        result["tokens"] = model(torch.from_numpy(data["images"]).double(), mask=mask).numpy()
        if "local_images" in data:
            local = model(torch.from_numpy(data["local_images"]).double())
            result["local_tokens"] = local.numpy()
    safetensors_io.save(target, result)


def run_step(source, target):
    """`step IN OUT`: see the module docstring."""
    data = safetensors_io.load(source)

    def get(name):
        return scalar(data, name)

    size = dict(
        embed_dim=get("embed_dim"),
        depths=tuple(int(d) for d in data["depths"].reshape(-1)),
        num_heads=tuple(int(h) for h in data["heads"].reshape(-1)),
        drop_path_rate=get("drop_path_rate"),
    )
    student, teacher = build_swin_models(
        size,
        get("window_size"),
        img_size=get("img_size"),
        out_dim=get("out_dim"),
        patch_out_dim=get("patch_out_dim"),
        shared_head=bool(get("shared_head")),
        shared_head_teacher=bool(get("shared_head_teacher")),
        norm_last_layer=bool(get("norm_last_layer")),
        head_hidden=get("head_hidden"),
        head_bottleneck=get("head_bottleneck"),
    )
    blocks = student.backbone.all_blocks() if get("drop_path_rate") > 0 else None
    run_train_steps(data, student, teacher, blocks, target)


def head_args(data):
    """Head widths, out dims and sharing of the student and teacher weights in IN."""
    student_shared = "student.head.last_layer2.weight_v" not in data
    patch = "last_layer" if student_shared else "last_layer2"
    return dict(
        out_dim=int(data["student.head.last_layer.weight_v"].shape[0]),
        patch_out_dim=int(data[f"student.head.{patch}.weight_v"].shape[0]),
        shared_head=student_shared,
        shared_head_teacher="teacher.head.last_layer2.weight_v" not in data,
        head_hidden_dim=int(data["student.head.mlp.0.weight"].shape[0]),
        head_bottleneck_dim=int(data["student.head.mlp.4.weight"].shape[0]),
    )


def checkpoint_models(args):
    """Student and teacher built from a checkpoint's `args` Namespace (eval mode, float32)."""
    student, teacher = build_swin_models(
        args.arch, args.window_size, 224, **checkpoint_head_options(args)
    )
    return student.eval(), teacher.eval()


def run_checkpoint_write(arch, window, path, source):
    """`checkpoint-write ARCH WINDOW PTH IN`: see the module docstring."""
    data = safetensors_io.load(source)
    args = argparse.Namespace(
        arch=arch,
        patch_size=4,
        window_size=window,
        norm_last_layer=True,
        **head_args(data),
        use_masked_im_modeling=True,
        data_path="/path/to/imagenet/train",
    )
    student, teacher = checkpoint_models(args)
    load_parameters(student, data, "student")
    load_parameters(teacher, data, "teacher")
    optimizer = adamw_with_state(student, data)
    out_dim, patch_out_dim = args.out_dim, args.patch_out_dim
    centers = OrderedDict(
        center=torch.from_numpy(data.get("center", np.zeros((1, out_dim), np.float32))),
        center2=torch.from_numpy(data.get("center2", np.zeros((1, 1, patch_out_dim), np.float32))),
    )
    epoch = int(scalar(data, "epoch")) if "epoch" in data else 1
    save_full_checkpoint(path, student, teacher, optimizer, epoch, args, centers)


def tokens_of(backbone, source, prefix):
    """`<prefix>tokens.<i>`: the unmasked float64 forward of each `images.<i>` of `source`."""
    data = safetensors_io.load(source)
    backbone = copy.deepcopy(backbone).double().eval()
    result = {}
    with torch.no_grad():
        for name in sorted(k for k in data if k.startswith("images.")):
            images = torch.from_numpy(data[name]).double()
            result[f"{prefix}tokens.{name.split('.', 1)[1]}"] = backbone(images).numpy()
    return result


def run_checkpoint_read(path, source, target):
    """`checkpoint-read PTH IN OUT`: see the module docstring."""

    def outputs(student, teacher):
        result = tokens_of(teacher.backbone, source, "teacher.")
        result.update(tokens_of(student.backbone, source, "student."))
        return result

    safetensors_io.save(target, checkpoint_read_outputs(path, checkpoint_models, outputs))


def run_backbone_read(arch, window, path, source, target):
    """`backbone-read ARCH WINDOW PTH IN OUT`: see the module docstring."""
    loaded = torch.load(path, map_location="cpu", weights_only=False)
    state = loaded.get("state_dict", loaded)
    prefix = "backbone."
    state = {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}
    model = swin(arch, window, return_all_tokens=True, masked_im_modeling="masked_embed" in state)
    model.load_state_dict(state, strict=True)
    safetensors_io.save(target, tokens_of(model, source, ""))


def main(argv):
    if len(argv) == 5 and argv[0] == "keys":
        run_keys(argv[1], int(argv[2]), int(argv[3]), argv[4] == "1")
    elif len(argv) >= 4 and argv[0] == "layout":
        run_layout(argv[1], int(argv[2]), [int(s) for s in argv[3:]])
    elif len(argv) == 5 and argv[0] == "window":
        run_window(*(int(a) for a in argv[1:]))
    elif len(argv) == 3 and argv[0] == "mask-model":
        run_mask_model(int(argv[1]), argv[2])
    elif len(argv) == 3 and argv[0] == "swin":
        run_swin(argv[1], argv[2])
    elif len(argv) == 3 and argv[0] == "step":
        run_step(argv[1], argv[2])
    elif len(argv) == 5 and argv[0] == "checkpoint-write":
        run_checkpoint_write(argv[1], int(argv[2]), argv[3], argv[4])
    elif len(argv) == 4 and argv[0] == "checkpoint-read":
        run_checkpoint_read(argv[1], argv[2], argv[3])
    elif len(argv) == 6 and argv[0] == "backbone-read":
        run_backbone_read(argv[1], int(argv[2]), argv[3], argv[4], argv[5])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1:])

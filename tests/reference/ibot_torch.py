"""Independent PyTorch reference of the official iBOT pre-training code (bytedance/ibot).

Written from the project's specification of the official code (ibot-reference.md; section numbers
below refer to it), not copied from the repository. Covers the ViT backbone (§2.1) and, through
`ibot_common.py`, the iBOT head (§2.3), the multi-crop wrapper (§2.4), the masks (§3.3, §3.4), the
loss and centres (§4), and one training iteration (§5.1 to §5.4), without fp16 or, given an
autocast context and a GradScaler, with it (§5.6). State-dict keys follow §8.2 and §8.4.

Command-line modes:

    ibot_torch.py loss IN OUT
        IN (safetensors) holds `student_cls` (A*B, K), `student_patch` (G*B, N, Kp),
        `teacher_cls` (G*B, K), `teacher_patch` (G*B, N, Kp), `masks` (G*B, N) as float 0/1,
        `center` (1, K), `center2` (1, 1, Kp) and the float64 scalars (shape [1]) `n_global`,
        `teacher_temp`, `teacher_patch_temp`, `lambda1`, `lambda2`. The rows of `student_cls` after
        the first G*B are the local crops. Runs the loss forward (student temperature 0.1, the
        given teacher temperatures as this epoch's schedule values) and the centre update, and
        writes `loss`, `cls`, `patch` (shape [1]), `center` and `center2` to OUT in float64.

    ibot_torch.py keys ARCH PATCH OUT_DIM SHARED
        Builds the student and teacher MultiCropWrapper (ARCH one of vit_tiny, vit_small,
        vit_base, vit_large; img_size 224; patch_out_dim = OUT_DIM; SHARED 0 or 1 is the
        student's shared_head, the teacher keeps the default shared head) and prints, under the
        header lines `# student` and `# teacher`, one line `name [d0,d1,...]` per state-dict key
        (the student without the DDP `module.` prefix), then `# params <part> <count>` lines.

    ibot_torch.py pos IN OUT
        IN holds `pos_embed` (1, 1+N0, D) with N0 a square and `grids` (n, 2) int64 of patch-grid
        sizes (rows, columns). For each, writes `pos.<rows>x<cols>`, the table that
        `VisionTransformer.interpolate_pos_encoding` gives for an image of that many patches.

    ibot_torch.py vit IN OUT
        IN holds a backbone's state dict under the VisionTransformer names (`cls_token`,
        `pos_embed`, `masked_embed`, `patch_embed.proj.weight`, ...), the int64 scalars `depth`,
        `heads`, `patch_size`, `img_size`, `images` (B, 3, H, W), `mask` (B, N) as float 0/1 and
        optionally `local_images` (B', 3, H', W'). Writes `tokens`, the masked forward of `images`
        (B, 1+N, D), and `local_tokens`, the unmasked forward of `local_images`, in float64.

    ibot_torch.py step IN OUT
        `steps` iterations of `train_step` in float64 with one AdamW optimizer, on the same crops
        and masks each time. IN holds the int64 scalars `embed_dim`, `depth`, `heads`,
        `patch_size`, `img_size`, `out_dim`, `patch_out_dim`, `head_hidden`, `head_bottleneck`,
        `shared_head`, `shared_head_teacher`, `norm_last_layer`, `n_global`, `epoch`,
        `freeze_last_layer`, `steps`; the float64 scalars `lr`, `wd`, `momentum`, `teacher_temp`,
        `teacher_patch_temp`, `lambda1`, `lambda2`, `clip_grad`, `drop_path`; every parameter of
        both networks as `student.<name>` and `teacher.<name>` (the names of
        `named_parameters()`, so a shared head's `last_layer2` alias is not listed); `center`
        (1, K) and `center2` (1, 1, Kp); the crops `crops.<i>` (B, 3, S, S), global ones first;
        the masks `masks.<i>` (B, N) as float 0/1 for the global crops. With `drop_path` > 0, the
        student's per-sample drop-path draws of iteration k are given instead of drawn:
        `drop_path.<k>.global` (depth, 2, G*B) and `drop_path.<k>.local` (depth, 2, L*B), per block
        and residual branch (attention, MLP) the factor floor(keep + U[0, 1)) / keep of each row
        of the global (local) crops' batch, i.e. 0 or 1/keep (see `GivenDropPath`). AdamW resumes
        from its state after the int64 `optimizer_step` steps: `exp_avg.student.<name>` and
        `exp_avg_sq.student.<name>` of each parameter that has state (the others start fresh).
        Writes the last iteration's `loss`, `cls`, `patch`, `acc` (shape [1]);
        `grad.<k>.student.<name>`, the gradient AdamW used in iteration k (clipped; absent while
        frozen); the final `student.<name>` and `teacher.<name>`, `exp_avg.student.<name>` and
        `exp_avg_sq.student.<name>` for each parameter the optimizer stepped, `center`, `center2`.

    ibot_torch.py checkpoint-write ARCH PATCH PTH IN OUT
        Builds the student and teacher (ARCH, PATCH, img_size 224, out_dim = patch_out_dim = 64,
        head widths 64/32, separate student head, shared teacher head) with weights drawn from a
        fixed seed, takes one AdamW step so that the optimizer has state, and `torch.save`s the
        official full checkpoint (§8.1: `student` with `module.`, `teacher`, `optimizer`, `epoch`,
        `args`, `ibot_loss`, `fp16_scaler`) to PTH. Then runs the forward of OUT's images (see
        `checkpoint-read`).

    ibot_torch.py checkpoint-read PTH IN OUT
        `torch.load`s an official full checkpoint, builds both networks from its `args` (arch,
        patch_size, out_dim, patch_out_dim, shared_head, shared_head_teacher, and the head widths
        `head_hidden_dim`/`head_bottleneck_dim` when present), loads `student` (`module.`
        stripped) and `teacher` strictly, and for each `images.<i>` (B, 3, H, W) of IN writes
        `teacher.tokens.<i>`, `student.tokens.<i>` (B, 1+N, D, unmasked) and
        `teacher.attention.<i>` (B, heads, 1+N, 1+N) to OUT in float32. When the checkpoint has an
        `optimizer`, it is loaded into AdamW over `get_params_groups(student)`, which then takes
        one step with zero gradients; OUT gets `optimizer.<key>.<name>` (key `step`, `exp_avg`,
        `exp_avg_sq`; name as in `named_parameters()`) of every parameter with state, as loaded,
        and `optimizer.groups` (n_groups, 2): each group's parameter count and weight decay.
"""

import argparse
from collections import OrderedDict
import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

import safetensors_io
from ibot_common import (
    DropPath,
    Mlp,
    get_params_groups,
    iBOTLoss,
    init_weights,
    checkpoint_head_options,
    checkpoint_read_outputs,
    print_keys,
    run_train_steps,
    save_full_checkpoint,
    scalar,
    student_and_teacher,
    trunc_normal_,
)

# Re-exported: the benchmarks and the other reference scripts take these from here.
from ibot_common import (  # noqa: F401
    GivenDropPath,
    block_mask,
    cancel_gradients_last_layer,
    clip_gradients,
    ema_update,
    give_drop_path,
    pred_ratio_for_crop,
    train_step,
    update_student,
)

# ------------------------------------------------------------------------------------------------
# 2.1 Vision Transformer
# ------------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv Linear laid out [q | k | v], head-major inside.

    Returns both the output (B, N, D) and the attention probabilities (B, heads, N, N).
    """

    def __init__(self, dim, num_heads, qkv_bias=True):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(x), attn


class Block(nn.Module):
    """Pre-norm block: x += DropPath(Attn(LN1(x))); x += DropPath(MLP(LN2(x))); LN eps 1e-6."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True, drop_path_rate=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, return_attention=False):
        y, attn = self.attn(self.norm1(x))
        if return_attention:
            return attn
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Conv2d(3 -> D, kernel = stride = p) with bias; returns the unflattened (B, D, H/p, W/p)."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768):
        super().__init__()
        self.patch_size = patch_size
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x)


class VisionTransformer(nn.Module):
    """ViT backbone of iBOT pre-training (§2.1).

    The forward takes an image batch (B, 3, H, W) and, when `masked_im_modeling` is set, a boolean
    mask (B, H/p, W/p) (or (B, N) flattened row-major); it returns all tokens (B, 1+N, D) after the
    final LayerNorm (or only the CLS row when `return_all_tokens` is False).
    """

    def __init__(
        self,
        img_size=224,
        patch_size=16,
        embed_dim=768,
        depth=12,
        num_heads=12,
        mlp_ratio=4.0,
        drop_path_rate=0.0,
        masked_im_modeling=False,
        qkv_bias=True,
        return_all_tokens=True,
    ):
        super().__init__()
        if isinstance(img_size, (list, tuple)):
            img_size = img_size[0]
        self.embed_dim = self.num_features = embed_dim
        self.return_all_tokens = return_all_tokens
        # Direct parameters first (§8.2: cls_token, pos_embed, masked_embed), then submodules.
        self.patch_embed = PatchEmbed(img_size, patch_size, 3, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        rates = [r.item() for r in torch.linspace(0, drop_path_rate, depth)]
        self.blocks = nn.ModuleList(
            [Block(embed_dim, num_heads, mlp_ratio, qkv_bias, rates[i]) for i in range(depth)]
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Identity()  # num_classes = 0

        trunc_normal_(self.pos_embed)
        trunc_normal_(self.cls_token)
        self.apply(init_weights)

        # Created after `apply`, initialised to zeros, and only when masked image modelling is on.
        self.masked_im_modeling = masked_im_modeling
        if masked_im_modeling:
            self.masked_embed = nn.Parameter(torch.zeros(1, embed_dim))

    def interpolate_pos_encoding(self, x, w, h):
        """Positional embedding for tokens x (B, 1+n, D) of an image of height w and width h.

        Used as is when n equals N0 and the image is square; otherwise the patch part is resized
        bicubically with scale_factor ((w/p + 0.1)/sqrt(N0), (h/p + 0.1)/sqrt(N0)).
        """
        npatch = x.shape[1] - 1
        n0 = self.pos_embed.shape[1] - 1
        if npatch == n0 and w == h:
            return self.pos_embed
        class_pos_embed = self.pos_embed[:, 0]
        patch_pos_embed = self.pos_embed[:, 1:]
        dim = x.shape[-1]
        side = int(math.sqrt(n0))
        w0 = w // self.patch_embed.patch_size + 0.1
        h0 = h // self.patch_embed.patch_size + 0.1
        grid = patch_pos_embed.reshape(1, side, side, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(
            grid, scale_factor=(w0 / math.sqrt(n0), h0 / math.sqrt(n0)), mode="bicubic"
        )
        assert int(w0) == grid.shape[-2] and int(h0) == grid.shape[-1]
        patch_pos_embed = grid.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)

    def mask_model(self, x, mask):
        """Replaces the conv output (B, D, h, w) by `masked_embed` wherever the mask is true."""
        if mask.dim() == 2:
            mask = mask.reshape(x.shape[0], x.shape[2], x.shape[3])
        mask = mask.bool().unsqueeze(1)  # (B, 1, h, w)
        token = self.masked_embed.to(x.dtype).reshape(1, -1, 1, 1)
        return torch.where(mask, token, x)

    def prepare_tokens(self, x, mask=None):
        """Patch embedding, optional mask, flatten, prepend CLS, add the positional embedding."""
        b, _, w, h = x.shape
        x = self.patch_embed(x)
        if mask is not None:
            x = self.mask_model(x, mask)
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(b, -1, -1), x), dim=1)
        return x + self.interpolate_pos_encoding(x, w, h)

    def forward(self, x, return_all_tokens=None, mask=None):
        if self.masked_im_modeling:
            assert mask is not None
            x = self.prepare_tokens(x, mask=mask)
        else:
            x = self.prepare_tokens(x)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        if return_all_tokens is None:
            return_all_tokens = self.return_all_tokens
        return x if return_all_tokens else x[:, 0]

    def get_last_selfattention(self, x):
        """Attention probabilities (B, heads, 1+N, 1+N) of the last block (no mask)."""
        x = self.prepare_tokens(x)
        for i, blk in enumerate(self.blocks):
            if i < len(self.blocks) - 1:
                x = blk(x)
            else:
                return blk(x, return_attention=True)

    def get_intermediate_layers(self, x, n=1):
        """Outputs of the last n blocks, each passed through the final norm (no mask)."""
        x = self.prepare_tokens(x)
        output = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if len(self.blocks) - i <= n:
                output.append(self.norm(x))
        return output

    def get_num_layers(self):
        return len(self.blocks)


ARCHS = {
    "vit_tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "vit_small": dict(embed_dim=384, depth=12, num_heads=6),
    "vit_base": dict(embed_dim=768, depth=12, num_heads=12),
    "vit_large": dict(embed_dim=1024, depth=24, num_heads=16),
}


def vit(arch, patch_size=16, **kwargs):
    """Factory `vit_tiny/small/base/large` (deit_* is renamed to vit_*); mlp_ratio 4, qkv bias."""
    arch = arch.replace("deit_", "vit_")
    return VisionTransformer(
        patch_size=patch_size, mlp_ratio=4, qkv_bias=True, **ARCHS[arch], **kwargs
    )


def build_models(
    arch="vit_small",
    patch_size=16,
    img_size=224,
    drop_path=0.1,
    use_masked_im_modeling=True,
    size=None,
    **heads,
):
    """Student and teacher with ViT backbones and the iBOT heads `heads` (the keyword arguments
    of `ibot_common.student_and_teacher`: out_dim, patch_out_dim, shared_head, ...).

    `size`, a dict of embed_dim, depth and num_heads, replaces the named architecture's (for small
    test networks). The student has the `drop_path` rate and the mask token
    (`use_masked_im_modeling`), the teacher neither.
    """
    dims = size or ARCHS[arch]

    def backbone(student):
        options = dict(drop_path_rate=drop_path, masked_im_modeling=use_masked_im_modeling)
        return VisionTransformer(
            patch_size=patch_size,
            mlp_ratio=4,
            qkv_bias=True,
            **dims,
            img_size=img_size,
            **(options if student else {}),
        )

    return student_and_teacher(backbone, **heads)


# ------------------------------------------------------------------------------------------------
# Command-line modes
# ------------------------------------------------------------------------------------------------

def run_loss(source, target):
    """`loss IN OUT`: see the module docstring."""
    data = {k: torch.from_numpy(v).double() for k, v in safetensors_io.load(source).items()}
    g = int(data["n_global"].item())
    teacher_cls, teacher_patch = data["teacher_cls"], data["teacher_patch"]
    batch = teacher_cls.shape[0] // g
    student_cls = data["student_cls"]
    ncrops = student_cls.shape[0] // batch
    k, kp = teacher_cls.shape[1], teacher_patch.shape[2]
    t1, t2 = data["teacher_temp"].item(), data["teacher_patch_temp"].item()
    loss_fn = iBOTLoss(
        k,
        kp,
        g,
        ncrops - g,
        t1,
        t1,
        t2,
        t2,
        warmup_teacher_temp_epochs=1,
        nepochs=1,
        lambda1=data["lambda1"].item(),
        lambda2=data["lambda2"].item(),
    ).double()
    loss_fn.center.copy_(data["center"].reshape(1, k))
    loss_fn.center2.copy_(data["center2"].reshape(1, 1, kp))
    local = student_cls[g * batch :] if ncrops > g else None
    masks = list(data["masks"].chunk(g))
    out = loss_fn((student_cls[: g * batch], data["student_patch"]), (teacher_cls, teacher_patch),
                  local, masks, epoch=0)
    result = {name: out[name].detach().reshape(1).numpy() for name in ("loss", "cls", "patch")}
    result["center"] = loss_fn.center.numpy().copy()
    result["center2"] = loss_fn.center2.numpy().copy()
    safetensors_io.save(target, result)


def run_keys(arch, patch_size, out_dim, shared):
    """`keys ARCH PATCH OUT_DIM SHARED`: see the module docstring."""
    print_keys(
        *build_models(
            arch,
            patch_size,
            out_dim=out_dim,
            patch_out_dim=out_dim,
            shared_head=shared,
            shared_head_teacher=True,
        )
    )


def run_pos(source, target):
    """`pos IN OUT`: see the module docstring."""
    data = safetensors_io.load(source)
    pos_embed = torch.from_numpy(data["pos_embed"]).double()
    dim = pos_embed.shape[2]
    side = math.isqrt(pos_embed.shape[1] - 1)
    model = VisionTransformer(img_size=side, patch_size=1, embed_dim=dim, depth=1, num_heads=1)
    model = model.double()
    model.pos_embed.data.copy_(pos_embed)
    result = {}
    for rows, cols in data["grids"].tolist():
        tokens = torch.zeros(1, 1 + rows * cols, dim, dtype=torch.float64)
        table = model.interpolate_pos_encoding(tokens, rows, cols)
        result[f"pos.{rows}x{cols}"] = table.detach().numpy().copy()
    safetensors_io.save(target, result)


def run_vit(source, target):
    """`vit IN OUT`: see the module docstring."""
    data = safetensors_io.load(source)
    model = VisionTransformer(
        img_size=scalar(data, "img_size"),
        patch_size=scalar(data, "patch_size"),
        embed_dim=data["cls_token"].shape[-1],
        depth=scalar(data, "depth"),
        num_heads=scalar(data, "heads"),
        masked_im_modeling=True,
    ).double()
    state = {k: torch.from_numpy(data[k]).double() for k in model.state_dict()}
    model.load_state_dict(state, strict=True)
    images = torch.from_numpy(data["images"]).double()
    mask = torch.from_numpy(data["mask"]) > 0.5
    with torch.no_grad():
        result = {"tokens": model(images, mask=mask).numpy()}
        if "local_images" in data:
            model.masked_im_modeling = False
            local = model(torch.from_numpy(data["local_images"]).double())
            result["local_tokens"] = local.numpy()
    safetensors_io.save(target, result)


def run_step(source, target):
    """`step IN OUT`: see the module docstring."""
    data = safetensors_io.load(source)

    def get(name):
        return scalar(data, name)

    student, teacher = build_models(
        patch_size=get("patch_size"),
        img_size=get("img_size"),
        out_dim=get("out_dim"),
        patch_out_dim=get("patch_out_dim"),
        shared_head=bool(get("shared_head")),
        shared_head_teacher=bool(get("shared_head_teacher")),
        norm_last_layer=bool(get("norm_last_layer")),
        drop_path=get("drop_path"),
        size=dict(embed_dim=get("embed_dim"), depth=get("depth"), num_heads=get("heads")),
        head_hidden=get("head_hidden"),
        head_bottleneck=get("head_bottleneck"),
    )
    blocks = list(student.backbone.blocks) if get("drop_path") > 0 else None
    run_train_steps(data, student, teacher, blocks, target)


def checkpoint_models(args):
    """Student and teacher built from a checkpoint's `args` Namespace (eval mode)."""
    student, teacher = build_models(
        args.arch, args.patch_size, 224, drop_path=0.0, **checkpoint_head_options(args)
    )
    return student.eval(), teacher.eval()


def forward_outputs(student, teacher, source):
    """The `checkpoint-read` outputs for the images of `source`."""
    data = safetensors_io.load(source)
    result = {}
    student.backbone.masked_im_modeling = False
    with torch.no_grad():
        for name in sorted(k for k in data if k.startswith("images.")):
            index = name.split(".", 1)[1]
            images = torch.from_numpy(data[name])
            result[f"teacher.tokens.{index}"] = teacher.backbone(images).numpy()
            result[f"student.tokens.{index}"] = student.backbone(images).numpy()
            attention = teacher.backbone.get_last_selfattention(images)
            result[f"teacher.attention.{index}"] = attention.numpy()
    return result


def run_checkpoint_write(arch, patch_size, path, source, target):
    """`checkpoint-write ARCH PATCH PTH IN OUT`: see the module docstring."""
    torch.manual_seed(0)
    args = argparse.Namespace(
        arch=arch,
        patch_size=patch_size,
        out_dim=64,
        patch_out_dim=64,
        shared_head=False,
        shared_head_teacher=True,
        head_hidden_dim=64,
        head_bottleneck_dim=32,
        data_path="/path/to/imagenet/train",
    )
    student, teacher = checkpoint_models(args)
    with torch.no_grad():
        for module in (student, teacher):
            for param in module.parameters():
                param.add_(0.05 * torch.randn_like(param))
    optimizer = torch.optim.AdamW(get_params_groups(student), lr=1e-3)
    for param in student.parameters():
        param.grad = torch.randn_like(param)
    optimizer.step()
    centers = OrderedDict(center=torch.randn(1, 64), center2=torch.randn(1, 1, 64))
    save_full_checkpoint(path, student, teacher, optimizer, 7, args, centers)
    run_checkpoint_read(path, source, target)


def run_checkpoint_read(path, source, target):
    """`checkpoint-read PTH IN OUT`: see the module docstring."""
    result = checkpoint_read_outputs(
        path, checkpoint_models, lambda student, teacher: forward_outputs(student, teacher, source)
    )
    safetensors_io.save(target, result)


def main(argv):
    if len(argv) == 3 and argv[0] == "loss":
        run_loss(argv[1], argv[2])
    elif len(argv) == 5 and argv[0] == "keys":
        run_keys(argv[1], int(argv[2]), int(argv[3]), argv[4] == "1")
    elif len(argv) == 3 and argv[0] == "pos":
        run_pos(argv[1], argv[2])
    elif len(argv) == 3 and argv[0] == "vit":
        run_vit(argv[1], argv[2])
    elif len(argv) == 3 and argv[0] == "step":
        run_step(argv[1], argv[2])
    elif len(argv) == 6 and argv[0] == "checkpoint-write":
        run_checkpoint_write(argv[1], int(argv[2]), argv[3], argv[4], argv[5])
    elif len(argv) == 4 and argv[0] == "checkpoint-read":
        run_checkpoint_read(argv[1], argv[2], argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1:])
